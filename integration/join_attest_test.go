package integration

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/daemon/issuerclient"
	"github.com/mwi-project/mwi/integration/harness"
)

// Joins without a shared secret: with a Kubernetes service-account token
// that a real kube-apiserver minted, and with a bound key pair. (GitHub
// Actions joins, through a local OIDC provider, are in join_oidc_test.go.)

// saAudience is the audience of the service-account tokens the tests mint
// and the one the kubernetes token resource names.
const saAudience = "mwi-k8s-test"

// kubeJoinResources has a bot "ci" that may log in as login, and a
// kubernetes token resource "k8s-join" that admits the service account
// default:mwi-bot of the API server kube, verified through its OIDC
// discovery.
func kubeJoinResources(login string, kube *harness.Kube) string {
	return resources(login) + fmt.Sprintf(`---
kind: token
version: v1
metadata:
  name: k8s-join
spec:
  join_method: kubernetes
  bot_name: ci
  audience: %s
  kubernetes:
    issuer_url: %s
    ca_data: %s
    allow:
      - service_account: default:mwi-bot
`, saAudience, kube.Server, base64.StdEncoding.EncodeToString(kube.CAPEM))
}

// kubeTokenDaemon starts a mwid that joins with the service-account token
// in the file tokenFile, through the token resource k8s-join.
func kubeTokenDaemon(t *testing.T, iss *harness.Issuer, tokenFile string) *harness.Daemon {
	t.Helper()
	return harness.StartDaemon(t, iss, harness.DaemonOptions{
		Onboarding: fmt.Sprintf("join_method: kubernetes\ntoken_name: k8s-join\nid_token:\n  file: %s\n", tokenFile),
	})
}

