package store

import (
	"context"
	"errors"
	"sync"
	"testing"
)

// TestRotations checks that SetRotation moves a rotation only from the
// phase it is told, that a type without a record is in standby, and that
// every write counts in Changes.
func TestRotations(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, location string) {
		rs, err := s.Rotations(ctx)
		if err != nil || len(rs) != 0 {
			t.Fatalf("Rotations of a new store = %v, %v; want none", rs, err)
		}
		init := Rotation{Type: "ssh_user", Phase: "init", Started: t0, Current: "SHA256:a", Next: "SHA256:b", Admin: "root"}
		if err := s.SetRotation(ctx, init, "init"); !errors.Is(err, ErrRotationConflict) {
			t.Fatalf("SetRotation from init without a record: %v; want ErrRotationConflict", err)
		}
		before, _ := s.Changes(ctx)
		if err := s.SetRotation(ctx, init, RotationStandby); err != nil {
			t.Fatal(err)
		}
		if after, _ := s.Changes(ctx); after <= before {
			t.Errorf("Changes did not move with SetRotation: %d then %d", before, after)
		}
		if err := s.SetRotation(ctx, init, RotationStandby); !errors.Is(err, ErrRotationConflict) {
			t.Fatalf("second SetRotation from standby: %v; want ErrRotationConflict", err)
		}
		upd := init
		upd.Phase, upd.Switched = "update_clients", t0
		if err := s.SetRotation(ctx, upd, "init"); err != nil {
			t.Fatal(err)
		}
		host := Rotation{Type: "ssh_host", Phase: "init", Started: t0, Current: "SHA256:c", Next: "SHA256:d"}
		if err := s.SetRotation(ctx, host, RotationStandby); err != nil {
			t.Fatal(err)
		}
		rs, err = s.Rotations(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) != 2 || rs[0] != host || rs[1] != upd {
			t.Errorf("Rotations = %+v; want %+v, %+v", rs, host, upd)
		}
		if err := s.SetRotation(ctx, Rotation{Type: "", Phase: "init"}, RotationStandby); err == nil {
			t.Error("SetRotation with no type succeeded")
		}
	})
}

// TestRotationConcurrent checks that of admins racing to move one
// rotation from one phase, through different Stores on the same data
// where the store allows it, exactly one wins.
func TestRotationConcurrent(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, location string) {
		stores := []Store{s, s, s, s}
		if location[0] != '/' {
			for i := 1; i < len(stores); i++ {
				o, err := Open(location)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { o.Close() })
				stores[i] = o
			}
		}
		for _, from := range []string{RotationStandby, "init"} {
			to := map[string]string{RotationStandby: "init", "init": "update_clients"}[from]
			var wg sync.WaitGroup
			var mu sync.Mutex
			won := 0
			for _, st := range stores {
				wg.Add(1)
				go func() {
					defer wg.Done()
					err := st.SetRotation(ctx, Rotation{Type: "tls", Phase: to, Started: t0, Current: "x"}, from)
					switch {
					case err == nil:
						mu.Lock()
						won++
						mu.Unlock()
					case !errors.Is(err, ErrRotationConflict):
						t.Errorf("SetRotation: %v", err)
					}
				}()
			}
			wg.Wait()
			if won != 1 {
				t.Errorf("from %s: %d admins won; want exactly 1", from, won)
			}
		}
	})
}
