package store

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// migrations are the versioned schema changes of the PostgreSQL store,
// applied in order by openPostgres.
//
//go:embed migrations/*.sql
var migrations embed.FS

// openTimeout bounds connecting to PostgreSQL and migrating its schema at
// Open, so that an unreachable database is reported rather than waited on.
const openTimeout = 30 * time.Second

// Lock kinds, the kind column of the locks table, in the order Locks
// returns them.
const (
	lockOfBot = iota
	lockOfInstance
	lockOfToken
)

// pgStore is the Store kept in PostgreSQL, which several issuers can share.
// Each method is one transaction at READ COMMITTED: a check-and-set first
// locks the row it checks (SELECT … FOR UPDATE, or an INSERT … ON
// CONFLICT that finds it), so that concurrent callers, in this process or
// another, take turns on the same row as they do on bbolt's single writer.
//
// The times that decide validity are the callers' now, as with bbolt;
// callers take it from Now, the database's clock.
type pgStore struct {
	pool  *pgxpool.Pool
	name  string // the URL without its password, for messages
	clock pgClock
	// beforeCommit, if set, is called by Join and Renew when they have
	// written and before they commit, for the tests.
	beforeCommit func()
}

// openPostgres connects to the database at url and brings its schema up
// to date.
func openPostgres(url string) (Store, error) {
	if err := unparsable(url); err != nil {
		return nil, err
	}
	name := redact(url)
	ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
	defer cancel()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", name, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("store: connect to %s: %w", name, err)
	}
	if err := migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("store: migrate %s: %w", name, err)
	}
	return &pgStore{pool: pool, name: name}, nil
}

// migrate applies the migrations the database has not had yet. A session
// lock (an advisory lock) makes issuers starting together on one database
// apply each migration once.
func migrate(ctx context.Context, pool *pgxpool.Pool) error {
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return err
	}
	dir, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return err
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, dir,
		goose.WithSessionLocker(locker), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return err
	}
	_, err = p.Up(ctx)
	return err
}

func (s *pgStore) tx(ctx context.Context, fn func(pgx.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return unreachable(ctx, pgx.BeginFunc(ctx, s.pool, fn))
}

// unavailableError is a failure to reach the database: it matches
// ErrUnavailable, and its text and chain are those of the failure.
type unavailableError struct{ err error }

func (e *unavailableError) Error() string   { return e.err.Error() }
func (e *unavailableError) Unwrap() []error { return []error{ErrUnavailable, e.err} }

// unreachable marks err with ErrUnavailable if it says that the database
// could not be reached or stopped answering: a connection that could not
// be made, or was lost, a server shutting down or starting up, or no
// connection in time, unless the caller gave up (ctx canceled). Every other
// error, such as a constraint violated, is returned as it is: it is not
// the database's absence, and retrying does not help.
func unreachable(ctx context.Context, err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) {
		return err
	}
	var connErr *pgconn.ConnectError
	var pgErr *pgconn.PgError
	var netErr net.Error
	switch {
	case errors.As(err, &connErr), errors.As(err, &netErr),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
	case errors.As(err, &pgErr):
		// Class 08 is a connection exception; 57P01 to 57P03 are an
		// administrator's shutdown, a crash shutdown and a server that
		// cannot yet accept connections.
		if !strings.HasPrefix(pgErr.Code, "08") && pgErr.Code != "57P01" && pgErr.Code != "57P02" && pgErr.Code != "57P03" {
			return err
		}
	case pgconn.Timeout(err) && !errors.Is(ctx.Err(), context.Canceled):
	default:
		return err
	}
	return &unavailableError{err}
}

// unixNanos encodes t for the bigint columns compared in SQL, as
// expiryBytes does for bbolt: times before the epoch become 0, and times
// past 2262 the largest value.
func unixNanos(t time.Time) int64 {
	switch {
	case t.Before(time.Unix(0, 0)):
		return 0
	case t.After(time.Unix(0, math.MaxInt64)):
		return math.MaxInt64
	}
	return t.UnixNano()
}

