package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func token(hash string, expires time.Time) Token {
	return Token{Hash: hash, Bot: "bot-" + hash, Created: t0, Expires: expires}
}

func TestTokenLifecycle(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, _ string) {

		for _, tok := range []Token{
			token("fresh", t0.Add(time.Hour)),
			token("stale", t0.Add(time.Hour)),
			token("exact", t0.Add(time.Hour)),
			token("replayed", t0.Add(time.Hour)),
		} {
			if err := s.PutToken(ctx, tok); err != nil {
				t.Fatalf("PutToken(%s): %v", tok.Hash, err)
			}
		}
		if err := s.PutToken(ctx, token("fresh", t0.Add(2*time.Hour))); !errors.Is(err, ErrExists) {
			t.Fatalf("duplicate PutToken: got %v, want ErrExists", err)
		}

		got, err := s.ConsumeToken(ctx, "fresh", "inst-1", t0.Add(time.Minute))
		if err != nil {
			t.Fatalf("ConsumeToken(fresh): %v", err)
		}
		want := token("fresh", t0.Add(time.Hour))
		want.ConsumedAt = t0.Add(time.Minute)
		want.ConsumedBy = "inst-1"
		if got != want {
			t.Fatalf("ConsumeToken(fresh) = %+v, want %+v", got, want)
		}
		if _, err := s.ConsumeToken(ctx, "replayed", "inst-2", t0.Add(time.Minute)); err != nil {
			t.Fatalf("ConsumeToken(replayed): %v", err)
		}

		tests := []struct {
			name string
			hash string
			now  time.Time
			want error
		}{
			{"consumed again", "fresh", t0.Add(2 * time.Minute), ErrTokenUsed},
			{"unknown", "nope", t0, ErrTokenUnknown},
			{"expired", "stale", t0.Add(2 * time.Hour), ErrTokenExpired},
			{"expires exactly now", "exact", t0.Add(time.Hour), ErrTokenExpired},
			{"used then expired", "replayed", t0.Add(2 * time.Hour), ErrTokenUsed},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got, err := s.ConsumeToken(ctx, tt.hash, "inst-x", tt.now)
				if !errors.Is(err, tt.want) {
					t.Fatalf("ConsumeToken(%s) error = %v, want %v", tt.hash, err, tt.want)
				}
				if got != (Token{}) {
					t.Errorf("ConsumeToken(%s) returned %+v with error, want zero Token", tt.hash, got)
				}
			})
		}

		// Failed consumes must not have overwritten the first consumer.
		if _, err := s.ConsumeToken(ctx, "fresh", "inst-3", t0); err == nil ||
			!strings.Contains(err.Error(), `"inst-1"`) {
			t.Errorf("ConsumeToken(fresh) after failures: error %v, want it to name inst-1", err)
		}
	})
}

func TestPersistence(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, path string) {
		if err := s.PutToken(ctx, token("a", t0.Add(time.Hour))); err != nil {
			t.Fatal(err)
		}
		if err := s.PutToken(ctx, token("b", t0.Add(time.Hour))); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ConsumeToken(ctx, "a", "inst-1", t0); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateInstance(ctx, Instance{ID: "inst-1", Bot: "bot-a", Created: t0}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AdvanceGeneration(ctx, "inst-1", 0, "", t0.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if err := s.LockBot(ctx, Lock{Bot: "bot-a", Reason: "replay", At: t0}); err != nil {
			t.Fatal(err)
		}
		if err := s.LockInstance(ctx, Lock{Bot: "bot-a", Instance: "inst-1", Reason: "copied", At: t0}); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}

		s, err := Open(path)
		if err != nil {
			t.Fatalf("reopen: %v", err)
		}
		defer s.Close()

		if _, err := s.ConsumeToken(ctx, "a", "inst-2", t0); !errors.Is(err, ErrTokenUsed) {
			t.Errorf("consumed token after reopen: got %v, want ErrTokenUsed", err)
		}
		if _, err := s.ConsumeToken(ctx, "b", "inst-2", t0); err != nil {
			t.Errorf("unconsumed token after reopen: %v", err)
		}
		in, err := s.Instance(ctx, "inst-1")
		if err != nil {
			t.Fatalf("Instance after reopen: %v", err)
		}
		want := Instance{ID: "inst-1", Bot: "bot-a", Generation: 1, Created: t0, Renewed: t0.Add(time.Minute)}
		if in != want {
			t.Errorf("Instance after reopen = %+v, want %+v", in, want)
		}
		if _, ok, err := s.BotLock(ctx, "bot-a", t0); err != nil || !ok {
			t.Errorf("BotLock after reopen = %v, %v; want locked", ok, err)
		}
		if _, ok, err := s.InstanceLock(ctx, "inst-1", t0); err != nil || !ok {
			t.Errorf("InstanceLock after reopen = %v, %v; want locked", ok, err)
		}
	})
}

