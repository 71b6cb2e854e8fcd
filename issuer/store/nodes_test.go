package store

import (
	"context"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestNodes(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, path string) {

		if got, err := s.Nodes(ctx); err != nil || len(got) != 0 || got == nil {
			t.Fatalf("Nodes of a new store = %#v, %v; want an empty list", got, err)
		}
		a := Node{Instance: "a1", Bot: "web", Names: []string{"web-01"}, Labels: map[string]string{"env": "prod"},
			Address: "192.0.2.1", Version: "v1.2.0", Renewed: t0}
		b := Node{Instance: "b1", Bot: "db", Names: []string{"db-01", "db-01.example.com"}, Renewed: t0}
		for _, n := range []Node{b, a} {
			if err := s.PutNode(ctx, n); err != nil {
				t.Fatal(err)
			}
		}
		want := []Node{a, b}
		if got, err := s.Nodes(ctx); err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("Nodes = %+v, %v\nwant %+v", got, err, want)
		}

		steps := []struct {
			name string
			put  Node
			want []Node
		}{
			{
				// A renewal replaces the record of its instance.
				name: "renewal",
				put:  Node{Instance: "a1", Bot: "web", Names: []string{"web-01"}, Labels: map[string]string{"env": "staging"}, Renewed: t0.Add(time.Hour)},
				want: []Node{
					{Instance: "a1", Bot: "web", Names: []string{"web-01"}, Labels: map[string]string{"env": "staging"}, Renewed: t0.Add(time.Hour)},
					b,
				},
			},
			{
				// The same host joined anew replaces its earlier instance.
				name: "rejoin",
				put:  Node{Instance: "a2", Bot: "web", Names: []string{"web-01"}, Renewed: t0.Add(2 * time.Hour)},
				want: []Node{{Instance: "a2", Bot: "web", Names: []string{"web-01"}, Renewed: t0.Add(2 * time.Hour)}, b},
			},
			{
				// Another host of the same bot is another node.
				name: "other host",
				put:  Node{Instance: "c1", Bot: "web", Names: []string{"web-02"}, Renewed: t0.Add(2 * time.Hour)},
				want: []Node{
					{Instance: "a2", Bot: "web", Names: []string{"web-01"}, Renewed: t0.Add(2 * time.Hour)},
					b,
					{Instance: "c1", Bot: "web", Names: []string{"web-02"}, Renewed: t0.Add(2 * time.Hour)},
				},
			},
			{
				// Nodes gone quiet for longer than NodeRetention leave.
				name: "retention",
				put:  Node{Instance: "c1", Bot: "web", Names: []string{"web-02"}, Renewed: t0.Add(time.Hour + NodeRetention)},
				want: []Node{
					{Instance: "a2", Bot: "web", Names: []string{"web-01"}, Renewed: t0.Add(2 * time.Hour)},
					{Instance: "c1", Bot: "web", Names: []string{"web-02"}, Renewed: t0.Add(time.Hour + NodeRetention)},
				},
			},
			{
				// A host without names is one host whether the list
				// is nil or empty.
				name: "no names",
				put:  Node{Instance: "d1", Bot: "bare", Renewed: t0.Add(time.Hour + NodeRetention)},
				want: []Node{
					{Instance: "a2", Bot: "web", Names: []string{"web-01"}, Renewed: t0.Add(2 * time.Hour)},
					{Instance: "c1", Bot: "web", Names: []string{"web-02"}, Renewed: t0.Add(time.Hour + NodeRetention)},
					{Instance: "d1", Bot: "bare", Renewed: t0.Add(time.Hour + NodeRetention)},
				},
			},
			{
				name: "no names, joined anew",
				put:  Node{Instance: "d2", Bot: "bare", Names: []string{}, Renewed: t0.Add(time.Hour + NodeRetention)},
				want: []Node{
					{Instance: "a2", Bot: "web", Names: []string{"web-01"}, Renewed: t0.Add(2 * time.Hour)},
					{Instance: "c1", Bot: "web", Names: []string{"web-02"}, Renewed: t0.Add(time.Hour + NodeRetention)},
					{Instance: "d2", Bot: "bare", Names: []string{}, Renewed: t0.Add(time.Hour + NodeRetention)},
				},
			},
		}
		for _, st := range steps {
			if err := s.PutNode(ctx, st.put); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			if got, err := s.Nodes(ctx); err != nil || !reflect.DeepEqual(got, st.want) {
				t.Errorf("%s: Nodes = %+v, %v\nwant %+v", st.name, got, err, st.want)
			}
		}

		// The inventory survives a restart.
		s.Close()
		s2, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer s2.Close()
		if got, err := s2.Nodes(ctx); err != nil || len(got) != 3 {
			t.Errorf("after reopening: Nodes = %+v, %v", got, err)
		}

		ctx2, cancel := context.WithCancel(ctx)
		cancel()
		if err := s2.PutNode(ctx2, a); err == nil {
			t.Error("PutNode with a cancelled context succeeded")
		}
		if _, err := s2.Nodes(ctx2); err == nil {
			t.Error("Nodes with a cancelled context succeeded")
		}
	})
}

