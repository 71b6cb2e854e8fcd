package authority

import (
	"context"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/fault"
	"github.com/mwi-project/mwi/issuer/kuberbac"
)

// KubeRBAC returns the RBAC objects of the Kubernetes cluster named
// cluster, made from the running resources, for mwi-issuer kube rbac.
func (a *Authority) KubeRBAC(_ context.Context, cluster string) (api.KubeRBAC, error) {
	set := a.Resources()
	if _, ok := set.KubeCluster(cluster); !ok {
		return api.KubeRBAC{}, fault.NotFound(api.CodeNotFound, "no Kubernetes cluster named %q is defined on the issuer", cluster)
	}
	p, err := kuberbac.Render(set, cluster)
	if err != nil {
		return api.KubeRBAC{}, fault.Invalid(api.CodeBadRequest, "%v", err)
	}
	w := p.Warnings
	if w == nil {
		w = []string{}
	}
	return api.KubeRBAC{Cluster: p.Cluster, Manifests: string(p.YAML()), Warnings: w}, nil
}
