package integration

import (
	"context"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/integration/harness"
	"github.com/mwi-project/mwi/internal/oidctest"
)

// Teleport's Machine & Workload Identity getting started guide, done as
// it is written with MWI in place of Teleport, with the guide's own files:
// its role, bot and token (issuer/resource/testdata/teleport) go to the
// issuer with mwi-issuer create -f in place of tctl create -f, or through
// the resource directory; its server_bot.yaml and k8s_bot.yaml
// (daemon/config/testdata/tbot) run with mwid --oneshot in place of
// tbot start --oneshot in a GitHub Actions job; and the job uses what they
// write with stock OpenSSH and kubectl.
//
// The files are copied unchanged but for what must point at this machine,
// substituted by the test in its copies:
//
//   - the token's commented-out enterprise_server_host is set to the local
//     provider, which plays GitHub Enterprise Server (GitHub itself cannot
//     sign a token here); the line stays where it was.
//   - the tbot files' proxy_server is the issuer's address (guideJob).
//
// The job's ID token names the repository the guide's token allows,
// guideRepo, so the guide's github.allow rule is the one that admits it.
// The guide's role logs in as ubuntu on hosts labelled env=my-env-label:
// the test makes that user if the machine has none, and a host with that
// label.

// guideRepo is the repository the guide's token allows.
const guideRepo = "your-github-username/mwi-getting-started-guide"

// guideLogin is the login the guide's server role allows.
const guideLogin = "ubuntu"

// guideLabels are the labels the guide's roles and k8s_bot.yaml select.
var guideLabels = map[string]string{"env": "my-env-label"}

