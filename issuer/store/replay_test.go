package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestMarkUsed(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, _ string) {
		exp := t0.Add(5 * time.Minute)
		if err := s.MarkUsed(ctx, "jti:a", "", exp, t0); err != nil {
			t.Fatalf("first MarkUsed: %v", err)
		}
		for _, now := range []time.Time{t0, t0.Add(time.Minute), exp.Add(-time.Nanosecond)} {
			if err := s.MarkUsed(ctx, "jti:a", "", exp.Add(time.Hour), now); !errors.Is(err, ErrReplay) {
				t.Errorf("MarkUsed again at %v: error = %v, want ErrReplay", now, err)
			}
		}
		// Other keys are independent.
		if err := s.MarkUsed(ctx, "jti:b", "", exp, t0); err != nil {
			t.Fatalf("MarkUsed(b): %v", err)
		}
		// At its expiry the record is gone, and the key can be recorded again.
		if err := s.MarkUsed(ctx, "jti:a", "", exp.Add(time.Hour), exp); err != nil {
			t.Fatalf("MarkUsed at expiry: %v", err)
		}
		if err := s.MarkUsed(ctx, "jti:a", "", exp.Add(2*time.Hour), exp.Add(time.Minute)); !errors.Is(err, ErrReplay) {
			t.Errorf("MarkUsed after re-recording: error = %v, want ErrReplay", err)
		}
	})
}

// count returns the number of keys in the named bucket. In PostgreSQL a
// table stands for both a bucket and its expiry index.
func count(t *testing.T, s Store, bucket []byte) int {
	t.Helper()
	n := 0
	var err error
	switch s := s.(type) {
	case *boltStore:
		err = s.db.View(func(tx *bolt.Tx) error {
			n = tx.Bucket(bucket).Stats().KeyN
			return nil
		})
	case *pgStore:
		table := map[string]string{
			string(bucketUsed): "used", string(bucketUsedExpiry): "used",
			string(bucketChallenges): "challenges", string(bucketChallengesExpiry): "challenges",
		}[string(bucket)]
		err = s.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n)
	}
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestMarkUsedPrunes(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, _ string) {
		for i := range 50 {
			if err := s.MarkUsed(ctx, fmt.Sprint("old-", i), "", t0.Add(time.Duration(i+1)*time.Second), t0); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.MarkUsed(ctx, "late", "", t0.Add(time.Hour), t0); err != nil {
			t.Fatal(err)
		}
		if n, m := count(t, s, bucketUsed), count(t, s, bucketUsedExpiry); n != 51 || m != 51 {
			t.Fatalf("before pruning: %d records, %d index entries; want 51", n, m)
		}
		// A write at t0+25s removes the 25 records that expired by then
		// (expiries t0+1s .. t0+25s), and adds one.
		if err := s.MarkUsed(ctx, "new", "", t0.Add(time.Hour), t0.Add(25*time.Second)); err != nil {
			t.Fatal(err)
		}
		if n, m := count(t, s, bucketUsed), count(t, s, bucketUsedExpiry); n != 27 || m != 27 {
			t.Errorf("after pruning: %d records, %d index entries; want 27", n, m)
		}
		if err := s.MarkUsed(ctx, "old-30", "", t0.Add(time.Hour), t0.Add(25*time.Second)); !errors.Is(err, ErrReplay) {
			t.Errorf("an unexpired record was pruned: %v", err)
		}
		// Re-recording an expired key leaves one index entry for it.
		if err := s.MarkUsed(ctx, "new", "", t0.Add(3*time.Hour), t0.Add(2*time.Hour)); err != nil {
			t.Fatal(err)
		}
		if n, m := count(t, s, bucketUsed), count(t, s, bucketUsedExpiry); n != 1 || m != 1 {
			t.Errorf("after everything expired: %d records, %d index entries; want 1", n, m)
		}
	})
}

