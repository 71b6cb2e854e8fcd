package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Join on PostgreSQL is one transaction. Its refusals roll it back, so
// its writes need no particular order, save that the rows it checks are
// locked first (the token's, the replay record's, the kept instance's),
// as ConsumeToken, MarkUsed and AdvanceGeneration lock them.
func (s *pgStore) Join(ctx context.Context, w JoinWrite) (Instance, error) {
	var out Instance
	var mismatch error
	err := s.tx(ctx, func(tx pgx.Tx) error {
		out, mismatch = Instance{}, nil
		var tok Token
		if w.TokenHash != "" {
			var err error
			if tok, err = pgUsableToken(ctx, tx, w.TokenHash, w.Now); err != nil {
				return err
			}
		}
		if w.Replay.Key != "" {
			if err := pgMarkUsed(ctx, tx, w.Replay.Key, w.Replay.Owner, w.Replay.Expires, w.Now); err != nil {
				return err
			}
		}
		if w.Keep != nil {
			keep := *w.Keep
			keep.Now, keep.Node = w.Now, nil
			in, refused, err := pgAdvance(ctx, tx, keep)
			switch {
			case err != nil:
				return err
			case errors.Is(refused, ErrGenerationMismatch):
				// The lock and the replay record stay: commit them.
				out, mismatch = in, refused
				return nil
			case refused != nil:
				return refused
			}
			out = in
		} else {
			if err := pgCheckLocks(ctx, tx, w.Now, "", w.Instance.Bot, w.Instance.TokenName); err != nil {
				return err
			}
			var err error
			if out, err = pgCreateInstance(ctx, tx, w.Instance); err != nil {
				return err
			}
		}
		if w.TokenHash != "" {
			if _, err := pgConsume(ctx, tx, tok, out.ID, w.Now); err != nil {
				return err
			}
		}
		if w.Node != nil {
			if err := pgPutNode(ctx, tx, *w.Node); err != nil {
				return err
			}
		}
		if s.beforeCommit != nil {
			s.beforeCommit()
		}
		return nil
	})
	if err != nil {
		return Instance{}, err
	}
	return out, mismatch
}

func (s *pgStore) Renew(ctx context.Context, w RenewWrite) (Instance, error) {
	var out Instance
	var refused error
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var err error
		if out, refused, err = pgAdvance(ctx, tx, w); err != nil {
			return err
		}
		if refused != nil {
			// Nothing else to write. A mismatch commits its lock; the
			// other refusals wrote nothing.
			return nil
		}
		if w.Node != nil {
			if err := pgPutNode(ctx, tx, *w.Node); err != nil {
				return err
			}
		}
		if s.beforeCommit != nil {
			s.beforeCommit()
		}
		return nil
	})
	if err != nil {
		return Instance{}, err
	}
	return out, refused
}

