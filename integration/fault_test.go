package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/renewal"
	"github.com/mwi-project/mwi/integration/harness"
)

// pollEvery is how often the fault tests look at the daemon during an
// outage.
const pollEvery = 200 * time.Millisecond

// earliestExpiry returns when the first of the credentials in st expires.
func earliestExpiry(t *testing.T, st api.Status) time.Time {
	t.Helper()
	if len(st.Credentials) == 0 {
		t.Fatalf("status lists no credentials: %+v", st)
	}
	e := st.Credentials[0].Expires
	for _, c := range st.Credentials[1:] {
		if c.Expires.Before(e) {
			e = c.Expires
		}
	}
	return e
}

// apiClient returns an HTTP client for the daemon's API socket that does not
// fail the test, for polling.
func apiClient(sock string) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}},
	}
}

// readiness asks the daemon's /readyz.
func readiness(c *http.Client) (int, api.Readiness, error) {
	res, err := c.Get("http://mwid/readyz")
	if err != nil {
		return 0, api.Readiness{}, err
	}
	defer res.Body.Close()
	var r api.Readiness
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return res.StatusCode, r, err
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return res.StatusCode, r, fmt.Errorf("/readyz body %q: %w", body, err)
	}
	return res.StatusCode, r, nil
}

// dialAgent connects to the daemon's agent socket, as a client that keeps
// its connection would.
func dialAgent(t *testing.T, sock string) agent.ExtendedAgent {
	t.Helper()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return agent.NewClient(conn)
}

// listedCerts lists the agent's keys, which must all be certificates.
func listedCerts(ag agent.Agent) ([]*ssh.Certificate, error) {
	keys, err := ag.List()
	if err != nil {
		return nil, err
	}
	var certs []*ssh.Certificate
	for _, k := range keys {
		pub, err := ssh.ParsePublicKey(k.Blob)
		if err != nil {
			return nil, err
		}
		c, ok := pub.(*ssh.Certificate)
		if !ok {
			return nil, fmt.Errorf("agent lists a plain %s key", pub.Type())
		}
		certs = append(certs, c)
	}
	return certs, nil
}

// expiredAt reports whether c had expired at t: its validity ends at
// ValidBefore, in whole seconds.
func expiredAt(c *ssh.Certificate, t time.Time) bool {
	return uint64(t.Unix()) >= c.ValidBefore
}

