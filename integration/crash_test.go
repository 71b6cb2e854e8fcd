package integration

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/identity"
	"github.com/mwi-project/mwi/daemon/issuerclient"
	"github.com/mwi-project/mwi/integration/harness"
	"github.com/mwi-project/mwi/internal/pgtest"
	"github.com/mwi-project/mwi/issuer/authority"
	"github.com/mwi-project/mwi/issuer/store"
)

// TestIssuerKilledMidRequest kills the issuer with SIGKILL while joins
// and renewals are in flight, on each store, and starts it again on the
// same store. Every request whose answer was lost is sent again, the
// same request (the same token or identity, the same keys): a join
// either succeeds or is refused token_used (it had committed), a renewal
// succeeds with the generation it would have had. Then, with the issuer
// stopped, the store itself shows no half-written join (each used token
// names an instance that exists, and each instance was made by a used
// token) and each instance's generation is the one its holder has.
func TestIssuerKilledMidRequest(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"bolt", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			var args []string
			location := ""
			if kind == "postgres" {
				pg := pgtest.StartT(t)
				url, err := pg.CreateDatabase("mwi", "")
				if err != nil {
					t.Fatal(err)
				}
				args, location = []string{"--store", url}, url
			}
			iss := harness.StartIssuerWith(t, resources(harness.CurrentUser(t)), harness.IssuerOptions{Args: args})
			if location == "" {
				location = filepath.Join(iss.State, "store.db")
			}
			killMidRequest(t, iss, location)
		})
	}
}

// pending is a request whose answer was lost, to be sent again.
type pending struct {
	token string // a join's, or "" for a renewal
	keys  *identity.Keys
	cur   *identity.Credentials // a renewal's identity
}

