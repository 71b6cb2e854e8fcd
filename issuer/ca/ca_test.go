package ca_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"maps"
	"math"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/internal/tlspin"
	"github.com/mwi-project/mwi/issuer/ca"
)

// stateFiles are the files ca.Init creates.
var stateFiles = []string{
	"ssh_user_ca", "ssh_user_ca.pub",
	"ssh_host_ca", "ssh_host_ca.pub",
	"tls_ca.key", "tls_ca.crt",
	"identity_ca.key", "identity_ca.crt",
	"tls.key", "tls.crt",
	"kube_ca.key", "kube_ca.crt",
	"admin_ca.key", "admin_ca.crt",
}

// newAuthority initialises a state directory for hosts and loads it.
func newAuthority(t *testing.T, hosts ...string) (*ca.Authority, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	if err := ca.Init(dir, hosts); err != nil {
		t.Fatalf("Init: %v", err)
	}
	a, err := ca.Load(dir)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return a, dir
}

func newCSR(t *testing.T) (*x509.CertificateRequest, crypto.Signer) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "ignored"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return csr, key
}

// checked returns csr checked, as the authority hands requests to the
// signing methods.
func checked(t *testing.T, csr *x509.CertificateRequest) *ca.CSR {
	t.Helper()
	c, err := ca.CheckCSR(csr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newSSHKey(t *testing.T) ssh.PublicKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func readDir(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = data
	}
	return out
}

func TestInitModes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, dir string)
	}{
		{"new directory", func(t *testing.T, dir string) {}},
		{"existing empty directory with wide mode", func(t *testing.T, dir string) {
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}},
		{"nested directory", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "state")
			if tc.prepare == nil {
				dir = filepath.Join(dir, "a", "b")
			} else {
				tc.prepare(t, dir)
			}
			if ca.Exists(dir) {
				t.Fatal("Exists before Init")
			}
			if err := ca.Init(dir, []string{"127.0.0.1"}); err != nil {
				t.Fatalf("Init: %v", err)
			}
			if !ca.Exists(dir) {
				t.Error("Exists after Init = false")
			}
			fi, err := os.Stat(dir)
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode().Perm(); got != 0o700 {
				t.Errorf("dir mode = %o, want 700", got)
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
				fi, err := e.Info()
				if err != nil {
					t.Fatal(err)
				}
				if !fi.Mode().IsRegular() {
					t.Errorf("%s is not a regular file: %v", e.Name(), fi.Mode())
				}
				if got := fi.Mode().Perm(); got != 0o600 {
					t.Errorf("%s mode = %o, want 600", e.Name(), got)
				}
			}
			want := slices.Sorted(slices.Values(stateFiles))
			if !slices.Equal(names, want) {
				t.Errorf("files = %v, want %v", names, want)
			}
		})
	}
}

func TestInitRefusesOverwrite(t *testing.T) {
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, dir string) // makes dir hold something
	}{
		{"initialised issuer", func(t *testing.T, dir string) {
			if err := ca.Init(dir, []string{"127.0.0.1"}); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "state")
			tc.prepare(t, dir)
			before := readDir(t, dir)
			err := ca.Init(dir, []string{"127.0.0.1"})
			if err == nil {
				t.Fatal("second Init succeeded")
			}
			if !strings.Contains(err.Error(), "refusing to overwrite") {
				t.Errorf("error = %v, want it to say it refuses to overwrite", err)
			}
			after := readDir(t, dir)
			if len(after) != len(before) {
				t.Errorf("second Init changed the file set: %d files, then %d", len(before), len(after))
			}
			for name, data := range before {
				if !bytes.Equal(after[name], data) {
					t.Errorf("second Init changed %s", name)
				}
			}
		})
	}

	// Each key file on its own is enough to refuse: Init must never replace
	// a key that may already be trusted somewhere.
	for _, name := range []string{"ssh_user_ca", "ssh_host_ca", "tls_ca.key", "identity_ca.key", "tls.key", "kube_ca.key"} {
		t.Run("only "+name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, name)
			if err := os.WriteFile(path, []byte("precious"), 0o600); err != nil {
				t.Fatal(err)
			}
			err := ca.Init(dir, []string{"127.0.0.1"})
			if err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
				t.Fatalf("Init over an existing key = %v, want a refusal to overwrite", err)
			}
			data, err := os.ReadFile(path)
			if err != nil || string(data) != "precious" {
				t.Errorf("existing %s changed: %q, %v", name, data, err)
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 1 {
				t.Errorf("Init wrote files before refusing: %d entries", len(entries))
			}
		})
	}
}

