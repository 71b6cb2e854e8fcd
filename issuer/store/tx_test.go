package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// state is what a join may have written, read back for the checks of
// all or nothing.
type state struct {
	instances int
	tokenUsed string // the instance that consumed the token, or ""
	nodes     int
}

func readState(t *testing.T, s Store, hash string) state {
	t.Helper()
	ctx := context.Background()
	ins, err := s.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := s.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st := state{instances: len(ins), nodes: len(nodes)}
	toks, err := s.Tokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range toks {
		if tok.Hash == hash {
			st.tokenUsed = tok.ConsumedBy
		}
	}
	return st
}

func newInstance(id string) Instance {
	return Instance{ID: id, Bot: "bot-tok", Generation: 1, Created: t0, JoinMethod: "token"}
}

func TestJoinTokenAllOrNothing(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, _ string) {
		if err := s.PutToken(ctx, token("tok", t0.Add(time.Hour))); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateInstance(ctx, newInstance("taken")); err != nil {
			t.Fatal(err)
		}
		node := &Node{Instance: "taken", Bot: "bot-tok", Names: []string{"h1"}, Renewed: t0}

		// An instance ID already taken: the token stays unspent, and no
		// node is written.
		_, err := s.Join(ctx, JoinWrite{Now: t0, TokenHash: "tok", Instance: newInstance("taken"), Node: node})
		if !errors.Is(err, ErrExists) {
			t.Fatalf("Join with a taken ID: %v, want ErrExists", err)
		}
		if got := readState(t, s, "tok"); got != (state{instances: 1}) {
			t.Fatalf("after a refused join: %+v, want the token unspent and nothing written", got)
		}

		node.Instance = "new"
		in, err := s.Join(ctx, JoinWrite{Now: t0.Add(time.Minute), TokenHash: "tok", Instance: newInstance("new"), Node: node})
		if err != nil {
			t.Fatal(err)
		}
		if in != newInstance("new") {
			t.Errorf("Join = %+v, want %+v", in, newInstance("new"))
		}
		if got := readState(t, s, "tok"); got != (state{instances: 2, tokenUsed: "new", nodes: 1}) {
			t.Fatalf("after the join: %+v, want the instance, the token used by it and the node", got)
		}

		// The same token again, and tokens unknown or expired: nothing.
		if err := s.PutToken(ctx, token("old", t0)); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			hash string
			want error
		}{{"tok", ErrTokenUsed}, {"nope", ErrTokenUnknown}, {"old", ErrTokenExpired}} {
			_, err := s.Join(ctx, JoinWrite{Now: t0.Add(time.Minute), TokenHash: tc.hash, Instance: newInstance("again-" + tc.hash)})
			if !errors.Is(err, tc.want) {
				t.Errorf("Join with token %s: %v, want %v", tc.hash, err, tc.want)
			}
		}
		if got := readState(t, s, "old"); got.instances != 2 || got.tokenUsed != "" {
			t.Fatalf("after refused joins: %+v, want no new instance and token old unspent", got)
		}
	})
}

