package store

import (
	"context"
	"testing"
	"time"
)

// TestChangesCountResourceAndLockWrites checks that every write of
// resources or locks moves Changes, as seen through another Store on the
// same data, and that joins and renewals do not.
func TestChangesCountResourceAndLockWrites(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, location string) {
		// A second Store on the same data, as another issuer has. bbolt
		// holds its file exclusively, so it reads through s.
		other := s
		if location[0] != '/' {
			o, err := Open(location)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { o.Close() })
			other = o
		}
		last, err := other.Changes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		res := Resource{Kind: "role", Name: "r", Source: "kind: role\n", Updated: t0}
		steps := []struct {
			name  string
			write func() error
			moves bool
		}{
			{"put resources", func() error { return s.PutResources(ctx, []Resource{res}, false) }, true},
			{"replace resources", func() error { return s.PutResources(ctx, []Resource{res}, true) }, true},
			{"delete resource", func() error { return s.DeleteResource(ctx, "role", "r") }, true},
			{"lock bot", func() error { return s.LockBot(ctx, Lock{Bot: "b", Reason: "r", At: t0}) }, true},
			{"unlock bot", func() error { _, _, err := s.UnlockBot(ctx, "b"); return err }, true},
			{"lock instance", func() error { return s.LockInstance(ctx, Lock{Bot: "b", Instance: "i", Reason: "r", At: t0}) }, true},
			{"unlock instance", func() error { _, _, err := s.UnlockInstance(ctx, "i"); return err }, true},
			{"lock token", func() error { return s.LockToken(ctx, Lock{Token: "t", Reason: "r", At: t0}) }, true},
			{"unlock token", func() error { _, _, err := s.UnlockToken(ctx, "t"); return err }, true},
			{"put token", func() error { return s.PutToken(ctx, token("h", t0.Add(time.Hour))) }, false},
			{"consume token", func() error { _, err := s.ConsumeToken(ctx, "h", "i", t0); return err }, false},
			{"create instance", func() error { return s.CreateInstance(ctx, Instance{ID: "i", Bot: "b", Created: t0}) }, false},
			{"advance generation", func() error { _, err := s.AdvanceGeneration(ctx, "i", 0, "k", t0); return err }, false},
		}
		for _, st := range steps {
			if err := st.write(); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			n, err := other.Changes(ctx)
			if err != nil {
				t.Fatalf("%s: Changes: %v", st.name, err)
			}
			if moved := n > last; moved != st.moves || n < last {
				t.Errorf("after %s: Changes went from %d to %d; want it to move: %v", st.name, last, n, st.moves)
			}
			last = n
		}
	})
}

// TestChangesUnmovedByRefusedWrites checks that a write that fails, and
// so changes nothing, is not counted: its transaction rolls the count
// back with it.
func TestChangesUnmovedByRefusedWrites(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, _ string) {
		res := Resource{Kind: "role", Name: "r", Source: "kind: role\n", Updated: t0}
		if err := s.PutResources(ctx, []Resource{res}, false); err != nil {
			t.Fatal(err)
		}
		before, err := s.Changes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.PutResources(ctx, []Resource{{Kind: "role", Name: "new", Source: "x"}, res}, false); err == nil {
			t.Fatal("PutResources of a held name succeeded")
		}
		if err := s.DeleteResource(ctx, "role", "absent"); err == nil {
			t.Fatal("DeleteResource of an absent name succeeded")
		}
		if after, err := s.Changes(ctx); err != nil || after != before {
			t.Errorf("Changes after refused writes = %d, %v; want %d", after, err, before)
		}
	})
}