// TestKubernetesServiceAccountJoin joins with a projected-style
// service-account token minted by a real kube-apiserver (kubectl create
// token), which the issuer verifies through the API server's own OIDC
// discovery and JWKS; a token for another service account is refused.
func TestKubernetesServiceAccountJoin(t *testing.T) {
	t.Parallel()
	kube := harness.NewKube(t)
	iss := harness.StartIssuer(t, kubeJoinResources(harness.CurrentUser(t), kube))
	kube.Start(t, iss.KubeCAFile)
	// Anonymous callers may read the service-account issuer's discovery
	// document and keys, as the issuer fetches them without credentials.
	kube.Admin(t, "create", "clusterrolebinding", "oidc-discovery",
		"--clusterrole=system:service-account-issuer-discovery", "--group=system:unauthenticated")
	// No controller manager runs, so the service accounts are made here.
	kube.Admin(t, "create", "serviceaccount", "mwi-bot")
	kube.Admin(t, "create", "serviceaccount", "intruder")
	dir := t.TempDir()
	tokenFile := func(sa string) string {
		tok := kube.Admin(t, "create", "token", sa, "--audience", saAudience, "--duration", "10m")
		p := filepath.Join(dir, sa+".jwt")
		write(t, p, strings.TrimSpace(tok))
		return p
	}
	good, bad := tokenFile("mwi-bot"), tokenFile("intruder")

	d := kubeTokenDaemon(t, iss, good)
	st := d.WaitState(t, "ready", 30*time.Second)
	if !st.Joined || st.Bot != "ci" || st.Instance == "" {
		t.Fatalf("status = %+v; want joined as bot ci", st)
	}
	if ev := iss.FindAudit(t, map[string]any{"event": "join", "outcome": "allowed", "bot": "ci", "token_name": "k8s-join",
		"join_method": "kubernetes", "subject": "system:serviceaccount:default:mwi-bot"}); ev == nil {
		t.Error("no audit line for the service-account join naming the token resource and the service account")
	}
	// The certificate works against a real sshd: the join gave a real
	// identity, not only a status line.
	sshd := iss.StartSSHD(t, nil)
	if out, err := sshd.SSH(t, d.AgentSock, harness.CurrentUser(t), "true"); err != nil {
		t.Fatalf("ssh with the certificate of the service-account join: %v\n%s", err, out)
	}

	// The intruder's token is a valid token from the same API server with
	// the right audience; only the rule refuses it.
	other := kubeTokenDaemon(t, iss, bad)
	st = other.WaitError(t, api.CodeJoinDenied, 30*time.Second)
	if st.Joined {
		t.Errorf("the daemon with another service account's token joined: %+v", st)
	}
	if !strings.Contains(st.LastError, "no allow rule matched") {
		t.Errorf("status error %q does not say %q", st.LastError, "no allow rule matched")
	}
	if strings.Contains(st.LastError, "mwi-bot") {
		t.Errorf("the refusal %q leaks the allowed service account", st.LastError)
	}
	if ev := findAuditContaining(t, iss, map[string]any{"event": "join", "outcome": "denied", "token_name": "k8s-join"}, "reason", "no allow rule matched"); ev == nil {
		t.Error("no audit line for the refused service account")
	}

	// A long-lived daemon re-joins at each renewal (an ID token cannot
	// renew an identity) and re-reads its token file each time, as kubelet
	// rotates projected tokens: here the test rotates the file, atomically,
	// whenever it is two seconds old, more often than mwid re-joins with a
	// 10s certificate lifetime. mwid keeps its instance, and no fresh
	// token is refused as a replay.
	rotating := filepath.Join(dir, "projected.jwt")
	rotate := func() error {
		tok, err := kube.Run(context.Background(), kube.AdminKubeconfig, "create", "token", "mwi-bot", "--audience", saAudience, "--duration", "10m")
		if err != nil {
			return fmt.Errorf("kubectl create token: %v: %s", err, tok)
		}
		tmp := rotating + ".tmp"
		if err := os.WriteFile(tmp, []byte(strings.TrimSpace(tok)), 0o600); err != nil {
			return err
		}
		return os.Rename(tmp, rotating)
	}
	if err := rotate(); err != nil {
		t.Fatal(err)
	}
	long := harness.StartDaemon(t, iss, harness.DaemonOptions{
		TTL:        10 * time.Second,
		Onboarding: fmt.Sprintf("join_method: kubernetes\ntoken_name: k8s-join\nid_token:\n  file: %s\n", rotating),
	})
	first := long.WaitState(t, "ready", 30*time.Second)
	rotated := time.Now()
	harness.Eventually(t, 60*time.Second, "two re-joins with rotated tokens", func() error {
		if time.Since(rotated) > 2*time.Second {
			if err := rotate(); err != nil {
				t.Fatal(err)
			}
			rotated = time.Now()
		}
		st, err := long.Status(t)
		if err != nil {
			return err
		}
		if st.Instance != first.Instance || strings.Contains(st.LastError, "already used") {
			t.Fatalf("after re-joins: instance %s (first %s), last error %q", st.Instance, first.Instance, st.LastError)
		}
		if st.Generation < first.Generation+2 {
			return fmt.Errorf("generation %d (first %d), state %s, last error %q", st.Generation, first.Generation, st.State, st.LastError)
		}
		return nil
	})
	if n := countAudit(t, iss, map[string]any{"event": "join", "outcome": "allowed", "instance": first.Instance, "rejoin": true}); n < 2 {
		t.Errorf("the issuer audited %d re-joins of instance %s; want at least 2", n, first.Instance)
	}
	if n := countAudit(t, iss, map[string]any{"event": "join", "outcome": "denied", "client_instance": first.Instance}); n != 0 {
		t.Errorf("the issuer refused %d re-joins of instance %s", n, first.Instance)
	}
}

// findAuditContaining returns the first audit event that has the fields of
// match and whose field key contains sub, or nil.
func findAuditContaining(t *testing.T, iss *harness.Issuer, match map[string]any, key, sub string) map[string]any {
	t.Helper()
	for _, e := range iss.Audit(t) {
		ok := strings.Contains(fmt.Sprint(e[key]), sub)
		for k, v := range match {
			if fmt.Sprint(e[k]) != fmt.Sprint(v) {
				ok = false
			}
		}
		if ok {
			return e
		}
	}
	return nil
}

