package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/mwi-project/mwi/api"
)

// KubernetesCSR makes the key for Kubernetes client certificates, the first
// time it is called, and returns a PEM certificate request for it. One key
// serves every cluster. It is ECDSA P-256, which every Kubernetes client and
// API server accepts.
func (k *Keys) KubernetesCSR() (string, error) {
	if k.kube == nil {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return "", err
		}
		k.kube = key
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "mwid kubernetes"},
	}, k.kube)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), nil
}

// KubeCredential is a client certificate for one Kubernetes cluster, with
// its private key, and what a kubeconfig needs to reach the cluster.
type KubeCredential struct {
	Cluster string
	Labels  map[string]string
	Server  string
	CAData  []byte // PEM of the API server's CA
	Cert    *x509.Certificate
	CertPEM []byte
	keyPEM  []byte
}

// User returns the Kubernetes user the certificate names.
func (c *KubeCredential) User() string { return c.Cert.Subject.CommonName }

// Groups returns the Kubernetes groups the certificate names, sorted.
func (c *KubeCredential) Groups() []string {
	return slices.Sorted(slices.Values(c.Cert.Subject.Organization))
}

// KeyPEM returns the private key in PEM (SEC 1). It is the only way the key
// leaves this package; every caller puts it on the wire or, for a
// configured output, on disk, never in a log.
func (c *KubeCredential) KeyPEM() []byte { return slices.Clone(c.keyPEM) }

// Kube returns the credential for the named cluster.
func (c *Credentials) Kube(cluster string) (*KubeCredential, bool) {
	for i := range c.Kubernetes {
		if c.Kubernetes[i].Cluster == cluster {
			return &c.Kubernetes[i], true
		}
	}
	return nil, false
}

// assembleKubernetes checks the Kubernetes certificates of the issuer's
// answer against the Kubernetes key and returns them sorted by cluster.
func assembleKubernetes(k *Keys, resp []api.KubernetesCredential) ([]KubeCredential, error) {
	if len(resp) == 0 {
		return nil, nil
	}
	if k.kube == nil {
		return nil, errors.New("issuer answer: Kubernetes certificates that were not asked for")
	}
	der, err := x509.MarshalECPrivateKey(k.kube)
	if err != nil {
		return nil, err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	out := make([]KubeCredential, 0, len(resp))
	for _, kc := range resp {
		if kc.Cluster == "" || strings.ContainsAny(kc.Cluster, "/\x00\n") {
			return nil, fmt.Errorf("issuer answer: Kubernetes cluster name %q", kc.Cluster)
		}
		if slices.ContainsFunc(out, func(o KubeCredential) bool { return o.Cluster == kc.Cluster }) {
			return nil, fmt.Errorf("issuer answer: two certificates for Kubernetes cluster %s", kc.Cluster)
		}
		if u, err := url.Parse(kc.Server); err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, fmt.Errorf("issuer answer: Kubernetes cluster %s: server %q is not an https URL", kc.Cluster, kc.Server)
		}
		if len(kc.CertificateAuthorityData) > 0 {
			if block, _ := pem.Decode(kc.CertificateAuthorityData); block == nil || block.Type != "CERTIFICATE" {
				return nil, fmt.Errorf("issuer answer: Kubernetes cluster %s: certificate_authority_data is not PEM certificates", kc.Cluster)
			}
		}
		block, _ := pem.Decode([]byte(kc.ClientCertificate))
		if block == nil || block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("issuer answer: Kubernetes cluster %s: client_certificate is not a PEM certificate", kc.Cluster)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("issuer answer: Kubernetes cluster %s: %w", kc.Cluster, err)
		}
		if !publicKeyEqual(cert.PublicKey, k.kube.Public()) {
			return nil, fmt.Errorf("issuer answer: Kubernetes certificate for %s is not for our key", kc.Cluster)
		}
		out = append(out, KubeCredential{
			Cluster: kc.Cluster,
			Labels:  kc.Labels,
			Server:  kc.Server,
			CAData:  kc.CertificateAuthorityData,
			Cert:    cert,
			CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}),
			keyPEM:  keyPEM,
		})
	}
	slices.SortFunc(out, func(a, b KubeCredential) int { return strings.Compare(a.Cluster, b.Cluster) })
	return out, nil
}
