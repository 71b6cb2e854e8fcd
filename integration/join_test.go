package integration

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/daemon/identity"
	"github.com/mwi-project/mwi/daemon/issuerclient"
	"github.com/mwi-project/mwi/integration/harness"
)

func TestJoinRefusals(t *testing.T) {
	iss := harness.StartIssuer(t, resources(harness.CurrentUser(t)))
	used := iss.CreateToken(t, "ci", time.Hour)
	first := harness.StartDaemon(t, iss, harness.DaemonOptions{Token: used})
	first.WaitState(t, "ready", 20*time.Second)
	expired := iss.CreateToken(t, "ci", time.Second)
	time.Sleep(1100 * time.Millisecond)

	tests := []struct {
		name   string
		token  string
		code   string // in the daemon's status
		reason string // in the issuer's audit line
	}{
		{"reused token", used, api.CodeTokenUsed, "join token was already used"},
		{"expired token", expired, api.CodeTokenExpired, "join token has expired"},
		{"unknown token", strings.Repeat("ab", 32), api.CodeTokenUnknown, "join token is unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := harness.StartDaemon(t, iss, harness.DaemonOptions{Token: tt.token})
			st := d.WaitError(t, tt.code, 20*time.Second)
			if st.Joined || st.State != "joining" {
				t.Errorf("status joined=%v state=%q; want not joined", st.Joined, st.State)
			}
			if !strings.Contains(st.LastError, tt.reason) {
				t.Errorf("status error %q does not say %q", st.LastError, tt.reason)
			}
			// The agent lists nothing, and mwictl status says why and fails.
			out, err := d.Ctl("status")
			if err == nil || !strings.Contains(out, tt.reason) {
				t.Errorf("mwictl status: err %v, output:\n%s\nwant a failure naming %q", err, out, tt.reason)
			}
			if !strings.Contains(d.Proc.Output(), tt.reason) {
				t.Errorf("mwid log does not name the reason %q", tt.reason)
			}
			if ev := iss.FindAudit(t, map[string]any{"event": "join", "outcome": "denied", "reason": tt.reason}); ev == nil {
				t.Errorf("no audit line for the denied join with reason %q", tt.reason)
			}
		})
	}
}

// joinDirect joins the issuer with the same client code mwid uses, and
// returns the credentials, so a test can hold on to an identity as a thief
// who copied it would.
func joinDirect(t *testing.T, iss *harness.Issuer, token string) (*issuerclient.Client, *identity.Credentials) {
	t.Helper()
	ic, err := issuerclient.New(config.Issuer{Address: iss.Addr, CAPins: []string{iss.Pin}})
	if err != nil {
		t.Fatal(err)
	}
	keys, pub := newKeys(t)
	resp, err := ic.Join(context.Background(), nil, api.JoinRequest{JoinMethod: "token", Token: token, Keys: pub, TTLSeconds: 600})
	if err != nil {
		t.Fatalf("join: %v", err)
	}
	creds, err := identity.Assemble(keys, resp, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ic, creds
}

func renewDirect(ic *issuerclient.Client, cur *identity.Credentials) (*identity.Credentials, error) {
	keys, err := identity.NewKeys()
	if err != nil {
		return nil, err
	}
	pub, err := keys.Public()
	if err != nil {
		return nil, err
	}
	resp, err := ic.Renew(context.Background(), cur.TLS, api.RenewRequest{Keys: pub, TTLSeconds: 600})
	if err != nil {
		return nil, err
	}
	return identity.Assemble(keys, resp, time.Now())
}

func newKeys(t *testing.T) (*identity.Keys, api.PublicKeys) {
	t.Helper()
	keys, err := identity.NewKeys()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := keys.Public()
	if err != nil {
		t.Fatal(err)
	}
	return keys, pub
}

func TestCopiedIdentityLocksBot(t *testing.T) {
	iss := harness.StartIssuer(t, resources(harness.CurrentUser(t)))
	// A real mwid of the same bot, renewing every few seconds.
	d := harness.StartDaemon(t, iss, harness.DaemonOptions{Token: iss.CreateToken(t, "ci", time.Hour), TTL: 10 * time.Second})
	d.WaitState(t, "ready", 20*time.Second)

	ic, original := joinDirect(t, iss, iss.CreateToken(t, "ci", time.Hour))
	copied := original // what a thief took from the machine
	renewed, err := renewDirect(ic, original)
	if err != nil {
		t.Fatalf("the owner's renewal: %v", err)
	}
	if renewed.Generation != original.Generation+1 {
		t.Fatalf("renewal moved generation %d to %d; want +1", original.Generation, renewed.Generation)
	}

	// The copy, used after the owner renewed, presents a stale generation.
	_, err = renewDirect(ic, copied)
	var ie *issuerclient.Error
	if !errors.As(err, &ie) || ie.Code != api.CodeGenerationMismatch {
		t.Fatalf("renewal with the copied identity: %v; want %s", err, api.CodeGenerationMismatch)
	}
	// The bot is locked: the owner's current identity is refused too, and
	// so is the other instance of the bot, the real mwid.
	if _, err := renewDirect(ic, renewed); !errors.As(err, &ie) || ie.Code != api.CodeBotLocked {
		t.Fatalf("renewal after the lock: %v; want %s", err, api.CodeBotLocked)
	}
	d.WaitError(t, api.CodeBotLocked, 20*time.Second)
	if ev := iss.FindAudit(t, map[string]any{"event": "bot.lock", "bot": "ci"}); ev == nil || !strings.Contains(ev["reason"].(string), "generation mismatch") {
		t.Errorf("audit lock event = %v; want one naming the generation mismatch", ev)
	}
	if ev := iss.FindAudit(t, map[string]any{"event": "renew", "outcome": "denied", "instance": original.Instance}); ev == nil {
		t.Error("no audit line for the denied renewal")
	}
	// A new join for a locked bot is refused as well.
	d2 := harness.StartDaemon(t, iss, harness.DaemonOptions{Token: iss.CreateToken(t, "ci", time.Hour)})
	d2.WaitError(t, api.CodeBotLocked, 20*time.Second)

	// An operator lifts the lock, and the bot can join again.
	if out, err := harness.Run(context.Background(), 10*time.Second, nil, iss.Bins.Issuer, "bot", "unlock", "ci", "--admin-socket", iss.AdminSock); err != nil {
		t.Fatalf("bot unlock: %v\n%s", err, out)
	}
	joinDirect(t, iss, iss.CreateToken(t, "ci", time.Hour))
}

func TestIssuerRestart(t *testing.T) {
	iss := harness.StartIssuer(t, resources(harness.CurrentUser(t)))
	token := iss.CreateToken(t, "ci", time.Hour)
	d := harness.StartDaemon(t, iss, harness.DaemonOptions{Token: token, TTL: 10 * time.Second})
	before := d.WaitState(t, "ready", 20*time.Second)

	iss.Stop(t)
	iss.Start(t)

	// The consumed token stays consumed across the restart.
	d2 := harness.StartDaemon(t, iss, harness.DaemonOptions{Token: token})
	d2.WaitError(t, api.CodeTokenUsed, 20*time.Second)

	// The first daemon's renewals go on against the restarted issuer: the
	// generation it holds survived the restart.
	harness.Eventually(t, 30*time.Second, "renewal after the restart", func() error {
		st, err := d.Status(t)
		if err != nil {
			return err
		}
		if st.State != "ready" || st.Generation < before.Generation+2 {
			return errors.New("state " + st.State + ", error " + st.LastError)
		}
		return nil
	})
}
