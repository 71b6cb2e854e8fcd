package server

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/mwi-project/mwi/issuer/store"
)

// prunes is a store that reports each round of Prune, with what it removed.
type prunes struct {
	store.Store
	rounds chan store.PruneStats
}

func (p *prunes) Prune(ctx context.Context, now time.Time) (store.PruneStats, error) {
	st, err := p.Store.Prune(ctx, now)
	p.rounds <- st
	return st, err
}

// TestPruneStoreOnTimer checks that the issuer prunes the store on its
// timer, at the authority's time, and logs the counts at info only when a
// round removed something.
func TestPruneStoreOnTimer(t *testing.T) {
	ctx := context.Background()
	s, _, _ := resourceServer(t)
	logs := &syncedLog{}
	s.log = slog.New(slog.NewTextHandler(logs, nil))
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	s.auth.Now = func() time.Time { return now }
	p := &prunes{Store: s.auth.Store, rounds: make(chan store.PruneStats, 100)}
	s.auth.Store = p
	// Unused, and expired longer than the grace period ago at the
	// authority's time (but not at the clock's).
	spent := store.Token{Hash: "spent", Bot: "ci", Created: now.Add(-3 * store.TokenGrace), Expires: now.Add(-store.TokenGrace)}
	if err := p.PutToken(ctx, spent); err != nil {
		t.Fatal(err)
	}

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.pruneStore(runCtx, time.Millisecond)
	}()
	first, second := <-p.rounds, <-p.rounds
	stop()
	<-done

	if want := (store.PruneStats{Tokens: 1}); first != want {
		t.Errorf("first round removed %+v, want %+v", first, want)
	}
	if second != (store.PruneStats{}) {
		t.Errorf("second round removed %+v, want nothing", second)
	}
	t.Logf("rounds removed %+v, then %+v", first, second)
	out := logs.String()
	if n := strings.Count(out, "pruned the store"); n != 1 {
		t.Errorf("%d log lines say the store was pruned, want 1 (for the round that removed something):\n%s", n, out)
	}
	if !strings.Contains(out, "level=INFO msg=\"pruned the store\" tokens=1 challenges=0") {
		t.Errorf("log does not count the token removed:\n%s", out)
	}
	if toks, err := p.Tokens(ctx); err != nil || len(toks) != 0 {
		t.Errorf("Tokens after pruning = %+v, %v; want none", toks, err)
	}
}
