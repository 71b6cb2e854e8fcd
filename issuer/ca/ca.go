// Package ca holds the issuer's certificate authorities and signs
// certificates with them.
//
// An issuer state directory holds six authorities, each a private key and its
// public half:
//
//	ssh_user_ca, ssh_user_ca.pub     signs SSH user certificates
//	ssh_host_ca, ssh_host_ca.pub     signs SSH host certificates
//	tls_ca.key, tls_ca.crt           signs the issuer's HTTPS serving certificate
//	identity_ca.key, identity_ca.crt signs bot identities (mTLS client certificates)
//	kube_ca.key, kube_ca.crt         signs Kubernetes client certificates
//	admin_ca.key, admin_ca.crt       signs admin identities (mTLS client certificates)
//	kube_ca_bundle.crt               the Kubernetes client CAs API servers trust
//
// and the serving certificate tls.key, tls.crt. Bot identities have their own
// authority so that a bot certificate can never pass as the issuer to a daemon
// that pins the TLS authority, and admin identities have theirs so that no
// bot certificate can ever pass as an admin.
//
// The files are written through package safefs: each is written to a
// temporary file that is synced and then linked into place, for a new
// authority, which never replaces an existing file, or renamed into place,
// for a new serving certificate. Init and RotateServing reach the state
// directory without following a symbolic link. Load, which runs in
// mwi-issuer serve and may create the Kubernetes client CA and the admin
// CA, first resolves
// a link in the state directory's path, as systemd's DynamicUser= makes
// one, and from there follows none.
//
// Every authority but the admin CA rotates in phases (see LoadRotating and
// the Phase constants): the next one is made beside the current one in
// files named with ".next" (CreateNext), both are trusted while clients
// and hosts catch up, the next one signs from update_clients, and when
// the rotation ends Tidy moves its files over the current ones. The store
// names each authority by its fingerprint, so the files are found
// whichever name they have at the time.
package ca

import (
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
	"maps"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/internal/safefs"
	"github.com/mwi-project/mwi/internal/tlspin"
)

// File names inside a state directory.
const (
	sshUserCAFile    = "ssh_user_ca"
	sshHostCAFile    = "ssh_host_ca"
	tlsCAKeyFile     = "tls_ca.key"
	tlsCACertFile    = "tls_ca.crt"
	identityKeyFile  = "identity_ca.key"
	identityCertFile = "identity_ca.crt"
	servingKeyFile   = "tls.key"
	servingCertFile  = "tls.crt"
	kubeKeyFile      = "kube_ca.key"
	kubeCertFile     = "kube_ca.crt"
)

// caLifetime is how long the authorities created by Init are valid. They are
// long-lived on purpose: every certificate they sign is short-lived.
const caLifetime = 10 * 365 * 24 * time.Hour

// servingLifetime is the lifetime of the serving certificate made by Init.
const servingLifetime = 365 * 24 * time.Hour

// Authority signs SSH and X.509 certificates. It is safe for concurrent use:
// it is never modified after Load.
//
// During a rotation (see LoadRotating) it holds, for each type, the
// authority that signs in the phase and the ones that are trusted.
type Authority struct {
	sshUser     ssh.Signer
	sshHost     ssh.Signer
	tlsCA       *x509.Certificate // the one that signed serving
	identityCA  *x509.Certificate
	identityKey crypto.Signer
	serving     tls.Certificate
	kube        kubeCA
	admin       kubeCA

	// The trusted authorities of each type during a rotation; nil means
	// the signing one alone.
	sshUserTrusted  []ssh.PublicKey
	sshHostTrusted  []ssh.PublicKey
	identityTrusted []*x509.Certificate
	kubeTrusted     []*x509.Certificate
	tlsTrusted      []*x509.Certificate
	// states are the rotation states the authority was loaded with.
	states map[Type]State
}

