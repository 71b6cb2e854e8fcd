package kubeconfig

import (
	"encoding/base64"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

var clusters = []Cluster{
	{Name: "prod", Server: "https://10.0.0.1:6443", CAData: []byte("-----BEGIN CERTIFICATE-----\nprod\n-----END CERTIFICATE-----\n"),
		CertPEM: []byte("CERT prod"), KeyPEM: []byte("KEY")},
	{Name: "staging", Server: "https://staging.example.com", CertPEM: []byte("CERT staging"), KeyPEM: []byte("KEY")},
}

var execOpts = Options{Bot: "ci", Mwictl: "/usr/local/bin/mwictl", Socket: "/run/mwi/api.sock"}

// decode parses rendered YAML back, strictly, into a Config.
func decode(t *testing.T, data []byte) Config {
	t.Helper()
	var c Config
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("rendered kubeconfig does not decode: %v\n%s", err, data)
	}
	return c
}

func TestRenderExec(t *testing.T) {
	data, err := Render(clusters, execOpts)
	if err != nil {
		t.Fatal(err)
	}
	c := decode(t, data)
	if c.APIVersion != "v1" || c.Kind != "Config" || c.CurrentContext != "prod" {
		t.Errorf("header = %s %s, current %q", c.APIVersion, c.Kind, c.CurrentContext)
	}
	if len(c.Clusters) != 2 || c.Clusters[0].Name != "prod" || c.Clusters[0].Cluster.Server != "https://10.0.0.1:6443" {
		t.Fatalf("clusters = %+v", c.Clusters)
	}
	if ca, _ := base64.StdEncoding.DecodeString(c.Clusters[0].Cluster.CertificateAuthorityData); string(ca) != string(clusters[0].CAData) {
		t.Errorf("certificate-authority-data = %q", c.Clusters[0].Cluster.CertificateAuthorityData)
	}
	if c.Clusters[1].Cluster.CertificateAuthorityData != "" {
		t.Error("a cluster without CA data got some")
	}
	for i, u := range c.Users {
		name := clusters[i].Name
		if u.Name != name || c.Contexts[i].Name != name || c.Contexts[i].Context != (ContextInfo{Cluster: name, User: name}) {
			t.Errorf("user %+v, context %+v", u, c.Contexts[i])
		}
		e := u.User.Exec
		if e == nil || u.User.ClientKeyData != "" || u.User.ClientCertificateData != "" {
			t.Fatalf("user %s: %+v, want only an exec plugin", name, u.User)
		}
		want := []string{"--socket", "/run/mwi/api.sock", "kube-credential", "--cluster", name}
		if e.APIVersion != "client.authentication.k8s.io/v1" || e.Command != "/usr/local/bin/mwictl" || !slices.Equal(e.Args, want) ||
			e.InteractiveMode != "Never" || e.ProvideClusterInfo {
			t.Errorf("exec of %s = %+v", name, e)
		}
	}
	if strings.Contains(string(data), "KEY") || strings.Contains(string(data), base64.StdEncoding.EncodeToString([]byte("KEY"))) {
		t.Error("an exec kubeconfig holds the key")
	}
	// kubectl needs provideClusterInfo and interactiveMode spelled out.
	for _, want := range []string{"interactiveMode: Never", "provideClusterInfo: false", "current-context: prod"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("kubeconfig lacks %q:\n%s", want, data)
		}
	}
}

func TestRenderEmbed(t *testing.T) {
	o := execOpts
	o.Embed, o.Mwictl, o.Socket = true, "", ""
	data, err := Render(clusters, o)
	if err != nil {
		t.Fatal(err)
	}
	c := decode(t, data)
	for i, u := range c.Users {
		cert, _ := base64.StdEncoding.DecodeString(u.User.ClientCertificateData)
		key, _ := base64.StdEncoding.DecodeString(u.User.ClientKeyData)
		if u.User.Exec != nil || string(cert) != string(clusters[i].CertPEM) || string(key) != "KEY" {
			t.Errorf("user %+v", u)
		}
	}
	if !strings.HasPrefix(string(data), "# kubeconfig from mwid, with the client certificates and private keys inline") {
		t.Errorf("an embedded kubeconfig does not say it holds keys:\n%s", data)
	}
	if _, err := Render([]Cluster{{Name: "x", Server: "https://x"}}, o); err == nil {
		t.Error("embedded a cluster without a certificate")
	}
}

func TestContextTemplate(t *testing.T) {
	o := execOpts
	o.ContextTemplate = "{{.Bot}}@{{.Cluster}}"
	o.Current = "staging"
	c, err := Build(clusters, o)
	if err != nil {
		t.Fatal(err)
	}
	if c.Contexts[0].Name != "ci@prod" || c.Contexts[1].Name != "ci@staging" || c.CurrentContext != "ci@staging" || c.Users[1].Name != "ci@staging" {
		t.Errorf("contexts %+v, current %q", c.Contexts, c.CurrentContext)
	}
	for _, tc := range []struct{ tmpl, want string }{
		{"{{.Bot}}", "the same name"},
		{"{{.Cluster", "context template"},
		{"{{.Nope}}", "may use only {{.Cluster}} and {{.Bot}}"},
		{"{{range 50000000}}{{.Cluster}}{{end}}", "may use only {{.Cluster}} and {{.Bot}}"},
		{"{{ .Cluster }}-" + strings.Repeat("x", 300), "longer than 256 bytes"},
		{" ", "empty name"},
		{"a\n{{.Cluster}}", "control characters"},
	} {
		o.ContextTemplate = tc.tmpl
		if _, err := Build(clusters, o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("template %q: error %v, want %q", tc.tmpl, err, tc.want)
		}
	}
}

func TestBuildErrors(t *testing.T) {
	if _, err := Build(nil, execOpts); err == nil {
		t.Error("built a kubeconfig of no clusters")
	}
	if _, err := Build(clusters, Options{}); err == nil {
		t.Error("built an exec kubeconfig without mwictl's path")
	}
	o := execOpts
	o.Current = "nope"
	if _, err := Build(clusters, o); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("current cluster not rendered: error %v", err)
	}
}
