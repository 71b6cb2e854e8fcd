package integration

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/daemon/identity"
	"github.com/mwi-project/mwi/daemon/issuerclient"
	"github.com/mwi-project/mwi/integration/harness"
	"github.com/mwi-project/mwi/internal/pgtest"
	"github.com/mwi-project/mwi/internal/sshaccess"
	"github.com/mwi-project/mwi/issuer/ca"
)

// startReplicas starts two issuers on one PostgreSQL database and one
// state directory (the same CA keys and resource directory), each with
// its own address, admin socket and audit log, as two replicas run.
func startReplicas(t *testing.T, resources string) (a, b *harness.Issuer) {
	t.Helper()
	pg := pgtest.StartT(t)
	url, err := pg.CreateDatabase("mwi", "")
	if err != nil {
		t.Fatal(err)
	}
	// The resource directory does not change; a long settle keeps its
	// watcher from loading it again (and the store with it) during the
	// test, so that what B serves comes from its polls of the store.
	a = harness.StartIssuerWith(t, resources, harness.IssuerOptions{Args: []string{"--store", url, "--resource-settle", "1h"}})
	b = &harness.Issuer{}
	*b = *a
	b.Addr = fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	b.AdminSock = filepath.Join(a.Dir, "b-admin.sock")
	b.AuditLog = filepath.Join(a.Dir, "b-audit.log")
	b.Args = []string{"--store", url, "--resource-settle", "1h", "--admin-socket", b.AdminSock, "--audit-log", b.AuditLog}
	b.Start(t)
	return a, b
}