// Init creates the authorities and a serving certificate for hosts in dir.
// It creates dir with mode 0700 and each file with mode 0600, and refuses to
// overwrite an existing authority, or to use a path with a symbolic link or
// a directory that another user controls (see package safefs).
func Init(dir string, hosts []string) error {
	d, err := safefs.MkdirAll(dir, 0o700)
	if err != nil {
		return err
	}
	defer d.Close()
	// An existing directory keeps its mode in MkdirAll; this one is to
	// hold private keys.
	if err := d.Chmod(0o700); err != nil {
		return err
	}
	if len(hosts) == 0 {
		return errors.New("ca: the serving certificate needs at least one host name or address")
	}
	files := map[string][]byte{}
	for _, name := range []string{sshUserCAFile, sshHostCAFile} {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return err
		}
		block, err := ssh.MarshalPrivateKey(priv, "mwi "+name)
		if err != nil {
			return err
		}
		sshPub, err := ssh.NewPublicKey(priv.Public())
		if err != nil {
			return err
		}
		files[name] = pem.EncodeToMemory(block)
		files[name+".pub"] = ssh.MarshalAuthorizedKey(sshPub)
	}
	now := time.Now()
	tlsCA, tlsCAKey, err := newCA("MWI issuer TLS CA", now)
	if err != nil {
		return err
	}
	idCA, idCAKey, err := newCA("MWI bot identity CA", now)
	if err != nil {
		return err
	}
	kubeCA, kubeCAKey, err := newCA(kubeCAName, now)
	if err != nil {
		return err
	}
	adminCA, adminCAKey, err := newCA(adminCAName, now)
	if err != nil {
		return err
	}
	serving, servingKey, err := newServing(tlsCA, tlsCAKey, hosts, now)
	if err != nil {
		return err
	}
	for name, v := range map[string]any{tlsCAKeyFile: tlsCAKey, identityKeyFile: idCAKey, servingKeyFile: servingKey, kubeKeyFile: kubeCAKey, adminKeyFile: adminCAKey} {
		der, err := x509.MarshalPKCS8PrivateKey(v)
		if err != nil {
			return err
		}
		files[name] = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	files[tlsCACertFile] = certPEM(tlsCA)
	files[identityCertFile] = certPEM(idCA)
	files[kubeCertFile] = certPEM(kubeCA)
	files[adminCertFile] = certPEM(adminCA)
	// The serving chain includes the authority so that a daemon pinning the
	// authority's key can verify the chain without a CA file.
	files[servingCertFile] = append(certPEM(serving), certPEM(tlsCA)...)
	names := make([]string, 0, len(files))
	for name := range files {
		if existsIn(d, name) {
			return &ExistsError{Dir: dir, Found: name}
		}
		if name != sshUserCAFile {
			names = append(names, name)
		}
	}
	// Exists looks for the SSH user CA: write it last, so that a directory
	// where writing stopped half way is not taken for an issuer, and remove
	// what this call wrote if any write fails.
	slices.Sort(names)
	names = append(names, sshUserCAFile)
	for i, name := range names {
		if err := d.WriteNewFile(name, files[name], keyMode); err != nil {
			for _, done := range names[:i] {
				removeIn(d, done)
			}
			return err
		}
	}
	return nil
}

// ExistsError is Init's refusal of a directory that holds a file of an
// issuer already, Found.
type ExistsError struct {
	Dir, Found string
}

func (e *ExistsError) Error() string {
	return fmt.Sprintf("%s already holds an issuer (found %s); refusing to overwrite it", e.Dir, e.Found)
}

