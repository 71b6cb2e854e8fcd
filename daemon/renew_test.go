package daemon

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/localapi"
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
	h := localapi.Routes(s, s.metrics.Handler(), s.log)
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
