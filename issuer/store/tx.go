package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Replay is an attestation that a join records as used, as MarkUsed
// records it: Key by Owner, until Expires.
type Replay struct {
	Key     string
	Owner   string
	Expires time.Time
}

// JoinWrite is everything a join writes. Store.Join writes it in one
// transaction: all of it, or, with any error, none of it (but see
// RenewWrite.OnMismatch). The transaction also checks the locks of the
// instance's bot and token resource, as the caller did before it: a lock
// recorded in between refuses the join with ErrBotLocked or
// ErrTokenLocked.
type JoinWrite struct {
	// Now is when the join happens: the time the token is consumed at,
	// the replay record and the locks are checked at.
	Now time.Time
	// TokenHash, if not empty, is the one-time token the join consumes,
	// for the new instance. It must be usable at Now, or Join fails with
	// the error ConsumeToken would return.
	TokenHash string
	// Replay, if its Key is not empty, is recorded as MarkUsed records it;
	// Join fails with ErrReplay where MarkUsed would.
	Replay Replay
	// Instance is the instance the join makes; Join fails with ErrExists
	// if its ID is taken. It is not used when Keep is set.
	Instance Instance
	// Keep, if not nil, is the caller's instance, which the join keeps
	// instead of making one: its generation moves on as Renew moves it,
	// with Keep.Node and Keep.Now unused (Node and Now above apply).
	Keep *RenewWrite
	// Node, if not nil, is put in the inventory as PutNode puts it.
	Node *Node
}

// RenewWrite is everything a renewal writes. Store.Renew writes it in one
// transaction, which checks the locks of the instance, its bot and its
// token resource (ErrInstanceLocked, ErrBotLocked, ErrTokenLocked).
type RenewWrite struct {
	// ID is the instance renewed, Presented the generation its identity
	// carries and Key the identity key issued for the next one, as
	// AdvanceGeneration takes them.
	ID        string
	Presented uint64
	Key       string
	// Now is when the renewal happens.
	Now time.Time
	// Check, if not nil, is given the stored instance first, with its row
	// held, before anything else is checked; an error it returns refuses
	// the renewal as it is, and nothing is written. It lets a caller check
	// what the instance must be (its bot, its join method) without reading
	// it in a transaction of its own. It may be called more than once.
	Check func(stored Instance) error
	// OnMismatch, if not nil, gives the lock put on the instance when the
	// generation presented is stale, from the stored instance. The lock,
	// and what else the same transaction wrote (a join's replay record),
	// is committed with the refusal: the copy is caught for good.
	OnMismatch func(stored Instance) Lock
	// Node, if not nil, is put in the inventory as PutNode puts it.
	Node *Node
}

// refusal reports whether err is one of the Store's refusals, such as a
// token already used, rather than a failure to read or write.
func refusal(err error) bool {
	for _, r := range []error{ErrTokenUnknown, ErrTokenUsed, ErrTokenExpired, ErrReplay,
		ErrInstanceUnknown, ErrInstanceLocked, ErrBotLocked, ErrTokenLocked, ErrGenerationMismatch, ErrExists} {
		if errors.Is(err, r) {
			return true
		}
	}
	return false
}

// Join and Renew on bbolt run in db.Batch, so that concurrent joins and
// renewals share one commit and its fdatasyncs rather than taking turns
// at bbolt's single writer. Batch may call a function more than once: when
// another function of the batch fails, it rolls the whole batch back,
// runs the others again without it, and then the failed one alone. So
// each function starts afresh every time it runs (its results are set,
// never added to), returns a refusal through a variable rather than as
// its error (an error would roll back the batch and run it again), and
// writes only once every check has passed, so that a refusal has nothing
// to roll back. w.OnMismatch may likewise be called more than once.

func (s *boltStore) Join(ctx context.Context, w JoinWrite) (Instance, error) {
	if err := ctx.Err(); err != nil {
		return Instance{}, err
	}
	var out Instance
	var refused error
	err := s.db.Batch(func(tx *bolt.Tx) error {
		var err error
		out, refused, err = boltJoin(tx, w)
		return err
	})
	if err != nil {
		return Instance{}, err
	}
	return out, refused
}

