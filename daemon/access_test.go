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

func (s *Server) pollOnce(ctx context.Context) {
	s.access.poll(ctx, s.issuer.Load(), s.creds.Current(), accessDirs(s.config()))
}

// TestAccessDir follows an access directory through a renewal and polls
// of the issuer: the files a renewal writes, the locks and KRL a poll
// brings, the 304 of an unchanged list, the heartbeat while nothing
// changes and while the issuer is down, and a restart that keeps the locks
// while the issuer cannot be reached.
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
	s.pollOnce(ctx)
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
	s.pollOnce(ctx)
	if f.notModified != 1 {
		t.Errorf("%d answers 304 of %d polls; want the second poll answered 304", f.notModified, f.lockPolls)
	}
	if a := readAccess(t, dir); !a.Written.Equal(written) {
		t.Errorf("access.json rewritten %s after the last write with nothing changed", a.Written.Sub(written))
	}
	clock.advance(hostaccess.RefreshInterval)
	s.pollOnce(ctx)
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
	s.pollOnce(ctx)
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

	// A lock added reaches the file at the next poll, however recent the
	// last write.
	f.mu.Lock()
	f.down = false
	f.locks = append(f.locks, api.Lock{Bot: "ci", Reason: "stolen"})
	f.krl = testKRL(t, 2)
	f.mu.Unlock()
	clock.advance(time.Second)
	s.pollOnce(ctx)
	if a := readAccess(t, dir); len(a.Locks) != 2 || a.Locks[1].Bot != "ci" {
		t.Errorf("locks after a lock was added = %+v", a.Locks)
	}
	if data, _ := os.ReadFile(filepath.Join(access, hostaccess.KRLFile)); !bytes.Equal(data, testKRL(t, 2)) {
		t.Errorf("revoked_keys.krl after a lock = %q", data)
	}
	if st := s.Status().Outputs[0].AccessDir; st.PollError != "" {
		t.Errorf("poll error still shown after a good poll: %q", st.PollError)
	}

	// A new mwid that has not joined yet keeps the directory as it finds
	// it, and its heartbeat going.
	s3, clock3 := accessServer(t, f, dir)
	clock3.advance(time.Hour)
	before := readAccess(t, dir)
	s3.pollOnce(ctx)
	if a := readAccess(t, dir); !a.Written.Equal(clock3.now()) || a.HostCertificate != before.HostCertificate || len(a.Locks) != 2 {
		t.Errorf("access.json from an mwid not joined yet = %+v", a)
	}

	// A new mwid, with the issuer's locks unreachable, keeps the locks of
	// the file it finds.
	f.mu.Lock()
	f.down = true
	f.mu.Unlock()
	s2, _ := accessServer(t, f, dir)
	if _, err := s2.renew(ctx); err != nil {
		t.Fatal(err)
	}
	s2.pollOnce(ctx)
	if a := readAccess(t, dir); len(a.Locks) != 2 || !a.LocksUpdated.Equal(clock.now()) {
		t.Errorf("locks after a restart with the issuer down = %+v, updated %s", a.Locks, a.LocksUpdated)
	}
}

// TestAccessPollLoop runs the poll loop as the daemon does: it polls
// repeatedly and stops with its context.
func TestAccessPollLoop(t *testing.T) {
	f := newFakeIssuer(t)
	f.krl = testKRL(t, 1)
	dir := t.TempDir()
	s, _ := accessServer(t, f, dir)
	s.now = time.Now
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.pollAccess(ctx)
	}()
	if _, err := s.renew(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		f.mu.Lock()
		n := f.lockPolls
		f.mu.Unlock()
		if n >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d polls of the locks in a minute", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	<-done
	if _, err := os.Stat(filepath.Join(dir, "access", hostaccess.KRLFile)); err != nil {
		t.Errorf("no KRL after the loop polled: %v", err)
	}
}

// TestReportSSHRefusal: a refusal reported to mwid reaches the issuer,
// with the host named by mwid's host certificate.
func TestReportSSHRefusal(t *testing.T) {
	f := newFakeIssuer(t)
	s, _ := accessServer(t, f, t.TempDir())
	s.now = time.Now
	if _, err := s.renew(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.ReportSSHRefusal(api.SSHRefusal{Login: "root", Bot: "ci", Reason: "bot ci is locked: stolen", Host: "forged"})
	deadline := time.Now().Add(time.Minute)
	for {
		f.mu.Lock()
		got := append([]api.SSHRefusal(nil), f.sshRefusals...)
		f.mu.Unlock()
		if len(got) > 0 {
			if got[0].Login != "root" || got[0].Host != "web-1.example.com" {
				t.Errorf("the issuer got %+v", got[0])
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the refusal did not reach the issuer in a minute")
		}
		time.Sleep(20 * time.Millisecond)
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

// TestAccessRefusesNotAKRL: an answer of the issuer's KRL route that is
// not a KRL (empty, an error page, a key list) is not written as
// RevokedKeys, which sshd would read as a list of keys that revokes no
// one; the last good KRL stays, and the poll error says why.
func TestAccessRefusesNotAKRL(t *testing.T) {
	for _, bad := range [][]byte{{}, []byte("<html>502 Bad Gateway</html>"), []byte("SSHKRL\n\x00"), testKRL(t, 2)[:40]} {
		f := newFakeIssuer(t)
		f.krl = testKRL(t, 1)
		dir := t.TempDir()
		s, clock := accessServer(t, f, dir)
		ctx := context.Background()
		if _, err := s.renew(ctx); err != nil {
			t.Fatal(err)
		}
		s.pollOnce(ctx)
		f.mu.Lock()
		f.krl = bad
		f.mu.Unlock()
		clock.advance(time.Second)
		s.pollOnce(ctx)
		if data, _ := os.ReadFile(filepath.Join(dir, "access", hostaccess.KRLFile)); !bytes.Equal(data, testKRL(t, 1)) {
			t.Errorf("answer %q: revoked_keys.krl = %q, want the last good KRL", bad, data)
		}
		if st := s.Status().Outputs[0].AccessDir; !strings.Contains(st.PollError, "not an OpenSSH KRL") && !strings.Contains(st.PollError, "truncated") {
			t.Errorf("answer %q: poll error %q", bad, st.PollError)
		}
	}
}

// TestAccessLockExpiryOnHostClock: a lock's expiry is moved to the host's
// clock, so that a host clock ahead of the issuer's does not lift the
// lock early.
func TestAccessLockExpiryOnHostClock(t *testing.T) {
	f := newFakeIssuer(t)
	f.locks = []api.Lock{{Bot: "deploy", Reason: "r", Expires: time.Now().Add(30 * time.Minute)}}
	dir := t.TempDir()
	s, clock := accessServer(t, f, dir)
	clock.advance(time.Hour) // the host's clock is an hour ahead
	ctx := context.Background()
	if _, err := s.renew(ctx); err != nil {
		t.Fatal(err)
	}
	s.pollOnce(ctx)
	a := readAccess(t, dir)
	if len(a.Locks) != 1 {
		t.Fatalf("locks %+v", a.Locks)
	}
	if exp := a.Locks[0].Expires; !exp.After(clock.now().Add(29 * time.Minute)) {
		t.Errorf("lock expires at %s on a host clock at %s; want about 30 minutes after it", exp, clock.now())
	}
}
