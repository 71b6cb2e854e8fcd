// Command mwi-dev runs a local MWI development environment: an issuer and
// an mwid joined to it, on embedded defaults, until it is interrupted.
// make dev builds the programs and runs it.
//
// Usage:
//
//	mwi-dev [-state DIR] [-bin DIR] [-issuer-addr ADDR] [-timeout DURATION]
//
// The state directory defaults to .mwi-dev at the root of the repository
// that holds the current directory; the programs are looked for in the
// directory that holds mwi-dev itself.
//
// On its first run mwi-dev initialises an issuer in STATE/issuer and writes
// STATE/issuer/resources/dev.yaml (from dev.yaml.tmpl) unless it exists: a
// role dev that allows the current user's login name and a bot dev that
// holds it. Later runs reuse both. Each run then
//
//   - starts mwi-issuer serve, logging to STATE/issuer.log;
//   - creates a one-time join token for the bot dev;
//   - writes STATE/mwid.yaml (from mwid.yaml.tmpl) and starts mwid with the
//     token in its environment, logging to STATE/mwid.log;
//   - waits until mwid reports that it is ready, and prints what to export
//     to use its SSH agent and API sockets.
//
// mwid keeps nothing on disk, so it joins anew on every run. SIGINT, SIGTERM
// or SIGHUP stops mwid, then the issuer, and mwi-dev exits 0. If either child
// exits on its own, mwi-dev stops the other and exits 1, printing the last
// lines of the child's log.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/safefs"
	"github.com/mwi-project/mwi/issuer/ca"
)

// modulePath identifies the repository's go.mod.
const modulePath = "github.com/mwi-project/mwi"

// maxSocketPath is the longest path a Unix socket can have on Linux
// (sun_path is 108 bytes, with a terminating NUL).
const maxSocketPath = 107

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "mwi-dev:", err)
		os.Exit(1)
	}
}

func run() error {
	stateDir := flag.String("state", "", "state `directory` (default: .mwi-dev at the repository root)")
	binDir := flag.String("bin", "", "`directory` holding mwi-issuer, mwid and mwictl (default: mwi-dev's own)")
	issuerAddr := flag.String("issuer-addr", "127.0.0.1:7443", "`address` (host:port) the issuer listens on")
	timeout := flag.Duration("timeout", 30*time.Second, "how long to wait for mwid to be ready")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: mwi-dev [flags]\n\nRuns mwi-issuer and mwid on development defaults until interrupted.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}

	d, err := newDev(*stateDir, *binDir, *issuerAddr)
	if err != nil {
		return err
	}
	d.readyTimeout = *timeout
	lock, err := lockState(d.state)
	if err != nil {
		return err
	}
	defer lock.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	err = d.run(ctx)
	if err != nil && ctx.Err() != nil {
		fmt.Println("mwi-dev: interrupted before the environment was up; stopped")
		return nil
	}
	return err
}

// A dev is a development environment: where its state and programs are.
type dev struct {
	state        string // absolute state directory
	issuerState  string // state/issuer
	issuerAddr   string
	readyTimeout time.Duration

	issuerBin, daemonBin, ctlBin string

	agentSock, apiSock string
	daemonConfig       string
	issuerLog, mwidLog string
}

// newDev resolves the directories and checks that the programs exist. An
// empty state or bin means the default.
func newDev(state, bin, issuerAddr string) (*dev, error) {
	if state == "" {
		root, err := repoRoot()
		if err != nil {
			return nil, err
		}
		state = filepath.Join(root, ".mwi-dev")
	}
	state, err := filepath.Abs(state)
	if err != nil {
		return nil, err
	}
	if bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		if exe, err = filepath.EvalSymlinks(exe); err != nil {
			return nil, err
		}
		bin = filepath.Dir(exe)
	}
	if bin, err = filepath.Abs(bin); err != nil {
		return nil, err
	}
	if _, _, err := net.SplitHostPort(issuerAddr); err != nil {
		return nil, fmt.Errorf("-issuer-addr %q is not host:port", issuerAddr)
	}
	d := &dev{
		state:        state,
		issuerState:  filepath.Join(state, "issuer"),
		issuerAddr:   issuerAddr,
		issuerBin:    filepath.Join(bin, "mwi-issuer"),
		daemonBin:    filepath.Join(bin, "mwid"),
		ctlBin:       filepath.Join(bin, "mwictl"),
		agentSock:    filepath.Join(state, "agent.sock"),
		apiSock:      filepath.Join(state, "api.sock"),
		daemonConfig: filepath.Join(state, "mwid.yaml"),
		issuerLog:    filepath.Join(state, "issuer.log"),
		mwidLog:      filepath.Join(state, "mwid.log"),
	}
	for _, p := range []string{d.issuerBin, d.daemonBin, d.ctlBin} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("%s not found: build the programs with make build (make dev does), or name their directory with -bin", p)
		}
	}
	for _, p := range []string{d.agentSock, d.apiSock, filepath.Join(d.issuerState, "admin.sock")} {
		if err := checkSocketPath(p); err != nil {
			return nil, err
		}
	}
	// The state directory holds the issuer's keys: it is made through
	// safefs, which follows no symbolic link and refuses a directory that
	// another user controls.
	sd, err := safefs.MkdirAll(state, 0o700)
	if err != nil {
		return nil, err
	}
	defer sd.Close()
	if err := sd.Chmod(0o700); err != nil {
		return nil, err
	}
	return d, nil
}

