package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestExactlyOnceAcrossStores checks the one-time rules with several Store
// values on one PostgreSQL database, each with its own connection pool, as
// several issuers have: of many concurrent consumers of one token,
// advancers of one generation, users of one key and consumers of one
// challenge, exactly one wins and the others get the error that says why.
func TestExactlyOnceAcrossStores(t *testing.T) {
	ctx := context.Background()
	_, url := openPostgresTemp(t)
	const replicas, n = 4, 32
	stores := make([]Store, replicas)
	for i := range stores {
		s, err := Open(url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		stores[i] = s
	}
	s := stores[0]
	if err := s.PutToken(ctx, token("once", t0.Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateInstance(ctx, Instance{ID: "inst", Bot: "bot", Generation: 5, Created: t0}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutChallenge(ctx, "c", "tok", t0.Add(time.Hour), t0); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name  string
		op    func(s Store, i int) error
		loser error
		after func(t *testing.T) // checks the stored state; may be nil
	}{
		{"consume one token", func(s Store, i int) error {
			_, err := s.ConsumeToken(ctx, "once", fmt.Sprint("inst-", i), t0)
			return err
		}, ErrTokenUsed, nil},
		{"advance one generation", func(s Store, i int) error {
			_, err := s.AdvanceGeneration(ctx, "inst", 5, fmt.Sprint("key-", i), t0)
			return err
		}, ErrGenerationMismatch, func(t *testing.T) {
			if in, err := stores[1].Instance(ctx, "inst"); err != nil || in.Generation != 6 {
				t.Errorf("instance after the race = %+v, %v; want generation 6", in, err)
			}
		}},
		{"mark one key used", func(s Store, i int) error {
			return s.MarkUsed(ctx, "jti", fmt.Sprint("inst-", i), t0.Add(time.Hour), t0)
		}, ErrReplay, nil},
		{"consume one challenge", func(s Store, i int) error {
			_, err := s.ConsumeChallenge(ctx, "c", t0)
			return err
		}, ErrChallengeUnknown, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs := make([]error, n)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range n {
				wg.Go(func() {
					<-start
					errs[i] = tc.op(stores[i%replicas], i)
				})
			}
			close(start)
			wg.Wait()
			won := 0
			for i, err := range errs {
				switch {
				case err == nil:
					won++
				case !errors.Is(err, tc.loser):
					t.Errorf("caller %d: %v, want nil or %v", i, err, tc.loser)
				}
			}
			if won != 1 {
				t.Errorf("%d of %d callers won, want exactly 1", won, n)
			}
			if tc.after != nil {
				tc.after(t)
			}
		})
	}
}
