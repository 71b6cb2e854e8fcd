package hostaccess

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/sshaccess"
)

var now = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

func newSigner(t *testing.T) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// cert signs a certificate of the given type for a new key with ca,
// after edit changes it.
func cert(t *testing.T, ca ssh.Signer, typ uint32, edit func(*ssh.Certificate)) *ssh.Certificate {
	t.Helper()
	c := &ssh.Certificate{
		Key:         newSigner(t).PublicKey(),
		Serial:      42,
		CertType:    typ,
		KeyId:       "bot=deploy instance=i-1",
		ValidAfter:  uint64(now.Add(-time.Minute).Unix()),
		ValidBefore: uint64(now.Add(time.Hour).Unix()),
		Permissions: ssh.Permissions{Extensions: map[string]string{}},
	}
	if edit != nil {
		edit(c)
	}
	if err := c.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	return c
}

// access is the access rules of the test's bot: ubuntu on staging, root
// nowhere but it is a principal.
var access = sshaccess.Access{
	Bot: "deploy", Instance: "i-1", Token: "tok",
	Allow: []sshaccess.Rule{
		{Role: "staging", Logins: []string{"ubuntu"}, NodeLabels: map[string][]string{"env": {"staging"}}},
		{Role: "prod-ro", Logins: []string{"viewer"}, NodeLabels: map[string][]string{"env": {"prod"}}},
		{Role: "legacy", Logins: []string{"root"}},
	},
}

func userCert(t *testing.T, ca ssh.Signer, edit func(*ssh.Certificate)) *ssh.Certificate {
	t.Helper()
	ext, err := access.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return cert(t, ca, ssh.UserCert, func(c *ssh.Certificate) {
		c.ValidPrincipals = []string{"ubuntu", "viewer", "root"}
		c.Extensions[sshaccess.AccessExtension] = ext
		c.Extensions["permit-pty"] = ""
		if edit != nil {
			edit(c)
		}
	})
}

func hostCert(t *testing.T, ca ssh.Signer, labels map[string]string) string {
	t.Helper()
	c := cert(t, ca, ssh.HostCert, func(c *ssh.Certificate) {
		c.KeyId, c.ValidPrincipals = "host", []string{"web-1"}
		if labels != nil {
			c.Extensions[sshaccess.LabelsExtension] = sshaccess.MarshalLabels(labels)
		}
	})
	return string(ssh.MarshalAuthorizedKey(c))
}

func writeFile(t *testing.T, dir string, f File) {
	t.Helper()
	data, err := f.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, AccessFile), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func request(login string, k ssh.PublicKey) Request {
	return Request{Login: login, KeyType: k.Type(), Key: base64.StdEncoding.EncodeToString(k.Marshal())}
}

