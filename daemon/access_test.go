package daemon

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/hostaccess"
	"github.com/mwi-project/mwi/internal/krl"
	"github.com/mwi-project/mwi/internal/sshaccess"
)

// accessServer returns a Server of the fake issuer with an ssh_host
// output labelled env=staging whose access directory is dir/access, and
// a clock that the test moves.
func accessServer(t *testing.T, f *fakeIssuer, dir string) (*Server, *testClock) {
	t.Helper()
	hostKey := filepath.Join(dir, "ssh_host_ed25519_key.pub")
	if _, err := os.Stat(hostKey); err != nil {
		pub, _, _ := ed25519.GenerateKey(rand.Reader)
		k, _ := ssh.NewPublicKey(pub)
		if err := os.WriteFile(hostKey, ssh.MarshalAuthorizedKey(k), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("MWI_TEST_JOIN", "s3cret")
	s, _ := newTestServer(t, f, "  join_method: token\n  token: {env: MWI_TEST_JOIN}",
		"  - type: ssh_host\n    host_key: "+hostKey+"\n    labels: {env: staging}\n    access_dir: "+filepath.Join(dir, "access")+"\n")
	c := &testClock{t: time.Now()}
	s.now = c.now
	return s, c
}

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func readAccess(t *testing.T, dir string) *hostaccess.File {
	t.Helper()
	f, err := hostaccess.Read(filepath.Join(dir, "access"))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestAccessDir follows an access directory through the daemon: the files
// a renewal writes, the locks and KRL a poll brings over HTTP, with the 304
// of an unchanged list, and what status shows of it while the issuer is
// down. Package accessdir tests the keeper's own behaviour.
func TestAccessDir(t *testing.T) {
	f := newFakeIssuer(t)
	f.locks = []api.Lock{{Bot: "other", Reason: "r"}}
	f.krl = testKRL(t, 1)
	dir := t.TempDir()
	access := filepath.Join(dir, "access")
	s, clock := accessServer(t, f, dir)
	ctx := context.Background()
	if _, err := s.renew(ctx); err != nil {
		t.Fatal(err)
	}

	// The renewal writes the certificate's part at once.
	a := readAccess(t, dir)
	cert, _, _, _, err := ssh.ParseAuthorizedKey([]byte(a.HostCertificate))
	if err != nil {
		t.Fatalf("host_certificate: %v", err)
	}
	if labels, _ := sshaccess.HostLabels(cert.(*ssh.Certificate)); labels["env"] != "staging" {
		t.Errorf("host certificate labels %v, want the env=staging asked for", labels)
	}
	userCA := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(f.sshCA.PublicKey())))
	if len(a.UserCAs) != 1 || a.UserCAs[0] != userCA || len(a.Locks) != 0 || !a.LocksUpdated.IsZero() {
		t.Errorf("access.json after the renewal = %+v", a)
	}
	if data, _ := os.ReadFile(filepath.Join(access, hostaccess.UserCAFile)); string(data) != userCA+"\n" {
		t.Errorf("user_ca.pub = %q", data)
	}
	if fi, err := os.Stat(access); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("access directory: %v, %v; want mode 0755", fi, err)
	}

	// A poll brings the locks and the KRL.
	s.access.Poll(ctx)
	a = readAccess(t, dir)
	if len(a.Locks) != 1 || a.Locks[0].Bot != "other" || !a.LocksUpdated.Equal(clock.now()) {
		t.Errorf("access.json after a poll = %+v", a)
	}
	if data, _ := os.ReadFile(filepath.Join(access, hostaccess.KRLFile)); !bytes.Equal(data, testKRL(t, 1)) {
		t.Errorf("revoked_keys.krl = %q", data)
	}
	written := a.Written

	// Nothing changed: the issuer answers 304, and the file is left as
	// it is until RefreshInterval has passed.
	clock.advance(3 * time.Second)
	s.access.Poll(ctx)
	if f.notModified != 1 {
		t.Errorf("%d answers 304 of %d polls; want the second poll answered 304", f.notModified, f.lockPolls)
	}
	if a := readAccess(t, dir); !a.Written.Equal(written) {
		t.Errorf("access.json rewritten %s after the last write with nothing changed", a.Written.Sub(written))
	}
	clock.advance(hostaccess.RefreshInterval)
	s.access.Poll(ctx)
	if a := readAccess(t, dir); !a.Written.Equal(clock.now()) || !a.LocksUpdated.Equal(clock.now()) {
		t.Errorf("access.json after RefreshInterval: written %s, locks_updated %s; want both now", a.Written, a.LocksUpdated)
	}
	lastHeard := clock.now()

	// The issuer goes down: the locks stay, the heartbeat goes on, and
	// status says why the locks are not updated.
	f.mu.Lock()
	f.down = true
	f.mu.Unlock()
	clock.advance(hostaccess.RefreshInterval)
	s.access.Poll(ctx)
	a = readAccess(t, dir)
	if len(a.Locks) != 1 || !a.Written.Equal(clock.now()) || !a.LocksUpdated.Equal(lastHeard) {
		t.Errorf("access.json with the issuer down = %+v; want the last locks, written now, locks_updated %s", a, lastHeard)
	}
	if data, _ := os.ReadFile(filepath.Join(access, hostaccess.KRLFile)); !bytes.Equal(data, testKRL(t, 1)) {
		t.Errorf("revoked_keys.krl with the issuer down = %q", data)
	}
	st := s.Status().Outputs[0].AccessDir
	if st == nil || st.Path != access || st.Locks != 1 || st.PollError == "" || st.LocksUpdated == nil || !st.LocksUpdated.Equal(lastHeard) {
		t.Errorf("status of the access directory = %+v", st)
	}
}

// testKRL returns an empty KRL of the given version.
func testKRL(t *testing.T, version uint64) []byte {
	t.Helper()
	b, err := (&krl.KRL{Version: version}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestOneshotPollsAccessDir: mwid --oneshot polls the issuer once for the
// locks and the KRL of an access directory, after writing its certificate.
func TestOneshotPollsAccessDir(t *testing.T) {
	f := newFakeIssuer(t)
	f.locks = []api.Lock{{Bot: "other", Reason: "r"}}
	f.krl = testKRL(t, 1)
	dir := t.TempDir()
	s, _ := accessServer(t, f, dir)
	if err := s.Oneshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a := readAccess(t, dir); a.HostCertificate == "" || len(a.Locks) != 1 || a.LocksUpdated.IsZero() {
		t.Errorf("access.json after a one-shot = %+v", a)
	}
	if data, _ := os.ReadFile(filepath.Join(dir, "access", hostaccess.KRLFile)); !bytes.Equal(data, testKRL(t, 1)) {
		t.Errorf("revoked_keys.krl after a one-shot = %q", data)
	}
	if f.lockPolls != 1 {
		t.Errorf("%d polls of the locks, want one", f.lockPolls)
	}
}
