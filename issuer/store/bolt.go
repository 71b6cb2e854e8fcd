package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// lockTimeout bounds how long Open waits for the file lock. bbolt waits
// forever by default, which would make a second issuer on the same file
// hang silently instead of saying what is wrong.
const lockTimeout = time.Second

// batchDelay is how long a join or a renewal waits for others to share
// its commit (bbolt's MaxBatchDelay, 10 ms by default). A commit costs
// two fdatasyncs whatever it holds. Under load the issuer's CPU, not the
// disk, is what runs out, and the requests in flight reach the store
// about one TLS handshake and signature apart (2 ms): a wait of 1 ms
// gathered one renewal per commit, one of 5 ms gathers two or three,
// which costs less CPU per renewal and so answers sooner. 10 ms made
// 8 concurrent renewals without that CPU work slower than committing
// each alone (BenchmarkRenewConcurrent); 5 ms adds at most that to a
// renewal on an idle issuer.
const batchDelay = 5 * time.Millisecond

var (
	bucketTokens    = []byte("tokens")
	bucketInstances = []byte("instances")
	bucketLocks     = []byte("locks") // of bots, by bot name
	// bucketInstanceLocks holds the locks of single instances, by
	// instance ID.
	bucketInstanceLocks = []byte("instance_locks")
	// bucketTokenLocks holds the locks of token resources, by name.
	bucketTokenLocks = []byte("token_locks")
)

// boltStore is the embedded Store. bbolt runs one read-write transaction
// at a time, so doing each check-and-set inside a single Update is what
// makes ConsumeToken and AdvanceGeneration atomic, across goroutines and
// without a lock of our own.
type boltStore struct {
	db   *bolt.DB
	path string
}

// openBolt opens the store in the bbolt file at path, creating the file
// with mode 0600 if it does not exist. Only one process may have the file
// open; if another holds it, openBolt gives up after about a second and
// returns an error naming the path.
func openBolt(path string) (Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: lockTimeout,
		// The list of free pages is not written with each commit: it is
		// derived from the pages in use, and Open rebuilds it from them.
		// What a commit makes durable, and when, is unchanged; it writes
		// and syncs fewer pages, and open pays a scan of the file instead
		// (as it already does after Seed, which writes without the list).
		NoFreelistSync: true,
		// The hashmap freelist finds a run of free pages without scanning
		// all of them, which the default array does in every commit that
		// allocates; the difference grows with the file.
		FreelistType: bolt.FreelistMapType,
	})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("store: %s is locked by another process (is another issuer running on it?): %w", path, err)
		}
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	db.MaxBatchDelay = batchDelay
	// bbolt sets the mode only when it creates the file; the store holds
	// token hashes and generation counters, so tighten an existing file too.
	if err := os.Chmod(path, 0o600); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: %w", err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketTokens, bucketInstances, bucketLocks, bucketInstanceLocks, bucketTokenLocks,
			bucketUsed, bucketUsedExpiry, bucketChallenges, bucketChallengesExpiry} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("store: init %s: %w", path, err)
	}
	return &boltStore{db: db, path: path}, nil
}

func (s *boltStore) PutToken(ctx context.Context, t Token) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTokens)
		if b.Get([]byte(t.Hash)) != nil {
			return fmt.Errorf("store: put token for bot %q: %w", t.Bot, ErrExists)
		}
		if _, err := put(b, t.Hash, t); err != nil {
			return fmt.Errorf("store: put token for bot %q: %w", t.Bot, err)
		}
		return nil
	})
}

func (s *boltStore) ConsumeToken(ctx context.Context, hash, instance string, now time.Time) (Token, error) {
	if err := ctx.Err(); err != nil {
		return Token{}, err
	}
	var out Token
	err := s.db.Update(func(tx *bolt.Tx) error {
		t, err := boltUsableToken(tx, hash, now)
		if err != nil {
			return err
		}
		out, err = boltConsume(tx, t, instance, now)
		return err
	})
	if err != nil {
		return Token{}, err
	}
	return out, nil
}