func TestConcurrentConsume(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, _ string) {
		if err := s.PutToken(ctx, token("once", t0.Add(time.Hour))); err != nil {
			t.Fatal(err)
		}

		const n = 32
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				_, errs[i] = s.ConsumeToken(ctx, "once", fmt.Sprintf("inst-%d", i), t0)
			})
		}
		wg.Wait()

		ok := 0
		for i, err := range errs {
			switch {
			case err == nil:
				ok++
			case !errors.Is(err, ErrTokenUsed):
				t.Errorf("goroutine %d: got %v, want nil or ErrTokenUsed", i, err)
			}
		}
		if ok != 1 {
			t.Fatalf("%d of %d concurrent consumes succeeded, want exactly 1", ok, n)
		}
	})
}

func TestConcurrentAdvance(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, _ string) {
		if err := s.CreateInstance(ctx, Instance{ID: "inst", Bot: "bot", Generation: 5, Created: t0}); err != nil {
			t.Fatal(err)
		}

		const n = 16
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				_, errs[i] = s.AdvanceGeneration(ctx, "inst", 5, "", t0)
			})
		}
		wg.Wait()

		ok := 0
		for i, err := range errs {
			switch {
			case err == nil:
				ok++
			case !errors.Is(err, ErrGenerationMismatch):
				t.Errorf("goroutine %d: got %v, want nil or ErrGenerationMismatch", i, err)
			}
		}
		if ok != 1 {
			t.Fatalf("%d of %d concurrent advances succeeded, want exactly 1", ok, n)
		}
		in, err := s.Instance(ctx, "inst")
		if err != nil {
			t.Fatal(err)
		}
		if in.Generation != 6 {
			t.Fatalf("generation after concurrent advances = %d, want 6", in.Generation)
		}
	})
}

func TestGeneration(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, _ string) {
		created := Instance{ID: "inst", Bot: "bot", Created: t0}
		if err := s.CreateInstance(ctx, created); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateInstance(ctx, created); !errors.Is(err, ErrExists) {
			t.Fatalf("duplicate CreateInstance: got %v, want ErrExists", err)
		}

		for gen := range uint64(2) {
			now := t0.Add(time.Duration(gen+1) * time.Hour)
			got, err := s.AdvanceGeneration(ctx, "inst", gen, "", now)
			if err != nil {
				t.Fatalf("AdvanceGeneration(%d): %v", gen, err)
			}
			if got.Generation != gen+1 || !got.Renewed.Equal(now) {
				t.Fatalf("AdvanceGeneration(%d) = %+v, want generation %d renewed %v", gen, got, gen+1, now)
			}
		}

		stored := Instance{ID: "inst", Bot: "bot", Generation: 2, Created: t0, Renewed: t0.Add(2 * time.Hour)}
		got, err := s.AdvanceGeneration(ctx, "inst", 1, "", t0.Add(3*time.Hour))
		if !errors.Is(err, ErrGenerationMismatch) {
			t.Fatalf("stale AdvanceGeneration: got %v, want ErrGenerationMismatch", err)
		}
		if msg := err.Error(); !strings.Contains(msg, "presented generation 1") || !strings.Contains(msg, "stored generation 2") {
			t.Errorf("mismatch error %q does not say presented 1 and stored 2", msg)
		}
		if got != stored {
			t.Errorf("stale AdvanceGeneration returned %+v, want stored %+v", got, stored)
		}
		if in, err := s.Instance(ctx, "inst"); err != nil || in != stored {
			t.Errorf("Instance after mismatch = %+v, %v; want unchanged %+v", in, err, stored)
		}

		if _, err := s.AdvanceGeneration(ctx, "ghost", 0, "", t0); !errors.Is(err, ErrInstanceUnknown) {
			t.Errorf("AdvanceGeneration(ghost): got %v, want ErrInstanceUnknown", err)
		}
		if _, err := s.Instance(ctx, "ghost"); !errors.Is(err, ErrInstanceUnknown) {
			t.Errorf("Instance(ghost): got %v, want ErrInstanceUnknown", err)
		}
	})
}

