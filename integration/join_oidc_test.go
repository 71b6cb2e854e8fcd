package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/integration/harness"
	"github.com/mwi-project/mwi/internal/oidctest"
)

// GitHub Actions joins. The local OIDC provider plays GitHub Enterprise
// Server at 127.0.0.1:PORT (issuer https://127.0.0.1:PORT/_services/token),
// so the issuer finds its keys through real OIDC discovery over HTTPS, and
// serves the job's token request endpoint (ACTIONS_ID_TOKEN_REQUEST_URL).

// clusterName is the issuer's --cluster-name in these tests: the audience
// GitHub tokens must carry by default.
const clusterName = "mwi-test"

// ghRepo is the repository whose jobs the github token resource admits, on
// branch main.
const ghRepo = "example-org/deploy-tools"

// githubResources returns resources with:
//
//	bot ci        role ci-access: logins [login], kubernetes env=ci as system:masters
//	bot build-01  role host: host certificates for 127.0.0.1
//	token github-ci  join_method github, GHES at ghesHost, for ghRepo on main
//
// and extra (such as kube_cluster resources) appended.
func githubResources(login, ghesHost, extra string) string {
	s := fmt.Sprintf(`kind: role
version: v1
metadata: {name: ci-access}
spec:
  allow:
    logins: [%q]
    node_labels: {'*': '*'}
    kubernetes_labels: {env: ci}
    kubernetes_groups: [system:masters]
    kubernetes_users: [github-ci]
  options:
    max_ttl: 1h
---
kind: bot
version: v1
metadata: {name: ci}
spec: {roles: [ci-access]}
---
kind: role
version: v1
metadata: {name: host}
spec:
  allow:
    host_names: [127.0.0.1]
---
kind: bot
version: v1
metadata: {name: build-01}
spec: {roles: [host]}
---
kind: token
version: v1
metadata:
  name: github-ci
spec:
  join_method: github
  bot_name: ci
  github:
    enterprise_server_host: %q
    allow:
      - repository_owner: someone-else
      - repository: %s
        ref: refs/heads/main
`, login, ghesHost, ghRepo)
	if extra != "" {
		s += "---\n" + extra
	}
	return s
}

// githubOnboarding is mwid's onboarding through github-ci with a token from
// the Actions token endpoint.
const githubOnboarding = `join_method: github
token_name: github-ci
id_token:
  github_actions:
    audience: ` + clusterName + "\n"

// startGitHubIssuer starts a provider that looks like GitHub Enterprise
// Server and an issuer that trusts its HTTPS and has the resources of
// githubResources.
func startGitHubIssuer(t *testing.T, extra string) (*oidctest.Provider, *harness.Issuer) {
	t.Helper()
	p := oidctest.New(t, oidctest.WithPathPrefix("/_services/token"))
	iss := harness.StartIssuerWith(t, githubResources(harness.CurrentUser(t), p.Host(), extra), harness.IssuerOptions{
		Args: []string{"--cluster-name", clusterName},
		Env:  []string{"SSL_CERT_FILE=" + p.CAFile()},
	})
	return p, iss
}

// certifiedSSHD starts an sshd whose host certificate an mwid ssh_host
// output of bot build-01 obtained from iss, and returns it.
func certifiedSSHD(t *testing.T, iss *harness.Issuer) *harness.SSHD {
	t.Helper()
	hostKey := harness.NewHostKey(t)
	host := harness.StartDaemon(t, iss, harness.DaemonOptions{
		Token: iss.CreateToken(t, "build-01", time.Hour),
		Extra: fmt.Sprintf("outputs:\n  - type: ssh_host\n    host_key: %s.pub\n    names: [127.0.0.1]\n", hostKey),
	})
	host.WaitState(t, "ready", 20*time.Second)
	return harness.StartSSHDWith(t, harness.SSHDOptions{UserCA: iss.UserCA, HostKey: hostKey, HostCert: hostKey + "-cert.pub"})
}

