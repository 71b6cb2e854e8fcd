package output

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mwi-project/mwi/internal/yamlfile"
	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/identity"
	"github.com/mwi-project/mwi/internal/hostaccess"
)

// TestSSHHostLabels: labels are asked for with the host key, and a change
// of labels takes a renewal, which asks for a new certificate.
func TestSSHHostLabels(t *testing.T) {
	dir := t.TempDir()
	hostKey := writeHostKey(t, dir)
	o, errs := parse(t, "{type: ssh_host, host_key: "+hostKey+", labels: {env: prod, team: db}}")
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	r := request([]Output{o})
	if hk := r.HostKeys(); len(hk) != 1 || !maps.Equal(hk[0].Labels, map[string]string{"env": "prod", "team": "db"}) {
		t.Errorf("host key request = %+v", hk)
	}
	staging, _ := parse(t, "{type: ssh_host, host_key: "+hostKey+", labels: {env: staging, team: db}}")
	if !needsRenewal(o, staging) {
		t.Error("a change of labels takes no renewal")
	}
	none, _ := parse(t, "{type: ssh_host, host_key: "+hostKey+"}")
	empty, _ := parse(t, "{type: ssh_host, host_key: "+hostKey+", labels: {}}")
	if needsRenewal(none, empty) {
		t.Error(`"labels: {}" is taken for a change from no labels`)
	}
	if hk := request([]Output{none}).HostKeys(); hk[0].Labels != nil {
		t.Errorf("labels asked for without any configured: %v", hk[0].Labels)
	}
}

func TestSSHHostAccessDirTwice(t *testing.T) {
	first, _ := parse(t, "{type: ssh_host, host_key: /a.pub, access_dir: /var/lib/mwi/ssh}")
	_, errs := parseAfter(t, []Output{first}, "{type: ssh_host, host_key: /b.pub, access_dir: /var/lib/mwi/ssh}")
	if len(errs) != 1 || !strings.Contains(errs[0], "outputs.0.access_dir: /var/lib/mwi/ssh is also the access_dir of an earlier ssh_host output") {
		t.Errorf("errors %q", errs)
	}
}

// parseAfter is parse of a block after the outputs earlier.
func parseAfter(t *testing.T, earlier []Output, block string) (Output, []string) {
	t.Helper()
	f := yamlfile.New("f.yaml", []byte(block))
	docs := f.Documents()
	if err := f.Err(); err != nil {
		t.Fatal(err)
	}
	var errs []string
	b := &Block{
		Path:    "outputs.0",
		Node:    docs[0],
		File:    f,
		Earlier: earlier,
		Errorf: func(path, format string, args ...any) {
			errs = append(errs, path+": "+fmt.Sprintf(format, args...))
		},
		Abs: func(p string) string { return p },
	}
	o := Parse(b)
	for _, err := range f.Errors() {
		errs = append(errs, err.Error())
	}
	return o, errs
}