func TestLocks(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, _ string) {

		if _, ok, err := s.BotLock(ctx, "bot", t0); err != nil || ok {
			t.Fatalf("BotLock before locking = %v, %v; want false, nil", ok, err)
		}
		first := Lock{Bot: "bot", Reason: "token replay", At: t0}
		if err := s.LockBot(ctx, first); err != nil {
			t.Fatal(err)
		}
		if err := s.LockBot(ctx, Lock{Bot: "bot", Reason: "operator", At: t0.Add(time.Hour)}); err != nil {
			t.Fatalf("second LockBot: %v", err)
		}
		got, ok, err := s.BotLock(ctx, "bot", t0)
		if err != nil || !ok || got != first {
			t.Fatalf("BotLock = %+v, %v, %v; want %+v, true, nil", got, ok, err, first)
		}
		if got, ok, err := s.UnlockBot(ctx, "bot"); err != nil || !ok || got != first {
			t.Fatalf("UnlockBot = %+v, %v, %v; want %+v, true, nil", got, ok, err, first)
		}
		if _, ok, err := s.UnlockBot(ctx, "bot"); err != nil || ok {
			t.Fatalf("UnlockBot of unlocked bot = %v, %v; want false, nil", ok, err)
		}
		if got, ok, err := s.BotLock(ctx, "bot", t0); err != nil || ok || got != (Lock{}) {
			t.Fatalf("BotLock after unlock = %+v, %v, %v; want zero, false, nil", got, ok, err)
		}
	})
}

// TestInstanceLocks checks that a locked instance gets no new generation,
// not even the retry of the renewal that issued its current one, while the
// other instances of its bot, and the bot itself, are not affected.
func TestInstanceLocks(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, _ string) {
		for _, id := range []string{"inst-1", "inst-2"} {
			if err := s.CreateInstance(ctx, Instance{ID: id, Bot: "bot", Generation: 1, Created: t0}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.AdvanceGeneration(ctx, "inst-1", 1, "key-2", t0); err != nil {
			t.Fatal(err)
		}

		if _, ok, err := s.InstanceLock(ctx, "inst-1", t0); err != nil || ok {
			t.Fatalf("InstanceLock before locking = %v, %v; want false, nil", ok, err)
		}
		first := Lock{Bot: "bot", Instance: "inst-1", Reason: "generation mismatch", At: t0}
		if err := s.LockInstance(ctx, first); err != nil {
			t.Fatal(err)
		}
		if err := s.LockInstance(ctx, Lock{Bot: "bot", Instance: "inst-1", Reason: "again", At: t0.Add(time.Hour)}); err != nil {
			t.Fatalf("second LockInstance: %v", err)
		}
		if got, ok, err := s.InstanceLock(ctx, "inst-1", t0); err != nil || !ok || got != first {
			t.Fatalf("InstanceLock = %+v, %v, %v; want %+v, true, nil", got, ok, err, first)
		}

		for _, tc := range []struct {
			name      string
			presented uint64
			key       string
		}{
			{"current generation", 2, "key-3"},
			{"retry of the renewal that issued it", 1, "key-2"},
			{"stale generation", 1, "key-x"},
		} {
			_, err := s.AdvanceGeneration(ctx, "inst-1", tc.presented, tc.key, t0.Add(time.Minute))
			if !errors.Is(err, ErrInstanceLocked) || !strings.Contains(err.Error(), first.Reason) {
				t.Errorf("AdvanceGeneration of the locked instance, %s: got %v, want ErrInstanceLocked with the reason", tc.name, err)
			}
		}
		if in, err := s.Instance(ctx, "inst-1"); err != nil || in.Generation != 2 || in.IssuedKey != "key-2" {
			t.Errorf("locked instance = %+v, %v; want it unchanged at generation 2", in, err)
		}
		// The bot's other instance renews; the bot is not locked.
		if in, err := s.AdvanceGeneration(ctx, "inst-2", 1, "key-b", t0); err != nil || in.Generation != 2 {
			t.Errorf("AdvanceGeneration of the other instance = %+v, %v", in, err)
		}
		if _, ok, err := s.BotLock(ctx, "bot", t0); err != nil || ok {
			t.Errorf("BotLock = %v, %v; want the bot unlocked", ok, err)
		}

		botLock := Lock{Bot: "other", Reason: "operator", At: t0}
		if err := s.LockBot(ctx, botLock); err != nil {
			t.Fatal(err)
		}
		locks, err := s.Locks(ctx, t0)
		if err != nil {
			t.Fatal(err)
		}
		if want := []Lock{botLock, first}; fmt.Sprint(locks) != fmt.Sprint(want) {
			t.Errorf("Locks = %+v, want %+v", locks, want)
		}

		got, ok, err := s.UnlockInstance(ctx, "inst-1")
		if err != nil || !ok || got != first {
			t.Fatalf("UnlockInstance = %+v, %v, %v; want %+v, true, nil", got, ok, err, first)
		}
		if _, ok, err := s.UnlockInstance(ctx, "inst-1"); err != nil || ok {
			t.Errorf("UnlockInstance of an unlocked instance = %v, %v; want false, nil", ok, err)
		}
		if in, err := s.AdvanceGeneration(ctx, "inst-1", 2, "key-3", t0.Add(time.Minute)); err != nil || in.Generation != 3 {
			t.Errorf("AdvanceGeneration after unlock = %+v, %v; want generation 3", in, err)
		}
		if locks, err := s.Locks(ctx, t0); err != nil || len(locks) != 1 {
			t.Errorf("Locks after unlock = %+v, %v; want the bot's lock only", locks, err)
		}
	})
}