func TestAuthorize(t *testing.T) {
	userCA, otherCA, hostCA := newSigner(t), newSigner(t), newSigner(t)
	good := userCert(t, userCA, nil)
	staging := hostCert(t, hostCA, map[string]string{"env": "staging"})
	base := File{
		Written:         now.Add(-5 * time.Second),
		LocksUpdated:    now.Add(-5 * time.Second),
		HostCertificate: staging,
		UserCAs:         []string{string(ssh.MarshalAuthorizedKey(otherCA.PublicKey())), string(ssh.MarshalAuthorizedKey(userCA.PublicKey()))},
	}
	withLocks := func(locks ...api.Lock) *File { f := base; f.Locks = locks; return &f }
	plain := newSigner(t).PublicKey()
	for _, tc := range []struct {
		name   string
		file   *File // nil: no file
		req    Request
		reason string // "" allows; otherwise part of the reason
	}{
		{name: "allowed", file: &base, req: request("ubuntu", good)},
		{name: "login not in the certificate", file: &base, req: request("admin", good), reason: `principal "admin" not in the set of valid principals`},
		{name: "login of another host's role", file: &base, req: request("viewer", good), reason: "no role of bot deploy allows login viewer on a host labelled env=staging"},
		{name: "login of a role without node_labels", file: &base, req: request("root", good), reason: "no role of bot deploy allows login root"},
		{name: "bot locked", file: withLocks(api.Lock{Bot: "deploy", Reason: "stolen laptop"}), req: request("ubuntu", good), reason: "bot deploy is locked: stolen laptop"},
		{name: "instance locked", file: withLocks(api.Lock{Bot: "deploy", Instance: "i-1", Reason: "copied"}), req: request("ubuntu", good), reason: "instance i-1 is locked: copied"},
		{name: "token locked", file: withLocks(api.Lock{Token: "tok", Reason: "leaked"}), req: request("ubuntu", good), reason: "token tok is locked: leaked"},
		{name: "other bot locked", file: withLocks(api.Lock{Bot: "other"}, api.Lock{Instance: "i-2"}, api.Lock{Token: "other"}), req: request("ubuntu", good)},
		{name: "expired lock", file: withLocks(api.Lock{Bot: "deploy", Expires: now.Add(-time.Second)}), req: request("ubuntu", good)},
		{name: "stale file", file: func() *File { f := base; f.Written = now.Add(-14 * time.Minute); return &f }(), req: request("ubuntu", good),
			reason: "mwid has not refreshed " + "DIR/access.json for 14m0s; is mwid running? (bound: --max-stale 10m0s)"},
		{name: "missing file", req: request("ubuntu", good), reason: "DIR/access.json does not exist; is mwid running"},
		{name: "other CA", file: &base, req: request("ubuntu", userCert(t, newSigner(t), nil)), reason: "not signed by the issuer's user CA"},
		{name: "expired certificate", file: &base, req: request("ubuntu", userCert(t, userCA, func(c *ssh.Certificate) {
			c.ValidBefore = uint64(now.Add(-time.Second).Unix())
		})), reason: "expired"},
		{name: "certificate without access rules", file: &base, req: request("ubuntu", userCert(t, userCA, func(c *ssh.Certificate) {
			delete(c.Extensions, sshaccess.AccessExtension)
		})), reason: "carries no MWI access rules"},
		{name: "host certificate used as user certificate", file: &base, req: request("ubuntu", cert(t, userCA, ssh.HostCert, func(c *ssh.Certificate) {
			c.ValidPrincipals = []string{"ubuntu"}
		})), reason: "not a user certificate"},
		{name: "login with a newline", file: &base, req: request("ubuntu\nroot", good), reason: `login "ubuntu\nroot" is empty or has spaces`},
		{name: "plain key", file: &base, req: request("ubuntu", plain), reason: "is not a certificate"},
		{name: "garbage key", file: &base, req: Request{Login: "ubuntu", KeyType: "ssh-ed25519", Key: "!!!"}, reason: "not base64"},
		{name: "truncated key", file: &base, req: Request{Login: "ubuntu", KeyType: "ssh-ed25519", Key: base64.StdEncoding.EncodeToString(good.Marshal()[:40])}, reason: "cannot be parsed"},
		{name: "wrong key type", file: &base, req: Request{Login: "ubuntu", KeyType: "ssh-rsa", Key: request("ubuntu", good).Key}, reason: "but sshd said ssh-rsa"},
		{name: "host certificate without labels", file: func() *File { f := base; f.HostCertificate = hostCert(t, hostCA, nil); return &f }(), req: request("ubuntu", good),
			reason: "no role of bot deploy selects a host labelled (none)"},
		{name: "no host certificate", file: func() *File { f := base; f.HostCertificate = ""; return &f }(), req: request("ubuntu", good), reason: "no host certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.file != nil {
				writeFile(t, dir, *tc.file)
			}
			r := Authorize(dir, DefaultMaxStale, tc.req, now)
			if tc.reason == "" {
				if r != nil {
					t.Fatalf("refused: %s", r.Reason)
				}
				return
			}
			if r == nil {
				t.Fatalf("allowed; want refused with %q", tc.reason)
			}
			want := strings.ReplaceAll(tc.reason, "DIR", dir)
			if !strings.Contains(r.Reason, want) {
				t.Errorf("reason %q, want it to contain %q", r.Reason, want)
			}
			if r.Login != tc.req.Login && r.Login != strconv.Quote(tc.req.Login) {
				t.Errorf("refusal names login %q, want %q", r.Login, tc.req.Login)
			}
		})
	}
}

// TestAuthorizeNamesCertificate checks that a refusal names the bot,
// instance, key ID and serial, for the audit log.
func TestAuthorizeNamesCertificate(t *testing.T) {
	userCA, hostCA := newSigner(t), newSigner(t)
	dir := t.TempDir()
	writeFile(t, dir, File{Written: now, HostCertificate: hostCert(t, hostCA, map[string]string{"env": "prod"}),
		UserCAs: []string{string(ssh.MarshalAuthorizedKey(userCA.PublicKey()))}})
	r := Authorize(dir, DefaultMaxStale, request("ubuntu", userCert(t, userCA, nil)), now)
	want := api.SSHRefusal{Login: "ubuntu", Bot: "deploy", Instance: "i-1", KeyID: "bot=deploy instance=i-1", Serial: "42",
		Reason: "no role of bot deploy allows login ubuntu on a host labelled env=prod"}
	if r == nil || *r != want {
		t.Errorf("refusal = %+v, want %+v", r, want)
	}
}

