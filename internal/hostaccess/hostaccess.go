// Package hostaccess decides, on a host that mwid manages, whether an SSH
// certificate may log in as a login, from the access directory that mwid
// keeps current.
//
// mwid's ssh_host output with access_dir writes three files there:
// UserCAFile (the issuer's SSH user CAs, for sshd's TrustedUserCAKeys),
// KRLFile (the issuer's OpenSSH KRL of locked certificates, for
// RevokedKeys) and AccessFile, a File in JSON: the host's certificate,
// whose labels roles select, the user CAs and the locks in force, with the
// time mwid last wrote it. mwictl ssh authorized-principals, which sshd
// runs as its AuthorizedPrincipalsCommand, reads only AccessFile and calls
// Authorize: it needs neither mwid nor the issuer to answer, and it refuses
// when mwid has not refreshed the file for longer than a bound, since the
// locks in it may then be out of date.
package hostaccess

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/safefs"
	"github.com/mwi-project/mwi/internal/sshaccess"
)

// The files of an access directory.
const (
	UserCAFile = "user_ca.pub"
	KRLFile    = "revoked_keys.krl"
	AccessFile = "access.json"
)

// DefaultDir is the access directory mwictl reads when none is named.
const DefaultDir = "/var/lib/mwi/ssh"

// DefaultMaxStale is how long AccessFile may go without being rewritten
// before Authorize refuses every login. mwid rewrites it at least every
// RefreshInterval, so only an mwid that has stopped leaves it this old.
const DefaultMaxStale = 10 * time.Minute

// RefreshInterval is the longest mwid leaves AccessFile unwritten while
// it runs, when nothing in it changes.
const RefreshInterval = 30 * time.Second

// Version is the version of File that this package writes and reads.
const Version = 1

// MaxFileSize bounds AccessFile: a host certificate, a few CA keys and the
// locks in force stay far below it.
const MaxFileSize = 4 << 20

// File is the content of AccessFile.
type File struct {
	Version int `json:"version"`
	// Written is when mwid last wrote the file: it rewrites it at least
	// every RefreshInterval, whether or not the issuer answers.
	Written time.Time `json:"written"`
	// LocksUpdated is when mwid last heard the locks from the issuer;
	// zero if it never has.
	LocksUpdated time.Time `json:"locks_updated"`
	// Locks are the locks in force, as the issuer last listed them.
	Locks []api.Lock `json:"locks"`
	// HostCertificate is the host's current SSH host certificate in
	// authorized_keys form; its labels are the host's labels.
	HostCertificate string `json:"host_certificate"`
	// UserCAs are the issuer's SSH user CAs in authorized_keys form.
	UserCAs []string `json:"user_cas"`
}

// Marshal returns f's encoding, with Version set.
func (f File) Marshal() ([]byte, error) {
	f.Version = Version
	if f.Locks == nil {
		f.Locks = []api.Lock{}
	}
	if f.UserCAs == nil {
		f.UserCAs = []string{}
	}
	b, err := json.MarshalIndent(f, "", "  ")
	return append(b, '\n'), err
}

// Read reads AccessFile in dir. The file and the directories above it must
// be safe by safefs's rules: whoever could write it would choose who logs
// in.
func Read(dir string) (*File, error) {
	data, err := safefs.ReadFile(filepath.Join(dir, AccessFile), MaxFileSize)
	if err != nil {
		return nil, err
	}
	var f File
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("%s: %v", filepath.Join(dir, AccessFile), err)
	}
	if f.Version != Version {
		return nil, fmt.Errorf("%s: version %d, want %d: are mwid and mwictl of different releases?", filepath.Join(dir, AccessFile), f.Version, Version)
	}
	return &f, nil
}

// Request is what sshd tells its AuthorizedPrincipalsCommand about a login
// attempt.
type Request struct {
	Login   string // %u: the login asked for
	KeyType string // %t: the key's or certificate's type
	Key     string // %k: the key or certificate, base64-encoded
}

