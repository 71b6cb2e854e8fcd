package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	bolt "go.etcd.io/bbolt"
)

// TokenGrace is how long a one-time token is kept after it was consumed,
// or after it expired unused, before Prune removes it. Until then a join
// that presents it again, such as a retry whose first answer was lost, is
// refused as token_used (or token_expired), which says what happened;
// after it, as token_unknown. The audit log keeps the join for good.
const TokenGrace = 24 * time.Hour

// pruneBatch bounds the records one transaction of Prune examines, so that
// it holds bbolt's single writer, or PostgreSQL's row locks, only briefly.
const pruneBatch = 1000

// PruneStats counts the records Prune removed, by kind.
type PruneStats struct {
	Tokens     int // one-time tokens
	Challenges int
	Used       int // replay records (MarkUsed)
	Locks      int
	Nodes      int
}

// Total is the number of records removed.
func (p PruneStats) Total() int {
	return p.Tokens + p.Challenges + p.Used + p.Locks + p.Nodes
}

// tokenPrunable reports whether Prune removes t at now: TokenGrace has
// passed since it was consumed, or, unconsumed, since it expired. Neither
// time changes once it has passed, so the answer, once true, stays true.
func tokenPrunable(t Token, now time.Time) bool {
	done := t.Expires
	if !t.ConsumedAt.IsZero() {
		done = t.ConsumedAt
	}
	return !now.Before(done.Add(TokenGrace))
}

// nodePrunable reports whether Prune removes n at now, as PutNode would.
func nodePrunable(n Node, now time.Time) bool {
	return n.Renewed.Before(now.Add(-NodeRetention))
}

func (s *boltStore) Prune(ctx context.Context, now time.Time) (PruneStats, error) {
	var st PruneStats
	var errs []error
	var err error
	if st.Tokens, err = s.sweep(ctx, bucketTokens, func(v []byte) (bool, error) {
		var t Token
		err := json.Unmarshal(v, &t)
		return err == nil && tokenPrunable(t, now), err
	}); err != nil {
		errs = append(errs, fmt.Errorf("store: prune tokens: %w", err))
	}
	if st.Challenges, err = s.pruneExpiring(ctx, bucketChallenges, bucketChallengesExpiry, now); err != nil {
		errs = append(errs, fmt.Errorf("store: prune challenges: %w", err))
	}
	if st.Used, err = s.pruneExpiring(ctx, bucketUsed, bucketUsedExpiry, now); err != nil {
		errs = append(errs, fmt.Errorf("store: prune used keys: %w", err))
	}
	lockDead := func(v []byte) (bool, error) {
		var l Lock
		err := json.Unmarshal(v, &l)
		return err == nil && !l.InForce(now), err
	}
	for _, b := range [][]byte{bucketLocks, bucketInstanceLocks, bucketTokenLocks} {
		n, err := s.sweep(ctx, b, lockDead)
		st.Locks += n
		if err != nil {
			errs = append(errs, fmt.Errorf("store: prune locks: %w", err))
		}
	}
	if st.Nodes, err = s.pruneNodes(ctx, now); err != nil {
		errs = append(errs, fmt.Errorf("store: prune nodes: %w", err))
	}
	return st, errors.Join(errs...)
}

// undecodable counts the records a prune kept because they did not
// decode, and keeps the first one's error: such a record is left for an
// operator to look at, and the records after it are pruned all the same,
// so that one bad record does not stop every prune to come.
type undecodable struct {
	n     int
	first error
}

func (u *undecodable) add(err error) {
	if u.n == 0 {
		u.first = err
	}
	u.n++
}

func (u *undecodable) err() error {
	if u.n == 0 {
		return nil
	}
	return fmt.Errorf("%d records that do not decode are kept; the first: %w", u.n, u.first)
}