// TestInitRefusesSymlink plants a symbolic link at a file that Init
// writes and at a directory on the way to the state directory: Init
// refuses, and writes nothing where the link points.
func TestInitRefusesSymlink(t *testing.T) {
	for _, name := range []string{"ssh_user_ca", "tls_ca.key", "tls.crt", "kube_ca.key"} {
		for _, dangling := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s dangling=%v", name, dangling), func(t *testing.T) {
				dir, elsewhere := t.TempDir(), t.TempDir()
				target := filepath.Join(elsewhere, "target")
				if !dangling {
					if err := os.WriteFile(target, []byte("precious"), 0o600); err != nil {
						t.Fatal(err)
					}
				}
				if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
					t.Fatal(err)
				}
				err := ca.Init(dir, []string{"127.0.0.1"})
				if err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
					t.Fatalf("Init with a link at %s = %v, want a refusal to overwrite", name, err)
				}
				if entries, _ := os.ReadDir(dir); len(entries) != 1 {
					t.Errorf("Init wrote files before refusing: %d entries", len(entries))
				}
				data, err := os.ReadFile(target)
				switch {
				case dangling && err == nil:
					t.Errorf("Init wrote through the link: %q", data)
				case !dangling && string(data) != "precious":
					t.Errorf("Init wrote through the link: %q, %v", data, err)
				}
			})
		}
	}
	t.Run("directory", func(t *testing.T) {
		base := t.TempDir()
		real := filepath.Join(base, "real")
		if err := os.Mkdir(real, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(real, filepath.Join(base, "link")); err != nil {
			t.Fatal(err)
		}
		for _, dir := range []string{filepath.Join(base, "link"), filepath.Join(base, "link", "state")} {
			err := ca.Init(dir, []string{"127.0.0.1"})
			if err == nil || !strings.Contains(err.Error(), "symbolic link") || !strings.Contains(err.Error(), filepath.Join(base, "link")) {
				t.Errorf("Init(%s) = %v, want a refusal naming the link", dir, err)
			}
		}
		if entries, _ := os.ReadDir(real); len(entries) != 0 {
			t.Errorf("Init wrote %d entries through the link", len(entries))
		}
	})
}

// TestInitRefusesSharedDirectory checks that Init refuses a state
// directory that other users may write to, who could replace a key.
func TestInitRefusesSharedDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	err := ca.Init(dir, []string{"127.0.0.1"})
	if err == nil || !strings.Contains(err.Error(), "writable by users other than its owner") {
		t.Fatalf("Init of a directory with mode 0777 = %v, want a refusal", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("Init wrote %d entries", len(entries))
	}
}