// TestIssuerOutageLongerThanTTL stops the issuer for longer than the
// certificate lifetime. While the credentials are valid mwid keeps serving
// them; once they expire the agent lists nothing, /readyz answers 503 and
// mwictl status says expired. After the issuer comes back mwid renews by
// itself, within its backoff cap, with the identity that outlived the
// outage.
func TestIssuerOutageLongerThanTTL(t *testing.T) {
	t.Parallel()
	iss := harness.StartIssuer(t, resources(harness.CurrentUser(t)))
	d := harness.StartDaemon(t, iss, harness.DaemonOptions{Token: iss.CreateToken(t, "ci", time.Hour), TTL: 10 * time.Second, Extra: everyRenewal, AllowUnbound: true})
	d.WaitState(t, "ready", 20*time.Second)
	ctx := context.Background()
	// Renew now, so the credentials have their whole lifetime left when
	// the issuer stops and the outage outlasts it by a known margin.
	st, err := d.Client.Renew(ctx)
	if err != nil {
		t.Fatalf("renew: %v", err)
	}
	before := st
	expires := earliestExpiry(t, st)
	iss.Stop(t)
	stopped := time.Now()
	outageEnd := stopped.Add(15 * time.Second)
	if min := expires.Add(3 * time.Second); outageEnd.Before(min) {
		outageEnd = min
	}
	t.Logf("issuer stopped; credentials expire at %s (in %s); outage until %s", expires.Format(time.RFC3339), time.Until(expires).Round(time.Millisecond), outageEnd.Format(time.RFC3339))

	ag := dialAgent(t, d.AgentSock)
	hc := apiClient(d.APISock)
	var (
		lastValid        *ssh.Certificate
		validPolls       int
		expiredPolls     int
		listedExpired    int
		sshAddConfirmed  bool
		mwictlExpiredOut string
	)
	for i := 0; i < 200 && time.Now().Before(outageEnd); i++ {
		at := time.Now()
		certs, err := listedCerts(ag)
		if err != nil {
			t.Fatalf("agent list during the outage: %v", err)
		}
		for _, c := range certs {
			if expiredAt(c, at) {
				listedExpired++
				t.Errorf("poll %d at %s: the agent listed certificate %q (serial %d), expired at %s",
					i, at.Format(time.RFC3339Nano), c.KeyId, c.Serial, time.Unix(int64(c.ValidBefore), 0).Format(time.RFC3339))
			}
		}
		code, rd, err := readiness(hc)
		if err != nil {
			t.Fatalf("/readyz during the outage: %v", err)
		}
		done := time.Now()
		switch {
		case done.Before(expires.Add(-time.Second)):
			// Still valid: mwid keeps serving while it retries.
			validPolls++
			if len(certs) != 1 {
				t.Errorf("poll %d, %s before expiry: the agent lists %d certificates, want the valid one", i, expires.Sub(done).Round(time.Millisecond), len(certs))
			} else {
				lastValid = certs[0]
			}
			if code != http.StatusOK || !rd.Ready {
				t.Errorf("poll %d, %s before expiry: /readyz = %d %+v, want 200 ready", i, expires.Sub(done).Round(time.Millisecond), code, rd)
			}
		case at.After(expires.Add(time.Second)):
			expiredPolls++
			if len(certs) != 0 {
				t.Errorf("poll %d, %s after expiry: the agent lists %d certificates, want none", i, at.Sub(expires).Round(time.Millisecond), len(certs))
			}
			if code != http.StatusServiceUnavailable || rd.Ready || rd.State != "expired" {
				t.Errorf("poll %d, %s after expiry: /readyz = %d %+v, want 503, not ready, state expired", i, at.Sub(expires).Round(time.Millisecond), code, rd)
			}
			if !sshAddConfirmed {
				// Once, with OpenSSH's own client as well.
				sshAdd := harness.Require(t, "ssh-add", installOpenSSHClient)
				out, err := harness.Run(ctx, 10*time.Second, []string{"SSH_AUTH_SOCK=" + d.AgentSock}, sshAdd, "-L")
				if err == nil || !strings.Contains(out, "no identities") {
					t.Errorf("ssh-add -L after expiry: %v\n%s\nwant: The agent has no identities.", err, out)
				}
				out, err = d.Ctl("status")
				if err == nil || !strings.Contains(out, "state:") || !strings.Contains(out, "expired") {
					t.Errorf("mwictl status after expiry: %v\n%s\nwant a failure showing state expired", err, out)
				}
				mwictlExpiredOut = out
				sshAddConfirmed = true
			}
		}
		time.Sleep(pollEvery)
	}
	t.Logf("outage: %d polls while valid, %d after expiry, %d expired certificates listed", validPolls, expiredPolls, listedExpired)
	t.Logf("mwictl status after expiry:\n%s", mwictlExpiredOut)
	if validPolls == 0 || expiredPolls == 0 || lastValid == nil {
		t.Fatalf("the outage did not cover both the valid and the expired phase (%d and %d polls)", validPolls, expiredPolls)
	}
	// The certificate the agent last listed can no longer sign.
	if _, err := ag.Sign(lastValid, []byte("after expiry")); err == nil {
		t.Error("the agent signed with an expired certificate")
	}

	// The issuer comes back with the same state on the same address. The
	// bot identity outlives the certificates it renews (identity_ttl, 1h by
	// default), so mwid renews by itself, within its backoff cap and
	// without a restart, as the same instance.
	iss.Start(t)
	restarted := time.Now()
	harness.Eventually(t, renewal.DefaultMaxBackoff+20*time.Second, "recovery after the outage", func() error {
		st, err := d.Status(t)
		if err != nil {
			return err
		}
		if st.State != "ready" {
			return fmt.Errorf("state %s, last error %q", st.State, st.LastError)
		}
		return nil
	})
	st, err = d.Status(t)
	if err != nil {
		t.Fatal(err)
	}
	if st.Instance != before.Instance || st.Generation <= before.Generation {
		t.Errorf("after recovery: instance %s generation %d; want instance %s renewed past generation %d", st.Instance, st.Generation, before.Instance, before.Generation)
	}
	if code, rd, err := readiness(hc); err != nil || code != http.StatusOK || !rd.Ready {
		t.Errorf("/readyz after recovery: %d %+v %v; want 200", code, rd, err)
	}
	if certs, err := listedCerts(ag); err != nil || len(certs) != 1 {
		t.Errorf("agent after recovery lists %d certificates (%v); want one", len(certs), err)
	}
	if d.Proc.Exited() {
		t.Error("mwid exited")
	}
	t.Logf("ready again %s after the issuer came back", time.Since(restarted).Round(time.Millisecond))
}

