package main

import (
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/issuer/kuberbac"
	"github.com/mwi-project/mwi/issuer/resource"
)

// serveKubeRBAC serves GET /admin/v1/kube/rbac on STATE/admin.sock with
// the RBAC of the roles given, for cluster prod, and returns STATE.
func serveKubeRBAC(t *testing.T, roles ...resource.Role) string {
	t.Helper()
	all := []resource.Resource{resource.KubeCluster{Name: "prod"}}
	var names []string
	for _, r := range roles {
		all = append(all, r)
		names = append(names, r.Name)
	}
	all = append(all, resource.Bot{Name: "b", Roles: names})
	set, err := resource.NewSet(all...)
	if err != nil {
		t.Fatal(err)
	}
	state, err := os.MkdirTemp("", "mwi-issuer") // short: a socket path
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	l, err := net.Listen("unix", filepath.Join(state, "admin.sock"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/admin/v1/kube/rbac" {
			http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, http.StatusTeapot)
			return
		}
		p, err := kuberbac.Render(set, r.URL.Query().Get("cluster"))
		if err != nil {
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": "not_found", "message": err.Error()}})
			return
		}
		json.NewEncoder(w).Encode(api.KubeRBAC{Cluster: p.Cluster, Manifests: string(p.YAML()), Warnings: p.Warnings})
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return state
}

func podsRole(groups ...string) resource.Role {
	return resource.Role{Name: "pods", KubernetesLabels: map[string][]string{"*": {"*"}}, KubernetesGroups: groups,
		KubernetesResources: []resource.KubernetesResource{{Kind: "pod", Namespace: "default", Name: "*", Verbs: []string{"get"}}}}
}

func TestKubeRBACPrint(t *testing.T) {
	state := serveKubeRBAC(t, podsRole("system:masters"))
	code, out, errs := mwiIssuer("kube", "rbac", "--cluster", "prod", "--state", state)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	objs, err := kuberbac.ParseYAML([]byte(out))
	if err != nil || len(objs) != 2 || objs[0].Kind != "Role" || objs[1].Kind != "RoleBinding" {
		t.Errorf("stdout is not the manifests (%v):\n%s", err, out)
	}
	if want := "mwi-issuer: warning: kubernetes_resources of role pods restrict nothing on cluster prod: its certificates are in system:masters, which Kubernetes never restricts\n"; errs != want {
		t.Errorf("stderr = %q, want %q", errs, want)
	}

	code, _, errs = mwiIssuer("kube", "rbac", "--cluster", "nowhere", "--state", state)
	if code != 1 || !strings.Contains(errs, `no Kubernetes cluster named "nowhere"`) {
		t.Errorf("unknown cluster: exit %d, stderr %q", code, errs)
	}

	empty := serveKubeRBAC(t)
	code, out, errs = mwiIssuer("kube", "rbac", "--cluster", "prod", "--state", empty)
	if code != 0 || out != "" || !strings.Contains(errs, "no role selecting cluster prod has kubernetes_resources") {
		t.Errorf("no objects: exit %d, stdout %q, stderr %q", code, out, errs)
	}
}

func TestKubeRBACUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"kube", "rbac", "--state", "/x"}, "--cluster is required"},
		{[]string{"kube", "rbac", "--cluster", "prod", "--apply", "--state", "/x"}, "--apply needs --kubeconfig"},
		{[]string{"kube", "rbac", "--cluster", "prod", "--kubeconfig", "k", "--state", "/x"}, "--kubeconfig is for --apply"},
	} {
		code, _, errs := mwiIssuer(tc.args...)
		if code != 2 || !strings.Contains(errs, tc.want) {
			t.Errorf("%q: exit %d, stderr %q, want 2 and %q", tc.args, code, errs, tc.want)
		}
	}
}

// TestKubeRBACApply applies through a fake API server with a token
// kubeconfig and prints what it did.
func TestKubeRBACApply(t *testing.T) {
	state := serveKubeRBAC(t, podsRole())
	var mu sync.Mutex
	var requests []string
	api := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer tok" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		io.Copy(io.Discard, r.Body)
		requests = append(requests, r.Method+" "+r.URL.Path)
		w.Write([]byte(`{"items":[]}`))
	}))
	defer api.Close()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.Certificate().Raw})
	kc := filepath.Join(t.TempDir(), "admin.kubeconfig")
	os.WriteFile(kc, []byte(fmt.Sprintf("current-context: a\ncontexts: [{name: a, context: {cluster: c, user: u}}]\n"+
		"clusters: [{name: c, cluster: {server: %q, certificate-authority-data: %s}}]\nusers: [{name: u, user: {token: tok}}]\n",
		api.URL, base64.StdEncoding.EncodeToString(ca))), 0o600)

	code, out, errs := mwiIssuer("kube", "rbac", "--cluster", "prod", "--apply", "--kubeconfig", kc, "--state", state)
	if code != 0 || errs != "" {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	if want := "Role default/mwi-role-pods applied\nRoleBinding default/mwi-role-pods applied\n"; out != want {
		t.Errorf("stdout = %q, want %q", out, want)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(requests) != 6 || requests[0] != "PATCH /apis/rbac.authorization.k8s.io/v1/namespaces/default/roles/mwi-role-pods" {
		t.Errorf("requests = %q; want 2 applies and 4 lists", requests)
	}
}
