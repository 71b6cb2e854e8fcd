package store

import (
	"context"
	"encoding/json"
	"fmt"
	"iter"
	"strings"

	"github.com/jackc/pgx/v5"
	bolt "go.etcd.io/bbolt"
)

// seedBatch is how many instances Seed writes in one transaction.
const seedBatch = 10000

// Seed writes instances into the store at location in bulk, as a load test
// fills a store with a fleet before it starts the issuer: joining a
// million bots one by one would take the better part of an hour. The
// records are the ones a join writes (see Store.CreateInstance); an
// instance whose ID is taken is an error.
//
// A bbolt file must not be open in another process (an issuer). It is
// written without a sync per transaction and synced once at the end: a
// crash half-way leaves a store to throw away, which is what a seeded
// store is for. PostgreSQL gets the rows through COPY. Seed returns how
// many instances it wrote.
func Seed(ctx context.Context, location string, instances iter.Seq[Instance]) (int, error) {
	switch {
	case strings.HasPrefix(location, "postgres://"), strings.HasPrefix(location, "postgresql://"):
		return seedPostgres(ctx, location, instances)
	case strings.Contains(location, "://") && !strings.HasPrefix(location, "bolt://"):
		return 0, fmt.Errorf("store: seed %s: unknown kind of store", redact(location))
	}
	path := strings.TrimPrefix(location, "bolt://")
	// Open makes the buckets and sets the file's mode.
	st, err := openBolt(path)
	if err != nil {
		return 0, err
	}
	if err := st.Close(); err != nil {
		return 0, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout, NoSync: true, NoFreelistSync: true})
	if err != nil {
		return 0, fmt.Errorf("store: seed %s: %w", path, err)
	}
	n, err := seedBolt(ctx, db, instances)
	if err == nil {
		err = db.Sync()
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, fmt.Errorf("store: seed %s: %w", path, err)
	}
	return n, nil
}

func seedBolt(ctx context.Context, db *bolt.DB, instances iter.Seq[Instance]) (int, error) {
	var n int
	batch := make([]Instance, 0, seedBatch)
	flush := func() error {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketInstances)
			for _, in := range batch {
				if b.Get([]byte(in.ID)) != nil {
					return fmt.Errorf("instance %q: %w", in.ID, ErrExists)
				}
				if _, err := put(b, in.ID, in); err != nil {
					return fmt.Errorf("instance %q: %w", in.ID, err)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		n += len(batch)
		batch = batch[:0]
		return nil
	}
	for in := range instances {
		batch = append(batch, in)
		if len(batch) == seedBatch {
			if err := flush(); err != nil {
				return n, err
			}
		}
	}
	return n, flush()
}

func seedPostgres(ctx context.Context, location string, instances iter.Seq[Instance]) (int, error) {
	// Open applies the migrations, so the table is there.
	st, err := openPostgres(location)
	if err != nil {
		return 0, err
	}
	defer st.Close()
	pool := st.(*pgStore).pool
	var encodeErr error
	var rows [][]any
	var n int
	flush := func() error {
		if len(rows) == 0 {
			return nil
		}
		c, err := pool.CopyFrom(ctx, pgx.Identifier{"instances"}, []string{"id", "bot", "token_name", "doc"}, pgx.CopyFromRows(rows))
		n += int(c)
		rows = rows[:0]
		return err
	}
	for in := range instances {
		doc, err := json.Marshal(in)
		if err != nil {
			encodeErr = fmt.Errorf("instance %q: %w", in.ID, err)
			break
		}
		rows = append(rows, []any{in.ID, in.Bot, in.TokenName, doc})
		if len(rows) == seedBatch {
			if err := flush(); err != nil {
				return n, fmt.Errorf("store: seed %s: %w", redact(location), err)
			}
		}
	}
	if encodeErr != nil {
		return n, fmt.Errorf("store: seed %s: %w", redact(location), encodeErr)
	}
	if err := flush(); err != nil {
		return n, fmt.Errorf("store: seed %s: %w", redact(location), err)
	}
	return n, nil
}
