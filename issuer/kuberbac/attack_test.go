package kuberbac

import (
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestApplyDeletesOnlyOurs lists through an API server that ignores the
// label selector: the objects it answers that are not labelled as
// mwi-issuer's are left alone, whatever their name.
func TestApplyDeletesOnlyOurs(t *testing.T) {
	api := &fakeAPI{objects: map[string]Object{}, ignoreSelector: true}
	srv := httptest.NewTLSServer(api)
	defer srv.Close()
	c, err := LoadKubeconfig(writeKubeconfig(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	foreign := map[string]Object{
		"/apis/rbac.authorization.k8s.io/v1/clusterroles/admin": {Kind: KindClusterRole, Metadata: Metadata{Name: "admin"}},
		"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/mwi-role-x": {Kind: KindClusterRoleBinding,
			Metadata: Metadata{Name: "mwi-role-x", Labels: map[string]string{LabelManagedBy: "helm"}}},
		"/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles/mwi-role-y": {Kind: KindRole,
			Metadata: Metadata{Name: "mwi-role-y", Namespace: "default", Labels: map[string]string{"other": ManagedBy}}},
	}
	for p, o := range foreign {
		api.objects[p] = o
	}
	done, err := c.Apply(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(done) != 0 {
		t.Errorf("applied %q, want nothing done", lines(done))
	}
	for p := range foreign {
		if _, ok := api.objects[p]; !ok {
			t.Errorf("%s deleted", p)
		}
	}
}

// TestLoadKubeconfigInsecure refuses a kubeconfig that asks not to verify
// the API server, rather than verify it anyway and fail on a certificate
// the user said not to check.
func TestLoadKubeconfigInsecure(t *testing.T) {
	kc := "current-context: x\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n" +
		"clusters: [{name: c, cluster: {server: 'https://h', insecure-skip-tls-verify: true}}]\nusers: [{name: u, user: {token: t}}]\n"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKubeconfig(path); err == nil || !strings.Contains(err.Error(), "insecure-skip-tls-verify") {
		t.Errorf("err = %v, want insecure-skip-tls-verify refused", err)
	}
}