// Load reads the authorities from dir.
func Load(dir string) (*Authority, error) {
	a := &Authority{}
	var err error
	if a.sshUser, err = loadSSHSigner(filepath.Join(dir, sshUserCAFile)); err != nil {
		return nil, err
	}
	if a.sshHost, err = loadSSHSigner(filepath.Join(dir, sshHostCAFile)); err != nil {
		return nil, err
	}
	if a.tlsCA, err = loadCert(filepath.Join(dir, tlsCACertFile)); err != nil {
		return nil, err
	}
	if a.identityCA, err = loadCert(filepath.Join(dir, identityCertFile)); err != nil {
		return nil, err
	}
	if a.identityKey, err = loadKey(filepath.Join(dir, identityKeyFile)); err != nil {
		return nil, err
	}
	if a.serving, err = tls.LoadX509KeyPair(filepath.Join(dir, servingCertFile), filepath.Join(dir, servingKeyFile)); err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	// A state directory made before the Kubernetes client CA or the admin
	// CA existed gets them now; see loadLazyCA.
	if a.kube, err = loadKubeCA(dir); err != nil {
		return nil, err
	}
	if a.admin, err = loadAdminCA(dir); err != nil {
		return nil, err
	}
	// The bundle API servers trust is made once; the issuer rewrites it
	// when a rotation changes what it holds (WriteKubeBundle).
	if !exists(filepath.Join(dir, KubeBundleFile)) {
		if err := a.WriteKubeBundle(dir); err != nil {
			return nil, fmt.Errorf("Kubernetes client CA bundle: %w", err)
		}
	}
	return a, nil
}

// Exists reports whether dir holds an initialised issuer.
func Exists(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, sshUserCAFile))
	return err == nil
}

// SSHUserCA returns the public key of the SSH user authority, the key that
// sshd's TrustedUserCAKeys names.
func (a *Authority) SSHUserCA() ssh.PublicKey { return a.sshUser.PublicKey() }

// SSHHostCA returns the public key of the SSH host authority.
func (a *Authority) SSHHostCA() ssh.PublicKey { return a.sshHost.PublicKey() }

// TLSCA returns the authority that signed the serving certificate.
func (a *Authority) TLSCA() *x509.Certificate { return a.tlsCA }

// ServingCertificate returns the issuer's HTTPS certificate chain and key.
func (a *Authority) ServingCertificate() *tls.Certificate { return &a.serving }

// IdentityPool returns a pool holding the bot identity authorities
// (IdentityCAs), for verifying client certificates.
func (a *Authority) IdentityPool() *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range a.IdentityCAs() {
		p.AddCert(c)
	}
	return p
}

// Pin returns the pin of the TLS authority, as daemons configure it.
func (a *Authority) Pin() string { return tlspin.Of(a.tlsCA) }

// SSHUserRequest describes an SSH user certificate to sign.
type SSHUserRequest struct {
	Key        ssh.PublicKey
	KeyID      string
	Principals []string
	NotBefore  time.Time
	NotAfter   time.Time
	// AgentForwarding adds permit-agent-forwarding, for a bot whose roles
	// allow it (forward_agent).
	AgentForwarding bool
	// Extensions are further extensions, such as the access rules of
	// package sshaccess. They cannot replace the permit-* extensions.
	Extensions map[string]string
}

// SignSSHUser signs an SSH user certificate with a random serial number.
func (a *Authority) SignSSHUser(r SSHUserRequest) (*ssh.Certificate, error) {
	// Machines need a pty for some tools and port forwarding for tunnels;
	// agent forwarding would expose the bot's credentials to the target,
	// and X11 forwarding its display, so they are left out unless a role
	// allows agent forwarding.
	ext := map[string]string{"permit-pty": "", "permit-port-forwarding": ""}
	if r.AgentForwarding {
		ext["permit-agent-forwarding"] = ""
	}
	for k, v := range r.Extensions {
		if strings.HasPrefix(k, "permit-") {
			return nil, fmt.Errorf("ca: refusing to set extension %s from a request", k)
		}
		ext[k] = v
	}
	return signSSH(a.sshUser, ssh.UserCert, r.Key, r.KeyID, r.Principals, ssh.Permissions{Extensions: ext}, r.NotBefore, r.NotAfter)
}

// SSHHostRequest describes an SSH host certificate to sign.
type SSHHostRequest struct {
	Key       ssh.PublicKey
	KeyID     string
	Names     []string
	NotBefore time.Time
	NotAfter  time.Time
	// Extensions are the certificate's extensions, such as the host's
	// labels (package sshaccess). OpenSSH defines none for host
	// certificates and ignores those it does not know.
	Extensions map[string]string
}