func killMidRequest(t *testing.T, iss *harness.Issuer, location string) {
	const renewers, joiners, tokensPerJoiner = 6, 3, 12
	// Tokens and identities made before the load.
	tokens := make([][]string, joiners)
	var wg sync.WaitGroup
	for j := range joiners {
		tokens[j] = make([]string, tokensPerJoiner)
		wg.Go(func() {
			for k := range tokensPerJoiner {
				tokens[j][k] = iss.CreateToken(t, "ci", time.Hour)
			}
		})
	}
	wg.Wait()
	held := make([]*identity.Credentials, renewers)
	for i := range held {
		_, held[i] = joinDirect(t, iss, iss.CreateToken(t, "ci", time.Hour))
	}

	// The load: each worker sends requests one after another until one
	// fails for want of an answer, which it keeps to send again.
	ic := issuerAt(t, iss)
	var ok atomic.Int64
	lost := make([]*pending, renewers+joiners)
	joined := make([][]*identity.Credentials, joiners)
	unexpected := func(what string, err error) {
		t.Errorf("%s before the kill: %v", what, err)
	}
	answered := func(err error) bool {
		var ie *issuerclient.Error
		return err == nil || errors.As(err, &ie)
	}
	for i := range renewers {
		wg.Go(func() {
			for {
				keys, pub := newKeys(t)
				resp, err := ic.Renew(context.Background(), held[i].TLS, api.RenewRequest{Keys: pub, TTLSeconds: 600})
				if !answered(err) {
					lost[i] = &pending{keys: keys, cur: held[i]}
					return
				}
				if err != nil {
					unexpected("renewal", err)
					return
				}
				creds, err := identity.Assemble(keys, resp, time.Now())
				if err != nil {
					t.Error(err)
					return
				}
				held[i] = creds
				ok.Add(1)
			}
		})
	}
	for j := range joiners {
		wg.Go(func() {
			for _, tok := range tokens[j] {
				keys, pub := newKeys(t)
				resp, err := ic.Join(context.Background(), nil, api.JoinRequest{JoinMethod: "token", Token: tok, Keys: pub, TTLSeconds: 600})
				if !answered(err) {
					lost[renewers+j] = &pending{token: tok, keys: keys}
					return
				}
				if err != nil {
					unexpected("join", err)
					return
				}
				creds, err := identity.Assemble(keys, resp, time.Now())
				if err != nil {
					t.Error(err)
					return
				}
				joined[j] = append(joined[j], creds)
				ok.Add(1)
			}
		})
	}
	harness.Eventually(t, 30*time.Second, "requests answered under load", func() error {
		if n := ok.Load(); n < 30 {
			return fmt.Errorf("%d answered", n)
		}
		return nil
	})
	if err := iss.Proc.Cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	var lostJoins, lostRenewals int
	for _, p := range lost {
		switch {
		case p == nil:
		case p.token != "":
			lostJoins++
		default:
			lostRenewals++
		}
	}
	t.Logf("killed after %d answers; lost the answers of %d joins and %d renewals in flight", ok.Load(), lostJoins, lostRenewals)

	// The store as the kill left it: whole joins only, and which of the
	// lost requests had committed.
	byID, used := readStore(t, location)
	committed := make([]bool, len(lost))
	for i, p := range lost {
		switch {
		case p == nil:
		case p.token != "":
			committed[i] = used[authority.HashToken(p.token)] != ""
		default:
			committed[i] = byID[p.cur.Instance].Generation == p.cur.Generation+1
		}
	}

	iss.Start(t)
	ic = issuerAt(t, iss) // no connection of the dead process
	outcomes := map[string]int{}
	for i, p := range lost {
		if p == nil {
			continue // a joiner that ran out of tokens
		}
		pub, err := p.keys.Public()
		if err != nil {
			t.Fatal(err)
		}
		if p.token != "" {
			resp, err := ic.Join(context.Background(), nil, api.JoinRequest{JoinMethod: "token", Token: p.token, Keys: pub, TTLSeconds: 600})
			switch {
			case err == nil && !committed[i]:
				outcomes["join ok"]++
				creds, err := identity.Assemble(p.keys, resp, time.Now())
				if err != nil {
					t.Fatal(err)
				}
				joined[i-renewers] = append(joined[i-renewers], creds)
			case err != nil && committed[i] && errCode(err) == api.CodeTokenUsed:
				outcomes["join committed, then token_used"]++
			case committed[i]:
				t.Errorf("join that had committed, sent again after the restart: %v; want %s", err, api.CodeTokenUsed)
			default:
				t.Errorf("join that had not committed, sent again after the restart: %v; want success", err)
			}
			continue
		}
		resp, err := ic.Renew(context.Background(), p.cur.TLS, api.RenewRequest{Keys: pub, TTLSeconds: 600})
		if err != nil {
			t.Errorf("renewal of generation %d sent again after the restart: %v; want success", p.cur.Generation, err)
			continue
		}
		creds, err := identity.Assemble(p.keys, resp, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if creds.Generation != p.cur.Generation+1 {
			t.Errorf("renewal of generation %d sent again: generation %d, want %d", p.cur.Generation, creds.Generation, p.cur.Generation+1)
		}
		if committed[i] {
			outcomes["renewal committed, then ok at the same generation"]++
		} else {
			outcomes["renewal ok"]++
		}
		held[i] = creds
	}
	t.Logf("sent again after the restart: %v", outcomes)
	// Every holder renews on from what it holds.
	for i := range held {
		creds, err := renewDirect(ic, held[i])
		if err != nil {
			t.Errorf("renewal of generation %d after the restart: %v", held[i].Generation, err)
			continue
		}
		held[i] = creds
	}
	iss.Stop(t)

	// The store, read with the issuer stopped.
	byID, used = readStore(t, location)
	for _, creds := range held {
		if in := byID[creds.Instance]; in.Generation != creds.Generation {
			t.Errorf("instance %s: generation %d in the store, %d held", creds.Instance, in.Generation, creds.Generation)
		}
	}
	for _, list := range joined {
		for _, creds := range list {
			if in, ok := byID[creds.Instance]; !ok || in.Generation != 1 {
				t.Errorf("joined instance %s: in the store %v at generation %d, want generation 1", creds.Instance, ok, in.Generation)
			}
		}
	}
	t.Logf("%d instances, %d used tokens", len(byID), len(used))
}

// readStore opens the store at location, which no issuer holds, checks
// that it holds whole joins only (each used token names an instance that
// exists, and each instance has the token that made it) and returns its
// instances by ID and the instance each used token made, by token hash.
func readStore(t *testing.T, location string) (map[string]store.Instance, map[string]string) {
	t.Helper()
	s, err := store.Open(location)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	instances, err := s.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	toks, err := s.Tokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]store.Instance{}
	for _, in := range instances {
		byID[in.ID] = in
	}
	used := map[string]string{}
	madeBy := map[string]bool{}
	for _, tok := range toks {
		if tok.ConsumedBy == "" {
			continue
		}
		if _, ok := byID[tok.ConsumedBy]; !ok {
			t.Errorf("token %s… was used by instance %s, which the store does not have: a half-written join", tok.Hash[:12], tok.ConsumedBy)
		}
		used[tok.Hash] = tok.ConsumedBy
		madeBy[tok.ConsumedBy] = true
	}
	for _, in := range instances {
		if !madeBy[in.ID] {
			t.Errorf("instance %s has no used token: a half-written join", in.ID)
		}
	}
	return byID, used
}