func TestMarkUsedConcurrent(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, _ string) {
		var wg sync.WaitGroup
		var ok, replays atomic.Int32
		for range 16 {
			wg.Go(func() {
				switch err := s.MarkUsed(ctx, "jti:race", "", t0.Add(time.Hour), t0); {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, ErrReplay):
					replays.Add(1)
				default:
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if ok.Load() != 1 || replays.Load() != 15 {
			t.Errorf("%d accepted and %d replays, want 1 and 15", ok.Load(), replays.Load())
		}
	})
}

func TestChallenges(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, path string) {
		exp := t0.Add(time.Minute)
		if err := s.PutChallenge(ctx, "c1", "build-01", exp, t0); err != nil {
			t.Fatalf("PutChallenge: %v", err)
		}
		if err := s.PutChallenge(ctx, "c1", "other", exp, t0); !errors.Is(err, ErrExists) {
			t.Errorf("PutChallenge again: error = %v, want ErrExists", err)
		}
		if err := s.PutChallenge(ctx, "c2", "build-02", exp, t0); err != nil {
			t.Fatal(err)
		}
		if err := s.PutChallenge(ctx, "c3", "build-03", exp, t0); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ConsumeChallenge(ctx, "never", t0); !errors.Is(err, ErrChallengeUnknown) {
			t.Errorf("unknown challenge: error = %v", err)
		}
		name, err := s.ConsumeChallenge(ctx, "c1", t0.Add(30*time.Second))
		if err != nil || name != "build-01" {
			t.Fatalf("ConsumeChallenge(c1) = %q, %v", name, err)
		}
		if _, err := s.ConsumeChallenge(ctx, "c1", t0.Add(30*time.Second)); !errors.Is(err, ErrChallengeUnknown) {
			t.Errorf("reused challenge: error = %v, want ErrChallengeUnknown", err)
		}
		// An expired challenge is refused, and removed.
		if _, err := s.ConsumeChallenge(ctx, "c2", exp); !errors.Is(err, ErrChallengeUnknown) {
			t.Errorf("expired challenge: error = %v, want ErrChallengeUnknown", err)
		}
		if n := count(t, s, bucketChallenges); n != 1 {
			t.Errorf("%d challenges stored, want 1 (c3)", n)
		}
		// Challenges survive a restart: any issuer on the store can consume
		// them.
		s.Close()
		s2, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer s2.Close()
		// A new challenge prunes the expired c3.
		if err := s2.PutChallenge(ctx, "c4", "build-04", t0.Add(time.Hour), exp); err != nil {
			t.Fatal(err)
		}
		if n, m := count(t, s2, bucketChallenges), count(t, s2, bucketChallengesExpiry); n != 1 || m != 1 {
			t.Errorf("after pruning: %d challenges, %d index entries; want 1", n, m)
		}
		if name, err := s2.ConsumeChallenge(ctx, "c4", exp); err != nil || name != "build-04" {
			t.Errorf("ConsumeChallenge(c4) after reopening = %q, %v", name, err)
		}
	})
}

func TestChallengeConsumedOnce(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, _ string) {
		if err := s.PutChallenge(ctx, "c", "tok", t0.Add(time.Minute), t0); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var ok atomic.Int32
		for range 16 {
			wg.Go(func() {
				if _, err := s.ConsumeChallenge(ctx, "c", t0); err == nil {
					ok.Add(1)
				} else if !errors.Is(err, ErrChallengeUnknown) {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if ok.Load() != 1 {
			t.Errorf("challenge consumed %d times, want once", ok.Load())
		}
	})
}

func TestInstanceJoinMethod(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, _ string) {
		in := Instance{ID: "gh", Bot: "ci", Generation: 1, Created: t0, JoinMethod: "github", TokenName: "github-ci"}
		if err := s.CreateInstance(ctx, in); err != nil {
			t.Fatal(err)
		}
		got, err := s.Instance(ctx, "gh")
		if err != nil || got != in || got.Method() != "github" {
			t.Errorf("Instance(gh) = %+v, %v", got, err)
		}
		advanced, err := s.AdvanceGeneration(ctx, "gh", 1, "", t0.Add(time.Minute))
		if err != nil || advanced.JoinMethod != "github" || advanced.TokenName != "github-ci" {
			t.Errorf("AdvanceGeneration lost the join method: %+v, %v", advanced, err)
		}
		// A record written before join methods existed counts as "token".
		// Only bbolt files can hold one: the PostgreSQL store came later.
		bs, ok := s.(*boltStore)
		if !ok {
			return
		}
		old, _ := json.Marshal(map[string]any{"id": "old", "bot": "ci", "generation": 3, "created": t0})
		err = bs.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketInstances).Put([]byte("old"), old) })
		if err != nil {
			t.Fatal(err)
		}
		got, err = s.Instance(ctx, "old")
		if err != nil || got.JoinMethod != "" || got.Method() != "token" || got.Generation != 3 {
			t.Errorf("old instance = %+v (method %q), %v", got, got.Method(), err)
		}
	})
}

// TestMarkUsedOwner checks that the instance that used a key may use it
// again, and no one else may.
func TestMarkUsedOwner(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, _ string) {
		exp := t0.Add(time.Hour)
		if err := s.MarkUsed(ctx, "jti:k", "inst-a", exp, t0); err != nil {
			t.Fatal(err)
		}
		if err := s.MarkUsed(ctx, "jti:k", "inst-a", exp, t0.Add(time.Minute)); err != nil {
			t.Errorf("the same instance again: %v, want nil", err)
		}
		for _, owner := range []string{"inst-b", ""} {
			if err := s.MarkUsed(ctx, "jti:k", owner, exp, t0.Add(time.Minute)); !errors.Is(err, ErrReplay) {
				t.Errorf("owner %q: %v, want ErrReplay", owner, err)
			}
		}
	})
}
