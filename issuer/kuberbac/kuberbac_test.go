package kuberbac

import (
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/mwi-project/mwi/issuer/resource"
)

// set returns a set with clusters prod (env=prod) and dev (env=dev), the
// roles given, and a bot "b" holding them all.
func set(t *testing.T, roles ...resource.Role) *resource.Set {
	t.Helper()
	all := []resource.Resource{
		resource.KubeCluster{Name: "prod", Labels: map[string]string{"env": "prod"}},
		resource.KubeCluster{Name: "dev", Labels: map[string]string{"env": "dev"}},
	}
	var names []string
	for _, r := range roles {
		all = append(all, r)
		names = append(names, r.Name)
	}
	all = append(all, resource.Bot{Name: "b", Roles: names})
	s, err := resource.NewSet(all...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// kr is a shorthand for one entry of kubernetes_resources.
func kr(kind, ns, name string, verbs ...string) resource.KubernetesResource {
	return resource.KubernetesResource{Kind: kind, Namespace: ns, Name: name, Verbs: verbs}
}

// prodRole returns a role selecting prod with the given resources.
func prodRole(name string, res ...resource.KubernetesResource) resource.Role {
	return resource.Role{Name: name, KubernetesLabels: map[string][]string{"env": {"prod"}}, KubernetesResources: res}
}

func TestRender(t *testing.T) {
	const hdr = "apiVersion: rbac.authorization.k8s.io/v1\n"
	labels := "    labels:\n        app.kubernetes.io/managed-by: mwi-issuer\n"
	binding := func(kind, ns, role string) string {
		nsLine := ""
		if ns != "" {
			nsLine = "    namespace: " + ns + "\n"
		}
		refKind := strings.TrimSuffix(kind, "Binding")
		return hdr + "kind: " + kind + "\nmetadata:\n    name: mwi-role-" + role + "\n" + nsLine + labels +
			"roleRef:\n    apiGroup: rbac.authorization.k8s.io\n    kind: " + refKind + "\n    name: mwi-role-" + role +
			"\nsubjects:\n    - apiGroup: rbac.authorization.k8s.io\n      kind: Group\n      name: mwi:role:" + role + "\n"
	}
	tests := []struct {
		name  string
		roles []resource.Role
		want  string // the YAML; "" for no objects
	}{
		{
			name:  "namespaced",
			roles: []resource.Role{prodRole("pods", kr("pod", "default", "*", "get", "list"))},
			want: hdr + "kind: Role\nmetadata:\n    name: mwi-role-pods\n    namespace: default\n" + labels +
				"rules:\n    - apiGroups:\n        - \"\"\n      resources:\n        - pods\n      verbs:\n        - get\n        - list\n" +
				"---\n" + binding("RoleBinding", "default", "pods"),
		},
		{
			name:  "every namespace",
			roles: []resource.Role{prodRole("deploy", kr("deployment", "*", "web", "*"))},
			want: hdr + "kind: ClusterRole\nmetadata:\n    name: mwi-role-deploy\n" + labels +
				"rules:\n    - apiGroups:\n        - apps\n      resources:\n        - deployments\n      resourceNames:\n        - web\n      verbs:\n        - '*'\n" +
				"---\n" + binding("ClusterRoleBinding", "", "deploy"),
		},
		{
			name:  "a role on another cluster renders nothing",
			roles: []resource.Role{{Name: "other", KubernetesLabels: map[string][]string{"env": {"dev"}}, KubernetesResources: []resource.KubernetesResource{kr("pod", "default", "*", "get")}}},
			want:  "",
		},
		{
			name:  "a role without kubernetes_resources renders nothing",
			roles: []resource.Role{prodRole("plain")},
			want:  "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Render(set(t, tt.roles...), "prod")
			if err != nil {
				t.Fatal(err)
			}
			if got := string(p.YAML()); got != tt.want {
				t.Errorf("YAML:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

// TestRenderRules checks the rules made of each kind of entry.
func TestRenderRules(t *testing.T) {
	tests := []struct {
		name string
		res  resource.KubernetesResource
		want string // "KIND NAMESPACE: rule; rule" per object with rules, sorted, joined by " | "
	}{
		{"pod by name", kr("pod", "default", "web", "get"), `Role default: ""/pods[web] get`},
		{"service covers endpoints", kr("service", "default", "*", "list"), `Role default: ""/services,endpoints list`},
		{"apps", kr("statefulset", "db", "*", "get", "watch"), "Role db: apps/statefulsets get,watch"},
		{"batch", kr("cronjob", "ops", "*", "create"), "Role ops: batch/cronjobs create"},
		{"ingress", kr("ingress", "web", "*", "get"), "Role web: networking.k8s.io/ingresses get"},
		{"kube_role", kr("kube_role", "web", "*", "get"), "Role web: rbac.authorization.k8s.io/roles get"},
		{"cluster-scoped kind", kr("persistentvolume", "", "pv1", "get"), `ClusterRole : ""/persistentvolumes[pv1] get`},
		{"cluster-scoped kind, namespace *", kr("clusterrole", "*", "*", "get"), "ClusterRole : rbac.authorization.k8s.io/clusterroles get"},
		{"kube_node", kr("kube_node", "", "*", "list"), `ClusterRole : ""/nodes list`},
		{"every kind in a namespace", kr("*", "default", "*", "*"), "Role default: */* *"},
		{"every kind everywhere", kr("*", "*", "*", "get"), "ClusterRole : */* get"},
		{"namespace kind", kr("namespace", "", "team-a", "get", "list"), `ClusterRole : ""/namespaces[team-a] get,list | Role team-a: */* get,list`},
		{"exec", kr("pod", "default", "*", "get", "exec"), `Role default: ""/pods get; ""/pods/attach,pods/exec create,get`},
		{"portforward only", kr("pod", "default", "web", "portforward"), `Role default: ""/pods/portforward[web] create,get`},
		{"pod, every verb", kr("pod", "default", "*", "*"), `Role default: ""/pods *; ""/pods/attach,pods/exec,pods/portforward create,get`},
		{"verbs deduplicated and sorted", kr("pod", "default", "*", "list", "get", "list"), `Role default: ""/pods get,list`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Render(set(t, prodRole("r", tt.res)), "prod")
			if err != nil {
				t.Fatal(err)
			}
			var objs []string
			for _, o := range p.Objects {
				if len(o.Rules) == 0 {
					continue
				}
				var rules []string
				for _, r := range o.Rules {
					g := strings.Join(r.APIGroups, ",")
					if g == "" {
						g = `""` // the core group
					}
					s := g + "/" + strings.Join(r.Resources, ",")
					if len(r.ResourceNames) > 0 {
						s += "[" + strings.Join(r.ResourceNames, ",") + "]"
					}
					rules = append(rules, s+" "+strings.Join(r.Verbs, ","))
				}
				objs = append(objs, o.Kind+" "+o.Metadata.Namespace+": "+strings.Join(rules, "; "))
			}
			if got := strings.Join(objs, " | "); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestRenderRefuses(t *testing.T) {
	tests := []struct {
		name string
		res  resource.KubernetesResource
		want string
	}{
		{"unknown kind", kr("widget", "default", "*", "get"), `role r: kubernetes_resources[0] (kind "widget"): kind "widget" has no Kubernetes RBAC equivalent`},
		{"unknown verb", kr("pod", "default", "*", "launch"), `verb "launch" is not a Kubernetes verb`},
		{"no verbs", kr("pod", "default", "*"), "no verbs"},
		{"name pattern", kr("pod", "default", "web-*", "get"), `name "web-*" is a pattern`},
		{"name regexp", kr("pod", "default", "^web-[0-9]+$", "get"), `name "^web-[0-9]+$" is a pattern`},
		{"namespace pattern", kr("pod", "team-*", "*", "get"), `namespace "team-*" is a pattern`},
		{"namespaced kind without namespace", kr("secret", "", "*", "get"), "objects of kind secret live in a namespace"},
		{"cluster-scoped kind in a namespace", kr("persistentvolume", "default", "*", "get"), "objects of kind persistentvolume have no namespace"},
		{"exec on deployments", kr("deployment", "default", "*", "exec"), "verbs exec and portforward apply to pods only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Render(set(t, prodRole("r", tt.res)), "prod")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
			if w := Warnings(set(t, prodRole("r", tt.res))); len(w) != 1 || !strings.Contains(w[0], "kubernetes_resources[0] of role r cannot be enforced") {
				t.Errorf("Warnings = %q, want one about role r", w)
			}
		})
	}
	if _, err := Render(set(t), "nowhere"); err == nil || !strings.Contains(err.Error(), `no Kubernetes cluster named "nowhere"`) {
		t.Errorf("unknown cluster: err = %v", err)
	}
}

// TestRenderSorted checks that the objects come sorted by kind, namespace
// and name, whatever the order of roles and rules.
func TestRenderSorted(t *testing.T) {
	s := set(t,
		prodRole("z", kr("pod", "b", "*", "get"), kr("pod", "a", "*", "get"), kr("clusterrole", "", "*", "get")),
		prodRole("a", kr("secret", "b", "*", "get")),
	)
	p, err := Render(s, "prod")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range p.Objects {
		got = append(got, o.Kind+"/"+o.Metadata.Namespace+"/"+o.Metadata.Name)
	}
	want := "ClusterRole//mwi-role-z ClusterRoleBinding//mwi-role-z Role/a/mwi-role-z Role/b/mwi-role-a Role/b/mwi-role-z " +
		"RoleBinding/a/mwi-role-z RoleBinding/b/mwi-role-a RoleBinding/b/mwi-role-z"
	if strings.Join(got, " ") != want {
		t.Errorf("objects:\n%s\nwant\n%s", strings.Join(got, " "), want)
	}
	for i := 0; i < 5; i++ {
		again, _ := Render(s, "prod")
		if string(again.YAML()) != string(p.YAML()) {
			t.Fatal("Render is not deterministic")
		}
	}
	// Each document is a whole object.
	dec := yaml.NewDecoder(strings.NewReader(string(p.YAML())))
	n := 0
	for {
		var o Object
		if err := dec.Decode(&o); err != nil {
			break
		}
		n++
	}
	if n != len(p.Objects) {
		t.Errorf("%d documents, want %d", n, len(p.Objects))
	}
}

func TestWarnings(t *testing.T) {
	pods := kr("pod", "default", "*", "get")
	masters := func(name string, res ...resource.KubernetesResource) resource.Role {
		r := prodRole(name, res...)
		r.KubernetesGroups = []string{"system:masters"}
		return r
	}
	tests := []struct {
		name  string
		roles []resource.Role
		want  []string
	}{
		{"no masters", []resource.Role{prodRole("r", pods)}, nil},
		{"the role's own masters", []resource.Role{masters("r", pods)},
			[]string{"kubernetes_resources of role r restrict nothing on cluster prod: its certificates are in system:masters, which Kubernetes never restricts"}},
		{"another role's masters", []resource.Role{prodRole("r", pods), masters("admin")},
			[]string{"kubernetes_resources of role r restrict nothing on cluster prod: bot b also holds role admin, which puts its certificates in system:masters, which Kubernetes never restricts"}},
		{"masters on another cluster only", []resource.Role{prodRole("r", pods),
			{Name: "devadmin", KubernetesLabels: map[string][]string{"env": {"dev"}}, KubernetesGroups: []string{"system:masters"}}}, nil},
		{"masters without kubernetes_resources", []resource.Role{masters("admin")}, nil},
		{"create by name", []resource.Role{prodRole("r", kr("pod", "default", "web", "get", "create"))},
			[]string{`kubernetes_resources[0] of role r allows create on pod "web", which Kubernetes RBAC never allows by name (the request names no object): give name '*' to allow it`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := set(t, tt.roles...)
			got := Warnings(s)
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("Warnings:\n%q\nwant\n%q", got, tt.want)
			}
			p, err := Render(s, "prod")
			if err != nil {
				t.Fatal(err)
			}
			if want := tt.want; strings.Join(p.Warnings, "\n") != strings.Join(want, "\n") {
				t.Errorf("Plan.Warnings:\n%q\nwant\n%q", p.Warnings, want)
			}
		})
	}
}

func TestWarningsFor(t *testing.T) {
	r := prodRole("r", kr("pod", "default", "web", "create"))
	admin := prodRole("admin")
	admin.KubernetesGroups = []string{"system:masters"}
	s := set(t, r, admin, prodRole("quiet", kr("pod", "default", "*", "get")))
	byName := `kubernetes_resources[0] of role r allows create on pod "web", which Kubernetes RBAC never allows by name (the request names no object): give name '*' to allow it`
	masters := func(role string) string {
		return "kubernetes_resources of role " + role + " restrict nothing on cluster prod: bot b also holds role admin, which puts its certificates in system:masters, which Kubernetes never restricts"
	}
	tests := []struct {
		kind, name string
		want       []string
	}{
		{"role", "r", []string{byName, masters("r")}},
		{"role", "quiet", []string{masters("quiet")}},
		{"role", "admin", nil},
		{"bot", "b", []string{masters("quiet"), masters("r")}},
		{"kube_cluster", "prod", []string{masters("quiet"), masters("r")}},
		{"kube_cluster", "dev", nil},
		{"token", "r", nil},
	}
	for _, tt := range tests {
		if got := WarningsFor(s, tt.kind, tt.name); strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
			t.Errorf("WarningsFor(%s/%s):\n%q\nwant\n%q", tt.kind, tt.name, got, tt.want)
		}
	}
	// Every warning concerns some resource, so get shows each one.
	if n := len(Warnings(s)); n != 3 {
		t.Errorf("Warnings gives %d, want 3", n)
	}
}
