package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/client"
)

// Issuer is a running mwi-issuer.
type Issuer struct {
	Bins      Bins
	Dir       string // working directory
	State     string // state directory
	Addr      string // 127.0.0.1:port
	AdminSock string
	AuditLog  string
	Pin       string
	UserCA    string // SSH user CA public key, authorized_keys form
	HostCA    string
	// KubeCAFile is the Kubernetes client CA's certificate, for
	// kube-apiserver's --client-ca-file.
	KubeCAFile string
	Proc       *Proc

	// Args are more flags for mwi-issuer serve, and Env more environment
	// for it, from IssuerOptions; Start uses them each time.
	Args, Env []string
}

// IssuerOptions configure StartIssuerWith.
type IssuerOptions struct {
	// Args are more flags for mwi-issuer serve, such as
	// "--cluster-name", "NAME".
	Args []string
	// Env is added to the issuer's environment, such as
	// "SSL_CERT_FILE=" + a test OIDC provider's CA, so that it trusts the
	// provider's HTTPS.
	Env []string
	// Files are more files for the resource directory, by name, written
	// before the issuer starts: a directory of resource files as a user
	// keeps it.
	Files map[string]string
}

// StartIssuer initialises an issuer in a new temporary directory, writes
// resources (YAML) into its resource directory, and starts it.
func StartIssuer(t testing.TB, resources string) *Issuer {
	t.Helper()
	return StartIssuerWith(t, resources, IssuerOptions{})
}

// StartIssuerWith starts an issuer as StartIssuer does, with more flags and
// environment.
func StartIssuerWith(t testing.TB, resources string, o IssuerOptions) *Issuer {
	t.Helper()
	b := Build(t)
	dir := t.TempDir()
	iss := &Issuer{
		Bins:  b,
		Dir:   dir,
		State: filepath.Join(dir, "state"),
		Addr:  fmt.Sprintf("127.0.0.1:%d", FreePort(t)),
		Args:  o.Args,
		Env:   o.Env,
	}
	iss.AdminSock = filepath.Join(iss.State, "admin.sock")
	iss.AuditLog = filepath.Join(iss.State, "audit.log")
	out, err := Run(context.Background(), 30*time.Second, nil, b.Issuer, "init", "--state", iss.State)
	if err != nil {
		t.Fatalf("mwi-issuer init: %v\n%s", err, out)
	}
	for _, line := range strings.Split(out, "\n") {
		k, v, _ := strings.Cut(line, ": ")
		switch k {
		case "ca_pin":
			iss.Pin = v
		case "ssh_user_ca":
			iss.UserCA = v
		case "ssh_host_ca":
			iss.HostCA = v
		case "kube_client_ca_file":
			iss.KubeCAFile = v
		}
	}
	if iss.Pin == "" || iss.UserCA == "" {
		t.Fatalf("mwi-issuer init printed no pin or CA:\n%s", out)
	}
	iss.WriteResources(t, "test.yaml", resources)
	for name, data := range o.Files {
		iss.WriteResources(t, name, data)
	}
	iss.Start(t)
	return iss
}

