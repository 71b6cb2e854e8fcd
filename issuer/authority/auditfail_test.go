package authority_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/fault"
	"github.com/mwi-project/mwi/internal/httpjson"
	"github.com/mwi-project/mwi/issuer/audit"
	"github.com/mwi-project/mwi/issuer/ca"
	"github.com/mwi-project/mwi/issuer/store"
)

// faultyWriter fails the writes whose line failIf picks, as a full disk
// does, and keeps the others.
type faultyWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	failIf func(line string) bool
}

func (w *faultyWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failIf != nil && w.failIf(string(p)) {
		return 0, syscall.ENOSPC
	}
	return w.buf.Write(p)
}

func (w *faultyWriter) set(failIf func(string) bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.failIf = failIf
}

func failAll(string) bool { return true }

// TestAuditFailureRefusesIssuance writes the audit log to a writer that
// fails: every allowed decision must then be refused with
// audit_unavailable, and nothing issued.
func TestAuditFailureRefusesIssuance(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		failIf func(string) bool
		// run prepares with a working audit log, then calls fail and
		// makes the request that must be refused. It returns the
		// request's error and a check to run after the log recovers.
		run func(t *testing.T, e *attestEnv, fail func()) (error, func(t *testing.T))
	}{
		{"token join", failAll, func(t *testing.T, e *attestEnv, fail func()) (error, func(*testing.T)) {
			tok := e.token(t, "ci")
			fail()
			_, err := e.auth.Join(ctx, api.JoinRequest{JoinMethod: api.JoinMethodToken, Token: tok, Keys: newKeys(t).pub, TTLSeconds: 600}, nil, "r")
			return err, nil
		}},
		// The record that names the certificates is the one that must be
		// written.
		{"record naming the certificates", func(l string) bool { return strings.Contains(l, `"identity_serial"`) }, func(t *testing.T, e *attestEnv, fail func()) (error, func(*testing.T)) {
			tok := e.token(t, "ci")
			fail()
			_, err := e.auth.Join(ctx, api.JoinRequest{JoinMethod: api.JoinMethodToken, Token: tok, Keys: newKeys(t).pub, TTLSeconds: 600}, nil, "r")
			return err, nil
		}},
		{"renewal", failAll, func(t *testing.T, e *attestEnv, fail func()) (error, func(*testing.T)) {
			_, id, _ := parseCreds(t, e.env, e.join(t, e.token(t, "ci")))
			req := api.RenewRequest{Keys: newKeys(t).pub, TTLSeconds: 600}
			fail()
			_, err := e.auth.Renew(ctx, id, req, "r")
			// Once the log is written again, the daemon's retry with the
			// same keys renews: the refusal did not lock the bot.
			return err, func(t *testing.T) {
				creds, err := e.auth.Renew(ctx, id, req, "r")
				if err != nil || creds.Generation != 2 {
					t.Errorf("retry after recovery = generation %d, %v; want 2", creds.Generation, err)
				}
			}
		}},
		{"github join", failAll, func(t *testing.T, e *attestEnv, fail func()) (error, func(*testing.T)) {
			req := joinReq(t, api.JoinMethodGitHub, "gh", e.p.Mint(e.p.GitHubClaims("mwi", "org/repo")))
			fail()
			_, err := e.auth.Join(ctx, req, nil, "r")
			return err, nil
		}},
		{"bound key pair challenge", failAll, func(t *testing.T, e *attestEnv, fail func()) (error, func(*testing.T)) {
			fail()
			_, err := e.auth.Challenge(ctx, api.ChallengeRequest{TokenName: "build-01"}, nil, "r")
			return err, nil
		}},
		{"bound key pair join", failAll, func(t *testing.T, e *attestEnv, fail func()) (error, func(*testing.T)) {
			req := e.keypairReq(t, "build-01", e.signer)
			fail()
			_, err := e.auth.Join(ctx, req, nil, "r")
			return err, nil
		}},
		{"token create", failAll, func(t *testing.T, e *attestEnv, fail func()) (error, func(*testing.T)) {
			fail()
			resp, err := e.auth.CreateToken(ctx, "ci", time.Hour)
			if resp.Token != "" {
				t.Error("a token's secret was shown without an audit record")
			}
			return err, nil
		}},
		// A lock only stops, and must not wait for the disk: it applies,
		// and the operator is told that it went unrecorded.
		{"bot lock", failAll, func(t *testing.T, e *attestEnv, fail func()) (error, func(*testing.T)) {
			fail()
			_, err := e.auth.LockBot(ctx, "ci", "stop")
			if _, locked, _ := e.store.BotLock(ctx, "ci", e.now); !locked {
				t.Error("the bot was not locked")
			}
			return err, nil
		}},
		{"instance lock", failAll, func(t *testing.T, e *attestEnv, fail func()) (error, func(*testing.T)) {
			creds := e.join(t, e.token(t, "ci"))
			fail()
			_, err := e.auth.LockInstance(ctx, creds.Instance, "stop")
			if _, locked, _ := e.store.InstanceLock(ctx, creds.Instance, e.now); !locked {
				t.Error("the instance was not locked")
			}
			return err, nil
		}},
		{"bot unlock", failAll, func(t *testing.T, e *attestEnv, fail func()) (error, func(*testing.T)) {
			if err := e.store.LockBot(ctx, store.Lock{Bot: "ci", Reason: "test", At: e.now}); err != nil {
				t.Fatal(err)
			}
			fail()
			err := e.auth.UnlockBot(ctx, "ci")
			if _, locked, _ := e.store.BotLock(ctx, "ci", e.now); !locked {
				t.Error("the lock was lifted without an audit record")
			}
			return err, nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newAttestEnv(t)
			w := &faultyWriter{}
			var logged bytes.Buffer
			e.auth.Audit = audit.New(w)
			e.auth.Audit.Logger = slog.New(slog.NewTextHandler(&logged, nil))
			err, after := tc.run(t, e, func() { w.set(tc.failIf) })

			var herr *fault.Error
			if !errors.As(err, &herr) || httpjson.Status(herr.Kind) != http.StatusInternalServerError || herr.Code != api.CodeAuditUnavailable {
				t.Fatalf("error = %v, want a 500 %s", err, api.CodeAuditUnavailable)
			}
			if !strings.Contains(herr.Message, "audit log cannot be written") {
				t.Errorf("message %q does not say why", herr.Message)
			}
			if !errors.Is(e.auth.Audit.Err(), syscall.ENOSPC) {
				t.Errorf("audit Err() = %v, want the write failure", e.auth.Audit.Err())
			}
			if !strings.Contains(logged.String(), "level=ERROR") {
				t.Errorf("the failure was not logged as an error: %q", logged.String())
			}
			w.set(nil)
			if after != nil {
				after(t)
			}
		})
	}
}