// TestGitHubActionsOneshot is the seed flow of Teleport's guide, with
// nothing faked that runs on Linux: a GitHub Actions job (its token
// endpoint served by the local provider) runs mwid --oneshot, which joins
// with the job's ID token and writes an identity and a kubeconfig into
// out/; stock ssh logs into a real sshd with -F out/ssh_config, checking
// the host certificate strictly, and kubectl lists namespaces of a real
// kube-apiserver with out/kubeconfig.yaml. A job on another branch is
// refused with the reason, and the issuer audits the denial.
func TestGitHubActionsOneshot(t *testing.T) {
	t.Parallel()
	user := harness.CurrentUser(t)
	kube := harness.NewKube(t)
	p, iss := startGitHubIssuer(t, kube.ClusterYAML("ci-cluster", map[string]string{"env": "ci"}))
	kube.Start(t, iss.KubeCAFile)
	sshd := certifiedSSHD(t, iss)
	impostor := harness.StartSSHD(t, iss.UserCA)

	const ttl = 10 * time.Minute
	ciJob := func(t *testing.T, ref string) (*harness.Daemon, string) {
		claims := p.GitHubClaims("", ghRepo)
		claims["ref"] = ref
		claims["sub"] = "repo:" + ghRepo + ":ref:" + ref
		// out/ is the job's output directory, as in the guide's workflow.
		out := filepath.Join(t.TempDir(), "out")
		if err := os.Mkdir(out, 0o700); err != nil {
			t.Fatal(err)
		}
		d := harness.NewDaemon(t, iss, harness.DaemonOptions{
			TTL: ttl, Hosts: []string{"127.0.0.1"}, Onboarding: githubOnboarding,
			Env: p.ActionsEnv(claims),
			Extra: fmt.Sprintf(`outputs:
  - type: identity
    directory: %[1]s
  - type: kubernetes
    clusters: [ci-cluster]
    directory: %[1]s
`, out),
		})
		return d, out
	}

	t.Run("main", func(t *testing.T) {
		d, out := ciJob(t, "refs/heads/main")
		start := time.Now()
		res, err := d.Oneshot(context.Background(), time.Minute)
		if err != nil {
			t.Fatalf("mwid --oneshot: %v\n%s", err, res)
		}
		t.Logf("mwid --oneshot took %s", time.Since(start).Round(time.Millisecond))
		if p.ActionsTokenRequests() == 0 || p.DiscoveryRequests() == 0 || p.JWKSRequests() == 0 {
			t.Errorf("provider requests: token %d, discovery %d, JWKS %d; want each at least once",
				p.ActionsTokenRequests(), p.DiscoveryRequests(), p.JWKSRequests())
		}
		// One-shot mode serves nothing.
		for _, sock := range []string{d.AgentSock, d.APISock} {
			if _, err := os.Lstat(sock); err == nil {
				t.Errorf("mwid --oneshot left a socket at %s", sock)
			}
		}
		checkModes(t, out, map[string]os.FileMode{
			"key": 0o600, "key.pub": 0o644, "key-cert.pub": 0o644,
			"known_hosts": 0o644, "ssh_config": 0o644, "kubeconfig.yaml": 0o600,
		})
		cert := checkIdentityFiles(t, out, user, ttl)
		t.Logf("certificate %q for %v, valid until %s", cert.KeyId, cert.ValidPrincipals, time.Unix(int64(cert.ValidBefore), 0).Format(time.RFC3339))

		ssh := harness.Require(t, "ssh", "apt-get install -y openssh-client")
		sshTo := func(port int) (string, error) {
			return harness.Run(context.Background(), 30*time.Second, []string{"SSH_AUTH_SOCK="}, ssh,
				"-F", filepath.Join(out, "ssh_config"), "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
				"-p", fmt.Sprint(port), user+"@127.0.0.1", "hostname")
		}
		res, err = sshTo(sshd.Port)
		if host, _ := os.Hostname(); err != nil || res != host {
			t.Errorf("ssh -F out/ssh_config to the certified sshd: %v\n%s", err, res)
		}
		res, err = sshTo(impostor.Port)
		if err == nil || !strings.Contains(res, "Host key verification failed") {
			t.Errorf("ssh -F out/ssh_config to an sshd with an unsigned host key: err %v, output %q; want a host key verification failure", err, res)
		}

		res, err = kube.Run(context.Background(), filepath.Join(out, "kubeconfig.yaml"), "get", "ns")
		if err != nil || !strings.Contains(res, "default") || !strings.Contains(res, "kube-system") {
			t.Errorf("kubectl --kubeconfig out/kubeconfig.yaml get ns: %v\n%s", err, res)
		}
		res, err = kube.Run(context.Background(), filepath.Join(out, "kubeconfig.yaml"), "auth", "whoami")
		if err != nil || !strings.Contains(res, "github-ci") || !strings.Contains(res, "system:masters") {
			t.Errorf("kubectl auth whoami with out/kubeconfig.yaml: %v\n%s", err, res)
		}

		if ev := iss.FindAudit(t, map[string]any{"event": "join", "outcome": "allowed", "bot": "ci", "token_name": "github-ci", "join_method": "github"}); ev == nil {
			t.Error("no audit line for the GitHub join naming the token resource")
		}
	})

	t.Run("other branch", func(t *testing.T) {
		d, out := ciJob(t, "refs/heads/feature")
		res, err := d.Oneshot(context.Background(), time.Minute)
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 {
			t.Fatalf("mwid --oneshot for a job on another branch: %v; want a non-zero exit\n%s", err, res)
		}
		if !strings.Contains(res, "no allow rule matched") {
			t.Errorf("mwid --oneshot output does not name the reason %q:\n%s", "no allow rule matched", res)
		}
		if strings.Contains(res, "refs/heads/main") {
			t.Errorf("the refusal leaks the rule set (refs/heads/main):\n%s", res)
		}
		if entries, _ := os.ReadDir(out); len(entries) != 0 {
			t.Errorf("a refused job wrote outputs: %v", entries)
		}
		t.Logf("refused as expected:\n%s", res)
		ev := findAuditContaining(t, iss, map[string]any{"event": "join", "outcome": "denied", "token_name": "github-ci"}, "reason", "no allow rule matched")
		if ev == nil {
			t.Fatal("no audit line for the refused job naming the token resource and the reason")
		}
	})
}

