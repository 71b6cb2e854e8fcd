package store

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

// The PostgreSQL server the tests of this package share: started by the
// first test that needs it, stopped by TestMain. Each test gets a database
// of its own in it, so that tests can run in parallel.
var pg struct {
	once  sync.Once
	err   error  // why the server could not be started
	skip  string // why there is no server to start
	cmd   *exec.Cmd
	dir   string
	admin string // URL of the postgres database, for CREATE DATABASE
	port  int

	mu sync.Mutex // serialises CREATE DATABASE
	n  int        // databases made
}

func TestMain(m *testing.M) {
	code := m.Run()
	stopPostgres()
	os.Exit(code)
}

// forEachStore runs test as a parallel subtest against each implementation
// of Store, each in a new, empty store: a bbolt file, and a database of its
// own in the PostgreSQL server started for the tests. location opens the
// same store again with Open.
func forEachStore(t *testing.T, test func(t *testing.T, s Store, location string)) {
	t.Helper()
	t.Run("bolt", func(t *testing.T) {
		t.Parallel()
		s, path := openTemp(t)
		test(t, s, path)
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		s, url := openPostgresTemp(t)
		test(t, s, url)
	})
}

func openTemp(t *testing.T) (Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "issuer.db")
	s, err := Open(path)
	if err != nil {
		t.Fatalf("Open(%q): %v", path, err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

// openPostgresTemp opens the store in a new database of the test server.
func openPostgresTemp(t *testing.T) (Store, string) {
	t.Helper()
	url := newDatabase(t)
	s, err := Open(url)
	if err != nil {
		t.Fatalf("Open(%q): %v", url, err)
	}
	t.Cleanup(func() { s.Close() })
	return s, url
}

// newDatabase returns the URL of a new, empty database in the test server,
// starting the server first if need be. It skips t when PostgreSQL is not
// installed, or fails it under MWI_REQUIRE_INTEGRATION=1.
func newDatabase(t *testing.T) string {
	t.Helper()
	pg.once.Do(startPostgres)
	if pg.skip != "" {
		msg := pg.skip + "; install it with: apt-get install -y --no-install-recommends postgresql"
		if os.Getenv("MWI_REQUIRE_INTEGRATION") == "1" {
			t.Fatal(msg + " (MWI_REQUIRE_INTEGRATION=1)")
		}
		t.Skip(msg)
	}
	if pg.err != nil {
		t.Fatalf("PostgreSQL for the tests: %v", pg.err)
	}
	pg.mu.Lock()
	defer pg.mu.Unlock()
	pg.n++
	name := fmt.Sprintf("test_%d", pg.n)
	if err := createDatabase(name, "mwi_template"); err != nil {
		t.Fatal(err)
	}
	return databaseURL(name)
}

// postgresBin returns the directory of PostgreSQL's server programs:
// MWI_POSTGRES_BIN, the newest /usr/lib/postgresql/*/bin (Debian's), or
// the directory of initdb on PATH.
func postgresBin() (string, error) {
	if dir := os.Getenv("MWI_POSTGRES_BIN"); dir != "" {
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
	return "", errors.New("PostgreSQL server programs (initdb, postgres) not found in /usr/lib/postgresql/*/bin or on PATH")
}

// startPostgres makes a cluster in a temporary directory and runs postgres
// on it in the foreground, on a loopback port. initdb and postgres refuse
// to run as root, so as root they run as the postgres user, which owns the
// directory.
func startPostgres() {
	bin, err := postgresBin()
	if err != nil {
		pg.skip = err.Error()
		return
	}
	pg.dir, pg.err = os.MkdirTemp("", "mwi-store-pg-")
	if pg.err != nil {
		return
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			pg.err = fmt.Errorf("running as root, and no postgres user to run PostgreSQL as: %w", err)
			return
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if pg.err = os.Chown(pg.dir, uid, gid); pg.err != nil {
			return
		}
	}
	data := filepath.Join(pg.dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		pg.err = fmt.Errorf("initdb: %v\n%s", err, out)
		return
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		pg.err = err
		return
	}
	pg.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	// Durability is not what these tests are about: fsync off keeps them
	// fast on a shared machine.
	pg.cmd = exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-k", pg.dir, "-p", strconv.Itoa(pg.port),
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
		"-c", "full_page_writes=off", "-c", "max_connections=300")
	// If the test binary dies without TestMain's stop (a panic, a
	// timeout), the kernel tells postgres to shut down at once.
	pg.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT}
	logf, err := os.Create(filepath.Join(pg.dir, "postgres.log"))
	if err != nil {
		pg.err = err
		return
	}
	if cred != nil {
		logf.Chown(int(cred.Uid), int(cred.Gid))
	}
	pg.cmd.Stdout, pg.cmd.Stderr = logf, logf
	if pg.err = pg.cmd.Start(); pg.err != nil {
		pg.cmd = nil
		return
	}
	pg.admin = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", pg.port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, pg.admin)
		cancel()
		if err == nil {
			conn.Close(context.Background())
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(pg.dir, "postgres.log"))
			pg.err = fmt.Errorf("postgres did not accept connections within 30s: %v\n%s", err, log)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The tests' databases are copies of one migrated at the start, which
	// is faster than migrating each; Open still checks each one's version.
	pg.err = createDatabase("mwi_template", "")
	if pg.err != nil {
		return
	}
	s, err := Open(databaseURL("mwi_template"))
	if err != nil {
		pg.err = fmt.Errorf("migrate the template database: %w", err)
		return
	}
	s.Close()
}

func databaseURL(name string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", pg.port, name)
}

// createDatabase makes the database name, a copy of template if one is
// named.
func createDatabase(name, template string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.admin)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	q := "CREATE DATABASE " + name
	if template != "" {
		q += " TEMPLATE " + template
	}
	if _, err := conn.Exec(ctx, q); err != nil {
		return fmt.Errorf("%s: %w", q, err)
	}
	return nil
}

// stopPostgres stops the server by its PID (a fast shutdown) and removes
// its directory.
func stopPostgres() {
	if pg.cmd != nil {
		pg.cmd.Process.Signal(syscall.SIGINT)
		done := make(chan struct{})
		go func() { pg.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			pg.cmd.Process.Kill()
			<-done
		}
	}
	if pg.dir != "" {
		os.RemoveAll(pg.dir)
	}
}
