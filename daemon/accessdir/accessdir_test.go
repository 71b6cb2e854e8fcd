package accessdir

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/hostaccess"
	"github.com/mwi-project/mwi/internal/krl"
)

// fakeIssuer answers Locks and KRL as the issuer does, with ETags that
// change with the answers; down makes both fail.
type fakeIssuer struct {
	mu          sync.Mutex
	locks       []api.Lock
	krl         []byte
	down        bool
	lockPolls   int // Locks answered, unchanged answers included
	notModified int // of which unchanged
}

func tag(v any) string {
	b, _ := json.Marshal(v)
	sum := sha256.Sum256(b)
	return `"` + hex.EncodeToString(sum[:8]) + `"`
}

func (f *fakeIssuer) Locks(ctx context.Context, id *tls.Certificate, etag string) (api.LockList, string, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if id == nil {
		return api.LockList{}, "", false, errors.New("GET /v1/locks: no identity")
	}
	if f.down {
		return api.LockList{}, "", false, errors.New("GET /v1/locks: 503 down")
	}
	f.lockPolls++
	t := tag(f.locks)
	if t == etag {
		f.notModified++
		return api.LockList{}, t, false, nil
	}
	return api.LockList{Locks: slices.Clone(f.locks), Now: time.Now()}, t, true, nil
}

func (f *fakeIssuer) KRL(ctx context.Context, etag string) ([]byte, string, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, "", false, errors.New("GET /v1/ssh/krl: 503 down")
	}
	t := tag(f.krl)
	if t == etag {
		return nil, t, false, nil
	}
	return append([]byte{}, f.krl...), t, true, nil
}

func (f *fakeIssuer) set(fn func(f *fakeIssuer)) {
	f.mu.Lock()
	fn(f)
	f.mu.Unlock()
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

// newKeeper returns a Keeper of the access directory dir/access that polls
// f, as a joined mwid if joined, and the clock that the test moves.
func newKeeper(f *fakeIssuer, dir string, joined bool) (*Keeper, *testClock) {
	c := &testClock{t: time.Now()}
	var id *tls.Certificate
	if joined {
		id = &tls.Certificate{}
	}
	k := New(Config{
		Now:      c.now,
		Dirs:     func() []string { return []string{filepath.Join(dir, "access")} },
		Issuer:   func() Issuer { return f },
		Identity: func() *tls.Certificate { return id },
	})
	return k, c
}

// certify gives k a host certificate for dir/access, as a renewal does,
// and returns the user CA in authorized_keys form.
func certify(t *testing.T, k *Keeper, dir string) (hostCert, userCA string) {
	t.Helper()
	_, caKey, _ := ed25519.GenerateKey(rand.Reader)
	ca, _ := ssh.NewSignerFromKey(caKey)
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	key, _ := ssh.NewPublicKey(pub)
	cert := &ssh.Certificate{Key: key, CertType: ssh.HostCert, ValidPrincipals: []string{"web-1.example.com"}, ValidBefore: ssh.CertTimeInfinity}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	if err := k.Certified(filepath.Join(dir, "access"), cert, []ssh.PublicKey{ca.PublicKey()}); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(cert))), strings.TrimSpace(string(ssh.MarshalAuthorizedKey(ca.PublicKey())))
}

