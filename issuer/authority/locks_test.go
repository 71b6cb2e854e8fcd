package authority_test

import (
	"bytes"
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/fault"
	"github.com/mwi-project/mwi/internal/httpjson"
	"github.com/mwi-project/mwi/internal/sshaccess"
	"github.com/mwi-project/mwi/issuer/audit"
	"github.com/mwi-project/mwi/issuer/ca"
)

// TestTokenLock locks a token resource: every join with it, new or
// keeping its instance, is refused as token_locked and audited, until the
// lock is removed; the KRL revokes the instances that joined with it.
func TestTokenLock(t *testing.T) {
	e := newAttestEnv(t)
	ctx := context.Background()
	ghJoin := func(client *ca.Identity) (api.Credentials, error) {
		raw := e.p.Mint(e.p.GitHubClaims("mwi", "org/repo"))
		return e.auth.Join(ctx, joinReq(t, api.JoinMethodGitHub, "gh", raw), client, "192.0.2.1:1234")
	}
	first, err := ghJoin(nil)
	if err != nil {
		t.Fatal(err)
	}
	other := e.join(t, e.token(t, "ci")) // same bot, another way in

	offset := e.audit.Len()
	l, err := e.auth.AddLock(ctx, api.LockTarget{Token: "gh"}, "workflow leaked", 0)
	if err != nil || l.Token != "gh" || l.Bot != "" || l.Reason != "workflow leaked" || !l.Expires.IsZero() {
		t.Fatalf("AddLock = %+v, %v", l, err)
	}
	if n := e.auditCount(t, offset, audit.EventTokenLock, audit.Allowed); n != 1 {
		t.Errorf("%d token.lock audit lines, want 1", n)
	}

	for _, tc := range []struct {
		name   string
		client *ca.Identity
	}{
		{"new instance", nil},
		{"kept instance", &ca.Identity{Bot: "ci", Instance: first.Instance, Generation: 1}},
	} {
		offset := e.audit.Len()
		_, err := ghJoin(tc.client)
		e.expectDenied(t, err, offset, audit.EventJoin, api.CodeTokenLocked, http.StatusForbidden)
	}
	// The bot's other instances go on.
	if _, err := e.renew(t, ca.Identity{Bot: "ci", Instance: other.Instance, Generation: 1}); err != nil {
		t.Errorf("renew of an instance that joined otherwise: %v", err)
	}
	data, _, err := e.auth.KRL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, []byte(sshaccess.KeyID("ci", first.Instance))) || bytes.Contains(data, []byte(other.Instance)) {
		t.Error("the KRL does not revoke exactly the token's instance")
	}

	offset = e.audit.Len()
	if _, err := e.auth.RemoveLock(ctx, api.LockTarget{Token: "gh"}); err != nil {
		t.Fatal(err)
	}
	if n := e.auditCount(t, offset, audit.EventTokenUnlock, audit.Allowed); n != 1 {
		t.Errorf("%d token.unlock audit lines, want 1", n)
	}
	if _, err := ghJoin(nil); err != nil {
		t.Errorf("join after unlock: %v", err)
	}
}

