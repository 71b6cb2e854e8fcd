package integration

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mwi-project/mwi/integration/harness"
)

// kubeRBACResources is what a user writes to let a bot read and manage the
// pods of namespace default on clusters labelled env=dev, and nothing
// else: a role whose kubernetes_resources Kubernetes enforces once
// mwi-issuer kube rbac --apply has made them RBAC.
const kubeRBACResources = `kind: role
version: v1
metadata: {name: pods-default}
spec:
  allow:
    kubernetes_labels: {env: dev}
    kubernetes_groups: [pod-readers]
    kubernetes_resources:
      - kind: pod
        namespace: default
        name: '*'
        verbs: ['*']
---
kind: bot
version: v1
metadata: {name: kpods}
spec: {roles: [pods-default]}
`

// TestKubeRBAC applies the RBAC of a role's kubernetes_resources to a real
// kube-apiserver with the administrator's kubeconfig, and checks that a
// bot holding the role may then list the pods of default, and only those.
func TestKubeRBAC(t *testing.T) {
	t.Parallel()
	kube := harness.NewKube(t)
	e := &kubeEnv{kube: kube, work: t.TempDir()}
	resources := kubeRBACResources + "---\n" + kube.ClusterYAML("dev", map[string]string{"env": "dev"})
	e.iss = harness.StartIssuer(t, resources)
	kube.Start(t, e.iss.KubeCAFile)
	d := harness.StartDaemon(t, e.iss, harness.DaemonOptions{
		Token: e.iss.CreateToken(t, "kpods", time.Hour),
		Extra: kubeOutput("    clusters: [dev]\n"),
	})
	d.WaitState(t, "ready", 30*time.Second)

	user, groups := e.whoami(t, d)
	if user != "bot:kpods" || !slices.Contains(groups, "mwi:role:pods-default") || !slices.Contains(groups, "pod-readers") || slices.Contains(groups, "system:masters") {
		t.Fatalf("kubectl auth whoami: user %q, groups %v; want bot:kpods in mwi:role:pods-default and pod-readers", user, groups)
	}
	// Nothing is allowed before the RBAC is applied.
	if out, err := e.kubectl(d, "get", "pods", "-n", "default"); err == nil || !strings.Contains(out, "Forbidden") {
		t.Fatalf("get pods -n default before kube rbac --apply: err %v, want Forbidden:\n%s", err, out)
	}

	issuer := func(args ...string) (string, error) {
		return harness.Run(context.Background(), 60*time.Second, nil,
			append([]string{e.iss.Bins.Issuer, "kube", "rbac", "--cluster", "dev", "--admin-socket", e.iss.AdminSock}, args...)...)
	}
	out, err := issuer()
	if err != nil || !strings.Contains(out, "kind: Role\n") || !strings.Contains(out, "namespace: default") || !strings.Contains(out, "name: mwi:role:pods-default") {
		t.Fatalf("mwi-issuer kube rbac: %v\n%s", err, out)
	}
	out, err = issuer("--apply", "--kubeconfig", kube.AdminKubeconfig)
	if err != nil || !strings.Contains(out, "Role default/mwi-role-pods-default applied\nRoleBinding default/mwi-role-pods-default applied") {
		t.Fatalf("mwi-issuer kube rbac --apply: %v\n%s", err, out)
	}
	if out := kube.Admin(t, "-n", "default", "get", "roles,rolebindings", "-l", "app.kubernetes.io/managed-by=mwi-issuer", "-o", "name"); !strings.Contains(out, "role.rbac.authorization.k8s.io/mwi-role-pods-default") {
		t.Errorf("the applied objects are not in the cluster:\n%s", out)
	}

	if out, err := e.kubectl(d, "get", "pods", "-n", "default"); err != nil {
		t.Errorf("get pods -n default after kube rbac --apply: %v\n%s", err, out)
	}
	out, err = e.kubectl(d, "get", "pods", "-n", "kube-system")
	if err == nil || !strings.Contains(out, "Forbidden") || !strings.Contains(out, `User "bot:kpods" cannot list resource "pods"`) {
		t.Errorf("get pods -n kube-system: err %v, want Forbidden:\n%s", err, out)
	}
	if out, err := e.kubectl(d, "get", "secrets", "-n", "default"); err == nil || !strings.Contains(out, "Forbidden") {
		t.Errorf("get secrets -n default: err %v, want Forbidden:\n%s", err, out)
	}

	// Applying again changes nothing; once the role loses its
	// kubernetes_resources, an apply deletes its objects.
	if out, err := issuer("--apply", "--kubeconfig", kube.AdminKubeconfig); err != nil || strings.Contains(out, "deleted") {
		t.Errorf("second apply: %v\n%s", err, out)
	}
	e.iss.WriteResources(t, "test.yaml", strings.Replace(resources, "    kubernetes_resources:\n      - kind: pod\n        namespace: default\n        name: '*'\n        verbs: ['*']\n", "", 1))
	harness.Eventually(t, 30*time.Second, "the objects deleted", func() error {
		out, err := issuer("--apply", "--kubeconfig", kube.AdminKubeconfig)
		if err != nil {
			t.Fatalf("apply after the edit: %v\n%s", err, out)
		}
		if !strings.Contains(out, "RoleBinding default/mwi-role-pods-default deleted\nRole default/mwi-role-pods-default deleted") {
			return errors.New("apply printed:\n" + out)
		}
		return nil
	})
	if out, err := e.kubectl(d, "get", "pods", "-n", "default"); err == nil || !strings.Contains(out, "Forbidden") {
		t.Errorf("get pods -n default after the objects were deleted: err %v, want Forbidden:\n%s", err, out)
	}
}