// getDoc decodes the doc of the row that q selects, the record kept under
// key, into v and reports whether there was one; see decodeDoc.
func getDoc(ctx context.Context, tx pgx.Tx, v any, key, q string, args ...any) (bool, error) {
	var doc []byte
	if err := tx.QueryRow(ctx, q, args...).Scan(&doc); errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	if err := decodeDoc(key, doc, v); err != nil {
		return true, err
	}
	return true, nil
}

func (s *pgStore) PutToken(ctx context.Context, t Token) error {
	doc, err := json.Marshal(t)
	if err != nil {
		return fmt.Errorf("store: put token for bot %q: %w", t.Bot, err)
	}
	return s.tx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO tokens (hash, doc, done) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
			t.Hash, doc, unixNanos(t.Expires))
		if err != nil {
			return fmt.Errorf("store: put token for bot %q: %w", t.Bot, err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("store: put token for bot %q: %w", t.Bot, ErrExists)
		}
		return nil
	})
}

func (s *pgStore) ConsumeToken(ctx context.Context, hash, instance string, now time.Time) (Token, error) {
	var out Token
	err := s.tx(ctx, func(tx pgx.Tx) error {
		t, err := pgUsableToken(ctx, tx, hash, now)
		if err != nil {
			return err
		}
		out, err = pgConsume(ctx, tx, t, instance, now)
		return err
	})
	if err != nil {
		return Token{}, err
	}
	return out, nil
}

// pgUsableToken returns the token with the given hash, its row locked in
// tx, or the error ConsumeToken returns for it.
func pgUsableToken(ctx context.Context, tx pgx.Tx, hash string, now time.Time) (Token, error) {
	var t Token
	found, err := getDoc(ctx, tx, &t, hash, `SELECT doc FROM tokens WHERE hash = $1 FOR UPDATE`, hash)
	return consumable(t, found, err, now)
}

// pgConsume marks t used by instance at now, in tx, and returns it as
// stored.
func pgConsume(ctx context.Context, tx pgx.Tx, t Token, instance string, now time.Time) (Token, error) {
	t.ConsumedAt = now
	t.ConsumedBy = instance
	doc, err := json.Marshal(t)
	if err != nil {
		return Token{}, fmt.Errorf("store: consume token for bot %q: %w", t.Bot, err)
	}
	if _, err := tx.Exec(ctx, `UPDATE tokens SET doc = $2, done = $3 WHERE hash = $1`, t.Hash, doc, unixNanos(now)); err != nil {
		return Token{}, fmt.Errorf("store: consume token for bot %q: %w", t.Bot, err)
	}
	var out Token
	return out, json.Unmarshal(doc, &out)
}

func (s *pgStore) Token(ctx context.Context, hash string, now time.Time) (Token, error) {
	var t Token
	err := s.tx(ctx, func(tx pgx.Tx) error {
		found, err := getDoc(ctx, tx, &t, hash, `SELECT doc FROM tokens WHERE hash = $1`, hash)
		if err != nil {
			return fmt.Errorf("store: token: %w", err)
		}
		if !found {
			return fmt.Errorf("store: token: %w", ErrTokenUnknown)
		}
		return usable(t, now)
	})
	if err != nil {
		return Token{}, err
	}
	return t, nil
}

func (s *pgStore) CreateInstance(ctx context.Context, in Instance) error {
	return s.tx(ctx, func(tx pgx.Tx) error {
		_, err := pgCreateInstance(ctx, tx, in)
		return err
	})
}

func (s *pgStore) Instance(ctx context.Context, id string) (Instance, error) {
	var in Instance
	err := s.tx(ctx, func(tx pgx.Tx) error {
		found, err := getDoc(ctx, tx, &in, id, `SELECT doc FROM instances WHERE id = $1`, id)
		if err != nil {
			return fmt.Errorf("store: instance %q: %w", id, err)
		}
		if !found {
			return fmt.Errorf("store: instance %q: %w", id, ErrInstanceUnknown)
		}
		return nil
	})
	if err != nil {
		return Instance{}, err
	}
	return in, nil
}

