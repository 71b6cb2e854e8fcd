package localapi

import (
	"net/http"
	"strconv"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/fault"
)

// KubeconfigRequest is what GET /v1/kubernetes/kubeconfig asks for.
type KubeconfigRequest struct {
	// Cluster names the one cluster wanted; empty means every cluster
	// mwid holds a certificate for.
	Cluster string
	// Mwictl is the absolute path of the mwictl the exec plugin runs;
	// empty leaves the choice to mwid.
	Mwictl string
	// ContextTemplate names the contexts (text/template with .Cluster and
	// .Bot); empty names each after its cluster.
	ContextTemplate string
	// Embed puts the certificates and keys inline instead of the plugin.
	Embed bool
}

// kubeconfigRequest reads a KubeconfigRequest from r's query.
func kubeconfigRequest(r *http.Request) (KubeconfigRequest, error) {
	q := r.URL.Query()
	req := KubeconfigRequest{
		Cluster:         q.Get("cluster"),
		Mwictl:          q.Get("mwictl"),
		ContextTemplate: q.Get("context_template"),
	}
	if v := q.Get("embed"); v != "" {
		embed, err := strconv.ParseBool(v)
		if err != nil {
			return req, fault.Invalid(api.CodeBadRequest, "embed=%q: want true or false", v)
		}
		req.Embed = embed
	}
	return req, nil
}

// clusterParam returns the required cluster query parameter.
func clusterParam(r *http.Request) (string, error) {
	c := r.URL.Query().Get("cluster")
	if c == "" {
		return "", fault.Invalid(api.CodeBadRequest, "name the Kubernetes cluster: ?cluster=NAME")
	}
	return c, nil
}

func writeYAML(w http.ResponseWriter, s string) {
	w.Header().Set("Content-Type", "application/yaml")
	w.WriteHeader(http.StatusOK)
	w.Write([]byte(s))
}
