package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mwi-project/mwi/integration/harness"
	"github.com/mwi-project/mwi/internal/tlspin"
)

// accessResources has two SSH servers labelled by their roles, env=staging
// and env=prod, and two client bots: "ci", which may log in as login on
// staging and as nobody on prod, and "admin", which may log in as login on
// every host.
func accessResources(login string) string {
	return fmt.Sprintf(`kind: role
version: v1
metadata:
  name: host-staging
spec:
  allow:
    host_names: [127.0.0.1, localhost]
    host_labels: {env: staging}
---
kind: role
version: v1
metadata:
  name: host-prod
spec:
  allow:
    host_names: [127.0.0.1, localhost]
    host_labels: {env: prod}
---
kind: bot
version: v1
metadata:
  name: staging-01
spec:
  roles: [host-staging]
---
kind: bot
version: v1
metadata:
  name: prod-01
spec:
  roles: [host-prod]
---
kind: role
version: v1
metadata:
  name: staging-ssh
spec:
  allow:
    logins: [%[1]q]
    node_labels: {env: staging}
---
kind: role
version: v1
metadata:
  name: prod-nobody
spec:
  allow:
    logins: [nobody]
    node_labels: {env: prod}
---
kind: bot
version: v1
metadata:
  name: ci
spec:
  roles: [staging-ssh, prod-nobody]
---
kind: role
version: v1
metadata:
  name: everywhere
spec:
  allow:
    logins: [%[1]q]
    node_labels: {'*': '*'}
---
kind: bot
version: v1
metadata:
  name: admin
spec:
  roles: [everywhere]
`, login)
}

// managedHost is an sshd whose host certificate, labels, user CA, KRL and
// access decisions come from its own mwid.
type managedHost struct {
	sshd    *harness.SSHD
	mwid    *harness.Daemon
	access  string // the ssh_host output's access_dir
	hostKey string // the host's private key file
}

// startManagedHost starts a host mwid for bot with the label env, and an
// sshd configured with the lines mwictl ssh sshd-config prints.
func startManagedHost(t testing.TB, iss *harness.Issuer, bot, env, ctl string) *managedHost {
	t.Helper()
	return startNamedHost(t, iss, bot, env, ctl, "127.0.0.1")
}

// startNamedHost is startManagedHost for a host certificate with the
// given names.
func startNamedHost(t testing.TB, iss *harness.Issuer, bot, env, ctl string, names ...string) *managedHost {
	t.Helper()
	hostKey := harness.NewHostKey(t)
	h := &managedHost{access: harness.SharedDir(t), hostKey: hostKey}
	h.mwid = harness.StartDaemon(t, iss, harness.DaemonOptions{
		Token: iss.CreateToken(t, bot, time.Hour),
		// The principals command runs as nobody and reports refusals to
		// mwid's API socket.
		APISocket: "mode: \"0660\"\ngroup: nogroup\nallow:\n  users: [nobody]",
		Extra: fmt.Sprintf(`outputs:
  - type: ssh_host
    host_key: %s.pub
    names: [%s]
    labels: {env: %s}
    access_dir: %s
`, hostKey, strings.Join(names, ", "), env, h.access),
	})
	h.mwid.WaitState(t, "ready", 20*time.Second)
	harness.Eventually(t, 20*time.Second, "access.json and the KRL written", func() error {
		for _, f := range []string{"access.json", "revoked_keys.krl", "user_ca.pub"} {
			if _, err := os.Stat(filepath.Join(h.access, f)); err != nil {
				return err
			}
		}
		return nil
	})
	h.sshd = harness.StartSSHDWith(t, harness.SSHDOptions{
		UserCAFile: filepath.Join(h.access, "user_ca.pub"),
		HostKey:    hostKey,
		HostCert:   hostKey + "-cert.pub",
		Extra: fmt.Sprintf("RevokedKeys %s\nAuthorizedPrincipalsCommand %s ssh authorized-principals --dir %s --socket %s %%u %%t %%k\nAuthorizedPrincipalsCommandUser nobody\n",
			filepath.Join(h.access, "revoked_keys.krl"), ctl, h.access, h.mwid.APISock),
	})
	return h
}

