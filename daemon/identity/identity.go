// Package identity generates mwid's keys and holds its credentials in memory.
//
// Keys are made here, in the daemon's memory, for every join and renewal;
// only their public halves are sent to the issuer. Nothing in this package
// writes to disk.
package identity

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/agent"
)

// Keys are a fresh set of private keys for one set of credentials.
type Keys struct {
	identity *ecdsa.PrivateKey
	ssh      ed25519.PrivateKey
	kube     *ecdsa.PrivateKey // made by KubernetesCSR, when outputs ask for Kubernetes
}

// NewKeys generates an identity key (ECDSA P-256, which every TLS stack
// accepts) and an SSH key (Ed25519, fast to sign with).
func NewKeys() (*Keys, error) {
	id, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	_, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return &Keys{identity: id, ssh: sk}, nil
}

// Public returns the public halves to send to the issuer.
func (k *Keys) Public() (api.PublicKeys, error) {
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "mwid"},
	}, k.identity)
	if err != nil {
		return api.PublicKeys{}, err
	}
	sshPub, err := ssh.NewPublicKey(k.ssh.Public())
	if err != nil {
		return api.PublicKeys{}, err
	}
	return api.PublicKeys{
		IdentityCSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr})),
		SSH:         string(ssh.MarshalAuthorizedKey(sshPub)),
	}, nil
}

// Credentials are one set of certificates with their private keys.
type Credentials struct {
	Bot        string
	Instance   string
	Generation uint64
	// Received is when mwid received the credentials. Renewal is timed from
	// it rather than from the certificates' start, which the issuer
	// backdates to tolerate clock skew.
	Received time.Time

	Identity    *x509.Certificate
	TLS         *tls.Certificate // the identity with its key, for mutual TLS
	SSHCert     *ssh.Certificate
	SSHSigner   ssh.Signer
	SSHCertText string // authorized_keys form
	sshKey      ed25519.PrivateKey

	// HostCerts answer the host keys the request carried, in order.
	HostCerts []*ssh.Certificate
	// HostCAs are the issuer's SSH host authorities.
	HostCAs []ssh.PublicKey
	// UserCAs are the issuer's SSH user authorities, for a host's
	// TrustedUserCAKeys.
	UserCAs []ssh.PublicKey

	// Kubernetes are the Kubernetes client certificates, one per cluster,
	// sorted by cluster, all for one key.
	Kubernetes []KubeCredential
}

// Expires returns when the first of the certificates expires: the time by
// which they must be renewed.
func (c *Credentials) Expires() time.Time {
	e := c.Identity.NotAfter
	earlier := func(t time.Time) {
		if t.Before(e) {
			e = t
		}
	}
	if c.SSHCert != nil {
		earlier(time.Unix(int64(c.SSHCert.ValidBefore), 0))
	}
	for _, hc := range c.HostCerts {
		earlier(time.Unix(int64(hc.ValidBefore), 0))
	}
	for _, k := range c.Kubernetes {
		earlier(k.Cert.NotAfter)
	}
	return e
}

// IdentityValidAt reports whether the bot identity, with which mwid renews,
// is valid at t. It may outlive the other certificates.
func (c *Credentials) IdentityValidAt(t time.Time) bool {
	return !t.Before(c.Identity.NotBefore) && t.Before(c.Identity.NotAfter)
}

// ValidAt reports whether every certificate is valid at t.
func (c *Credentials) ValidAt(t time.Time) bool {
	if c.SSHCert != nil && t.Before(time.Unix(int64(c.SSHCert.ValidAfter), 0)) {
		return false
	}
	return !t.Before(c.Identity.NotBefore) && t.Before(c.Expires())
}

// Principals returns the SSH logins of the user certificate, if any.
func (c *Credentials) Principals() []string {
	if c.SSHCert == nil {
		return nil
	}
	return c.SSHCert.ValidPrincipals
}