func TestJoinAttestedAllOrNothing(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, _ string) {
		until := t0.Add(time.Hour)
		// A new instance records the ID token as its own.
		in, err := s.Join(ctx, JoinWrite{Now: t0, Replay: Replay{Key: "jti-1", Owner: "i1", Expires: until}, Instance: newInstance("i1")})
		if err != nil || in.ID != "i1" {
			t.Fatalf("Join = %+v, %v", in, err)
		}
		// Anyone else with it is refused, and makes no instance.
		if _, err := s.Join(ctx, JoinWrite{Now: t0, Replay: Replay{Key: "jti-1", Owner: "i2", Expires: until}, Instance: newInstance("i2")}); !errors.Is(err, ErrReplay) {
			t.Fatalf("replayed Join: %v, want ErrReplay", err)
		}
		if _, err := s.Instance(ctx, "i2"); !errors.Is(err, ErrInstanceUnknown) {
			t.Fatalf("a replayed join made its instance: %v", err)
		}
		// An instance made but refused (ID taken) leaves the ID token
		// unrecorded.
		if _, err := s.Join(ctx, JoinWrite{Now: t0, Replay: Replay{Key: "jti-2", Owner: "i1", Expires: until}, Instance: newInstance("i1")}); !errors.Is(err, ErrExists) {
			t.Fatalf("Join with a taken ID: %v, want ErrExists", err)
		}
		if err := s.MarkUsed(ctx, "jti-2", "other", until, t0); err != nil {
			t.Fatalf("the refused join recorded its ID token: %v", err)
		}

		// The kept instance moves on with its own token again.
		keep := &RenewWrite{ID: "i1", Presented: 1, Key: "k2"}
		in, err = s.Join(ctx, JoinWrite{Now: t0.Add(time.Minute), Replay: Replay{Key: "jti-1", Owner: "i1", Expires: until}, Keep: keep})
		if err != nil || in.Generation != 2 || in.IssuedKey != "k2" || !in.Renewed.Equal(t0.Add(time.Minute)) {
			t.Fatalf("Join keeping i1 = %+v, %v; want generation 2, key k2, renewed at now", in, err)
		}

		// A stale copy: refused, the instance locked, and its ID token
		// spent with it.
		lockIt := func(stored Instance) Lock {
			return Lock{Bot: stored.Bot, Instance: stored.ID, Reason: fmt.Sprintf("stale, stored %d", stored.Generation), At: t0}
		}
		stale := &RenewWrite{ID: "i1", Presented: 1, Key: "k-copy", OnMismatch: lockIt}
		in, err = s.Join(ctx, JoinWrite{Now: t0.Add(2 * time.Minute), Replay: Replay{Key: "jti-3", Owner: "i1", Expires: until}, Keep: stale})
		if !errors.Is(err, ErrGenerationMismatch) || in.Generation != 2 {
			t.Fatalf("stale Join = %+v, %v; want the stored instance and ErrGenerationMismatch", in, err)
		}
		if l, locked, err := s.InstanceLock(ctx, "i1", t0.Add(2*time.Minute)); err != nil || !locked || l.Reason != "stale, stored 2" {
			t.Fatalf("InstanceLock after a stale join = %+v, %v, %v; want the lock OnMismatch gave", l, locked, err)
		}
		if err := s.MarkUsed(ctx, "jti-3", "other", until, t0); !errors.Is(err, ErrReplay) {
			t.Fatalf("the stale join's ID token: %v, want it spent (ErrReplay)", err)
		}

		// Locked: refused, and the ID token is left unrecorded.
		in, err = s.Join(ctx, JoinWrite{Now: t0.Add(3 * time.Minute), Replay: Replay{Key: "jti-4", Owner: "i1", Expires: until},
			Keep: &RenewWrite{ID: "i1", Presented: 2, Key: "k3"}})
		if !errors.Is(err, ErrInstanceLocked) {
			t.Fatalf("Join keeping a locked instance = %+v, %v; want ErrInstanceLocked", in, err)
		}
		if err := s.MarkUsed(ctx, "jti-4", "other", until, t0); err != nil {
			t.Fatalf("the locked instance's join recorded its ID token: %v", err)
		}
	})
}