func readAccess(t *testing.T, dir string) *hostaccess.File {
	t.Helper()
	f, err := hostaccess.Read(filepath.Join(dir, "access"))
	if err != nil {
		t.Fatal(err)
	}
	return f
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

// TestKeeper follows an access directory through a certificate and polls
// of the issuer: the files a renewal writes, the locks and KRL a poll
// brings, the unchanged answer of an unchanged list, the heartbeat while
// nothing changes and while the issuer is down, and a restart that keeps
// the locks while the issuer cannot be reached.
func TestKeeper(t *testing.T) {
	f := &fakeIssuer{locks: []api.Lock{{Bot: "other", Reason: "r"}}, krl: testKRL(t, 1)}
	dir := t.TempDir()
	access := filepath.Join(dir, "access")
	k, clock := newKeeper(f, dir, true)
	ctx := context.Background()

	// A certificate is written at once.
	hostCert, userCA := certify(t, k, dir)
	a := readAccess(t, dir)
	if a.HostCertificate != hostCert || len(a.UserCAs) != 1 || a.UserCAs[0] != userCA || len(a.Locks) != 0 || !a.LocksUpdated.IsZero() {
		t.Errorf("access.json after the certificate = %+v", a)
	}
	if data, _ := os.ReadFile(filepath.Join(access, hostaccess.UserCAFile)); string(data) != userCA+"\n" {
		t.Errorf("user_ca.pub = %q", data)
	}
	if fi, err := os.Stat(access); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("access directory: %v, %v; want mode 0755", fi, err)
	}

	// A poll brings the locks and the KRL.
	k.Poll(ctx)
	a = readAccess(t, dir)
	if len(a.Locks) != 1 || a.Locks[0].Bot != "other" || !a.LocksUpdated.Equal(clock.now()) {
		t.Errorf("access.json after a poll = %+v", a)
	}
	if data, _ := os.ReadFile(filepath.Join(access, hostaccess.KRLFile)); !bytes.Equal(data, testKRL(t, 1)) {
		t.Errorf("revoked_keys.krl = %q", data)
	}
	written := a.Written

	// Nothing changed: the issuer answers "not modified", and the file is
	// left as it is until RefreshInterval has passed.
	clock.advance(3 * time.Second)
	k.Poll(ctx)
	if f.notModified != 1 {
		t.Errorf("%d answers not modified of %d polls; want the second poll answered so", f.notModified, f.lockPolls)
	}
	if a := readAccess(t, dir); !a.Written.Equal(written) {
		t.Errorf("access.json rewritten %s after the last write with nothing changed", a.Written.Sub(written))
	}
	clock.advance(hostaccess.RefreshInterval)
	k.Poll(ctx)
	if a := readAccess(t, dir); !a.Written.Equal(clock.now()) || !a.LocksUpdated.Equal(clock.now()) {
		t.Errorf("access.json after RefreshInterval: written %s, locks_updated %s; want both now", a.Written, a.LocksUpdated)
	}
	lastHeard := clock.now()

	// The issuer goes down: the locks stay, the heartbeat goes on, and
	// status says why the locks are not updated.
	f.set(func(f *fakeIssuer) { f.down = true })
	clock.advance(hostaccess.RefreshInterval)
	k.Poll(ctx)
	a = readAccess(t, dir)
	if len(a.Locks) != 1 || !a.Written.Equal(clock.now()) || !a.LocksUpdated.Equal(lastHeard) {
		t.Errorf("access.json with the issuer down = %+v; want the last locks, written now, locks_updated %s", a, lastHeard)
	}
	if data, _ := os.ReadFile(filepath.Join(access, hostaccess.KRLFile)); !bytes.Equal(data, testKRL(t, 1)) {
		t.Errorf("revoked_keys.krl with the issuer down = %q", data)
	}
	st := k.Status(access)
	if st == nil || st.Path != access || st.Locks != 1 || st.PollError == "" || st.LocksUpdated == nil || !st.LocksUpdated.Equal(lastHeard) {
		t.Errorf("status of the access directory = %+v", st)
	}

	// A lock added reaches the file at the next poll, however recent the
	// last write.
	f.set(func(f *fakeIssuer) {
		f.down = false
		f.locks = append(f.locks, api.Lock{Bot: "ci", Reason: "stolen"})
		f.krl = testKRL(t, 2)
	})
	clock.advance(time.Second)
	k.Poll(ctx)
	if a := readAccess(t, dir); len(a.Locks) != 2 || a.Locks[1].Bot != "ci" {
		t.Errorf("locks after a lock was added = %+v", a.Locks)
	}
	if data, _ := os.ReadFile(filepath.Join(access, hostaccess.KRLFile)); !bytes.Equal(data, testKRL(t, 2)) {
		t.Errorf("revoked_keys.krl after a lock = %q", data)
	}
	if st := k.Status(access); st.PollError != "" {
		t.Errorf("poll error still shown after a good poll: %q", st.PollError)
	}

	// A new mwid that has not joined yet keeps the directory as it finds
	// it, and its heartbeat going.
	k3, clock3 := newKeeper(f, dir, false)
	clock3.advance(time.Hour)
	before := readAccess(t, dir)
	k3.Poll(ctx)
	if a := readAccess(t, dir); !a.Written.Equal(clock3.now()) || a.HostCertificate != before.HostCertificate || len(a.Locks) != 2 {
		t.Errorf("access.json from an mwid not joined yet = %+v", a)
	}

	// A new mwid, with the issuer's locks unreachable, keeps the locks of
	// the file it finds.
	f.set(func(f *fakeIssuer) { f.down = true })
	k2, _ := newKeeper(f, dir, true)
	certify(t, k2, dir)
	k2.Poll(ctx)
	if a := readAccess(t, dir); len(a.Locks) != 2 || !a.LocksUpdated.Equal(clock.now()) {
		t.Errorf("locks after a restart with the issuer down = %+v, updated %s", a.Locks, a.LocksUpdated)
	}
}

