package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	bolt "go.etcd.io/bbolt"
)

// A Prober is a Store that can show it takes writes. Both of Open's
// stores are Probers.
type Prober interface {
	// Probe makes one small write, in a transaction of its own, and
	// returns why it failed: a database that cannot be reached
	// (ErrUnavailable), one that is read-only (a standby promoted in
	// error, default_transaction_read_only), a file that cannot be
	// written. It changes nothing that any other method reads.
	Probe(ctx context.Context) error
}

// Probe asks s whether it answers and takes writes, for the issuer's
// readiness: with s's Probe if it is a Prober, and otherwise with the
// read of Changes.
func Probe(ctx context.Context, s Store) error {
	if p, ok := s.(Prober); ok {
		return p.Probe(ctx)
	}
	_, err := s.Changes(ctx)
	return err
}

// bucketProbe holds the one key that Probe writes in the bbolt store.
var bucketProbe = []byte("probe")

// Probe writes the time in a bucket of its own: a commit like any other,
// so that it fails as theirs would, on a disk that is full or failing.
func (s *boltStore) Probe(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketProbe)
		if err != nil {
			return err
		}
		return b.Put(bucketProbe, []byte(time.Now().UTC().Format(time.RFC3339Nano)))
	})
	if err != nil {
		return fmt.Errorf("store: probe %s: %w", s.path, err)
	}
	return nil
}

// Probe updates the row of the change counter to what it holds: a write,
// which a read-only database refuses, that changes no value. It waits
// for the row's lock as the writes of resources and locks do.
func (s *pgStore) Probe(ctx context.Context) error {
	err := s.tx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `UPDATE changes SET count = count WHERE id = 0`)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: probe: %w", err)
	}
	return nil
}
