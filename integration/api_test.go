package integration

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/integration/harness"
	"github.com/mwi-project/mwi/internal/connlimit"
)

// get fetches path from the daemon's API socket.
func get(t *testing.T, d *harness.Daemon, path string) (int, string) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", d.APISock)
	}}}
	res, err := c.Get("http://mwid" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(body)
}

func TestLocalAPIThroughMwictl(t *testing.T) {
	t.Parallel()
	_, d := setup(t, time.Hour, everyRenewal) // renews right after joining
	user := harness.CurrentUser(t)

	out, err := d.Ctl("status", "--json")
	if err != nil {
		t.Fatalf("mwictl status --json: %v\n%s", err, out)
	}
	var st api.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.State != "ready" || st.Bot != "ci" || st.Config.Revision == "" {
		t.Fatalf("status = %+v, %v", st, err)
	}

	out, err = d.Ctl("identity")
	if err != nil || !strings.HasPrefix(out, "ssh-ed25519-cert-v01@openssh.com ") {
		t.Fatalf("mwictl identity: %v\n%s", err, out)
	}

	// mwictl version shows its own version and that of the mwid it reached,
	// which were built together.
	out, err = d.Ctl("version")
	if lines := strings.Fields(out); err != nil || len(lines) != 8 || lines[0] != "mwictl" || lines[4] != "mwid" || lines[1] != lines[5] {
		t.Errorf("mwictl version: %v\n%s\nwant mwictl's line, then mwid's with the same version", err, out)
	}

	// Renewing on request moves the generation on.
	out, err = d.Ctl("renew", "--json")
	if err != nil {
		t.Fatalf("mwictl renew: %v\n%s", err, out)
	}
	var renewed api.Status
	if err := json.Unmarshal([]byte(out), &renewed); err != nil || renewed.Generation != st.Generation+1 {
		t.Fatalf("after renew: generation %d (%v), want %d", renewed.Generation, err, st.Generation+1)
	}

	// A bad file is refused with its file and line; the running
	// configuration stays and the daemon stays ready.
	good, err := os.ReadFile(d.Config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(d.Config, append(good, []byte("bogus_field: 1\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = d.Ctl("reload")
	if err == nil || !strings.Contains(out, d.Config+":") || !strings.Contains(out, "bogus_field") {
		t.Fatalf("mwictl reload of a bad file: err %v\n%s\nwant a failure naming the file, line and field", err, out)
	}
	st2, _ := d.Status(t)
	if st2.State != "ready" || st2.Config.Revision != st.Config.Revision || !strings.Contains(st2.Config.LastReloadError, "bogus_field") {
		t.Fatalf("after a bad reload: state %s revision %s (was %s) reload error %q", st2.State, st2.Config.Revision, st.Config.Revision, st2.Config.LastReloadError)
	}
	if code, _ := get(t, d, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz after a bad reload = %d, want 200", code)
	}

	// A good change applies live: asking for one login gets a certificate
	// with just that principal.
	narrowed := strings.Replace(string(good), "logins: []", "logins: ["+user+"]", 1)
	if narrowed == string(good) {
		t.Fatal("test config has no ssh.logins line")
	}
	os.WriteFile(d.Config, []byte(narrowed), 0o600)
	if out, err := d.Ctl("reload"); err != nil || !strings.Contains(out, "reloaded") {
		t.Fatalf("mwictl reload: %v\n%s", err, out)
	}
	harness.Eventually(t, 20*time.Second, "certificate with the new logins", func() error {
		certs := listed(t, d.AgentSock)
		if len(certs) == 1 && strings.Join(certs[0].ValidPrincipals, ",") == user {
			return nil
		}
		return io.EOF
	})
	if st3, _ := d.Status(t); st3.Config.LastReloadError != "" || st3.Config.Revision == st.Config.Revision {
		t.Errorf("after a good reload: revision %s, reload error %q", st3.Config.Revision, st3.Config.LastReloadError)
	}

	// Readiness and metrics.
	if code, body := get(t, d, "/readyz"); code != http.StatusOK || !strings.Contains(body, `"ready": true`) {
		t.Errorf("/readyz = %d %s", code, body)
	}
	code, body := get(t, d, "/metrics")
	for _, want := range []string{
		`mwid_agent_requests_total{result="success",type="list"}`,
		`mwid_renewals_total{result="success"}`,
		`mwid_credential_expiry_timestamp_seconds{kind="ssh",name=""}`,
		`mwid_api_requests_total{code="200",route="/v1/status"}`,
	} {
		if code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("/metrics (%d) lacks %s", code, want)
		}
	}
}

func TestMwictlWithoutDaemon(t *testing.T) {
	t.Parallel()
	b := harness.Build(t)
	out, err := harness.Run(context.Background(), 10*time.Second, nil, b.Ctl, "--socket", t.TempDir()+"/none.sock", "status")
	if err == nil || strings.Count(out, "\n") != 0 || !strings.Contains(out, "is mwid running") {
		t.Fatalf("mwictl status without mwid: err %v, output %q; want one line asking whether mwid runs", err, out)
	}
}

// TestRenewRequestsShared loops on mwid's renew route, concurrently and
// then in a row, with the default renew_min_interval: the issuer sees no
// renewal beyond the join (at most one if the machine took 10s over the
// requests), and mwictl renew says that its answer was shared.
func TestRenewRequestsShared(t *testing.T) {
	t.Parallel()
	iss, d := setup(t, time.Hour)
	ctx := context.Background()
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if _, err := d.Client.Renew(ctx); err != nil {
				t.Errorf("renew: %v", err)
			}
		})
	}
	wg.Wait()
	for range 20 {
		if _, err := d.Client.Renew(ctx); err != nil {
			t.Fatalf("renew: %v", err)
		}
	}
	out, err := d.Ctl("renew")
	if err != nil || !strings.Contains(out, "shared:") || !strings.Contains(out, "renew_min_interval (10s)") {
		t.Errorf("mwictl renew: %v\n%s\nwant it to say the answer was shared", err, out)
	}
	calls := countAudit(t, iss, map[string]any{"event": "join", "outcome": "allowed"}) +
		countAudit(t, iss, map[string]any{"event": "renew", "outcome": "allowed"})
	if calls > 2 {
		t.Errorf("71 renew requests made %d joins and renewals at the issuer; want the join and at most one renewal", calls)
	}
}