func (s *pgStore) AdvanceGeneration(ctx context.Context, id string, presented uint64, key string, now time.Time) (Instance, error) {
	return s.Renew(ctx, RenewWrite{ID: id, Presented: presented, Key: key, Now: now})
}

// pgAdvance is boltAdvance in the PostgreSQL transaction tx: it locks
// the instance's row, then reads its lock.
func pgAdvance(ctx context.Context, tx pgx.Tx, w RenewWrite) (out Instance, refused, err error) {
	var in Instance
	found, err := getDoc(ctx, tx, &in, w.ID, `SELECT doc FROM instances WHERE id = $1 FOR UPDATE`, w.ID)
	if err != nil {
		return Instance{}, nil, fmt.Errorf("store: advance instance %q: %w", w.ID, err)
	}
	if !found {
		return Instance{}, fmt.Errorf("store: advance instance %q: %w", w.ID, ErrInstanceUnknown), nil
	}
	if w.Check != nil {
		if err := w.Check(in); err != nil {
			return Instance{}, err, nil
		}
	}
	// The locks are read with the instance's row held, as bbolt reads
	// them in the transaction that moves the counter.
	if err := pgCheckLocks(ctx, tx, w.Now, w.ID, in.Bot, in.TokenName); err != nil {
		if refusal(err) {
			return Instance{}, err, nil
		}
		return Instance{}, nil, err
	}
	next, write, lock, refused, err := nextGeneration(in, w)
	if err != nil {
		return Instance{}, nil, err
	}
	if lock != nil {
		if err := pgPutLock(ctx, tx, lockOfInstance, lock.Instance, *lock); err != nil {
			return Instance{}, nil, err
		}
	}
	if !write {
		return next, refused, nil
	}
	doc, err := json.Marshal(next)
	if err != nil {
		return Instance{}, nil, fmt.Errorf("store: advance instance %q: %w", w.ID, err)
	}
	if _, err := tx.Exec(ctx, `UPDATE instances SET doc = $2 WHERE id = $1`, w.ID, doc); err != nil {
		return Instance{}, nil, fmt.Errorf("store: advance instance %q: %w", w.ID, err)
	}
	return out, nil, json.Unmarshal(doc, &out)
}

func (s *pgStore) LockBot(ctx context.Context, l Lock) error {
	if err := checkBotLock(l); err != nil {
		return err
	}
	return s.putLock(ctx, lockOfBot, l.Bot, l)
}

func (s *pgStore) LockInstance(ctx context.Context, l Lock) error {
	if err := checkInstanceLock(l); err != nil {
		return err
	}
	return s.putLock(ctx, lockOfInstance, l.Instance, l)
}

func (s *pgStore) LockToken(ctx context.Context, l Lock) error {
	if err := checkTokenLock(l); err != nil {
		return err
	}
	return s.putLock(ctx, lockOfToken, l.Token, l)
}

// putLock records l under kind and key unless a lock in force at l.At is
// there already (see boltStore.putLock). The INSERT either adds the lock
// or, finding one, holds its row while it is checked.
func (s *pgStore) putLock(ctx context.Context, kind int, key string, l Lock) error {
	return s.tx(ctx, func(tx pgx.Tx) error {
		if err := pgHoldLock(ctx, tx, kind, key); err != nil {
			return err
		}
		return pgPutLock(ctx, tx, kind, key, l)
	})
}