// guideFiles returns the guide's resource files for the role file named,
// as they are, but for the token's enterprise_server_host, which names
// the local provider p.
func guideFiles(t *testing.T, p *oidctest.Provider, role string) map[string]string {
	t.Helper()
	read := func(name string) string {
		data, err := os.ReadFile(filepath.Join("..", "issuer", "resource", "testdata", "teleport", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	token := read("github_bot_join_token.yaml")
	const ghes = "# enterprise_server_host: github.my-company.com"
	if !strings.Contains(token, ghes) || !strings.Contains(token, `repository: "`+guideRepo+`"`) {
		t.Fatalf("github_bot_join_token.yaml no longer has the guide's %q or repository %q", ghes, guideRepo)
	}
	return map[string]string{
		role:                         read(role),
		"github_bot.yaml":            read("github_bot.yaml"),
		"github_bot_join_token.yaml": strings.Replace(token, ghes, "enterprise_server_host: "+p.Host(), 1),
	}
}

// guideIssuer starts an issuer with the guide's resource files for the
// role file named, loaded as how says: "create -f", with mwi-issuer
// create -f of each file (and bots add in place of github_bot.yaml if
// botsAdd), or "directory", from the resource directory at start. dir
// holds more resources for the directory, such as a kube_cluster.
func guideIssuer(t *testing.T, p *oidctest.Provider, how, role, dir string, botsAdd bool) *harness.Issuer {
	t.Helper()
	files := guideFiles(t, p, role)
	opts := harness.IssuerOptions{Env: []string{"SSL_CERT_FILE=" + p.CAFile()}}
	if how == "directory" {
		opts.Files = files
		return harness.StartIssuerWith(t, dir, opts)
	}
	iss := harness.StartIssuerWith(t, dir, opts)
	// The files side by side in a directory of their own, as in the
	// guide's repository, and the commands as the guide gives them.
	work := t.TempDir()
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(work, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	admin := func(args ...string) {
		t.Helper()
		out, err := runIn(t, work, []string{"MWI_ADMIN_SOCKET=" + iss.AdminSock}, 30*time.Second, append([]string{iss.Bins.Issuer}, args...)...)
		if err != nil {
			t.Fatalf("mwi-issuer %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	admin("create", "-f", role)
	if botsAdd {
		admin("bots", "add", "github-bot", "--roles", "github-bot")
	} else {
		admin("create", "-f", "github_bot.yaml")
	}
	admin("create", "-f", "github_bot_join_token.yaml")
	return iss
}

// guideLoads are the two ways the guide's files reach the issuer.
var guideLoads = []string{"create -f", "directory"}

// ensureUser makes the local user login, as useradd does, with a password
// that cannot be used but does not lock the account (sshd, without PAM,
// refuses locked accounts), unless it exists; the test removes it again.
func ensureUser(t *testing.T, login string) {
	t.Helper()
	if _, err := user.Lookup(login); err == nil {
		return
	}
	if os.Geteuid() != 0 {
		msg := fmt.Sprintf("no user %q, and only root can make one: useradd -m -s /bin/sh %s && usermod -p '*' %s", login, login, login)
		if os.Getenv("MWI_REQUIRE_INTEGRATION") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	for _, argv := range [][]string{{"useradd", "-m", "-s", "/bin/sh", login}, {"usermod", "-p", "*", login}} {
		if out, err := harness.Run(context.Background(), 30*time.Second, nil, argv...); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
		}
	}
	t.Cleanup(func() {
		if out, err := harness.Run(context.Background(), 30*time.Second, nil, "userdel", "-r", login); err != nil {
			t.Errorf("userdel -r %s: %v\n%s", login, err, out)
		}
	})
}

// TestGuideServerBot does the guide's Server flow: the guide's server role,
// bot and token loaded with create -f and from the resource directory;
// mwid --oneshot -c ./action_support/server_bot.yaml in a job with an ID
// token of the guide's repository; ssh -F ./ssh_out/ssh_config as ubuntu
// into a real sshd labelled env=my-env-label, whose host certificate the
// issuer's host CA signed.
func TestGuideServerBot(t *testing.T) {
	t.Parallel()
	ssh := harness.Require(t, "ssh", "apt-get install -y openssh-client")
	ensureUser(t, guideLogin)
	p := oidctest.New(t, oidctest.WithPathPrefix("/_services/token"))
	for _, how := range guideLoads {
		t.Run(how, func(t *testing.T) {
			iss := guideIssuer(t, p, how, "github_bot_server_role.yaml", "", false)
			sshd := iss.StartSSHD(t, guideLabels)
			work := guideJob(t, iss, "server_bot.yaml")
			res, err := runIn(t, work, p.ActionsEnv(p.GitHubClaims("", guideRepo)), time.Minute,
				iss.Bins.Daemon, "--oneshot", "-c", "./action_support/server_bot.yaml", "--ca-pin", iss.Pin)
			if err != nil {
				t.Fatalf("mwid --oneshot -c ./action_support/server_bot.yaml: %v\n%s", err, res)
			}
			checkIdentityFiles(t, filepath.Join(work, "ssh_out"), guideLogin, 5*time.Minute)
			res, err = runIn(t, work, []string{"SSH_AUTH_SOCK="}, 30*time.Second, ssh,
				"-F", "./ssh_out/ssh_config", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
				"-p", fmt.Sprint(sshd.Port), guideLogin+"@127.0.0.1", "id", "-un")
			if err != nil || res != guideLogin {
				t.Errorf("ssh -F ./ssh_out/ssh_config %s@127.0.0.1 id -un: %v\n%s", guideLogin, err, res)
			}
			if iss.FindAudit(t, map[string]any{"event": "join", "outcome": "allowed", "bot": "github-bot", "token_name": "github-bot", "join_method": "github"}) == nil {
				t.Error("no audit line for the guide's GitHub join")
			}

			// A job of another repository is refused by the guide's
			// github.allow rule.
			other := guideJob(t, iss, "server_bot.yaml")
			res, err = runIn(t, other, p.ActionsEnv(p.GitHubClaims("", "someone-else/mwi-getting-started-guide")), time.Minute,
				iss.Bins.Daemon, "--oneshot", "-c", "./action_support/server_bot.yaml", "--ca-pin", iss.Pin)
			if err == nil || !strings.Contains(res, "no allow rule matched") {
				t.Errorf("mwid --oneshot in a job of another repository: %v; want no allow rule matched\n%s", err, res)
			}
		})
	}
}

// TestGuideK8sBot does the guide's Kubernetes flow: the guide's Kubernetes
// role, the bot (bots add in place of tctl bots add, or github_bot.yaml
// from the directory) and token; mwid --oneshot -c
// ./action_support/k8s_bot.yaml; kubectl --kubeconfig
// ./k8s_out/kubeconfig.yaml get pods -n default against a real API server,
// the cluster its labels select. The guide's role gives system:masters
// with kubernetes_resources, and get says these restrict nothing.
func TestGuideK8sBot(t *testing.T) {
	t.Parallel()
	kube := harness.NewKube(t)
	p := oidctest.New(t, oidctest.WithPathPrefix("/_services/token"))
	// The cluster is the machine's, not the guide's: the test names it in
	// the resource directory, with the labels the guide selects.
	cluster := kube.ClusterYAML("guide-cluster", guideLabels)
	issuers := map[string]*harness.Issuer{}
	var caPEM []byte
	for _, how := range guideLoads {
		iss := guideIssuer(t, p, how, "github_bot_k8s_role.yaml", cluster, how == "create -f")
		issuers[how] = iss
		data, err := os.ReadFile(iss.KubeCAFile)
		if err != nil {
			t.Fatal(err)
		}
		caPEM = append(caPEM, data...)
	}
	// One API server trusts both issuers' Kubernetes CAs.
	caFile := filepath.Join(t.TempDir(), "issuers_kube_ca.crt")
	if err := os.WriteFile(caFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	kube.Start(t, caFile)

	for _, how := range guideLoads {
		t.Run(how, func(t *testing.T) {
			iss := issuers[how]
			work := guideJob(t, iss, "k8s_bot.yaml")
			res, err := runIn(t, work, p.ActionsEnv(p.GitHubClaims("", guideRepo)), time.Minute,
				iss.Bins.Daemon, "--oneshot", "-c", "./action_support/k8s_bot.yaml", "--ca-pin", iss.Pin)
			if err != nil {
				t.Fatalf("mwid --oneshot -c ./action_support/k8s_bot.yaml: %v\n%s", err, res)
			}
			res, err = runIn(t, work, []string{"HOME=" + kube.Home}, time.Minute,
				kube.Kubectl, "--kubeconfig", "./k8s_out/kubeconfig.yaml", "get", "pods", "-n", "default")
			if err != nil {
				t.Errorf("kubectl --kubeconfig ./k8s_out/kubeconfig.yaml get pods -n default: %v\n%s", err, res)
			}

			admin := func(args ...string) string {
				t.Helper()
				out, err := harness.Run(context.Background(), 30*time.Second, nil, append(append([]string{iss.Bins.Issuer}, args...), "--admin-socket", iss.AdminSock)...)
				if err != nil {
					t.Fatalf("mwi-issuer %s: %v\n%s", strings.Join(args, " "), err, out)
				}
				return out
			}
			if out := admin("kube", "ls"); !strings.Contains(out, "guide-cluster") || !strings.Contains(out, "env=my-env-label") {
				t.Errorf("mwi-issuer kube ls:\n%s", out)
			}
			const warning = api.WarningComment + "kubernetes_resources of role github-bot restrict nothing on cluster guide-cluster: its certificates are in system:masters"
			if out := admin("get", "role/github-bot"); !strings.HasPrefix(out, warning) {
				t.Errorf("mwi-issuer get role/github-bot does not start with %q:\n%s", warning, out)
			}
		})
	}
}
