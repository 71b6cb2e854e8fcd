package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mwi-project/mwi/integration/harness"
)

// nodesResources has two managed hosts, staging (named localhost, which
// resolves, and staging.mwi.test) and prod (prod.mwi.test), and a client
// bot ci whose role selects env=staging for login.
func nodesResources(login string) string {
	return fmt.Sprintf(`kind: role
version: v1
metadata: {name: host-staging}
spec:
  allow:
    host_names: [localhost, staging.mwi.test]
    host_labels: {env: staging}
---
kind: role
version: v1
metadata: {name: host-prod}
spec:
  allow:
    host_names: [prod.mwi.test]
    host_labels: {env: prod}
---
kind: bot
version: v1
metadata: {name: staging-01}
spec: {roles: [host-staging]}
---
kind: bot
version: v1
metadata: {name: prod-01}
spec: {roles: [host-prod]}
---
kind: role
version: v1
metadata: {name: staging-ssh}
spec:
  allow:
    logins: [%[1]q]
    node_labels: {env: staging}
---
kind: bot
version: v1
metadata: {name: ci}
spec: {roles: [staging-ssh]}
`, login)
}

// TestSSHConfigNodes writes, with mwictl ssh-config --nodes, a Host block
// for each host the issuer lists as one the client bot may log in to: the
// staging host and not the prod one. ssh -F with that file and nothing
// else logs in to the staging host by its name, through mwid's agent, with
// the host key checked against the issuer's host CA, although the name is
// outside the client's ssh.hosts patterns.
func TestSSHConfigNodes(t *testing.T) {
	t.Parallel()
	harness.Require(t, "sshd", "apt-get install -y --no-install-recommends openssh-server")
	ssh := harness.Require(t, "ssh", "apt-get install -y openssh-client")
	login := harness.CurrentUser(t)
	iss := harness.StartIssuer(t, nodesResources(login))
	ctl := harness.SafeExecutable(t, iss.Bins.Ctl)

	staging := startNamedHost(t, iss, "staging-01", "staging", ctl, "localhost", "staging.mwi.test")
	startNamedHost(t, iss, "prod-01", "prod", ctl, "prod.mwi.test")

	ci := harness.StartDaemon(t, iss, harness.DaemonOptions{
		Token: iss.CreateToken(t, "ci", time.Hour),
		Hosts: []string{"*.example.com"},
	})
	ci.WaitState(t, "ready", 20*time.Second)

	file := filepath.Join(t.TempDir(), "ssh_config")
	out, err := ci.Ctl("ssh-config", "--nodes", "-o", file)
	if err != nil {
		t.Fatalf("mwictl ssh-config --nodes: %v\n%s", err, out)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(data)
	if !strings.Contains(cfg, "\nHost localhost staging.mwi.test\n") || strings.Contains(cfg, "prod.mwi.test") {
		t.Fatalf("ssh_config lists the wrong hosts:\n%s", cfg)
	}
	if strings.Contains(cfg, "User ") {
		t.Errorf("ssh_config names a User although %s, who runs ssh, may log in:\n%s", login, cfg)
	}

	host, _ := os.Hostname()
	// No agent in the environment: the file names it.
	env := []string{"SSH_AUTH_SOCK="}
	out, err = harness.Run(context.Background(), 30*time.Second, env, ssh, "-F", file,
		"-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-p", fmt.Sprint(staging.sshd.Port), "localhost", "hostname")
	if err != nil || strings.TrimSpace(out) != host {
		t.Fatalf("ssh -F %s localhost: %v\n%s\nssh_config:\n%s", file, err, out, cfg)
	}
}