// TestReadRefusesUnsafeFile checks that a file other users could write is
// not trusted: its writer would choose who logs in.
func TestReadRefusesUnsafeFile(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, File{Written: now})
	if err := os.Chmod(filepath.Join(dir, AccessFile), 0o666); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(dir); err == nil || !strings.Contains(err.Error(), "writable by users other than its owner") {
		t.Errorf("Read of a world-writable file: %v", err)
	}
	r := Authorize(dir, DefaultMaxStale, Request{Login: "ubuntu"}, now)
	if r == nil || !strings.Contains(r.Reason, "cannot read the host's access rules") {
		t.Errorf("Authorize = %+v", r)
	}
}

// TestAuthorizeAttacks tries what someone who can choose sshd's %u, %t
// and %k (any client) or a certificate's fields (a careless or old
// issuer) might, and checks that each is refused.
func TestAuthorizeAttacks(t *testing.T) {
	userCA, hostCA := newSigner(t), newSigner(t)
	good := userCert(t, userCA, nil)
	base := File{
		Written:         now.Add(-5 * time.Second),
		HostCertificate: hostCert(t, hostCA, map[string]string{"env": "staging"}),
		UserCAs:         []string{string(ssh.MarshalAuthorizedKey(userCA.PublicKey()))},
	}
	written := func(d time.Duration) *File { f := base; f.Written = now.Add(d); return &f }
	// hashLogin's rules allow the login "ubuntu#x", which sshd would read
	// from the command's output as the principal "ubuntu".
	hashAccess := access
	hashAccess.Allow = []sshaccess.Rule{{Role: "r", Logins: []string{"ubuntu#x"}, NodeLabels: map[string][]string{"env": {"staging"}}}}
	hashExt, _ := hashAccess.Marshal()
	for _, tc := range []struct {
		name   string
		file   *File
		req    Request
		reason string
	}{
		{name: "written slightly ahead", file: written(5 * time.Second), req: request("ubuntu", good)},
		{name: "written an hour ahead", file: written(time.Hour), req: request("ubuntu", good), reason: "in the future"},
		{name: "written far ahead", file: written(100 * 365 * 24 * time.Hour), req: request("ubuntu", good), reason: "in the future"},
		{name: "login with a comment mark", file: &base, req: request("ubuntu#x", userCert(t, userCA, func(c *ssh.Certificate) {
			c.ValidPrincipals = []string{"ubuntu#x", "ubuntu"}
			c.Extensions[sshaccess.AccessExtension] = hashExt
		})), reason: "has spaces or control characters or #"},
		{name: "login with a tab", file: &base, req: request("ubuntu\troot", good), reason: "empty or has spaces"},
		{name: "login with a carriage return", file: &base, req: request("ubuntu\r", good), reason: "empty or has spaces"},
		{name: "empty login", file: &base, req: request("", good), reason: "empty or has spaces"},
		{name: "very long login", file: &base, req: request(strings.Repeat("u", 300), good), reason: "not in the set of valid principals"},
		{name: "certificate without principals", file: &base, req: request("ubuntu", userCert(t, userCA, func(c *ssh.Certificate) {
			c.ValidPrincipals = nil
		})), reason: "not in the set of valid principals"},
		{name: "not yet valid", file: &base, req: request("ubuntu", userCert(t, userCA, func(c *ssh.Certificate) {
			c.ValidAfter = uint64(now.Add(time.Minute).Unix())
		})), reason: "not yet valid"},
		{name: "signed by the host CA", file: &base, req: request("ubuntu", userCert(t, hostCA, nil)), reason: "not signed by the issuer's user CA"},
		{name: "plain key type for a certificate", file: &base, req: Request{Login: "ubuntu", KeyType: "ssh-ed25519", Key: request("ubuntu", good).Key},
			reason: "but sshd said ssh-ed25519"},
		{name: "key ID names another bot", file: &base, req: request("ubuntu", userCert(t, userCA, func(c *ssh.Certificate) {
			c.KeyId = "bot=other instance=i-9"
		})), reason: "key ID"},
		{name: "huge access extension", file: &base, req: request("ubuntu", userCert(t, userCA, func(c *ssh.Certificate) {
			c.Extensions[sshaccess.AccessExtension] = strings.Repeat(" ", 1<<17) + c.Extensions[sshaccess.AccessExtension]
		})), reason: "bytes long"},
		{name: "malformed access extension", file: &base, req: request("ubuntu", userCert(t, userCA, func(c *ssh.Certificate) {
			c.Extensions[sshaccess.AccessExtension] = "{"
		})), reason: "malformed"},
		{name: "lock until later", file: func() *File {
			f := base
			f.Locks = []api.Lock{{Bot: "deploy", Expires: now.Add(time.Minute)}}
			return &f
		}(), req: request("ubuntu", good), reason: "bot deploy is locked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, dir, *tc.file)
			r := Authorize(dir, DefaultMaxStale, tc.req, now)
			switch {
			case tc.reason == "" && r != nil:
				t.Fatalf("refused: %s", r.Reason)
			case tc.reason != "" && r == nil:
				t.Fatalf("allowed; want refused with %q", tc.reason)
			case r != nil && !strings.Contains(r.Reason, tc.reason):
				t.Errorf("reason %q, want it to contain %q", r.Reason, tc.reason)
			}
		})
	}
}