func TestLockArguments(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, _ string) {
		for _, tc := range []struct {
			name string
			lock func() error
		}{
			{"bot lock naming an instance", func() error { return s.LockBot(ctx, Lock{Bot: "bot", Instance: "inst", Reason: "r"}) }},
			{"bot lock without a bot", func() error { return s.LockBot(ctx, Lock{Reason: "r"}) }},
			{"instance lock without an instance", func() error { return s.LockInstance(ctx, Lock{Bot: "bot", Reason: "r"}) }},
			{"instance lock without a bot", func() error { return s.LockInstance(ctx, Lock{Instance: "inst", Reason: "r"}) }},
			{"bot lock naming a token", func() error { return s.LockBot(ctx, Lock{Bot: "bot", Token: "tok", Reason: "r"}) }},
			{"token lock without a token", func() error { return s.LockToken(ctx, Lock{Reason: "r"}) }},
			{"token lock naming a bot", func() error { return s.LockToken(ctx, Lock{Token: "tok", Bot: "bot", Reason: "r"}) }},
			{"token lock naming an instance", func() error { return s.LockToken(ctx, Lock{Token: "tok", Instance: "i", Reason: "r"}) }},
		} {
			if err := tc.lock(); err == nil {
				t.Errorf("%s: no error", tc.name)
			}
		}
		if locks, err := s.Locks(ctx, t0); err != nil || len(locks) != 0 {
			t.Errorf("Locks = %+v, %v; want none", locks, err)
		}
	})
}

