package daemon

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/daemon/identity"
	"github.com/mwi-project/mwi/daemon/kubeconfig"
	"github.com/mwi-project/mwi/daemon/localapi"
	"github.com/mwi-project/mwi/internal/httpjson"
	"github.com/mwi-project/mwi/internal/kubeselect"
	"github.com/mwi-project/mwi/internal/safefs"
)

// kubernetesRequest returns the Kubernetes part of a join or renewal: the
// union of the selectors of the kubernetes outputs, with a CSR for the
// Kubernetes key made in keys. It is nil when no output asks for
// Kubernetes.
func kubernetesRequest(outputs []config.Output, keys *identity.Keys) (*api.KubernetesRequest, error) {
	var req *api.KubernetesRequest
	for _, o := range outputs {
		if !o.Kubernetes() {
			continue
		}
		if req == nil {
			req = &api.KubernetesRequest{}
		}
		for _, c := range o.Clusters {
			if !slices.Contains(req.Clusters, c) {
				req.Clusters = append(req.Clusters, c)
			}
		}
		req.Labels = append(req.Labels, o.Labels...)
	}
	if req == nil {
		return nil, nil
	}
	csr, err := keys.KubernetesCSR()
	if err != nil {
		return nil, err
	}
	req.CSR = csr
	return req, nil
}

// selector is what a kubernetes output selects.
func selector(o config.Output) kubeselect.Selector {
	return kubeselect.Selector{Names: o.Clusters, Labels: o.Labels}
}

// writeKubeOutputs writes the kubeconfig of each kubernetes output that has
// a directory, with the credentials of the clusters it selects inline, and
// returns the first failure.
func (s *Server) writeKubeOutputs(outputs []config.Output, c *identity.Credentials) error {
	var first error
	for _, o := range outputs {
		path := o.KubeconfigPath()
		if path == "" {
			continue
		}
		var clusters []kubeconfig.Cluster
		for _, kc := range c.Kubernetes {
			if selector(o).Match(kc.Cluster, kc.Labels) {
				clusters = append(clusters, kubeCluster(&kc))
			}
		}
		var err error
		if len(clusters) == 0 {
			err = errors.New("the issuer allowed none of the clusters it selects")
		} else {
			var data []byte
			data, err = kubeconfig.Render(clusters, kubeconfig.Options{Bot: c.Bot, Embed: true})
			if err == nil {
				err = writeKubeconfig(o.Directory, data)
			}
		}
		if err != nil {
			err = fmt.Errorf("kubernetes output %s: %w", path, err)
		}
		s.recordOutput(path, err)
		if err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		names := make([]string, len(clusters))
		for i, cl := range clusters {
			names[i] = cl.Name
		}
		s.log.Info("kubeconfig written", "path", path, "clusters", names)
	}
	return first
}

// writeKubeconfig writes a kubeconfig into dir, which safefs opens (or
// makes, 0700), atomically and with mode 0600: it holds keys.
func writeKubeconfig(dir string, data []byte) error {
	d, err := safefs.MkdirAll(dir, 0o700)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.WriteFile(config.KubeconfigFile, data, 0o600)
}

func kubeCluster(kc *identity.KubeCredential) kubeconfig.Cluster {
	return kubeconfig.Cluster{Name: kc.Cluster, Server: kc.Server, CAData: kc.CAData, CertPEM: kc.CertPEM, KeyPEM: kc.KeyPEM()}
}

// outputPath is where an output writes, as Status shows it: the host
// certificate of an ssh_host output, the kubeconfig of a kubernetes output
// with a directory, "" for a kubernetes output kept in memory, and the
// directory of an identity output.
func outputPath(o config.Output) string {
	switch {
	case o.Kubernetes():
		return o.KubeconfigPath()
	case o.Identity():
		return o.Directory
	}
	return o.Certificate
}

// kubeOutputsEqual reports whether two outputs select the same Kubernetes
// clusters into the same place, for reload's question of whether new
// certificates are needed.
func kubeOutputsEqual(a, b config.Output) bool {
	if a.Type != b.Type || a.Directory != b.Directory || len(a.Clusters) != len(b.Clusters) || len(a.Labels) != len(b.Labels) {
		return false
	}
	for i := range a.Clusters {
		if a.Clusters[i] != b.Clusters[i] {
			return false
		}
	}
	for i := range a.Labels {
		if kubeselect.String(a.Labels[i]) != kubeselect.String(b.Labels[i]) || len(a.Labels[i]) != len(b.Labels[i]) {
			return false
		}
	}
	return true
}

// kubeCredentials describes the Kubernetes certificates for Status.
func kubeCredentials(c *identity.Credentials) []api.Credential {
	var out []api.Credential
	for _, kc := range c.Kubernetes {
		out = append(out, api.Credential{
			Kind:       "kubernetes",
			Cluster:    kc.Cluster,
			Principals: append([]string{kc.User()}, kc.Groups()...),
			ValidAfter: kc.Cert.NotBefore.UTC(),
			Expires:    kc.Cert.NotAfter.UTC(),
		})
	}
	return out
}

