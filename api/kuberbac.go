package api

// KubeRBAC is the body of GET /admin/v1/kube/rbac?cluster=NAME: the RBAC
// objects that enforce the kubernetes_resources of the roles selecting the
// cluster, and what to know about them.
type KubeRBAC struct {
	Cluster string `json:"cluster"`
	// Manifests is a YAML stream of Roles, ClusterRoles and their
	// bindings, one document each, sorted; empty if no role selecting the
	// cluster has kubernetes_resources.
	Manifests string `json:"manifests"`
	// Warnings name the rules that restrict nothing on the cluster, and
	// why.
	Warnings []string `json:"warnings"`
}