func TestLoadRoundTrip(t *testing.T) {
	a, dir := newAuthority(t, "127.0.0.1", "issuer.example")

	pubFile, err := os.ReadFile(filepath.Join(dir, "ssh_user_ca.pub"))
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(pubFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pub.Marshal(), a.SSHUserCA().Marshal()) {
		t.Error("SSHUserCA differs from ssh_user_ca.pub")
	}
	hostFile, err := os.ReadFile(filepath.Join(dir, "ssh_host_ca.pub"))
	if err != nil {
		t.Fatal(err)
	}
	hostPub, _, _, _, err := ssh.ParseAuthorizedKey(hostFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(hostPub.Marshal(), a.SSHHostCA().Marshal()) {
		t.Error("SSHHostCA differs from ssh_host_ca.pub")
	}
	if bytes.Equal(a.SSHUserCA().Marshal(), a.SSHHostCA().Marshal()) {
		t.Error("the SSH user and host authorities share a key")
	}

	crtFile, err := os.ReadFile(filepath.Join(dir, "tls_ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(crtFile)
	if block == nil || !bytes.Equal(block.Bytes, a.TLSCA().Raw) {
		t.Error("TLSCA differs from tls_ca.crt")
	}
	if !a.TLSCA().IsCA {
		t.Error("TLSCA is not a CA certificate")
	}
	if got, want := a.Pin(), tlspin.Of(a.TLSCA()); got != want {
		t.Errorf("Pin = %q, want %q", got, want)
	}

	// Loading again gives the same authorities.
	b, err := ca.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if a.Pin() != b.Pin() || !bytes.Equal(a.SSHUserCA().Marshal(), b.SSHUserCA().Marshal()) {
		t.Error("second Load gives different authorities")
	}
	// A certificate signed after one Load verifies against the pool of another.
	csr, _ := newCSR(t)
	now := time.Now()
	c, err := a.SignIdentity(checked(t, csr), ca.Identity{Bot: "ci", Instance: "i1", Generation: 1}, now.Add(-time.Minute), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: b.IdentityPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("identity signed by one Load does not verify against another: %v", err)
	}
}

func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, dir string)
	}{
		{"empty directory", func(t *testing.T, dir string) {
			for _, f := range stateFiles {
				os.Remove(filepath.Join(dir, f))
			}
		}},
		{"missing ssh_host_ca", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, "ssh_host_ca")) }},
		{"missing identity key", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, "identity_ca.key")) }},
		{"garbage ssh_user_ca", func(t *testing.T, dir string) { overwrite(t, dir, "ssh_user_ca", "not a key") }},
		{"garbage tls_ca.crt", func(t *testing.T, dir string) { overwrite(t, dir, "tls_ca.crt", "not a cert") }},
		{"key in place of identity_ca.crt", func(t *testing.T, dir string) {
			data, err := os.ReadFile(filepath.Join(dir, "identity_ca.key"))
			if err != nil {
				t.Fatal(err)
			}
			overwrite(t, dir, "identity_ca.crt", string(data))
		}},
		{"garbage identity_ca.key", func(t *testing.T, dir string) {
			overwrite(t, dir, "identity_ca.key", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("junk")})))
		}},
		{"serving key does not match", func(t *testing.T, dir string) {
			data, err := os.ReadFile(filepath.Join(dir, "tls_ca.key"))
			if err != nil {
				t.Fatal(err)
			}
			overwrite(t, dir, "tls.key", string(data))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, dir := newAuthority(t, "127.0.0.1")
			tc.damage(t, dir)
			if a, err := ca.Load(dir); err == nil {
				t.Fatalf("Load succeeded: %v", a)
			}
		})
	}
}

func overwrite(t *testing.T, dir, name, data string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// connMeta is the part of an SSH connection that CertChecker.Authenticate reads.
type connMeta struct{ user string }

func (c connMeta) User() string          { return c.user }
func (c connMeta) SessionID() []byte     { return nil }
func (c connMeta) ClientVersion() []byte { return nil }
func (c connMeta) ServerVersion() []byte { return nil }
func (c connMeta) RemoteAddr() net.Addr  { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2222} }
func (c connMeta) LocalAddr() net.Addr   { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 22} }