// checkModes checks that dir holds the files of want with their modes,
// written as regular files.
func checkModes(t *testing.T, dir string, want map[string]os.FileMode) {
	t.Helper()
	for name, mode := range want {
		fi, err := os.Lstat(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("output %s: %v", name, err)
			continue
		}
		if !fi.Mode().IsRegular() || fi.Mode().Perm() != mode {
			t.Errorf("output %s: mode %v, want a regular file with mode %v", name, fi.Mode(), mode)
		}
	}
	// Atomic writes leave no temporary files behind.
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if _, ok := want[e.Name()]; !ok {
			t.Errorf("unexpected file in the output directory: %s", e.Name())
		}
	}
}

// checkIdentityFiles checks the identity output in dir: an OpenSSH private
// key, its public key, a user certificate for that key naming login that
// ends within ttl, and an ssh_config with absolute paths into dir. It
// returns the certificate.
func checkIdentityFiles(t *testing.T, dir, login string, ttl time.Duration) *ssh.Certificate {
	t.Helper()
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	signer, err := ssh.ParsePrivateKey(read("key"))
	if err != nil {
		t.Fatalf("out/key is not an unencrypted OpenSSH private key: %v", err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(read("key.pub"))
	if err != nil {
		t.Fatalf("out/key.pub: %v", err)
	}
	if string(pub.Marshal()) != string(signer.PublicKey().Marshal()) {
		t.Error("out/key.pub is not the public half of out/key")
	}
	certKey, _, _, _, err := ssh.ParseAuthorizedKey(read("key-cert.pub"))
	if err != nil {
		t.Fatalf("out/key-cert.pub: %v", err)
	}
	cert, ok := certKey.(*ssh.Certificate)
	if !ok || cert.CertType != ssh.UserCert {
		t.Fatalf("out/key-cert.pub is not a user certificate: %T", certKey)
	}
	if string(cert.Key.Marshal()) != string(signer.PublicKey().Marshal()) {
		t.Error("out/key-cert.pub certifies another key than out/key")
	}
	if !strings.Contains(strings.Join(cert.ValidPrincipals, " "), login) {
		t.Errorf("certificate principals %v do not include %s", cert.ValidPrincipals, login)
	}
	// The credentials expire soon after: within the configured lifetime
	// (and a minute of slack for clocks), not the role's maximum.
	if end := time.Unix(int64(cert.ValidBefore), 0); end.After(time.Now().Add(ttl + time.Minute)) {
		t.Errorf("certificate valid until %s; want within %s", end, ttl)
	}
	cfg := string(read("ssh_config"))
	for _, want := range []string{
		filepath.Join(dir, "key"), filepath.Join(dir, "key-cert.pub"), filepath.Join(dir, "known_hosts"),
		"IdentitiesOnly yes", "StrictHostKeyChecking yes",
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("out/ssh_config does not contain %q:\n%s", want, cfg)
		}
	}
	if kh := string(read("known_hosts")); !strings.HasPrefix(kh, "@cert-authority ") {
		t.Errorf("out/known_hosts = %q; want @cert-authority lines", kh)
	}
	return cert
}

// TestGitHubRejoinKeepsInstance runs mwid as a long-lived daemon that
// joined with a GitHub Actions token. Such an identity cannot be renewed
// by itself: at each renewal mwid fetches a fresh ID token (the endpoint
// mints a new one, with a new jti, each time) and joins again with its
// still-valid identity, and the issuer keeps the bot instance, advancing
// its generation. The replay cache refuses none of the fresh tokens.
func TestGitHubRejoinKeepsInstance(t *testing.T) {
	t.Parallel()
	user := harness.CurrentUser(t)
	p, iss := startGitHubIssuer(t, "")
	sshd := iss.StartSSHD(t, nil)
	d := harness.StartDaemon(t, iss, harness.DaemonOptions{
		TTL:        10 * time.Second,
		Onboarding: githubOnboarding,
		Env:        p.ActionsEnv(p.GitHubClaims("", ghRepo)),
	})
	first := d.WaitState(t, "ready", 20*time.Second)
	if first.Instance == "" {
		t.Fatalf("status after the join names no instance: %+v", first)
	}
	t.Logf("joined: instance %s generation %d", first.Instance, first.Generation)

	// Two re-joins at least: with a 10s lifetime, within about 15s.
	var last api.Status
	harness.Eventually(t, 60*time.Second, "two re-joins", func() error {
		st, err := d.Status(t)
		if err != nil {
			return err
		}
		if st.Instance != "" && st.Instance != first.Instance {
			t.Fatalf("instance changed from %s to %s (generation %d): a re-join made a new instance", first.Instance, st.Instance, st.Generation)
		}
		if strings.Contains(st.LastError, "already used") {
			t.Fatalf("a re-join was refused by the replay cache: %s", st.LastError)
		}
		last = st
		if st.Generation < first.Generation+2 {
			return fmt.Errorf("generation %d (first %d), state %s, last error %q", st.Generation, first.Generation, st.State, st.LastError)
		}
		return nil
	})
	t.Logf("after re-joins: instance %s generation %d, state %s", last.Instance, last.Generation, last.State)
	if last.State != "ready" {
		t.Errorf("state %q after re-joins, last error %q", last.State, last.LastError)
	}
	if n := p.ActionsTokenRequests(); n < 3 {
		t.Errorf("mwid asked the Actions endpoint for %d tokens; want a fresh one at each of 3 joins", n)
	}
	// Every join, first and re-joins, is audited with the one instance.
	joins, rejoins := 0, 0
	for _, e := range iss.Audit(t) {
		if e["outcome"] == "denied" {
			t.Errorf("the issuer denied something during re-joins: %v", e)
		}
		if e["event"] != "join" {
			continue
		}
		joins++
		if e["instance"] != first.Instance {
			t.Errorf("a join was audited with instance %v; want %s: %v", e["instance"], first.Instance, e)
		}
		if e["rejoin"] == true {
			rejoins++
		}
	}
	if joins < 3 || rejoins != joins-1 {
		t.Errorf("the issuer audited %d joins of which %d re-joins; want at least 3, all but the first re-joins", joins, rejoins)
	}
	// The certificate of the latest join works.
	if out, err := sshd.SSH(t, d.AgentSock, user, "true"); err != nil {
		t.Errorf("ssh after the re-joins: %v\n%s", err, out)
	}
}
