package integration

import (
	"context"
	"errors"
	"fmt"
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
	t.Parallel()
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
			// A refused token is permanent: the state says so, with what
			// an operator must do, rather than "joining".
			if st.Joined || st.State != "refused" {
				t.Errorf("status joined=%v state=%q; want not joined, refused", st.Joined, st.State)
			}
			if r := st.Refusal; r == nil || r.Code != tt.code || !strings.Contains(r.Action, "mwi-issuer token create") {
				t.Errorf("status refusal %+v; want %s, saying to create a token", r, tt.code)
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
	ic, err := issuerclient.New(config.Issuer{Address: iss.Addr, CAPins: []string{iss.Pin}}, nil)
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

// TestCopiedIdentityLocksInstance uses a copy of an identity after its
// owner renewed: the issuer locks that instance, and only it, so that a
// stale identity in the wrong hands cannot stop the rest of the bot.
func TestCopiedIdentityLocksInstance(t *testing.T) {
	t.Parallel()
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
	unlock := "mwi-issuer instance unlock " + original.Instance

	// The copy, used after the owner renewed, presents a stale generation.
	_, err = renewDirect(ic, copied)
	var ie *issuerclient.Error
	if !errors.As(err, &ie) || ie.Code != api.CodeGenerationMismatch {
		t.Fatalf("renewal with the copied identity: %v; want %s", err, api.CodeGenerationMismatch)
	}
	if !strings.Contains(err.Error(), unlock) {
		t.Errorf("refusal %q does not say %q", err, unlock)
	}
	// The instance is locked: the owner's current identity is refused too,
	// with the reason and the way out.
	_, err = renewDirect(ic, renewed)
	if !errors.As(err, &ie) || ie.Code != api.CodeInstanceLocked {
		t.Fatalf("renewal after the lock: %v; want %s", err, api.CodeInstanceLocked)
	}
	for _, want := range []string{"instance " + original.Instance + " is locked: generation mismatch", "; an operator can lift it with " + unlock} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not say %q", err, want)
		}
	}
	ev := iss.FindAudit(t, map[string]any{"event": "instance.lock", "bot": "ci", "instance": original.Instance})
	if ev == nil || !strings.Contains(fmt.Sprint(ev["reason"]), "generation mismatch") {
		t.Errorf("audit lock event = %v; want one naming the instance and the generation mismatch", ev)
	}
	if ev := iss.FindAudit(t, map[string]any{"event": "renew", "outcome": "denied", "instance": original.Instance}); ev == nil {
		t.Error("no audit line for the denied renewal")
	}

	// The point of locking the instance: the bot's other instance, the
	// real mwid, keeps renewing, and a new join of the bot works.
	atLock, err := d.Status(t)
	if err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 30*time.Second, "the other instance renewing", func() error {
		st, err := d.Status(t)
		if err != nil {
			return err
		}
		if st.State != "ready" || st.Generation < atLock.Generation+2 {
			return fmt.Errorf("state %s, generation %d (%d at the lock), error %q", st.State, st.Generation, atLock.Generation, st.LastError)
		}
		return nil
	})
	if st, _ := d.Status(t); strings.Contains(st.LastError, "locked") || st.State == "refused" || st.Refusal != nil {
		t.Errorf("the other instance saw a lock: state %s, %s", st.State, st.LastError)
	}
	if iss.FindAudit(t, map[string]any{"event": "bot.lock"}) != nil {
		t.Error("the bot was locked")
	}
	if _, fresh := joinDirect(t, iss, iss.CreateToken(t, "ci", time.Hour)); fresh.Instance == original.Instance {
		t.Error("a new join got the locked instance")
	}

	// mwi-issuer shows the lock and says how to lift it; bot unlock, which
	// does not lift it, says so too.
	admin := func(args ...string) string {
		t.Helper()
		out, err := harness.Run(context.Background(), 10*time.Second, nil, append([]string{iss.Bins.Issuer}, append(args, "--admin-socket", iss.AdminSock)...)...)
		if err != nil {
			t.Fatalf("mwi-issuer %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	if out := admin("locks"); !strings.Contains(out, original.Instance) || !strings.Contains(out, unlock) || !strings.Contains(out, "generation mismatch") {
		t.Errorf("mwi-issuer locks:\n%s\nwant the instance, the reason and %q", out, unlock)
	}
	if out := admin("bot", "unlock", "ci"); !strings.Contains(out, "bot ci was not locked") || !strings.Contains(out, original.Instance) || !strings.Contains(out, "mwi-issuer instance unlock ID") {
		t.Errorf("mwi-issuer bot unlock:\n%s\nwant it to say the bot was not locked and the instance stays locked", out)
	}
	if _, err := renewDirect(ic, renewed); !errors.As(err, &ie) || ie.Code != api.CodeInstanceLocked {
		t.Fatalf("renewal after bot unlock: %v; want %s", err, api.CodeInstanceLocked)
	}

	// An operator lifts the lock, and the owner's current identity renews.
	if out := admin("instance", "unlock", original.Instance); !strings.Contains(out, "unlocked") {
		t.Errorf("mwi-issuer instance unlock: %s", out)
	}
	if ev := iss.FindAudit(t, map[string]any{"event": "instance.unlock", "outcome": "allowed", "instance": original.Instance}); ev == nil {
		t.Error("no audit line for the unlock")
	}
	after, err := renewDirect(ic, renewed)
	if err != nil {
		t.Fatalf("renewal after the unlock: %v", err)
	}
	if after.Generation != renewed.Generation+1 || after.Instance != original.Instance {
		t.Errorf("renewal after the unlock = instance %s generation %d", after.Instance, after.Generation)
	}
	if out := admin("locks"); !strings.Contains(out, "no locks") {
		t.Errorf("mwi-issuer locks after the unlock:\n%s", out)
	}
	// Unlocking it again is an error naming the instance.
	out, err := harness.Run(context.Background(), 10*time.Second, nil, iss.Bins.Issuer, "instance", "unlock", original.Instance, "--admin-socket", iss.AdminSock)
	if err == nil || !strings.Contains(out, "is not locked") {
		t.Errorf("second instance unlock: %v\n%s", err, out)
	}
}

// TestBotLockByOperator locks a whole bot with mwi-issuer: its running
// instance and new joins are refused until the lock is lifted.
func TestBotLockByOperator(t *testing.T) {
	t.Parallel()
	iss := harness.StartIssuer(t, resources(harness.CurrentUser(t)))
	ic, creds := joinDirect(t, iss, iss.CreateToken(t, "ci", time.Hour))
	run := func(args ...string) (string, error) {
		return harness.Run(context.Background(), 10*time.Second, nil, append([]string{iss.Bins.Issuer}, append(args, "--admin-socket", iss.AdminSock)...)...)
	}
	if out, err := run("bot", "lock", "ci"); err == nil || !strings.Contains(out, "--reason is required") {
		t.Errorf("bot lock without a reason: %v\n%s", err, out)
	}
	if out, err := run("bot", "lock", "ci", "--reason", "decommissioned"); err != nil {
		t.Fatalf("bot lock: %v\n%s", err, out)
	}
	_, err := renewDirect(ic, creds)
	var ie *issuerclient.Error
	if !errors.As(err, &ie) || ie.Code != api.CodeBotLocked || !strings.Contains(err.Error(), "decommissioned; an operator can lift it with mwi-issuer bot unlock ci") {
		t.Fatalf("renewal of a locked bot: %v; want %s with the way out", err, api.CodeBotLocked)
	}
	d := harness.StartDaemon(t, iss, harness.DaemonOptions{Token: iss.CreateToken(t, "ci", time.Hour)})
	st := d.WaitError(t, api.CodeBotLocked, 20*time.Second)
	if st.State != "refused" || st.Refusal == nil || st.Refusal.Code != api.CodeBotLocked ||
		!strings.Contains(st.Refusal.Message, "decommissioned") || !strings.Contains(st.Refusal.Action, "mwi-issuer bot unlock") {
		t.Errorf("status of a daemon of a locked bot: state %q, refusal %+v; want refused, saying how to unlock", st.State, st.Refusal)
	}
	if out, err := d.Ctl("ready"); !strings.Contains(out, "state:") || !strings.Contains(out, "refused") {
		t.Errorf("mwictl ready: %v\n%s\nwant the refused state", err, out)
	}
	if out, _ := d.Ctl("status"); !strings.Contains(out, "mwi-issuer bot unlock") {
		t.Errorf("mwictl status:\n%s\nwant what an operator must do", out)
	}

	if out, err := run("bot", "unlock", "ci"); err != nil || !strings.Contains(out, "bot ci unlocked") {
		t.Fatalf("bot unlock: %v\n%s", err, out)
	}
	if _, err := renewDirect(ic, creds); err != nil {
		t.Errorf("renewal after the unlock: %v", err)
	}
	// Now, rather than after the daemon's backoff.
	if out, err := d.Ctl("renew"); err != nil {
		t.Errorf("mwictl renew after the unlock: %v\n%s", err, out)
	}
	d.WaitState(t, "ready", 20*time.Second)
}

func TestIssuerRestart(t *testing.T) {
	t.Parallel()
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