// countAudit counts the audit events that have the fields of match.
func countAudit(t *testing.T, iss *harness.Issuer, match map[string]any) int {
	t.Helper()
	n := 0
	for _, e := range iss.Audit(t) {
		ok := true
		for k, v := range match {
			if fmt.Sprint(e[k]) != fmt.Sprint(v) {
				ok = false
			}
		}
		if ok {
			n++
		}
	}
	return n
}

// boundKeyResources has the bot "ci" and a bound_keypair token resource
// "build-host" that holds the public key pub (authorized_keys form).
func boundKeyResources(login, pub string) string {
	return resources(login) + fmt.Sprintf(`---
kind: token
version: v1
metadata:
  name: build-host
spec:
  join_method: bound_keypair
  bot_name: ci
  bound_keypair:
    public_key: %q
`, strings.TrimSpace(pub))
}

// newCredentialKey makes an ed25519 key with ssh-keygen as the file
// "bound-key" in a new directory, as systemd's LoadCredential= would
// provide it in $CREDENTIALS_DIRECTORY, and returns the directory and the
// public key.
func newCredentialKey(t *testing.T) (dir, pub string) {
	t.Helper()
	keygen := harness.Require(t, "ssh-keygen", "apt-get install -y openssh-client")
	dir = t.TempDir()
	key := filepath.Join(dir, "bound-key")
	if out, err := harness.Run(context.Background(), 30*time.Second, nil, keygen, "-q", "-t", "ed25519", "-N", "", "-C", "build-host", "-f", key); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	data, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	// Only the private key is the credential; systemd provides nothing else.
	if err := os.Remove(key + ".pub"); err != nil {
		t.Fatal(err)
	}
	return dir, string(data)
}

// boundKeyDaemon is a mwid that joins through build-host with the key in
// credDir.
func boundKeyDaemon(t *testing.T, iss *harness.Issuer, credDir string) *harness.Daemon {
	t.Helper()
	return harness.NewDaemon(t, iss, harness.DaemonOptions{
		Onboarding: "join_method: bound_keypair\ntoken_name: build-host\nkey:\n  credential: bound-key\n",
		Env:        []string{"CREDENTIALS_DIRECTORY=" + credDir},
	})
}

// TestBoundKeypairJoin joins a build host with a registered key pair that
// systemd would provide through $CREDENTIALS_DIRECTORY; after a restart the
// same key joins again (no one-time secret was spent); a different key is
// refused.
func TestBoundKeypairJoin(t *testing.T) {
	t.Parallel()
	user := harness.CurrentUser(t)
	credDir, pub := newCredentialKey(t)
	iss := harness.StartIssuer(t, boundKeyResources(user, pub))
	sshd := iss.StartSSHD(t, nil)

	d := boundKeyDaemon(t, iss, credDir)
	d.Start(t)
	first := d.WaitState(t, "ready", 30*time.Second)
	if !first.Joined || first.Bot != "ci" {
		t.Fatalf("status = %+v; want joined as bot ci", first)
	}
	if out, err := sshd.SSH(t, d.AgentSock, user, "true"); err != nil {
		t.Fatalf("ssh after the bound key pair join: %v\n%s", err, out)
	}

	// A restart loses every key and certificate mwid held in memory; the
	// bound key is all it has, and it is enough.
	if err := d.Proc.Stop(t); err != nil {
		t.Logf("mwid stopped: %v", err)
	}
	d.Start(t)
	second := d.WaitState(t, "ready", 30*time.Second)
	if !second.Joined || second.Bot != "ci" {
		t.Fatalf("status after the restart = %+v; want joined as bot ci", second)
	}
	if out, err := sshd.SSH(t, d.AgentSock, user, "true"); err != nil {
		t.Fatalf("ssh after the restart: %v\n%s", err, out)
	}
	if n := countAudit(t, iss, map[string]any{"event": "join", "outcome": "allowed", "bot": "ci", "token_name": "build-host", "join_method": "bound_keypair"}); n != 2 {
		t.Errorf("the issuer audited %d allowed bound_keypair joins of bot ci; want 2 (before and after the restart)", n)
	}

	// Another key, in the right place under the right name, is refused.
	otherDir, _ := newCredentialKey(t)
	other := boundKeyDaemon(t, iss, otherDir)
	other.Start(t)
	st := other.WaitError(t, api.CodeJoinDenied, 30*time.Second)
	if st.Joined {
		t.Errorf("a daemon with an unregistered key joined: %+v", st)
	}
	if !strings.Contains(st.LastError, "signature does not verify") {
		t.Errorf("status error %q does not say %q", st.LastError, "signature does not verify")
	}
	if ev := iss.FindAudit(t, map[string]any{"event": "join", "outcome": "denied", "token_name": "build-host", "reason": "signature does not verify"}); ev == nil {
		t.Error("no audit line for the join with the unregistered key")
	}
	// The first daemon is not disturbed by the refusal.
	if st, err := d.Status(t); err != nil || st.State != "ready" {
		t.Errorf("the bound daemon after the refused join: %+v, %v", st, err)
	}
}

