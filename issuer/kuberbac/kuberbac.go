// Package kuberbac turns the kubernetes_resources of roles into native
// Kubernetes RBAC, so that Kubernetes itself enforces them: MWI has no
// proxy in front of the API server to filter requests.
//
// For each role with kubernetes_resources whose kubernetes_labels select a
// cluster, [Render] makes a Role and a RoleBinding named "mwi-role-ROLE"
// in each namespace the role names, and a ClusterRole and a
// ClusterRoleBinding for the rules of namespace "*" and of kinds that
// have no namespace. Every binding's subject is the group
// resource.RoleGroup(ROLE), which the issuer puts on the role's
// certificates for the cluster. Every object carries the label
// app.kubernetes.io/managed-by=mwi-issuer, by which [Apply] finds the
// objects of earlier applies that are no longer wanted.
//
// A rule restricts nothing when the certificate is in a group that
// Kubernetes never restricts, such as system:masters; [Warnings] says so.
package kuberbac

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/mwi-project/mwi/issuer/resource"
)

// ManagedBy is the value of the label app.kubernetes.io/managed-by on
// every object this package makes.
const ManagedBy = "mwi-issuer"

// LabelManagedBy is the label that marks the objects this package makes.
const LabelManagedBy = "app.kubernetes.io/managed-by"

// ObjectName returns the name of the RBAC objects made for role.
func ObjectName(role string) string { return "mwi-role-" + role }

// Masters is the group that Kubernetes grants everything, before and
// whatever RBAC says.
const Masters = "system:masters"

// A Source is what rendering needs of a resource set; *resource.Set is one.
type Source interface {
	Roles() []resource.Role
	Bots() []resource.Bot
	KubeCluster(name string) (resource.KubeCluster, bool)
	KubeClusters() []resource.KubeCluster
	KubeAccess(bot string, c resource.KubeCluster) (resource.KubeAccess, bool, error)
}

// An Object is one RBAC object: a Role, a ClusterRole, a RoleBinding or a
// ClusterRoleBinding, with the fields this package sets, in the order
// kubectl prints them.
type Object struct {
	APIVersion string    `yaml:"apiVersion" json:"apiVersion"`
	Kind       string    `yaml:"kind" json:"kind"`
	Metadata   Metadata  `yaml:"metadata" json:"metadata"`
	Rules      []Rule    `yaml:"rules,omitempty" json:"rules,omitempty"`
	RoleRef    *RoleRef  `yaml:"roleRef,omitempty" json:"roleRef,omitempty"`
	Subjects   []Subject `yaml:"subjects,omitempty" json:"subjects,omitempty"`
}

// Metadata is an object's metadata.
type Metadata struct {
	Name      string            `yaml:"name" json:"name"`
	Namespace string            `yaml:"namespace,omitempty" json:"namespace,omitempty"`
	Labels    map[string]string `yaml:"labels,omitempty" json:"labels,omitempty"`
}

// A Rule is a PolicyRule of a Role or ClusterRole.
type Rule struct {
	APIGroups     []string `yaml:"apiGroups" json:"apiGroups"`
	Resources     []string `yaml:"resources" json:"resources"`
	ResourceNames []string `yaml:"resourceNames,omitempty" json:"resourceNames,omitempty"`
	Verbs         []string `yaml:"verbs" json:"verbs"`
}

// RoleRef names the Role or ClusterRole a binding grants.
type RoleRef struct {
	APIGroup string `yaml:"apiGroup" json:"apiGroup"`
	Kind     string `yaml:"kind" json:"kind"`
	Name     string `yaml:"name" json:"name"`
}

// A Subject is who a binding grants its role to.
type Subject struct {
	APIGroup string `yaml:"apiGroup" json:"apiGroup"`
	Kind     string `yaml:"kind" json:"kind"`
	Name     string `yaml:"name" json:"name"`
}

// The RBAC kinds, in the order Render sorts them.
const (
	KindClusterRole        = "ClusterRole"
	KindClusterRoleBinding = "ClusterRoleBinding"
	KindRole               = "Role"
	KindRoleBinding        = "RoleBinding"
)

// Kinds lists the RBAC kinds that Render makes, in its order.
var Kinds = []string{KindClusterRole, KindClusterRoleBinding, KindRole, KindRoleBinding}

