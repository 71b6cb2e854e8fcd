package authority_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/fault"
	"github.com/mwi-project/mwi/issuer/authority"
	"github.com/mwi-project/mwi/issuer/ca"
	"github.com/mwi-project/mwi/issuer/join"
	"github.com/mwi-project/mwi/issuer/store"
)

// writeCounter is the real store counting the calls that write, so that a
// test can tell how many transactions a request made.
type writeCounter struct {
	store.Store
	mu     sync.Mutex
	writes []string
}

func (s *writeCounter) count(name string) {
	s.mu.Lock()
	s.writes = append(s.writes, name)
	s.mu.Unlock()
}

func (s *writeCounter) take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.writes
	s.writes = nil
	return w
}

func (s *writeCounter) ConsumeToken(ctx context.Context, hash, instance string, now time.Time) (store.Token, error) {
	s.count("ConsumeToken")
	return s.Store.ConsumeToken(ctx, hash, instance, now)
}

func (s *writeCounter) CreateInstance(ctx context.Context, in store.Instance) error {
	s.count("CreateInstance")
	return s.Store.CreateInstance(ctx, in)
}

func (s *writeCounter) AdvanceGeneration(ctx context.Context, id string, presented uint64, key string, now time.Time) (store.Instance, error) {
	s.count("AdvanceGeneration")
	return s.Store.AdvanceGeneration(ctx, id, presented, key, now)
}

func (s *writeCounter) MarkUsed(ctx context.Context, key, owner string, expires, now time.Time) error {
	s.count("MarkUsed")
	return s.Store.MarkUsed(ctx, key, owner, expires, now)
}

func (s *writeCounter) PutNode(ctx context.Context, n store.Node) error {
	s.count("PutNode")
	return s.Store.PutNode(ctx, n)
}

func (s *writeCounter) LockInstance(ctx context.Context, l store.Lock) error {
	s.count("LockInstance")
	return s.Store.LockInstance(ctx, l)
}

func (s *writeCounter) Join(ctx context.Context, w store.JoinWrite) (store.Instance, error) {
	s.count("Join")
	return s.Store.Join(ctx, w)
}

func (s *writeCounter) Renew(ctx context.Context, w store.RenewWrite) (store.Instance, error) {
	s.count("Renew")
	return s.Store.Renew(ctx, w)
}

// TestJoinAndRenewAreOneWrite checks that a host's join, its renewal and a
// stale renewal each write through exactly one store transaction, which
// is all or nothing: the token, the instance and the node of a join; the
// generation and the node of a renewal; the lock of a copy.
func TestJoinAndRenewAreOneWrite(t *testing.T) {
	e := newEnv(t)
	e.auth.SetResources(loadResources(t, kubeResourcesYAML(keyHostYAML)))
	counter := &writeCounter{Store: e.store}
	e.auth.Store = counter
	hostPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hostKey, err := ssh.NewPublicKey(hostPub)
	if err != nil {
		t.Fatal(err)
	}
	hosts := []api.HostKeyRequest{{PublicKey: string(ssh.MarshalAuthorizedKey(hostKey)), Names: []string{"build-01.example.com"}}}
	ctx := context.Background()
	tok := e.token(t, "keyhost")
	counter.take()

	creds, err := e.auth.Join(ctx, api.JoinRequest{
		JoinMethod: api.JoinMethodToken, Token: tok, Keys: newKeys(t).pub, TTLSeconds: 600, HostKeys: hosts,
	}, nil, "192.0.2.1:1")
	if err != nil {
		t.Fatal(err)
	}
	if w := counter.take(); len(w) != 1 || w[0] != "Join" {
		t.Errorf("a host's join wrote through %v; want one Join", w)
	}
	nodes, err := e.store.Nodes(ctx)
	if err != nil || len(nodes) != 1 || nodes[0].Instance != creds.Instance {
		t.Fatalf("nodes after the join = %+v, %v; want the host", nodes, err)
	}

	id := ca.Identity{Bot: "keyhost", Instance: creds.Instance, Generation: 1}
	if _, err := e.auth.Renew(ctx, id, api.RenewRequest{Keys: newKeys(t).pub, TTLSeconds: 600, HostKeys: hosts}, "192.0.2.1:1"); err != nil {
		t.Fatal(err)
	}
	if w := counter.take(); len(w) != 1 || w[0] != "Renew" {
		t.Errorf("a host's renewal wrote through %v; want one Renew", w)
	}

	// The stale copy: its lock is written in the same transaction.
	if _, err := e.auth.Renew(ctx, id, api.RenewRequest{Keys: newKeys(t).pub, TTLSeconds: 600, HostKeys: hosts}, "192.0.2.1:1"); err == nil {
		t.Fatal("a stale renewal succeeded")
	}
	if w := counter.take(); len(w) != 1 || w[0] != "Renew" {
		t.Errorf("a stale renewal wrote through %v; want one Renew", w)
	}
	if _, locked, err := e.store.InstanceLock(ctx, creds.Instance, e.now); err != nil || !locked {
		t.Errorf("the stale renewal did not lock the instance: %v, %v", locked, err)
	}
}

