package server

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/issuer/resource"
)

// TestKubeRBACRoute gets a cluster's RBAC objects and warnings from the
// admin socket, and the refusals of a missing or unknown cluster.
func TestKubeRBACRoute(t *testing.T) {
	auth, _ := testAuthority(t)
	pods := resource.Role{Name: "pods", KubernetesLabels: map[string][]string{"*": {"*"}},
		KubernetesGroups:    []string{"system:masters"},
		KubernetesResources: []resource.KubernetesResource{{Kind: "pod", Namespace: "default", Name: "*", Verbs: []string{"get"}}}}
	set, err := resource.NewSet(pods, resource.Bot{Name: "k", Roles: []string{"pods"}}, resource.KubeCluster{Name: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	auth.SetResources(set)
	admin := unixServer(t, adminRoutes(auth, nil, auth.Audit, discardLog()))
	get := func(query string) (int, []byte) {
		t.Helper()
		res, err := admin.Get("http://mwi/admin/v1/kube/rbac" + query)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res.StatusCode, body
	}
	code, body := get("?cluster=prod")
	var rbac api.KubeRBAC
	if code != http.StatusOK || json.Unmarshal(body, &rbac) != nil {
		t.Fatalf("GET: %d %s", code, body)
	}
	if rbac.Cluster != "prod" || !strings.Contains(rbac.Manifests, "kind: RoleBinding") || !strings.Contains(rbac.Manifests, "name: mwi:role:pods") {
		t.Errorf("answer = %+v", rbac)
	}
	if len(rbac.Warnings) != 1 || !strings.Contains(rbac.Warnings[0], "role pods restrict nothing on cluster prod") {
		t.Errorf("warnings = %q", rbac.Warnings)
	}
	for _, tc := range []struct {
		query string
		code  int
		want  string
	}{
		{"", http.StatusBadRequest, "name a cluster"},
		{"?cluster=nowhere", http.StatusNotFound, `no Kubernetes cluster named \"nowhere\"`},
	} {
		if code, body := get(tc.query); code != tc.code || !strings.Contains(string(body), tc.want) {
			t.Errorf("GET %q: %d %s, want %d %q", tc.query, code, body, tc.code, tc.want)
		}
	}
}

// TestWarnKubeRBAC checks that a load logs the kubernetes_resources that
// restrict nothing.
func TestWarnKubeRBAC(t *testing.T) {
	masters := resource.Role{Name: "pods", KubernetesLabels: map[string][]string{"*": {"*"}},
		KubernetesGroups:    []string{"system:masters"},
		KubernetesResources: []resource.KubernetesResource{{Kind: "pod", Namespace: "default", Name: "*", Verbs: []string{"get"}}}}
	set, err := resource.NewSet(masters, resource.Bot{Name: "k", Roles: []string{"pods"}}, resource.KubeCluster{Name: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	var buf strings.Builder
	warnKubeRBAC(slog.New(slog.NewTextHandler(&buf, nil)), set)
	if !strings.Contains(buf.String(), "level=WARN") || !strings.Contains(buf.String(), "kubernetes_resources of role pods restrict nothing on cluster prod: its certificates are in system:masters") {
		t.Errorf("log = %q", buf.String())
	}
}
