package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/integration/harness"
	"github.com/mwi-project/mwi/internal/sshaccess"
)

// hostTrustResources has two bots: "ci", a client that may log in as
// login, and "build-01", an SSH server whose host certificate may name
// 127.0.0.1 and localhost.
func hostTrustResources(login string) string {
	return resources(login) + `---
kind: role
version: v1
metadata:
  name: host
spec:
  allow:
    host_names: [127.0.0.1, localhost]
---
kind: bot
version: v1
metadata:
  name: build-01
spec:
  roles: [host]
`
}

// hostTrust is an issuer, a target sshd whose host certificate comes from
// an mwid ssh_host output, an impostor sshd whose host key the issuer never
// signed, and a client mwid.
type hostTrust struct {
	iss      *harness.Issuer
	target   *harness.SSHD
	impostor *harness.SSHD
	client   *harness.Daemon
	host     *harness.Daemon
	hostCert string
}

func setupHostTrust(t *testing.T) *hostTrust {
	t.Helper()
	harness.Require(t, "sshd", "apt-get install -y --no-install-recommends openssh-server")
	h := &hostTrust{}
	h.iss = harness.StartIssuer(t, hostTrustResources(harness.CurrentUser(t)))

	// The build host's mwid certifies the host key sshd will serve.
	hostKey := harness.NewHostKey(t)
	h.hostCert = hostKey + "-cert.pub"
	marker := filepath.Join(t.TempDir(), "reloaded")
	h.host = harness.StartDaemon(t, h.iss, harness.DaemonOptions{
		Token: h.iss.CreateToken(t, "build-01", time.Hour),
		Extra: fmt.Sprintf(`outputs:
  - type: ssh_host
    host_key: %s.pub
    names: [127.0.0.1]
    reload_command: [touch, %s]
`, hostKey, marker),
	})
	st := h.host.WaitState(t, "ready", 20*time.Second)
	if len(st.Outputs) != 1 || st.Outputs[0].LastWrite == nil || st.Outputs[0].Path != h.hostCert {
		t.Fatalf("host mwid outputs = %+v; want one written to %s", st.Outputs, h.hostCert)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("the output's reload command did not run: %v", err)
	}
	h.target = harness.StartSSHDWith(t, harness.SSHDOptions{UserCA: h.iss.UserCA, HostKey: hostKey, HostCert: h.hostCert})
	h.impostor = harness.StartSSHD(t, h.iss.UserCA)

	h.client = harness.StartDaemon(t, h.iss, harness.DaemonOptions{
		Token: h.iss.CreateToken(t, "ci", time.Hour),
		Hosts: []string{"127.0.0.1", "localhost"},
	})
	h.client.WaitState(t, "ready", 20*time.Second)
	return h
}

func TestSSHHostCertificate(t *testing.T) {
	t.Parallel()
	h := setupHostTrust(t)
	data, err := os.ReadFile(h.hostCert)
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(data)
	if err != nil {
		t.Fatal(err)
	}
	cert, ok := pub.(*ssh.Certificate)
	if !ok || cert.CertType != ssh.HostCert || strings.Join(cert.ValidPrincipals, ",") != "127.0.0.1" {
		t.Fatalf("host certificate = %+v; want a host certificate for 127.0.0.1", pub)
	}
	if fi, _ := os.Stat(h.hostCert); fi.Mode().Perm() != 0o644 {
		t.Errorf("host certificate mode %v, want 0644", fi.Mode().Perm())
	}

	// The ssh_config mwictl writes trusts the issuer's host CA only.
	sshConfig := filepath.Join(t.TempDir(), "ssh_config")
	if out, err := h.client.Ctl("ssh-config", "-o", sshConfig); err != nil {
		t.Fatalf("mwictl ssh-config: %v\n%s", err, out)
	}
	ssh := harness.Require(t, "ssh", "apt-get install -y openssh-client")
	run := func(port int) (string, error) {
		return harness.Run(context.Background(), 30*time.Second, nil, ssh, "-F", sshConfig,
			"-o", "BatchMode=yes", "-p", fmt.Sprint(port), "-l", harness.CurrentUser(t), "127.0.0.1", "hostname")
	}
	out, err := run(h.target.Port)
	if host, _ := os.Hostname(); err != nil || out != host {
		t.Fatalf("ssh -F <(mwictl ssh-config) to the certified sshd: %v\n%s", err, out)
	}
	out, err = run(h.impostor.Port)
	if err == nil || !strings.Contains(out, "Host key verification failed") {
		t.Fatalf("ssh to the sshd with an unsigned host key: err %v, output %q; want a host key verification failure", err, out)
	}
	// The join or renewal record names the host certificate.
	var audited bool
	for _, ev := range h.iss.Audit(t) {
		if hosts, _ := ev["host_certs"].([]any); ev["outcome"] == "allowed" && ev["bot"] == "build-01" && len(hosts) > 0 {
			audited = audited || hosts[0].(map[string]any)["serial"] == strconv.FormatUint(cert.Serial, 10)
		}
	}
	if !audited {
		t.Error("no audit line for the host certificate")
	}
	// A host without labels says so, under the CA's signature.
	if labels, ok := cert.Extensions[sshaccess.LabelsExtension]; !ok || labels != "{}" {
		t.Errorf("host certificate labels extension = %q, %v; want {}", labels, ok)
	}

	// The host is in the inventory, with the version of its mwid.
	out, err = harness.Run(context.Background(), 30*time.Second, nil, h.iss.Bins.Issuer, "nodes", "ls", "--format", "json", "--admin-socket", h.iss.AdminSock)
	var nodes api.Nodes
	if err != nil || json.Unmarshal([]byte(out), &nodes) != nil || len(nodes.Nodes) != 1 {
		t.Fatalf("mwi-issuer nodes ls: %v\n%s", err, out)
	}
	mwidVersion, err := harness.Run(context.Background(), 30*time.Second, nil, h.iss.Bins.Daemon, "--version")
	if err != nil {
		t.Fatal(err)
	}
	n := nodes.Nodes[0]
	if n.Bot != "build-01" || strings.Join(n.Names, ",") != "127.0.0.1" || n.Address != "127.0.0.1" || n.Version == "" ||
		!strings.Contains(mwidVersion, " "+n.Version+" ") || n.Renewed.IsZero() {
		t.Errorf("node = %+v; want build-01 at 127.0.0.1 running %q", n, mwidVersion)
	}
}

