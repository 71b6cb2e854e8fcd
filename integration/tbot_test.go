package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mwi-project/mwi/integration/harness"
	"github.com/mwi-project/mwi/internal/oidctest"
)

// Teleport's getting started guide, run as it is written with mwid in
// place of tbot: the guide's tbot files (daemon/config/testdata/tbot,
// verbatim) are checked out in a GitHub Actions job's working directory,
// where `mwid --oneshot -c ./action_support/server_bot.yaml` joins with the
// job's ID token and writes ./ssh_out, and stock OpenSSH logs in with
// `ssh -F ./ssh_out/ssh_config`. Only the proxy address is rewritten, by
// the test, to its issuer's; the issuer is trusted with mwid --ca-pin.

// guideResources returns the resources the guide creates: role github-bot
// (logins, node_labels and kubernetes access), bot github-bot, and token
// github-bot admitting jobs of ghRepo from the GitHub Enterprise Server at
// ghesHost (the local provider), and extra appended.
func guideResources(login, ghesHost, extra string) string {
	s := fmt.Sprintf(`kind: role
version: v1
metadata: {name: github-bot}
spec:
  allow:
    logins: [%q]
    node_labels: {'*': '*'}
    kubernetes_labels: {env: my-env-label}
    kubernetes_groups: [system:masters]
    kubernetes_users: [github-bot]
---
kind: bot
version: v1
metadata: {name: github-bot}
spec: {roles: [github-bot]}
---
kind: token
version: v1
metadata: {name: github-bot}
spec:
  join_method: github
  bot_name: github-bot
  github:
    enterprise_server_host: %q
    allow:
      - repository: %s
`, login, ghesHost, ghRepo)
	if extra != "" {
		s += "---\n" + extra
	}
	return s
}

// guideJob makes a job's working directory holding the guide's file name
// at action_support/NAME, its proxy address replaced by iss's.
func guideJob(t *testing.T, iss *harness.Issuer, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "daemon", "config", "testdata", "tbot", name))
	if err != nil {
		t.Fatal(err)
	}
	const guideProxy = "proxy_server: example.teleport.sh:443\n"
	if !bytes.Contains(data, []byte(guideProxy)) {
		t.Fatalf("%s no longer names the guide's proxy", name)
	}
	data = bytes.Replace(data, []byte(guideProxy), []byte("proxy_server: "+iss.Addr+"\n"), 1)
	work := t.TempDir()
	if err := os.Mkdir(filepath.Join(work, "action_support"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "action_support", name), data, 0o600); err != nil {
		t.Fatal(err)
	}
	return work
}

// runIn runs argv in dir with env added, to completion within timeout, and
// returns its combined output.
func runIn(t *testing.T, dir string, env []string, timeout time.Duration, argv ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// startGuideIssuer starts a provider that looks like GitHub Enterprise
// Server and an issuer with guideResources, under its default cluster
// name: the audience mwid asks the Actions endpoint for.
func startGuideIssuer(t *testing.T, extra string) (*oidctest.Provider, *harness.Issuer) {
	t.Helper()
	p := oidctest.New(t, oidctest.WithPathPrefix("/_services/token"))
	iss := harness.StartIssuerWith(t, guideResources(harness.CurrentUser(t), p.Host(), extra), harness.IssuerOptions{
		Env: []string{"SSL_CERT_FILE=" + p.CAFile()},
	})
	return p, iss
}

// TestTBotGuideServerBot runs the guide's server_bot.yaml: mwid --oneshot,
// then ssh -F ./ssh_out/ssh_config into a real sshd whose host certificate
// the issuer's host CA signed.
func TestTBotGuideServerBot(t *testing.T) {
	t.Parallel()
	user := harness.CurrentUser(t)
	p, iss := startGuideIssuer(t, "")
	sshd := iss.StartSSHD(t, map[string]string{"env": "mwi-demo"})
	work := guideJob(t, iss, "server_bot.yaml")
	env := p.ActionsEnv(p.GitHubClaims("", ghRepo))

	res, err := runIn(t, work, env, time.Minute, iss.Bins.Daemon, "--oneshot", "-c", "./action_support/server_bot.yaml", "--ca-pin", iss.Pin)
	if err != nil {
		t.Fatalf("mwid --oneshot -c ./action_support/server_bot.yaml: %v\n%s", err, res)
	}
	out := filepath.Join(work, "ssh_out")
	checkModes(t, out, map[string]os.FileMode{
		"key": 0o600, "key.pub": 0o644, "key-cert.pub": 0o644, "known_hosts": 0o644, "ssh_config": 0o644,
	})
	checkIdentityFiles(t, out, user, 5*time.Minute)

	ssh := harness.Require(t, "ssh", "apt-get install -y openssh-client")
	res, err = runIn(t, work, []string{"SSH_AUTH_SOCK="}, 30*time.Second, ssh,
		"-F", "./ssh_out/ssh_config", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
		"-p", fmt.Sprint(sshd.Port), user+"@127.0.0.1", "echo", "guide-ok")
	if err != nil || res != "guide-ok" {
		t.Errorf("ssh -F ./ssh_out/ssh_config: %v\n%s", err, res)
	}
	if ev := iss.FindAudit(t, map[string]any{"event": "join", "outcome": "allowed", "bot": "github-bot", "token_name": "github-bot", "join_method": "github"}); ev == nil {
		t.Error("no audit line for the guide's GitHub join")
	}

	// Without --ca-pin the guide's file trusts the system's store, which
	// does not know the issuer: the refusal says how to trust it.
	res, err = runIn(t, work, env, time.Minute, iss.Bins.Daemon, "--oneshot", "-c", "./action_support/server_bot.yaml")
	if err == nil || !strings.Contains(res, "--ca-pin") || !strings.Contains(res, "ca_pins") {
		t.Errorf("mwid --oneshot without a pin: %v; want a refusal naming ca_pins and --ca-pin\n%s", err, res)
	}
}

// TestTBotGuideK8sBot runs the guide's k8s_bot.yaml: mwid --oneshot, then
// kubectl --kubeconfig ./k8s_out/kubeconfig.yaml get pods -n default
// against a real API server, for the cluster its label selector picks.
func TestTBotGuideK8sBot(t *testing.T) {
	t.Parallel()
	kube := harness.NewKube(t)
	p, iss := startGuideIssuer(t, kube.ClusterYAML("guide-cluster", map[string]string{"env": "my-env-label"}))
	kube.Start(t, iss.KubeCAFile)
	work := guideJob(t, iss, "k8s_bot.yaml")

	res, err := runIn(t, work, p.ActionsEnv(p.GitHubClaims("", ghRepo)), time.Minute,
		iss.Bins.Daemon, "--oneshot", "-c", "./action_support/k8s_bot.yaml", "--ca-pin", iss.Pin)
	if err != nil {
		t.Fatalf("mwid --oneshot -c ./action_support/k8s_bot.yaml: %v\n%s", err, res)
	}
	kubeconfig := filepath.Join(work, "k8s_out", "kubeconfig.yaml")
	checkModes(t, filepath.Dir(kubeconfig), map[string]os.FileMode{"kubeconfig.yaml": 0o600})
	res, err = kube.Run(context.Background(), kubeconfig, "get", "pods", "-n", "default")
	if err != nil {
		t.Errorf("kubectl --kubeconfig ./k8s_out/kubeconfig.yaml get pods -n default: %v\n%s", err, res)
	}
}