// boltUsableToken returns the token with the given hash, or the error
// ConsumeToken returns for it, as read in tx.
func boltUsableToken(tx *bolt.Tx, hash string, now time.Time) (Token, error) {
	var t Token
	found, err := get(tx.Bucket(bucketTokens), hash, &t)
	return consumable(t, found, err, now)
}

// consumable returns t, read as found with err, or the error ConsumeToken
// returns for it at now: both stores read a token their own way, and
// judge it the same.
func consumable(t Token, found bool, err error, now time.Time) (Token, error) {
	if err != nil {
		return Token{}, fmt.Errorf("store: consume token: %w", err)
	}
	if !found {
		return Token{}, fmt.Errorf("store: consume token: %w", ErrTokenUnknown)
	}
	if err := usable(t, now); err != nil {
		return Token{}, err
	}
	return t, nil
}

// boltConsume marks t used by instance at now, in tx, and returns it as
// stored.
func boltConsume(tx *bolt.Tx, t Token, instance string, now time.Time) (Token, error) {
	t.ConsumedAt = now
	t.ConsumedBy = instance
	stored, err := put(tx.Bucket(bucketTokens), t.Hash, t)
	if err != nil {
		return Token{}, fmt.Errorf("store: consume token for bot %q: %w", t.Bot, err)
	}
	var out Token
	return out, json.Unmarshal(stored, &out)
}

func (s *boltStore) Token(ctx context.Context, hash string, now time.Time) (Token, error) {
	if err := ctx.Err(); err != nil {
		return Token{}, err
	}
	var t Token
	err := s.db.View(func(tx *bolt.Tx) error {
		found, err := get(tx.Bucket(bucketTokens), hash, &t)
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

// usable reports why t cannot be used at now, if it cannot.
func usable(t Token, now time.Time) error {
	// Used wins over expired so that a replayed token is reported as a
	// replay however late it comes back.
	if !t.ConsumedAt.IsZero() {
		return fmt.Errorf("store: token for bot %q used by instance %q at %s: %w",
			t.Bot, t.ConsumedBy, t.ConsumedAt.Format(time.RFC3339), ErrTokenUsed)
	}
	if !now.Before(t.Expires) {
		return fmt.Errorf("store: token for bot %q expired at %s: %w",
			t.Bot, t.Expires.Format(time.RFC3339), ErrTokenExpired)
	}
	return nil
}

func (s *boltStore) CreateInstance(ctx context.Context, in Instance) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketInstances)
		if b.Get([]byte(in.ID)) != nil {
			return fmt.Errorf("store: create instance %q: %w", in.ID, ErrExists)
		}
		if _, err := put(b, in.ID, in); err != nil {
			return fmt.Errorf("store: create instance %q: %w", in.ID, err)
		}
		return nil
	})
}