func TestHostNameNotAllowed(t *testing.T) {
	t.Parallel()
	iss := harness.StartIssuer(t, hostTrustResources(harness.CurrentUser(t)))
	hostKey := harness.NewHostKey(t)
	d := harness.StartDaemon(t, iss, harness.DaemonOptions{
		Token: iss.CreateToken(t, "build-01", time.Hour),
		Extra: fmt.Sprintf("outputs:\n  - type: ssh_host\n    host_key: %s.pub\n    names: [prod-db.example.com]\n", hostKey),
	})
	st := d.WaitError(t, "host_name_not_allowed", 20*time.Second)
	if st.Joined {
		t.Error("joined although the host asked for a name its roles do not allow")
	}
	if _, err := os.Stat(hostKey + "-cert.pub"); err == nil {
		t.Error("a host certificate was written for a refused name")
	}
}

func TestAnsibleThroughAgent(t *testing.T) {
	t.Parallel()
	ansible := harness.Require(t, "ansible", "apt-get install -y --no-install-recommends ansible-core")
	playbook := harness.Require(t, "ansible-playbook", "apt-get install -y --no-install-recommends ansible-core")
	h := setupHostTrust(t)
	user := harness.CurrentUser(t)

	dir := t.TempDir()
	knownHosts := filepath.Join(dir, "known_hosts")
	out, err := h.client.Ctl("known-hosts")
	if err != nil {
		t.Fatalf("mwictl known-hosts: %v\n%s", err, out)
	}
	write(t, knownHosts, out+"\n")
	inventory := filepath.Join(dir, "hosts")
	write(t, inventory, fmt.Sprintf("target ansible_host=127.0.0.1 ansible_port=%d ansible_user=%s\n", h.target.Port, user))
	// Authentication comes only from SSH_AUTH_SOCK; host keys are checked
	// strictly against the issuer's host CA. ControlMaster is off so that
	// no kept connection hides what the agent does.
	env := func(agentSock string) []string {
		return []string{
			"SSH_AUTH_SOCK=" + agentSock,
			"ANSIBLE_HOME=" + filepath.Join(dir, "ansible"),
			"ANSIBLE_LOCAL_TEMP=" + filepath.Join(dir, "ansible-tmp"),
			"ANSIBLE_PYTHON_INTERPRETER=/usr/bin/python3",
			"ANSIBLE_HOST_KEY_CHECKING=True",
			"ANSIBLE_SSH_ARGS=-F /dev/null -o ControlMaster=no -o StrictHostKeyChecking=yes -o UserKnownHostsFile=" + knownHosts + " -o GlobalKnownHostsFile=/dev/null",
			"ANSIBLE_NOCOLOR=1",
		}
	}

	out, err = harness.Run(context.Background(), 2*time.Minute, env(h.client.AgentSock), ansible, "-i", inventory, "all", "-m", "command", "-a", "hostname")
	if host, _ := os.Hostname(); err != nil || !strings.Contains(out, "CHANGED") || !strings.Contains(out, host) {
		t.Fatalf("ansible ad-hoc command: %v\n%s", err, out)
	}

	result := filepath.Join(dir, "played")
	book := filepath.Join(dir, "site.yml")
	write(t, book, fmt.Sprintf(`- hosts: all
  gather_facts: false
  tasks:
    - name: write a file on the target
      ansible.builtin.copy:
        content: "written through mwid's agent\n"
        dest: %s
`, result))
	out, err = harness.Run(context.Background(), 2*time.Minute, env(h.client.AgentSock), playbook, "-i", inventory, book)
	if err != nil || !strings.Contains(out, "failed=0") {
		t.Fatalf("ansible-playbook: %v\n%s", err, out)
	}
	if data, err := os.ReadFile(result); err != nil || !strings.Contains(string(data), "mwid's agent") {
		t.Fatalf("the playbook's file: %q, %v", data, err)
	}

	// Without the agent socket, Ansible fails cleanly: unreachable, with
	// ssh's reason.
	missing := filepath.Join(dir, "no-such-agent.sock")
	out, err = harness.Run(context.Background(), 2*time.Minute, env(missing), ansible, "-i", inventory, "all", "-m", "ping")
	if err == nil || !strings.Contains(out, "UNREACHABLE") || !strings.Contains(out, "Permission denied") {
		t.Fatalf("ansible without the agent socket: err %v\n%s\nwant UNREACHABLE with Permission denied", err, out)
	}
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}