const rbacGroup = "rbac.authorization.k8s.io"

// A Plan is the RBAC of one cluster: the objects to apply, sorted by kind,
// namespace and name, and the warnings about rules that restrict nothing.
type Plan struct {
	Cluster  string
	Objects  []Object
	Warnings []string
}

// YAML returns the plan's objects as a YAML stream, one document each, as
// kubectl apply -f reads it. An empty plan gives an empty stream.
func (p Plan) YAML() []byte {
	var buf bytes.Buffer
	for i, o := range p.Objects {
		if i > 0 {
			buf.WriteString("---\n")
		}
		data, err := yaml.Marshal(o)
		if err != nil {
			// Object holds strings, slices and maps of strings only.
			panic("kuberbac: " + err.Error())
		}
		buf.Write(data)
	}
	return buf.Bytes()
}

// Render returns the RBAC objects of the cluster named cluster: those of
// every role of src with kubernetes_resources whose kubernetes_labels
// select the cluster, whether a bot holds it yet or not, and the warnings
// of [ClusterWarnings] and about those roles' rules, sorted. It fails if the cluster is not defined or a rule
// cannot be expressed in RBAC, naming the role and the rule.
func Render(src Source, cluster string) (Plan, error) {
	c, ok := src.KubeCluster(cluster)
	if !ok {
		return Plan{}, fmt.Errorf("no Kubernetes cluster named %q is defined on the issuer", cluster)
	}
	p := Plan{Cluster: c.Name, Objects: []Object{}, Warnings: ClusterWarnings(src, c)}
	var errs []string
	for _, r := range src.Roles() {
		if len(r.KubernetesResources) == 0 || !r.AllowsKubeCluster(c.Labels) {
			continue
		}
		objs, err := roleObjects(r)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		p.Objects = append(p.Objects, objs...)
		p.Warnings = append(p.Warnings, roleWarnings(r)...)
	}
	slices.Sort(p.Warnings)
	if len(errs) > 0 {
		return Plan{}, fmt.Errorf("cluster %s: %s", c.Name, strings.Join(errs, "; "))
	}
	slices.SortFunc(p.Objects, func(a, b Object) int {
		return cmp.Or(
			cmp.Compare(slices.Index(Kinds, a.Kind), slices.Index(Kinds, b.Kind)),
			cmp.Compare(a.Metadata.Namespace, b.Metadata.Namespace),
			cmp.Compare(a.Metadata.Name, b.Metadata.Name))
	})
	return p, nil
}

// roleObjects returns the objects of one role: a ClusterRole and its
// binding for the cluster-wide rules, and a Role and its binding in each
// namespace named.
func roleObjects(r resource.Role) ([]Object, error) {
	var cluster []Rule
	byNS := map[string][]Rule{}
	for i, kr := range r.KubernetesResources {
		rr, err := rules(kr)
		if err != nil {
			return nil, fmt.Errorf("role %s: kubernetes_resources[%d] (kind %q): %w", r.Name, i, kr.Kind, err)
		}
		for _, x := range rr {
			if x.namespace == "" {
				cluster = appendRule(cluster, x.rule)
			} else {
				byNS[x.namespace] = appendRule(byNS[x.namespace], x.rule)
			}
		}
	}
	name := ObjectName(r.Name)
	labels := func() map[string]string { return map[string]string{LabelManagedBy: ManagedBy} }
	subjects := []Subject{{APIGroup: rbacGroup, Kind: "Group", Name: resource.RoleGroup(r.Name)}}
	var out []Object
	if len(cluster) > 0 {
		out = append(out,
			Object{APIVersion: rbacGroup + "/v1", Kind: KindClusterRole, Metadata: Metadata{Name: name, Labels: labels()}, Rules: cluster},
			Object{APIVersion: rbacGroup + "/v1", Kind: KindClusterRoleBinding, Metadata: Metadata{Name: name, Labels: labels()},
				RoleRef: &RoleRef{APIGroup: rbacGroup, Kind: KindClusterRole, Name: name}, Subjects: subjects})
	}
	for ns, rules := range byNS {
		out = append(out,
			Object{APIVersion: rbacGroup + "/v1", Kind: KindRole, Metadata: Metadata{Name: name, Namespace: ns, Labels: labels()}, Rules: rules},
			Object{APIVersion: rbacGroup + "/v1", Kind: KindRoleBinding, Metadata: Metadata{Name: name, Namespace: ns, Labels: labels()},
				RoleRef: &RoleRef{APIGroup: rbacGroup, Kind: KindRole, Name: name}, Subjects: slices.Clone(subjects)})
	}
	return out, nil
}

