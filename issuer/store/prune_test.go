package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
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

// TestPrunePastCorruptRecords puts a token and a lock that do not decode
// among ones to prune: Prune keeps the bad ones, names the first, and
// prunes the records after them and every other kind all the same, where
// one bad record used to stop every prune to come.
func TestPrunePastCorruptRecords(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, _ string) {
		now := t0.Add(60 * 24 * time.Hour)
		for _, h := range []string{"00aa", "ffaa"} {
			if err := s.PutToken(ctx, token(h, t0)); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.LockBot(ctx, Lock{Bot: "zz-expired", Reason: "r", At: t0, Expires: t0.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if err := s.PutChallenge(ctx, "c", "tok", t0.Add(time.Hour), t0); err != nil {
			t.Fatal(err)
		}
		corrupt(t, s, "locks", "aa-bad", "{")
		// PostgreSQL's Prune judges tokens by their columns, not their
		// documents; bbolt's decodes them.
		_, isBolt := s.(*boltStore)
		if isBolt {
			corrupt(t, s, "tokens", "55bad0123456789", "[]")
		}
		st, err := s.Prune(ctx, now)
		if err == nil || !strings.Contains(err.Error(), `"aa-bad"`) || isBolt && !strings.Contains(err.Error(), `"55bad0123456`) {
			t.Errorf("Prune error = %v, want one naming the records that do not decode", err)
		}
		if st.Tokens != 2 || st.Locks != 1 || st.Challenges != 1 {
			t.Errorf("Prune = %+v, want the 2 good tokens, the lock and the challenge removed", st)
		}
	})
}

// corrupt writes data as the record key of table (tokens or locks of
// bots) as no issuer would. A token is put first, then its document
// replaced, so that its other columns are what the schema wants.
func corrupt(t *testing.T, s Store, table, key, data string) {
	t.Helper()
	var err error
	switch s := s.(type) {
	case *boltStore:
		bucket := map[string][]byte{"tokens": bucketTokens, "locks": bucketLocks}[table]
		err = s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put([]byte(key), []byte(data)) })
	case *pgStore:
		q := `INSERT INTO locks (kind, key, doc) VALUES (0, $1, $2)`
		if table == "tokens" {
			if err := s.PutToken(context.Background(), token(key, t0)); err != nil {
				t.Fatal(err)
			}
			q = `UPDATE tokens SET doc = $2 WHERE hash = $1`
		}
		_, err = s.pool.Exec(context.Background(), q, key, []byte(data))
	}
	if err != nil {
		t.Fatal(err)
	}
}