// checkSocketPath reports whether path is too long for a Unix socket.
func checkSocketPath(path string) error {
	if len(path) > maxSocketPath {
		return fmt.Errorf("socket path %s is %d bytes, longer than the %d a Unix socket allows; use a shorter state directory with -state", path, len(path), maxSocketPath)
	}
	return nil
}

// repoRoot returns the directory of the MWI repository's go.mod that holds
// the current directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if data, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && isModule(data, modulePath) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("the current directory is not inside the MWI repository; run make dev from it, or name a state directory with -state")
		}
		dir = parent
	}
}

// isModule reports whether the go.mod file gomod declares module path.
func isModule(gomod []byte, path string) bool {
	for line := range strings.Lines(string(gomod)) {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == "module" && strings.Trim(f[1], `"`) == path {
			return true
		}
	}
	return false
}

// run brings the environment up and keeps it running until ctx is done or
// a child exits. Every child it started is stopped when it returns.
func (d *dev) run(ctx context.Context) error {
	var procs []*proc
	defer func() {
		// mwid first, then the issuer.
		for i := len(procs) - 1; i >= 0; i-- {
			procs[i].stop()
		}
	}()

	if err := d.prepareIssuer(ctx); err != nil {
		return err
	}
	out, err := d.output(ctx, d.issuerBin, "ca", "--state", d.issuerState)
	if err != nil {
		return err
	}
	authority, err := parseCA(string(out))
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", d.issuerAddr)
	if err != nil {
		return fmt.Errorf("the issuer cannot listen on %s (%v); stop what uses it, or choose another address: make dev DEV_FLAGS='-issuer-addr 127.0.0.1:7444'", d.issuerAddr, unwrapAll(err))
	}
	ln.Close()
	issuer, err := startProc("mwi-issuer", d.issuerLog, nil,
		d.issuerBin, "serve", "--state", d.issuerState, "--listen", d.issuerAddr)
	if err != nil {
		return err
	}
	procs = append(procs, issuer)
	if err := d.waitIssuer(ctx, issuer); err != nil {
		return err
	}
	fmt.Printf("mwi-dev: mwi-issuer is serving on %s (log: %s)\n", d.issuerAddr, d.issuerLog)

	token, err := d.createToken(ctx)
	if err != nil {
		return err
	}
	if err := d.writeDaemonConfig(authority.Pin); err != nil {
		return err
	}
	daemon, err := startProc("mwid", d.mwidLog, []string{"MWI_TOKEN=" + token}, d.daemonBin, "-c", d.daemonConfig)
	if err != nil {
		return err
	}
	procs = append(procs, daemon)
	st, err := d.waitReady(ctx, daemon, issuer)
	if err != nil {
		return err
	}
	d.printNext(st, authority)

	select {
	case <-ctx.Done():
		fmt.Println("mwi-dev: stopping mwid, then mwi-issuer")
		daemon.stop()
		issuer.stop()
		fmt.Println("mwi-dev: stopped")
		return nil
	case <-daemon.done:
		issuer.stop()
		return daemon.failed(nil)
	case <-issuer.done:
		daemon.stop()
		return issuer.failed(nil)
	}
}

