package ca

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// The admin CA signs admin identities: client certificates that let their
// holder use the admin API over the issuer's HTTPS listener. It is an
// authority of its own, not the bot identity CA with a mark on the
// certificate, so that no flaw in how bot identities are issued (a join, a
// renewal, whatever a bot's name may hold) can ever make an admin: the
// bot issuance path holds no key that signs one.
const (
	adminKeyFile  = "admin_ca.key"
	adminCertFile = "admin_ca.crt"
	adminCAName   = "MWI admin identity CA"
)

// MaxAdminLifetime bounds the lifetime of an admin identity.
const MaxAdminLifetime = 7 * 24 * time.Hour

// adminNameRE matches a valid admin name: what the audit log records for
// the admin's requests.
var adminNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,62}$`)

// ValidAdminName reports why name cannot name an admin identity, or nil.
func ValidAdminName(name string) error {
	if !adminNameRE.MatchString(name) {
		return fmt.Errorf("admin name %q: want 1 to 63 letters, digits, '.', '_', '@' or '-', starting with a letter or digit", name)
	}
	return nil
}

// loadAdminCA reads the admin CA from dir, creating it first in a state
// directory made before it existed.
func loadAdminCA(dir string) (kubeCA, error) { return loadLazyCA(dir, adminAuthority) }

// adminAuthority is the admin CA.
var adminAuthority = lazyCA{key: adminKeyFile, cert: adminCertFile, name: adminCAName,
	what: "admin identity CA", after: " (admin identities it signed then stop working)"}

// AdminCA returns the admin identity CA's certificate.
func (a *Authority) AdminCA() *x509.Certificate { return a.admin.cert }

// ClientPool returns a pool holding the authorities whose client
// certificates the HTTPS API accepts: the bot identity CAs (two during a
// rotation) and the admin CA. Which one signed a verified chain says what
// the caller is; see AdminName.
func (a *Authority) ClientPool() *x509.CertPool {
	p := a.IdentityPool()
	p.AddCert(a.admin.cert)
	return p
}

// SignAdmin signs an admin identity named name for the key of csr, valid
// from notBefore to notAfter. Nothing of the CSR but its key is copied.
func (a *Authority) SignAdmin(csr *x509.CertificateRequest, name string, notBefore, notAfter time.Time) (*x509.Certificate, error) {
	if err := ValidAdminName(name); err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("ca: admin identity request signature: %w", err)
	}
	serial, err := randSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name, Organization: []string{"mwi admin"}},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{{Scheme: "mwi", Host: "admin", Path: "/" + name}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.admin.cert, csr.PublicKey, a.admin.key)
	if err != nil {
		return nil, fmt.Errorf("ca: sign admin identity: %w", err)
	}
	return x509.ParseCertificate(der)
}

// ErrNotAdmin is returned by AdminName for a chain that the admin CA did
// not sign, such as a bot identity's.
var ErrNotAdmin = errors.New("not an admin identity")

// AdminName returns the name of the admin identity at the head of chain,
// a chain that the TLS layer verified against ClientPool. It returns
// ErrNotAdmin unless the chain ends at the admin CA.
func (a *Authority) AdminName(chain []*x509.Certificate) (string, error) {
	if len(chain) < 2 || !bytes.Equal(chain[len(chain)-1].Raw, a.admin.cert.Raw) {
		return "", ErrNotAdmin
	}
	leaf := chain[0]
	for _, u := range leaf.URIs {
		if u.Scheme != "mwi" || u.Host != "admin" {
			continue
		}
		name := strings.TrimPrefix(u.Path, "/")
		if name != leaf.Subject.CommonName || ValidAdminName(name) != nil {
			return "", errors.New("admin identity certificate names two admins")
		}
		return name, nil
	}
	return "", errors.New("admin identity certificate without an admin name")
}