// writeHostKey writes a new host public key into dir and returns its path.
func writeHostKey(t *testing.T, dir string) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := ssh.NewPublicKey(pub)
	path := filepath.Join(dir, "ssh_host_ed25519_key.pub")
	if err := os.WriteFile(path, ssh.MarshalAuthorizedKey(k), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// fakeKeeper records what the output gives the access keeper.
type fakeKeeper struct {
	dir     string
	cert    *ssh.Certificate
	userCAs []ssh.PublicKey
}

func (k *fakeKeeper) Certified(dir string, cert *ssh.Certificate, userCAs []ssh.PublicKey) error {
	k.dir, k.cert, k.userCAs = dir, cert, userCAs
	return nil
}

// TestSSHHostAccessDir: the output hands the host certificate and the user
// CAs to the access keeper after writing the certificate.
func TestSSHHostAccessDir(t *testing.T) {
	dir := t.TempDir()
	hostKey := writeHostKey(t, dir)
	o, errs := parse(t, "{type: ssh_host, host_key: "+hostKey+", access_dir: "+filepath.Join(dir, "access")+"}")
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if err := o.Check(); err != nil {
		t.Fatal(err)
	}
	var r Request
	write, err := o.Request(&r)
	if err != nil {
		t.Fatal(err)
	}
	ca := newTestSigner(t)
	cert := &ssh.Certificate{Key: r.HostPublicKeys()[0], CertType: ssh.HostCert, ValidPrincipals: []string{"web-1"}}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	c := &identity.Credentials{HostCerts: []*ssh.Certificate{cert}, UserCAs: []ssh.PublicKey{ca.PublicKey()}}
	if err := write(context.Background(), c, Env{Log: slog.New(slog.DiscardHandler)}); err == nil {
		t.Error("written without an access keeper")
	}
	k := &fakeKeeper{}
	if err := write(context.Background(), c, Env{Log: slog.New(slog.DiscardHandler), Access: k}); err != nil {
		t.Fatal(err)
	}
	if k.dir != filepath.Join(dir, "access") || k.cert != cert || len(k.userCAs) != 1 {
		t.Errorf("keeper got %+v", k)
	}
}

func newTestSigner(t *testing.T) ssh.Signer {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestWriteAccess checks the files of an access directory: their modes,
// the directory's, and their content as sshd and mwictl read them.
func TestWriteAccess(t *testing.T) {
	base := t.TempDir()
	ca := newTestSigner(t)
	caLine := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(ca.PublicKey())))
	at := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	f := hostaccess.File{Written: at, LocksUpdated: at, HostCertificate: "ssh-ed25519-cert-v01@openssh.com AAAA",
		UserCAs: []string{caLine}, Locks: []api.Lock{{Bot: "b", Reason: "r", At: at}}}
	d := AccessDirectory(filepath.Join(base, "var", "lib", "mwi", "ssh"))
	if err := WriteAccess(d, f, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(d.Path, hostaccess.KRLFile)); !os.IsNotExist(err) {
		t.Errorf("a KRL was written without one: %v", err)
	}
	if err := WriteAccess(d, f, []byte("KRL")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(base, "var"), d.Path} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("%s: %v, %v; want mode 0755", p, fi, err)
		}
	}
	want := map[string]string{hostaccess.KRLFile: "KRL", hostaccess.UserCAFile: caLine + "\n"}
	for _, name := range []string{hostaccess.KRLFile, hostaccess.UserCAFile, hostaccess.AccessFile} {
		p := filepath.Join(d.Path, name)
		fi, err := os.Lstat(p)
		if err != nil || fi.Mode() != 0o644 {
			t.Errorf("%s: %v, %v; want a regular file of mode 0644", name, fi, err)
			continue
		}
		data, _ := os.ReadFile(p)
		if w, ok := want[name]; ok && string(data) != w {
			t.Errorf("%s = %q, want %q", name, data, w)
		}
	}
	got, err := hostaccess.Read(d.Path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != hostaccess.Version || !got.Written.Equal(at) || got.HostCertificate != f.HostCertificate || len(got.Locks) != 1 || got.Locks[0].Bot != "b" {
		t.Errorf("access.json read back as %+v", got)
	}
	// The field names are the file format that mwictl of another release
	// reads: they must not change by accident.
	var raw map[string]json.RawMessage
	data, _ := os.ReadFile(filepath.Join(d.Path, hostaccess.AccessFile))
	json.Unmarshal(data, &raw)
	for _, k := range []string{"version", "written", "locks_updated", "locks", "host_certificate", "user_cas"} {
		if raw[k] == nil {
			t.Errorf("access.json lacks %q: %s", k, data)
		}
	}

	// A symbolic link in place of a file is refused, and left alone.
	os.Remove(filepath.Join(d.Path, hostaccess.AccessFile))
	os.Symlink("/etc/passwd", filepath.Join(d.Path, hostaccess.AccessFile))
	if err := WriteAccess(d, f, nil); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("WriteAccess over a symbolic link = %v", err)
	}
	// So is a directory reached through one.
	os.Symlink(d.Path, filepath.Join(base, "link"))
	if err := WriteAccess(AccessDirectory(filepath.Join(base, "link")), f, nil); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("WriteAccess through a symbolic link = %v", err)
	}
}
