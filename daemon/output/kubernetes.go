package output

import (
	"context"
	"errors"
	"path/filepath"

	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/daemon/identity"
	"github.com/mwi-project/mwi/daemon/kubeconfig"
	"github.com/mwi-project/mwi/internal/kubeselect"
)

// Kubernetes is an output of type kubernetes: client certificates for the
// clusters it selects. With a Directory it writes a kubeconfig there with
// the credentials inline; without one it writes nothing, and mwid serves
// them through its API.
type Kubernetes struct {
	// Clusters and Labels select clusters: by name, or by labels (any
	// selector picks a cluster; a selector picks one that has all its
	// labels).
	Clusters  []string
	Labels    []map[string]string
	Directory string
}

func newKubernetes(o config.Output) Output {
	return Kubernetes{Clusters: nilIfEmpty(o.Clusters), Labels: nilIfEmpty(o.Labels), Directory: o.Directory}
}

// Type returns "kubernetes".
func (Kubernetes) Type() string { return "kubernetes" }

// Path returns the kubeconfig's path, or "" when the credentials stay in
// memory.
func (o Kubernetes) Path() string {
	if o.Directory == "" {
		return ""
	}
	return filepath.Join(o.Directory, config.KubeconfigFile)
}

// Check checks the directory.
func (o Kubernetes) Check() error {
	if o.Directory == "" {
		return nil
	}
	return verify(o, o.destination())
}

// destination is the output's directory, which is made if need be.
func (o Kubernetes) destination() Directory { return Directory{Path: o.Directory, Create: true} }

// Request asks for certificates for the clusters the output selects.
func (o Kubernetes) Request(r *Request) (Write, error) {
	r.addKubernetes(o.Clusters, o.Labels)
	if o.Directory == "" {
		return nil, nil
	}
	return o.write, nil
}

// write writes the kubeconfig, with the credentials of the clusters the
// output selects inline, with mode 0600: it holds keys.
func (o Kubernetes) write(_ context.Context, c *identity.Credentials, env Env) error {
	sel := kubeselect.Selector{Names: o.Clusters, Labels: o.Labels}
	var clusters []kubeconfig.Cluster
	var names []string
	for i := range c.Kubernetes {
		kc := &c.Kubernetes[i]
		if sel.Match(kc.Cluster, kc.Labels) {
			clusters = append(clusters, KubeconfigCluster(kc, true))
			names = append(names, kc.Cluster)
		}
	}
	if len(clusters) == 0 {
		return outputError(o, errors.New("the issuer allowed none of the clusters it selects"))
	}
	data, err := kubeconfig.Render(clusters, kubeconfig.Options{Bot: c.Bot, Embed: true})
	if err == nil {
		err = o.destination().Write(File{config.KubeconfigFile, data, 0o600})
	}
	if err != nil {
		return outputError(o, err)
	}
	env.Log.Info("kubeconfig written", "path", o.Path(), "clusters", names)
	return nil
}

// KubeconfigCluster returns the cluster of kc in a kubeconfig, with its
// certificate and key when embed is set.
func KubeconfigCluster(kc *identity.KubeCredential, embed bool) kubeconfig.Cluster {
	c := kubeconfig.Cluster{Name: kc.Cluster, Server: kc.Server, CAData: kc.CAData}
	if embed {
		c.CertPEM, c.KeyPEM = kc.CertPEM, kc.KeyPEM()
	}
	return c
}
