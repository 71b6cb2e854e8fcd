package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/mwi-project/mwi/api"
)

// IsNotFound reports whether mwid has no such thing, such as a credential
// for a Kubernetes cluster it holds none for.
func IsNotFound(err error) bool { return hasCode(err, api.CodeNotFound) }

// KubeClusters lists the Kubernetes clusters mwid holds certificates for.
func (c *Client) KubeClusters(ctx context.Context) ([]api.KubernetesCluster, error) {
	var out []api.KubernetesCluster
	err := c.do(ctx, request{method: http.MethodGet, path: "/v1/kubernetes/clusters", out: &out})
	return out, err
}

// KubeconfigOptions say what kubeconfig to ask mwid for.
type KubeconfigOptions struct {
	// Cluster is the one cluster wanted; empty means all mwid holds.
	Cluster string
	// Mwictl is the absolute path of the mwictl that the exec plugin
	// runs; empty leaves the choice to mwid.
	Mwictl string
	// ContextTemplate names the contexts ({{.Cluster}}, {{.Bot}}); empty
	// names each after its cluster.
	ContextTemplate string
	// Embed asks for the certificates and private keys inline instead of
	// the exec plugin.
	Embed bool
}

// Kubeconfig returns a kubeconfig (YAML) for the Kubernetes clusters mwid
// holds certificates for. A cluster it holds none for is an error for
// which IsNotFound is true.
func (c *Client) Kubeconfig(ctx context.Context, o KubeconfigOptions) (string, error) {
	q := url.Values{}
	for k, v := range map[string]string{"cluster": o.Cluster, "mwictl": o.Mwictl, "context_template": o.ContextTemplate} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if o.Embed {
		q.Set("embed", strconv.FormatBool(true))
	}
	var s string
	err := c.do(ctx, request{method: http.MethodGet, path: "/v1/kubernetes/kubeconfig", query: q, out: &s})
	return s, err
}

// KubeCredential returns the ExecCredential for one Kubernetes cluster: the
// client certificate and its private key.
func (c *Client) KubeCredential(ctx context.Context, cluster string) (api.ExecCredential, error) {
	var out api.ExecCredential
	err := c.do(ctx, request{
		method: http.MethodGet, path: "/v1/kubernetes/credential",
		query: url.Values{"cluster": {cluster}}, out: &out,
	})
	return out, err
}
