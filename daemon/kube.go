package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/identity"
	"github.com/mwi-project/mwi/daemon/kubeconfig"
	"github.com/mwi-project/mwi/daemon/localapi"
	"github.com/mwi-project/mwi/daemon/output"
	"github.com/mwi-project/mwi/internal/fault"
)

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
		return nil, fault.Unavailable(api.CodeNotJoined,
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
	return fault.NotFound(api.CodeNotFound,
		"mwid holds no credentials for Kubernetes cluster %q: its kubernetes outputs do not select it, or the issuer's roles for bot %s do not allow it (clusters available: %s)",
		cluster, c.Bot, strings.Join(names, ", "))
}

func noKubernetes() error {
	return fault.NotFound(api.CodeNotFound,
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
		clusters = append(clusters, output.KubeconfigCluster(kc, r.Embed))
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
		return "", fault.Invalid(api.CodeBadRequest, "%v", err)
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

// defaultMwictl is the mwictl installed beside mwid, or "mwictl" from PATH.
func defaultMwictl() string {
	exe, err := os.Executable()
	if err == nil {
		p := filepath.Join(filepath.Dir(exe), "mwictl")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "mwictl"
}
