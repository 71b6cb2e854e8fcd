package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/issuerclient"
	"github.com/mwi-project/mwi/daemon/localapi"
	"github.com/mwi-project/mwi/daemon/renewal"
)

// TestRenewRequestsShared checks that POST /v1/renew cannot be used to make
// mwid call the issuer over and over: 100 concurrent requests, then 50
// sequential ones, all within renew_min_interval of the join, make no call
// beyond the join, and each answer says it was shared.
func TestRenewRequestsShared(t *testing.T) {
	f := newFakeIssuer(t)
	t.Setenv("MWI_TEST_JOIN", "s3cret")
	s, _ := newTestServer(t, f, "  join_method: token\n  token: {env: MWI_TEST_JOIN}", "  []\n")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.loop.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	issuerCalls := func() int {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.joins) + f.renewals
	}
	h := localapi.Routes(backend{s, s.ssh}, s.metrics.Handler(), s.log)
	renew := func() (int, api.Status, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "http://mwid/v1/renew", nil))
		var st api.Status
		json.Unmarshal(rec.Body.Bytes(), &st)
		return rec.Code, st, rec.Body.String()
	}

	const concurrent = 100
	var wg sync.WaitGroup
	for range concurrent {
		wg.Go(func() {
			code, st, body := renew()
			if code != http.StatusOK || st.Renewal == nil {
				t.Errorf("POST /v1/renew = %d %s", code, body)
			}
		})
	}
	wg.Wait()
	if got := issuerCalls(); got > 2 {
		t.Errorf("%d concurrent renew requests made %d calls to the issuer; want the join and at most one more", concurrent, got)
	}

	before := issuerCalls()
	for i := range 50 {
		code, st, body := renew()
		if code != http.StatusOK || st.Renewal == nil || !st.Renewal.Shared || !strings.Contains(st.Renewal.Message, "renew_min_interval (10s)") {
			t.Fatalf("sequential request %d = %d %s; want 200, shared with the last renewal", i, code, body)
		}
	}
	if got := issuerCalls() - before; got != 0 {
		t.Errorf("50 sequential renew requests within renew_min_interval made %d calls to the issuer; want none", got)
	}
}

// TestStatusRefused checks that an issuer's permanent refusal puts mwid in
// the "refused" state, which status and readiness name with the code and
// what an operator must do, and that a transient failure or a success
// clears it.
func TestStatusRefused(t *testing.T) {
	f := newFakeIssuer(t)
	t.Setenv("MWI_TEST_JOIN", "s3cret")
	s, _ := newTestServer(t, f, "  join_method: token\n  token: {env: MWI_TEST_JOIN}", "  []\n")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.loop.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	if err := s.loop.RenewNow(ctx); err != nil {
		t.Fatalf("join: %v", err)
	}
	refuse := func(r *refusal) {
		f.mu.Lock()
		f.refuse = r
		f.mu.Unlock()
	}

	tests := []struct {
		name    string
		refusal *refusal
		state   string
		code    string // of the refusal status shows; none if empty
		action  string
	}{
		{"instance locked", &refusal{403, api.CodeInstanceLocked, "instance 7f3c is locked: generation mismatch"},
			"refused", api.CodeInstanceLocked, "mwi-issuer instance unlock"},
		{"audit unavailable is transient", &refusal{503, api.CodeAuditUnavailable, "audit log unavailable"},
			"degraded", "", ""},
		{"bot locked", &refusal{403, api.CodeBotLocked, "bot ci is locked: decommissioned"},
			"refused", api.CodeBotLocked, "mwi-issuer bot unlock"},
		{"rate limited join is transient", &refusal{429, api.CodeJoinDenied, "too many challenges"},
			"degraded", "", ""},
		{"token used", &refusal{401, api.CodeTokenUsed, "token already used"},
			"refused", api.CodeTokenUsed, "mwi-issuer token create"},
		{"lifted", nil, "ready", "", ""},
	}
	for _, tt := range tests {
		refuse(tt.refusal)
		err := s.loop.RenewNow(ctx)
		if (err != nil) != (tt.refusal != nil) {
			t.Fatalf("%s: RenewNow = %v", tt.name, err)
		}
		st := s.Status()
		if st.State != tt.state || !st.Joined {
			t.Errorf("%s: state %q joined %v; want %q, joined", tt.name, st.State, st.Joined, tt.state)
		}
		if tt.code == "" {
			if st.Refusal != nil {
				t.Errorf("%s: refusal %+v; want none", tt.name, st.Refusal)
			}
		} else if st.Refusal == nil || st.Refusal.Code != tt.code || st.Refusal.Message != tt.refusal.message ||
			!strings.Contains(st.Refusal.Action, tt.action) {
			t.Errorf("%s: refusal %+v; want %s, saying %q", tt.name, st.Refusal, tt.code, tt.action)
		}
		if tt.refusal != nil && !strings.Contains(st.LastError, tt.refusal.message) {
			t.Errorf("%s: last error %q", tt.name, st.LastError)
		}
		// The held credentials still work: ready, in the state named.
		if r := s.Readiness(); r.State != tt.state || !r.Ready {
			t.Errorf("%s: readiness %+v; want ready, state %q", tt.name, r, tt.state)
		}
	}

	// A reload, even of an unchanged file (a new token written into the
	// same token file, say), tries at once rather than after the long
	// backoff.
	refuse(&refusal{403, api.CodeBotLocked, "bot ci is locked: decommissioned"})
	if err := s.loop.RenewNow(ctx); err == nil {
		t.Fatal("RenewNow succeeded with the bot locked")
	}
	refuse(nil)
	if _, err := s.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for s.Status().State != "ready" {
		if time.Now().After(deadline) {
			t.Fatalf("after a reload, state %q; want a renewal at once, and ready", s.Status().State)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestClassifyTokenRefusals checks that a refused join token, which an
// operator fixes by replacing mwid's token file (read at every join), is
// retried on the usual schedule, while a lock waits long.
func TestClassifyTokenRefusals(t *testing.T) {
	for _, tt := range []struct {
		code string
		want renewal.Class
	}{
		{api.CodeTokenUsed, renewal.Transient},
		{api.CodeTokenUnknown, renewal.Transient},
		{api.CodeTokenExpired, renewal.Transient},
		{api.CodeBotLocked, renewal.Permanent},
		{api.CodeInstanceLocked, renewal.Permanent},
	} {
		err := fmt.Errorf("join: %w", &issuerclient.Error{Status: http.StatusForbidden, Code: tt.code, Message: "refused"})
		if got := classify(err); got != tt.want {
			t.Errorf("%s: class %v, want %v", tt.code, got, tt.want)
		}
		if _, ok := issuerclient.Refused(err); !ok {
			t.Errorf("%s: not reported as a refusal", tt.code)
		}
	}
}