// prepareIssuer initialises the issuer if the state directory has none, and
// writes the default resources if they are missing.
func (d *dev) prepareIssuer(ctx context.Context) error {
	if ca.Exists(d.issuerState) {
		fmt.Printf("mwi-dev: using the issuer in %s\n", d.issuerState)
	} else {
		// An interrupted init would leave half an issuer behind: let it
		// finish.
		if _, err := d.output(context.WithoutCancel(ctx), d.issuerBin, "init", "--state", d.issuerState); err != nil {
			return err
		}
		fmt.Printf("mwi-dev: initialised a new issuer in %s\n", d.issuerState)
	}
	resDir := filepath.Join(d.issuerState, "resources")
	rd, err := safefs.MkdirAll(resDir, 0o700)
	if err != nil {
		return err
	}
	defer rd.Close()
	path := filepath.Join(resDir, "dev.yaml")
	if _, err := os.Lstat(path); err == nil {
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	u, err := user.Current()
	if err != nil {
		return fmt.Errorf("find the current user's login name: %w", err)
	}
	if err := checkLogin(u.Username); err != nil {
		return err
	}
	data, err := render("dev.yaml", resourcesTemplate, resourceData{Login: u.Username})
	if err != nil {
		return err
	}
	// A dev.yaml that appeared meanwhile is kept, as one found above is.
	if err := rd.WriteNewFile("dev.yaml", data, 0o600); errors.Is(err, fs.ErrExist) {
		return nil
	} else if err != nil {
		return err
	}
	fmt.Printf("mwi-dev: wrote %s: bot dev may log in as %s\n", path, u.Username)
	return nil
}

// waitIssuer waits until the issuer accepts connections on its address and
// its admin socket.
func (d *dev) waitIssuer(ctx context.Context, issuer *proc) error {
	admin := filepath.Join(d.issuerState, "admin.sock")
	var last error
	deadline := time.Now().Add(15 * time.Second)
	for {
		if issuer.exited() {
			return issuer.failed(nil)
		}
		last = dialClose("tcp", d.issuerAddr)
		if last == nil {
			if last = dialClose("unix", admin); last == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return issuer.failed(fmt.Errorf("mwi-issuer does not answer after 15s: %v", last))
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// createToken makes a one-time join token for the bot dev.
func (d *dev) createToken(ctx context.Context) (string, error) {
	out, err := d.output(ctx, d.issuerBin, "token", "create", "--state", d.issuerState,
		"--bot", "dev", "--ttl", "10m", "--json")
	if err != nil {
		return "", err
	}
	var resp api.CreateTokenResponse
	if err := json.Unmarshal(out, &resp); err != nil || resp.Token == "" {
		return "", fmt.Errorf("mwi-issuer token create: unexpected output (%v)", err)
	}
	return resp.Token, nil
}

// waitReady asks mwid for its status with mwictl until it is ready.
func (d *dev) waitReady(ctx context.Context, daemon, issuer *proc) (api.Status, error) {
	deadline := time.Now().Add(d.readyTimeout)
	var last string
	for {
		if daemon.exited() {
			return api.Status{}, daemon.failed(nil)
		}
		if issuer.exited() {
			return api.Status{}, issuer.failed(nil)
		}
		out, err := d.output(ctx, d.ctlBin, "--socket", d.apiSock, "status", "--json")
		if err == nil {
			var st api.Status
			if err := json.Unmarshal(out, &st); err != nil {
				return api.Status{}, fmt.Errorf("mwictl status --json: %v", err)
			}
			if st.State == "ready" {
				return st, nil
			}
			last = "state " + st.State
			if st.LastError != "" {
				last += ", last error: " + st.LastError
			}
		} else if ctx.Err() != nil {
			return api.Status{}, ctx.Err()
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return api.Status{}, daemon.failed(fmt.Errorf("mwid is not ready after %s (%s)", d.readyTimeout, last))
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return api.Status{}, err
		}
	}
}

// printNext says how to use the environment.
func (d *dev) printNext(st api.Status, authority caInfo) {
	var logins []string
	for _, c := range st.Credentials {
		if c.Kind == "ssh" {
			logins = append(logins, c.Principals...)
		}
	}
	fmt.Printf(`MWI dev environment is up (state in %s). Next:
  export SSH_AUTH_SOCK=%s MWI_SOCKET=%s
  ssh-add -L                      # the bot's SSH certificate (logins: %s)
  %s status
To let an sshd accept it, add this line to the file named by its TrustedUserCAKeys:
  %s
Logs: %s, %s. Ctrl-C stops both.
`, d.state, d.agentSock, d.apiSock, strings.Join(logins, ", "), d.ctlBin, authority.UserCA, d.issuerLog, d.mwidLog)
}

// output runs a short command and returns its standard output. The error
// holds its standard error.
func (d *dev) output(ctx context.Context, argv ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = err.Error()
		}
		return nil, fmt.Errorf("%s %s failed: %s", filepath.Base(argv[0]), argv[1], msg)
	}
	return out, nil
}

// writeDaemonConfig writes mwid's configuration, for an issuer with the
// CA pin pin, to d.daemonConfig, replacing it atomically and never writing
// through a symbolic link.
func (d *dev) writeDaemonConfig(pin string) error {
	cfg, err := render("mwid.yaml", daemonTemplate, daemonData{
		IssuerAddr:  d.issuerAddr,
		CAPin:       pin,
		AgentSocket: d.agentSock,
		APISocket:   d.apiSock,
	})
	if err != nil {
		return err
	}
	return safefs.WriteFile(d.daemonConfig, cfg, 0o600)
}

// openNoFollow opens the file at path as os.OpenFile does, but refuses a
// symbolic link at path rather than write through it.
func openNoFollow(path string, flag int, perm os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, flag|syscall.O_NOFOLLOW, perm)
	if errors.Is(err, syscall.ELOOP) {
		return nil, &safefs.UnsafeError{Path: path, Reason: "it is a symbolic link, and files are never written through one"}
	}
	return f, err
}

// dialClose connects to address and closes the connection.
func dialClose(network, address string) error {
	c, err := net.DialTimeout(network, address, time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

// sleep waits for d, or returns ctx's error if ctx is done first.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// unwrapAll returns the innermost error that err wraps, such as "address
// already in use" for a failed listen.
func unwrapAll(err error) error {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err
		}
		err = next
	}
}
