package resource

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// testCAPEM is a self-signed CA certificate, as an API server's CA would be.
var testCAPEM = func() string {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test cluster CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		panic(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}()

var testCAData = base64.StdEncoding.EncodeToString([]byte(testCAPEM))

// kubeYAML defines three clusters and roles that select them:
//
//	prod      env=prod, team=a
//	staging   env=staging, team=a
//	lab       no labels
//	admin     roles: all clusters, group system:masters, user from a trait
//	team-a    prod and staging by team, groups team-a and "{{internal.groups}}"
//	prod-only env=prod or env=qa, group viewers
var kubeYAML = `kind: kube_cluster
version: v1
metadata:
  name: prod
  description: Production
  labels:
    env: prod
    team: a
spec:
  server: https://10.0.0.1:6443
  certificate_authority_data: ` + testCAData + `
---
kind: kube_cluster
version: v1
metadata:
  name: staging
  labels: {env: staging, team: a}
spec:
  server: https://staging.example.com
  certificate_authority_data: ` + testCAData + `
---
kind: kube_cluster
version: v1
metadata:
  name: lab
spec:
  server: https://127.0.0.1:6443
  certificate_authority_data: ` + testCAData + `
---
kind: role
version: v1
metadata:
  name: admin
spec:
  allow:
    kubernetes_labels: {'*': '*'}
    kubernetes_groups: [system:masters]
    kubernetes_users: ["{{internal.kube_user}}"]
---
kind: role
version: v1
metadata:
  name: team-a
spec:
  allow:
    kubernetes_labels:
      team: a
      env: '*'
    kubernetes_groups: [team-a, "{{internal.groups}}"]
---
kind: role
version: v1
metadata:
  name: prod-only
spec:
  allow:
    kubernetes_labels:
      env: [prod, qa]
    kubernetes_groups: [viewers, team-a]
---
kind: bot
version: v1
metadata:
  name: ops
spec:
  roles: [admin]
  traits:
    kube_user: [alice]
---
kind: bot
version: v1
metadata:
  name: dev
spec:
  roles: [team-a, prod-only]
  traits:
    groups: [extra]
---
kind: bot
version: v1
metadata:
  name: none
spec:
  roles: [prod-only]
`

func TestKubeClusters(t *testing.T) {
	s, err := LoadDir(writeDir(t, map[string]string{"k.yaml": kubeYAML}))
	if err != nil {
		t.Fatalf("LoadDir: %v", err)
	}
	var names []string
	for _, c := range s.KubeClusters() {
		names = append(names, c.Name)
	}
	if !slices.Equal(names, []string{"lab", "prod", "staging"}) {
		t.Errorf("clusters = %v", names)
	}
	prod, ok := s.KubeCluster("prod")
	if !ok {
		t.Fatal("no cluster prod")
	}
	if prod.Server != "https://10.0.0.1:6443" || string(prod.CAData) != testCAPEM || prod.Description != "Production" ||
		prod.Labels["env"] != "prod" || prod.Labels["team"] != "a" || len(prod.Labels) != 2 || prod.Source.Line != 1 {
		t.Errorf("prod = %+v", prod)
	}
	// The set hands out copies.
	prod.Labels["env"] = "changed"
	if again, _ := s.KubeCluster("prod"); again.Labels["env"] != "prod" {
		t.Error("changing a returned cluster changed the set")
	}
	if _, ok := s.KubeCluster("nope"); ok {
		t.Error("KubeCluster(nope) found something")
	}
	r, _ := s.Role("prod-only")
	if !slices.Equal(r.KubernetesLabels["env"], []string{"prod", "qa"}) || !slices.Equal(r.KubernetesGroups, []string{"viewers", "team-a"}) {
		t.Errorf("role prod-only = %+v", r)
	}
}

func TestKubeAccess(t *testing.T) {
	s, err := LoadDir(writeDir(t, map[string]string{"k.yaml": kubeYAML}))
	if err != nil {
		t.Fatalf("LoadDir: %v", err)
	}
	tests := []struct {
		bot, cluster string
		ok           bool
		want         KubeAccess
	}{
		{"ops", "prod", true, KubeAccess{Roles: []string{"admin"}, Users: []string{"alice"}, Groups: []string{"system:masters"}}},
		{"ops", "lab", true, KubeAccess{Roles: []string{"admin"}, Users: []string{"alice"}, Groups: []string{"system:masters"}}},
		// Both roles match prod: the union of their groups, sorted, once each.
		{"dev", "prod", true, KubeAccess{Roles: []string{"team-a", "prod-only"}, Groups: []string{"extra", "team-a", "viewers"}}},
		{"dev", "staging", true, KubeAccess{Roles: []string{"team-a"}, Groups: []string{"extra", "team-a"}}},
		{"dev", "lab", false, KubeAccess{}},
		{"none", "staging", false, KubeAccess{}},
		{"none", "prod", true, KubeAccess{Roles: []string{"prod-only"}, Groups: []string{"team-a", "viewers"}}},
	}
	for _, tt := range tests {
		c, _ := s.KubeCluster(tt.cluster)
		got, ok, err := s.KubeAccess(tt.bot, c)
		if err != nil {
			t.Fatalf("KubeAccess(%s, %s): %v", tt.bot, tt.cluster, err)
		}
		if ok != tt.ok || !slices.Equal(got.Roles, tt.want.Roles) || !slices.Equal(got.Users, tt.want.Users) || !slices.Equal(got.Groups, tt.want.Groups) {
			t.Errorf("KubeAccess(%s, %s) = %+v, %v; want %+v, %v", tt.bot, tt.cluster, got, ok, tt.want, tt.ok)
		}
	}
	if _, _, err := s.KubeAccess("ghost", KubeCluster{}); !errors.Is(err, ErrUnknownBot) {
		t.Errorf("KubeAccess(ghost) error = %v, want ErrUnknownBot", err)
	}
}

func TestAllowsKubeCluster(t *testing.T) {
	labels := map[string]string{"env": "prod", "team": "a"}
	for _, tt := range []struct {
		sel  map[string][]string
		want bool
	}{
		{nil, false},
		{map[string][]string{"*": {"*"}}, true},
		{map[string][]string{"env": {"prod"}}, true},
		{map[string][]string{"env": {"dev", "prod"}}, true},
		{map[string][]string{"env": {"dev"}}, false},
		{map[string][]string{"env": {"*"}, "team": {"a"}}, true},
		{map[string][]string{"env": {"*"}, "team": {"b"}}, false},
		{map[string][]string{"region": {"*"}}, false},
	} {
		if got := (Role{KubernetesLabels: tt.sel}).AllowsKubeCluster(labels); got != tt.want {
			t.Errorf("AllowsKubeCluster with %v = %v, want %v", tt.sel, got, tt.want)
		}
	}
	if !(Role{KubernetesLabels: map[string][]string{"*": {"*"}}}).AllowsKubeCluster(nil) {
		t.Error(`'*': '*' does not match a cluster without labels`)
	}
}

func TestKubeClusterCAFile(t *testing.T) {
	dir := writeDir(t, map[string]string{
		"ca/cluster-ca.pem": testCAPEM,
		"k.yaml":            "kind: kube_cluster\nversion: v1\nmetadata: {name: c}\nspec:\n  server: https://k.example.com:6443\n  certificate_authority_file: ca/cluster-ca.pem\n",
	})
	s, err := LoadDir(dir)
	if err != nil {
		t.Fatalf("LoadDir: %v", err)
	}
	c, _ := s.KubeCluster("c")
	if string(c.CAData) != testCAPEM {
		t.Errorf("CAData = %q", c.CAData)
	}
	// An absolute path works too.
	abs := filepath.Join(dir, "ca", "cluster-ca.pem")
	if err := os.WriteFile(filepath.Join(dir, "k.yaml"), []byte("kind: kube_cluster\nversion: v1\nmetadata: {name: c}\nspec:\n  server: https://k.example.com\n  certificate_authority_file: "+abs+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadDir(dir); err != nil {
		t.Errorf("LoadDir with an absolute CA file: %v", err)
	}
}

func TestKubeErrors(t *testing.T) {
	cluster := func(meta, spec string) string {
		return "kind: kube_cluster\nversion: v1\nmetadata:\n  name: c\n" + meta + "spec:\n" + spec
	}
	okSpec := "  server: https://k.example.com\n  certificate_authority_data: " + testCAData + "\n"
	notCA := base64.StdEncoding.EncodeToString([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))
	tests := []struct {
		name string
		data string
		want []string
	}{
		{"unknown spec field", cluster("", okSpec+"  insecure: true\n"),
			[]string{`a.yaml:8: unknown field "insecure" in spec (want server, certificate_authority_data, certificate_authority_file)`}},
		{"unknown metadata field", cluster("  owner: x\n", okSpec),
			[]string{`a.yaml:5: unknown field "owner" in metadata`}},
		{"missing server", cluster("", "  certificate_authority_data: "+testCAData+"\n"),
			[]string{`a.yaml:6: missing spec.server`}},
		{"http server", cluster("", "  server: http://k.example.com\n  certificate_authority_data: "+testCAData+"\n"),
			[]string{`a.yaml:6: invalid spec.server "http://k.example.com": want an https:// URL`}},
		{"server without host", cluster("", "  server: https://\n  certificate_authority_data: "+testCAData+"\n"),
			[]string{`a.yaml:6: invalid spec.server "https://": no host`}},
		{"no CA", cluster("", "  server: https://k.example.com\n"),
			[]string{`a.yaml:6: missing spec.certificate_authority_data or spec.certificate_authority_file`}},
		{"both CAs", cluster("", okSpec+"  certificate_authority_file: ca.pem\n"),
			[]string{`a.yaml:8: set one of spec.certificate_authority_data and spec.certificate_authority_file, not both`}},
		{"CA not base64", cluster("", "  server: https://k.example.com\n  certificate_authority_data: '%%%'\n"),
			[]string{`a.yaml:7: invalid spec.certificate_authority_data: not base64`}},
		{"CA not a certificate", cluster("", "  server: https://k.example.com\n  certificate_authority_data: "+notCA+"\n"),
			[]string{`a.yaml:7: invalid spec.certificate_authority_data: holds a PEM PRIVATE KEY, want only CERTIFICATE blocks`}},
		{"CA file missing", cluster("", "  server: https://k.example.com\n  certificate_authority_file: nope.pem\n"),
			[]string{`a.yaml:7: spec.certificate_authority_file: open `, `nope.pem: no such file or directory`}},
		{"CA file a device", cluster("", "  server: https://k.example.com\n  certificate_authority_file: /dev/zero\n"),
			[]string{`a.yaml:7: spec.certificate_authority_file: /dev/zero is not a regular file`}},
		{"bad label key", cluster("  labels: {'bad key': x}\n", okSpec),
			[]string{`a.yaml:5: invalid label key "bad key" in metadata.labels`}},
		{"wildcard label value", cluster("  labels:\n    env: '*'\n", okSpec),
			[]string{`a.yaml:6: invalid value "*" for label "env": "*" is a wildcard`}},
		{"label value a list", cluster("  labels:\n    env: [a]\n", okSpec),
			[]string{`a.yaml:6: metadata.labels.env must be a string, not a list`}},
		{"duplicate cluster", cluster("", okSpec) + "---\n" + cluster("", okSpec),
			[]string{`a.yaml:12: duplicate kube_cluster "c" (first defined at `}},
		{"role wildcard key with a value", role("r", "  allow:", "    kubernetes_labels: {'*': prod}"),
			[]string{`a.yaml:7: the key "*" in spec.allow.kubernetes_labels takes only the value "*"`}},
		{"role bad label key", role("r", "  allow:", "    kubernetes_labels: {'a b': x}"),
			[]string{`a.yaml:7: invalid label key "a b" in spec.allow.kubernetes_labels`}},
		{"role empty value list", role("r", "  allow:", "    kubernetes_labels:", "      env: []"),
			[]string{`a.yaml:8: spec.allow.kubernetes_labels.env lists no values`}},
		{"role labels not a mapping", role("r", "  allow:", "    kubernetes_labels: [env]"),
			[]string{`a.yaml:7: spec.allow.kubernetes_labels must be a mapping, not a list`}},
		{"role bad group", role("r", "  allow:", "    kubernetes_groups: ['a b']"),
			[]string{`a.yaml:7: invalid Kubernetes group "a b" in spec.allow.kubernetes_groups: must not contain whitespace`}},
		{"role bad user template", role("r", "  allow:", "    kubernetes_users: ['{{external.x}}']"),
			[]string{`a.yaml:7: invalid Kubernetes user "{{external.x}}" in spec.allow.kubernetes_users: unsupported template`}},
		{"role unknown kubernetes field", role("r", "  allow:", "    kubernetes_namespaces: [x]"),
			[]string{`a.yaml:7: unknown field "kubernetes_namespaces" in spec.allow`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeDir(t, map[string]string{"a.yaml": tt.data})
			_, err := LoadDir(dir)
			if err == nil {
				t.Fatalf("LoadDir succeeded, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
			checkErrorLines(t, err.Error(), dir)
		})
	}
}