// pgHoldLock takes, until tx ends, the advisory lock of the lock of kind
// named key, exclusively, for putLock, before it records the lock; a join
// or a renewal takes it shared before it reads the lock (pgCheckLocks).
// At READ COMMITTED each statement sees what committed before it began,
// so without it a lock committed after a join or renewal read the locks,
// and before that commits, would be ignored by it: the operator told the
// lock is in force would see credentials issued after. With it, such a
// lock waits for the join or renewal to commit, and one that begins after
// the lock reads it. Joins and renewals take only shared ones, and
// putLock takes only the one, so they cannot deadlock.
func pgHoldLock(ctx context.Context, tx pgx.Tx, kind int, key string) error {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, hashtext($2))`, int32(kind), key); err != nil {
		return fmt.Errorf("store: hold lock %q: %w", key, err)
	}
	return nil
}

// pgPutLock is putLock in the transaction tx.
func pgPutLock(ctx context.Context, tx pgx.Tx, kind int, key string, l Lock) error {
	doc, err := json.Marshal(l)
	if err != nil {
		return fmt.Errorf("store: lock %q: %w", key, err)
	}
	tag, err := tx.Exec(ctx, `INSERT INTO locks (kind, key, doc) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`, kind, key, doc)
	if err != nil {
		return fmt.Errorf("store: lock %q: %w", key, err)
	}
	if tag.RowsAffected() == 1 {
		return pgBump(ctx, tx)
	}
	var old Lock
	found, err := getDoc(ctx, tx, &old, key, `SELECT doc FROM locks WHERE kind = $1 AND key = $2 FOR UPDATE`, kind, key)
	if err != nil {
		return fmt.Errorf("store: lock %q: %w", key, err)
	}
	if found && old.InForce(l.At) {
		return nil
	}
	_, err = tx.Exec(ctx, `INSERT INTO locks (kind, key, doc) VALUES ($1, $2, $3)
		ON CONFLICT (kind, key) DO UPDATE SET doc = EXCLUDED.doc`, kind, key, doc)
	if err != nil {
		return fmt.Errorf("store: lock %q: %w", key, err)
	}
	return pgBump(ctx, tx)
}

func (s *pgStore) UnlockBot(ctx context.Context, bot string) (Lock, bool, error) {
	return s.unlock(ctx, lockOfBot, bot)
}

func (s *pgStore) UnlockInstance(ctx context.Context, id string) (Lock, bool, error) {
	return s.unlock(ctx, lockOfInstance, id)
}

func (s *pgStore) UnlockToken(ctx context.Context, name string) (Lock, bool, error) {
	return s.unlock(ctx, lockOfToken, name)
}

func (s *pgStore) unlock(ctx context.Context, kind int, key string) (Lock, bool, error) {
	var l Lock
	var found bool
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var err error
		found, err = getDoc(ctx, tx, &l, key, `DELETE FROM locks WHERE kind = $1 AND key = $2 RETURNING doc`, kind, key)
		if err != nil {
			return fmt.Errorf("store: unlock %q: %w", key, err)
		}
		if !found {
			return nil
		}
		return pgBump(ctx, tx)
	})
	if err != nil || !found {
		return Lock{}, false, err
	}
	return l, true, nil
}

func (s *pgStore) BotLock(ctx context.Context, bot string, now time.Time) (Lock, bool, error) {
	return s.lock(ctx, lockOfBot, bot, now)
}

func (s *pgStore) InstanceLock(ctx context.Context, id string, now time.Time) (Lock, bool, error) {
	return s.lock(ctx, lockOfInstance, id, now)
}

func (s *pgStore) TokenLock(ctx context.Context, name string, now time.Time) (Lock, bool, error) {
	return s.lock(ctx, lockOfToken, name, now)
}

func (s *pgStore) lock(ctx context.Context, kind int, key string, now time.Time) (Lock, bool, error) {
	var l Lock
	var found bool
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var err error
		found, err = getDoc(ctx, tx, &l, key, `SELECT doc FROM locks WHERE kind = $1 AND key = $2`, kind, key)
		if err != nil {
			return fmt.Errorf("store: lock %q: %w", key, err)
		}
		return nil
	})
	if err != nil || !found || !l.InForce(now) {
		return Lock{}, false, err
	}
	return l, true, nil
}

func (s *pgStore) Locks(ctx context.Context, now time.Time) ([]Lock, error) {
	all, err := queryDocs[Lock](ctx, s, "lock", `SELECT key, doc FROM locks ORDER BY kind, key`)
	if err != nil {
		return nil, err
	}
	var out []Lock
	for _, l := range all {
		if l.InForce(now) {
			out = append(out, l)
		}
	}
	return out, nil
}

// queryDocs decodes the doc of every row that q selects, in their order.
// q selects each row's key and its doc, or its doc alone; a row that does
// not decode (see decodeDoc) is an error naming it, by its key if q
// selects it. It returns nil when there are none.
func queryDocs[T any](ctx context.Context, s *pgStore, what, q string, args ...any) ([]T, error) {
	var out []T
	err := s.tx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("store: %ss: %w", what, err)
		}
		var key string
		var doc []byte
		dest, keyed := []any{&doc}, len(rows.FieldDescriptions()) == 2
		if keyed {
			dest = []any{&key, &doc}
		}
		_, err = pgx.ForEachRow(rows, dest, func() error {
			var v T
			var err error
			if keyed {
				err = decodeDoc(key, doc, &v)
			} else if err = json.Unmarshal(doc, &v); err == nil && !isObject(doc) {
				err = errors.New("not a JSON object")
			}
			if err != nil {
				if what == "token" {
					key = key[:min(len(key), 12)] // as the audit log names a token
				}
				return fmt.Errorf("store: %s %q: %w", what, key, err)
			}
			out = append(out, v)
			return nil
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (s *pgStore) InstancesOfBot(ctx context.Context, bot string) ([]Instance, error) {
	return queryDocs[Instance](ctx, s, "instance", `SELECT id, doc FROM instances WHERE bot = $1 ORDER BY id`, bot)
}

func (s *pgStore) InstancesOfToken(ctx context.Context, name string) ([]Instance, error) {
	if name == "" {
		return nil, nil // one-time token joins have no token name
	}
	return queryDocs[Instance](ctx, s, "instance", `SELECT id, doc FROM instances WHERE token_name = $1 ORDER BY id`, name)
}

func (s *pgStore) Instances(ctx context.Context) ([]Instance, error) {
	out, err := queryDocs[Instance](ctx, s, "instance", `SELECT id, doc FROM instances ORDER BY id`)
	if out == nil && err == nil {
		out = []Instance{}
	}
	return out, err
}

func (s *pgStore) Tokens(ctx context.Context) ([]Token, error) {
	out, err := queryDocs[Token](ctx, s, "token", `SELECT hash, doc FROM tokens ORDER BY hash`)
	if out == nil && err == nil {
		out = []Token{}
	}
	return out, err
}

func (s *pgStore) DeleteToken(ctx context.Context, hash string) error {
	return s.tx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM tokens WHERE hash = $1`, hash)
		if err != nil {
			return fmt.Errorf("store: delete token: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("store: delete token: %w", ErrTokenUnknown)
		}
		return nil
	})
}

