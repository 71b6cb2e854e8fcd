package store

import (
	"context"
	"io/fs"
	"sync"
	"testing"
)

// TestMigrateConcurrently opens a database that has no schema yet from
// several issuers at once, as replicas starting together do: each applies
// its migrations under the advisory lock, so every Open succeeds, each
// migration is applied once, and the stores work.
func TestMigrateConcurrently(t *testing.T) {
	newDatabase(t) // starts the server
	url, err := pg.srv.CreateDatabase("migrate_race", "")
	if err != nil {
		t.Fatal(err)
	}
	const replicas = 3
	stores := make([]Store, replicas)
	errs := make([]error, replicas)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			stores[i], errs[i] = Open(url)
		}()
	}
	close(start)
	wg.Wait()
	ctx := context.Background()
	for i, s := range stores {
		if errs[i] != nil {
			t.Errorf("replica %d: Open: %v", i, errs[i])
			continue
		}
		defer s.Close()
		if _, err := s.Changes(ctx); err != nil {
			t.Errorf("replica %d: Changes: %v", i, err)
		}
	}
	if s := stores[0]; s != nil {
		var applied, changes int
		pool := s.(*pgStore).pool
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM goose_db_version WHERE version_id > 0`).Scan(&applied); err != nil {
			t.Fatal(err)
		}
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM changes`).Scan(&changes); err != nil {
			t.Fatal(err)
		}
		files, err := fs.Glob(migrations, "migrations/*.sql")
		if err != nil {
			t.Fatal(err)
		}
		if applied != len(files) || changes != 1 {
			t.Errorf("%d migrations recorded (of %d), %d rows in changes; want each migration applied once", applied, len(files), changes)
		}
	}
}