// TestIdentityExpiryRejoins lets the bot identity itself expire during an
// issuer outage. mwid then joins again, with the token it reads afresh from
// its file, as a new instance: the operator's remedy is a new token in the
// file, not a restart.
func TestIdentityExpiryRejoins(t *testing.T) {
	t.Parallel()
	iss := harness.StartIssuer(t, resources(harness.CurrentUser(t)))
	tokenFile := filepath.Join(t.TempDir(), "join-token")
	if err := os.WriteFile(tokenFile, []byte(iss.CreateToken(t, "ci", time.Hour)), 0o600); err != nil {
		t.Fatal(err)
	}
	d := harness.StartDaemon(t, iss, harness.DaemonOptions{
		TTL:         10 * time.Second,
		TokenConfig: "file: " + tokenFile,
		Extra:       "identity_ttl: 10s\n",
	})
	before := d.WaitState(t, "ready", 20*time.Second)
	iss.Stop(t)
	harness.Eventually(t, 20*time.Second, "credentials expired", func() error {
		if st, err := d.Status(t); err != nil || st.State != "expired" {
			return fmt.Errorf("state %v, %v", st.State, err)
		}
		return nil
	})
	// The old token is spent; the operator writes a new one while the
	// issuer is still down.
	iss.Start(t)
	if err := os.WriteFile(tokenFile, []byte(iss.CreateToken(t, "ci", time.Hour)), 0o600); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, renewal.DefaultMaxBackoff+20*time.Second, "joined again", func() error {
		st, err := d.Status(t)
		if err != nil {
			return err
		}
		if st.State != "ready" || st.Instance == before.Instance {
			return fmt.Errorf("state %s instance %s, last error %q", st.State, st.Instance, st.LastError)
		}
		return nil
	})
}

