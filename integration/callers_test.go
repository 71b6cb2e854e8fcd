package integration

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mwi-project/mwi/integration/harness"
)

// asUser runs argv as the given user and group and returns its output.
func asUser(t *testing.T, uid, gid uint32, env []string, argv ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin"}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// TestCallersChecked checks the second gate of both sockets: a caller the
// socket's mode and group let connect is still refused unless the
// configuration allows it, and allowing it takes a reload, not a restart.
func TestCallersChecked(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run clients as another user")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody")
	}
	uid64, _ := strconv.ParseUint(nobody.Uid, 10, 32)
	gid64, _ := strconv.ParseUint(nobody.Gid, 10, 32)
	uid, gid := uint32(uid64), uint32(gid64)
	group, err := user.LookupGroupId(nobody.Gid)
	if err != nil {
		t.Fatal(err)
	}
	sshAdd := harness.Require(t, "ssh-add", "apt-get install -y openssh-client")

	iss := harness.StartIssuer(t, resources(harness.CurrentUser(t)))
	sockets := func(allow string) string {
		return "    mode: \"0660\"\n    group: " + group.Name + "\n" + allow
	}
	d := harness.StartDaemon(t, iss, harness.DaemonOptions{Token: iss.CreateToken(t, "ci", time.Hour)})
	// Rewrite the sockets section: group-readable by nobody's group, with
	// no allow list.
	writeSockets := func(allow string) {
		cfg, err := os.ReadFile(d.Config)
		if err != nil {
			t.Fatal(err)
		}
		s := string(cfg)
		s = s[:strings.Index(s, "sockets:")] + "sockets:\n  agent:\n    path: " + d.AgentSock + "\n" + sockets(allow) +
			"  api:\n    path: " + d.APISock + "\n" + sockets(allow) + s[strings.Index(s, "log:"):]
		if err := os.WriteFile(d.Config, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	d.Proc.Stop(t)
	writeSockets("")
	d.Proc = harness.Start(t, d.Dir, "mwid-2", []string{"MWI_TOKEN=" + iss.CreateToken(t, "ci", time.Hour)}, iss.Bins.Daemon, "-c", d.Config)
	d.WaitState(t, "ready", 20*time.Second)
	// nobody must be able to reach the sockets' directory, and mwictl.
	ctl := filepath.Join(t.TempDir(), "mwictl")
	data, _ := os.ReadFile(iss.Bins.Ctl)
	os.WriteFile(ctl, data, 0o755)
	for _, dir := range []string{d.Dir, filepath.Dir(d.Dir), filepath.Dir(ctl)} {
		os.Chmod(dir, 0o711)
	}

	out, err := asUser(t, uid, gid, nil, ctl, "--socket", d.APISock, "status")
	if err == nil || !strings.Contains(out, "not allowed") {
		t.Fatalf("mwictl as nobody: err %v, output %q; want a refusal", err, out)
	}
	if strings.Count(out, "\n") > 0 {
		t.Errorf("mwictl's refusal is %d lines; want one:\n%s", strings.Count(out, "\n")+1, out)
	}
	out, err = asUser(t, uid, gid, []string{"SSH_AUTH_SOCK=" + d.AgentSock}, sshAdd, "-L")
	if err == nil {
		t.Fatalf("ssh-add -L as nobody listed keys:\n%s", out)
	}
	log := d.Proc.Output()
	if !strings.Contains(log, `msg="caller refused" socket=api uid=`+nobody.Uid) || !strings.Contains(log, `msg="caller refused" socket=agent uid=`+nobody.Uid) {
		t.Errorf("mwid did not log both refusals with the caller's uid:\n%s", log)
	}

	// Allowing nobody is a live change.
	writeSockets("    allow:\n      users: [nobody]\n")
	if out, err := d.Ctl("reload"); err != nil {
		t.Fatalf("mwictl reload: %v\n%s", err, out)
	}
	if out, err := asUser(t, uid, gid, nil, ctl, "--socket", d.APISock, "status"); err != nil || !strings.Contains(out, "ready") {
		t.Fatalf("mwictl as nobody after allowing it: %v\n%s", err, out)
	}
	if out, err := asUser(t, uid, gid, []string{"SSH_AUTH_SOCK=" + d.AgentSock}, sshAdd, "-L"); err != nil || !strings.Contains(out, "cert") {
		t.Fatalf("ssh-add -L as nobody after allowing it: %v\n%s", err, out)
	}

	// A connection nobody holds is checked again at each request: a
	// reload that takes nobody off the allow list refuses its next one.
	// The system's python, which nobody may run (not one under root's home).
	python := harness.Require(t, "/usr/bin/python3", "apt-get install -y --no-install-recommends python3")
	list := heldAgentClient(t, uid, gid, python, d.AgentSock)
	if got := list(); got != "ok" {
		t.Fatalf("nobody's held agent connection, allowed: %s", got)
	}
	writeSockets("")
	if out, err := d.Ctl("reload"); err != nil {
		t.Fatalf("mwictl reload: %v\n%s", err, out)
	}
	if got := list(); got != "refused" {
		t.Errorf("nobody's held agent connection after the reload: %s; want refused", got)
	}
}

// heldAgentClientScript keeps one connection to the agent at argv[1] and,
// for each line on stdin, asks it for its keys and prints ok, or refused
// if the connection was closed.
const heldAgentClientScript = `
import socket, struct, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
def ask():
    try:
        s.sendall(struct.pack(">IB", 1, 11))  # SSH_AGENTC_REQUEST_IDENTITIES
        hdr = s.recv(4, socket.MSG_WAITALL)
        if len(hdr) < 4:
            return "refused"
        body = s.recv(struct.unpack(">I", hdr)[0], socket.MSG_WAITALL)
        return "ok" if body[:1] == b"\x0c" else "failure"
    except OSError:
        return "refused"
for line in sys.stdin:
    print(ask(), flush=True)
`

// heldAgentClient starts heldAgentClientScript as the given user and
// returns a function that makes it ask once and returns its answer.
func heldAgentClient(t *testing.T, uid, gid uint32, python, sock string) func() string {
	t.Helper()
	cmd := exec.Command(python, "-c", heldAgentClientScript, sock)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	out := bufio.NewScanner(stdout)
	return func() string {
		t.Helper()
		io.WriteString(stdin, "go\n")
		if !out.Scan() {
			t.Fatalf("the agent client said nothing; stderr:\n%s", stderr.String())
		}
		return out.Text()
	}
}