// pruneNodes removes the nodes nodePrunable at now, through their renewal
// index, pruneBatch at most per transaction, and returns how many. An
// inventory whose indexes PutNode has not built yet is swept instead.
func (s *boltStore) pruneNodes(ctx context.Context, now time.Time) (int, error) {
	indexed := false
	if err := s.db.View(func(tx *bolt.Tx) error {
		indexed = tx.Bucket(bucketNodesByHost) != nil && tx.Bucket(bucketNodesByRenewal) != nil
		return nil
	}); err != nil {
		return 0, err
	}
	if !indexed {
		return s.sweep(ctx, bucketNodes, func(v []byte) (bool, error) {
			var n Node
			err := json.Unmarshal(v, &n)
			return err == nil && nodePrunable(n, now), err
		})
	}
	limit := expiryBytes(now.Add(-NodeRetention))
	return inBatches(ctx, func() (int, bool, error) {
		var dead [][]byte
		err := s.db.Update(func(tx *bolt.Tx) error {
			b, byHost, byRenewal, err := boltNodeBuckets(tx)
			if err != nil {
				return err
			}
			c := byRenewal.Cursor()
			for k, _ := c.First(); k != nil && len(k) >= 8 && bytes.Compare(k[:8], limit) < 0 && len(dead) < pruneBatch; k, _ = c.Next() {
				dead = append(dead, bytes.Clone(k))
			}
			return boltDeleteNodes(b, byHost, byRenewal, dead)
		})
		if err != nil {
			return 0, false, err
		}
		return len(dead), len(dead) >= pruneBatch, nil
	})
}

// inBatches runs batch, one transaction of a prune, until it reports that
// there is nothing more (a batch short of full), and returns how many
// records the batches removed. An error, or ctx ending, stops it; the
// failed batch counts nothing, since its transaction was rolled back.
func inBatches(ctx context.Context, batch func() (removed int, more bool, err error)) (int, error) {
	total := 0
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		removed, more, err := batch()
		if err != nil {
			return total, err
		}
		total += removed
		if !more {
			return total, nil
		}
	}
}

// pruneExpiring removes the records of main expired at now, through its
// expiry index, maxPrune at most per transaction, and returns how many.
func (s *boltStore) pruneExpiring(ctx context.Context, main, index []byte, now time.Time) (int, error) {
	return inBatches(ctx, func() (int, bool, error) {
		var n int
		err := s.db.Update(func(tx *bolt.Tx) error {
			var err error
			n, err = prune(tx.Bucket(main), tx.Bucket(index), now)
			return err
		})
		return n, n >= maxPrune, err
	})
}

// sweep removes the records of bucket whose value dead reports, reading
// pruneBatch records per transaction in key order, and returns how many
// it removed. A bucket that does not exist has nothing to remove. dead's
// answer must not change once true, since a record is judged in one
// transaction and the sweep goes on in the next.
func (s *boltStore) sweep(ctx context.Context, bucket []byte, dead func(v []byte) (bool, error)) (int, error) {
	var after []byte // the last key of the previous batch
	var bad undecodable
	n, err := inBatches(ctx, func() (int, bool, error) {
		var removed int
		var last []byte
		err := s.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucket)
			if b == nil {
				return nil
			}
			c := b.Cursor()
			k, v := c.First()
			if after != nil {
				k, v = c.Seek(after)
				if bytes.Equal(k, after) {
					k, v = c.Next()
				}
			}
			var doomed [][]byte
			for seen := 0; k != nil && seen < pruneBatch; k, v = c.Next() {
				seen++
				last = k
				d, err := dead(v)
				if err != nil {
					bad.add(fmt.Errorf("%q: decode: %w", k, err))
				}
				if d {
					doomed = append(doomed, k)
				}
			}
			if k != nil {
				last = bytes.Clone(last) // read after the transaction
			} else {
				last = nil // the bucket is done
			}
			for _, k := range doomed {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
			removed = len(doomed)
			return nil
		})
		after = last
		return removed, last != nil, err
	})
	return n, errors.Join(err, bad.err())
}

