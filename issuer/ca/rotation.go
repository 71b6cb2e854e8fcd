package ca

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/mwi-project/mwi/internal/safefs"
	"github.com/mwi-project/mwi/internal/tlspin"
)

// Type names an authority that rotates. The admin identity CA does not:
// replace its files and restart to change it.
type Type string

// The authorities that rotate.
const (
	TypeSSHUser  Type = "ssh_user" // SSH user certificates: hosts trust it (TrustedUserCAKeys)
	TypeSSHHost  Type = "ssh_host" // SSH host certificates: clients trust it (@cert-authority)
	TypeIdentity Type = "identity" // bot identities: the issuer trusts it
	TypeKube     Type = "kube"     // Kubernetes client certificates: API servers trust it
	TypeTLS      Type = "tls"      // the serving certificate: daemons pin it
)

// Types are the authorities that rotate, in the order status shows them.
var Types = []Type{TypeSSHUser, TypeSSHHost, TypeIdentity, TypeKube, TypeTLS}

// ParseType returns the Type named s.
func ParseType(s string) (Type, error) {
	for _, t := range Types {
		if string(t) == s {
			return t, nil
		}
	}
	return "", fmt.Errorf("unknown authority type %q (want one of %s, or all)", s, typeList())
}

func typeList() string {
	names := make([]string, len(Types))
	for i, t := range Types {
		names[i] = string(t)
	}
	return strings.Join(names, ", ")
}

// The phases of a rotation, as Teleport names them. A rotation goes from
// standby through init, update_clients and update_servers back to
// standby, or from any phase but standby to rollback and then standby.
const (
	// PhaseStandby: no rotation; the current authority signs and is the
	// only one trusted. Reached from update_servers, the next authority
	// replaces the current one; from rollback, it is dropped.
	PhaseStandby = "standby"
	// PhaseInit: the next authority exists and is published beside the
	// current one, which still signs.
	PhaseInit = "init"
	// PhaseUpdateClients: the next authority signs; both are trusted.
	PhaseUpdateClients = "update_clients"
	// PhaseUpdateServers: as update_clients, and the issuer's serving
	// certificate is signed by the next TLS authority.
	PhaseUpdateServers = "update_servers"
	// PhaseRollback: the current authority signs again; both are still
	// trusted until standby drops the next one.
	PhaseRollback = "rollback"
)

// Phases are every phase, in their order.
var Phases = []string{PhaseStandby, PhaseInit, PhaseUpdateClients, PhaseUpdateServers, PhaseRollback}

// NextPhases returns the phases a rotation in phase from may go to.
func NextPhases(from string) []string {
	switch from {
	case PhaseStandby:
		return []string{PhaseInit}
	case PhaseInit:
		return []string{PhaseUpdateClients, PhaseRollback}
	case PhaseUpdateClients:
		return []string{PhaseUpdateServers, PhaseRollback}
	case PhaseUpdateServers:
		return []string{PhaseStandby, PhaseRollback}
	case PhaseRollback:
		return []string{PhaseStandby}
	}
	return nil
}

// signsNext reports whether the next authority signs in phase.
func signsNext(phase string) bool {
	return phase == PhaseUpdateClients || phase == PhaseUpdateServers
}

// State is the rotation state of one type, as the store keeps it:
// authorities are named by their fingerprints (see Fingerprints).
type State struct {
	Type    Type
	Phase   string
	Current string
	Next    string
}

// slotFiles names the files of one authority: its private key and its
// public half (an authorized_keys line for SSH, a certificate for X.509).
type slotFiles struct{ key, pub string }

