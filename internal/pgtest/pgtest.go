// Package pgtest runs a PostgreSQL server for tests: initdb into a
// temporary directory and postgres in the foreground on a loopback port,
// stopped by its PID. As root, both run as the postgres user, since they
// refuse to run as root.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// InstallHint says how to install the server on Debian.
const InstallHint = "apt-get install -y --no-install-recommends postgresql"

// ErrNotInstalled is returned by Start when PostgreSQL's server programs
// cannot be found.
var ErrNotInstalled = errors.New("PostgreSQL server programs (initdb, postgres) not found in $MWI_POSTGRES_BIN, /usr/lib/postgresql/*/bin or on PATH")

// Server is a running PostgreSQL server that trusts every local
// connection as the postgres user.
type Server struct {
	Port int
	cmd  *exec.Cmd
	dir  string
	bin  string // the directory of postgres
	// durable keeps PostgreSQL's fsync and synchronous commits on.
	durable bool

	mu sync.Mutex // serialises CREATE DATABASE
}

// Bin returns the directory of PostgreSQL's server programs:
// MWI_POSTGRES_BIN, the newest /usr/lib/postgresql/*/bin (Debian's), or
// the directory of initdb on PATH.
func Bin() (string, error) {
	if dir := os.Getenv("MWI_POSTGRES_BIN"); dir != "" {
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err != nil {
			return "", fmt.Errorf("MWI_POSTGRES_BIN: %w: %w", err, ErrNotInstalled)
		}
		return dir, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return vb - va
	})
	for _, dir := range dirs {
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err == nil {
			return dir, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", ErrNotInstalled
}

// Skip ends t when err is ErrNotInstalled: skipped with the install hint,
// or failed under MWI_REQUIRE_INTEGRATION=1. Any other error fails t.
func Skip(t testing.TB, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if errors.Is(err, ErrNotInstalled) {
		msg := err.Error() + "; install it with: " + InstallHint
		if os.Getenv("MWI_REQUIRE_INTEGRATION") == "1" {
			t.Fatal(msg + " (MWI_REQUIRE_INTEGRATION=1)")
		}
		t.Skip(msg)
	}
	t.Fatalf("PostgreSQL for the tests: %v", err)
}

// StartT starts a server for t and stops it when t ends; see Skip for
// when PostgreSQL is not installed.
func StartT(t testing.TB) *Server {
	t.Helper()
	s, err := Start()
	Skip(t, err)
	t.Cleanup(s.Stop)
	return s
}

// Start makes a cluster in a temporary directory and starts postgres on
// it, returning once it accepts connections. Durability is not what tests
// are about: fsync is off.
func Start() (*Server, error) { return start(false) }

// StartDurable is Start with PostgreSQL's defaults for durability: fsync
// and synchronous commits on, as a production server runs, for
// measurements such as a load test's.
func StartDurable() (*Server, error) { return start(true) }

func start(durable bool) (*Server, error) {
	bin, err := Bin()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "mwi-pg-")
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir, durable: durable}
	if err := s.start(bin); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

func (s *Server) start(bin string) error {
	cred, err := credential()
	if err != nil {
		return err
	}
	if cred != nil {
		if err := os.Chown(s.dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return err
		}
	}
	data := filepath.Join(s.dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %v\n%s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	s.Port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	s.bin = bin
	return s.run(cred)
}

// credential is the user to run PostgreSQL's programs as: nil as
// anyone but root, the postgres user as root.
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, and no postgres user to run PostgreSQL as: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// run starts postgres on the cluster in s.dir and s.Port, returning once
// it accepts connections.
func (s *Server) run(cred *syscall.Credential) error {
	data := filepath.Join(s.dir, "data")
	logPath := filepath.Join(s.dir, "postgres.log")
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	if cred != nil {
		if err := logf.Chown(int(cred.Uid), int(cred.Gid)); err != nil {
			return err
		}
	}
	args := []string{"-D", data, "-k", s.dir, "-p", strconv.Itoa(s.Port),
		"-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300"}
	if !s.durable {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	s.cmd = exec.Command(filepath.Join(s.bin, "postgres"), args...)
	// If the test binary dies without stopping it (a panic, a timeout),
	// the kernel tells postgres to shut down at once.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT}
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		s.cmd = nil
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, s.URL("postgres"))
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logPath)
			return fmt.Errorf("postgres did not accept connections within 30s: %v\n%s", err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Halt stops the server by its PID (a fast shutdown) and keeps its data
// and its port, so that Resume starts it again as it was: an outage of the
// database, for tests of its clients.
//
// A fast shutdown ends the clients' sessions; postgres is killed if it is
// still running 30 seconds later.
func (s *Server) Halt() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGINT)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		<-done
	}
	s.cmd = nil
}

// Resume starts the server that Halt stopped again, on the same data and
// the same port, returning once it accepts connections.
func (s *Server) Resume() error {
	if s.cmd != nil {
		return errors.New("pgtest: Resume of a server that is running")
	}
	if s.dir == "" {
		return errors.New("pgtest: Resume of a stopped server")
	}
	cred, err := credential()
	if err != nil {
		return err
	}
	return s.run(cred)
}

// URL returns the URL of the database name, without a password.
func (s *Server) URL(name string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.Port, name)
}

// CreateDatabase makes the database name, a copy of template if one is
// named, and returns its URL.
func (s *Server) CreateDatabase(name, template string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	q := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if template != "" {
		q += " TEMPLATE " + pgx.Identifier{template}.Sanitize()
	}
	if _, err := conn.Exec(ctx, q); err != nil {
		return "", fmt.Errorf("%s: %w", q, err)
	}
	return s.URL(name), nil
}

// Stop stops the server by its PID (a fast shutdown) and removes its
// directory.
func (s *Server) Stop() {
	s.Halt()
	if s.dir != "" {
		os.RemoveAll(s.dir)
		s.dir = ""
	}
}

// SetReadOnly makes the database at url refuse writes (on) or take them
// again, as a standby or default_transaction_read_only does, and ends
// every other session on it so that none keeps the setting it started
// with: a pool's next connections get the new one.
func SetReadOnly(url string, on bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	// This session may have started read-only itself.
	if _, err := conn.Exec(ctx, `SET default_transaction_read_only = off`); err != nil {
		return err
	}
	var name string
	if err := conn.QueryRow(ctx, `SELECT current_database()`).Scan(&name); err != nil {
		return err
	}
	q := "ALTER DATABASE " + pgx.Identifier{name}.Sanitize() + " RESET default_transaction_read_only"
	if on {
		q = "ALTER DATABASE " + pgx.Identifier{name}.Sanitize() + " SET default_transaction_read_only = on"
	}
	if _, err := conn.Exec(ctx, q); err != nil {
		return fmt.Errorf("%s: %w", q, err)
	}
	_, err = conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid()`)
	return err
}

// PID returns the process ID of the running postmaster, or 0 if none runs.
func (s *Server) PID() int {
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}