// appendRule appends r to rules unless an equal rule is there already.
func appendRule(rules []Rule, r Rule) []Rule {
	for _, x := range rules {
		if slices.Equal(x.APIGroups, r.APIGroups) && slices.Equal(x.Resources, r.Resources) &&
			slices.Equal(x.ResourceNames, r.ResourceNames) && slices.Equal(x.Verbs, r.Verbs) {
			return rules
		}
	}
	return append(rules, r)
}

// A placedRule is a rule and the namespace it applies in; "" for the
// whole cluster.
type placedRule struct {
	namespace string
	rule      Rule
}

// kindInfo is where a Teleport kind lives in the Kubernetes API.
type kindInfo struct {
	group      string // "" for the core group
	resource   string
	namespaced bool
}

// teleportKinds maps the kinds of Teleport's kubernetes_resources (see
// its types.KindKube* constants) to the Kubernetes resources they name.
// Teleport's "service" kind covers endpoints too.
var teleportKinds = map[string][]kindInfo{
	"pod":                       {{"", "pods", true}},
	"secret":                    {{"", "secrets", true}},
	"configmap":                 {{"", "configmaps", true}},
	"service":                   {{"", "services", true}, {"", "endpoints", true}},
	"serviceaccount":            {{"", "serviceaccounts", true}},
	"persistentvolumeclaim":     {{"", "persistentvolumeclaims", true}},
	"deployment":                {{"apps", "deployments", true}},
	"replicaset":                {{"apps", "replicasets", true}},
	"statefulset":               {{"apps", "statefulsets", true}},
	"daemonset":                 {{"apps", "daemonsets", true}},
	"job":                       {{"batch", "jobs", true}},
	"cronjob":                   {{"batch", "cronjobs", true}},
	"ingress":                   {{"networking.k8s.io", "ingresses", true}},
	"kube_role":                 {{rbacGroup, "roles", true}},
	"role":                      {{rbacGroup, "roles", true}},
	"rolebinding":               {{rbacGroup, "rolebindings", true}},
	"namespace":                 {{"", "namespaces", false}},
	"kube_node":                 {{"", "nodes", false}},
	"node":                      {{"", "nodes", false}},
	"persistentvolume":          {{"", "persistentvolumes", false}},
	"clusterrole":               {{rbacGroup, "clusterroles", false}},
	"clusterrolebinding":        {{rbacGroup, "clusterrolebindings", false}},
	"certificatesigningrequest": {{"certificates.k8s.io", "certificatesigningrequests", false}},
}

// teleportVerbs are the verbs of Teleport's kubernetes_resources; each is
// the RBAC verb of the same name, except exec and portforward, which are
// the create and get verbs of the pod subresources exec and attach, and
// portforward.
var teleportVerbs = []string{"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection", "exec", "portforward"}