func TestRenewWrite(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, _ string) {
		if err := s.CreateInstance(ctx, newInstance("h")); err != nil {
			t.Fatal(err)
		}
		node := Node{Instance: "h", Bot: "bot-tok", Names: []string{"h.example"}, Renewed: t0.Add(time.Minute)}
		in, err := s.Renew(ctx, RenewWrite{ID: "h", Presented: 1, Key: "k2", Now: t0.Add(time.Minute), Node: &node})
		if err != nil || in.Generation != 2 {
			t.Fatalf("Renew = %+v, %v; want generation 2", in, err)
		}
		if nodes, err := s.Nodes(ctx); err != nil || len(nodes) != 1 || !nodes[0].Renewed.Equal(node.Renewed) {
			t.Fatalf("Nodes after Renew = %+v, %v; want the node", nodes, err)
		}

		before, err := s.Changes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		later := node
		later.Renewed = t0.Add(time.Hour)
		lockIt := func(stored Instance) Lock {
			return Lock{Bot: stored.Bot, Instance: stored.ID, Reason: "copied", At: t0.Add(time.Hour)}
		}
		in, err = s.Renew(ctx, RenewWrite{ID: "h", Presented: 1, Key: "k-copy", Now: t0.Add(time.Hour), Node: &later, OnMismatch: lockIt})
		if !errors.Is(err, ErrGenerationMismatch) || in.Generation != 2 {
			t.Fatalf("stale Renew = %+v, %v; want the stored instance and ErrGenerationMismatch", in, err)
		}
		if _, locked, err := s.InstanceLock(ctx, "h", t0.Add(time.Hour)); err != nil || !locked {
			t.Fatalf("stale Renew did not lock the instance: %v, %v", locked, err)
		}
		if after, err := s.Changes(ctx); err != nil || after <= before {
			t.Errorf("Changes = %d, %v after the lock, was %d; want it moved, as LockInstance moves it", after, err, before)
		}
		// Refused: the node is not written.
		in, err = s.Renew(ctx, RenewWrite{ID: "h", Presented: 2, Key: "k3", Now: t0.Add(time.Hour), Node: &later})
		if !errors.Is(err, ErrInstanceLocked) {
			t.Fatalf("Renew of a locked instance = %+v, %v; want ErrInstanceLocked", in, err)
		}
		if nodes, _ := s.Nodes(ctx); len(nodes) != 1 || !nodes[0].Renewed.Equal(node.Renewed) {
			t.Fatalf("a refused Renew wrote its node: %+v", nodes)
		}
		if _, err := s.Renew(ctx, RenewWrite{ID: "nobody", Presented: 1, Now: t0}); !errors.Is(err, ErrInstanceUnknown) {
			t.Fatalf("Renew of an unknown instance: %v, want ErrInstanceUnknown", err)
		}
	})
}

// TestRenewBatchRerun renews instances concurrently while other renewals
// fail in the same transactions (an invalid lock from OnMismatch), so that
// bbolt's Batch rolls batches back and runs their functions again: every
// renewal that succeeded must have moved its instance exactly once.
func TestRenewBatchRerun(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, _ string) {
		const n, rounds = 8, 20
		for i := range n {
			if err := s.CreateInstance(ctx, newInstance(fmt.Sprintf("good-%d", i))); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.CreateInstance(ctx, Instance{ID: "bad", Bot: "b", Generation: 5, Created: t0}); err != nil {
			t.Fatal(err)
		}
		invalid := func(Instance) Lock { return Lock{Reason: "names nothing"} }
		var wg sync.WaitGroup
		ok := make([]int, n)
		for i := range n {
			wg.Go(func() {
				id := fmt.Sprintf("good-%d", i)
				for r := range rounds {
					in, err := s.Renew(ctx, RenewWrite{ID: id, Presented: uint64(r + 1), Key: fmt.Sprint(r), Now: t0})
					if err != nil {
						t.Errorf("Renew(%s, %d): %v", id, r+1, err)
						return
					}
					if in.Generation != uint64(r+2) {
						t.Errorf("Renew(%s, %d) = generation %d, want %d", id, r+1, in.Generation, r+2)
						return
					}
					ok[i]++
				}
			})
			wg.Go(func() {
				for range rounds {
					if _, err := s.Renew(ctx, RenewWrite{ID: "bad", Presented: 1, Now: t0, OnMismatch: invalid}); err == nil || refusal(err) {
						t.Errorf("Renew with an invalid lock: %v, want a failure", err)
						return
					}
				}
			})
		}
		wg.Wait()
		for i := range n {
			in, err := s.Instance(ctx, fmt.Sprintf("good-%d", i))
			if err != nil {
				t.Fatal(err)
			}
			if in.Generation != uint64(ok[i]+1) {
				t.Errorf("instance %d: generation %d after %d renewals, want %d", i, in.Generation, ok[i], ok[i]+1)
			}
		}
		if _, locked, _ := s.InstanceLock(ctx, "bad", t0); locked {
			t.Error("the failed renewals left a lock")
		}
	})
}

// TestJoinConcurrentToken races joins for one token through Join: one
// wins, and exactly one instance exists afterwards.
func TestJoinConcurrentToken(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, _ string) {
		if err := s.PutToken(ctx, token("once", t0.Add(time.Hour))); err != nil {
			t.Fatal(err)
		}
		const n = 16
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				_, errs[i] = s.Join(ctx, JoinWrite{Now: t0, TokenHash: "once", Instance: newInstance(fmt.Sprintf("i%d", i))})
			})
		}
		wg.Wait()
		won := 0
		for i, err := range errs {
			switch {
			case err == nil:
				won++
			case !errors.Is(err, ErrTokenUsed):
				t.Errorf("join %d: %v, want nil or ErrTokenUsed", i, err)
			}
		}
		if got := readState(t, s, "once"); won != 1 || got.instances != 1 || got.tokenUsed == "" {
			t.Fatalf("%d joins won, state %+v; want one join, one instance, the token used by it", won, got)
		}
	})
}

