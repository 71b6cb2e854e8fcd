package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The replay set and the challenges are kept in two buckets each: the
// records by key, and an index by expiry whose keys are the expiry (8
// bytes, big-endian nanoseconds since the epoch) followed by the record's
// key. A write removes the expired records by walking the index from its
// start, so pruning costs what it removes rather than a scan of the set.
var (
	bucketUsed             = []byte("used")
	bucketUsedExpiry       = []byte("used_by_expiry")
	bucketChallenges       = []byte("challenges")
	bucketChallengesExpiry = []byte("challenges_by_expiry")
)

// maxPrune bounds the records one write removes, so that a write after a
// long quiet spell does not stall; the next writes remove the rest.
const maxPrune = 1024

// expiryBytes encodes t for the expiry index; times before the epoch sort
// first.
func expiryBytes(t time.Time) []byte {
	var b [8]byte
	if n := t.UnixNano(); n > 0 {
		binary.BigEndian.PutUint64(b[:], uint64(n))
	}
	return b[:]
}

func decodeExpiry(b []byte) time.Time {
	return time.Unix(0, int64(binary.BigEndian.Uint64(b[:8]))).UTC()
}

// prune removes up to maxPrune records of main whose expiry in index is at
// or before now, and returns how many it removed.
func prune(main, index *bolt.Bucket, now time.Time) (int, error) {
	limit := expiryBytes(now)
	var dead [][]byte
	c := index.Cursor()
	for k, _ := c.First(); k != nil && len(dead) < maxPrune; k, _ = c.Next() {
		if len(k) < 8 || bytes.Compare(k[:8], limit) > 0 {
			break
		}
		dead = append(dead, k)
	}
	for _, k := range dead {
		if err := index.Delete(k); err != nil {
			return 0, err
		}
		if err := main.Delete(k[8:]); err != nil {
			return 0, err
		}
	}
	return len(dead), nil
}

// putExpiring records key in main until expires, replacing any older record and
// its index entry. The value of main starts with the expiry.
func putExpiring(main, index *bolt.Bucket, key []byte, expires time.Time, extra []byte) error {
	if old := main.Get(key); old != nil && len(old) >= 8 {
		if err := index.Delete(append(append([]byte(nil), old[:8]...), key...)); err != nil {
			return err
		}
	}
	exp := expiryBytes(expires)
	if err := main.Put(key, append(append([]byte(nil), exp...), extra...)); err != nil {
		return err
	}
	return index.Put(append(append([]byte(nil), exp...), key...), nil)
}

func (s *boltStore) MarkUsed(ctx context.Context, key, owner string, expires, now time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		if err := boltReplayCheck(tx, key, owner, now); err != nil {
			return err
		}
		return boltMarkUsed(tx, key, owner, expires, now)
	})
}

// boltReplayCheck prunes the expired replay records in tx and returns
// ErrReplay if MarkUsed would refuse key for owner at now.
func boltReplayCheck(tx *bolt.Tx, key, owner string, now time.Time) error {
	main, index := tx.Bucket(bucketUsed), tx.Bucket(bucketUsedExpiry)
	if _, err := prune(main, index, now); err != nil {
		return fmt.Errorf("store: prune used keys: %w", err)
	}
	if v := main.Get([]byte(key)); len(v) >= 8 && now.Before(decodeExpiry(v)) {
		if owner != "" && string(v[8:]) == owner {
			return nil // the same instance again; the record stands
		}
		return fmt.Errorf("store: key used before, recorded until %s: %w", decodeExpiry(v).Format(time.RFC3339), ErrReplay)
	}
	return nil
}

// boltMarkUsed records key as used by owner until expires, in tx, once
// boltReplayCheck has passed at now. The record of the same owner in
// force at now is kept as it stands.
func boltMarkUsed(tx *bolt.Tx, key, owner string, expires, now time.Time) error {
	main, index := tx.Bucket(bucketUsed), tx.Bucket(bucketUsedExpiry)
	k := []byte(key)
	if v := main.Get(k); len(v) >= 8 && now.Before(decodeExpiry(v)) {
		return nil // boltReplayCheck found it the same owner's
	}
	if err := putExpiring(main, index, k, expires, []byte(owner)); err != nil {
		return fmt.Errorf("store: mark used: %w", err)
	}
	return nil
}

// challengeKey is what a challenge is stored under: its hash, so that the
// store holds nothing a caller could present.
func challengeKey(challenge string) []byte {
	sum := sha256.Sum256([]byte(challenge))
	return sum[:]
}

func (s *boltStore) PutChallenge(ctx context.Context, challenge, tokenName string, expires, now time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		main, index := tx.Bucket(bucketChallenges), tx.Bucket(bucketChallengesExpiry)
		if _, err := prune(main, index, now); err != nil {
			return fmt.Errorf("store: prune challenges: %w", err)
		}
		k := challengeKey(challenge)
		if main.Get(k) != nil {
			return fmt.Errorf("store: put challenge for token %q: %w", tokenName, ErrExists)
		}
		if err := putExpiring(main, index, k, expires, []byte(tokenName)); err != nil {
			return fmt.Errorf("store: put challenge for token %q: %w", tokenName, err)
		}
		return nil
	})
}

func (s *boltStore) ConsumeChallenge(ctx context.Context, challenge string, now time.Time) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	var name string
	var expired error
	err := s.db.Update(func(tx *bolt.Tx) error {
		main, index := tx.Bucket(bucketChallenges), tx.Bucket(bucketChallengesExpiry)
		k := challengeKey(challenge)
		v := main.Get(k)
		if len(v) < 8 {
			return fmt.Errorf("store: consume challenge: %w", ErrChallengeUnknown)
		}
		expires := decodeExpiry(v)
		name = string(v[8:])
		// Removed whether or not it has expired: it is of no further use.
		if err := index.Delete(append(append([]byte(nil), v[:8]...), k...)); err != nil {
			return fmt.Errorf("store: consume challenge: %w", err)
		}
		if err := main.Delete(k); err != nil {
			return fmt.Errorf("store: consume challenge: %w", err)
		}
		if !now.Before(expires) {
			// Not returned from the closure, which would roll back the
			// removal.
			expired = fmt.Errorf("store: challenge for token %q expired at %s: %w", name, expires.Format(time.RFC3339), ErrChallengeUnknown)
		}
		return nil
	})
	if err == nil {
		err = expired
	}
	if err != nil {
		return "", err
	}
	return name, nil
}