func TestCancelledContext(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store, _ string) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()

		if err := s.PutToken(ctx, token("a", t0.Add(time.Hour))); !errors.Is(err, context.Canceled) {
			t.Errorf("PutToken: got %v, want context.Canceled", err)
		}
		if _, err := s.ConsumeToken(ctx, "a", "inst", t0); !errors.Is(err, context.Canceled) {
			t.Errorf("ConsumeToken: got %v, want context.Canceled", err)
		}
		if _, _, err := s.BotLock(ctx, "bot", t0); !errors.Is(err, context.Canceled) {
			t.Errorf("BotLock: got %v, want context.Canceled", err)
		}
		if err := s.LockInstance(ctx, Lock{Bot: "bot", Instance: "inst"}); !errors.Is(err, context.Canceled) {
			t.Errorf("LockInstance: got %v, want context.Canceled", err)
		}
		if _, _, err := s.UnlockInstance(ctx, "inst"); !errors.Is(err, context.Canceled) {
			t.Errorf("UnlockInstance: got %v, want context.Canceled", err)
		}
		if _, err := s.Locks(ctx, t0); !errors.Is(err, context.Canceled) {
			t.Errorf("Locks: got %v, want context.Canceled", err)
		}
		if err := s.MarkUsed(ctx, "k", "", t0.Add(time.Hour), t0); !errors.Is(err, context.Canceled) {
			t.Errorf("MarkUsed: got %v, want context.Canceled", err)
		}
		if err := s.PutChallenge(ctx, "c", "tok", t0.Add(time.Hour), t0); !errors.Is(err, context.Canceled) {
			t.Errorf("PutChallenge: got %v, want context.Canceled", err)
		}
		if _, err := s.ConsumeChallenge(ctx, "c", t0); !errors.Is(err, context.Canceled) {
			t.Errorf("ConsumeChallenge: got %v, want context.Canceled", err)
		}
		// Nothing may have been written.
		if _, err := s.ConsumeToken(context.Background(), "a", "inst", t0); !errors.Is(err, ErrTokenUnknown) {
			t.Errorf("token put under cancelled context: got %v, want ErrTokenUnknown", err)
		}
	})
}

func TestFile(t *testing.T) {
	_, path := openTemp(t)

	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Errorf("store file mode = %v, want 0600", mode)
	}

	start := time.Now()
	s2, err := Open(path)
	if err == nil {
		s2.Close()
		t.Fatal("second Open of a store that is open succeeded")
	}
	if msg := err.Error(); !strings.Contains(msg, path) || !strings.Contains(msg, "locked by another process") {
		t.Errorf("second Open error %q does not name the path and the lock", msg)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("second Open took %v to fail, want about 1s", d)
	}
}

// TestTokenPeek checks that Token reports what ConsumeToken would, without
// consuming anything.
func TestTokenPeek(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, _ string) {
		if err := s.PutToken(ctx, token("peek", t0.Add(time.Hour))); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			hash string
			now  time.Time
			want error
		}{
			{"peek", t0, nil},
			{"peek", t0, nil}, // still usable: peeking consumes nothing
			{"nope", t0, ErrTokenUnknown},
			{"peek", t0.Add(time.Hour), ErrTokenExpired},
		}
		for _, tt := range tests {
			got, err := s.Token(ctx, tt.hash, tt.now)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Token(%q, %v) = %v, want %v", tt.hash, tt.now, err, tt.want)
			}
			if err == nil && got.Bot != "bot-peek" {
				t.Errorf("Token(%q).Bot = %q", tt.hash, got.Bot)
			}
		}
		if _, err := s.ConsumeToken(ctx, "peek", "i1", t0); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Token(ctx, "peek", t0); !errors.Is(err, ErrTokenUsed) {
			t.Fatalf("Token after consume = %v, want ErrTokenUsed", err)
		}
	})
}

// TestAdvanceGenerationRetry checks that a renewal retried with the key it
// proposed before (its answer was lost) gets the same generation again,
// and that a stale generation with any other key is still a mismatch.
func TestAdvanceGenerationRetry(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, _ string) {
		if err := s.CreateInstance(ctx, Instance{ID: "inst", Bot: "ci", Generation: 1, Created: t0}); err != nil {
			t.Fatal(err)
		}
		in, err := s.AdvanceGeneration(ctx, "inst", 1, "key-2", t0)
		if err != nil || in.Generation != 2 {
			t.Fatalf("advance: %+v, %v", in, err)
		}
		in, err = s.AdvanceGeneration(ctx, "inst", 1, "key-2", t0.Add(time.Second))
		if err != nil || in.Generation != 2 {
			t.Fatalf("retry with the same key: %+v, %v; want generation 2 again", in, err)
		}
		for _, key := range []string{"key-other", ""} {
			if _, err := s.AdvanceGeneration(ctx, "inst", 1, key, t0); !errors.Is(err, ErrGenerationMismatch) {
				t.Errorf("stale generation with key %q: %v, want ErrGenerationMismatch", key, err)
			}
		}
		if in, err := s.AdvanceGeneration(ctx, "inst", 2, "key-3", t0); err != nil || in.Generation != 3 {
			t.Fatalf("next renewal: %+v, %v", in, err)
		}
		if _, err := s.AdvanceGeneration(ctx, "inst", 1, "key-2", t0); !errors.Is(err, ErrGenerationMismatch) {
			t.Error("a retry two generations back was accepted")
		}
	})
}