// kubeCreds returns the current credentials if they hold any Kubernetes
// certificate that is valid now.
func (s *Server) kubeCreds() (*identity.Credentials, error) {
	c := s.creds.Current()
	if c == nil {
		return nil, localapi.NotJoined()
	}
	if now := s.now(); !c.ValidAt(now) {
		return nil, httpjson.Errorf(http.StatusServiceUnavailable, api.CodeNotJoined,
			"mwid's credentials expired at %s and no renewal has succeeded since; mwictl status says why", c.Expires().Format(time.RFC3339))
	}
	return c, nil
}

// kubeNotFound says that mwid holds no certificate for cluster.
func kubeNotFound(c *identity.Credentials, cluster string) error {
	if len(c.Kubernetes) == 0 {
		return noKubernetes()
	}
	names := make([]string, len(c.Kubernetes))
	for i, kc := range c.Kubernetes {
		names[i] = kc.Cluster
	}
	return httpjson.Errorf(http.StatusNotFound, api.CodeNotFound,
		"mwid holds no credentials for Kubernetes cluster %q: its kubernetes outputs do not select it, or the issuer's roles for bot %s do not allow it (clusters available: %s)",
		cluster, c.Bot, strings.Join(names, ", "))
}

func noKubernetes() error {
	return httpjson.Errorf(http.StatusNotFound, api.CodeNotFound,
		"mwid holds no Kubernetes credentials: configure an output of type kubernetes, with clusters the issuer's roles allow")
}

// KubeClusters lists the Kubernetes clusters mwid holds certificates for.
func (s *Server) KubeClusters() ([]api.KubernetesCluster, error) {
	c, err := s.kubeCreds()
	if err != nil {
		return nil, err
	}
	out := make([]api.KubernetesCluster, 0, len(c.Kubernetes))
	for _, kc := range c.Kubernetes {
		out = append(out, api.KubernetesCluster{
			Name:    kc.Cluster,
			Server:  kc.Server,
			Labels:  kc.Labels,
			User:    kc.User(),
			Groups:  kc.Groups(),
			Expires: kc.Cert.NotAfter.UTC(),
		})
	}
	return out, nil
}

// Kubeconfig renders a kubeconfig for one cluster, or for all mwid holds.
func (s *Server) Kubeconfig(r localapi.KubeconfigRequest) (string, error) {
	c, err := s.kubeCreds()
	if err != nil {
		return "", err
	}
	var clusters []kubeconfig.Cluster
	for i := range c.Kubernetes {
		kc := &c.Kubernetes[i]
		if r.Cluster != "" && kc.Cluster != r.Cluster {
			continue
		}
		cl := kubeconfig.Cluster{Name: kc.Cluster, Server: kc.Server, CAData: kc.CAData}
		if r.Embed {
			cl = kubeCluster(kc)
		}
		clusters = append(clusters, cl)
	}
	switch {
	case len(clusters) == 0 && r.Cluster != "":
		return "", kubeNotFound(c, r.Cluster)
	case len(clusters) == 0:
		return "", noKubernetes()
	}
	mwictl := r.Mwictl
	if mwictl == "" {
		mwictl = defaultMwictl()
	}
	data, err := kubeconfig.Render(clusters, kubeconfig.Options{
		Bot:             c.Bot,
		Mwictl:          mwictl,
		Socket:          s.config().APISocket.Path,
		ContextTemplate: r.ContextTemplate,
		Embed:           r.Embed,
	})
	if err != nil {
		return "", httpjson.Errorf(http.StatusBadRequest, api.CodeBadRequest, "%v", err)
	}
	if r.Embed {
		s.log.Info("kubeconfig with private keys inline handed out", "clusters", len(clusters))
	}
	return string(data), nil
}

// KubeCredential returns the ExecCredential for one cluster: its client
// certificate and private key, for kubectl's exec plugin.
func (s *Server) KubeCredential(cluster string) (api.ExecCredential, error) {
	c, err := s.kubeCreds()
	if err != nil {
		return api.ExecCredential{}, err
	}
	kc, ok := c.Kube(cluster)
	if !ok {
		return api.ExecCredential{}, kubeNotFound(c, cluster)
	}
	return api.ExecCredential{
		APIVersion: api.ExecCredentialAPIVersion,
		Kind:       "ExecCredential",
		Status: api.ExecCredentialStatus{
			ExpirationTimestamp:   kc.Cert.NotAfter.UTC(),
			ClientCertificateData: string(kc.CertPEM),
			ClientKeyData:         string(kc.KeyPEM()),
		},
	}, nil
}
