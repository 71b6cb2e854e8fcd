package server

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mwi-project/mwi/issuer/resource"
	"github.com/mwi-project/mwi/issuer/store"
)

// syncedLog is a log destination whose text tests read.
type syncedLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *syncedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *syncedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

const storedBot = `kind: bot
version: v1
metadata: {name: stored}
spec: {roles: [deploy]}
`

// TestSyncStoreAppliesOtherIssuersChanges checks that a poll of the store
// loads the resources that another issuer wrote, by writing them to the
// store directly, as another issuer on the same database does; that an
// unchanged store loads nothing; and that a stored set that does not load
// keeps the running set, with a log line that says why.
func TestSyncStoreAppliesOtherIssuersChanges(t *testing.T) {
	ctx := context.Background()
	s, _, _ := resourceServer(t)
	logs := &syncedLog{}
	s.log = slog.New(slog.NewTextHandler(logs, nil))
	var loads []*resource.Set
	s.loaded = func(set *resource.Set) { loads = append(loads, set) }

	s.syncStore(ctx)
	s.syncStore(ctx)
	n := len(loads)
	if _, ok := s.auth.Resources().Bot("stored"); ok {
		t.Fatal("bot stored is running before it was written")
	}

	put := store.Resource{Kind: "bot", Name: "stored", Source: storedBot, Updated: time.Now()}
	if err := s.auth.Store.PutResources(ctx, []store.Resource{put}, false); err != nil {
		t.Fatal(err)
	}
	s.syncStore(ctx)
	if _, ok := s.auth.Resources().Bot("stored"); !ok {
		t.Fatal("bot stored by another issuer is not running after a poll")
	}
	if len(loads) != n+1 {
		t.Errorf("a poll after one change loaded %d sets, want 1", len(loads)-n)
	}
	s.syncStore(ctx)
	if len(loads) != n+1 {
		t.Errorf("a poll of an unchanged store loaded a set")
	}

	// A stored bot with a role that does not exist: the set is refused.
	bad := store.Resource{Kind: "bot", Name: "bad", Source: strings.Replace(strings.Replace(storedBot, "stored", "bad", 1), "deploy", "missing", 1), Updated: time.Now()}
	if err := s.auth.Store.PutResources(ctx, []store.Resource{bad}, false); err != nil {
		t.Fatal(err)
	}
	running := s.auth.Resources()
	s.syncStore(ctx)
	if s.auth.Resources() != running {
		t.Error("a stored set that does not load replaced the running set")
	}
	if got := logs.String(); !strings.Contains(got, "rejected; keeping the previous set") || !strings.Contains(got, "missing") {
		t.Errorf("log does not say why the stored set was refused:\n%s", got)
	}

	// Removing the bad document makes the set load again.
	if err := s.auth.Store.DeleteResource(ctx, "bot", "bad"); err != nil {
		t.Fatal(err)
	}
	s.syncStore(ctx)
	if s.auth.Resources() == running {
		t.Error("the set was not loaded again once the stored documents were valid")
	}
}

// TestSyncStoreRebuildsKRL checks that a poll that finds the store
// changed makes the next KRL list the instances of locked bots again,
// rather than serving the one built before for krlRecheck: an instance
// that another issuer made is in it.
func TestSyncStoreRebuildsKRL(t *testing.T) {
	ctx := context.Background()
	s, _, _ := resourceServer(t)
	st := s.auth.Store
	if err := st.CreateInstance(ctx, store.Instance{ID: "i1", Bot: "ci", Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := st.LockBot(ctx, store.Lock{Bot: "ci", Reason: "test", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	before, _, err := s.auth.KRL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// An instance made while the lock was being added, on another
	// issuer, followed by a change of the locks there.
	if err := st.CreateInstance(ctx, store.Instance{ID: "i2", Bot: "ci", Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := st.LockInstance(ctx, store.Lock{Bot: "other", Instance: "x", Reason: "test", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.UnlockInstance(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	cached, _, err := s.auth.KRL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(cached, before) {
		t.Fatal("the KRL changed without a poll; this test no longer shows what the poll adds")
	}
	s.syncStore(ctx)
	after, _, err := s.auth.KRL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(after, before) || !bytes.Contains(after, []byte("i2")) {
		t.Error("after a poll that found the store changed, the KRL does not revoke the new instance of the locked bot")
	}
}
