package output

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"unicode"

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

// KubeconfigFile is the name of the kubeconfig that a kubernetes output
// with a directory writes.
const KubeconfigFile = "kubeconfig.yaml"

// clusterNameRE matches a cluster name as the issuer's resources allow it.
var clusterNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// kubernetesBlock is the configuration block of a kubernetes output.
type kubernetesBlock struct {
	Clusters  []string            `yaml:"clusters"`
	Labels    []map[string]string `yaml:"labels"`
	Directory string              `yaml:"directory"`
}

// parseKubernetes parses and validates the block of a kubernetes output.
func parseKubernetes(b *Block) Output {
	var f kubernetesBlock
	b.decode("kubernetes", &f, nil)
	o := Kubernetes{Clusters: nilIfEmpty(f.Clusters), Labels: nilIfEmpty(f.Labels), Directory: b.Abs(f.Directory)}
	if len(f.Clusters) == 0 && len(f.Labels) == 0 {
		b.Errorf(b.Path, `a kubernetes output needs clusters (names) or labels (selectors such as {env: prod}, or {"*": "*"} for every cluster the roles allow)`)
	}
	for _, c := range f.Clusters {
		if !clusterNameRE.MatchString(c) {
			b.Errorf(b.Path+".clusters", "%q is not a cluster name (lower case letters, digits, '.', '_' and '-')", c)
		}
	}
	for i, sel := range f.Labels {
		p := fmt.Sprintf("%s.labels.%d", b.Path, i)
		if len(sel) == 0 {
			b.Errorf(p, `an empty selector picks nothing; use {"*": "*"} for every cluster the roles allow`)
		}
		for k, val := range sel {
			if k == "" || strings.ContainsFunc(k+val, func(r rune) bool { return unicode.IsControl(r) || unicode.IsSpace(r) }) {
				b.Errorf(p, "%q: %q is not a label selector entry", k, val)
			}
			if k == "*" && val != "*" {
				b.Errorf(p, `the key "*" takes only the value "*" (every cluster)`)
			}
		}
	}
	for _, e := range b.Earlier {
		if e, ok := e.(Kubernetes); ok && o.Directory != "" && e.Path() == o.Path() {
			b.Errorf(b.Path+".directory", "another kubernetes output writes %s already", o.Path())
			break
		}
	}
	return o
}

// Type returns "kubernetes".
func (Kubernetes) Type() string { return "kubernetes" }

// Path returns the kubeconfig's path, or "" when the credentials stay in
// memory.
func (o Kubernetes) Path() string {
	if o.Directory == "" {
		return ""
	}
	return filepath.Join(o.Directory, KubeconfigFile)
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
		err = o.destination().Write(File{KubeconfigFile, data, 0o600})
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