func TestSignSSHUser(t *testing.T) {
	a, _ := newAuthority(t, "127.0.0.1")
	other, _ := newAuthority(t, "127.0.0.1")
	key := newSSHKey(t)
	notBefore := time.Now().Add(-time.Minute).Truncate(time.Second)
	notAfter := notBefore.Add(time.Hour)
	cert, err := a.SignSSHUser(ca.SSHUserRequest{
		Key:        key,
		KeyID:      "bot=ci instance=abc generation=1",
		Principals: []string{"deploy", "viewer"},
		NotBefore:  notBefore,
		NotAfter:   notAfter,
	})
	if err != nil {
		t.Fatal(err)
	}

	// The certificate survives the wire form that mwid receives.
	parsed, _, _, _, err := ssh.ParseAuthorizedKey(ssh.MarshalAuthorizedKey(cert))
	if err != nil {
		t.Fatal(err)
	}
	cert = parsed.(*ssh.Certificate)

	if cert.CertType != ssh.UserCert {
		t.Errorf("CertType = %d, want user", cert.CertType)
	}
	if !bytes.Equal(cert.Key.Marshal(), key.Marshal()) {
		t.Error("certificate is for another key")
	}
	if cert.KeyId != "bot=ci instance=abc generation=1" {
		t.Errorf("KeyId = %q", cert.KeyId)
	}
	if !slices.Equal(cert.ValidPrincipals, []string{"deploy", "viewer"}) {
		t.Errorf("ValidPrincipals = %q", cert.ValidPrincipals)
	}
	if cert.ValidAfter != uint64(notBefore.Unix()) || cert.ValidBefore != uint64(notAfter.Unix()) {
		t.Errorf("validity = [%d, %d), want [%d, %d)", cert.ValidAfter, cert.ValidBefore, notBefore.Unix(), notAfter.Unix())
	}
	if cert.Serial == 0 {
		t.Error("Serial = 0")
	}
	if len(cert.CriticalOptions) != 0 {
		t.Errorf("CriticalOptions = %v, want none", cert.CriticalOptions)
	}
	for _, ext := range []string{"permit-pty", "permit-port-forwarding"} {
		if _, ok := cert.Extensions[ext]; !ok {
			t.Errorf("extension %s missing", ext)
		}
	}
	for _, ext := range []string{"permit-agent-forwarding", "permit-X11-forwarding", "permit-user-rc"} {
		if _, ok := cert.Extensions[ext]; ok {
			t.Errorf("extension %s must not be granted", ext)
		}
	}

	userCA := func(k ssh.PublicKey) bool { return bytes.Equal(k.Marshal(), a.SSHUserCA().Marshal()) }
	for _, tc := range []struct {
		name    string
		checker *ssh.CertChecker
		user    string
		wantErr string
	}{
		{"allowed principal", &ssh.CertChecker{IsUserAuthority: userCA}, "deploy", ""},
		{"second principal", &ssh.CertChecker{IsUserAuthority: userCA}, "viewer", ""},
		{"principal not on the certificate", &ssh.CertChecker{IsUserAuthority: userCA}, "root", "principal"},
		{"before validity", &ssh.CertChecker{IsUserAuthority: userCA, Clock: func() time.Time { return notBefore.Add(-time.Second) }}, "deploy", "not yet valid"},
		{"at expiry", &ssh.CertChecker{IsUserAuthority: userCA, Clock: func() time.Time { return notAfter }}, "deploy", "expired"},
		{"other user authority", &ssh.CertChecker{IsUserAuthority: func(k ssh.PublicKey) bool {
			return bytes.Equal(k.Marshal(), other.SSHUserCA().Marshal())
		}}, "deploy", "unrecognized authority"},
		{"host authority", &ssh.CertChecker{IsUserAuthority: func(k ssh.PublicKey) bool {
			return bytes.Equal(k.Marshal(), a.SSHHostCA().Marshal())
		}}, "deploy", "unrecognized authority"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.checker.Authenticate(connMeta{user: tc.user}, cert)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("Authenticate: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Errorf("Authenticate succeeded, want error containing %q", tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Errorf("Authenticate: %v, want error containing %q", err, tc.wantErr)
			}
		})
	}

	t.Run("tampered certificate", func(t *testing.T) {
		c := *cert
		c.ValidPrincipals = []string{"root"}
		checker := &ssh.CertChecker{IsUserAuthority: userCA}
		if _, err := checker.Authenticate(connMeta{user: "root"}, &c); err == nil {
			t.Error("a certificate whose principals were changed after signing verifies")
		}
	})
}

func TestSignSSHUserRefusesEmptyPrincipals(t *testing.T) {
	a, _ := newAuthority(t, "127.0.0.1")
	key := newSSHKey(t)
	now := time.Now()
	for _, tc := range []struct {
		name       string
		principals []string
	}{
		{"nil", nil},
		{"empty", []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cert, err := a.SignSSHUser(ca.SSHUserRequest{Key: key, KeyID: "x", Principals: tc.principals, NotBefore: now, NotAfter: now.Add(time.Hour)})
			if err == nil {
				t.Fatalf("signed a certificate valid for every login: %v", cert.ValidPrincipals)
			}
			if cert != nil {
				t.Error("certificate returned with the error")
			}
		})
	}
}