// Assemble checks the issuer's answer against the keys it was made for
// (hostKeys are the host public keys the request carried) and combines them
// into Credentials.
func Assemble(k *Keys, resp api.Credentials, received time.Time, hostKeys ...ssh.PublicKey) (*Credentials, error) {
	block, _ := pem.Decode([]byte(resp.IdentityCertificate))
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("issuer answer: identity_certificate is not a PEM certificate")
	}
	idCert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("issuer answer: identity certificate: %w", err)
	}
	if !publicKeyEqual(idCert.PublicKey, k.identity.Public()) {
		return nil, errors.New("issuer answer: identity certificate is not for our key")
	}
	// A bot whose roles allow no logins has no user certificate.
	var cert *ssh.Certificate
	var signer ssh.Signer
	if resp.SSHCertificate != "" {
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(resp.SSHCertificate))
		if err != nil {
			return nil, fmt.Errorf("issuer answer: SSH certificate: %w", err)
		}
		var ok bool
		cert, ok = pub.(*ssh.Certificate)
		if !ok || cert.CertType != ssh.UserCert {
			return nil, errors.New("issuer answer: ssh_certificate is not an SSH user certificate")
		}
		if signer, err = ssh.NewSignerFromKey(k.ssh); err != nil {
			return nil, err
		}
		if !bytes.Equal(cert.Key.Marshal(), signer.PublicKey().Marshal()) {
			return nil, errors.New("issuer answer: SSH certificate is not for our key")
		}
	}
	if len(resp.HostCertificates) != len(hostKeys) {
		return nil, fmt.Errorf("issuer answer: %d host certificates for %d host keys", len(resp.HostCertificates), len(hostKeys))
	}
	var hostCerts []*ssh.Certificate
	for i, text := range resp.HostCertificates {
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(text))
		if err != nil {
			return nil, fmt.Errorf("issuer answer: host certificate %d: %w", i, err)
		}
		hc, ok := pub.(*ssh.Certificate)
		if !ok || hc.CertType != ssh.HostCert {
			return nil, fmt.Errorf("issuer answer: host certificate %d is not an SSH host certificate", i)
		}
		if !bytes.Equal(hc.Key.Marshal(), hostKeys[i].Marshal()) {
			return nil, fmt.Errorf("issuer answer: host certificate %d is not for the host key sent", i)
		}
		hostCerts = append(hostCerts, hc)
	}
	kube, err := assembleKubernetes(k, resp.Kubernetes)
	if err != nil {
		return nil, err
	}
	var hostCAs []ssh.PublicKey
	for _, text := range resp.SSHHostCAs {
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(text))
		if err != nil {
			return nil, fmt.Errorf("issuer answer: SSH host CA: %w", err)
		}
		hostCAs = append(hostCAs, pub)
	}
	var userCAs []ssh.PublicKey
	for _, text := range resp.SSHUserCAs {
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(text))
		if err != nil {
			return nil, fmt.Errorf("issuer answer: SSH user CA: %w", err)
		}
		userCAs = append(userCAs, pub)
	}
	return &Credentials{
		HostCerts:   hostCerts,
		HostCAs:     hostCAs,
		UserCAs:     userCAs,
		Bot:         resp.Bot,
		Instance:    resp.Instance,
		Generation:  resp.Generation,
		Received:    received,
		Identity:    idCert,
		TLS:         &tls.Certificate{Certificate: [][]byte{idCert.Raw}, PrivateKey: k.identity, Leaf: idCert},
		SSHCert:     cert,
		SSHSigner:   signer,
		SSHCertText: resp.SSHCertificate,
		sshKey:      sshKeyIf(cert != nil, k.ssh),
		Kubernetes:  kube,
	}, nil
}

// sshKeyIf returns key if the credentials have a certificate for it.
func sshKeyIf(ok bool, key ed25519.PrivateKey) ed25519.PrivateKey {
	if !ok {
		return nil
	}
	return key
}

// SSHKeyPEM returns the private key of the SSH user certificate in
// OpenSSH's format, for an identity output. It is the only way the key
// leaves this package; its one caller writes it to that output's file,
// never to a log.
func (c *Credentials) SSHKeyPEM() ([]byte, error) {
	if c.sshKey == nil {
		return nil, fmt.Errorf("bot %s has no SSH user certificate: its roles allow no logins", c.Bot)
	}
	block, err := ssh.MarshalPrivateKey(c.sshKey, "")
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(block), nil
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	ka, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ka.Equal(b)
}

// maxHeld is how many sets of credentials a Holder keeps: the current one
// and those it replaced recently. A client may list a certificate and sign
// with it after the next renewal, or the one after that when a requested
// renewal follows a scheduled one closely; a few sets cover that, and
// the agent never signs with an expired one.
const maxHeld = 4

// Holder holds the current credentials and the ones they replaced. Readers
// never block: each read is one atomic load.
type Holder struct {
	p atomic.Pointer[[]*Credentials] // newest first
}

// Set makes c current. The credentials it replaces stay usable for signing
// until they expire (up to maxHeld sets in all), because a client may have
// listed them just before.
func (h *Holder) Set(c *Credentials) {
	held := []*Credentials{c}
	if old := h.p.Load(); old != nil {
		held = append(held, (*old)[:min(len(*old), maxHeld-1)]...)
	}
	h.p.Store(&held)
}

// Current returns the current credentials, or nil before the first join.
func (h *Holder) Current() *Credentials {
	if p := h.p.Load(); p != nil {
		return (*p)[0]
	}
	return nil
}

// Identities returns the SSH identities, newest first, for the agent.
func (h *Holder) Identities() []agent.Identity {
	p := h.p.Load()
	if p == nil {
		return nil
	}
	var ids []agent.Identity
	for _, c := range *p {
		if c.SSHCert != nil {
			ids = append(ids, agent.Identity{Cert: c.SSHCert, Signer: c.SSHSigner})
		}
	}
	return ids
}

// HostCAs returns the issuer's SSH host authorities, as the current
// credentials name them, for the agent's destination checks.
func (h *Holder) HostCAs() []ssh.PublicKey {
	if c := h.Current(); c != nil {
		return c.HostCAs
	}
	return nil
}
