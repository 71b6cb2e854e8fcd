// Package integration tests MWI's real programs against real OpenSSH.
package integration

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/integration/harness"
)

// resources returns a role allowing login (and "deploy") and a bot "ci"
// holding it.
func resources(login string) string {
	return fmt.Sprintf(`kind: role
version: v1
metadata:
  name: ssh
spec:
  allow:
    logins: [%q, deploy]
    node_labels: {'*': '*'}
  options:
    max_ttl: 1h
---
kind: bot
version: v1
metadata:
  name: ci
spec:
  roles: [ssh]
`, login)
}

// setup starts an issuer and a daemon joined with a fresh token.
func setup(t *testing.T, ttl time.Duration, extra ...string) (*harness.Issuer, *harness.Daemon) {
	t.Helper()
	iss := harness.StartIssuer(t, resources(harness.CurrentUser(t)))
	d := harness.StartDaemon(t, iss, harness.DaemonOptions{
		Token: iss.CreateToken(t, "ci", time.Hour),
		TTL:   ttl,
		Extra: strings.Join(extra, ""),
	})
	d.WaitState(t, "ready", 20*time.Second)
	return iss, d
}

// everyRenewal is mwid's configuration for tests that renew on request
// faster than the default renew_min_interval and need every request to
// reach the issuer.
const everyRenewal = "renew_min_interval: 0s\n"

// allowUnbound is mwid's configuration for tests that sign raw data with
// an agent client that binds no session (session-bind@openssh.com), as
// the agent refuses by default.
const allowUnbound = "agent:\n  unbound: allow\n"

// listed returns the certificates the agent at sock lists, read with
// OpenSSH's ssh-add.
func listed(t *testing.T, sock string) []*ssh.Certificate {
	t.Helper()
	certs, err := tryListed(t, sock)
	if err != nil {
		t.Fatal(err)
	}
	return certs
}

// tryListed is listed for polling: it returns ssh-add's failure instead of
// failing the test.
func tryListed(t *testing.T, sock string) ([]*ssh.Certificate, error) {
	t.Helper()
	sshAdd := harness.Require(t, "ssh-add", "apt-get install -y openssh-client")
	out, err := harness.Run(context.Background(), 10*time.Second, []string{"SSH_AUTH_SOCK=" + sock}, sshAdd, "-L")
	if err != nil {
		return nil, fmt.Errorf("ssh-add -L: %v\n%s", err, out)
	}
	var certs []*ssh.Certificate
	for _, line := range strings.Split(out, "\n") {
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
		if err != nil {
			t.Fatalf("ssh-add -L printed %q: %v", line, err)
		}
		cert, ok := pub.(*ssh.Certificate)
		if !ok {
			t.Fatalf("agent lists a plain key %q; want only certificates", line)
		}
		certs = append(certs, cert)
	}
	return certs, nil
}

func TestSSHLoginThroughAgent(t *testing.T) {
	t.Parallel()
	user := harness.CurrentUser(t)
	iss, d := setup(t, time.Hour)
	sshd := iss.StartSSHD(t, nil)

	certs := listed(t, d.AgentSock)
	if len(certs) != 1 {
		t.Fatalf("agent lists %d certificates, want 1", len(certs))
	}
	got := strings.Join(certs[0].ValidPrincipals, ",")
	if want := strings.Join(sortedUnique(user, "deploy"), ","); got != want {
		t.Errorf("certificate principals = %s, want the role's logins %s", got, want)
	}
	if !strings.Contains(certs[0].KeyId, "bot=ci") || !strings.Contains(certs[0].KeyId, "instance=") {
		t.Errorf("key id %q does not name the bot and instance", certs[0].KeyId)
	}

	out, err := sshd.SSH(t, d.AgentSock, user, "hostname")
	if err != nil {
		t.Fatalf("ssh as %s: %v\n%s", user, err, out)
	}
	if host, _ := os.Hostname(); out != host {
		t.Errorf("ssh hostname printed %q, want %q", out, host)
	}

	// A login the roles do not grant is refused by sshd: the certificate
	// has no such principal.
	out, err = sshd.SSH(t, d.AgentSock, "nobody", "true")
	if err == nil || !strings.Contains(out, "Permission denied") {
		t.Fatalf("ssh as nobody: err %v, output %q; want Permission denied", err, out)
	}
}

func TestRenewalKeepsSSHWorking(t *testing.T) {
	t.Parallel()
	harness.Require(t, "sshd", "apt-get install -y --no-install-recommends openssh-server")
	user := harness.CurrentUser(t)
	iss, d := setup(t, 10*time.Second)
	sshd := iss.StartSSHD(t, nil)
	first, err := d.Status(t)
	if err != nil {
		t.Fatal(err)
	}

	// For 25 seconds, two and a half lifetimes, the agent must never list
	// an expired certificate.
	var serials = map[uint64]bool{}
	deadline := time.Now().Add(25 * time.Second)
	for time.Now().Before(deadline) {
		for _, c := range listed(t, d.AgentSock) {
			now := uint64(time.Now().Unix())
			if now >= c.ValidBefore {
				t.Fatalf("agent listed a certificate that expired at %s", time.Unix(int64(c.ValidBefore), 0))
			}
			serials[c.Serial] = true
		}
		time.Sleep(500 * time.Millisecond)
	}
	if len(serials) < 3 {
		t.Errorf("saw %d certificates in 25s with a 10s TTL; want at least 3 (renewed)", len(serials))
	}
	out, err := sshd.SSH(t, d.AgentSock, user, "echo", "still-in")
	if err != nil || out != "still-in" {
		t.Fatalf("ssh after 25s: %v\n%s", err, out)
	}
	st, err := d.Status(t)
	if err != nil {
		t.Fatal(err)
	}
	if st.Generation <= first.Generation+1 || st.Instance != first.Instance {
		t.Errorf("after 25s: instance %s generation %d; want instance %s renewed past generation %d",
			st.Instance, st.Generation, first.Instance, first.Generation+1)
	}
	if ev := iss.FindAudit(t, map[string]any{"event": "renew", "outcome": "allowed", "instance": first.Instance}); ev == nil {
		t.Error("no audit line for an allowed renewal")
	}
}

// sortedUnique returns s sorted without repeats, the order principals are
// signed in.
func sortedUnique(s ...string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}