// TestLockExpiry checks that a lock past its expiry neither refuses a
// renewal nor is listed, and that locking again replaces it, for every
// kind of lock.
func TestLockExpiry(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, _ string) {
		if err := s.CreateInstance(ctx, Instance{ID: "inst-1", Bot: "bot", Generation: 1, Created: t0}); err != nil {
			t.Fatal(err)
		}
		expires := t0.Add(time.Hour)
		kinds := []struct {
			name string
			lock Lock
			put  func(context.Context, Lock) error
			get  func(context.Context, string, time.Time) (Lock, bool, error)
			key  string
		}{
			{"bot", Lock{Bot: "bot", Reason: "r", At: t0, Expires: expires}, s.LockBot, s.BotLock, "bot"},
			{"instance", Lock{Bot: "bot", Instance: "inst-1", Reason: "r", At: t0, Expires: expires}, s.LockInstance, s.InstanceLock, "inst-1"},
			{"token", Lock{Token: "gh", Reason: "r", At: t0, Expires: expires}, s.LockToken, s.TokenLock, "gh"},
		}
		for _, k := range kinds {
			if err := k.put(ctx, k.lock); err != nil {
				t.Fatalf("%s: %v", k.name, err)
			}
			if got, ok, err := k.get(ctx, k.key, expires.Add(-time.Second)); err != nil || !ok || got != k.lock {
				t.Errorf("%s lock before expiry = %+v, %v, %v; want %+v", k.name, got, ok, err, k.lock)
			}
			if _, ok, err := k.get(ctx, k.key, expires); err != nil || ok {
				t.Errorf("%s lock at expiry = %v, %v; want none", k.name, ok, err)
			}
		}
		if locks, err := s.Locks(ctx, expires.Add(-time.Second)); err != nil || len(locks) != 3 {
			t.Errorf("Locks before expiry = %+v, %v; want 3", locks, err)
		}
		if locks, err := s.Locks(ctx, expires); err != nil || len(locks) != 0 {
			t.Errorf("Locks at expiry = %+v, %v; want none", locks, err)
		}
		if _, err := s.AdvanceGeneration(ctx, "inst-1", 1, "k", expires.Add(-time.Second)); !errors.Is(err, ErrInstanceLocked) {
			t.Errorf("AdvanceGeneration before expiry: %v; want ErrInstanceLocked", err)
		}
		if in, err := s.AdvanceGeneration(ctx, "inst-1", 1, "k", expires); err != nil || in.Generation != 2 {
			t.Errorf("AdvanceGeneration at expiry = %+v, %v; want generation 2", in, err)
		}
		// A new lock replaces an expired one, and not one in force.
		for _, k := range kinds {
			again := k.lock
			again.Reason, again.At, again.Expires = "again", expires, time.Time{}
			if err := k.put(ctx, again); err != nil {
				t.Fatal(err)
			}
			later := again
			later.Reason, later.At = "later", expires.Add(time.Minute)
			if err := k.put(ctx, later); err != nil {
				t.Fatal(err)
			}
			if got, ok, err := k.get(ctx, k.key, expires.Add(time.Hour)); err != nil || !ok || got != again {
				t.Errorf("%s lock after relocking = %+v, %v, %v; want %+v", k.name, got, ok, err, again)
			}
		}
	})
}