// Authorize decides whether r's certificate may log in as r.Login on this
// host, from AccessFile in dir at time now. It returns nil if it may, and
// otherwise the refusal, whose Reason says why for the host's log and
// whose other fields name the certificate as far as it could be read.
//
// It allows only if AccessFile was written less than maxStale ago and not
// more than RefreshInterval ahead of now (a time ahead would otherwise
// keep the file fresh after mwid stops); the login has no space, control
// character or '#', which sshd would read as another principal; the key
// is a user certificate of one of the file's user CAs, valid now, with
// r.Login among its principals; it carries MWI's access rules
// (sshaccess.AccessExtension) for the bot and instance its key ID names,
// which the issuer's KRL revokes by; no lock in the file refuses it; and
// its rules allow r.Login on a host with the labels of the file's host
// certificate.
//
// The file and the directories above it must be owned by root or by the
// user the command runs as, and writable by no one else, as sshd's
// StrictModes asks of an AuthorizedPrincipalsFile (see Read). mwid, as
// root, refuses to keep an access directory another user owns.
func Authorize(dir string, maxStale time.Duration, r Request, now time.Time) *api.SSHRefusal {
	refuse := &api.SSHRefusal{Login: r.Login}
	fail := func(format string, args ...any) *api.SSHRefusal {
		refuse.Reason = fmt.Sprintf(format, args...)
		return refuse
	}
	// What the command prints is read by sshd one principal a line, and
	// sshd takes text after a space as the principal with options before
	// it and drops text from a '#' as a comment: a login with any of them
	// would be read as another principal.
	if r.Login == "" || strings.ContainsFunc(r.Login, func(c rune) bool { return unicode.IsSpace(c) || unicode.IsControl(c) || c == '#' }) {
		refuse.Login = strconv.Quote(r.Login)
		return fail("login %q is empty or has spaces or control characters or #", r.Login)
	}
	path := filepath.Join(dir, AccessFile)
	f, err := Read(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fail("%s does not exist; is mwid running with an ssh_host output whose access_dir is %s?", path, dir)
	case err != nil:
		return fail("cannot read the host's access rules: %v", err)
	}
	if age := now.Sub(f.Written); age > maxStale {
		return fail("mwid has not refreshed %s for %s; is mwid running? (bound: --max-stale %s)", path, age.Round(time.Second), maxStale)
	} else if -age > RefreshInterval {
		// mwid and this command read the same clock. A time ahead of it
		// means the clock went back or the file was not written by mwid;
		// trusted, it would keep the file fresh until then whether or
		// not mwid still runs. mwid writes the file again within
		// RefreshInterval of a change of the clock.
		return fail("%s was written %s in the future; did the clock go back? (mwid writes it again within %s)", path, (-age).Round(time.Second), RefreshInterval)
	}
	cert, err := parseCertificate(r)
	if err != nil {
		return fail("%v", err)
	}
	refuse.KeyID, refuse.Serial = cert.KeyId, strconv.FormatUint(cert.Serial, 10)
	if err := checkCertificate(cert, r.Login, f.UserCAs, now); err != nil {
		return fail("%v", err)
	}
	access, err := sshaccess.FromCertificate(cert)
	if errors.Is(err, sshaccess.ErrNoAccess) {
		return fail("certificate %q carries no MWI access rules (%s): it was issued before the issuer wrote them, and a managed host needs them", cert.KeyId, sshaccess.AccessExtension)
	}
	if err != nil {
		return fail("certificate %q: %v", cert.KeyId, err)
	}
	refuse.Bot, refuse.Instance = access.Bot, access.Instance
	// Unmanaged hosts revoke by key ID (the issuer's KRL) and this
	// command by the access rules' bot and instance: a certificate on
	// which they disagree could escape one of the two.
	if want := sshaccess.KeyID(access.Bot, access.Instance); cert.KeyId != want {
		return fail("certificate %q: its key ID is not %q, as its access rules name it; the KRL would not revoke it", cert.KeyId, want)
	}
	if l, locked := access.LockedBy(f.Locks, now); locked {
		return fail("%s is locked: %s", l.Target(), l.Reason)
	}
	labels, err := hostLabels(f.HostCertificate)
	if err != nil {
		return fail("%s: %v", path, err)
	}
	if err := access.Decide(r.Login, labels); err != nil {
		return fail("%v", err)
	}
	return nil
}

// parseCertificate parses the certificate sshd passed as %t and %k.
func parseCertificate(r Request) (*ssh.Certificate, error) {
	data, err := base64.StdEncoding.DecodeString(r.Key)
	if err != nil {
		return nil, fmt.Errorf("the key is not base64: %v", err)
	}
	key, err := ssh.ParsePublicKey(data)
	if err != nil {
		return nil, fmt.Errorf("the key cannot be parsed: %v", err)
	}
	if key.Type() != r.KeyType {
		return nil, fmt.Errorf("the key is of type %s, but sshd said %s", key.Type(), r.KeyType)
	}
	cert, ok := key.(*ssh.Certificate)
	if !ok {
		return nil, fmt.Errorf("the key (%s) is not a certificate", key.Type())
	}
	if cert.CertType != ssh.UserCert {
		return nil, fmt.Errorf("certificate %q is not a user certificate", cert.KeyId)
	}
	return cert, nil
}

// checkCertificate checks that cert is signed by one of userCAs, valid at
// now and issued for login, as sshd itself does.
func checkCertificate(cert *ssh.Certificate, login string, userCAs []string, now time.Time) error {
	var cas []ssh.PublicKey
	for _, line := range userCAs {
		ca, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
		if err != nil {
			return fmt.Errorf("a user CA in %s cannot be parsed: %v", AccessFile, err)
		}
		cas = append(cas, ca)
	}
	checker := ssh.CertChecker{
		IsUserAuthority: func(auth ssh.PublicKey) bool {
			for _, ca := range cas {
				if bytes.Equal(auth.Marshal(), ca.Marshal()) {
					return true
				}
			}
			return false
		},
		// sshd enforces these itself, after the principals command.
		SupportedCriticalOptions: []string{"force-command", "source-address", "verify-required"},
		Clock:                    func() time.Time { return now },
	}
	if !checker.IsUserAuthority(cert.SignatureKey) {
		return fmt.Errorf("certificate %q is not signed by the issuer's user CA (%s)", cert.KeyId, ssh.FingerprintSHA256(cert.SignatureKey))
	}
	// CheckCert, unlike sshd, takes a certificate without principals as
	// valid for every one.
	if !slices.Contains(cert.ValidPrincipals, login) {
		return fmt.Errorf("certificate %q: principal %q not in the set of valid principals", cert.KeyId, login)
	}
	if err := checker.CheckCert(login, cert); err != nil {
		return fmt.Errorf("certificate %q: %v", cert.KeyId, err)
	}
	return nil
}

// hostLabels returns the labels of the host certificate in authorized_keys
// form.
func hostLabels(text string) (map[string]string, error) {
	if text == "" {
		return nil, errors.New("no host certificate: has mwid obtained one yet?")
	}
	key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(text))
	if err != nil {
		return nil, fmt.Errorf("host certificate: %v", err)
	}
	cert, ok := key.(*ssh.Certificate)
	if !ok {
		return nil, errors.New("host_certificate is not a certificate")
	}
	return sshaccess.HostLabels(cert)
}