// WriteResources writes a resource file.
func (iss *Issuer) WriteResources(t testing.TB, name, yaml string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(iss.State, "resources", name), []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Start starts the issuer and waits until it accepts connections.
func (iss *Issuer) Start(t testing.TB) {
	t.Helper()
	argv := append([]string{iss.Bins.Issuer, "serve", "--state", iss.State, "--listen", iss.Addr}, iss.Args...)
	iss.Proc = Start(t, iss.Dir, "mwi-issuer", iss.Env, argv...)
	Eventually(t, 15*time.Second, "issuer listening", func() error {
		if iss.Proc.Exited() {
			t.Fatalf("mwi-issuer exited:\n%s", iss.Proc.Output())
		}
		c, err := net.Dial("tcp", iss.Addr)
		if err != nil {
			return err
		}
		c.Close()
		c, err = net.Dial("unix", iss.AdminSock)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// Stop stops the issuer.
func (iss *Issuer) Stop(t testing.TB) { iss.Proc.Stop(t) }

// CreateToken makes a one-time join token with the issuer's admin command.
func (iss *Issuer) CreateToken(t testing.TB, bot string, ttl time.Duration) string {
	t.Helper()
	out, err := Run(context.Background(), 30*time.Second, nil, iss.Bins.Issuer, "token", "create",
		"--admin-socket", iss.AdminSock, "--bot", bot, "--ttl", ttl.String(), "--json")
	if err != nil {
		t.Fatalf("token create: %v\n%s", err, out)
	}
	var resp api.CreateTokenResponse
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("token create: %v\n%s", err, out)
	}
	return resp.Token
}

// Audit returns the audit log's events.
func (iss *Issuer) Audit(t testing.TB) []map[string]any {
	t.Helper()
	f, err := os.Open(iss.AuditLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var events []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e map[string]any
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("audit line is not JSON: %v: %s", err, sc.Text())
		}
		events = append(events, e)
	}
	return events
}

// FindAudit returns the first audit event whose fields include all of
// match, or nil.
func (iss *Issuer) FindAudit(t testing.TB, match map[string]any) map[string]any {
	t.Helper()
	for _, e := range iss.Audit(t) {
		ok := true
		for k, v := range match {
			if fmt.Sprint(e[k]) != fmt.Sprint(v) {
				ok = false
				break
			}
		}
		if ok {
			return e
		}
	}
	return nil
}

// DaemonOptions configure a test mwid.
type DaemonOptions struct {
	Token  string
	TTL    time.Duration // certificate_ttl; default 1h
	Logins []string      // ssh.logins; empty asks for every allowed login
	Hosts  []string      // ssh.hosts
	Extra  string        // more top-level YAML

	// AllowUnbound sets agent.unbound to allow: the agent then signs on
	// connections that bound no session, as clients that sign raw data
	// (the x/crypto agent client, agentload) need.
	AllowUnbound bool

	// Env is added to mwid's environment.
	Env []string
	// TokenConfig is the YAML under onboarding.token, such as
	// "credential: join-token"; by default "env: MWI_TOKEN".
	TokenConfig string
	// Credential, if set, runs mwid as that user and group. Its directory
	// is then made in the system's temporary directory, owned by that
	// user, since the test's own temporary directories admit only root.
	Credential *syscall.Credential
	// Onboarding, if set, is the whole YAML under onboarding:, such as
	// "join_method: github\ntoken_name: ci\nid_token:\n  file: PATH";
	// it replaces the token join (and TokenConfig).
	Onboarding string
	// IssuerAddrs, if set, are the issuer replicas mwid is given in
	// issuer.addresses, in order, instead of the issuer's one address.
	IssuerAddrs []string
	// APISocket is more YAML under sockets.api, such as
	// "group: nogroup\nallow: {users: [nobody]}". With it, the daemon's
	// directory is one other users can enter, so that the callers it
	// allows can reach the socket.
	APISocket string
}

// Daemon is a running mwid.
type Daemon struct {
	Dir       string
	Config    string
	AgentSock string
	APISock   string
	Proc      *Proc
	Client    *client.Client
	bins      Bins

	env  []string            // added to mwid's environment
	cred *syscall.Credential // who mwid runs as, or nil
}

// StartDaemon writes a mwid configuration for iss and starts mwid with the
// token in its environment. It does not wait for the join.
func StartDaemon(t testing.TB, iss *Issuer, o DaemonOptions) *Daemon {
	t.Helper()
	d := NewDaemon(t, iss, o)
	d.Start(t)
	return d
}

// NewDaemon writes a mwid configuration for iss in a new directory, as
// StartDaemon does, without starting mwid: Start starts it (again, after
// it stopped), and Oneshot runs mwid --oneshot with it.
func NewDaemon(t testing.TB, iss *Issuer, o DaemonOptions) *Daemon {
	t.Helper()
	dir := daemonDir(t, o.Credential)
	if o.APISocket != "" && o.Credential == nil {
		dir = SharedDir(t)
	}
	d := &Daemon{
		Dir:       dir,
		Config:    filepath.Join(dir, "mwid.yaml"),
		AgentSock: filepath.Join(dir, "agent.sock"),
		APISock:   filepath.Join(dir, "api.sock"),
		bins:      iss.Bins,
		cred:      o.Credential,
	}
	d.Client = &client.Client{Socket: d.APISock}
	if o.TTL == 0 {
		o.TTL = time.Hour
	}
	if o.TokenConfig == "" {
		o.TokenConfig = "env: MWI_TOKEN"
	}
	onboarding := "join_method: token\ntoken:\n" + indent(o.TokenConfig, "  ")
	apiExtra := ""
	if o.APISocket != "" {
		apiExtra = indent(o.APISocket, "    ") + "\n"
	}
	if o.Onboarding != "" {
		onboarding = o.Onboarding
	}
	logins := "ssh:\n  logins: " + yamlList(o.Logins) + "\n  hosts: " + yamlList(o.Hosts) + "\n"
	if o.AllowUnbound {
		logins += "agent:\n  unbound: allow\n"
	}
	address := "address: " + iss.Addr
	if o.IssuerAddrs != nil {
		address = "addresses: " + yamlList(o.IssuerAddrs)
	}
	cfg := fmt.Sprintf(`version: v1
issuer:
  %s
  ca_pins: [%q]
onboarding:
%s
certificate_ttl: %s
sockets:
  agent:
    path: %s
  api:
    path: %s
%slog:
  level: debug
%s%s`, address, iss.Pin, indent(onboarding, "  "), o.TTL, d.AgentSock, d.APISock, apiExtra, logins, o.Extra)
	if err := os.WriteFile(d.Config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if c := o.Credential; c != nil {
		if err := os.Chown(d.Config, int(c.Uid), int(c.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	d.env = append([]string{"MWI_TOKEN=" + o.Token}, o.Env...)
	return d
}

// Start starts mwid with the daemon's configuration; after the previous
// mwid stopped, it starts a new one, with its output appended to the same
// log.
func (d *Daemon) Start(t testing.TB) {
	t.Helper()
	if d.Proc != nil && !d.Proc.Exited() {
		t.Fatal("harness: Daemon.Start while mwid runs")
	}
	d.Proc = StartAs(t, d.cred, d.Dir, "mwid", d.env, d.bins.Daemon, "-c", d.Config)
}

// Oneshot runs mwid --oneshot with the daemon's configuration and
// environment, as the test's own user, to completion within timeout, and
// returns its combined output; the error is mwid's exit status.
func (d *Daemon) Oneshot(ctx context.Context, timeout time.Duration) (string, error) {
	return Run(ctx, timeout, d.env, d.bins.Daemon, "--oneshot", "-c", d.Config)
}

// daemonDir returns a new directory for a daemon: the test's own, or, for
// a daemon that runs as another user, one that user owns and can reach.
func daemonDir(t testing.TB, cred *syscall.Credential) string {
	t.Helper()
	if cred == nil {
		return t.TempDir()
	}
	dir, err := os.MkdirTemp("", "mwid-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
		t.Fatal(err)
	}
	return dir
}

// indent prefixes each line of s.
func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = prefix + l
	}
	return strings.Join(lines, "\n")
}

// Status asks the daemon for its status through the client package.
func (d *Daemon) Status(t testing.TB) (api.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return d.Client.Status(ctx)
}

// WaitState waits until the daemon reports state.
func (d *Daemon) WaitState(t testing.TB, state string, timeout time.Duration) api.Status {
	t.Helper()
	var st api.Status
	Eventually(t, timeout, "mwid state "+state, func() error {
		if d.Proc.Exited() {
			t.Fatalf("mwid exited:\n%s", d.Proc.Output())
		}
		var err error
		st, err = d.Status(t)
		if err != nil {
			return err
		}
		if st.State != state {
			return fmt.Errorf("state %q, last error %q", st.State, st.LastError)
		}
		return nil
	})
	return st
}

// WaitError waits until the daemon's status reports an error containing want.
func (d *Daemon) WaitError(t testing.TB, want string, timeout time.Duration) api.Status {
	t.Helper()
	var st api.Status
	Eventually(t, timeout, "mwid error "+strconv.Quote(want), func() error {
		var err error
		st, err = d.Status(t)
		if err != nil {
			return err
		}
		if !strings.Contains(st.LastError, want) {
			return fmt.Errorf("last error %q", st.LastError)
		}
		return nil
	})
	return st
}

// Ctl runs mwictl against the daemon.
func (d *Daemon) Ctl(args ...string) (string, error) {
	return Run(context.Background(), 30*time.Second, nil, append([]string{d.bins.Ctl, "--socket", d.APISock}, args...)...)
}

func yamlList(items []string) string {
	q := make([]string, len(items))
	for i, l := range items {
		q[i] = strconv.Quote(l)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