// TeleportKinds returns the kinds of kubernetes_resources that Render can turn
// into RBAC, sorted, without "*".
func TeleportKinds() []string {
	var out []string
	for k := range teleportKinds {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Check reports whether kr can be expressed in RBAC, and why not.
func Check(kr resource.KubernetesResource) error {
	_, err := rules(kr)
	return err
}

// rules returns the RBAC rules of one entry of kubernetes_resources.
func rules(kr resource.KubernetesResource) ([]placedRule, error) {
	var infos []kindInfo
	if kr.Kind == "*" {
		infos = []kindInfo{{"*", "*", true}}
	} else {
		var ok bool
		if infos, ok = teleportKinds[kr.Kind]; !ok {
			return nil, fmt.Errorf("kind %q has no Kubernetes RBAC equivalent that MWI knows; use one of %s, or '*'",
				kr.Kind, strings.Join(TeleportKinds(), ", "))
		}
	}
	if err := exact("name", kr.Name); err != nil {
		return nil, err
	}
	if err := exact("namespace", kr.Namespace); err != nil {
		return nil, err
	}
	var names []string
	if kr.Name != "" && kr.Name != "*" {
		names = []string{kr.Name}
	}
	verbs, sub, err := rbacVerbs(kr)
	if err != nil {
		return nil, err
	}

	// Where the rule applies: a namespace, or the whole cluster.
	namespaced := infos[0].namespaced
	ns := kr.Namespace
	switch {
	case kr.Kind == "namespace":
		// Teleport's namespace kind names a namespace, by name, and gives
		// access to everything in it.
		if ns != "" && ns != "*" {
			return nil, fmt.Errorf("a namespace has no namespace: leave namespace out and name it in name")
		}
		if kr.Name == "" || kr.Name == "*" {
			return []placedRule{
				{"", Rule{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: verbs}},
				{"", Rule{APIGroups: []string{"*"}, Resources: []string{"*"}, Verbs: verbs}},
			}, nil
		}
		return []placedRule{
			{"", Rule{APIGroups: []string{""}, Resources: []string{"namespaces"}, ResourceNames: names, Verbs: verbs}},
			{kr.Name, Rule{APIGroups: []string{"*"}, Resources: []string{"*"}, Verbs: verbs}},
		}, nil
	case !namespaced:
		if ns != "" && ns != "*" {
			return nil, fmt.Errorf("objects of kind %s have no namespace, but namespace is %q: leave it out", kr.Kind, ns)
		}
		ns = ""
	case ns == "":
		return nil, fmt.Errorf("objects of kind %s live in a namespace: set namespace, or '*' for every namespace", kr.Kind)
	case ns == "*":
		ns = ""
	}

	byGroup := map[string][]string{}
	var groups []string
	for _, in := range infos {
		if _, ok := byGroup[in.group]; !ok {
			groups = append(groups, in.group)
		}
		byGroup[in.group] = append(byGroup[in.group], in.resource)
	}
	var out []placedRule
	if len(verbs) > 0 {
		for _, g := range groups {
			out = append(out, placedRule{ns, Rule{APIGroups: []string{g}, Resources: byGroup[g], ResourceNames: names, Verbs: verbs}})
		}
	}
	if len(sub) > 0 {
		if kr.Kind != "pod" && kr.Kind != "*" {
			return nil, fmt.Errorf("verbs exec and portforward apply to pods only")
		}
		out = append(out, placedRule{ns, Rule{APIGroups: []string{""}, Resources: sub, ResourceNames: names, Verbs: []string{"create", "get"}}})
	}
	return out, nil
}

// rbacVerbs returns the RBAC verbs of kr, and the pod subresources its
// exec and portforward verbs stand for.
func rbacVerbs(kr resource.KubernetesResource) (verbs, sub []string, err error) {
	if len(kr.Verbs) == 0 {
		return nil, nil, fmt.Errorf("no verbs: list them, or '*' for every verb")
	}
	for _, v := range kr.Verbs {
		switch {
		case v == "*":
			// RBAC's resource "pods" does not cover its subresources.
			if kr.Kind == "pod" {
				sub = []string{"pods/attach", "pods/exec", "pods/portforward"}
			}
			return []string{"*"}, sub, nil
		case v == "exec":
			sub = append(sub, "pods/attach", "pods/exec")
		case v == "portforward":
			sub = append(sub, "pods/portforward")
		case slices.Contains(teleportVerbs, v):
			verbs = append(verbs, v)
		default:
			return nil, nil, fmt.Errorf("verb %q is not a Kubernetes verb; use %s or '*'", v, strings.Join(teleportVerbs, ", "))
		}
	}
	slices.Sort(verbs)
	slices.Sort(sub)
	return slices.Compact(verbs), slices.Compact(sub), nil
}

// exact refuses the patterns Teleport allows in names and namespaces
// ("web-*", "^web-[0-9]+$"), which RBAC, naming objects exactly, cannot
// express.
func exact(field, v string) error {
	if v == "*" {
		return nil
	}
	if strings.Contains(v, "*") || strings.HasPrefix(v, "^") && strings.HasSuffix(v, "$") {
		return fmt.Errorf("%s %q is a pattern, and Kubernetes RBAC names objects exactly: name one, or '*' for all", field, v)
	}
	return nil
}
