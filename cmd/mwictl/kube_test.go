package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mwi-project/mwi/api"
)

var (
	theCredential = api.ExecCredential{APIVersion: api.ExecCredentialAPIVersion, Kind: "ExecCredential",
		Status: api.ExecCredentialStatus{ExpirationTimestamp: expires, ClientCertificateData: "CERT", ClientKeyData: "KEY"}}
	theClusters = []api.KubernetesCluster{
		{Name: "prod", Server: "https://10.0.0.1:6443", Labels: map[string]string{"env": "prod"}, User: "bot:web", Groups: []string{"dev", "system:masters"}, Expires: expires},
		{Name: "lab", Server: "https://lab:6443", User: "alice", Groups: []string{}, Expires: expires},
	}
)

func kubeMWID(t *testing.T) *fakeMWID {
	t.Helper()
	return serve(t, map[string]http.Handler{
		"GET /v1/kubernetes/credential": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Get("cluster") != "prod" {
				apiError(404, api.CodeNotFound, `mwid holds no credentials for Kubernetes cluster "`+r.URL.Query().Get("cluster")+`" (clusters available: prod)`).ServeHTTP(w, r)
				return
			}
			answer(200, theCredential).ServeHTTP(w, r)
		}),
		"GET /v1/kubernetes/clusters": answer(200, theClusters),
		"GET /v1/kubernetes/kubeconfig": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/yaml")
			io.WriteString(w, "apiVersion: v1\n# "+r.URL.RawQuery+"\n")
		}),
	})
}

func TestKubeCredential(t *testing.T) {
	f := kubeMWID(t)
	code, out, errs := mwictl(f.sock, "kube-credential", "--cluster", "prod")
	want(t, code, out, errs, 0, "")
	var got api.ExecCredential
	if err := json.Unmarshal([]byte(out), &got); err != nil || got != theCredential {
		t.Errorf("stdout %q (%v), want the ExecCredential", out, err)
	}

	t.Setenv("KUBERNETES_EXEC_INFO", `{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","spec":{"interactive":false}}`)
	code, out, errs = mwictl(f.sock, "kube-credential", "--cluster", "prod")
	want(t, code, out, errs, 0, "")

	t.Setenv("KUBERNETES_EXEC_INFO", `{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1beta1","spec":{}}`)
	code, out, errs = mwictl(f.sock, "kube-credential", "--cluster", "prod")
	want(t, code, out, errs, 1, "mwictl: kubectl asks for an ExecCredential of client.authentication.k8s.io/v1beta1, but mwictl answers client.authentication.k8s.io/v1")
	if out != "" {
		t.Errorf("stdout %q on failure", out)
	}
	t.Setenv("KUBERNETES_EXEC_INFO", `{not json`)
	code, out, errs = mwictl(f.sock, "kube-credential", "--cluster", "prod")
	want(t, code, out, errs, 1, "mwictl: KUBERNETES_EXEC_INFO is not the JSON kubectl sends")
	os.Unsetenv("KUBERNETES_EXEC_INFO")

	code, out, errs = mwictl(f.sock, "kube-credential", "--cluster", "secret")
	want(t, code, out, errs, 1, `mwictl: mwid holds no credentials for Kubernetes cluster "secret" (clusters available: prod)`)
	if out != "" {
		t.Errorf("stdout %q on failure", out)
	}
	code, _, errs = mwictl(f.sock, "kube-credential")
	if code != 2 || !strings.Contains(errs, "--cluster is required") {
		t.Errorf("without --cluster: exit %d, stderr %q", code, errs)
	}
}

func TestKubeconfig(t *testing.T) {
	f := kubeMWID(t)
	self, _ := executable()
	code, out, errs := mwictl(f.sock, "kubeconfig")
	want(t, code, out, errs, 0, "", "apiVersion: v1\n")
	if q := f.lastRequest().URL.Query(); q.Get("mwictl") != self || q.Has("embed") || q.Has("cluster") {
		t.Errorf("query %v, want mwictl=%s only", q, self)
	}
	code, out, errs = mwictl(f.sock, "kubeconfig", "--cluster", "prod", "--context-template", "{{.Bot}}-{{.Cluster}}")
	want(t, code, out, errs, 0, "")
	if q := f.lastRequest().URL.Query(); q.Get("cluster") != "prod" || q.Get("context_template") != "{{.Bot}}-{{.Cluster}}" {
		t.Errorf("query %v", q)
	}

	// -o writes with mode 0600, since an embedded kubeconfig is a secret.
	name := filepath.Join(t.TempDir(), "config")
	code, out, errs = mwictl(f.sock, "kubeconfig", "-o", name)
	want(t, code, out, errs, 0, "", "wrote "+name)
	if fi, err := os.Stat(name); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v (%v), want 0600", fi, err)
	}

	// --embed says the key is now on disk.
	code, out, errs = mwictl(f.sock, "kubeconfig", "--embed", "-o", name)
	if code != 0 || !strings.Contains(errs, "holds the private key inline, which is now on disk ("+name+")") {
		t.Errorf("--embed: exit %d, stderr %q", code, errs)
	}
	if q := f.lastRequest().URL.Query(); q.Get("embed") != "true" || q.Has("mwictl") {
		t.Errorf("--embed query %v", q)
	}
	code, _, errs = mwictl(f.sock, "kubeconfig", "--embed")
	if code != 0 || !strings.Contains(errs, "now on disk (wherever standard output goes)") {
		t.Errorf("--embed to stdout: exit %d, stderr %q", code, errs)
	}
}

func TestKubeClusters(t *testing.T) {
	f := kubeMWID(t)
	code, out, errs := mwictl(f.sock, "kube-clusters")
	want(t, code, out, errs, 0, "",
		"CLUSTER SERVER USER GROUPS EXPIRES",
		"prod https://10.0.0.1:6443 bot:web dev,system:masters 2026-03-01T20:00:00Z (in 8h0m0s)",
		"lab https://lab:6443 alice - ")
	code, out, errs = mwictl(f.sock, "kube-clusters", "--json")
	want(t, code, out, errs, 0, "", `"name": "prod"`)
}
