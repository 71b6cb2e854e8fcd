package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

// TestPrune checks what Prune keeps and removes of each kind of record,
// on both sides of each boundary, and that pruning again removes nothing.
func TestPrune(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, _ string) {
		now := t0.Add(60 * 24 * time.Hour)
		graceEdge := now.Add(-TokenGrace)

		// Tokens: consumed, or expired unused, TokenGrace or longer ago
		// are removed; less than that, or still usable, kept.
		for _, tok := range []Token{
			token("consumed-at-edge", now.Add(time.Hour)),
			token("consumed-inside", now.Add(time.Hour)),
			token("expired-at-edge", graceEdge),
			token("expired-inside", graceEdge.Add(time.Nanosecond)),
			token("live", now.Add(time.Hour)),
		} {
			if err := s.PutToken(ctx, tok); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.ConsumeToken(ctx, "consumed-at-edge", "i1", graceEdge); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ConsumeToken(ctx, "consumed-inside", "i2", graceEdge.Add(time.Nanosecond)); err != nil {
			t.Fatal(err)
		}

		// Challenges and replay records expired at now are removed. They
		// are written at t0, so that the writes prune nothing.
		for _, c := range []struct {
			key     string
			expires time.Time
		}{{"expired", now}, {"valid", now.Add(time.Nanosecond)}} {
			if err := s.PutChallenge(ctx, c.key, "tok", c.expires, t0); err != nil {
				t.Fatal(err)
			}
			if err := s.MarkUsed(ctx, c.key, "", c.expires, t0); err != nil {
				t.Fatal(err)
			}
		}

		// Locks no longer in force at now are removed.
		locks := []func() error{
			func() error { return s.LockBot(ctx, Lock{Bot: "expired", Reason: "r", At: t0, Expires: now}) },
			func() error { return s.LockBot(ctx, Lock{Bot: "forever", Reason: "r", At: t0}) },
			func() error {
				return s.LockInstance(ctx, Lock{Bot: "b", Instance: "valid", Reason: "r", At: t0, Expires: now.Add(time.Nanosecond)})
			},
			func() error {
				return s.LockToken(ctx, Lock{Token: "expired", Reason: "r", At: t0, Expires: now.Add(-time.Hour)})
			},
		}
		for _, l := range locks {
			if err := l(); err != nil {
				t.Fatal(err)
			}
		}

		// Nodes last renewed more than NodeRetention ago are removed.
		for _, n := range []Node{
			{Instance: "old", Bot: "b", Names: []string{"old"}, Renewed: now.Add(-NodeRetention - time.Nanosecond)},
			{Instance: "at-edge", Bot: "b", Names: []string{"edge"}, Renewed: now.Add(-NodeRetention)},
		} {
			if err := s.PutNode(ctx, n); err != nil {
				t.Fatal(err)
			}
		}

		got, err := s.Prune(ctx, now)
		if err != nil {
			t.Fatalf("Prune: %v", err)
		}
		want := PruneStats{Tokens: 2, Challenges: 1, Used: 1, Locks: 2, Nodes: 1}
		if got != want {
			t.Fatalf("Prune = %+v, want %+v", got, want)
		}
		t.Logf("Prune removed %+v", got)
		if got, err := s.Prune(ctx, now); err != nil || got != (PruneStats{}) {
			t.Fatalf("Prune again = %+v, %v; want nothing removed", got, err)
		}

		toks, err := s.Tokens(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var hashes []string
		for _, tok := range toks {
			hashes = append(hashes, tok.Hash)
		}
		if want := []string{"consumed-inside", "expired-inside", "live"}; !slices.Equal(hashes, want) {
			t.Errorf("tokens kept = %q, want %q", hashes, want)
		}
		// A retried join inside the grace period still hears what
		// happened to its token.
		if _, err := s.ConsumeToken(ctx, "consumed-inside", "i3", now); !errors.Is(err, ErrTokenUsed) {
			t.Errorf("ConsumeToken(consumed-inside) = %v, want ErrTokenUsed", err)
		}
		if _, err := s.ConsumeToken(ctx, "consumed-at-edge", "i3", now); !errors.Is(err, ErrTokenUnknown) {
			t.Errorf("ConsumeToken(consumed-at-edge) = %v, want ErrTokenUnknown", err)
		}

		// Read at t0, when every record was valid: only those kept answer.
		if _, err := s.ConsumeChallenge(ctx, "expired", t0); !errors.Is(err, ErrChallengeUnknown) {
			t.Errorf("ConsumeChallenge(expired) = %v, want ErrChallengeUnknown", err)
		}
		if _, err := s.ConsumeChallenge(ctx, "valid", t0); err != nil {
			t.Errorf("ConsumeChallenge(valid): %v", err)
		}
		if err := s.MarkUsed(ctx, "expired", "", now.Add(time.Hour), t0); err != nil {
			t.Errorf("MarkUsed(expired) again: %v, want it forgotten", err)
		}
		if err := s.MarkUsed(ctx, "valid", "", now.Add(time.Hour), t0); !errors.Is(err, ErrReplay) {
			t.Errorf("MarkUsed(valid) again: %v, want ErrReplay", err)
		}
		ls, err := s.Locks(ctx, t0)
		if err != nil {
			t.Fatal(err)
		}
		var lockKeys []string
		for _, l := range ls {
			lockKeys = append(lockKeys, l.Bot+"/"+l.Instance+"/"+l.Token)
		}
		if want := []string{"forever//", "b/valid/"}; !slices.Equal(lockKeys, want) {
			t.Errorf("locks kept = %q, want %q", lockKeys, want)
		}
		nodes, err := s.Nodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(nodes) != 1 || nodes[0].Instance != "at-edge" {
			t.Errorf("nodes kept = %+v, want at-edge only", nodes)
		}
	})
}

// TestPruneBatches checks that Prune goes on past its first batch, and
// judges the records of later batches too.
func TestPruneBatches(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, _ string) {
		now := t0.Add(TokenGrace)
		const n = pruneBatch + pruneBatch/2
		for i := range n {
			tok := token(fmt.Sprintf("t%05d", i), t0) // expired TokenGrace ago
			if i%2 == 1 {
				tok.Expires = now.Add(time.Hour) // usable
			}
			if err := s.PutToken(ctx, tok); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.Prune(ctx, now)
		if err != nil || got.Tokens != n/2 {
			t.Fatalf("Prune = %+v, %v; want %d tokens removed", got, err, n/2)
		}
		if toks, err := s.Tokens(ctx); err != nil || len(toks) != n/2 {
			t.Fatalf("Tokens after Prune: %d, %v; want %d", len(toks), err, n/2)
		}
	})
}