// TestAuthorizeRefusesUnsafeFiles checks the classes of access files
// whose content someone other than mwid could have chosen, and of files
// that are not what mwid writes.
func TestAuthorizeRefusesUnsafeFiles(t *testing.T) {
	userCA, hostCA := newSigner(t), newSigner(t)
	good := userCert(t, userCA, nil)
	f := File{Written: now, HostCertificate: hostCert(t, hostCA, map[string]string{"env": "staging"}),
		UserCAs: []string{string(ssh.MarshalAuthorizedKey(userCA.PublicKey()))}}
	data, err := f.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		setup  func(t *testing.T, dir string) string // returns the dir to read
		reason string
	}{
		{name: "symlinked file", setup: func(t *testing.T, dir string) string {
			other := t.TempDir()
			os.WriteFile(filepath.Join(other, AccessFile), data, 0o644)
			os.Symlink(filepath.Join(other, AccessFile), filepath.Join(dir, AccessFile))
			return dir
		}, reason: "symbolic link"},
		{name: "symlinked directory", setup: func(t *testing.T, dir string) string {
			os.WriteFile(filepath.Join(dir, AccessFile), data, 0o644)
			link := filepath.Join(t.TempDir(), "link")
			os.Symlink(dir, link)
			return link
		}, reason: "symbolic link"},
		{name: "group-writable file", setup: func(t *testing.T, dir string) string {
			os.WriteFile(filepath.Join(dir, AccessFile), data, 0o644)
			os.Chmod(filepath.Join(dir, AccessFile), 0o664)
			return dir
		}, reason: "writable by users other than its owner"},
		{name: "world-writable directory", setup: func(t *testing.T, dir string) string {
			os.WriteFile(filepath.Join(dir, AccessFile), data, 0o644)
			os.Chmod(dir, 0o777)
			return dir
		}, reason: "writable by users other than its owner"},
		{name: "file of another user", setup: func(t *testing.T, dir string) string {
			if os.Geteuid() != 0 {
				t.Skip("needs root to give a file away")
			}
			os.WriteFile(filepath.Join(dir, AccessFile), data, 0o644)
			os.Chown(filepath.Join(dir, AccessFile), 65534, 65534)
			return dir
		}, reason: "owned by uid 65534"},
		{name: "fifo", setup: func(t *testing.T, dir string) string {
			if err := syscallMkfifo(filepath.Join(dir, AccessFile)); err != nil {
				t.Skip(err)
			}
			return dir
		}, reason: "not a regular file"},
		{name: "garbage", setup: func(t *testing.T, dir string) string {
			os.WriteFile(filepath.Join(dir, AccessFile), []byte("\x00garbage"), 0o644)
			return dir
		}, reason: "cannot read the host's access rules"},
		{name: "too large", setup: func(t *testing.T, dir string) string {
			os.WriteFile(filepath.Join(dir, AccessFile), append(data, make([]byte, MaxFileSize)...), 0o644)
			return dir
		}, reason: "larger than"},
		{name: "other version", setup: func(t *testing.T, dir string) string {
			os.WriteFile(filepath.Join(dir, AccessFile), []byte(strings.Replace(string(data), `"version": 1`, `"version": 2`, 1)), 0o644)
			return dir
		}, reason: "version 2"},
		{name: "no written time", setup: func(t *testing.T, dir string) string {
			os.WriteFile(filepath.Join(dir, AccessFile), []byte(`{"version":1}`), 0o644)
			return dir
		}, reason: "mwid has not refreshed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := tc.setup(t, t.TempDir())
			r := Authorize(dir, DefaultMaxStale, request("ubuntu", good), now)
			if r == nil || !strings.Contains(r.Reason, tc.reason) {
				t.Errorf("Authorize = %+v, want a refusal with %q", r, tc.reason)
			}
		})
	}
}

func syscallMkfifo(path string) error { return unix.Mkfifo(path, 0o644) }