// rotationFiles are, per type, the files of the current authority and of
// the next one during a rotation.
var rotationFiles = map[Type][2]slotFiles{
	TypeSSHUser:  {{sshUserCAFile, sshUserCAFile + ".pub"}, {sshUserCAFile + ".next", sshUserCAFile + ".next.pub"}},
	TypeSSHHost:  {{sshHostCAFile, sshHostCAFile + ".pub"}, {sshHostCAFile + ".next", sshHostCAFile + ".next.pub"}},
	TypeIdentity: {{identityKeyFile, identityCertFile}, {"identity_ca.next.key", "identity_ca.next.crt"}},
	TypeKube:     {{kubeKeyFile, kubeCertFile}, {"kube_ca.next.key", "kube_ca.next.crt"}},
	TypeTLS:      {{tlsCAKeyFile, tlsCACertFile}, {"tls_ca.next.key", "tls_ca.next.crt"}},
}

// KubeBundleFile is the file, in the state directory, holding every
// Kubernetes client CA that API servers must trust: the one to name in
// kube-apiserver's --client-ca-file. The issuer rewrites it at each phase
// of a rotation, and the API server reloads it when it changes.
const KubeBundleFile = "kube_ca_bundle.crt"

// slot is one authority read from its files.
type slot struct {
	fp     string
	ssh    ssh.Signer
	cert   *x509.Certificate
	key    crypto.Signer
	exists bool
}

func isSSH(t Type) bool { return t == TypeSSHUser || t == TypeSSHHost }

// readSlot reads the authority in files f of type t. A slot whose files
// are missing is returned with exists false and no error.
func readSlot(dir string, t Type, f slotFiles) (slot, error) {
	keyPath := filepath.Join(dir, f.key)
	if _, err := os.Lstat(keyPath); errors.Is(err, fs.ErrNotExist) {
		return slot{}, nil
	}
	s := slot{exists: true}
	var err error
	if isSSH(t) {
		if s.ssh, err = loadSSHSigner(keyPath); err != nil {
			return s, err
		}
		s.fp = ssh.FingerprintSHA256(s.ssh.PublicKey())
		return s, nil
	}
	if s.cert, err = loadCert(filepath.Join(dir, f.pub)); err != nil {
		return s, err
	}
	if s.key, err = loadKey(keyPath); err != nil {
		return s, err
	}
	if !publicKeyEqual(s.key.Public(), s.cert.PublicKey) {
		// A promotion (see Tidy) caught between its two renames: the
		// other slot still holds the pair whole.
		return s, fmt.Errorf("%s does not hold the key of %s", keyPath, f.pub)
	}
	s.fp = tlspin.Of(s.cert)
	return s, nil
}