func TestTokenLocks(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, _ string) {
		if _, ok, err := s.TokenLock(ctx, "gh", t0); err != nil || ok {
			t.Fatalf("TokenLock before locking = %v, %v; want false, nil", ok, err)
		}
		l := Lock{Token: "gh", Reason: "leaked workflow", At: t0}
		if err := s.LockToken(ctx, l); err != nil {
			t.Fatal(err)
		}
		bot := Lock{Bot: "bot", Reason: "r", At: t0}
		if err := s.LockBot(ctx, bot); err != nil {
			t.Fatal(err)
		}
		if locks, err := s.Locks(ctx, t0); err != nil || fmt.Sprint(locks) != fmt.Sprint([]Lock{bot, l}) {
			t.Errorf("Locks = %+v, %v; want the bot's, then the token's", locks, err)
		}
		if got, ok, err := s.UnlockToken(ctx, "gh"); err != nil || !ok || got != l {
			t.Errorf("UnlockToken = %+v, %v, %v; want %+v", got, ok, err, l)
		}
		if _, ok, err := s.UnlockToken(ctx, "gh"); err != nil || ok {
			t.Errorf("UnlockToken again = %v, %v; want false, nil", ok, err)
		}
		if _, ok, err := s.TokenLock(ctx, "gh", t0); err != nil || ok {
			t.Errorf("TokenLock after unlock = %v, %v; want false, nil", ok, err)
		}
	})
}

func TestInstancesOf(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, _ string) {
		for _, in := range []Instance{
			{ID: "a", Bot: "ci", JoinMethod: "github", TokenName: "gh"},
			{ID: "b", Bot: "ci"},
			{ID: "c", Bot: "web", JoinMethod: "github", TokenName: "gh"},
			{ID: "d", Bot: "web", JoinMethod: "gitlab", TokenName: "gl"},
		} {
			in.Generation, in.Created = 1, t0
			if err := s.CreateInstance(ctx, in); err != nil {
				t.Fatal(err)
			}
		}
		ids := func(ins []Instance, err error) string {
			if err != nil {
				return err.Error()
			}
			var out []string
			for _, in := range ins {
				out = append(out, in.ID)
			}
			return strings.Join(out, ",")
		}
		for _, tc := range []struct {
			name string
			got  string
			want string
		}{
			{"bot ci", ids(s.InstancesOfBot(ctx, "ci")), "a,b"},
			{"bot web", ids(s.InstancesOfBot(ctx, "web")), "c,d"},
			{"bot none", ids(s.InstancesOfBot(ctx, "none")), ""},
			{"token gh", ids(s.InstancesOfToken(ctx, "gh")), "a,c"},
			{"token gl", ids(s.InstancesOfToken(ctx, "gl")), "d"},
			{"token empty", ids(s.InstancesOfToken(ctx, "")), ""},
		} {
			if tc.got != tc.want {
				t.Errorf("%s: got %q, want %q", tc.name, tc.got, tc.want)
			}
		}
	})
}

// TestBoltFreelistRebuilt checks that commits do not write bbolt's list of
// free pages, and that a file whose list was not written reopens with its
// data and reuses its free pages rather than growing with every renewal.
func TestBoltFreelistRebuilt(t *testing.T) {
	ctx := context.Background()
	path := t.TempDir() + "/issuer.db"
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if db := s.(*boltStore).db; !db.NoFreelistSync || db.FreelistType != bolt.FreelistMapType {
		t.Errorf("NoFreelistSync %v, FreelistType %q: want true, %q", db.NoFreelistSync, db.FreelistType, bolt.FreelistMapType)
	}
	if err := s.CreateInstance(ctx, Instance{ID: "inst-1", Bot: "bot-a", Generation: 1, Created: t0}); err != nil {
		t.Fatal(err)
	}
	const rounds, renewals = 3, 200
	var sizes []int64
	gen := uint64(1)
	for range rounds {
		for range renewals {
			if _, err := s.Renew(ctx, RenewWrite{ID: "inst-1", Presented: gen, Now: t0}); err != nil {
				t.Fatal(err)
			}
			gen++
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, fi.Size())
		if s, err = Open(path); err != nil {
			t.Fatalf("reopen: %v", err)
		}
		if in, err := s.Instance(ctx, "inst-1"); err != nil || in.Generation != gen {
			t.Fatalf("after reopen: generation %d, %v; want %d", in.Generation, err, gen)
		}
	}
	s.Close()
	if sizes[rounds-1] > sizes[0] {
		t.Errorf("file sizes after each round of %d renewals: %v; want no growth", renewals, sizes)
	}
}