func (s *pgStore) Prune(ctx context.Context, now time.Time) (PruneStats, error) {
	var st PruneStats
	var errs []error
	var err error
	if st.Tokens, err = s.pruneTokens(ctx, now); err != nil {
		errs = append(errs, fmt.Errorf("store: prune tokens: %w", err))
	}
	if st.Challenges, err = s.pruneExpiring(ctx, "challenges", now); err != nil {
		errs = append(errs, fmt.Errorf("store: prune challenges: %w", err))
	}
	if st.Used, err = s.pruneExpiring(ctx, "used", now); err != nil {
		errs = append(errs, fmt.Errorf("store: prune used keys: %w", err))
	}
	if st.Locks, err = s.pruneLocks(ctx, now); err != nil {
		errs = append(errs, fmt.Errorf("store: prune locks: %w", err))
	}
	if st.Nodes, err = s.pruneNodes(ctx, now); err != nil {
		errs = append(errs, fmt.Errorf("store: prune nodes: %w", err))
	}
	return st, errors.Join(errs...)
}

// pruneExpiring removes the rows of table (used or challenges) expired at
// now, maxPrune at most per transaction, and returns how many.
func (s *pgStore) pruneExpiring(ctx context.Context, table string, now time.Time) (int, error) {
	return inBatches(ctx, func() (int, bool, error) {
		var n int
		err := s.tx(ctx, func(tx pgx.Tx) error {
			var err error
			n, err = pgPrune(ctx, tx, table, now)
			return err
		})
		return n, n >= maxPrune, err
	})
}

// pruneTokens removes the tokens tokenPrunable reports, by the column
// done (when each was used, or expires unused), pruneBatch at most per
// transaction: through its index, it reads only the tokens it removes.
func (s *pgStore) pruneTokens(ctx context.Context, now time.Time) (int, error) {
	return inBatches(ctx, func() (int, bool, error) {
		var n int
		err := s.tx(ctx, func(tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, `DELETE FROM tokens WHERE hash IN (
				SELECT hash FROM tokens WHERE done <= $1 ORDER BY done LIMIT $2 FOR UPDATE SKIP LOCKED)`,
				unixNanos(now.Add(-TokenGrace)), pruneBatch)
			n = int(tag.RowsAffected())
			return err
		})
		return n, n >= pruneBatch, err
	})
}

// pruneLocks removes the locks that are no longer in force at now,
// reading pruneBatch rows per transaction in key order. The rows read are
// locked until they are removed, so that a lock put in place of an
// expired one in between is not removed in its stead.
func (s *pgStore) pruneLocks(ctx context.Context, now time.Time) (int, error) {
	afterKind, afterKey := -1, ""
	var bad undecodable
	n, err := inBatches(ctx, func() (int, bool, error) {
		var removed, seen int
		err := s.tx(ctx, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, `SELECT kind, key, doc FROM locks WHERE (kind, key) > ($1, $2)
				ORDER BY kind, key LIMIT $3 FOR UPDATE`, afterKind, afterKey, pruneBatch)
			if err != nil {
				return err
			}
			type ref struct {
				kind int
				key  string
			}
			var doomed []ref
			var kind int
			var key string
			var doc []byte
			_, err = pgx.ForEachRow(rows, []any{&kind, &key, &doc}, func() error {
				seen++
				afterKind, afterKey = kind, key
				var l Lock
				if err := json.Unmarshal(doc, &l); err != nil {
					bad.add(fmt.Errorf("lock %q: decode: %w", key, err))
					return nil
				}
				if !l.InForce(now) {
					doomed = append(doomed, ref{kind, key})
				}
				return nil
			})
			if err != nil {
				return err
			}
			for _, r := range doomed {
				tag, err := tx.Exec(ctx, `DELETE FROM locks WHERE kind = $1 AND key = $2`, r.kind, r.key)
				if err != nil {
					return err
				}
				removed += int(tag.RowsAffected())
			}
			return nil
		})
		return removed, seen >= pruneBatch, err
	})
	return n, errors.Join(err, bad.err())
}

// pruneNodes removes the nodes nodePrunable reports, pruneBatch at most
// per transaction.
func (s *pgStore) pruneNodes(ctx context.Context, now time.Time) (int, error) {
	return inBatches(ctx, func() (int, bool, error) {
		var n int
		err := s.tx(ctx, func(tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, `DELETE FROM nodes WHERE instance IN (
				SELECT instance FROM nodes WHERE renewed < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)`,
				unixNanos(now.Add(-NodeRetention)), pruneBatch)
			n = int(tag.RowsAffected())
			return err
		})
		return n, n >= pruneBatch, err
	})
}