// clockStore is the real store with a clock of its own, as a database's.
type clockStore struct {
	store.Store
	now time.Time
}

func (s clockStore) Now(context.Context) (time.Time, error) { return s.now, nil }

// TestValidityFromTheStoresClock checks that, without a clock of its own,
// the authority takes the times it signs with from the store.
func TestValidityFromTheStoresClock(t *testing.T) {
	e := newEnv(t)
	tok := e.token(t, "ci")
	dbNow := e.now.Add(30 * time.Minute).Truncate(time.Second)
	e.auth.Now = nil
	e.auth.Store = clockStore{Store: e.store, now: dbNow}
	creds := e.join(t, tok)
	if want := dbNow.Add(600 * time.Second); !creds.Expires.Equal(want) {
		t.Errorf("credentials expire at %v, want %v: 600 s after the store's now", creds.Expires, want)
	}
	in, err := e.store.Instance(context.Background(), creds.Instance)
	if err != nil {
		t.Fatal(err)
	}
	if !in.Created.Equal(dbNow) {
		t.Errorf("instance created at %v, want the store's now %v", in.Created, dbNow)
	}
}

// brokenClock is the real store, but for its clock, which fails as a
// database's does when the query that reads it gets no answer.
type brokenClock struct{ store.Store }

func (brokenClock) Now(context.Context) (time.Time, error) {
	return time.Time{}, fmt.Errorf("the database's clock: %w", store.ErrUnavailable)
}

// TestNoClockNoDecision checks that when the store cannot tell its time,
// nothing that depends on the time is decided with another clock: the
// local clock of a replica may be far from the database's, and a store
// that answers the next query would take its writes. Each call is
// refused as the store being unavailable (503, which the caller may
// retry), and nothing is written.
func TestNoClockNoDecision(t *testing.T) {
	e := newEnv(t)
	tok := e.token(t, "ci")
	creds := e.join(t, e.token(t, "ci"))
	id := ca.Identity{Bot: "ci", Instance: creds.Instance, Generation: 1}
	e.auth.Now = nil
	e.auth.Store = brokenClock{e.store}
	ctx := context.Background()

	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"join", func() error {
			_, err := e.auth.Join(ctx, api.JoinRequest{JoinMethod: api.JoinMethodToken, Token: tok, Keys: newKeys(t).pub, TTLSeconds: 600}, nil, "192.0.2.1:1234")
			return err
		}},
		{"renew", func() error { _, err := e.renew(t, id); return err }},
		{"create token", func() error { _, err := e.auth.CreateToken(ctx, "ci", time.Hour); return err }},
		{"lock", func() error {
			_, err := e.auth.AddLock(ctx, api.LockTarget{Bot: "ci"}, "test", time.Hour)
			return err
		}},
		{"locks", func() error { _, err := e.auth.Locks(ctx); return err }},
		{"lock list", func() error { _, _, err := e.auth.LockList(ctx); return err }},
		{"krl", func() error { _, _, err := e.auth.KRL(ctx); return err }},
		{"clock", func() error { _, err := e.auth.Clock(ctx); return err }},
		{"challenge", func() error {
			_, err := e.auth.Challenge(ctx, api.ChallengeRequest{TokenName: "any"}, nil, "192.0.2.1:1234")
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, store.ErrUnavailable) {
				t.Fatalf("err = %v, want one wrapping store.ErrUnavailable (503 store_unavailable)", err)
			}
		})
	}
	// Nothing was written: the token is unused, the generation has not
	// moved, no lock was put.
	if _, err := e.store.Token(ctx, authority.HashToken(tok), e.now); err != nil {
		t.Errorf("the token of the refused join: %v, want it unused", err)
	}
	if in, err := e.store.Instance(ctx, creds.Instance); err != nil || in.Generation != 1 {
		t.Errorf("instance after the refused renewal: generation %d, %v; want 1", in.Generation, err)
	}
	if locks, err := e.store.Locks(ctx, e.now); err != nil || len(locks) != 0 {
		t.Errorf("locks after the refused lock: %v, %v; want none", locks, err)
	}
}

// lockRacer is the real store, with a lock put just before each Join and
// Renew reaches it: after the authority checked the locks, before the
// store commits.
type lockRacer struct {
	store.Store
	lock func()
}

func (s lockRacer) Join(ctx context.Context, w store.JoinWrite) (store.Instance, error) {
	s.lock()
	return s.Store.Join(ctx, w)
}

func (s lockRacer) Renew(ctx context.Context, w store.RenewWrite) (store.Instance, error) {
	s.lock()
	return s.Store.Renew(ctx, w)
}