func TestSignSSHUserUniqueSerials(t *testing.T) {
	a, _ := newAuthority(t, "127.0.0.1")
	key := newSSHKey(t)
	now := time.Now()
	const n = 500
	seen := make(map[uint64]int, n)
	for i := range n {
		cert, err := a.SignSSHUser(ca.SSHUserRequest{Key: key, KeyID: "x", Principals: []string{"deploy"}, NotBefore: now, NotAfter: now.Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		if cert.Serial == 0 {
			t.Fatalf("signing %d: serial 0", i)
		}
		if j, dup := seen[cert.Serial]; dup {
			t.Fatalf("signings %d and %d share serial %d", j, i, cert.Serial)
		}
		seen[cert.Serial] = i
	}
}

func TestSignIdentityRoundTrip(t *testing.T) {
	a, _ := newAuthority(t, "127.0.0.1")
	now := time.Now().Truncate(time.Second)
	for _, id := range []ca.Identity{
		{Bot: "ci", Instance: "0123456789abcdef0123456789abcdef", Generation: 1},
		{Bot: "web.prod-2", Instance: "i", Generation: 42},
		{Bot: "x", Instance: "y", Generation: math.MaxUint64},
	} {
		t.Run(id.Bot, func(t *testing.T) {
			csr, key := newCSR(t)
			c, err := a.SignIdentity(checked(t, csr), id, now.Add(-time.Minute), now.Add(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			got, err := ca.ParseIdentity(c)
			if err != nil {
				t.Fatalf("ParseIdentity: %v", err)
			}
			if got != id {
				t.Errorf("ParseIdentity = %+v, want %+v", got, id)
			}
			if c.Subject.CommonName != id.Bot {
				t.Errorf("CN = %q, want %q", c.Subject.CommonName, id.Bot)
			}
			if !c.NotBefore.Equal(now.Add(-time.Minute)) || !c.NotAfter.Equal(now.Add(time.Hour)) {
				t.Errorf("validity = [%v, %v]", c.NotBefore, c.NotAfter)
			}
			pub, ok := c.PublicKey.(*ecdsa.PublicKey)
			if !ok || !pub.Equal(key.Public()) {
				t.Error("certificate is not for the key of the request")
			}
			if c.IsCA {
				t.Error("identity certificate is a CA")
			}
		})
	}
}

func TestSignIdentityVerification(t *testing.T) {
	a, _ := newAuthority(t, "127.0.0.1")
	other, _ := newAuthority(t, "127.0.0.1")
	now := time.Now()
	csr, _ := newCSR(t)
	c, err := a.SignIdentity(checked(t, csr), ca.Identity{Bot: "ci", Instance: "abc", Generation: 3}, now.Add(-time.Minute), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	tlsPool := x509.NewCertPool()
	tlsPool.AddCert(a.TLSCA())
	for _, tc := range []struct {
		name string
		opts x509.VerifyOptions
		ok   bool
	}{
		{"client auth against the identity pool", x509.VerifyOptions{Roots: a.IdentityPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, true},
		{"as a server certificate (default usages)", x509.VerifyOptions{Roots: a.IdentityPool()}, false},
		{"as a server certificate", x509.VerifyOptions{Roots: a.IdentityPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, false},
		{"as a server certificate for its bot name", x509.VerifyOptions{Roots: a.IdentityPool(), DNSName: "ci"}, false},
		{"against the TLS authority", x509.VerifyOptions{Roots: tlsPool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, false},
		{"against another issuer", x509.VerifyOptions{Roots: other.IdentityPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, false},
		{"after expiry", x509.VerifyOptions{Roots: a.IdentityPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, CurrentTime: now.Add(2 * time.Hour)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Verify(tc.opts)
			if tc.ok && err != nil {
				t.Errorf("Verify: %v", err)
			}
			if !tc.ok && err == nil {
				t.Error("Verify succeeded")
			}
		})
	}

	// A bot identity must never pass as the issuer to a daemon that pins
	// the identity authority by mistake, nor the TLS one.
	chain := []*x509.Certificate{c}
	if err := tlspin.Verify(chain, "ci", a.IdentityPool(), nil); err == nil {
		t.Error("tlspin.Verify accepts a bot identity as a server certificate")
	}
}

func TestSignIdentityRefusesBadRequest(t *testing.T) {
	a, _ := newAuthority(t, "127.0.0.1")
	csr, _ := newCSR(t)
	bad := *csr
	bad.Signature = slices.Clone(csr.Signature)
	bad.Signature[len(bad.Signature)-1] ^= 0xff
	now := time.Now()
	// A request is signed only once checked, and one whose signature does
	// not verify is not passed as checked.
	if _, err := ca.CheckCSR(&bad); err == nil {
		t.Fatal("CheckCSR passed a request whose signature does not verify")
	}
	for _, unchecked := range []*ca.CSR{nil, {}} {
		if c, err := a.SignIdentity(unchecked, ca.Identity{Bot: "ci", Instance: "i", Generation: 1}, now, now.Add(time.Hour)); err == nil {
			t.Fatalf("signed a request that was not checked: %v", c.Subject)
		}
	}
}

// selfSigned makes a certificate for ParseIdentity's negative cases. It is
// not signed by an issuer; ParseIdentity reads an already verified one.
func selfSigned(t *testing.T, cn string, uris ...string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestParseIdentity(t *testing.T) {
	for _, tc := range []struct {
		name string
		cn   string
		uris []string
		want *ca.Identity // nil: an error
	}{
		{"valid", "ci", []string{"mwi://bot/ci/instance/abc/generation/7"}, &ca.Identity{Bot: "ci", Instance: "abc", Generation: 7}},
		{"valid after another URI", "ci", []string{"spiffe://example.org/ci", "mwi://bot/ci/instance/abc/generation/7"}, &ca.Identity{Bot: "ci", Instance: "abc", Generation: 7}},
		{"no URI", "ci", nil, nil},
		{"other scheme", "ci", []string{"https://bot/ci/instance/abc/generation/7"}, nil},
		{"other host", "ci", []string{"mwi://robot/ci/instance/abc/generation/7"}, nil},
		{"query", "ci", []string{"mwi://bot/ci/instance/abc/generation/7?x=1"}, nil},
		{"fragment", "ci", []string{"mwi://bot/ci/instance/abc/generation/7#x"}, nil},
		{"missing generation", "ci", []string{"mwi://bot/ci/instance/abc"}, nil},
		{"negative generation", "ci", []string{"mwi://bot/ci/instance/abc/generation/-1"}, nil},
		{"generation not a number", "ci", []string{"mwi://bot/ci/instance/abc/generation/x"}, nil},
		{"generation overflows", "ci", []string{"mwi://bot/ci/instance/abc/generation/18446744073709551616"}, nil},
		{"extra segment", "ci", []string{"mwi://bot/ci/instance/abc/generation/7/x"}, nil},
		{"empty bot", "", []string{"mwi://bot//instance/abc/generation/7"}, nil},
		{"empty instance", "ci", []string{"mwi://bot/ci/instance//generation/7"}, nil},
		{"misspelt instance", "ci", []string{"mwi://bot/ci/instances/abc/generation/7"}, nil},
		{"CN names another bot", "web", []string{"mwi://bot/ci/instance/abc/generation/7"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ca.ParseIdentity(selfSigned(t, tc.cn, tc.uris...))
			if tc.want == nil {
				if err == nil {
					t.Errorf("ParseIdentity = %+v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseIdentity: %v", err)
			}
			if got != *tc.want {
				t.Errorf("ParseIdentity = %+v, want %+v", got, *tc.want)
			}
		})
	}
}

func TestServingCertificate(t *testing.T) {
	a, _ := newAuthority(t, "127.0.0.1", "issuer.example")
	other, _ := newAuthority(t, "127.0.0.1")
	sc := a.ServingCertificate()
	if len(sc.Certificate) != 2 {
		t.Fatalf("serving chain has %d certificates, want leaf and authority", len(sc.Certificate))
	}
	var chain []*x509.Certificate
	for _, der := range sc.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, c)
	}
	if !chain[1].Equal(a.TLSCA()) {
		t.Error("second certificate of the chain is not the TLS authority")
	}
	if chain[0].IsCA {
		t.Error("serving certificate is a CA")
	}
	// The private key belongs to the leaf.
	signer, ok := sc.PrivateKey.(crypto.Signer)
	if !ok {
		t.Fatalf("serving key %T cannot sign", sc.PrivateKey)
	}
	if pub, ok := signer.Public().(*ecdsa.PublicKey); !ok || !pub.Equal(chain[0].PublicKey) {
		t.Error("serving key does not match the serving certificate")
	}

	roots := x509.NewCertPool()
	roots.AddCert(a.TLSCA())
	for _, tc := range []struct {
		name  string
		host  string
		roots *x509.CertPool
		pins  []string
		ok    bool
	}{
		{"pin, IP", "127.0.0.1", nil, []string{a.Pin()}, true},
		{"pin, DNS name", "issuer.example", nil, []string{a.Pin()}, true},
		{"pin among others", "127.0.0.1", nil, []string{other.Pin(), a.Pin()}, true},
		{"roots, no pin", "127.0.0.1", roots, nil, true},
		{"roots and pin", "127.0.0.1", roots, []string{a.Pin()}, true},
		{"wrong host", "127.0.0.2", nil, []string{a.Pin()}, false},
		{"wrong DNS name", "other.example", nil, []string{a.Pin()}, false},
		{"other issuer's pin", "127.0.0.1", nil, []string{other.Pin()}, false},
		{"no roots, no pin", "127.0.0.1", nil, nil, false},
		{"roots and other issuer's pin", "127.0.0.1", roots, []string{other.Pin()}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tlspin.Verify(chain, tc.host, tc.roots, tc.pins)
			if tc.ok && err != nil {
				t.Errorf("Verify: %v", err)
			}
			if !tc.ok && err == nil {
				t.Error("Verify succeeded")
			}
		})
	}

	// The serving certificate cannot pass as a bot identity.
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: a.IdentityPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("the serving certificate verifies as a bot identity")
	}
}

func TestSignSSHExtensions(t *testing.T) {
	a, _ := newAuthority(t, "127.0.0.1")
	key := newSSHKey(t)
	now := time.Now()
	for _, tc := range []struct {
		name      string
		forward   bool
		extra     map[string]string
		want      map[string]string
		wantError string
	}{
		{"default", false, nil, map[string]string{"permit-pty": "", "permit-port-forwarding": ""}, ""},
		{"agent forwarding", true, nil,
			map[string]string{"permit-pty": "", "permit-port-forwarding": "", "permit-agent-forwarding": ""}, ""},
		{"access rules", false, map[string]string{"mwi-access@mwi-project.github.io": `{"v":1}`},
			map[string]string{"permit-pty": "", "permit-port-forwarding": "", "mwi-access@mwi-project.github.io": `{"v":1}`}, ""},
		{"no permit from a request", false, map[string]string{"permit-X11-forwarding": ""}, nil, "permit-X11-forwarding"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cert, err := a.SignSSHUser(ca.SSHUserRequest{Key: key, KeyID: "x", Principals: []string{"deploy"},
				NotBefore: now, NotAfter: now.Add(time.Hour), AgentForwarding: tc.forward, Extensions: tc.extra})
			if tc.wantError != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantError) {
					t.Fatalf("SignSSHUser error = %v, want one naming %s", err, tc.wantError)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(cert.Extensions, tc.want) {
				t.Errorf("Extensions = %v, want %v", cert.Extensions, tc.want)
			}
		})
	}

	host, err := a.SignSSHHost(ca.SSHHostRequest{Key: key, KeyID: "h", Names: []string{"h1"}, NotBefore: now, NotAfter: now.Add(time.Hour),
		Extensions: map[string]string{"mwi-labels@mwi-project.github.io": `{"env":"prod"}`}})
	if err != nil {
		t.Fatal(err)
	}
	parsed, _, _, _, err := ssh.ParseAuthorizedKey(ssh.MarshalAuthorizedKey(host))
	if err != nil {
		t.Fatal(err)
	}
	if got := parsed.(*ssh.Certificate).Extensions; !maps.Equal(got, map[string]string{"mwi-labels@mwi-project.github.io": `{"env":"prod"}`}) {
		t.Errorf("host certificate Extensions = %v", got)
	}
}

// TestSignIdentityDER checks that what SignIdentityDER says of the
// certificate it signed is what the certificate says.
func TestSignIdentityDER(t *testing.T) {
	a, _ := newAuthority(t, "127.0.0.1")
	csr, _ := newCSR(t)
	// Not in UTC, and not in whole seconds, as a certificate's times are.
	now := time.Now().In(time.FixedZone("east", 3*3600))
	got, err := a.SignIdentityDER(checked(t, csr), ca.Identity{Bot: "ci", Instance: "i1", Generation: 2}, now.Add(-time.Minute), now.Add(time.Hour+time.Second/3))
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(got.Raw)
	if err != nil {
		t.Fatal(err)
	}
	if got.SerialNumber.Cmp(c.SerialNumber) != 0 {
		t.Errorf("serial %v; the certificate's is %v", got.SerialNumber, c.SerialNumber)
	}
	if !got.NotAfter.Equal(c.NotAfter) || got.NotAfter.Location() != c.NotAfter.Location() {
		t.Errorf("NotAfter %v; the certificate's is %v", got.NotAfter, c.NotAfter)
	}
	if id, err := ca.ParseIdentity(c); err != nil || id != (ca.Identity{Bot: "ci", Instance: "i1", Generation: 2}) {
		t.Errorf("ParseIdentity = %+v, %v", id, err)
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: a.IdentityPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("the identity does not verify: %v", err)
	}
}