// TestLockTTL checks that a lock with a lifetime refuses until it ends,
// and is then neither enforced nor listed nor published.
func TestLockTTL(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	creds := e.join(t, e.token(t, "ci"))
	id := ca.Identity{Bot: "ci", Instance: creds.Instance, Generation: 1}
	offset := e.audit.Len()
	l, err := e.auth.AddLock(ctx, api.LockTarget{Bot: "ci"}, "incident", time.Hour)
	if err != nil || !l.Expires.Equal(e.now.Add(time.Hour)) {
		t.Fatalf("AddLock = %+v, %v; want expiry in an hour", l, err)
	}
	for _, line := range e.auditLines(t, offset) {
		if line["event"] == audit.EventBotLock && line["expires"] == nil {
			t.Errorf("lock audit line without its expiry: %v", line)
		}
	}
	if _, err := e.renew(t, id); err == nil {
		t.Fatal("renewal allowed under a lock")
	}
	list, tag, err := e.auth.LockList(ctx)
	if err != nil || len(list.Locks) != 1 || !list.Now.Equal(e.now) {
		t.Fatalf("LockList = %+v, %v", list, err)
	}
	krlBefore, _, _ := e.auth.KRL(ctx)

	e.now = e.now.Add(time.Hour)
	if _, err := e.renew(t, id); err != nil {
		t.Errorf("renewal after the lock's expiry: %v", err)
	}
	list, tagAfter, err := e.auth.LockList(ctx)
	if err != nil || len(list.Locks) != 0 || tagAfter == tag {
		t.Errorf("LockList after expiry = %+v, %q, %v; want none and a new tag", list, tagAfter, err)
	}
	if data, _, _ := e.auth.KRL(ctx); bytes.Contains(data, []byte(creds.Instance)) || !bytes.Contains(krlBefore, []byte(creds.Instance)) {
		t.Error("the KRL revokes the bot's instance after its lock expired, or did not before")
	}
	// An expired lock is no lock: removing it says so.
	if _, err := e.auth.RemoveLock(ctx, api.LockTarget{Bot: "ci"}); !isCode(err, api.CodeNotFound) {
		t.Errorf("RemoveLock of an expired lock: %v; want not_found", err)
	}
}

func isCode(err error, code string) bool {
	e, ok := fault.As(err)
	return ok && e.Code == code
}

func TestLockTargetRefusals(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	creds := e.join(t, e.token(t, "ci"))
	for _, tc := range []struct {
		name   string
		event  string
		do     func() error
		code   string
		status int
	}{
		{"no target", audit.EventRequest, func() error { _, err := e.auth.AddLock(ctx, api.LockTarget{}, "r", 0); return err }, api.CodeBadRequest, http.StatusBadRequest},
		{"two targets", audit.EventRequest, func() error {
			_, err := e.auth.AddLock(ctx, api.LockTarget{Bot: "ci", Instance: creds.Instance}, "r", 0)
			return err
		}, api.CodeBadRequest, http.StatusBadRequest},
		{"negative lifetime", audit.EventBotLock, func() error { _, err := e.auth.AddLock(ctx, api.LockTarget{Bot: "ci"}, "r", -time.Second); return err }, api.CodeBadRequest, http.StatusBadRequest},
		{"unknown token", audit.EventTokenLock, func() error { _, err := e.auth.AddLock(ctx, api.LockTarget{Token: "nope"}, "r", 0); return err }, api.CodeNotFound, http.StatusNotFound},
		{"removal without a target", audit.EventRequest, func() error { _, err := e.auth.RemoveLock(ctx, api.LockTarget{}); return err }, api.CodeBadRequest, http.StatusBadRequest},
		{"removal of an unlocked bot", audit.EventBotUnlock, func() error { _, err := e.auth.RemoveLock(ctx, api.LockTarget{Bot: "ci"}); return err }, api.CodeNotFound, http.StatusNotFound},
		{"removal of an unlocked token", audit.EventTokenUnlock, func() error { _, err := e.auth.RemoveLock(ctx, api.LockTarget{Token: "gh"}); return err }, api.CodeNotFound, http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			offset := e.audit.Len()
			e.expectDenied(t, tc.do(), offset, tc.event, tc.code, tc.status)
		})
	}
}