func TestNow(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, _ string) {
		// The database runs on this machine, so its clock is the local
		// one, to well within a minute.
		now, err := s.Now(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if d := now.Sub(time.Now()).Abs(); d > time.Minute {
			t.Fatalf("Now is %v from the local clock", d)
		}
		canceled, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := s.Now(canceled); err == nil {
			t.Error("Now with a canceled context: no error")
		}
	})
}

// TestPostgresNowIsTheDatabases checks that the PostgreSQL store's clock
// is the database's, as measured, and not the local one: a database an
// hour ahead makes Now an hour ahead.
func TestPostgresNowIsTheDatabases(t *testing.T) {
	s, _ := openPostgresTemp(t)
	ps := s.(*pgStore)
	ctx := context.Background()
	sent := time.Now()
	ps.clock.record(sent.Add(time.Hour), sent, sent)
	now, err := s.Now(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ahead := now.Sub(time.Now()); ahead < 59*time.Minute || ahead > 61*time.Minute {
		t.Fatalf("Now is %v ahead of the local clock, want an hour, as measured", ahead)
	}
	// The poll of Changes measures it again.
	if _, err := s.Changes(ctx); err != nil {
		t.Fatal(err)
	}
	if now, err = s.Now(ctx); err != nil || now.Sub(time.Now()).Abs() > time.Minute {
		t.Fatalf("Now after Changes = %v, %v; want the database's clock again", now, err)
	}
	// A stale measure is taken again by Now itself.
	ps.clock.record(sent.Add(time.Hour), sent, sent.Add(-time.Hour))
	if now, err = s.Now(ctx); err != nil || now.Sub(time.Now()).Abs() > time.Minute {
		t.Fatalf("Now with a stale measure = %v, %v; want it measured again", now, err)
	}
}

// TestJoinRenewCheckLocks checks that Join and Renew refuse, in the
// transaction that would write, an instance whose bot or token resource
// is locked at their Now, writing nothing; an expired lock refuses
// nothing. The authority looks for these locks before, but one recorded
// in between must still refuse.
func TestJoinRenewCheckLocks(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, _ string) {
		if err := s.PutToken(ctx, token("tok", t0.Add(time.Hour))); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateInstance(ctx, newInstance("h")); err != nil {
			t.Fatal(err)
		}
		attested := Instance{ID: "a", Bot: "bot-att", Generation: 1, Created: t0, JoinMethod: "bound_keypair", TokenName: "tn"}
		if err := s.CreateInstance(ctx, attested); err != nil {
			t.Fatal(err)
		}
		if err := s.LockBot(ctx, Lock{Bot: "bot-tok", Reason: "r", At: t0, Expires: t0.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if err := s.LockToken(ctx, Lock{Token: "tn", Reason: "r", At: t0, Expires: t0.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		now := t0.Add(time.Minute)
		node := &Node{Instance: "new", Bot: "bot-tok", Names: []string{"h1"}, Renewed: now}
		replay := Replay{Key: "jti", Owner: "new-a", Expires: t0.Add(time.Hour)}
		for _, tc := range []struct {
			name string
			call func() error
			want error
		}{
			{"token join", func() error {
				_, err := s.Join(ctx, JoinWrite{Now: now, TokenHash: "tok", Instance: newInstance("new"), Node: node})
				return err
			}, ErrBotLocked},
			{"renewal", func() error {
				_, err := s.Renew(ctx, RenewWrite{ID: "h", Presented: 1, Key: "k", Now: now, Node: node})
				return err
			}, ErrBotLocked},
			{"attested join", func() error {
				in := attested
				in.ID = "new-a"
				_, err := s.Join(ctx, JoinWrite{Now: now, Replay: replay, Instance: in})
				return err
			}, ErrTokenLocked},
			{"attested re-join", func() error {
				_, err := s.Join(ctx, JoinWrite{Now: now, Replay: replay, Keep: &RenewWrite{ID: "a", Presented: 1, Key: "k"}})
				return err
			}, ErrTokenLocked},
		} {
			if err := tc.call(); !errors.Is(err, tc.want) {
				t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
			}
		}
		if got := readState(t, s, "tok"); got != (state{instances: 2}) {
			t.Errorf("after refused writes: %+v, want the token unspent and nothing written", got)
		}
		for _, id := range []string{"h", "a"} {
			if in, err := s.Instance(ctx, id); err != nil || in.Generation != 1 {
				t.Errorf("instance %s: generation %d, %v; want 1", id, in.Generation, err)
			}
		}
		if err := s.MarkUsed(ctx, replay.Key, "other", replay.Expires, now); err != nil {
			t.Errorf("the replay record of a refused join was written: %v", err)
		}

		// Once the locks expire, the same writes go through.
		later := t0.Add(2 * time.Hour)
		if _, err := s.Renew(ctx, RenewWrite{ID: "h", Presented: 1, Key: "k", Now: later}); err != nil {
			t.Errorf("renewal after the bot lock expired: %v", err)
		}
		if _, err := s.Join(ctx, JoinWrite{Now: later, Keep: &RenewWrite{ID: "a", Presented: 1, Key: "k"}}); err != nil {
			t.Errorf("re-join after the token lock expired: %v", err)
		}
	})
}

// TestPostgresLockWaitsForJoinOrRenewal checks, on PostgreSQL, that a lock
// recorded while a join or renewal that has checked the locks is still
// uncommitted waits for that transaction: it is then recorded after it,
// as the operator who locked expects, and not before a commit that
// ignored it (bbolt runs one writer at a time, so it cannot happen there).
func TestPostgresLockWaitsForJoinOrRenewal(t *testing.T) {
	ctx := context.Background()
	at := t0.Add(time.Minute)
	for _, tc := range []struct {
		name  string
		lock  func(s Store) error
		write func(s Store) error
	}{
		{"bot lock, renewal",
			func(s Store) error { return s.LockBot(ctx, Lock{Bot: "bot-tok", Reason: "r", At: at}) },
			func(s Store) error {
				_, err := s.Renew(ctx, RenewWrite{ID: "h", Presented: 1, Key: "k", Now: at})
				return err
			}},
		{"instance lock, renewal",
			func(s Store) error {
				return s.LockInstance(ctx, Lock{Bot: "bot-tok", Instance: "h", Reason: "r", At: at})
			},
			func(s Store) error {
				_, err := s.Renew(ctx, RenewWrite{ID: "h", Presented: 1, Key: "k", Now: at})
				return err
			}},
		{"bot lock, token join",
			func(s Store) error { return s.LockBot(ctx, Lock{Bot: "bot-tok", Reason: "r", At: at}) },
			func(s Store) error {
				_, err := s.Join(ctx, JoinWrite{Now: at, TokenHash: "tok", Instance: newInstance("new")})
				return err
			}},
		{"token lock, attested join",
			func(s Store) error { return s.LockToken(ctx, Lock{Token: "tn", Reason: "r", At: at}) },
			func(s Store) error {
				in := Instance{ID: "new-a", Bot: "bot-att", Generation: 1, Created: t0, JoinMethod: "bound_keypair", TokenName: "tn"}
				_, err := s.Join(ctx, JoinWrite{Now: at, Instance: in})
				return err
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := openPostgresTemp(t)
			ps := s.(*pgStore)
			if err := s.PutToken(ctx, token("tok", t0.Add(time.Hour))); err != nil {
				t.Fatal(err)
			}
			if err := s.CreateInstance(ctx, newInstance("h")); err != nil {
				t.Fatal(err)
			}
			locked := make(chan error, 1)
			ps.beforeCommit = func() {
				ps.beforeCommit = nil
				go func() { locked <- tc.lock(s) }()
				// The lock either commits, which is the flaw, or waits for
				// this transaction on an advisory lock.
				for {
					select {
					case err := <-locked:
						locked <- err
						t.Errorf("the lock was recorded (%v) while the write (%s), which had checked the locks, was uncommitted", err, tc.name)
						return
					default:
					}
					var waiting int
					if err := ps.pool.QueryRow(ctx, `SELECT count(*) FROM pg_locks
						WHERE locktype = 'advisory' AND NOT granted
						AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&waiting); err != nil {
						t.Error(err)
						return
					}
					if waiting > 0 {
						return
					}
					time.Sleep(time.Millisecond)
				}
			}
			if err := tc.write(s); err != nil {
				t.Fatalf("the write begun before the lock: %v", err)
			}
			if err := <-locked; err != nil {
				t.Fatalf("the lock: %v", err)
			}
		})
	}
}

// TestRenewConcurrentOneIdentity renews one identity from many callers at
// once, as copies of it would, on each store: exactly one moves the
// generation on; each other is refused as a stale generation (and locks
// the instance) or, once it is locked, as locked. The same request sent
// many times at once (the same key) is a retry: each gets the one
// generation, and nothing is locked.
func TestRenewConcurrentOneIdentity(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, _ string) {
		for _, sameKey := range []bool{false, true} {
			id := fmt.Sprintf("h-%v", sameKey)
			if err := s.CreateInstance(ctx, newInstance(id)); err != nil {
				t.Fatal(err)
			}
			const n = 16
			errs := make([]error, n)
			gens := make([]uint64, n)
			var wg sync.WaitGroup
			for i := range n {
				key := fmt.Sprintf("k%d", i)
				if sameKey {
					key = "k"
				}
				wg.Go(func() {
					var in Instance
					in, errs[i] = s.Renew(ctx, RenewWrite{ID: id, Presented: 1, Key: key, Now: t0,
						OnMismatch: func(stored Instance) Lock {
							return Lock{Bot: stored.Bot, Instance: stored.ID, Reason: "copied", At: t0}
						}})
					gens[i] = in.Generation
				})
			}
			wg.Wait()
			won := 0
			for i, err := range errs {
				switch {
				case err == nil:
					won++
					if gens[i] != 2 {
						t.Errorf("same key %v: renewal %d got generation %d, want 2", sameKey, i, gens[i])
					}
				case sameKey || !errors.Is(err, ErrGenerationMismatch) && !errors.Is(err, ErrInstanceLocked):
					t.Errorf("same key %v: renewal %d: %v", sameKey, i, err)
				}
			}
			in, err := s.Instance(ctx, id)
			if err != nil || in.Generation != 2 {
				t.Errorf("same key %v: instance %+v, %v; want generation 2", sameKey, in, err)
			}
			_, locked, err := s.InstanceLock(ctx, id, t0)
			switch {
			case err != nil:
				t.Fatal(err)
			case sameKey && (won != n || locked):
				t.Errorf("the same request %d times: %d won, locked %v; want all, and no lock", n, won, locked)
			case !sameKey && (won != 1 || !locked):
				t.Errorf("%d copies: %d won, locked %v; want one, and the instance locked", n, won, locked)
			}
		}
	})
}

// TestJoinBatchRerun is TestRenewBatchRerun for joins: token joins and
// attested joins (with replay records) run concurrently with joins that
// fail in the same transactions (a kept instance at a stale generation
// whose OnMismatch gives an invalid lock), so that bbolt's Batch rolls
// batches back and runs their functions again. Each join that succeeded
// has its token used by its instance, its instance once, its replay
// record; the failed ones wrote nothing, and refused ones (a token used
// twice) nothing either.
func TestJoinBatchRerun(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, _ string) {
		const n = 8
		for i := range n {
			if err := s.PutToken(ctx, token(fmt.Sprintf("tok-%d", i), t0.Add(time.Hour))); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.CreateInstance(ctx, Instance{ID: "bad", Bot: "b", Generation: 5, Created: t0}); err != nil {
			t.Fatal(err)
		}
		invalid := func(Instance) Lock { return Lock{Reason: "names nothing"} }
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				// Twice: the second is refused, the token being used.
				for try := range 2 {
					_, err := s.Join(ctx, JoinWrite{Now: t0, TokenHash: fmt.Sprintf("tok-%d", i), Instance: newInstance(fmt.Sprintf("t-%d-%d", i, try))})
					if want := error(nil); try == 1 {
						want = ErrTokenUsed
						if !errors.Is(err, want) {
							t.Errorf("second token join %d: %v, want %v", i, err, want)
						}
					} else if err != nil {
						t.Errorf("token join %d: %v", i, err)
					}
				}
			})
			wg.Go(func() {
				in := Instance{ID: fmt.Sprintf("a-%d", i), Bot: "bot-att", Generation: 1, Created: t0, JoinMethod: "bound_keypair", TokenName: "tn"}
				if _, err := s.Join(ctx, JoinWrite{Now: t0, Replay: Replay{Key: fmt.Sprintf("jti-%d", i), Owner: in.ID, Expires: t0.Add(time.Hour)}, Instance: in}); err != nil {
					t.Errorf("attested join %d: %v", i, err)
				}
			})
			wg.Go(func() {
				_, err := s.Join(ctx, JoinWrite{Now: t0, Replay: Replay{Key: fmt.Sprintf("bad-jti-%d", i), Owner: "bad", Expires: t0.Add(time.Hour)},
					Keep: &RenewWrite{ID: "bad", Presented: 1, OnMismatch: invalid}})
				if err == nil || refusal(err) {
					t.Errorf("join with an invalid lock: %v, want a failure", err)
				}
			})
		}
		wg.Wait()
		for i := range n {
			tok := fmt.Sprintf("tok-%d", i)
			if got := readState(t, s, tok); got.tokenUsed != fmt.Sprintf("t-%d-0", i) {
				t.Errorf("token %s used by %q, want t-%d-0", tok, got.tokenUsed, i)
			}
			if _, err := s.Instance(ctx, fmt.Sprintf("t-%d-1", i)); !errors.Is(err, ErrInstanceUnknown) {
				t.Errorf("the refused join's instance: %v, want ErrInstanceUnknown", err)
			}
			if err := s.MarkUsed(ctx, fmt.Sprintf("jti-%d", i), "other", t0.Add(time.Hour), t0); !errors.Is(err, ErrReplay) {
				t.Errorf("replay record of attested join %d: %v, want it recorded (ErrReplay)", i, err)
			}
			if err := s.MarkUsed(ctx, fmt.Sprintf("bad-jti-%d", i), "other", t0.Add(time.Hour), t0); err != nil {
				t.Errorf("replay record of failed join %d: %v, want none written", i, err)
			}
		}
		if got := readState(t, s, "tok-0"); got.instances != 2*n+1 {
			t.Errorf("%d instances, want %d: one per successful join and bad", got.instances, 2*n+1)
		}
		if in, err := s.Instance(ctx, "bad"); err != nil || in.Generation != 5 {
			t.Errorf("bad: %+v, %v; want generation 5", in, err)
		}
		if _, locked, _ := s.InstanceLock(ctx, "bad", t0); locked {
			t.Error("the failed joins left a lock")
		}
	})
}

// TestRenewCheck checks that Renew gives w.Check the stored instance, and
// that its refusal is returned as it is, writing nothing.
func TestRenewCheck(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, _ string) {
		if err := s.CreateInstance(ctx, Instance{ID: "i1", Bot: "web", Generation: 1, Created: t0}); err != nil {
			t.Fatal(err)
		}
		errNo := errors.New("not this one")
		var seen Instance
		w := RenewWrite{ID: "i1", Presented: 1, Now: t0, Node: &Node{Instance: "i1", Bot: "web", Renewed: t0},
			Check: func(in Instance) error { seen = in; return errNo }}
		if _, err := s.Renew(ctx, w); err != errNo {
			t.Fatalf("Renew with a refusing Check = %v; want its error", err)
		}
		if seen.ID != "i1" || seen.Bot != "web" || seen.Generation != 1 {
			t.Errorf("Check was given %+v; want the stored instance", seen)
		}
		if in, err := s.Instance(ctx, "i1"); err != nil || in.Generation != 1 {
			t.Errorf("after the refusal: %+v, %v; want generation 1", in, err)
		}
		if nodes, err := s.Nodes(ctx); err != nil || len(nodes) != 0 {
			t.Errorf("after the refusal: nodes %+v, %v; want none", nodes, err)
		}
		w.Check = func(Instance) error { return nil }
		if in, err := s.Renew(ctx, w); err != nil || in.Generation != 2 {
			t.Errorf("Renew with a passing Check = %+v, %v; want generation 2", in, err)
		}
	})
}