// TestIssuerOutageShorterThanTTL stops the issuer for longer than several
// backoff steps but for less than the certificate lifetime. mwid keeps
// serving its valid credentials, reports degraded, and once the issuer is
// back renews by itself, without a restart, within its backoff cap.
func TestIssuerOutageShorterThanTTL(t *testing.T) {
	t.Parallel()
	const (
		ttl      = 30 * time.Second
		interval = 3 * time.Second // the first failure comes soon after the stop
		outage   = 12 * time.Second
	)
	iss := harness.StartIssuer(t, resources(harness.CurrentUser(t)))
	d := harness.StartDaemon(t, iss, harness.DaemonOptions{
		Token:        iss.CreateToken(t, "ci", time.Hour),
		TTL:          ttl,
		Extra:        fmt.Sprintf("renewal_interval: %s\n", interval) + everyRenewal,
		AllowUnbound: true,
	})
	d.WaitState(t, "ready", 20*time.Second)
	ctx := context.Background()
	st, err := d.Client.Renew(ctx)
	if err != nil {
		t.Fatalf("renew: %v", err)
	}
	before := st.Generation
	expires := earliestExpiry(t, st)
	iss.Stop(t)
	stopped := time.Now()
	logBefore := len(d.Proc.Output())

	ag := dialAgent(t, d.AgentSock)
	hc := apiClient(d.APISock)
	var degraded int
	for i := 0; i < 100 && time.Since(stopped) < outage; i++ {
		certs, err := listedCerts(ag)
		if err != nil || len(certs) != 1 {
			t.Fatalf("poll %d, %s into the outage: the agent lists %d certificates (%v); want the valid one", i, time.Since(stopped).Round(time.Millisecond), len(certs), err)
		}
		data := make([]byte, 32)
		rand.Read(data)
		sig, err := ag.Sign(certs[0], data)
		if err != nil {
			t.Fatalf("poll %d: sign during the outage: %v", i, err)
		}
		if err := certs[0].Key.Verify(data, sig); err != nil {
			t.Fatalf("poll %d: signature does not verify: %v", i, err)
		}
		if code, rd, err := readiness(hc); err != nil || code != http.StatusOK || !rd.Ready {
			t.Fatalf("poll %d: /readyz during the outage = %d %+v %v; want 200 ready while the credentials are valid", i, code, rd, err)
		}
		st, err := d.Status(t)
		if err != nil {
			t.Fatal(err)
		}
		if st.State == "degraded" && st.LastError != "" {
			degraded++
		}
		time.Sleep(pollEvery)
	}
	failures := strings.Count(d.Proc.Output()[logBefore:], "renewal failed")
	t.Logf("outage of %s: %d failed renewals logged, %d polls saw degraded; credentials valid until %s",
		time.Since(stopped).Round(time.Millisecond), failures, degraded, expires.Format(time.RFC3339))
	if degraded == 0 {
		t.Errorf("mwid never reported a failed renewal during the outage (%d failures logged)", failures)
	}
	if !time.Now().Before(expires) {
		t.Fatalf("the outage outlasted the credentials (expired %s); the test's timing is off", expires.Format(time.RFC3339))
	}

	iss.Start(t)
	restarted := time.Now()
	// The loop retries at least every third of the remaining lifetime and
	// never waits longer than its cap.
	harness.Eventually(t, renewal.DefaultMaxBackoff+10*time.Second, "renewal after the issuer came back", func() error {
		st, err := d.Status(t)
		if err != nil {
			return err
		}
		if st.State != "ready" || st.Generation <= before {
			return fmt.Errorf("state %s, generation %d (was %d), last error %q", st.State, st.Generation, before, st.LastError)
		}
		return nil
	})
	t.Logf("mwid renewed %s after the issuer came back (backoff cap %s)", time.Since(restarted).Round(time.Millisecond), renewal.DefaultMaxBackoff)
	if d.Proc.Exited() {
		t.Fatal("mwid exited")
	}
	if code, rd, err := readiness(hc); err != nil || code != http.StatusOK || !rd.Ready || rd.State != "ready" {
		t.Errorf("/readyz after recovery = %d %+v %v", code, rd, err)
	}
}

// servedLeaf returns the certificate the issuer serves at addr.
func servedLeaf(t *testing.T, addr string) *x509.Certificate {
	t.Helper()
	// Only the certificate is wanted here; mwid's own verification is
	// what the renewals test.
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0]
}