// TestBoundKeypairChallengeFlood floods the issuer with anonymous
// challenge requests for the token of a running bound key pair host, from
// the host's own address, while the host renews by joining again every
// few seconds: the flood is refused, and the host, which asks for its
// challenges with its identity, keeps renewing its instance.
//
// It does not run in parallel: the flood must outrun the issuer's refill
// of one challenge every 6 seconds, and on a loaded machine one client's
// sequential requests do not.
func TestBoundKeypairChallengeFlood(t *testing.T) {
	user := harness.CurrentUser(t)
	credDir, pub := newCredentialKey(t)
	iss := harness.StartIssuer(t, boundKeyResources(user, pub))
	d := harness.StartDaemon(t, iss, harness.DaemonOptions{
		TTL:        10 * time.Second,
		Onboarding: "join_method: bound_keypair\ntoken_name: build-host\nkey:\n  credential: bound-key\n",
		Env:        []string{"CREDENTIALS_DIRECTORY=" + credDir},
	})
	first := d.WaitState(t, "ready", 30*time.Second)

	ic, err := issuerclient.New(config.Issuer{Address: iss.Addr, CAPins: []string{iss.Pin}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	var refused, served atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			_, err := ic.Challenge(ctx, nil, "build-host")
			var e *issuerclient.Error
			switch {
			case err == nil:
				served.Add(1)
			case errors.As(err, &e) && e.Status == http.StatusTooManyRequests:
				refused.Add(1)
			}
		}
	}()
	defer func() { stop(); <-done }()

	harness.Eventually(t, 60*time.Second, "two renewals during the flood", func() error {
		st, err := d.Status(t)
		if err != nil {
			return err
		}
		if st.Instance != first.Instance || st.LastError != "" {
			t.Fatalf("during the flood: instance %s (first %s), last error %q", st.Instance, first.Instance, st.LastError)
		}
		if st.Generation < first.Generation+2 {
			return fmt.Errorf("generation %d (first %d), %d flood requests refused", st.Generation, first.Generation, refused.Load())
		}
		return nil
	})
	stop()
	<-done
	if refused.Load() == 0 {
		t.Errorf("no flood request was refused (%d served)", served.Load())
	}
	t.Logf("flood: %d challenges refused, %d served", refused.Load(), served.Load())
	if n := countAudit(t, iss, map[string]any{"event": "join.challenge", "outcome": "allowed", "instance": first.Instance}); n < 2 {
		t.Errorf("the issuer audited %d challenges for the host's instance, want at least 2", n)
	}
	if n := countAudit(t, iss, map[string]any{"event": "join", "outcome": "denied", "client_instance": first.Instance}); n != 0 {
		t.Errorf("the issuer refused %d re-joins of the host", n)
	}
}