// TestSocketBounds checks, on the real mwid, the bounds that keep one local
// caller from taking every connection or holding mwid's memory: on each
// socket, one user's connections beyond connlimit.DefaultPerUID are closed
// unserved, and the API refuses a header larger than it needs.
func TestSocketBounds(t *testing.T) {
	t.Parallel()
	_, d := setup(t, time.Hour)
	for _, sock := range []string{d.AgentSock, d.APISock} {
		conns := make([]net.Conn, connlimit.DefaultPerUID)
		for i := range conns {
			c, err := net.Dial("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			conns[i] = c
		}
		extra, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		extra.SetDeadline(time.Now().Add(10 * time.Second)) // only against a hang
		if n, err := extra.Read(make([]byte, 1)); n != 0 || !(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
			t.Errorf("%s: connection %d of one user: read %d, %v; want it closed", filepath.Base(sock), len(conns)+1, n, err)
		}
		extra.Close()
		for _, c := range conns {
			c.Close()
		}
	}
	if !strings.Contains(d.Proc.Output(), "connection refused") {
		t.Error("mwid did not log the refusals")
	}
	// Once they are closed, both sockets serve again.
	harness.Eventually(t, 10*time.Second, "the sockets serve again", func() error {
		if _, err := d.Status(t); err != nil {
			return err
		}
		_, err := tryListed(t, d.AgentSock)
		return err
	})

	code, body := getWithHeader(t, d, "/v1/status", strings.Repeat("x", 64<<10))
	if code != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("a 64 KiB header: %d %s; want 431", code, body)
	}
}

// getWithHeader fetches path from the daemon's API socket with a header
// X-Pad of the given value.
func getWithHeader(t *testing.T, d *harness.Daemon, path, pad string) (int, string) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", d.APISock)
	}}}
	req, _ := http.NewRequest(http.MethodGet, "http://mwid"+path, nil)
	req.Header.Set("X-Pad", pad)
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(body)
}
