package client

import (
	"context"
	"log/slog"
	"net/http"
	"testing"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/localapi"
	"github.com/mwi-project/mwi/internal/fault"
)

var (
	cannedClusters = []api.KubernetesCluster{{Name: "prod", Server: "https://10.0.0.1:6443", Labels: map[string]string{"env": "prod"},
		User: "bot:web", Groups: []string{"system:masters"}, Expires: t1}}
	cannedExecCredential = api.ExecCredential{APIVersion: api.ExecCredentialAPIVersion, Kind: "ExecCredential",
		Status: api.ExecCredentialStatus{ExpirationTimestamp: t1, ClientCertificateData: "CERT", ClientKeyData: "KEY"}}

	// lastKubeconfig is what the fake backend's Kubeconfig was last asked.
	lastKubeconfig localapi.KubeconfigRequest
)

func (b *fakeBackend) KubeClusters() ([]api.KubernetesCluster, error) { return cannedClusters, nil }

func (b *fakeBackend) Kubeconfig(r localapi.KubeconfigRequest) (string, error) {
	lastKubeconfig = r
	return "apiVersion: v1\nkind: Config\n", nil
}

func (b *fakeBackend) KubeCredential(cluster string) (api.ExecCredential, error) {
	if cluster != "prod" {
		return api.ExecCredential{}, fault.NotFound(api.CodeNotFound, "no credentials for Kubernetes cluster %q", cluster)
	}
	return cannedExecCredential, nil
}

func TestKubernetesRoutes(t *testing.T) {
	c := &Client{Socket: serve(t, localapi.Routes(&fakeBackend{}, http.NotFoundHandler(), slog.New(slog.DiscardHandler)))}
	ctx := context.Background()
	if cl, err := c.KubeClusters(ctx); err != nil || !equalJSONish(cl, cannedClusters) {
		t.Errorf("KubeClusters: %+v, %v", cl, err)
	}
	if cred, err := c.KubeCredential(ctx, "prod"); err != nil || !equalJSONish(cred, cannedExecCredential) {
		t.Errorf("KubeCredential: %+v, %v", cred, err)
	}
	if _, err := c.KubeCredential(ctx, "nope"); !IsNotFound(err) || err.Error() != `no credentials for Kubernetes cluster "nope"` {
		t.Errorf("KubeCredential(nope): %v, want not_found", err)
	}
	// A crafted name cannot add query parameters of its own.
	if _, err := c.KubeCredential(ctx, "prod&cluster=x"); !IsNotFound(err) {
		t.Errorf("KubeCredential(prod&cluster=x): %v, want not_found", err)
	}
	want := KubeconfigOptions{Cluster: "prod", Mwictl: "/opt/mwi ctl", ContextTemplate: "{{.Bot}}@{{.Cluster}}", Embed: true}
	if s, err := c.Kubeconfig(ctx, want); err != nil || s != "apiVersion: v1\nkind: Config\n" {
		t.Errorf("Kubeconfig: %q, %v", s, err)
	}
	if lastKubeconfig != (localapi.KubeconfigRequest{Cluster: want.Cluster, Mwictl: want.Mwictl, ContextTemplate: want.ContextTemplate, Embed: true}) {
		t.Errorf("mwid saw %+v", lastKubeconfig)
	}
	if _, err := c.Kubeconfig(ctx, KubeconfigOptions{}); err != nil || lastKubeconfig != (localapi.KubeconfigRequest{}) {
		t.Errorf("Kubeconfig(): mwid saw %+v, err %v", lastKubeconfig, err)
	}
}