func (s *boltStore) Instance(ctx context.Context, id string) (Instance, error) {
	if err := ctx.Err(); err != nil {
		return Instance{}, err
	}
	var in Instance
	err := s.db.View(func(tx *bolt.Tx) error {
		found, err := get(tx.Bucket(bucketInstances), id, &in)
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

func (s *boltStore) AdvanceGeneration(ctx context.Context, id string, presented uint64, key string, now time.Time) (Instance, error) {
	return s.Renew(ctx, RenewWrite{ID: id, Presented: presented, Key: key, Now: now})
}

// boltAdvance moves the generation of w.ID on in tx, as AdvanceGeneration
// does, and returns the instance. A refusal, ErrInstanceLocked or
// ErrGenerationMismatch, is returned as refused, with the stored instance
// for a mismatch; tx then holds no write of boltAdvance's but the lock
// that w.OnMismatch gives. err is a failure, after which tx must be rolled
// back.
func boltAdvance(tx *bolt.Tx, w RenewWrite) (out Instance, refused, err error) {
	b := tx.Bucket(bucketInstances)
	var in Instance
	found, err := get(b, w.ID, &in)
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
	// The lock is checked in the same transaction that moves the
	// counter, so that no renewal slips between a copy being caught
	// and its instance being locked.
	var l Lock
	if locked, err := get(tx.Bucket(bucketInstanceLocks), w.ID, &l); err != nil {
		return Instance{}, nil, fmt.Errorf("store: lock of instance %q: %w", w.ID, err)
	} else if locked && l.InForce(w.Now) {
		return Instance{}, fmt.Errorf("store: advance instance %q: locked since %s: %s: %w",
			w.ID, l.At.Format(time.RFC3339), l.Reason, ErrInstanceLocked), nil
	}
	if err := boltLocksOf(tx, in.Bot, in.TokenName, w.Now); err != nil {
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
		if err := boltPutLock(tx, bucketInstanceLocks, lock.Instance, *lock); err != nil {
			return Instance{}, nil, err
		}
	}
	if !write {
		return next, refused, nil
	}
	stored, err := put(b, w.ID, next)
	if err != nil {
		return Instance{}, nil, fmt.Errorf("store: advance instance %q: %w", w.ID, err)
	}
	return out, nil, json.Unmarshal(stored, &out)
}

func (s *boltStore) LockBot(ctx context.Context, l Lock) error {
	if err := checkBotLock(l); err != nil {
		return err
	}
	return s.putLock(ctx, bucketLocks, l.Bot, l)
}

func (s *boltStore) LockInstance(ctx context.Context, l Lock) error {
	if err := checkInstanceLock(l); err != nil {
		return err
	}
	return s.putLock(ctx, bucketInstanceLocks, l.Instance, l)
}

func (s *boltStore) LockToken(ctx context.Context, l Lock) error {
	if err := checkTokenLock(l); err != nil {
		return err
	}
	return s.putLock(ctx, bucketTokenLocks, l.Token, l)
}

// putLock records the lock l under key in bucket unless a lock in force
// at l.At is there already. The first lock is kept because its reason and
// time are the ones an operator needs to investigate; later locks add
// nothing. An expired lock is replaced.
func (s *boltStore) putLock(ctx context.Context, bucket []byte, key string, l Lock) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return boltPutLock(tx, bucket, key, l)
	})
}

// boltPutLock is putLock in the transaction tx.
func boltPutLock(tx *bolt.Tx, bucket []byte, key string, l Lock) error {
	b := tx.Bucket(bucket)
	var old Lock
	found, err := get(b, key, &old)
	if err != nil {
		return fmt.Errorf("store: lock %q: %w", key, err)
	}
	if found && old.InForce(l.At) {
		return nil
	}
	if _, err := put(b, key, l); err != nil {
		return fmt.Errorf("store: lock %q: %w", key, err)
	}
	return boltBump(tx)
}

func (s *boltStore) UnlockBot(ctx context.Context, bot string) (Lock, bool, error) {
	return s.unlock(ctx, bucketLocks, bot)
}

func (s *boltStore) UnlockInstance(ctx context.Context, id string) (Lock, bool, error) {
	return s.unlock(ctx, bucketInstanceLocks, id)
}

func (s *boltStore) UnlockToken(ctx context.Context, name string) (Lock, bool, error) {
	return s.unlock(ctx, bucketTokenLocks, name)
}

// unlock removes the lock under key in bucket and returns it, or returns
// false if there was none.
func (s *boltStore) unlock(ctx context.Context, bucket []byte, key string) (Lock, bool, error) {
	if err := ctx.Err(); err != nil {
		return Lock{}, false, err
	}
	var l Lock
	var found bool
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		var err error
		if found, err = get(b, key, &l); err != nil || !found {
			if err != nil {
				return fmt.Errorf("store: unlock %q: %w", key, err)
			}
			return nil
		}
		if err := b.Delete([]byte(key)); err != nil {
			return fmt.Errorf("store: unlock %q: %w", key, err)
		}
		return boltBump(tx)
	})
	if err != nil || !found {
		return Lock{}, false, err
	}
	return l, true, nil
}

func (s *boltStore) BotLock(ctx context.Context, bot string, now time.Time) (Lock, bool, error) {
	return s.lock(ctx, bucketLocks, bot, now)
}

