package daemon

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/daemon/identity"
	"github.com/mwi-project/mwi/daemon/kubeconfig"
	"github.com/mwi-project/mwi/daemon/localapi"
	"github.com/mwi-project/mwi/daemon/metrics"
	"github.com/mwi-project/mwi/daemon/output"
	"github.com/mwi-project/mwi/internal/fault"
	"github.com/mwi-project/mwi/internal/kubeselect"
)

// signFor plays the issuer: it signs a certificate for the key of csrPEM.
func signFor(t *testing.T, csrPEM string, subject pkix.Name, notAfter time.Time) string {
	t.Helper()
	block, _ := pem.Decode([]byte(csrPEM))
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(9), Subject: subject, NotBefore: time.Now().Add(-time.Minute), NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, csr.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// kubeServer returns a Server holding credentials for the clusters of
// outputs that the "issuer" allows: prod (env=prod) and dev (env=dev).
func kubeServer(t *testing.T, outputs []output.Output, ttl time.Duration) *Server {
	t.Helper()
	s := &Server{log: slog.New(slog.DiscardHandler), now: time.Now, outputs: map[string]*outputState{}, metrics: metrics.New()}
	s.conf.Store(&config.Config{Outputs: outputs, APISocket: config.Socket{Path: "/run/mwi/api.sock"}})
	keys, err := identity.NewKeys()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := keys.Public()
	if err != nil {
		t.Fatal(err)
	}
	req, err := kubernetesRequest(s, outputs, keys)
	if err != nil {
		t.Fatal(err)
	}
	notAfter := time.Now().Add(ttl).Truncate(time.Second)
	resp := api.Credentials{Bot: "web", Instance: "i1", Generation: 1,
		IdentityCertificate: signFor(t, pub.IdentityCSR, pkix.Name{CommonName: "web"}, notAfter)}
	clusters := map[string]map[string]string{"prod": {"env": "prod"}, "dev": {"env": "dev"}}
	for _, name := range []string{"dev", "prod"} {
		if req == nil || !selectorOf(req).Match(name, clusters[name]) {
			continue
		}
		resp.Kubernetes = append(resp.Kubernetes, api.KubernetesCredential{
			Cluster: name, Labels: clusters[name], Server: "https://" + name + ":6443",
			CertificateAuthorityData: []byte(signFor(t, pub.IdentityCSR, pkix.Name{CommonName: "ca"}, notAfter)),
			ClientCertificate:        signFor(t, req.CSR, pkix.Name{CommonName: "bot:web", Organization: []string{"team"}}, notAfter),
			Expires:                  notAfter,
		})
	}
	creds, err := identity.Assemble(keys, resp, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	s.creds.Set(creds)
	return s
}

func selectorOf(r *api.KubernetesRequest) interface {
	Match(string, map[string]string) bool
} {
	return kubeselect.Selector{Names: r.Clusters, Labels: r.Labels}
}

// kubernetesRequest returns the Kubernetes part of a renewal for outputs.
func kubernetesRequest(s *Server, outputs []output.Output, keys *identity.Keys) (*api.KubernetesRequest, error) {
	var req output.Request
	s.requestOutputs(outputs, &req)
	return req.Kubernetes(keys)
}

// writeConfigOutputs writes outputs from c as a renewal does.
func (s *Server) writeConfigOutputs(t *testing.T, outputs []output.Output, c *identity.Credentials) error {
	t.Helper()
	var req output.Request
	writes := s.requestOutputs(outputs, &req)
	return s.writeOutputs(context.Background(), writes, c, s.outputEnv(&config.Config{}))
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	var herr *fault.Error
	if !errors.As(err, &herr) || herr.Code != code {
		t.Errorf("error %v, want code %s", err, code)
	}
}

func TestKubeBackend(t *testing.T) {
	s := kubeServer(t, []output.Output{output.Kubernetes{Labels: []map[string]string{{"*": "*"}}}}, time.Hour)
	clusters, err := s.KubeClusters()
	if err != nil || len(clusters) != 2 || clusters[0].Name != "dev" || clusters[1].User != "bot:web" || !slices.Equal(clusters[1].Groups, []string{"team"}) {
		t.Fatalf("KubeClusters = %+v, %v", clusters, err)
	}
	cred, err := s.KubeCredential("prod")
	if err != nil {
		t.Fatal(err)
	}
	kc, _ := s.creds.Current().Kube("prod")
	if cred.APIVersion != "client.authentication.k8s.io/v1" || cred.Kind != "ExecCredential" ||
		cred.Status.ClientCertificateData != string(kc.CertPEM) || cred.Status.ClientKeyData != string(kc.KeyPEM()) ||
		!cred.Status.ExpirationTimestamp.Equal(kc.Cert.NotAfter) {
		t.Errorf("ExecCredential = %+v", cred)
	}
	_, err = s.KubeCredential("secret")
	wantCode(t, err, api.CodeNotFound)
	if err == nil || !strings.Contains(err.Error(), `Kubernetes cluster "secret"`) || !strings.Contains(err.Error(), "clusters available: dev, prod") {
		t.Errorf("error %v, want one naming the cluster and those available", err)
	}

	cfg, err := s.Kubeconfig(localapi.KubeconfigRequest{Mwictl: "/bin/mwictl"})
	if err != nil {
		t.Fatal(err)
	}
	var c kubeconfig.Config
	if err := yaml.Unmarshal([]byte(cfg), &c); err != nil || len(c.Users) != 2 || c.Users[0].User.Exec == nil ||
		!slices.Equal(c.Users[1].User.Exec.Args, []string{"--socket", "/run/mwi/api.sock", "kube-credential", "--cluster", "prod"}) {
		t.Errorf("kubeconfig = %v\n%s", err, cfg)
	}
	if strings.Contains(cfg, base64.StdEncoding.EncodeToString(kc.KeyPEM())) {
		t.Error("the exec kubeconfig holds the key")
	}
	cfg, err = s.Kubeconfig(localapi.KubeconfigRequest{Cluster: "dev", Embed: true})
	if err != nil || !strings.Contains(cfg, base64.StdEncoding.EncodeToString(kc.KeyPEM())) || strings.Contains(cfg, "prod") {
		t.Errorf("embedded kubeconfig of dev = %v\n%s", err, cfg)
	}
	_, err = s.Kubeconfig(localapi.KubeconfigRequest{Cluster: "secret"})
	wantCode(t, err, api.CodeNotFound)
	_, err = s.Kubeconfig(localapi.KubeconfigRequest{ContextTemplate: "same"})
	wantCode(t, err, api.CodeBadRequest)

	// Status shows each cluster's certificate.
	var kinds []string
	for _, c := range credentials(s.creds.Current()) {
		if c.Kind == "kubernetes" {
			kinds = append(kinds, c.Cluster+":"+strings.Join(c.Principals, ","))
		}
	}
	if !slices.Equal(kinds, []string{"dev:bot:web,team", "prod:bot:web,team"}) {
		t.Errorf("status credentials = %v", kinds)
	}
}

func TestKubeBackendRefusals(t *testing.T) {
	s := &Server{log: slog.New(slog.DiscardHandler), now: time.Now, metrics: metrics.New()}
	s.conf.Store(&config.Config{})
	_, err := s.KubeClusters()
	wantCode(t, err, api.CodeNotJoined)
	_, err = s.KubeCredential("prod")
	wantCode(t, err, api.CodeNotJoined)

	// Joined without a kubernetes output.
	s = kubeServer(t, nil, time.Hour)
	if cl, err := s.KubeClusters(); err != nil || len(cl) != 0 {
		t.Errorf("KubeClusters = %v, %v; want none", cl, err)
	}
	_, err = s.Kubeconfig(localapi.KubeconfigRequest{})
	wantCode(t, err, api.CodeNotFound)
	if err == nil || !strings.Contains(err.Error(), "configure an output of type kubernetes") {
		t.Errorf("error %v", err)
	}

	// Never an expired credential.
	s = kubeServer(t, []output.Output{output.Kubernetes{Clusters: []string{"prod"}}}, time.Hour)
	s.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	_, err = s.KubeCredential("prod")
	wantCode(t, err, api.CodeNotJoined)
	if err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("error %v, want one saying the credentials expired", err)
	}
}

func TestWriteKubeOutputs(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "kube")
	none := filepath.Join(t.TempDir(), "none")
	outputs := []output.Output{
		output.Kubernetes{Clusters: []string{"prod"}, Directory: dir},
		output.Kubernetes{Clusters: []string{"dev"}}, // in memory: writes nothing
		output.Kubernetes{Labels: []map[string]string{{"env": "qa"}}, Directory: none},
	}
	s := kubeServer(t, outputs, time.Hour)
	err := s.writeConfigOutputs(t, outputs, s.creds.Current())
	if err == nil || !strings.Contains(err.Error(), "the issuer allowed none of the clusters it selects") {
		t.Errorf("writing the outputs = %v, want the empty output's error", err)
	}
	path := filepath.Join(dir, "kubeconfig.yaml")
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v, %v; want mode 0600", path, fi, err)
	}
	data, _ := os.ReadFile(path)
	var c kubeconfig.Config
	if err := yaml.Unmarshal(data, &c); err != nil || len(c.Clusters) != 1 || c.Clusters[0].Name != "prod" || c.Users[0].User.ClientKeyData == "" {
		t.Errorf("kubeconfig output = %v\n%s", err, data)
	}
	if _, err := os.Stat(filepath.Join(none, "kubeconfig.yaml")); err == nil {
		t.Error("an output selecting nothing wrote a kubeconfig")
	}
	st := s.Status()
	if len(st.Outputs) != 2 || st.Outputs[0].Path != path || st.Outputs[0].LastWrite == nil || st.Outputs[1].LastError == "" {
		t.Errorf("status outputs = %+v", st.Outputs)
	}
}