// sshTo runs ssh to 127.0.0.1:port as login with no configuration from the
// machine: through the agent at agentSock, or, if it is "", with the key
// and certificate of an identity output (identityDir/key).
func sshTo(t testing.TB, knownHosts, agentSock, identityDir string, port int, login string, command ...string) (string, error) {
	t.Helper()
	ssh := harness.Require(t, "ssh", "apt-get install -y openssh-client")
	args := []string{ssh, "-F", "/dev/null",
		"-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "UserKnownHostsFile=" + knownHosts,
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "ConnectTimeout=10",
		"-p", fmt.Sprint(port), "-l", login}
	var env []string
	if agentSock != "" {
		args = append(args, "-o", "IdentityFile=none", "-o", "IdentityAgent="+agentSock)
		env = []string{"SSH_AUTH_SOCK=" + agentSock}
	} else {
		args = append(args, "-o", "IdentityAgent=none", "-o", "IdentitiesOnly=yes",
			"-i", filepath.Join(identityDir, "key"),
			"-o", "CertificateFile="+filepath.Join(identityDir, "key-cert.pub"))
	}
	args = append(args, "127.0.0.1")
	return harness.Run(context.Background(), 30*time.Second, env, append(args, command...)...)
}

// fetchKRL fetches the issuer's KRL as an unmanaged host's timer would,
// trusting the issuer by its pin, and writes it to path.
func fetchKRL(t *testing.T, iss *harness.Issuer, path string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		InsecureSkipVerify: true, // verified by pin below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			var certs []*x509.Certificate
			for _, r := range raw {
				c, err := x509.ParseCertificate(r)
				if err != nil {
					return err
				}
				certs = append(certs, c)
			}
			return tlspin.Verify(certs, "", nil, []string{iss.Pin})
		},
	}}}
	resp, err := c.Get("https://" + iss.Addr + "/v1/ssh/krl")
	if err != nil {
		t.Fatalf("GET /v1/ssh/krl: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/ssh/krl: %s %v\n%s", resp.Status, err, body)
	}
	if err := os.WriteFile(path, body, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestHostAccessControl is issue 11's end-to-end test: two managed sshd
// labelled env=staging and env=prod and one unmanaged sshd, node_labels
// enforced by the hosts and by the client's agent, locks refused within
// seconds by managed hosts and after a KRL refresh by the unmanaged one.
func TestHostAccessControl(t *testing.T) {
	t.Parallel()
	harness.Require(t, "sshd", "apt-get install -y --no-install-recommends openssh-server")
	keygen := harness.Require(t, "ssh-keygen", "apt-get install -y openssh-client")
	login := harness.CurrentUser(t)
	iss := harness.StartIssuer(t, accessResources(login))
	ctl := harness.SafeExecutable(t, iss.Bins.Ctl)

	staging := startManagedHost(t, iss, "staging-01", "staging", ctl)
	prod := startManagedHost(t, iss, "prod-01", "prod", ctl)

	// The unmanaged host trusts the user CA and the issuer's KRL, and
	// nothing else: it runs no mwid.
	krl := filepath.Join(harness.SharedDir(t), "revoked_keys.krl")
	fetchKRL(t, iss, krl)
	unmanaged := harness.StartSSHDWith(t, harness.SSHDOptions{UserCA: iss.UserCA, HostKey: harness.NewHostKey(t),
		Extra: "RevokedKeys " + krl + "\n"})

	prodUnchecked := harness.StartSSHDWith(t, harness.SSHDOptions{
		UserCAFile: filepath.Join(prod.access, "user_ca.pub"),
		HostKey:    prod.hostKey,
		HostCert:   prod.hostKey + "-cert.pub",
	})

	client := func(bot string) (*harness.Daemon, string) {
		out := t.TempDir()
		d := harness.StartDaemon(t, iss, harness.DaemonOptions{
			Token: iss.CreateToken(t, bot, time.Hour),
			Hosts: []string{"127.0.0.1"},
			Extra: fmt.Sprintf("outputs:\n  - type: identity\n    directory: %s\n", out),
		})
		d.WaitState(t, "ready", 20*time.Second)
		return d, out
	}
	ci, ciFiles := client("ci")
	admin, adminFiles := client("admin")

	knownHosts := filepath.Join(t.TempDir(), "known_hosts")
	kh, err := ci.Ctl("known-hosts")
	if err != nil {
		t.Fatalf("mwictl known-hosts: %v\n%s", err, kh)
	}
	// The unmanaged host's key is trusted as it is.
	pub, err := os.ReadFile(filepath.Join(unmanaged.Dir, "known_hosts"))
	if err != nil {
		t.Fatal(err)
	}
	write(t, knownHosts, kh+"\n"+string(pub)+"\n")

	host, _ := os.Hostname()
	type try struct {
		name    string
		agent   *harness.Daemon // through its agent; nil: with files
		files   string
		port    int
		login   string
		allowed bool
		refuser *harness.Daemon // whose log names the reason
		reason  string
	}
	tries := []try{
		{"ci on staging through its agent", ci, "", staging.sshd.Port, login, true, nil, ""},
		{"ci on staging with files", nil, ciFiles, staging.sshd.Port, login, true, nil, ""},
		{"ci on prod with files: prod's labels are not selected for this login", nil, ciFiles, prod.sshd.Port, login, false, prod.mwid, "no role of bot ci allows login " + login},
		// sshd asks the principals command before the client asks the
		// agent for a signature, so the agent's own check shows against
		// hosts that would admit the certificate: prod's key and
		// certificate on an sshd that checks nothing, and the unmanaged
		// host, whose key the issuer never certified.
		{"ci through its agent on an unchecking sshd with prod's certificate", ci, "", prodUnchecked.Port, login, false, ci, "env=prod"},
		{"ci through its agent on the unmanaged host", ci, "", unmanaged.Port, login, false, ci, "not a host certificate"},
		{"ci as nobody on staging with files: a login of another role", nil, ciFiles, staging.sshd.Port, "nobody", false, staging.mwid, "no role of bot ci allows login nobody"},
		{"admin on staging", admin, "", staging.sshd.Port, login, true, nil, ""},
		{"admin on prod", admin, "", prod.sshd.Port, login, true, nil, ""},
		{"admin on the unmanaged host with files", nil, adminFiles, unmanaged.Port, login, true, nil, ""},
	}
	for _, tc := range tries {
		sock := ""
		if tc.agent != nil {
			sock = tc.agent.AgentSock
		}
		out, err := sshTo(t, knownHosts, sock, tc.files, tc.port, tc.login, "hostname")
		switch {
		case tc.allowed && (err != nil || out != host):
			t.Errorf("%s: %v\n%s\nwant a login", tc.name, err, out)
		case !tc.allowed && (err == nil || !strings.Contains(out, "Permission denied")):
			t.Errorf("%s: %v\n%s\nwant Permission denied", tc.name, err, out)
		case !tc.allowed:
			harness.Eventually(t, 10*time.Second, tc.name+": the reason in the log", func() error {
				if log := tc.refuser.Proc.Output(); !strings.Contains(log, tc.reason) {
					return fmt.Errorf("log has no %q:\n%s", tc.reason, log)
				}
				return nil
			})
		}
	}
	// The managed hosts' refusals reach the issuer's audit log.
	harness.Eventually(t, 10*time.Second, "refusal audited", func() error {
		if iss.FindAudit(t, map[string]any{"event": "ssh_refused", "bot": "ci", "login": "nobody"}) == nil {
			return fmt.Errorf("no ssh_refused audit record for ci as nobody")
		}
		return nil
	})

	// Lock admin: both managed hosts refuse within seconds, the unmanaged
	// one after its KRL refresh.
	if out, err := harness.Run(context.Background(), 10*time.Second, nil, iss.Bins.Issuer, "lock", "add", "--state", iss.State,
		"--bot", "admin", "--message", "credentials leaked"); err != nil {
		t.Fatalf("mwi-issuer lock add: %v\n%s", err, out)
	}
	locked := time.Now()
	for _, h := range []*managedHost{staging, prod} {
		harness.Eventually(t, 20*time.Second, "managed host refuses the locked bot", func() error {
			if out, err := sshTo(t, knownHosts, admin.AgentSock, "", h.sshd.Port, login, "true"); err == nil {
				return fmt.Errorf("still admitted: %s", out)
			}
			return nil
		})
		t.Logf("lock to refusal on port %d: %v", h.sshd.Port, time.Since(locked).Round(time.Millisecond))
		// The host's KRL (RevokedKeys) or its principals command refuses,
		// whichever the lock reached first, and the host's log says which.
		harness.Eventually(t, 10*time.Second, "the refusal in the host's log", func() error {
			if !strings.Contains(h.sshd.Proc.Output(), "revoked by file") && !strings.Contains(h.mwid.Proc.Output(), "credentials leaked") {
				return fmt.Errorf("neither sshd's nor mwid's log names the lock")
			}
			return nil
		})
	}
	if _, err := sshTo(t, knownHosts, "", adminFiles, unmanaged.Port, login, "true"); err != nil {
		t.Fatalf("the unmanaged host refused before its KRL refresh: %v", err)
	}
	fetchKRL(t, iss, krl)
	out, err := sshTo(t, knownHosts, "", adminFiles, unmanaged.Port, login, "true")
	if err == nil || !strings.Contains(out, "Permission denied") {
		t.Errorf("the unmanaged host admitted the locked bot after its KRL refresh: %v\n%s", err, out)
	}
	q, _ := harness.Run(context.Background(), 10*time.Second, nil, keygen, "-Q", "-f", krl, filepath.Join(adminFiles, "key-cert.pub"))
	if !strings.Contains(q, "REVOKED") {
		t.Errorf("ssh-keygen -Q on admin's certificate: %s; want REVOKED", q)
	}
	if q, _ := harness.Run(context.Background(), 10*time.Second, nil, keygen, "-Q", "-f", krl, filepath.Join(ciFiles, "key-cert.pub")); strings.Contains(q, "REVOKED") {
		t.Errorf("ssh-keygen -Q on ci's certificate: %s; want ok", q)
	}

	// Unlock: access comes back.
	if out, err := harness.Run(context.Background(), 10*time.Second, nil, iss.Bins.Issuer, "lock", "rm", "--state", iss.State, "--bot", "admin"); err != nil {
		t.Fatalf("mwi-issuer lock rm: %v\n%s", err, out)
	}
	for _, h := range []*managedHost{staging, prod} {
		harness.Eventually(t, 20*time.Second, "managed host admits the unlocked bot", func() error {
			out, err := sshTo(t, knownHosts, admin.AgentSock, "", h.sshd.Port, login, "true")
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		})
	}
	fetchKRL(t, iss, krl)
	if out, err := sshTo(t, knownHosts, "", adminFiles, unmanaged.Port, login, "true"); err != nil {
		t.Errorf("the unmanaged host refused the unlocked bot after its KRL refresh: %v\n%s", err, out)
	}
	for _, ev := range []string{"bot.lock", "bot.unlock"} {
		if iss.FindAudit(t, map[string]any{"event": ev, "bot": "admin"}) == nil {
			t.Errorf("no %s audit record for admin", ev)
		}
	}
}

func TestHostLabelNotAllowed(t *testing.T) {
	t.Parallel()
	iss := harness.StartIssuer(t, accessResources(harness.CurrentUser(t)))
	hostKey := harness.NewHostKey(t)
	d := harness.StartDaemon(t, iss, harness.DaemonOptions{
		Token: iss.CreateToken(t, "staging-01", time.Hour),
		Extra: fmt.Sprintf("outputs:\n  - type: ssh_host\n    host_key: %s.pub\n    labels: {env: prod}\n", hostKey),
	})
	st := d.WaitError(t, "host_label_not_allowed", 20*time.Second)
	if st.Joined {
		t.Error("joined although the host asked for a label its roles do not allow")
	}
	if _, err := os.Stat(hostKey + "-cert.pub"); err == nil {
		t.Error("a host certificate was written for a refused label")
	}
	ev := iss.FindAudit(t, map[string]any{"event": "join", "outcome": "denied", "bot": "staging-01"})
	if reason, _ := ev["reason"].(string); !strings.Contains(reason, "host label env=prod") {
		t.Errorf("audited refusal %v; want one naming the label", ev)
	}
}

// TestAnsibleHostScope runs Ansible across a staging and a prod host with
// the ci bot's agent: prod is out of its scope, so that host fails with
// the refusal and the other succeeds.
func TestAnsibleHostScope(t *testing.T) {
	t.Parallel()
	ansible := harness.Require(t, "ansible", "apt-get install -y --no-install-recommends ansible-core")
	login := harness.CurrentUser(t)
	iss := harness.StartIssuer(t, accessResources(login))
	ctl := harness.SafeExecutable(t, iss.Bins.Ctl)
	staging := startManagedHost(t, iss, "staging-01", "staging", ctl)
	prod := startManagedHost(t, iss, "prod-01", "prod", ctl)
	ci := harness.StartDaemon(t, iss, harness.DaemonOptions{Token: iss.CreateToken(t, "ci", time.Hour), Hosts: []string{"127.0.0.1"}})
	ci.WaitState(t, "ready", 20*time.Second)

	dir := t.TempDir()
	knownHosts := filepath.Join(dir, "known_hosts")
	kh, err := ci.Ctl("known-hosts")
	if err != nil {
		t.Fatalf("mwictl known-hosts: %v\n%s", err, kh)
	}
	write(t, knownHosts, kh+"\n")
	inventory := filepath.Join(dir, "hosts")
	write(t, inventory, fmt.Sprintf("staging ansible_host=127.0.0.1 ansible_port=%d ansible_user=%s\nprod ansible_host=127.0.0.1 ansible_port=%d ansible_user=%s\n",
		staging.sshd.Port, login, prod.sshd.Port, login))
	out, err := harness.Run(context.Background(), 2*time.Minute, []string{
		"SSH_AUTH_SOCK=" + ci.AgentSock,
		"ANSIBLE_HOME=" + filepath.Join(dir, "ansible"),
		"ANSIBLE_LOCAL_TEMP=" + filepath.Join(dir, "ansible-tmp"),
		"ANSIBLE_PYTHON_INTERPRETER=/usr/bin/python3",
		"ANSIBLE_SSH_ARGS=-F /dev/null -o ControlMaster=no -o StrictHostKeyChecking=yes -o UserKnownHostsFile=" + knownHosts + " -o GlobalKnownHostsFile=/dev/null",
		"ANSIBLE_NOCOLOR=1",
	}, ansible, "-i", inventory, "all", "-m", "command", "-a", "hostname")
	if err == nil {
		t.Fatalf("ansible succeeded on every host; want prod to fail:\n%s", out)
	}
	lines := strings.Split(out, "\n")
	if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, "staging | CHANGED") }) {
		t.Errorf("staging did not succeed:\n%s", out)
	}
	if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, "prod | UNREACHABLE") }) || !strings.Contains(out, "Permission denied") {
		t.Errorf("prod did not fail with the refusal:\n%s", out)
	}
	if log := prod.mwid.Proc.Output(); !strings.Contains(log, "no role of bot ci allows login "+login+" on a host labelled env=prod") {
		t.Errorf("prod's mwid does not say why prod refused:\n%s", log)
	}
}