// SignSSHHost signs an SSH host certificate with a random serial number.
func (a *Authority) SignSSHHost(r SSHHostRequest) (*ssh.Certificate, error) {
	var perms ssh.Permissions
	if len(r.Extensions) > 0 {
		perms.Extensions = maps.Clone(r.Extensions)
	}
	return signSSH(a.sshHost, ssh.HostCert, r.Key, r.KeyID, r.Names, perms, r.NotBefore, r.NotAfter)
}

// signSSH signs an SSH certificate of either type with a random serial.
func signSSH(ca ssh.Signer, certType uint32, key ssh.PublicKey, keyID string, principals []string, perms ssh.Permissions, notBefore, notAfter time.Time) (*ssh.Certificate, error) {
	if len(principals) == 0 {
		// OpenSSH takes a certificate without principals as valid for
		// every login, or every host: never sign one.
		return nil, errors.New("ca: refusing to sign an SSH certificate with no principals")
	}
	serial, err := randUint64()
	if err != nil {
		return nil, err
	}
	cert := &ssh.Certificate{
		Key:             key,
		Serial:          serial,
		CertType:        certType,
		KeyId:           keyID,
		ValidPrincipals: principals,
		ValidAfter:      uint64(notBefore.Unix()),
		ValidBefore:     uint64(notAfter.Unix()),
		Permissions:     perms,
	}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		return nil, fmt.Errorf("ca: sign SSH certificate: %w", err)
	}
	return cert, nil
}

// Identity is what a bot identity certificate says about its holder.
type Identity struct {
	Bot        string
	Instance   string
	Generation uint64
}

// SignIdentity signs a bot identity certificate for the key of csr.
func (a *Authority) SignIdentity(csr *CSR, id Identity, notBefore, notAfter time.Time) (*x509.Certificate, error) {
	c, err := a.SignIdentityDER(csr, id, notBefore, notAfter)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(c.Raw)
}

// IssuedIdentity is a bot identity certificate as SignIdentityDER returns
// it: its DER and what the issuer records of it.
type IssuedIdentity struct {
	Raw          []byte
	SerialNumber *big.Int
	// NotAfter is as the certificate carries it: in whole seconds, UTC.
	NotAfter time.Time
}

// SignIdentityDER signs a bot identity certificate as SignIdentity does,
// without parsing back what it signed: a renewal only sends it on.
func (a *Authority) SignIdentityDER(csr *CSR, id Identity, notBefore, notAfter time.Time) (IssuedIdentity, error) {
	req, err := csr.checked()
	if err != nil {
		return IssuedIdentity{}, err
	}
	serial, err := randSerial()
	if err != nil {
		return IssuedIdentity{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: id.Bot, Organization: []string{"mwi bot"}},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{identityURI(id)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.identityCA, req.PublicKey, a.identityKey)
	if err != nil {
		return IssuedIdentity{}, fmt.Errorf("ca: sign identity: %w", err)
	}
	return IssuedIdentity{Raw: der, SerialNumber: serial, NotAfter: notAfter.UTC().Truncate(time.Second)}, nil
}

// ParseIdentity reads the bot, instance and generation from a bot identity
// certificate that has already been verified against IdentityPool.
func ParseIdentity(c *x509.Certificate) (Identity, error) {
	for _, u := range c.URIs {
		if id, ok := parseIdentityURI(u); ok {
			if id.Bot != c.Subject.CommonName {
				return Identity{}, errors.New("identity certificate names two bots")
			}
			return id, nil
		}
	}
	return Identity{}, errors.New("not a bot identity certificate")
}

func newCA(name string, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := randSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	return c, key, err
}

func newServing(ca *x509.Certificate, caKey crypto.Signer, hosts []string, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := randSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "mwi-issuer"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(servingLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	return c, key, err
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func loadSSHSigner(path string) (ssh.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s, err := ssh.ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

func loadCert(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s: no PEM certificate", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

func loadKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: key cannot sign", path)
	}
	return s, nil
}

func randSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func randUint64() (uint64, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 63))
	if err != nil {
		return 0, err
	}
	return n.Uint64() + 1, nil
}
