package authority_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/issuer/audit"
	"github.com/mwi-project/mwi/issuer/ca"
	"github.com/mwi-project/mwi/issuer/store"
)

// lockReads is the real store counting its lock lookups.
type lockReads struct {
	store.Store
	mu    sync.Mutex
	reads int
}

func (s *lockReads) count() {
	s.mu.Lock()
	s.reads++
	s.mu.Unlock()
}

func (s *lockReads) take() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.reads
	s.reads = 0
	return n
}

func (s *lockReads) BotLock(ctx context.Context, bot string, now time.Time) (store.Lock, bool, error) {
	s.count()
	return s.Store.BotLock(ctx, bot, now)
}

func (s *lockReads) InstanceLock(ctx context.Context, id string, now time.Time) (store.Lock, bool, error) {
	s.count()
	return s.Store.InstanceLock(ctx, id, now)
}

func (s *lockReads) Locks(ctx context.Context, now time.Time) ([]store.Lock, error) {
	s.count()
	return s.Store.Locks(ctx, now)
}

// TestCacheLocks checks that with CacheLocks renewals read the locks from
// the store once, not twice each, and that a lock still refuses: at once
// when written through the authority, by an operator or by a copied
// identity caught, and after LocksChanged when written by another issuer.
func TestCacheLocks(t *testing.T) {
	e := newEnv(t)
	reads := &lockReads{Store: e.store}
	e.auth.Store = reads
	e.auth.CacheLocks = true
	ctx := context.Background()
	tok := e.token(t, "ci")
	reads.take()
	creds := e.join(t, tok)
	id := ca.Identity{Bot: "ci", Instance: creds.Instance, Generation: creds.Generation}
	for range 5 {
		c, err := e.renew(t, id)
		if err != nil {
			t.Fatal(err)
		}
		id.Generation = c.Generation
	}
	if n := reads.take(); n != 1 {
		t.Errorf("a join and 5 renewals read the locks %d times; want once", n)
	}

	// An operator's lock, through the authority.
	if _, err := e.auth.AddLock(ctx, api.LockTarget{Bot: "ci"}, "maintenance", 0); err != nil {
		t.Fatal(err)
	}
	offset := e.audit.Len()
	_, err := e.renew(t, id)
	e.expectDenied(t, err, offset, audit.EventRenew, api.CodeBotLocked, http.StatusForbidden)
	if _, err := e.auth.RemoveLock(ctx, api.LockTarget{Bot: "ci"}); err != nil {
		t.Fatal(err)
	}
	c, err := e.renew(t, id)
	if err != nil {
		t.Fatalf("renewal after the unlock: %v", err)
	}
	id.Generation = c.Generation

	// Another issuer's lock: seen after LocksChanged, as the server's poll
	// calls it when the store counts the change. Until then the store
	// itself refuses a renewal of the locked instance.
	other := store.Lock{Bot: "ci", Instance: id.Instance, Reason: "from another issuer", At: e.now}
	if err := e.store.LockInstance(ctx, other); err != nil {
		t.Fatal(err)
	}
	offset = e.audit.Len()
	_, err = e.renew(t, id)
	e.expectDenied(t, err, offset, audit.EventRenew, api.CodeInstanceLocked, http.StatusForbidden)
	e.auth.LocksChanged()
	if _, _, err := e.store.UnlockInstance(ctx, id.Instance); err != nil {
		t.Fatal(err)
	}
	if err := e.store.LockBot(ctx, store.Lock{Bot: "ci", Reason: "from another issuer", At: e.now}); err != nil {
		t.Fatal(err)
	}
	e.auth.LocksChanged()
	offset = e.audit.Len()
	_, err = e.renew(t, id)
	e.expectDenied(t, err, offset, audit.EventRenew, api.CodeBotLocked, http.StatusForbidden)
	if _, _, err := e.store.UnlockBot(ctx, "ci"); err != nil {
		t.Fatal(err)
	}
	e.auth.LocksChanged()

	// A copied identity caught locks its instance: the copy's next
	// renewal is refused by the lock set, before the store is asked.
	stale := id
	c, err = e.renew(t, id)
	if err != nil {
		t.Fatal(err)
	}
	id.Generation = c.Generation
	if _, err := e.renew(t, stale); err == nil {
		t.Fatal("a stale generation renewed")
	}
	reads.take()
	offset = e.audit.Len()
	_, err = e.renew(t, id)
	e.expectDenied(t, err, offset, audit.EventRenew, api.CodeInstanceLocked, http.StatusForbidden)
	if n := reads.take(); n != 1 {
		t.Errorf("the renewal after a copy was caught read the locks %d times; want once, the set loaded again", n)
	}
}