// pgPrune removes up to maxPrune rows of table (used or challenges) whose
// expiry is at or before now, and returns how many it removed. Rows
// another transaction is removing are skipped rather than waited for:
// that transaction removes them.
func pgPrune(ctx context.Context, tx pgx.Tx, table string, now time.Time) (int, error) {
	tag, err := tx.Exec(ctx, `DELETE FROM `+table+` WHERE key IN (
		SELECT key FROM `+table+` WHERE expires <= $1 ORDER BY expires LIMIT $2 FOR UPDATE SKIP LOCKED)`,
		unixNanos(now), maxPrune)
	return int(tag.RowsAffected()), err
}

func (s *pgStore) MarkUsed(ctx context.Context, key, owner string, expires, now time.Time) error {
	return s.tx(ctx, func(tx pgx.Tx) error { return pgMarkUsed(ctx, tx, key, owner, expires, now) })
}

// pgMarkUsed is MarkUsed in the transaction tx. The INSERT comes first:
// of two transactions recording the same new key, it makes the second
// wait for the first and then find its row.
func pgMarkUsed(ctx context.Context, tx pgx.Tx, key, owner string, expires, now time.Time) error {
	if _, err := pgPrune(ctx, tx, "used", now); err != nil {
		return fmt.Errorf("store: prune used keys: %w", err)
	}
	tag, err := tx.Exec(ctx, `INSERT INTO used (key, owner, expires) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
		key, owner, unixNanos(expires))
	if err != nil {
		return fmt.Errorf("store: mark used: %w", err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	var oldOwner string
	var oldExpires int64
	err = tx.QueryRow(ctx, `SELECT owner, expires FROM used WHERE key = $1 FOR UPDATE`, key).Scan(&oldOwner, &oldExpires)
	if err != nil {
		return fmt.Errorf("store: mark used: %w", err)
	}
	if until := time.Unix(0, oldExpires).UTC(); now.Before(until) {
		if owner != "" && oldOwner == owner {
			return nil // the same instance again; the record stands
		}
		return fmt.Errorf("store: key used before, recorded until %s: %w", until.Format(time.RFC3339), ErrReplay)
	}
	if _, err := tx.Exec(ctx, `UPDATE used SET owner = $2, expires = $3 WHERE key = $1`, key, owner, unixNanos(expires)); err != nil {
		return fmt.Errorf("store: mark used: %w", err)
	}
	return nil
}

func (s *pgStore) PutChallenge(ctx context.Context, challenge, tokenName string, expires, now time.Time) error {
	return s.tx(ctx, func(tx pgx.Tx) error {
		if _, err := pgPrune(ctx, tx, "challenges", now); err != nil {
			return fmt.Errorf("store: prune challenges: %w", err)
		}
		tag, err := tx.Exec(ctx, `INSERT INTO challenges (key, token_name, expires) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
			challengeKey(challenge), tokenName, unixNanos(expires))
		if err != nil {
			return fmt.Errorf("store: put challenge for token %q: %w", tokenName, err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("store: put challenge for token %q: %w", tokenName, ErrExists)
		}
		return nil
	})
}