func (s *boltStore) InstanceLock(ctx context.Context, id string, now time.Time) (Lock, bool, error) {
	return s.lock(ctx, bucketInstanceLocks, id, now)
}

func (s *boltStore) TokenLock(ctx context.Context, name string, now time.Time) (Lock, bool, error) {
	return s.lock(ctx, bucketTokenLocks, name, now)
}

func (s *boltStore) Locks(ctx context.Context, now time.Time) ([]Lock, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []Lock
	err := s.db.View(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketLocks, bucketInstanceLocks, bucketTokenLocks} {
			err := tx.Bucket(name).ForEach(func(k, v []byte) error {
				var l Lock
				if err := json.Unmarshal(v, &l); err != nil {
					return fmt.Errorf("store: lock %q: decode: %w", k, err)
				}
				if l.InForce(now) {
					out = append(out, l)
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// lock returns the lock under key in bucket, and whether there is one in
// force at now.
func (s *boltStore) lock(ctx context.Context, bucket []byte, key string, now time.Time) (Lock, bool, error) {
	if err := ctx.Err(); err != nil {
		return Lock{}, false, err
	}
	var l Lock
	var found bool
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		found, err = get(tx.Bucket(bucket), key, &l)
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

func (s *boltStore) InstancesOfBot(ctx context.Context, bot string) ([]Instance, error) {
	return s.instances(ctx, func(in Instance) bool { return in.Bot == bot })
}

func (s *boltStore) InstancesOfToken(ctx context.Context, name string) ([]Instance, error) {
	if name == "" {
		return nil, nil // one-time token joins have no token name
	}
	return s.instances(ctx, func(in Instance) bool { return in.TokenName == name })
}

// instances returns the instances that keep selects. It reads and decodes
// every instance record, in one read transaction: a cost in the number of
// instances ever made, paid only when the KRL is rebuilt.
func (s *boltStore) instances(ctx context.Context, keep func(Instance) bool) ([]Instance, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []Instance
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketInstances).ForEach(func(k, v []byte) error {
			var in Instance
			if err := json.Unmarshal(v, &in); err != nil {
				return fmt.Errorf("store: instance %q: decode: %w", k, err)
			}
			if keep(in) {
				out = append(out, in)
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// bucketChanges holds the count of Store.Changes under changeKey. Like
// bucketResources, it is made by the first write it counts.
var (
	bucketChanges = []byte("changes")
	changeKey     = []byte("count")
)

// boltBump counts a write of resources or locks in the transaction tx
// that makes it; see Store.Changes.
func boltBump(tx *bolt.Tx) error {
	b, err := tx.CreateBucketIfNotExists(bucketChanges)
	if err != nil {
		return fmt.Errorf("store: count a change: %w", err)
	}
	var n uint64
	if v := b.Get(changeKey); len(v) == 8 {
		n = binary.BigEndian.Uint64(v)
	}
	return b.Put(changeKey, binary.BigEndian.AppendUint64(nil, n+1))
}

func (s *boltStore) Changes(ctx context.Context) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	var n uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketChanges); b != nil {
			if v := b.Get(changeKey); len(v) == 8 {
				n = binary.BigEndian.Uint64(v)
			}
		}
		return nil
	})
	return n, err
}

func (s *boltStore) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store: close %s: %w", s.path, err)
	}
	return nil
}

// get decodes the value under key into v and reports whether there was one.
func get(b *bolt.Bucket, key string, v any) (bool, error) {
	data := b.Get([]byte(key))
	if data == nil {
		return false, nil
	}
	if err := decodeDoc(key, data, v); err != nil {
		return true, err
	}
	return true, nil
}

// put encodes v under key and returns the encoding, so that callers can hand
// back exactly what a later read will see: JSON drops the monotonic clock
// and the zone name from times.
func put(b *bolt.Bucket, key string, v any) ([]byte, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	if err := b.Put([]byte(key), data); err != nil {
		return nil, err
	}
	return data, nil
}
