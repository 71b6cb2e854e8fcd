package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// stopTimeout is how long a child is given to exit after SIGTERM before it
// is killed.
const stopTimeout = 5 * time.Second

// A proc is a child process whose output goes to a log file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string // path of the log file

	done chan struct{} // closed when the process has exited
	err  error         // what Wait returned; read only after done
}

// startProc starts argv with its standard output and error in the file
// logPath, which it truncates. env is added to this process's environment.
//
// The child runs in a process group of its own, so that a Ctrl-C in the
// terminal reaches only mwi-dev, which then stops the children in order; and
// it receives SIGTERM if mwi-dev dies without stopping it.
func startProc(name, logPath string, env []string, argv ...string) (*proc, error) {
	f, err := openNoFollow(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process and waits for it to exit, killing it
// after stopTimeout. It is safe to call more than once.
func (p *proc) stop() {
	if p.exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		fmt.Fprintf(os.Stderr, "mwi-dev: %s (pid %d) did not exit %s after SIGTERM; killing it\n", p.name, p.cmd.Process.Pid, stopTimeout)
		p.cmd.Process.Kill()
		<-p.done
	}
}

// failed returns an error saying that the process exited, or failed in the
// way err describes, followed by the last lines of its log.
func (p *proc) failed(err error) error {
	if err == nil {
		<-p.done
		err = fmt.Errorf("%s exited unexpectedly (%v)", p.name, p.err)
		if p.err == nil {
			err = fmt.Errorf("%s exited unexpectedly", p.name)
		}
	}
	return &logError{err: err, log: p.log, tail: tail(p.log, 20)}
}

// A logError is an error followed by the last lines of a log file.
type logError struct {
	err  error
	log  string
	tail string
}

func (e *logError) Error() string {
	if e.tail == "" {
		return fmt.Sprintf("%v (%s is empty)", e.err, e.log)
	}
	return fmt.Sprintf("%v; last lines of %s:\n%s", e.err, e.log, e.tail)
}

func (e *logError) Unwrap() error { return e.err }

// tail returns the last n lines of the file at path, each indented.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return tailLines(b, n)
}

// tailLines returns the last n lines of b, each indented by two spaces.
func tailLines(b []byte, n int) string {
	b = bytes.TrimRight(b, "\n")
	if len(b) == 0 {
		return ""
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

// lockState takes an exclusive lock on dir/lock, so that two mwi-dev
// processes do not share a state directory. The lock is released when the
// process exits.
func lockState(dir string) (*os.File, error) {
	f, err := openNoFollow(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if err == syscall.EWOULDBLOCK {
			return nil, fmt.Errorf("another mwi-dev (make dev) is already running with its state in %s; stop it first", dir)
		}
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return f, nil
}