func (s *pgStore) ConsumeChallenge(ctx context.Context, challenge string, now time.Time) (string, error) {
	var name string
	var expires int64
	err := s.tx(ctx, func(tx pgx.Tx) error {
		// Removed whether or not it has expired: it is of no further use.
		err := tx.QueryRow(ctx, `DELETE FROM challenges WHERE key = $1 RETURNING token_name, expires`,
			challengeKey(challenge)).Scan(&name, &expires)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("store: consume challenge: %w", ErrChallengeUnknown)
		}
		if err != nil {
			return fmt.Errorf("store: consume challenge: %w", err)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	if until := time.Unix(0, expires).UTC(); !now.Before(until) {
		return "", fmt.Errorf("store: challenge for token %q expired at %s: %w", name, until.Format(time.RFC3339), ErrChallengeUnknown)
	}
	return name, nil
}

func (s *pgStore) PutNode(ctx context.Context, n Node) error {
	return s.tx(ctx, func(tx pgx.Tx) error { return pgPutNode(ctx, tx, n) })
}

// pgPutNode is PutNode in the transaction tx.
func pgPutNode(ctx context.Context, tx pgx.Tx, n Node) error {
	doc, err := json.Marshal(n)
	if err != nil {
		return fmt.Errorf("store: put node %s: %w", n.Instance, err)
	}
	// The names are compared as their JSON; no names at all is one value
	// whether the slice is nil or empty, as slices.Equal has it.
	names := []byte("[]")
	if len(n.Names) > 0 {
		if names, err = json.Marshal(n.Names); err != nil {
			return fmt.Errorf("store: put node %s: %w", n.Instance, err)
		}
	}
	_, err = tx.Exec(ctx, `DELETE FROM nodes WHERE renewed < $1 OR (instance <> $2 AND bot = $3 AND names = $4)`,
		unixNanos(n.Renewed.Add(-NodeRetention)), n.Instance, n.Bot, string(names))
	if err != nil {
		return fmt.Errorf("store: put node %s: %w", n.Instance, err)
	}
	_, err = tx.Exec(ctx, `INSERT INTO nodes (instance, bot, names, renewed, doc) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (instance) DO UPDATE SET bot = EXCLUDED.bot, names = EXCLUDED.names, renewed = EXCLUDED.renewed, doc = EXCLUDED.doc`,
		n.Instance, n.Bot, string(names), unixNanos(n.Renewed), doc)
	if err != nil {
		return fmt.Errorf("store: put node %s: %w", n.Instance, err)
	}
	return nil
}

func (s *pgStore) Nodes(ctx context.Context) ([]Node, error) {
	out, err := queryDocs[Node](ctx, s, "node", `SELECT instance, doc FROM nodes ORDER BY instance`)
	if out == nil && err == nil {
		out = []Node{}
	}
	return out, err
}

func (s *pgStore) PutResources(ctx context.Context, rs []Resource, replace bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	for _, r := range rs {
		if err := checkResourceKey(r.Kind, r.Name); err != nil {
			return err
		}
	}
	// One transaction: an existing name rolls back the documents already
	// put.
	return s.tx(ctx, func(tx pgx.Tx) error {
		for _, r := range rs {
			doc, err := json.Marshal(r)
			if err != nil {
				return fmt.Errorf("store: put resource %s: %w", r.Key(), err)
			}
			q := `INSERT INTO resources (key, doc) VALUES ($1, $2) ON CONFLICT DO NOTHING`
			if replace {
				q = `INSERT INTO resources (key, doc) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET doc = EXCLUDED.doc`
			}
			tag, err := tx.Exec(ctx, q, r.Key(), doc)
			if err != nil {
				return fmt.Errorf("store: put resource %s: %w", r.Key(), err)
			}
			if tag.RowsAffected() == 0 {
				return fmt.Errorf("store: put resource %s: %w", r.Key(), ErrExists)
			}
		}
		return pgBump(ctx, tx)
	})
}

func (s *pgStore) DeleteResource(ctx context.Context, kind, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkResourceKey(kind, name); err != nil {
		return err
	}
	key := kind + "/" + name
	return s.tx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM resources WHERE key = $1`, key)
		if err != nil {
			return fmt.Errorf("store: delete resource %s: %w", key, err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("store: delete resource %s: %w", key, ErrResourceUnknown)
		}
		return pgBump(ctx, tx)
	})
}

func (s *pgStore) Resources(ctx context.Context) ([]Resource, error) {
	out, err := queryDocs[Resource](ctx, s, "resource", `SELECT key, doc FROM resources ORDER BY key`)
	if out == nil && err == nil {
		out = []Resource{}
	}
	return out, err
}

// pgBump counts a write of resources or locks in the transaction tx that
// makes it; see Store.Changes. Its row is the last one a writer locks, so
// writers that lock other rows first do so in one order.
func pgBump(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, `UPDATE changes SET count = count + 1 WHERE id = 0`)
	return err
}

// Changes also measures the database's clock (see pgClock): issuers poll
// it every second.
func (s *pgStore) Changes(ctx context.Context) (uint64, error) {
	var n int64
	var db time.Time
	sent := time.Now()
	if err := s.pool.QueryRow(ctx, `SELECT count, clock_timestamp() FROM changes WHERE id = 0`).Scan(&n, &db); err != nil {
		return 0, fmt.Errorf("store: changes: %w", unreachable(ctx, err))
	}
	s.clock.record(db, sent, time.Now())
	return uint64(n), nil
}

func (s *pgStore) Close() error {
	s.pool.Close()
	return nil
}