// findSlot returns the slot of dir, current or next, whose fingerprint
// is fp.
func findSlot(dir string, t Type, fp string) (slot, error) {
	var errs []error
	for _, f := range rotationFiles[t] {
		s, err := readSlot(dir, t, f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if s.exists && s.fp == fp {
			return s, nil
		}
	}
	return slot{}, fmt.Errorf("%s authority %s is in neither %s nor %s of %s%s", t, fp,
		rotationFiles[t][0].key, rotationFiles[t][1].key, dir, joinErrs(errs))
}

func joinErrs(errs []error) string {
	if len(errs) == 0 {
		return ""
	}
	return " (" + errors.Join(errs...).Error() + ")"
}

// LoadRotating reads the authorities from dir as the rotation states
// say: for each type, the authorities named by the state's fingerprints
// are found in the current or the next files, whichever holds them, so
// that a directory caught between a state's change and the renames that
// follow it loads the same. A type without a state is in standby with the
// authority of its current files. It fails, naming the fingerprint, if an
// authority that a state names is in neither: the caller keeps the
// authorities it has and never signs with an unknown key.
func LoadRotating(dir string, states []State) (*Authority, error) {
	a, err := Load(dir)
	if err != nil {
		return nil, err
	}
	if len(states) == 0 {
		return a, nil
	}
	return a.withStates(dir, states, time.Now())
}

// withStates returns a copy of a, loaded from dir, with the authorities
// that states name.
func (a *Authority) withStates(dir string, states []State, now time.Time) (*Authority, error) {
	b := *a
	b.states = map[Type]State{}
	for _, st := range states {
		if _, ok := rotationFiles[st.Type]; !ok {
			return nil, fmt.Errorf("rotation of unknown authority type %q", st.Type)
		}
		cur, err := findSlot(dir, st.Type, st.Current)
		if err != nil {
			return nil, err
		}
		var next slot
		if st.Next != "" && st.Phase != PhaseStandby {
			if next, err = findSlot(dir, st.Type, st.Next); err != nil {
				return nil, err
			}
		}
		sign := cur
		if signsNext(st.Phase) && next.exists {
			sign = next
		}
		trusted := []slot{cur}
		if next.exists {
			trusted = append(trusted, next)
		}
		b.states[st.Type] = st
		switch st.Type {
		case TypeSSHUser:
			b.sshUser, b.sshUserTrusted = sign.ssh, sshKeys(trusted)
		case TypeSSHHost:
			b.sshHost, b.sshHostTrusted = sign.ssh, sshKeys(trusted)
		case TypeIdentity:
			b.identityCA, b.identityKey, b.identityTrusted = sign.cert, sign.key, certs(trusted)
		case TypeKube:
			b.kube.cert, b.kube.key, b.kube.created = sign.cert, sign.key, false
			b.kubeTrusted = certs(trusted)
		case TypeTLS:
			b.tlsTrusted = certs(trusted)
			// The serving certificate changes authority only in
			// update_servers; before, clients may not trust the next.
			serve := cur
			if st.Phase == PhaseUpdateServers && next.exists {
				serve = next
			}
			if !bytes.Equal(b.tlsCA.Raw, serve.cert.Raw) || !servedBy(b.serving, serve.cert) {
				s, err := reissueServing(b.serving, serve.cert, serve.key, now)
				if err != nil {
					return nil, err
				}
				b.serving = s
			}
			b.tlsCA = serve.cert
		}
	}
	return &b, nil
}

func sshKeys(ss []slot) []ssh.PublicKey {
	out := make([]ssh.PublicKey, len(ss))
	for i, s := range ss {
		out[i] = s.ssh.PublicKey()
	}
	return out
}

func certs(ss []slot) []*x509.Certificate {
	out := make([]*x509.Certificate, len(ss))
	for i, s := range ss {
		out[i] = s.cert
	}
	return out
}

// servedBy reports whether ca signed the serving certificate s.
func servedBy(s tls.Certificate, ca *x509.Certificate) bool {
	return s.Leaf != nil && s.Leaf.CheckSignatureFrom(ca) == nil
}

// reissueServing returns a serving certificate for the hosts of old,
// signed by ca, held only in memory: Tidy writes the one of the new
// authority when a rotation ends.
func reissueServing(old tls.Certificate, ca *x509.Certificate, caKey crypto.Signer, now time.Time) (tls.Certificate, error) {
	if old.Leaf == nil {
		return tls.Certificate{}, errors.New("serving certificate not parsed")
	}
	hosts := append([]string(nil), old.Leaf.DNSNames...)
	for _, ip := range old.Leaf.IPAddresses {
		hosts = append(hosts, ip.String())
	}
	leaf, key, err := newServing(ca, caKey, hosts, now)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("serving certificate from the %s authority: %w", TypeTLS, err)
	}
	return tls.Certificate{Certificate: [][]byte{leaf.Raw, ca.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// Fingerprint returns the fingerprint of the current authority of type t
// (the one that signs outside a rotation): SHA256:… for SSH, the pin
// (sha256:…) for X.509.
func (a *Authority) Fingerprint(t Type) string {
	if st, ok := a.states[t]; ok {
		return st.Current
	}
	switch t {
	case TypeSSHUser:
		return ssh.FingerprintSHA256(a.sshUser.PublicKey())
	case TypeSSHHost:
		return ssh.FingerprintSHA256(a.sshHost.PublicKey())
	case TypeIdentity:
		return tlspin.Of(a.identityCA)
	case TypeKube:
		return tlspin.Of(a.kube.cert)
	case TypeTLS:
		return tlspin.Of(a.tlsCA)
	}
	return ""
}

// SSHUserCAs returns the SSH user authorities that hosts must trust: the
// current one and, during a rotation, the next.
func (a *Authority) SSHUserCAs() []ssh.PublicKey {
	if a.sshUserTrusted != nil {
		return a.sshUserTrusted
	}
	return []ssh.PublicKey{a.sshUser.PublicKey()}
}

// SSHHostCAs returns the SSH host authorities that clients must trust.
func (a *Authority) SSHHostCAs() []ssh.PublicKey {
	if a.sshHostTrusted != nil {
		return a.sshHostTrusted
	}
	return []ssh.PublicKey{a.sshHost.PublicKey()}
}

// IdentityCAs returns the bot identity authorities the issuer accepts.
func (a *Authority) IdentityCAs() []*x509.Certificate {
	if a.identityTrusted != nil {
		return a.identityTrusted
	}
	return []*x509.Certificate{a.identityCA}
}

// KubeCAs returns the Kubernetes client authorities API servers must
// trust.
func (a *Authority) KubeCAs() []*x509.Certificate {
	if a.kubeTrusted != nil {
		return a.kubeTrusted
	}
	return []*x509.Certificate{a.kube.cert}
}

// TLSCAs returns the TLS authorities daemons must trust for the issuer's
// serving certificate.
func (a *Authority) TLSCAs() []*x509.Certificate {
	if a.tlsTrusted != nil {
		return a.tlsTrusted
	}
	return []*x509.Certificate{a.tlsCA}
}

// Pins returns the pins of TLSCAs, as daemons configure them.
func (a *Authority) Pins() []string {
	var out []string
	for _, c := range a.TLSCAs() {
		out = append(out, tlspin.Of(c))
	}
	return out
}

// KubeBundle returns the PEM certificates of KubeCAs.
func (a *Authority) KubeBundle() []byte {
	var out []byte
	for _, c := range a.KubeCAs() {
		out = append(out, certPEM(c)...)
	}
	return out
}

// WriteKubeBundle writes KubeBundle to KubeBundleFile in dir, replacing
// it whole by a rename, unless it holds the same already.
func (a *Authority) WriteKubeBundle(dir string) error {
	data := a.KubeBundle()
	if old, err := os.ReadFile(filepath.Join(dir, KubeBundleFile)); err == nil && bytes.Equal(old, data) {
		return nil
	}
	d, err := openStateDir(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	// API servers read it: it holds only certificates.
	return d.WriteFile(KubeBundleFile, data, 0o644)
}

// CreateNext makes a new authority of type t in dir, in its next files,
// and returns its fingerprint. It never replaces a file: next files left
// by a rotation that did not finish must be removed by Tidy, or by hand.
func CreateNext(dir string, t Type) (string, error) {
	f, ok := rotationFiles[t]
	if !ok {
		return "", fmt.Errorf("unknown authority type %q", t)
	}
	next := f[1]
	var keyData, pubData []byte
	var fp string
	if isSSH(t) {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return "", err
		}
		block, err := ssh.MarshalPrivateKey(priv, "mwi "+string(t)+" ca")
		if err != nil {
			return "", err
		}
		pub, err := ssh.NewPublicKey(priv.Public())
		if err != nil {
			return "", err
		}
		keyData, pubData, fp = pem.EncodeToMemory(block), ssh.MarshalAuthorizedKey(pub), ssh.FingerprintSHA256(pub)
	} else {
		cert, key, err := newCA(caNames[t], time.Now())
		if err != nil {
			return "", err
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return "", err
		}
		keyData, pubData, fp = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), certPEM(cert), tlspin.Of(cert)
	}
	d, err := openStateDir(dir)
	if err != nil {
		return "", err
	}
	defer d.Close()
	for _, name := range []string{next.key, next.pub} {
		if existsIn(d, name) {
			return "", fmt.Errorf("%s exists: another rotation of %s is starting, or one did not finish; remove it if no rotation is in progress", filepath.Join(dir, name), t)
		}
	}
	if err := d.WriteNewFile(next.key, keyData, keyMode); err != nil {
		return "", err
	}
	if err := d.WriteNewFile(next.pub, pubData, keyMode); err != nil {
		removeIn(d, next.key)
		return "", err
	}
	return fp, nil
}

// caNames are the subjects of the X.509 authorities.
var caNames = map[Type]string{
	TypeIdentity: "MWI bot identity CA",
	TypeKube:     kubeCAName,
	TypeTLS:      "MWI issuer TLS CA",
}

// Tidy brings the files of type t in dir in line with a rotation that is
// in standby with the authority current: if the next files hold current,
// they replace the current files (the rotation finished); if they hold
// dropped, the next authority of a rollback or of a refused init, they
// are removed. It removes nothing else: replicas share dir, and next
// files that hold another authority are those of an init that another
// issuer has begun since the store said standby, which would otherwise
// go as they are written. For the TLS authority, a serving certificate
// from current is written too, if tls.crt is not from it. Running it
// again after a crash finishes what it started.
func Tidy(dir string, t Type, current, dropped string) error {
	f, ok := rotationFiles[t]
	if !ok {
		return fmt.Errorf("unknown authority type %q", t)
	}
	d, err := openStateDir(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	keyData, keyFP := readFingerprint(d, t, f[1].key, true)
	pubData, pubFP := readFingerprint(d, t, f[1].pub, false)
	if current != "" && keyFP == current && pubFP == current {
		// The data promoted is what was fingerprinted, not what the
		// names hold a moment later.
		if err := replaceFiles(dir, []replacement{{f[0].key, keyData}, {f[0].pub, pubData}}); err != nil {
			return err
		}
	}
	for _, name := range []string{f[1].key, f[1].pub} {
		if err := removeHolding(d, t, name, name == f[1].key, current, dropped); err != nil {
			return err
		}
	}
	if t == TypeTLS {
		caCert, err := loadCert(filepath.Join(dir, tlsCACertFile))
		if err != nil {
			return err
		}
		if !servingFrom(dir, caCert) {
			return RotateServing(dir, nil)
		}
	}
	return nil
}

// maxAuthorityFile bounds what readFingerprint reads: an authority's key
// or certificate is a few kilobytes.
const maxAuthorityFile = 1 << 20

// readFingerprint returns the content of the file name in d, the key
// (isKey) or the public half of an authority of type t, and the
// fingerprint of the authority it holds; "" if it is missing or holds
// none.
func readFingerprint(d *safefs.Dir, t Type, name string, isKey bool) ([]byte, string) {
	data, err := d.ReadFile(name, maxAuthorityFile)
	if err != nil {
		return nil, ""
	}
	return data, fingerprintOf(t, data, isKey)
}

// fingerprintOf returns the fingerprint of the authority of type t whose
// key (isKey) or public half is data, as Fingerprint names it, or "".
func fingerprintOf(t Type, data []byte, isKey bool) string {
	if isSSH(t) {
		if isKey {
			s, err := ssh.ParsePrivateKey(data)
			if err != nil {
				return ""
			}
			return ssh.FingerprintSHA256(s.PublicKey())
		}
		pub, _, _, _, err := ssh.ParseAuthorizedKey(data)
		if err != nil {
			return ""
		}
		return ssh.FingerprintSHA256(pub)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return ""
	}
	if !isKey {
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return ""
		}
		return tlspin.Of(c)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return ""
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return ""
	}
	spki, err := x509.MarshalPKIXPublicKey(signer.Public())
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(spki)
	return "sha256:" + base64.StdEncoding.EncodeToString(sum[:])
}

// removeHolding removes the file name in d, the key (isKey) or the public
// half of an authority of type t, if it holds one of the authorities fps
// ("" matches none). It first renames the file to a name of its own, so
// that what it looks at is what it removes: another issuer's Tidy may
// remove name meanwhile, and an init then write a new authority there.
// A file that holds another authority is put back, unless something new
// is at name by then, which the error names.
//
// An issuer starting meanwhile may put the file back itself (see Repair):
// then the file is at name again, and is looked at again once.
func removeHolding(d *safefs.Dir, t Type, name string, isKey bool, fps ...string) error {
	for try := 0; ; try++ {
		aside := name + ".tidy-" + rand.Text()
		if err := unix.Renameat(d.Fd(), name, d.Fd(), aside); err != nil {
			if err == unix.ENOENT {
				return nil
			}
			return &os.LinkError{Op: "rename", Old: filepath.Join(d.Path(), name), New: filepath.Join(d.Path(), aside), Err: err}
		}
		testAside()
		_, fp := readFingerprint(d, t, aside, isKey)
		if fp == "" && !existsIn(d, aside) && try == 0 {
			continue // put back before it was read: it is at name again
		}
		if fp == "" || !slices.Contains(fps, fp) {
			if err := unix.Linkat(d.Fd(), aside, d.Fd(), name, 0); err == unix.ENOENT {
				return nil // put back already
			} else if err != nil && (err != unix.EEXIST || !sameFile(filepath.Join(d.Path(), aside), filepath.Join(d.Path(), name))) {
				return &os.LinkError{Op: "put back", Old: filepath.Join(d.Path(), aside), New: filepath.Join(d.Path(), name), Err: err}
			}
			if err := unix.Unlinkat(d.Fd(), aside, 0); err != nil && err != unix.ENOENT {
				return &os.PathError{Op: "remove", Path: filepath.Join(d.Path(), aside), Err: err}
			}
			return nil
		}
		err := unix.Unlinkat(d.Fd(), aside, 0)
		if err == unix.ENOENT && try == 0 {
			continue // put back meanwhile: it is at name again
		}
		if err != nil {
			return &os.PathError{Op: "remove", Path: filepath.Join(d.Path(), aside), Err: err}
		}
		return nil
	}
}

// testAside is called by removeHolding with a file aside; tests set it.
var testAside = func() {}

// servingFrom reports whether the serving certificate and key in dir are
// a pair and the certificate is from ca: not so after a stop between the
// two renames of RotateServing.
func servingFrom(dir string, ca *x509.Certificate) bool {
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, servingCertFile), filepath.Join(dir, servingKeyFile))
	if err != nil || len(pair.Certificate) == 0 {
		return false
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	return err == nil && leaf.CheckSignatureFrom(ca) == nil
}

// Repair finishes in dir what a Tidy stopped between two renames left
// half done, which Load would refuse: an authority whose current key file
// already holds the next key (only a promotion puts it there, at the end
// of a rotation, so the rotation is known to have ended without the
// store) is promoted whole, and a serving certificate that is not a pair
// with its key is made again from the TLS authority. It returns what it
// repaired.
func Repair(dir string) ([]string, error) {
	var done []string
	for _, t := range Types {
		f := rotationFiles[t]
		for _, name := range []string{f[1].key, f[1].pub} {
			if name == f[1].pub && !exists(filepath.Join(dir, f[1].key)) {
				// Tidy removes the key first: a public half without
				// it loads as nothing, and put back would only make
				// the next init refuse on it.
				continue
			}
			back, err := putBackAside(dir, name)
			if err != nil {
				return done, err
			}
			done = append(done, back...)
		}
		next, err := readSlot(dir, t, f[1])
		if err != nil || !next.exists {
			continue
		}
		if !currentKeyIs(dir, t, f[0], next) {
			continue
		}
		if err := Tidy(dir, t, next.fp, ""); err != nil {
			return done, err
		}
		done = append(done, fmt.Sprintf("the %s authority %s, half moved into %s", t, next.fp, f[0].key))
	}
	if _, err := os.Lstat(filepath.Join(dir, servingCertFile)); err != nil {
		return done, nil
	}
	if _, err := tls.LoadX509KeyPair(filepath.Join(dir, servingCertFile), filepath.Join(dir, servingKeyFile)); err == nil {
		return done, nil
	}
	caCert, err := loadCert(filepath.Join(dir, tlsCACertFile))
	if err != nil {
		return done, nil
	}
	caKey, err := loadKey(filepath.Join(dir, tlsCAKeyFile))
	if err != nil || !publicKeyEqual(caKey.Public(), caCert.PublicKey) {
		return done, nil
	}
	if err := RotateServing(dir, nil); err != nil {
		return done, err
	}
	return append(done, "the serving certificate, whose key was of another"), nil
}

// putBackAside finishes what a Tidy stopped in removeHolding left of
// name in dir: a file renamed aside and never put back is put back if
// name is missing, so that the next authority a store names is not lost
// with the name, and an aside name that is a second link to what name
// holds (a stop after the put-back) is removed. An aside file that holds
// something else is left for an operator, as it may be another issuer's
// Tidy at work. It returns what it repaired.
func putBackAside(dir, name string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var done []string
	for _, e := range entries {
		aside := e.Name()
		if !strings.HasPrefix(aside, name+".tidy-") || !e.Type().IsRegular() {
			continue
		}
		err := os.Link(filepath.Join(dir, aside), filepath.Join(dir, name))
		if err == nil {
			done = append(done, fmt.Sprintf("%s, put back from %s", name, aside))
		} else if !errors.Is(err, fs.ErrExist) || !sameFile(filepath.Join(dir, aside), filepath.Join(dir, name)) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, aside)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return done, err
		}
	}
	return done, nil
}

