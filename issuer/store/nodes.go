package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// bucketNodes holds the inventory, by instance ID. It is made by the first
// PutNode, so that a store file written before the inventory existed
// opens unchanged.
var bucketNodes = []byte("nodes")

// bucketNodesByHost and bucketNodesByRenewal index bucketNodes, so that
// PutNode finds the records it replaces or drops without reading the
// inventory. The key of bucketNodesByHost is nodeHostKey, its value the
// instance holding that host (PutNode leaves at most one); the key of
// bucketNodesByRenewal is the node's renewal time (expiryBytes) followed
// by its instance ID, its value empty. The first PutNode after an upgrade
// builds them from bucketNodes.
var (
	bucketNodesByHost    = []byte("nodes-host")
	bucketNodesByRenewal = []byte("nodes-renewed")
)

// nodeHostKey is the key of n's host in bucketNodesByHost: its bot, a
// zero byte, and its names as PutNode compares them, whole and in order:
// no names at all is one host whether the slice is nil or empty, as
// slices.Equal has it.
func nodeHostKey(n Node) ([]byte, error) {
	key := append([]byte(n.Bot), 0)
	if len(n.Names) == 0 {
		return append(key, "[]"...), nil
	}
	names, err := json.Marshal(n.Names)
	if err != nil {
		return nil, err
	}
	return append(key, names...), nil
}

// nodeRenewalKey is the key of n in bucketNodesByRenewal.
func nodeRenewalKey(n Node) []byte {
	return append(expiryBytes(n.Renewed), n.Instance...)
}

func (s *boltStore) PutNode(ctx context.Context, n Node) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error { return boltPutNode(tx, n) })
}

// boltPutNode is PutNode in the transaction tx. Through the indexes it
// reads only the records it replaces or removes, so that a host's renewal
// costs the same in an inventory of any size.
func boltPutNode(tx *bolt.Tx, n Node) error {
	b, byHost, byRenewal, err := boltNodeBuckets(tx)
	if err != nil {
		return fmt.Errorf("store: put node %s: %w", n.Instance, err)
	}
	host, err := nodeHostKey(n)
	if err != nil {
		return fmt.Errorf("store: put node %s: %w", n.Instance, err)
	}
	// The earlier instance of the same host, joined anew.
	if id := byHost.Get(host); id != nil && string(id) != n.Instance {
		if err := boltDeleteNode(b, byHost, byRenewal, string(id)); err != nil {
			return fmt.Errorf("store: put node %s: %w", n.Instance, err)
		}
	}
	// Nodes gone quiet for longer than NodeRetention, oldest first; the
	// index ends them at the first one still kept. Deleting while the
	// cursor walks would skip keys, so collect them first.
	limit := expiryBytes(n.Renewed.Add(-NodeRetention))
	var dead [][]byte
	c := byRenewal.Cursor()
	for k, _ := c.First(); k != nil && len(k) >= 8 && bytes.Compare(k[:8], limit) < 0; k, _ = c.Next() {
		dead = append(dead, bytes.Clone(k))
	}
	if err := boltDeleteNodes(b, byHost, byRenewal, dead); err != nil {
		return fmt.Errorf("store: put node %s: %w", n.Instance, err)
	}
	// The record n replaces, whose index entries may differ from n's.
	if err := boltDeleteNode(b, byHost, byRenewal, n.Instance); err != nil {
		return fmt.Errorf("store: put node %s: %w", n.Instance, err)
	}
	if _, err := put(b, n.Instance, n); err != nil {
		return fmt.Errorf("store: put node %s: %w", n.Instance, err)
	}
	if err := byHost.Put(host, []byte(n.Instance)); err != nil {
		return fmt.Errorf("store: put node %s: %w", n.Instance, err)
	}
	if err := byRenewal.Put(nodeRenewalKey(n), nil); err != nil {
		return fmt.Errorf("store: put node %s: %w", n.Instance, err)
	}
	return nil
}

// boltNodeBuckets returns the inventory and its indexes in tx, making them
// if they do not exist, and building the indexes from the inventory if
// they do not: once, in the first PutNode after an upgrade.
func boltNodeBuckets(tx *bolt.Tx) (nodes, byHost, byRenewal *bolt.Bucket, err error) {
	if nodes, byHost, byRenewal = tx.Bucket(bucketNodes), tx.Bucket(bucketNodesByHost), tx.Bucket(bucketNodesByRenewal); nodes != nil && byHost != nil && byRenewal != nil {
		return nodes, byHost, byRenewal, nil
	}
	if nodes, err = tx.CreateBucketIfNotExists(bucketNodes); err != nil {
		return nil, nil, nil, err
	}
	for _, name := range [][]byte{bucketNodesByHost, bucketNodesByRenewal} {
		if tx.Bucket(name) != nil {
			if err := tx.DeleteBucket(name); err != nil {
				return nil, nil, nil, err
			}
		}
	}
	if byHost, err = tx.CreateBucket(bucketNodesByHost); err != nil {
		return nil, nil, nil, err
	}
	if byRenewal, err = tx.CreateBucket(bucketNodesByRenewal); err != nil {
		return nil, nil, nil, err
	}
	err = nodes.ForEach(func(k, v []byte) error {
		var n Node
		if err := json.Unmarshal(v, &n); err != nil {
			return fmt.Errorf("node %q: decode: %w", k, err)
		}
		host, err := nodeHostKey(n)
		if err != nil {
			return err
		}
		// PutNode never left two instances of one host, so the last
		// one seen cannot hide another.
		if err := byHost.Put(host, bytes.Clone(k)); err != nil {
			return err
		}
		return byRenewal.Put(append(expiryBytes(n.Renewed), k...), nil)
	})
	if err != nil {
		return nil, nil, nil, err
	}
	return nodes, byHost, byRenewal, nil
}

// boltDeleteNode removes the record of instance id and its index entries,
// if it exists.
func boltDeleteNode(b, byHost, byRenewal *bolt.Bucket, id string) error {
	v := b.Get([]byte(id))
	if v == nil {
		return nil
	}
	var old Node
	if err := json.Unmarshal(v, &old); err != nil {
		return fmt.Errorf("node %q: decode: %w", id, err)
	}
	host, err := nodeHostKey(old)
	if err != nil {
		return err
	}
	if string(byHost.Get(host)) == id {
		if err := byHost.Delete(host); err != nil {
			return err
		}
	}
	if err := byRenewal.Delete(nodeRenewalKey(old)); err != nil {
		return err
	}
	return b.Delete([]byte(id))
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

// boltDeleteNodes removes the nodes of the bucketNodesByRenewal keys
// keys, and the keys themselves even where the node is gone already.
func boltDeleteNodes(b, byHost, byRenewal *bolt.Bucket, keys [][]byte) error {
	for _, k := range keys {
		if err := boltDeleteNode(b, byHost, byRenewal, string(k[8:])); err != nil {
			return err
		}
		if err := byRenewal.Delete(k); err != nil {
			return err
		}
	}
	return nil
}
