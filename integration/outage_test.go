package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/daemon/issuerclient"
	"github.com/mwi-project/mwi/integration/harness"
	"github.com/mwi-project/mwi/internal/pgtest"
)

// TestStoreOutage stops the issuer's PostgreSQL for longer than mwid's
// renewal interval. Meanwhile the issuer refuses what needs the database
// with 503 store_unavailable and the reason, and its health says so;
// mwid stays degraded, serving its unexpired credentials through its agent.
// When the database is back, both recover by themselves: mwid renews with
// the same identity, and health is 200 again.
func TestStoreOutage(t *testing.T) {
	t.Parallel()
	pg := pgtest.StartT(t)
	url, err := pg.CreateDatabase("mwi", "")
	if err != nil {
		t.Fatal(err)
	}
	iss := harness.StartIssuerWith(t, resources(harness.CurrentUser(t)), harness.IssuerOptions{Args: []string{"--store", url}})
	token := iss.CreateToken(t, "ci", time.Hour)
	spare := iss.CreateToken(t, "ci", time.Hour)
	// With a 24s certificate_ttl, mwid renews about every 16s.
	d := harness.StartDaemon(t, iss, harness.DaemonOptions{Token: token, TTL: 24 * time.Second})
	joined := d.WaitState(t, "ready", 30*time.Second)

	// Stop the database just after a renewal, so that the next one falls
	// inside the outage.
	var before api.Status
	harness.Eventually(t, 40*time.Second, "a renewal to start the outage after", func() error {
		st, err := d.Status(t)
		if err != nil {
			return err
		}
		if st.State != "ready" || st.Generation <= joined.Generation || st.NextRenewal == nil {
			return fmt.Errorf("state %s, generation %d, error %q", st.State, st.Generation, st.LastError)
		}
		before = st
		return nil
	})
	pg.Halt()
	halted := time.Now()
	t.Logf("database halted at generation %d; next renewal due at %s", before.Generation, before.NextRenewal.Format(time.TimeOnly))

	// mwid's scheduled renewal comes and is refused with the reason; it
	// stays degraded, with the same generation and unexpired credentials.
	st := d.WaitError(t, "cannot reach its database", 60*time.Second)
	if !time.Now().After(*before.NextRenewal) {
		t.Fatalf("mwid failed to renew before its renewal was due (%s): %q", before.NextRenewal, st.LastError)
	}
	if !strings.Contains(st.LastError, "connection refused") {
		t.Errorf("mwid's last error %q does not say why", st.LastError)
	}
	st, err = d.Status(t)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != "degraded" || st.Generation != before.Generation || st.Refusal != nil {
		t.Errorf("during the outage mwid is %s at generation %d (refusal %v); want degraded at %d", st.State, st.Generation, st.Refusal, before.Generation)
	}
	now := time.Now()
	for _, c := range st.Credentials {
		if !c.Expires.After(now) {
			t.Errorf("during the outage mwid's %s credential expired at %s", c.Kind, c.Expires)
		}
	}
	if certs, err := listedCerts(dialAgent(t, d.AgentSock)); err != nil || len(certs) == 0 {
		t.Errorf("during the outage the agent lists %d certificates (%v); want mwid's", len(certs), err)
	}

	// The issuer answers a raw join and its health with the reason.
	ic, err := issuerclient.New(config.Issuer{Address: iss.Addr, CAPins: []string{iss.Pin}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, pub := newKeys(t)
	_, err = ic.Join(context.Background(), nil, api.JoinRequest{JoinMethod: api.JoinMethodToken, Token: spare, Keys: pub, TTLSeconds: 600})
	var ie *issuerclient.Error
	if !errors.As(err, &ie) || ie.Status != http.StatusServiceUnavailable || ie.Code != api.CodeStoreUnavailable {
		t.Errorf("join during the outage: %v; want a 503 %s", err, api.CodeStoreUnavailable)
	}
	if status, e := healthz(t, iss); status != http.StatusServiceUnavailable || e.Code != api.CodeStoreUnavailable ||
		!strings.Contains(e.Message, "connection refused") {
		t.Errorf("healthz during the outage = %d %+v; want 503 %s naming the cause", status, e, api.CodeStoreUnavailable)
	}
	if iss.Proc.Exited() {
		t.Fatalf("the issuer exited during the outage:\n%s", iss.Proc.Output())
	}

	if err := pg.Resume(); err != nil {
		t.Fatal(err)
	}
	t.Logf("database back after %s", time.Since(halted).Round(time.Second))

	// Both recover without anyone acting: mwid renews the same identity,
	// never having lost valid credentials, and health is 200.
	harness.Eventually(t, 60*time.Second, "a renewal after the outage", func() error {
		st, err := d.Status(t)
		if err != nil {
			return err
		}
		if st.State == "expired" {
			t.Fatalf("mwid's credentials expired during the outage: %+v", st)
		}
		if st.State != "ready" || st.Generation <= before.Generation {
			return fmt.Errorf("state %s, generation %d, error %q", st.State, st.Generation, st.LastError)
		}
		if st.Instance != before.Instance {
			t.Fatalf("mwid is instance %s after the outage, was %s", st.Instance, before.Instance)
		}
		return nil
	})
	harness.Eventually(t, 30*time.Second, "healthz 200 after the outage", func() error {
		if status, e := healthz(t, iss); status != http.StatusOK {
			return fmt.Errorf("healthz = %d %+v", status, e)
		}
		return nil
	})
	// The spare token was not consumed by the join refused meanwhile.
	if _, err := ic.Join(context.Background(), nil, api.JoinRequest{JoinMethod: api.JoinMethodToken, Token: spare, Keys: pub, TTLSeconds: 600}); err != nil {
		t.Errorf("join with the spare token after the outage: %v", err)
	}
}

// healthz asks the issuer's health, returning the status and the error it
// answers with, if any.
func healthz(t *testing.T, iss *harness.Issuer) (int, api.Error) {
	t.Helper()
	res, err := issuerHTTP(t, iss).Get("https://" + iss.Addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	var eb api.ErrorBody
	if res.StatusCode != http.StatusOK {
		if err := json.Unmarshal(body, &eb); err != nil {
			t.Errorf("healthz body %q: %v", body, err)
		}
	}
	return res.StatusCode, eb.Error
}
