package localapi_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/localapi"
	"github.com/mwi-project/mwi/daemon/metrics"
	"github.com/mwi-project/mwi/internal/fault"
)

const (
	testKubeCert = "-----BEGIN CERTIFICATE-----\nMIIBkTCB+wIJAKHBfpegPjMCMA0GCSqGSIb3DQEBCwUAMBExDzANBgNVBAMMBnVu\n-----END CERTIFICATE-----\n"
	testKubeKey  = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5oXHHasNuUfqRoAoGCCqGSM49\n-----END EC PRIVATE KEY-----\n"
)

func (f *fakeBackend) KubeClusters() ([]api.KubernetesCluster, error) {
	f.called()
	switch f.state {
	case notJoined:
		return nil, localapi.NotJoined()
	case degraded:
		// Joined, with no kubernetes output.
		return []api.KubernetesCluster{}, nil
	}
	return []api.KubernetesCluster{
		{Name: "prod", Server: "https://10.0.0.1:6443", Labels: map[string]string{"env": "prod"}, User: "bot:web",
			Groups: []string{"system:masters"}, Expires: t0.Add(7 * time.Hour)},
		{Name: "staging", Server: "https://staging.example.com", User: "deployer", Groups: []string{}, Expires: t0.Add(7 * time.Hour)},
	}, nil
}

func (f *fakeBackend) Kubeconfig(r localapi.KubeconfigRequest) (string, error) {
	f.called()
	f.mu.Lock()
	f.kubeReqs = append(f.kubeReqs, r)
	f.mu.Unlock()
	switch {
	case f.state == notJoined:
		return "", localapi.NotJoined()
	case r.Cluster != "" && r.Cluster != "prod":
		return "", fault.NotFound(api.CodeNotFound, "mwid holds no credentials for Kubernetes cluster %q", r.Cluster)
	case r.ContextTemplate != "" && !strings.Contains(r.ContextTemplate, "{{.Cluster}}"):
		return "", fault.Invalid(api.CodeBadRequest, "context template %q gives clusters prod and staging the same name", r.ContextTemplate)
	}
	user := `    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: /usr/local/bin/mwictl
      args: [--socket, /run/mwi/api.sock, kube-credential, --cluster, prod]
      interactiveMode: Never
      provideClusterInfo: false
`
	if r.Embed {
		user = "    client-certificate-data: LS0tLS1CRUdJTg==\n    client-key-data: LS0tLS1CRUdJTg==\n"
	}
	return `apiVersion: v1
kind: Config
clusters:
- name: prod
  cluster:
    server: https://10.0.0.1:6443
    certificate-authority-data: LS0tLS1CRUdJTg==
users:
- name: prod
  user:
` + user + `contexts:
- name: prod
  context:
    cluster: prod
    user: prod
current-context: prod
`, nil
}

func (f *fakeBackend) KubeCredential(cluster string) (api.ExecCredential, error) {
	f.called()
	switch {
	case f.state == notJoined:
		return api.ExecCredential{}, localapi.NotJoined()
	case cluster != "prod":
		return api.ExecCredential{}, fault.NotFound(api.CodeNotFound, "mwid holds no credentials for Kubernetes cluster %q", cluster)
	}
	return api.ExecCredential{
		APIVersion: api.ExecCredentialAPIVersion,
		Kind:       "ExecCredential",
		Status: api.ExecCredentialStatus{
			ExpirationTimestamp:   t0.Add(7 * time.Hour).Truncate(time.Second),
			ClientCertificateData: testKubeCert,
			ClientKeyData:         testKubeKey,
		},
	}, nil
}

// TestKubeconfigQuery checks that the query reaches the backend as asked.
func TestKubeconfigQuery(t *testing.T) {
	f := &fakeBackend{state: ready}
	h := localapi.Routes(f, metrics.New().Handler(), newLogger(t))
	for _, tc := range []struct {
		query  string
		status int
		want   localapi.KubeconfigRequest
	}{
		{"", 200, localapi.KubeconfigRequest{}},
		{"?cluster=prod&mwictl=/bin/mwictl&context_template=x-{{.Cluster}}&embed=true", 200,
			localapi.KubeconfigRequest{Cluster: "prod", Mwictl: "/bin/mwictl", ContextTemplate: "x-{{.Cluster}}", Embed: true}},
		{"?embed=false", 200, localapi.KubeconfigRequest{}},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "http://mwid/v1/kubernetes/kubeconfig"+strings.ReplaceAll(tc.query, "{", "%7B"), nil))
		if rec.Code != tc.status || rec.Header().Get("Content-Type") != "application/yaml" {
			t.Errorf("%s: %d %s", tc.query, rec.Code, rec.Header().Get("Content-Type"))
		}
		reqs := f.kubeReqs
		if len(reqs) == 0 || reqs[len(reqs)-1] != tc.want {
			t.Errorf("%s: backend got %+v, want %+v", tc.query, reqs, tc.want)
		}
	}
	// Requests the backend never sees.
	calls := len(f.kubeReqs)
	for _, target := range []string{"/v1/kubernetes/kubeconfig?embed=maybe", "/v1/kubernetes/credential", "/v1/kubernetes/credential?cluster="} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "http://mwid"+target, nil))
		if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), `"bad_request"`) {
			t.Errorf("%s: %d %s, want 400 bad_request", target, rec.Code, rec.Body)
		}
	}
	if len(f.kubeReqs) != calls {
		t.Error("a bad request reached the backend")
	}
}