// boltJoin writes w in tx. It returns a refusal as refused, having
// written nothing but what JoinWrite says a refusal writes, and a failure
// as err, after which tx must be rolled back.
func boltJoin(tx *bolt.Tx, w JoinWrite) (out Instance, refused, err error) {
	split := func(err error) (Instance, error, error) {
		if refusal(err) {
			return Instance{}, err, nil
		}
		return Instance{}, nil, err
	}
	var tok Token
	if w.TokenHash != "" {
		if tok, err = boltUsableToken(tx, w.TokenHash, w.Now); err != nil {
			return split(err)
		}
	}
	if w.Replay.Key != "" {
		if err := boltReplayCheck(tx, w.Replay.Key, w.Replay.Owner, w.Now); err != nil {
			return split(err)
		}
	}
	in := w.Instance
	if w.Keep != nil {
		keep := *w.Keep
		keep.Now, keep.Node = w.Now, nil
		if in, refused, err = boltAdvance(tx, keep); err != nil {
			return Instance{}, nil, err
		}
		if refused != nil && !errors.Is(refused, ErrGenerationMismatch) {
			return Instance{}, refused, nil
		}
	} else if tx.Bucket(bucketInstances).Get([]byte(in.ID)) != nil {
		return Instance{}, fmt.Errorf("store: create instance %q: %w", in.ID, ErrExists), nil
	} else if err := boltLocksOf(tx, in.Bot, in.TokenName, w.Now); err != nil {
		return split(err)
	}
	// Every check has passed, but for a stale generation, which keeps
	// the replay record with the lock.
	if w.Replay.Key != "" {
		if err := boltMarkUsed(tx, w.Replay.Key, w.Replay.Owner, w.Replay.Expires, w.Now); err != nil {
			return Instance{}, nil, err
		}
	}
	if refused != nil {
		return in, refused, nil
	}
	if w.Keep == nil {
		stored, err := put(tx.Bucket(bucketInstances), in.ID, in)
		if err != nil {
			return Instance{}, nil, fmt.Errorf("store: create instance %q: %w", in.ID, err)
		}
		in = Instance{}
		if err := json.Unmarshal(stored, &in); err != nil {
			return Instance{}, nil, err
		}
	}
	if w.TokenHash != "" {
		if _, err := boltConsume(tx, tok, in.ID, w.Now); err != nil {
			return Instance{}, nil, err
		}
	}
	if w.Node != nil {
		if err := boltPutNode(tx, *w.Node); err != nil {
			return Instance{}, nil, err
		}
	}
	return in, nil, nil
}

func (s *boltStore) Renew(ctx context.Context, w RenewWrite) (Instance, error) {
	if err := ctx.Err(); err != nil {
		return Instance{}, err
	}
	var out Instance
	var refused error
	err := s.db.Batch(func(tx *bolt.Tx) error {
		out, refused = Instance{}, nil
		var err error
		if out, refused, err = boltAdvance(tx, w); err != nil || refused != nil {
			return err
		}
		if w.Node != nil {
			return boltPutNode(tx, *w.Node)
		}
		return nil
	})
	if err != nil {
		return Instance{}, err
	}
	return out, refused
}

// boltLocksOf returns ErrBotLocked or ErrTokenLocked if a lock of bot or
// of the token resource token (if not empty) is in force at now, as read
// in tx.
func boltLocksOf(tx *bolt.Tx, bot, token string, now time.Time) error {
	for _, c := range []struct {
		bucket []byte
		key    string
		err    error
	}{{bucketLocks, bot, ErrBotLocked}, {bucketTokenLocks, token, ErrTokenLocked}} {
		if c.key == "" {
			continue
		}
		var l Lock
		if locked, err := get(tx.Bucket(c.bucket), c.key, &l); err != nil {
			return fmt.Errorf("store: lock %q: %w", c.key, err)
		} else if locked && l.InForce(now) {
			return fmt.Errorf("store: %q locked since %s: %s: %w", c.key, l.At.Format(time.RFC3339), l.Reason, c.err)
		}
	}
	return nil
}

// Now is the local clock: one issuer has the bbolt file.
func (s *boltStore) Now(ctx context.Context) (time.Time, error) {
	return time.Now(), ctx.Err()
}

// nextGeneration decides the renewal w of in, the stored instance, once
// its locks have been checked, by the rule AdvanceGeneration documents,
// so that both stores apply the one rule. write reports whether next must
// be stored in in's place. A stale generation is refused: refused says
// so, next is in as stored, and lock, if not nil, is the lock that
// w.OnMismatch gives, to be stored with the refusal.
func nextGeneration(in Instance, w RenewWrite) (next Instance, write bool, lock *Lock, refused, err error) {
	if in.Generation == w.Presented+1 && w.Key != "" && in.IssuedKey == w.Key {
		return in, false, nil, nil, nil // the same request again: issue the same generation
	}
	if in.Generation != w.Presented {
		if w.OnMismatch != nil {
			l := w.OnMismatch(in)
			if err := checkInstanceLock(l); err != nil {
				return Instance{}, false, nil, nil, err
			}
			lock = &l
		}
		return in, false, lock, fmt.Errorf("store: instance %q: presented generation %d, stored generation %d: %w",
			w.ID, w.Presented, in.Generation, ErrGenerationMismatch), nil
	}
	in.Generation++
	in.IssuedKey = w.Key
	in.Renewed = w.Now
	return in, true, nil, nil, nil
}