// sameFile reports whether a and b are links to one file, neither of
// them a symbolic link.
func sameFile(a, b string) bool {
	fa, err := os.Lstat(a)
	if err != nil {
		return false
	}
	fb, err := os.Lstat(b)
	return err == nil && fa.Mode().IsRegular() && os.SameFile(fa, fb)
}

// currentKeyIs reports whether the key file of cur holds the key of next.
func currentKeyIs(dir string, t Type, cur slotFiles, next slot) bool {
	path := filepath.Join(dir, cur.key)
	if isSSH(t) {
		s, err := loadSSHSigner(path)
		return err == nil && bytes.Equal(s.PublicKey().Marshal(), next.ssh.PublicKey().Marshal())
	}
	k, err := loadKey(path)
	return err == nil && publicKeyEqual(k.Public(), next.cert.PublicKey)
}

// TidyPending reports whether Tidy has work left for type t in dir, in
// standby with the authority current: the next files hold current (the
// rotation's end was stored, and its files not moved), or, for the TLS
// authority, the serving certificate is not a pair from current (Tidy
// was stopped as it wrote it).
func TidyPending(dir string, t Type, current string) bool {
	if NextHolds(dir, t, current) {
		return true
	}
	if t != TypeTLS {
		return false
	}
	caCert, err := loadCert(filepath.Join(dir, tlsCACertFile))
	if err != nil || tlspin.Of(caCert) != current {
		return false
	}
	return !servingFrom(dir, caCert)
}

// Rotating reports whether any type is in a phase other than standby.
func (a *Authority) Rotating() bool {
	for _, st := range a.states {
		if st.Phase != PhaseStandby {
			return true
		}
	}
	return false
}

// Phase returns the phase of type t as loaded.
func (a *Authority) Phase(t Type) string {
	if st, ok := a.states[t]; ok {
		return st.Phase
	}
	return PhaseStandby
}

// NextHolds reports whether the next files of type t in dir hold the
// authority fp: a rotation that reached standby but whose files Tidy has
// not yet moved.
func NextHolds(dir string, t Type, fp string) bool {
	f, ok := rotationFiles[t]
	if !ok {
		return false
	}
	s, err := readSlot(dir, t, f[1])
	return err == nil && s.exists && s.fp == fp
}