// TestAuditFailureKeepsDenials shows that a refusal is still a refusal
// when its record cannot be written: the caller is told why it was
// refused, not that the log failed.
func TestAuditFailureKeepsDenials(t *testing.T) {
	e := newEnv(t)
	w := &faultyWriter{failIf: failAll}
	e.auth.Audit = audit.New(w)
	e.auth.Audit.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	_, err := e.auth.Join(context.Background(), api.JoinRequest{JoinMethod: api.JoinMethodToken, Token: "nope", Keys: newKeys(t).pub, TTLSeconds: 600}, nil, "r")
	var herr *fault.Error
	if !errors.As(err, &herr) || herr.Code != api.CodeTokenUnknown {
		t.Errorf("error = %v, want %s", err, api.CodeTokenUnknown)
	}
	_, err = e.auth.Renew(context.Background(), ca.Identity{Bot: "ci", Instance: "nope", Generation: 1}, api.RenewRequest{Keys: newKeys(t).pub, TTLSeconds: 600}, "r")
	if !errors.As(err, &herr) || herr.Code != api.CodeUnauthenticated {
		t.Errorf("error = %v, want %s", err, api.CodeUnauthenticated)
	}
}

// TestUnsupportedJoinMethodOnce checks that an unknown join method is in
// the audit record once, not also repeated in the reason.
func TestUnsupportedJoinMethodOnce(t *testing.T) {
	e := newEnv(t)
	method := strings.Repeat("m", 200)
	_, err := e.auth.Join(context.Background(), api.JoinRequest{JoinMethod: api.JoinMethod(method)}, nil, "r")
	e.expectDenied(t, err, 0, audit.EventJoin, api.CodeBadRequest, http.StatusBadRequest)
	if n := strings.Count(e.audit.String(), method); n != 1 {
		t.Errorf("the join method is in the audit log %d times, want once:\n%s", n, e.audit.String())
	}
}