// TestBoltNodeIndexes checks that bbolt's PutNode finds the records it
// replaces through its indexes, built from an inventory written before
// they existed, and reads no other record: a renewal must cost the same
// in an inventory of any size.
func TestBoltNodeIndexes(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "issuer.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	db := s.(*boltStore).db
	old := Node{Instance: "a1", Bot: "web", Names: []string{"web-01"}, Renewed: t0}
	quiet := Node{Instance: "q1", Bot: "web", Names: []string{"web-09"}, Renewed: t0}
	kept := Node{Instance: "k1", Bot: "db", Names: []string{"db-01"}, Renewed: t0.Add(NodeRetention)}
	// An inventory as an issuer without the indexes wrote it.
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(bucketNodes)
		for _, n := range []Node{old, quiet, kept} {
			if err == nil {
				_, err = put(b, n.Instance, n)
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// The host of a1 joined anew, past the retention of q1.
	a2 := Node{Instance: "a2", Bot: "web", Names: []string{"web-01"}, Renewed: t0.Add(NodeRetention + time.Hour)}
	if err := s.PutNode(ctx, a2); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Nodes(ctx); err != nil || !reflect.DeepEqual(got, []Node{a2, kept}) {
		t.Fatalf("Nodes = %+v, %v\nwant %+v", got, err, []Node{a2, kept})
	}

	// A record PutNode has no reason to read: one it cannot decode does
	// not stop it.
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketNodes).Put([]byte("z1"), []byte("{")) }); err != nil {
		t.Fatal(err)
	}
	a2.Renewed = a2.Renewed.Add(time.Hour)
	if err := s.PutNode(ctx, a2); err != nil {
		t.Fatalf("PutNode read an unrelated record: %v", err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketNodes).Delete([]byte("z1")) }); err != nil {
		t.Fatal(err)
	}

	// Prune keeps the indexes: k1, pruned, leaves nothing for a later
	// PutNode of its host to find, and a2 moved in the renewal index.
	st, err := s.Prune(ctx, t0.Add(2*NodeRetention+time.Minute))
	if err != nil || st.Nodes != 1 {
		t.Fatalf("Prune = %+v, %v; want 1 node removed", st, err)
	}
	k2 := Node{Instance: "k2", Bot: "db", Names: []string{"db-01"}, Renewed: t0.Add(2 * NodeRetention)}
	if err := s.PutNode(ctx, k2); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Nodes(ctx); err != nil || !reflect.DeepEqual(got, []Node{a2, k2}) {
		t.Fatalf("Nodes = %+v, %v\nwant %+v", got, err, []Node{a2, k2})
	}
	err = db.View(func(tx *bolt.Tx) error {
		for name, want := range map[string]int{string(bucketNodesByHost): 2, string(bucketNodesByRenewal): 2} {
			if got := tx.Bucket([]byte(name)).Stats().KeyN; got != want {
				t.Errorf("%s holds %d keys, want %d", name, got, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
