package integration

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/daemon/issuerclient"
	"github.com/mwi-project/mwi/integration/harness"
	"github.com/mwi-project/mwi/issuer/ca"
)

// issuerHTTP is a client of the issuer's HTTPS API that trusts its CA.
func issuerHTTP(t *testing.T, iss *harness.Issuer, certs ...tls.Certificate) *http.Client {
	t.Helper()
	a, err := ca.Load(iss.State)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(a.TLSCA())
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: certs, MinVersion: tls.VersionTLS12}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func auditSize(t *testing.T, iss *harness.Issuer) int64 {
	t.Helper()
	fi, err := os.Stat(iss.AuditLog)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// TestOversizedRequestsRefused sends the requests of the audit log attack:
// a 900 KB token_name (and its siblings) is refused with 400 before any
// work, and the audit log records each refusal in a few hundred bytes.
func TestOversizedRequestsRefused(t *testing.T) {
	t.Parallel()
	iss := harness.StartIssuer(t, resources(harness.CurrentUser(t)))
	ic, err := issuerclient.New(config.Issuer{Address: iss.Addr, CAPins: []string{iss.Pin}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	before := auditSize(t, iss)
	big := strings.Repeat("x", 900_000)
	_, pub := newKeys(t)
	for _, tc := range []struct {
		name string
		call func() error
		want string // part of the message
	}{
		{"challenge with a 900 KB token_name", func() error { _, err := ic.Challenge(ctx, nil, big); return err }, "larger than"},
		{"join with a 900 KB token_name", func() error {
			_, err := ic.Join(ctx, nil, api.JoinRequest{JoinMethod: api.JoinMethodGitHub, TokenName: big, IDToken: "x", Keys: pub, TTLSeconds: 600})
			return err
		}, "larger than"},
		{"join with a 900 KB join_method", func() error {
			_, err := ic.Join(ctx, nil, api.JoinRequest{JoinMethod: api.JoinMethod(big), Keys: pub, TTLSeconds: 600})
			return err
		}, "larger than"},
		{"challenge with a long token_name", func() error { _, err := ic.Challenge(ctx, nil, strings.Repeat("n", 300)); return err }, "token_name is 300 bytes long; at most 253"},
		{"join with a long join_method", func() error {
			_, err := ic.Join(ctx, nil, api.JoinRequest{JoinMethod: api.JoinMethod(strings.Repeat("m", 300)), Keys: pub, TTLSeconds: 600})
			return err
		}, "join_method is 300 bytes long; at most 253"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ie *issuerclient.Error
			if err := tc.call(); !errors.As(err, &ie) || ie.Status != http.StatusBadRequest || ie.Code != api.CodeBadRequest {
				t.Fatalf("error = %v, want a 400 %s", err, api.CodeBadRequest)
			}
			if !strings.Contains(ie.Message, tc.want) {
				t.Errorf("message %q does not contain %q", ie.Message, tc.want)
			}
		})
	}
	grown := auditSize(t, iss) - before
	t.Logf("the audit log grew by %d bytes for 5 refused requests", grown)
	if grown > 5*1024 {
		t.Errorf("the audit log grew by %d bytes for 5 refused requests", grown)
	}
	var refusals int
	for _, e := range iss.Audit(t) {
		if e["event"] == "request" && e["outcome"] == "denied" {
			refusals++
			if r, _ := e["reason"].(string); r == "" {
				t.Errorf("refusal audited without a reason: %v", e)
			}
		}
	}
	if refusals != 5 {
		t.Errorf("%d refusals audited, want 5", refusals)
	}
}

// TestDenialsAtTheEdgeAudited makes refusals that used to reach only the
// debug log: a renewal without an identity, and a client certificate of
// another issuer, refused in the TLS handshake.
func TestDenialsAtTheEdgeAudited(t *testing.T) {
	t.Parallel()
	iss := harness.StartIssuer(t, resources(harness.CurrentUser(t)))
	url := "https://" + iss.Addr + "/v1/renew"

	res, err := issuerHTTP(t, iss).Post(url, "application/json", strings.NewReader(`{"ttl_seconds":600}`))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		t.Errorf("renewal without an identity: %d, want 401", res.StatusCode)
	}

	other := filepath.Join(t.TempDir(), "other")
	if err := ca.Init(other, []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	oa, err := ca.Load(other)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	req, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := ca.CheckCSR(req)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	forged, err := oa.SignIdentity(csr, ca.Identity{Bot: "ci", Instance: "i1", Generation: 1}, now.Add(-time.Minute), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{forged.Raw}, PrivateKey: key}
	if res, err := issuerHTTP(t, iss, cert).Post(url, "application/json", strings.NewReader(`{"ttl_seconds":600}`)); err == nil {
		res.Body.Close()
		t.Fatalf("a client certificate of another issuer was accepted: %d", res.StatusCode)
	}

	harness.Eventually(t, 10*time.Second, "both refusals audited", func() error {
		if iss.FindAudit(t, map[string]any{"event": "request", "outcome": "denied", "path": "/v1/renew", "reason": "renewal needs a bot identity certificate"}) == nil {
			return errors.New("no audit line for the renewal without an identity")
		}
		e := iss.FindAudit(t, map[string]any{"event": "tls", "outcome": "denied"})
		if e == nil {
			return errors.New("no audit line for the refused client certificate")
		}
		if r, _ := e["reason"].(string); !strings.Contains(r, "certificate") {
			return errors.New("the tls refusal does not name the certificate: " + r)
		}
		return nil
	})
}

// TestAuditLogFullFailsClosed gives the issuer an audit log on which every
// write fails, as on a full disk: joins and renewals are refused with
// audit_unavailable, health says why, the issuer logs it, and once the log
// is writable again the daemon renews with the same identity, unlocked.
func TestAuditLogFullFailsClosed(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	iss := harness.StartIssuer(t, resources(harness.CurrentUser(t)))
	d := harness.StartDaemon(t, iss, harness.DaemonOptions{Token: iss.CreateToken(t, "ci", time.Hour), TTL: 10 * time.Second})
	d.WaitState(t, "ready", 20*time.Second)
	spare := iss.CreateToken(t, "ci", time.Hour)
	good := iss.Args

	iss.Stop(t)
	iss.Args = append(append([]string(nil), good...), "--audit-log", "/dev/full")
	iss.Start(t)

	// A join is refused.
	ic, err := issuerclient.New(config.Issuer{Address: iss.Addr, CAPins: []string{iss.Pin}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, pub := newKeys(t)
	_, err = ic.Join(context.Background(), nil, api.JoinRequest{JoinMethod: api.JoinMethodToken, Token: spare, Keys: pub, TTLSeconds: 600})
	var ie *issuerclient.Error
	if !errors.As(err, &ie) || ie.Status != http.StatusInternalServerError || ie.Code != api.CodeAuditUnavailable {
		t.Fatalf("join with the audit log full: %v; want a 500 %s", err, api.CodeAuditUnavailable)
	}
	// The daemon's renewals are refused, and it says why.
	d.Client.Renew(context.Background())
	d.WaitError(t, api.CodeAuditUnavailable, 30*time.Second)
	// Health says so.
	res, err := issuerHTTP(t, iss).Get("https://" + iss.Addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	var eb api.ErrorBody
	if res.StatusCode != http.StatusServiceUnavailable || json.Unmarshal(body, &eb) != nil || eb.Error.Code != api.CodeAuditUnavailable ||
		!strings.Contains(eb.Error.Message, "no space left on device") {
		t.Errorf("healthz = %d %s; want 503 %s naming the cause", res.StatusCode, body, api.CodeAuditUnavailable)
	}
	if out := iss.Proc.Output(); !strings.Contains(out, "audit record not written") || !strings.Contains(out, "level=ERROR") {
		t.Errorf("the issuer did not log the failure as an error:\n%s", out)
	}

	// The log is writable again: the daemon renews, and nothing was locked.
	iss.Stop(t)
	iss.Args = good
	iss.Start(t)
	harness.Eventually(t, 30*time.Second, "a renewal after the audit log recovered", func() error {
		if _, err := d.Client.Renew(context.Background()); err != nil {
			return err
		}
		return nil
	})
	d.WaitState(t, "ready", 20*time.Second)
	if e := iss.FindAudit(t, map[string]any{"event": "bot.lock"}); e != nil {
		t.Errorf("a refused renewal locked the bot: %v", e)
	}
}

// TestHeldConnectionsDoNotStarveRenewals is the connection attack: an
// issuer limited to 256 open files, and 300 anonymous connections that
// each make a request and then stay open. A renewal must still succeed,
// a caller from the same address must still be served, since the idle
// connections make room for it, and the issuer must say that a limit bit.
//
// It does not run in parallel: which limit bites first depends on how fast
// the issuer completes handshakes, and on a loaded machine the handshake
// limit closes the connections before the one the test looks for is
// reached.
func TestHeldConnectionsDoNotStarveRenewals(t *testing.T) {
	prlimit := harness.Require(t, "prlimit", "apt-get install -y util-linux")
	iss, d := setup(t, time.Hour)
	iss.Stop(t)
	iss.Proc = harness.Start(t, iss.Dir, "mwi-issuer", iss.Env, append([]string{prlimit, "--nofile=256:256", "--",
		iss.Bins.Issuer, "serve", "--state", iss.State, "--listen", iss.Addr}, iss.Args...)...)
	harness.Eventually(t, 15*time.Second, "issuer listening", func() error {
		if iss.Proc.Exited() {
			t.Fatalf("mwi-issuer exited:\n%s", iss.Proc.Output())
		}
		c, err := net.Dial("tcp", iss.Addr)
		if err != nil {
			return err
		}
		return c.Close()
	})

	a, err := ca.Load(iss.State)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(a.TLSCA())
	var (
		mu   sync.Mutex
		held []net.Conn
		wg   sync.WaitGroup
	)
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	for range 300 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", iss.Addr, &tls.Config{RootCAs: roots, NextProtos: []string{"http/1.1"}})
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: mwi\r\n\r\n")
			if res, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
				res.Body.Close()
			}
			// Then it stays open, idle.
		}()
	}
	wg.Wait()

	if _, err := d.Client.Renew(context.Background()); err != nil {
		t.Fatalf("renewal while 300 connections are held: %v", err)
	}
	// The connection that served the last of them may not yet be idle.
	harness.Eventually(t, 10*time.Second, "a new caller from the same address served", func() error {
		res, err := issuerHTTP(t, iss).Get("https://" + iss.Addr + "/healthz")
		if err != nil {
			return err
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return errors.New(res.Status)
		}
		return nil
	})
	if out := iss.Proc.Output(); !strings.Contains(out, "too many connections without a bot identity") {
		t.Errorf("the issuer did not log the limit:\n%s", out)
	}
}