// pgCheckLocks returns ErrInstanceLocked, ErrBotLocked or ErrTokenLocked
// if a lock of instance, bot or the token resource token (those not
// empty) is in force at now, as read in tx with their keys held (see
// pgHoldLock): the keys in one statement, then the locks in another, which
// sees what committed while the first waited.
func pgCheckLocks(ctx context.Context, tx pgx.Tx, now time.Time, instance, bot, token string) error {
	var kinds []int32
	var keys []string
	for _, k := range []struct {
		kind int
		key  string
	}{{lockOfInstance, instance}, {lockOfBot, bot}, {lockOfToken, token}} {
		if k.key != "" {
			kinds, keys = append(kinds, int32(k.kind)), append(keys, k.key)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock_shared(k, hashtext(key)) FROM unnest($1::int4[], $2::text[]) AS t(k, key)`,
		kinds, keys); err != nil {
		return fmt.Errorf("store: hold locks: %w", err)
	}
	rows, err := tx.Query(ctx, `SELECT kind, doc FROM locks WHERE (kind::int4, key) IN (SELECT * FROM unnest($1::int4[], $2::text[]))`,
		kinds, keys)
	if err != nil {
		return fmt.Errorf("store: read locks: %w", err)
	}
	found := map[int]Lock{}
	for rows.Next() {
		var kind int
		var doc []byte
		var l Lock
		if err := rows.Scan(&kind, &doc); err != nil {
			rows.Close()
			return fmt.Errorf("store: read locks: %w", err)
		}
		if err := json.Unmarshal(doc, &l); err != nil {
			rows.Close()
			return fmt.Errorf("store: read locks: %w", err)
		}
		found[kind] = l
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("store: read locks: %w", err)
	}
	if l, ok := found[lockOfInstance]; ok && l.InForce(now) {
		return fmt.Errorf("store: advance instance %q: locked since %s: %s: %w",
			instance, l.At.Format(time.RFC3339), l.Reason, ErrInstanceLocked)
	}
	for _, c := range []struct {
		kind int
		key  string
		err  error
	}{{lockOfBot, bot, ErrBotLocked}, {lockOfToken, token, ErrTokenLocked}} {
		if l, ok := found[c.kind]; ok && l.InForce(now) {
			return fmt.Errorf("store: %q locked since %s: %s: %w", c.key, l.At.Format(time.RFC3339), l.Reason, c.err)
		}
	}
	return nil
}

// pgCreateInstance inserts in, in tx, and returns it as stored, or
// ErrExists if its ID is taken.
func pgCreateInstance(ctx context.Context, tx pgx.Tx, in Instance) (Instance, error) {
	doc, err := json.Marshal(in)
	if err != nil {
		return Instance{}, fmt.Errorf("store: create instance %q: %w", in.ID, err)
	}
	tag, err := tx.Exec(ctx, `INSERT INTO instances (id, bot, token_name, doc) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`,
		in.ID, in.Bot, in.TokenName, doc)
	if err != nil {
		return Instance{}, fmt.Errorf("store: create instance %q: %w", in.ID, err)
	}
	if tag.RowsAffected() == 0 {
		return Instance{}, fmt.Errorf("store: create instance %q: %w", in.ID, ErrExists)
	}
	var out Instance
	return out, json.Unmarshal(doc, &out)
}

// clockMaxAge is how old the measure of the database's clock may be
// before Now measures it again itself.
const clockMaxAge = 10 * time.Second

// pgClock is the database's clock as this process sees it: the offset of
// the database's clock from the local one, measured with a query, and
// applied to the local clock. The measure rides on Changes, which issuers
// poll every second, so that Now costs no query on the way of a request;
// Now measures it itself only when it is older than clockMaxAge. Its error
// is half the query's round trip, well under a millisecond on a local
// network, and the same for every issuer on the database: one clock
// decides validity however far apart their own clocks drift.
type pgClock struct {
	mu       sync.Mutex
	offset   time.Duration
	measured time.Time // the local time of the measure; zero before the first
}

// record sets the offset from the database's time db, read by a query
// sent at sent and answered at answered, both local.
func (c *pgClock) record(db, sent, answered time.Time) {
	mid := sent.Add(answered.Sub(sent) / 2)
	c.mu.Lock()
	c.offset = db.Sub(mid.Round(0))
	c.measured = answered
	c.mu.Unlock()
}

// now returns the database's time and whether the measure is recent.
func (c *pgClock) now() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fresh := !c.measured.IsZero() && time.Since(c.measured) < clockMaxAge
	return time.Now().Round(0).Add(c.offset), fresh
}

// Now returns the database's clock; see pgClock.
func (s *pgStore) Now(ctx context.Context) (time.Time, error) {
	if err := ctx.Err(); err != nil {
		return time.Time{}, err
	}
	if t, fresh := s.clock.now(); fresh {
		return t, nil
	}
	sent := time.Now()
	var db time.Time
	if err := s.pool.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&db); err != nil {
		return time.Time{}, fmt.Errorf("store: the database's clock: %w", unreachable(ctx, err))
	}
	s.clock.record(db, sent, time.Now())
	t, _ := s.clock.now()
	return t, nil
}
