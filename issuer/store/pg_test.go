package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mwi-project/mwi/internal/pgtest"
)

// The PostgreSQL server the tests of this package share: started by the
// first test that needs it, stopped by TestMain. Each test gets a database
// of its own in it, so that tests can run in parallel.
var pg struct {
	once sync.Once
	srv  *pgtest.Server
	err  error
	n    int // databases made
	mu   sync.Mutex
}

func TestMain(m *testing.M) {
	code := m.Run()
	if pg.srv != nil {
		pg.srv.Stop()
	}
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
// starting the server first if need be. See pgtest.Skip for when
// PostgreSQL is not installed.
func newDatabase(t testing.TB) string {
	t.Helper()
	pg.once.Do(func() {
		if pg.srv, pg.err = pgtest.Start(); pg.err != nil {
			return
		}
		// The tests' databases are copies of one migrated at the start,
		// rather than each migrated anew; Open still checks each one's
		// version.
		url, err := pg.srv.CreateDatabase("mwi_template", "")
		if err != nil {
			pg.err = err
			return
		}
		s, err := Open(url)
		if err != nil {
			pg.err = fmt.Errorf("migrate the template database: %w", err)
			return
		}
		s.Close()
	})
	pgtest.Skip(t, pg.err)
	pg.mu.Lock()
	pg.n++
	name := fmt.Sprintf("test_%d", pg.n)
	pg.mu.Unlock()
	url, err := pg.srv.CreateDatabase(name, "mwi_template")
	if err != nil {
		t.Fatal(err)
	}
	return url
}

// TestPostgresUnavailable checks that a store whose database stops
// answering fails with ErrUnavailable, that refusals which are not an
// outage are not marked so, and that the store answers again by itself
// once the database is back.
func TestPostgresUnavailable(t *testing.T) {
	srv := pgtest.StartT(t) // its own server: the shared one stays up
	url, err := srv.CreateDatabase("outage", "")
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(url)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	_, err = s.Instance(ctx, "nobody")
	if !errors.Is(err, ErrInstanceUnknown) || errors.Is(err, ErrUnavailable) {
		t.Fatalf("Instance of an unknown ID = %v, want ErrInstanceUnknown only", err)
	}
	srv.Halt()
	calls := map[string]func() error{
		"Instance": func() error { _, err := s.Instance(ctx, "nobody"); return err },
		"Changes":  func() error { _, err := s.Changes(ctx); return err },
		"Locks":    func() error { _, err := s.Locks(ctx, time.Now()); return err },
		"PutToken": func() error {
			return s.PutToken(ctx, Token{Hash: "h", Bot: "b", Created: time.Now(), Expires: time.Now().Add(time.Hour)})
		},
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, ErrUnavailable) {
			t.Errorf("%s with the database down = %v, want ErrUnavailable", name, err)
		}
	}
	if err := srv.Resume(); err != nil {
		t.Fatal(err)
	}
	for name, call := range calls {
		if err := call(); errors.Is(err, ErrUnavailable) {
			t.Errorf("%s with the database back = %v", name, err)
		}
	}
}
