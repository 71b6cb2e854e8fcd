package authority_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/issuer/authority"
	"github.com/mwi-project/mwi/issuer/ca"
	"github.com/mwi-project/mwi/issuer/store"
)

// decisions is an Observer that keeps what it is told.
type decisions struct {
	mu   sync.Mutex
	seen []authority.Decision
}

func (d *decisions) Decision(x authority.Decision) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seen = append(d.seen, x)
}

func (d *decisions) last(t *testing.T) authority.Decision {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.seen) == 0 {
		t.Fatal("the observer was told of no decision")
	}
	x := d.seen[len(d.seen)-1]
	if x.Duration <= 0 {
		t.Errorf("decision %+v has no duration", x)
	}
	x.Duration = 0
	return x
}

// TestObserver checks that every join and renewal is told to the
// Observer once, with its method, outcome and the refusal's stable code,
// and that a join method the caller made up is not passed on as it is.
func TestObserver(t *testing.T) {
	e := newEnv(t)
	obs := &decisions{}
	e.auth.Observer = obs
	ctx := context.Background()
	creds := e.join(t, e.token(t, "ci"))
	if got, want := obs.last(t), (authority.Decision{Event: authority.DecisionJoin, Method: api.JoinMethodToken, Outcome: authority.OutcomeAllowed}); got != want {
		t.Errorf("join: %+v, want %+v", got, want)
	}
	_, id, _ := parseCreds(t, e, creds)

	for _, tc := range []struct {
		name string
		do   func() error
		want authority.Decision
	}{
		{"unknown token", func() error {
			_, err := e.auth.Join(ctx, api.JoinRequest{JoinMethod: api.JoinMethodToken, Token: "nope", Keys: newKeys(t).pub, TTLSeconds: 600}, nil, "192.0.2.1:1")
			return err
		}, authority.Decision{Event: authority.DecisionJoin, Method: api.JoinMethodToken, Outcome: authority.OutcomeDenied, Reason: api.CodeTokenUnknown}},
		{"made-up method", func() error {
			_, err := e.auth.Join(ctx, api.JoinRequest{JoinMethod: "x-made-up", Keys: newKeys(t).pub, TTLSeconds: 600}, nil, "192.0.2.1:1")
			return err
		}, authority.Decision{Event: authority.DecisionJoin, Method: "unknown", Outcome: authority.OutcomeDenied, Reason: api.CodeBadRequest}},
		{"renewal", func() error {
			_, err := e.renew(t, id)
			return err
		}, authority.Decision{Event: authority.DecisionRenew, Outcome: authority.OutcomeAllowed}},
		{"stale renewal", func() error {
			_, err := e.renew(t, id) // id is one generation behind now
			return err
		}, authority.Decision{Event: authority.DecisionRenew, Outcome: authority.OutcomeDenied, Reason: api.CodeGenerationMismatch}},
		{"store unavailable", func() error {
			e.auth.Store = brokenStore{Store: e.store, lockErr: fmt.Errorf("dial: %w", store.ErrUnavailable)}
			defer func() { e.auth.Store = e.store }()
			_, err := e.renew(t, ca.Identity{Bot: "ci", Instance: id.Instance, Generation: 9})
			return err
		}, authority.Decision{Event: authority.DecisionRenew, Outcome: authority.OutcomeError, Reason: api.CodeStoreUnavailable}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obs.mu.Lock()
			n := len(obs.seen)
			obs.mu.Unlock()
			err := tc.do()
			if (err == nil) != (tc.want.Outcome == authority.OutcomeAllowed) {
				t.Fatalf("err = %v, want outcome %s", err, tc.want.Outcome)
			}
			obs.mu.Lock()
			told := len(obs.seen) - n
			obs.mu.Unlock()
			if told != 1 {
				t.Fatalf("observer told %d times, want once", told)
			}
			if got := obs.last(t); got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