// authorityFiles returns the contents of the authorities in an issuer state
// directory: every file but the serving pair, the store and the logs.
func authorityFiles(t *testing.T, state string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(state)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, e := range entries {
		if !e.Type().IsRegular() || !strings.Contains(e.Name(), "_ca") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(state, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = data
	}
	if len(files) < 8 {
		t.Fatalf("found %d authority files in %s, want at least 8", len(files), state)
	}
	return files
}

// TestIssuerTLSRotation restarts the issuer with a new serving certificate
// from the same TLS authority. mwid pins the authority, so its renewals go
// on; a certificate for a name mwid does not use is refused, which shows
// mwid verifies the new certificate rather than accepting any.
func TestIssuerTLSRotation(t *testing.T) {
	t.Parallel()
	iss, d := setup(t, 10*time.Second, everyRenewal)
	ctx := context.Background()
	leaf0 := servedLeaf(t, iss.Addr)
	cas := authorityFiles(t, iss.State)
	rotate := func(hosts ...string) {
		t.Helper()
		iss.Stop(t)
		args := []string{iss.Bins.Issuer, "tls", "rotate", "--state", iss.State}
		for _, h := range hosts {
			args = append(args, "--host", h)
		}
		out, err := harness.Run(ctx, 30*time.Second, nil, args...)
		if err != nil || !strings.Contains(out, iss.Pin) {
			t.Fatalf("mwi-issuer tls rotate: %v\n%s\nwant success naming the unchanged pin %s", err, out, iss.Pin)
		}
		t.Logf("%s", out)
		iss.Start(t)
	}
	gen := func() uint64 {
		t.Helper()
		st, err := d.Status(t)
		if err != nil {
			t.Fatal(err)
		}
		return st.Generation
	}

	rotate()
	leaf1 := servedLeaf(t, iss.Addr)
	if bytes.Equal(leaf1.Raw, leaf0.Raw) || bytes.Equal(leaf1.RawSubjectPublicKeyInfo, leaf0.RawSubjectPublicKeyInfo) {
		t.Fatal("the issuer serves the same certificate or key after the rotation")
	}
	if !slices.Equal(leaf1.DNSNames, leaf0.DNSNames) || len(leaf1.IPAddresses) != len(leaf0.IPAddresses) {
		t.Errorf("rotated certificate names %v %v, want the names of the old one %v %v", leaf1.DNSNames, leaf1.IPAddresses, leaf0.DNSNames, leaf0.IPAddresses)
	}
	for name, data := range authorityFiles(t, iss.State) {
		if !bytes.Equal(data, cas[name]) {
			t.Errorf("the rotation changed %s", name)
		}
	}
	g0 := gen()
	st, err := d.Client.Renew(ctx)
	if err != nil {
		t.Fatalf("renewal through the rotated certificate: %v", err)
	}
	if st.Generation <= g0 || st.State != "ready" {
		t.Fatalf("after renewal: generation %d (was %d), state %s", st.Generation, g0, st.State)
	}
	// The daemon's own timer renews too.
	g1 := st.Generation
	harness.Eventually(t, 30*time.Second, "a scheduled renewal after the rotation", func() error {
		st, err := d.Status(t)
		if err != nil {
			return err
		}
		if st.State != "ready" || st.Generation <= g1 {
			return fmt.Errorf("state %s, generation %d (was %d), last error %q", st.State, st.Generation, g1, st.LastError)
		}
		return nil
	})

	// A certificate that does not name the address mwid dials is refused,
	// although the same authority signed it. Renew first, so that the
	// credentials outlast the two restarts.
	if _, err := d.Client.Renew(ctx); err != nil {
		t.Fatalf("renew: %v", err)
	}
	rotate("issuer.invalid")
	_, err = d.Client.Renew(ctx)
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("renewal against a certificate for another name: %v; want a certificate verification failure", err)
	}
	// Rotated back to the right name, renewals resume.
	rotate("127.0.0.1", "localhost")
	harness.Eventually(t, 30*time.Second, "renewal after rotating back", func() error {
		st, err := d.Client.Renew(ctx)
		if err != nil {
			return err
		}
		if st.State != "ready" {
			return errors.New("state " + st.State)
		}
		return nil
	})
}