// TestKRL checks what the KRL revokes for each kind of lock, and that it
// changes, with a new version and tag, only when that does.
func TestKRL(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ci1, ci2 := e.join(t, e.token(t, "ci")), e.join(t, e.token(t, "ci"))
	web := e.join(t, e.token(t, "web"))
	ids := map[string]string{
		"ci1": sshaccess.KeyID("ci", ci1.Instance), "ci2": sshaccess.KeyID("ci", ci2.Instance), "web": sshaccess.KeyID("web", web.Instance),
	}
	check := func(step string, want ...string) (string, uint64) {
		t.Helper()
		data, tag, err := e.auth.KRL(ctx)
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		if !bytes.HasPrefix(data, []byte("SSHKRL\n\x00")) {
			t.Fatalf("%s: not a KRL", step)
		}
		for name, id := range ids {
			wanted := false
			for _, w := range want {
				wanted = wanted || w == name
			}
			if bytes.Contains(data, []byte(id)) != wanted {
				t.Errorf("%s: KRL revokes %s: %v, want %v", step, name, !wanted, wanted)
			}
		}
		again, tagAgain, _ := e.auth.KRL(ctx)
		if !bytes.Equal(again, data) || tagAgain != tag {
			t.Errorf("%s: the KRL changed without a change of locks", step)
		}
		return tag, versionOf(data)
	}
	tag0, v0 := check("no locks")
	if _, err := e.auth.LockBot(ctx, "ci", "r"); err != nil {
		t.Fatal(err)
	}
	tag1, v1 := check("bot ci locked", "ci1", "ci2")
	if _, err := e.auth.LockInstance(ctx, web.Instance, "r"); err != nil {
		t.Fatal(err)
	}
	tag2, v2 := check("bot ci and an instance of web locked", "ci1", "ci2", "web")
	if err := e.auth.UnlockBot(ctx, "ci"); err != nil {
		t.Fatal(err)
	}
	tag3, v3 := check("instance of web locked", "web")
	if tag0 == tag1 || tag1 == tag2 || tag2 == tag3 || !(v0 < v1 && v1 < v2 && v2 < v3) {
		t.Errorf("tags %s %s %s %s, versions %d %d %d %d: want each new", tag0, tag1, tag2, tag3, v0, v1, v2, v3)
	}
}

// versionOf returns the krl_version of a KRL: after the 8-byte magic and
// the 4-byte format version.
func versionOf(data []byte) uint64 {
	var v uint64
	for _, b := range data[12:20] {
		v = v<<8 | uint64(b)
	}
	return v
}

// TestSSHRefusal records refusals that hosts report, and limits them per
// reporting instance so that one host cannot flood the audit log.
func TestSSHRefusal(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	host := ca.Identity{Bot: "web", Instance: "host-1", Generation: 3}
	r := api.SSHRefusal{Login: "root", Bot: "ci", Instance: "abc", KeyID: "bot=ci instance=abc", Serial: "42", Reason: "locked", Host: "db-1"}
	offset := e.audit.Len()
	if err := e.auth.SSHRefusal(ctx, host, r, "192.0.2.9:5555"); err != nil {
		t.Fatal(err)
	}
	lines := e.auditLines(t, offset)
	if len(lines) != 1 {
		t.Fatalf("%d audit lines, want 1", len(lines))
	}
	want := map[string]any{"event": "ssh_refused", "outcome": "denied", "reporter_instance": "host-1", "reporter_bot": "web",
		"host": "db-1", "login": "root", "bot": "ci", "instance": "abc", "serial": "42", "reason": "locked"}
	for k, v := range want {
		if lines[0][k] != v {
			t.Errorf("audit %s = %v, want %v", k, lines[0][k], v)
		}
	}
	if err := e.auth.SSHRefusal(ctx, host, api.SSHRefusal{Login: "root"}, "r"); !isCode(err, api.CodeBadRequest) {
		t.Errorf("a refusal without a reason: %v; want bad_request", err)
	}

	// The burst, then refusals, while another host is unaffected.
	var limited int
	for range 100 {
		err := e.auth.SSHRefusal(ctx, host, r, "r")
		if herr, ok := fault.As(err); ok && httpjson.Status(herr.Kind) == http.StatusTooManyRequests {
			limited++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if limited == 0 || limited == 100 {
		t.Errorf("%d of 100 reports limited; want some, not all", limited)
	}
	if err := e.auth.SSHRefusal(ctx, ca.Identity{Bot: "web", Instance: "host-2"}, r, "r"); err != nil {
		t.Errorf("another host's report: %v", err)
	}
	e.now = e.now.Add(time.Minute)
	offset = e.audit.Len()
	if err := e.auth.SSHRefusal(ctx, host, r, "r"); err != nil {
		t.Fatal(err)
	}
	if l := e.auditLines(t, offset); len(l) != 1 || l[0]["unrecorded_before"] != float64(limited) {
		t.Errorf("audit lines %v; want one that counts the %d unrecorded", l, limited)
	}
}