// TestKeeperForgetsDirs: a directory no longer configured is forgotten,
// and Poll asks nothing of the issuer while none is configured.
func TestKeeperForgetsDirs(t *testing.T) {
	f := &fakeIssuer{krl: testKRL(t, 1)}
	dir := t.TempDir()
	access := filepath.Join(dir, "access")
	dirs := []string{access}
	k := New(Config{
		Dirs:     func() []string { return dirs },
		Issuer:   func() Issuer { return f },
		Identity: func() *tls.Certificate { return &tls.Certificate{} },
	})
	certify(t, k, dir)
	k.Poll(context.Background())
	if k.Status(access) == nil || f.lockPolls != 1 {
		t.Fatalf("status %+v after %d polls; want the directory known after one", k.Status(access), f.lockPolls)
	}
	dirs = nil
	k.Poll(context.Background())
	if f.lockPolls != 1 {
		t.Errorf("%d polls with no access directory configured; want none", f.lockPolls-1)
	}
	dirs = []string{filepath.Join(dir, "other")}
	k.Poll(context.Background())
	if st := k.Status(access); st != nil {
		t.Errorf("status of a directory no longer configured = %+v, want nil", st)
	}
}

// TestRun runs the poll loop as the daemon does: it polls repeatedly, at
// once when a directory is certified, and stops with its context.
func TestRun(t *testing.T) {
	f := &fakeIssuer{krl: testKRL(t, 1)}
	dir := t.TempDir()
	k, _ := newKeeper(f, dir, true)
	k.now = time.Now
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		k.Run(ctx)
	}()
	certify(t, k, dir)
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

// TestRefusesNotAKRL: an answer of the issuer's KRL route that is not a
// KRL (empty, an error page, a key list) is not written as RevokedKeys,
// which sshd would read as a list of keys that revokes no one; the last
// good KRL stays, and the poll error says why.
func TestRefusesNotAKRL(t *testing.T) {
	for _, bad := range [][]byte{{}, []byte("<html>502 Bad Gateway</html>"), []byte("SSHKRL\n\x00"), testKRL(t, 2)[:40]} {
		f := &fakeIssuer{krl: testKRL(t, 1)}
		dir := t.TempDir()
		k, clock := newKeeper(f, dir, true)
		ctx := context.Background()
		certify(t, k, dir)
		k.Poll(ctx)
		f.set(func(f *fakeIssuer) { f.krl = bad })
		clock.advance(time.Second)
		k.Poll(ctx)
		if data, _ := os.ReadFile(filepath.Join(dir, "access", hostaccess.KRLFile)); !bytes.Equal(data, testKRL(t, 1)) {
			t.Errorf("answer %q: revoked_keys.krl = %q, want the last good KRL", bad, data)
		}
		if st := k.Status(filepath.Join(dir, "access")); !strings.Contains(st.PollError, "not an OpenSSH KRL") && !strings.Contains(st.PollError, "truncated") {
			t.Errorf("answer %q: poll error %q", bad, st.PollError)
		}
	}
}

// TestLockExpiryOnHostClock: a lock's expiry is moved to the host's clock,
// so that a host clock ahead of the issuer's does not lift the lock early.
func TestLockExpiryOnHostClock(t *testing.T) {
	f := &fakeIssuer{locks: []api.Lock{{Bot: "deploy", Reason: "r", Expires: time.Now().Add(30 * time.Minute)}}, krl: testKRL(t, 1)}
	dir := t.TempDir()
	k, clock := newKeeper(f, dir, true)
	clock.advance(time.Hour) // the host's clock is an hour ahead
	certify(t, k, dir)
	k.Poll(context.Background())
	a := readAccess(t, dir)
	if len(a.Locks) != 1 {
		t.Fatalf("locks %+v", a.Locks)
	}
	if exp := a.Locks[0].Expires; !exp.After(clock.now().Add(29 * time.Minute)) {
		t.Errorf("lock expires at %s on a host clock at %s; want about 30 minutes after it", exp, clock.now())
	}
}
