package kuberbac

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// fakeAPI is an API server holding RBAC objects, enough for Apply.
type fakeAPI struct {
	mu      sync.Mutex
	objects map[string]Object // by URL path
	log     []string          // "METHOD path?query content-type"
	// ignoreSelector makes lists answer every object of the resource,
	// labelled or not, as a server that ignores labelSelector would.
	ignoreSelector bool
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer secret" {
		http.Error(w, `{"message":"Unauthorized"}`, http.StatusUnauthorized)
		return
	}
	f.log = append(f.log, r.Method+" "+r.URL.RequestURI()+" "+r.Header.Get("Content-Type"))
	switch r.Method {
	case http.MethodPatch:
		var o Object
		body, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(body, &o); err != nil {
			http.Error(w, `{"message":"bad body"}`, http.StatusBadRequest)
			return
		}
		f.objects[r.URL.Path] = o
		json.NewEncoder(w).Encode(o)
	case http.MethodDelete:
		if _, ok := f.objects[r.URL.Path]; !ok {
			http.Error(w, `{"message":"not found"}`, http.StatusNotFound)
			return
		}
		delete(f.objects, r.URL.Path)
		w.Write([]byte(`{}`))
	case http.MethodGet:
		// A list of every namespace: the objects of that resource.
		res := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
		var items []Object
		for _, p := range slices.Sorted(maps.Keys(f.objects)) {
			o := f.objects[p]
			if resourceOf[o.Kind] == res && (f.ignoreSelector || o.Metadata.Labels[LabelManagedBy] == ManagedBy) {
				items = append(items, o)
			}
		}
		json.NewEncoder(w).Encode(map[string]any{"items": items})
	}
}

// writeKubeconfig writes a kubeconfig for srv, with a token, and returns its path.
func writeKubeconfig(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
current-context: admin@test
contexts:
- name: other
  context: {cluster: nowhere, user: nobody}
- name: admin@test
  context: {cluster: test, user: admin}
clusters:
- name: test
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: admin
  user:
    token: secret
`, srv.URL, base64.StdEncoding.EncodeToString(ca))
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestApply(t *testing.T) {
	api := &fakeAPI{objects: map[string]Object{}}
	srv := httptest.NewTLSServer(api)
	defer srv.Close()
	c, err := LoadKubeconfig(writeKubeconfig(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	// A foreign object, not labelled as ours, is never touched.
	api.objects["/apis/rbac.authorization.k8s.io/v1/clusterroles/admin"] = Object{Kind: KindClusterRole, Metadata: Metadata{Name: "admin"}}

	first, err := Render(set(t,
		prodRole("pods", kr("pod", "default", "*", "get")),
		prodRole("all", kr("secret", "*", "*", "get")),
	), "prod")
	if err != nil {
		t.Fatal(err)
	}
	// Through the manifests, as the CLI gets them.
	objs, err := ParseYAML(first.YAML())
	if err != nil {
		t.Fatal(err)
	}
	done, err := c.Apply(context.Background(), objs)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"ClusterRole mwi-role-all applied", "ClusterRoleBinding mwi-role-all applied",
		"Role default/mwi-role-pods applied", "RoleBinding default/mwi-role-pods applied",
	}
	if got := strings.Join(lines(done), "\n"); got != strings.Join(want, "\n") {
		t.Errorf("first apply:\n%s\nwant\n%s", got, strings.Join(want, "\n"))
	}
	if !slices.Contains(api.log, "PATCH /apis/rbac.authorization.k8s.io/v1/namespaces/default/roles/mwi-role-pods?fieldManager=mwi-issuer&force=true application/apply-patch+yaml") {
		t.Errorf("requests: %q", api.log)
	}

	// The role "all" is gone: its objects are deleted, bindings first.
	second, err := Render(set(t, prodRole("pods", kr("pod", "default", "*", "get"))), "prod")
	if err != nil {
		t.Fatal(err)
	}
	done, err = c.Apply(context.Background(), second.Objects)
	if err != nil {
		t.Fatal(err)
	}
	want = []string{
		"Role default/mwi-role-pods applied", "RoleBinding default/mwi-role-pods applied",
		"ClusterRoleBinding mwi-role-all deleted", "ClusterRole mwi-role-all deleted",
	}
	if got := strings.Join(lines(done), "\n"); got != strings.Join(want, "\n") {
		t.Errorf("second apply:\n%s\nwant\n%s", got, strings.Join(want, "\n"))
	}
	var left []string
	for p := range api.objects {
		left = append(left, p)
	}
	slices.Sort(left)
	wantLeft := []string{
		"/apis/rbac.authorization.k8s.io/v1/clusterroles/admin",
		"/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings/mwi-role-pods",
		"/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles/mwi-role-pods",
	}
	if !slices.Equal(left, wantLeft) {
		t.Errorf("objects left: %q\nwant %q", left, wantLeft)
	}

	// The API server's refusal is shown with its message.
	c.Token = "wrong"
	if _, err := c.Apply(context.Background(), second.Objects); err == nil || !strings.Contains(err.Error(), "401 Unauthorized: Unauthorized") ||
		!strings.Contains(err.Error(), "apply Role default/mwi-role-pods") {
		t.Errorf("err = %v", err)
	}
}

func lines(done []Applied) []string {
	var out []string
	for _, a := range done {
		out = append(out, a.String())
	}
	return out
}

func TestLoadKubeconfigRefuses(t *testing.T) {
	tests := []struct {
		name, kc, want string
	}{
		{"no current context", "clusters: []\n", "no current-context"},
		{"unknown context", "current-context: x\n", `current-context "x" is not among its contexts`},
		{"not https", "current-context: x\ncontexts: [{name: x, context: {cluster: c, user: u}}]\nclusters: [{name: c, cluster: {server: 'http://h'}}]\n",
			`server "http://h" is not an https URL`},
		{"exec plugin", "current-context: x\ncontexts: [{name: x, context: {cluster: c, user: u}}]\nclusters: [{name: c, cluster: {server: 'https://h'}}]\nusers: [{name: u, user: {}}]\n",
			"neither a client certificate and key nor a token"},
		{"unknown user", "current-context: x\ncontexts: [{name: x, context: {cluster: c, user: u}}]\nclusters: [{name: c, cluster: {server: 'https://h'}}]\n",
			`names user "u", which it does not define`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "kubeconfig")
			os.WriteFile(path, []byte(tt.kc), 0o600)
			if _, err := LoadKubeconfig(path); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
}