// issuerAt returns a client of the issuer iss.
func issuerAt(t *testing.T, iss *harness.Issuer) *issuerclient.Client {
	t.Helper()
	ic, err := issuerclient.New(config.Issuer{Address: iss.Addr, CAPins: []string{iss.Pin}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ic
}

// errCode returns the API error code of err, or its text.
func errCode(err error) string {
	var ie *issuerclient.Error
	if errors.As(err, &ie) {
		return ie.Code
	}
	return err.Error()
}

// TestReplicasShareChanges runs two issuers on one PostgreSQL database: a
// role and bot created with create -f on replica A are served by replica
// B (a token made on B for the bot joins), and a lock added on A is in B's
// KRL, both within a poll of the store. How long each took is logged, not
// asserted.
func TestReplicasShareChanges(t *testing.T) {
	t.Parallel()
	a, b := startReplicas(t, resources(harness.CurrentUser(t)))
	admin := func(iss *harness.Issuer, args ...string) (string, error) {
		argv := append([]string{iss.Bins.Issuer}, args...)
		return harness.Run(context.Background(), 30*time.Second, nil, append(argv, "--admin-socket", iss.AdminSock)...)
	}

	file := filepath.Join(t.TempDir(), "web.yaml")
	if err := os.WriteFile(file, []byte(`kind: role
version: v1
metadata: {name: web}
spec:
  allow: {logins: [web]}
---
kind: bot
version: v1
metadata: {name: web}
spec: {roles: [web]}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := admin(a, "create", "-f", file); err != nil {
		t.Fatalf("create -f on A: %v\n%s", err, out)
	}
	created := time.Now()
	var token string
	harness.Eventually(t, 10*time.Second, "bot web on replica B", func() error {
		out, err := admin(b, "token", "create", "--bot", "web", "--ttl", "1h", "--json")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		var resp api.CreateTokenResponse
		if err := json.Unmarshal([]byte(out), &resp); err != nil {
			t.Fatalf("token create: %v\n%s", err, out)
		}
		token = resp.Token
		return nil
	})
	t.Logf("bot created on A served by B after %v", time.Since(created).Round(time.Millisecond))
	_, creds := joinDirect(t, b, token)
	if creds.Bot != "web" {
		t.Fatalf("joined on B as bot %q, want web", creds.Bot)
	}

	authorities, err := ca.Load(a.State)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(authorities.TLSCA())
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
	t.Cleanup(tr.CloseIdleConnections)
	anonymous := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	keyID := []byte(sshaccess.KeyID("web", creds.Instance))
	krl := func() ([]byte, error) {
		res, err := anonymous.Get("https://" + b.Addr + "/v1/ssh/krl")
		if err != nil {
			return nil, err
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET /v1/ssh/krl: %d %s", res.StatusCode, body)
		}
		return body, err
	}
	if body, err := krl(); err != nil || bytes.Contains(body, keyID) {
		t.Fatalf("B's KRL before the lock: %v; revokes %s: %v", err, keyID, bytes.Contains(body, keyID))
	}
	if out, err := admin(a, "lock", "add", "--bot", "web", "--message", "replica test"); err != nil {
		t.Fatalf("lock add on A: %v\n%s", err, out)
	}
	locked := time.Now()
	harness.Eventually(t, 10*time.Second, "B's KRL revoking the locked bot", func() error {
		body, err := krl()
		if err != nil {
			return err
		}
		if !bytes.Contains(body, keyID) {
			return fmt.Errorf("KRL does not revoke %s", keyID)
		}
		return nil
	})
	t.Logf("lock added on A in B's KRL after %v", time.Since(locked).Round(time.Millisecond))
}

// TestReplicasExactlyOnce sends the same one-time token, and then the
// same identity (a clone), to two issuers on one database at once: one
// join and one renewal win, the other joins get token_used, the other
// renewals generation_mismatch or instance_locked, and the cloned
// instance ends locked.
func TestReplicasExactlyOnce(t *testing.T) {
	t.Parallel()
	a, b := startReplicas(t, resources(harness.CurrentUser(t)))
	replicas := []*issuerclient.Client{issuerAt(t, a), issuerAt(t, b)}
	// race runs op perReplica times against each replica at once and
	// returns the outcomes: "ok" or an error code, with their counts.
	race := func(perReplica int, op func(ic *issuerclient.Client) error) map[string]int {
		var mu sync.Mutex
		var wg sync.WaitGroup
		start := make(chan struct{})
		outcomes := map[string]int{}
		for _, ic := range replicas {
			for range perReplica {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					got := "ok"
					if err := op(ic); err != nil {
						got = errCode(err)
					}
					mu.Lock()
					outcomes[got]++
					mu.Unlock()
				}()
			}
		}
		close(start)
		wg.Wait()
		return outcomes
	}

	token := a.CreateToken(t, "ci", time.Hour)
	var winner *identity.Credentials
	var winnerMu sync.Mutex
	const joiners = 10
	joins := race(joiners, func(ic *issuerclient.Client) error {
		keys, err := identity.NewKeys()
		if err != nil {
			return err
		}
		pub, err := keys.Public()
		if err != nil {
			return err
		}
		resp, err := ic.Join(context.Background(), nil, api.JoinRequest{JoinMethod: "token", Token: token, Keys: pub, TTLSeconds: 600})
		if err != nil {
			return err
		}
		creds, err := identity.Assemble(keys, resp, time.Now())
		if err != nil {
			return err
		}
		winnerMu.Lock()
		winner = creds
		winnerMu.Unlock()
		return nil
	})
	if joins["ok"] != 1 || joins[api.CodeTokenUsed] != 2*joiners-1 {
		t.Fatalf("concurrent joins with one token on two replicas: %v; want 1 ok and %d %s", joins, 2*joiners-1, api.CodeTokenUsed)
	}

	// A clone: the same identity renewing on both replicas at once, with
	// fewer connections each than an issuer allows one instance
	// (Limits.MaxPerInstance).
	const renewers = 6
	clone := winner
	var renewed *identity.Credentials
	renewals := race(renewers, func(ic *issuerclient.Client) error {
		creds, err := renewDirect(ic, clone)
		if err == nil {
			winnerMu.Lock()
			renewed = creds
			winnerMu.Unlock()
		}
		return err
	})
	if renewals["ok"] != 1 || renewals[api.CodeGenerationMismatch]+renewals[api.CodeInstanceLocked] != 2*renewers-1 {
		t.Fatalf("concurrent renewals of one identity on two replicas: %v; want 1 ok and the rest %s or %s",
			renewals, api.CodeGenerationMismatch, api.CodeInstanceLocked)
	}
	t.Logf("joins: %v; renewals: %v", joins, renewals)
	if renewals[api.CodeGenerationMismatch] == 0 {
		t.Errorf("no renewal was refused for its generation: %v", renewals)
	}
	// The instance is locked on both replicas: the winner's new identity
	// is refused too.
	for i, ic := range replicas {
		if _, err := renewDirect(ic, renewed); errCode(err) != api.CodeInstanceLocked {
			t.Errorf("replica %d: renewal of the winning identity after the race: %v; want %s", i, err, api.CodeInstanceLocked)
		}
	}
}
