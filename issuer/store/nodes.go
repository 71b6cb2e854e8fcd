package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// bucketNodes holds the inventory, by instance ID. It is made by the first
// PutNode, so that a store file written before the inventory existed
// opens unchanged.
var bucketNodes = []byte("nodes")

func (s *boltStore) PutNode(ctx context.Context, n Node) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error { return boltPutNode(tx, n) })
}

// boltPutNode is PutNode in the transaction tx.
func boltPutNode(tx *bolt.Tx, n Node) error {
	b, err := tx.CreateBucketIfNotExists(bucketNodes)
	if err != nil {
		return fmt.Errorf("store: put node %s: %w", n.Instance, err)
	}
	cutoff := n.Renewed.Add(-NodeRetention)
	var dead [][]byte
	err = b.ForEach(func(k, v []byte) error {
		var old Node
		if err := json.Unmarshal(v, &old); err != nil {
			return fmt.Errorf("node %q: decode: %w", k, err)
		}
		if old.Renewed.Before(cutoff) || string(k) != n.Instance && old.Bot == n.Bot && slices.Equal(old.Names, n.Names) {
			dead = append(dead, k)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: put node %s: %w", n.Instance, err)
	}
	for _, k := range dead {
		if err := b.Delete(k); err != nil {
			return fmt.Errorf("store: put node %s: %w", n.Instance, err)
		}
	}
	if _, err := put(b, n.Instance, n); err != nil {
		return fmt.Errorf("store: put node %s: %w", n.Instance, err)
	}
	return nil
}

func (s *boltStore) Nodes(ctx context.Context) ([]Node, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := []Node{}
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketNodes)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var n Node
			if err := json.Unmarshal(v, &n); err != nil {
				return fmt.Errorf("store: node %q: decode: %w", k, err)
			}
			out = append(out, n)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
