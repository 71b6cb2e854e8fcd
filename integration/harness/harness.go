// Package harness runs MWI's real programs, and the real tools they serve,
// for integration tests and benchmarks.
//
// Every process runs in the test's temporary directory, listens on
// 127.0.0.1 only, and is stopped through its own *exec.Cmd when the test
// ends. Its output goes to a log file that is shown if the test fails.
package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Bins are the paths of the built MWI programs.
type Bins struct {
	Issuer, Daemon, Ctl string
}

var (
	buildOnce sync.Once
	bins      Bins
	buildErr  error
)

// Build builds mwi-issuer, mwid and mwictl once per process. MWI_BIN_DIR,
// if set, names a directory that already holds them (make test builds them
// first so that a test run and make dev use the same binaries).
func Build(t testing.TB) Bins {
	t.Helper()
	buildOnce.Do(func() {
		dir := os.Getenv("MWI_BIN_DIR")
		if dir == "" {
			dir, buildErr = os.MkdirTemp("", "mwi-bin-")
			if buildErr != nil {
				return
			}
			cmd := exec.Command("go", "build", "-o", dir, "./cmd/mwi-issuer", "./cmd/mwid", "./cmd/mwictl")
			cmd.Dir = moduleRoot()
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build: %v\n%s", err, out)
				return
			}
		}
		bins = Bins{
			Issuer: filepath.Join(dir, "mwi-issuer"),
			Daemon: filepath.Join(dir, "mwid"),
			Ctl:    filepath.Join(dir, "mwictl"),
		}
		for _, p := range []string{bins.Issuer, bins.Daemon, bins.Ctl} {
			if _, err := os.Stat(p); err != nil {
				buildErr = fmt.Errorf("MWI_BIN_DIR: %w", err)
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return bins
}

// moduleRoot is the repository root, found from this file's location.
func moduleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Require returns the path of tool, or skips the test saying how to install
// it; with MWI_REQUIRE_INTEGRATION=1 (as in CI) it fails instead.
func Require(t testing.TB, tool, install string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		for _, dir := range []string{"/usr/sbin", "/sbin"} {
			if _, serr := os.Stat(filepath.Join(dir, tool)); serr == nil {
				return filepath.Join(dir, tool)
			}
		}
		msg := fmt.Sprintf("%s not found; install it with: %s", tool, install)
		if os.Getenv("MWI_REQUIRE_INTEGRATION") == "1" {
			t.Fatal(msg + " (MWI_REQUIRE_INTEGRATION=1)")
		}
		t.Skip(msg)
	}
	return p
}

// portsGiven are the ports FreePort has returned in this process.
var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago, and
// that it has not returned before in this process: tests run in parallel,
// and one that stops a server and starts it again on its port must not
// find another test's server there.
func FreePort(t testing.TB) int {
	t.Helper()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		portsMu.Lock()
		given := portsGiven[port]
		portsGiven[port] = true
		portsMu.Unlock()
		if !given {
			return port
		}
	}
	t.Fatal("no port on 127.0.0.1 that FreePort has not returned before")
	return 0
}

// Proc is a process started by the harness.
type Proc struct {
	Name string
	Cmd  *exec.Cmd
	Log  string // file holding its output

	done    chan struct{}
	waitErr error
}

// Start starts a process with its output in dir/name.log, and stops it when
// the test ends. env is added to the harness's environment.
func Start(t testing.TB, dir, name string, env []string, argv ...string) *Proc {
	t.Helper()
	return StartAs(t, nil, dir, name, env, argv...)
}

// StartAs starts a process as Start does, as the user and groups of cred
// when cred is not nil (the tests must then run as root).
func StartAs(t testing.TB, cred *syscall.Credential, dir, name string, env []string, argv ...string) *Proc {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &Proc{Name: name, Cmd: cmd, Log: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Stop(t)
		if t.Failed() {
			out, _ := os.ReadFile(logPath)
			t.Logf("--- %s output (%s) ---\n%s", name, logPath, tail(out, 60))
		}
	})
	return p
}

// stopGrace is how long Stop waits after SIGTERM. mwid and mwi-issuer
// allow their HTTP servers 5 seconds to shut down, and Go's
// http.Server.Shutdown counts a connection that was accepted but never
// sent a request (a client's spare connection) as active for 5 seconds:
// a process that takes its whole allowance must not be taken for a hung
// one.
const stopGrace = 10 * time.Second

// Stop sends SIGTERM to the process it started and waits for it to exit,
// killing it after stopGrace. It is safe to call more than once.
func (p *Proc) Stop(t testing.TB) error {
	select {
	case <-p.done:
		return p.waitErr
	default:
	}
	p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopGrace):
		t.Errorf("%s (pid %d) did not stop on SIGTERM within %s; killing it", p.Name, p.Cmd.Process.Pid, stopGrace)
		p.Cmd.Process.Kill()
		<-p.done
	}
	return p.waitErr
}

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Output returns what the process has written so far.
func (p *Proc) Output() string {
	b, _ := os.ReadFile(p.Log)
	return string(b)
}

func tail(b []byte, lines int) []byte {
	parts := bytes.Split(b, []byte("\n"))
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return bytes.Join(parts, []byte("\n"))
}

// Eventually calls cond until it returns nil or timeout passes, then fails
// the test with cond's last error.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %s: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Run runs a command to completion within timeout and returns its combined
// output.
func Run(ctx context.Context, timeout time.Duration, env []string, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		err = errors.Join(err, fmt.Errorf("timed out after %s", timeout))
	}
	return strings.TrimSpace(out.String()), err
}