// TestLockBetweenCheckAndCommit checks that a lock recorded after the
// authority looked for locks, but before the join or renewal commits,
// still refuses it: the store checks the bot's and the token's locks in
// the transaction that writes, as it checks the instance's, and nothing
// is written.
func TestLockBetweenCheckAndCommit(t *testing.T) {
	ctx := context.Background()
	botLock := func(e *env) func() {
		return func() {
			if err := e.store.LockBot(ctx, store.Lock{Bot: "ci", Reason: "compromised", At: e.now}); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Run("renew, bot lock", func(t *testing.T) {
		e := newEnv(t)
		creds := e.join(t, e.token(t, "ci"))
		e.auth.Store = lockRacer{e.store, botLock(e)}
		_, err := e.renew(t, ca.Identity{Bot: "ci", Instance: creds.Instance, Generation: 1})
		expectCode(t, err, api.CodeBotLocked)
		if in, err := e.store.Instance(ctx, creds.Instance); err != nil || in.Generation != 1 {
			t.Errorf("instance after the refused renewal: generation %d, %v; want 1", in.Generation, err)
		}
	})
	t.Run("token join, bot lock", func(t *testing.T) {
		e := newEnv(t)
		tok := e.token(t, "ci")
		e.auth.Store = lockRacer{e.store, botLock(e)}
		_, err := e.auth.Join(ctx, api.JoinRequest{JoinMethod: api.JoinMethodToken, Token: tok, Keys: newKeys(t).pub, TTLSeconds: 600}, nil, "192.0.2.1:1234")
		expectCode(t, err, api.CodeBotLocked)
		if _, err := e.store.Token(ctx, authority.HashToken(tok), e.now); err != nil {
			t.Errorf("the token of the refused join: %v, want it unused", err)
		}
	})
	t.Run("bound key pair join, token lock", func(t *testing.T) {
		e := newAttestEnv(t)
		req := e.keypairReq(t, "build-01", e.signer)
		e.auth.Store = lockRacer{e.store, func() {
			if err := e.store.LockToken(ctx, store.Lock{Token: "build-01", Reason: "compromised", At: e.now}); err != nil {
				t.Fatal(err)
			}
		}}
		_, err := e.auth.Join(ctx, req, nil, "192.0.2.1:1234")
		expectCode(t, err, api.CodeTokenLocked)
	})
	t.Run("bound key pair join, bot lock", func(t *testing.T) {
		e := newAttestEnv(t)
		req := e.keypairReq(t, "build-01", e.signer)
		e.auth.Store = lockRacer{e.store, botLock(e.env)}
		_, err := e.auth.Join(ctx, req, nil, "192.0.2.1:1234")
		expectCode(t, err, api.CodeBotLocked)
	})
}

func expectCode(t *testing.T, err error, code string) {
	t.Helper()
	fe, ok := fault.As(err)
	if !ok || fe.Code != code {
		t.Fatalf("err = %v, want a refusal %s", err, code)
	}
}

// TestIDTokenAtTheStoresClock checks that an ID token is judged at the
// store's clock, as the replay record that keeps it from being used twice
// is kept and pruned by it: on a replica whose clock is behind the
// database's, an ID token expired (its replay record perhaps pruned
// already) must not be taken.
func TestIDTokenAtTheStoresClock(t *testing.T) {
	e := newAttestEnv(t)
	e.auth.IDTokens.Now = nil // the verifier's own clock is the local one
	e.auth.Now = nil
	e.auth.Store = clockStore{Store: e.store, now: time.Now().Add(time.Hour)}
	// Issued now, for five minutes, by the local clock.
	idToken := e.p.Mint(e.p.GitHubClaims("mwi", "org/repo"))
	offset := e.audit.Len()
	_, err := e.auth.Join(context.Background(), joinReq(t, api.JoinMethodGitHub, "gh", idToken), nil, "r")
	e.expectJoinDenied(t, err, offset, "gh", join.CheckExpired)
}

// instanceReads is the real store counting its Instance lookups.
type instanceReads struct {
	store.Store
	mu    sync.Mutex
	reads int
}

func (s *instanceReads) Instance(ctx context.Context, id string) (store.Instance, error) {
	s.mu.Lock()
	s.reads++
	s.mu.Unlock()
	return s.Store.Instance(ctx, id)
}

// TestRenewChecksInstanceInItsTransaction checks that a renewal checks
// its instance (its bot, its join method) in the transaction that renews
// it, rather than reading it in one of its own first.
func TestRenewChecksInstanceInItsTransaction(t *testing.T) {
	e := newEnv(t)
	reads := &instanceReads{Store: e.store}
	e.auth.Store = reads
	creds := e.join(t, e.token(t, "ci"))
	id := ca.Identity{Bot: "ci", Instance: creds.Instance, Generation: creds.Generation}
	if _, err := e.renew(t, id); err != nil {
		t.Fatal(err)
	}
	if reads.reads != 0 {
		t.Errorf("a renewal read its instance %d times outside its transaction; want none", reads.reads)
	}
}
