package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrResourceUnknown is a resource that the store does not hold.
var ErrResourceUnknown = errors.New("resource not in the store")

// bucketResources holds the resource documents created through the admin
// API, by "KIND/NAME". It is made by the first PutResources, so that a
// store file written before it existed opens unchanged.
var bucketResources = []byte("resources")

// Resource is one resource document kept in the store as it was written:
// Source is its YAML text, so that reading it back gives the same bytes.
type Resource struct {
	Kind   string `json:"kind"`
	Name   string `json:"name"`
	Source string `json:"source"`
	// Updated is when the document was last written.
	Updated time.Time `json:"updated"`
}

// Key returns the resource's key in the store: "KIND/NAME".
func (r Resource) Key() string { return r.Kind + "/" + r.Name }

// checkResourceKey refuses a kind or name that would make an ambiguous
// key.
func checkResourceKey(kind, name string) error {
	if kind == "" || name == "" || strings.Contains(kind, "/") || strings.Contains(name, "/") {
		return fmt.Errorf("store: resource key %q: kind and name must be non-empty and without '/'", kind+"/"+name)
	}
	return nil
}

func (s *boltStore) PutResources(ctx context.Context, rs []Resource, replace bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	for _, r := range rs {
		if err := checkResourceKey(r.Kind, r.Name); err != nil {
			return err
		}
	}
	// One transaction: an error returned from it, such as an existing
	// name, rolls back the documents already put.
	return s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketResources)
		if err != nil {
			return fmt.Errorf("store: put resources: %w", err)
		}
		for _, r := range rs {
			if !replace && b.Get([]byte(r.Key())) != nil {
				return fmt.Errorf("store: put resource %s: %w", r.Key(), ErrExists)
			}
			if _, err := put(b, r.Key(), r); err != nil {
				return fmt.Errorf("store: put resource %s: %w", r.Key(), err)
			}
		}
		return boltBump(tx)
	})
}

func (s *boltStore) DeleteResource(ctx context.Context, kind, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkResourceKey(kind, name); err != nil {
		return err
	}
	key := []byte(kind + "/" + name)
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketResources)
		if b == nil || b.Get(key) == nil {
			return fmt.Errorf("store: delete resource %s: %w", key, ErrResourceUnknown)
		}
		if err := b.Delete(key); err != nil {
			return err
		}
		return boltBump(tx)
	})
}

func (s *boltStore) Resources(ctx context.Context) ([]Resource, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := []Resource{}
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketResources)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var r Resource
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("store: resource %q: decode: %w", k, err)
			}
			out = append(out, r)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (s *boltStore) Tokens(ctx context.Context) ([]Token, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := []Token{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTokens).ForEach(func(k, v []byte) error {
			var t Token
			if err := json.Unmarshal(v, &t); err != nil {
				return fmt.Errorf("store: token: decode: %w", err)
			}
			out = append(out, t)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (s *boltStore) DeleteToken(ctx context.Context, hash string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTokens)
		if b.Get([]byte(hash)) == nil {
			return fmt.Errorf("store: delete token: %w", ErrTokenUnknown)
		}
		return b.Delete([]byte(hash))
	})
}

func (s *boltStore) Instances(ctx context.Context) ([]Instance, error) {
	out, err := s.instances(ctx, func(Instance) bool { return true })
	if out == nil && err == nil {
		out = []Instance{}
	}
	return out, err
}
