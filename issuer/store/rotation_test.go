package store

import (
	"context"
	"errors"
	"math"
	"sync"
	"testing"
)

// TestRotations checks that SetRotation moves a rotation only from the
// record it is told, that a type without a record is in standby at
// version 0, that each write takes the next version, and that every
// write counts in Changes.
func TestRotations(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, location string) {
		rs, err := s.Rotations(ctx)
		if err != nil || len(rs) != 0 {
			t.Fatalf("Rotations of a new store = %v, %v; want none", rs, err)
		}
		standby := Rotation{Type: "ssh_user", Phase: RotationStandby, Current: "SHA256:a"}
		init := Rotation{Type: "ssh_user", Phase: "init", Started: t0, Current: "SHA256:a", Next: "SHA256:b", Admin: "root"}
		if err := s.SetRotation(ctx, init, init); !errors.Is(err, ErrRotationConflict) {
			t.Fatalf("SetRotation from init without a record: %v; want ErrRotationConflict", err)
		}
		before, _ := s.Changes(ctx)
		if err := s.SetRotation(ctx, init, standby); err != nil {
			t.Fatal(err)
		}
		if after, _ := s.Changes(ctx); after <= before {
			t.Errorf("Changes did not move with SetRotation: %d then %d", before, after)
		}
		if err := s.SetRotation(ctx, init, standby); !errors.Is(err, ErrRotationConflict) {
			t.Fatalf("second SetRotation from standby: %v; want ErrRotationConflict", err)
		}
		init.Version = 1
		upd := init
		upd.Phase, upd.Switched = "update_clients", t0
		if err := s.SetRotation(ctx, upd, init); err != nil {
			t.Fatal(err)
		}
		upd.Version = 2
		host := Rotation{Type: "ssh_host", Phase: "init", Started: t0, Current: "SHA256:c", Next: "SHA256:d"}
		if err := s.SetRotation(ctx, host, Rotation{Type: "ssh_host", Phase: RotationStandby}); err != nil {
			t.Fatal(err)
		}
		host.Version = 1
		rs, err = s.Rotations(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) != 2 || rs[0] != host || rs[1] != upd {
			t.Errorf("Rotations = %+v; want %+v, %+v", rs, host, upd)
		}
		for _, bad := range []struct{ r, from Rotation }{
			{Rotation{Type: "", Phase: "init"}, Rotation{Type: "", Phase: RotationStandby}},
			{Rotation{Type: "tls", Phase: "init"}, Rotation{Type: "tls"}},
			{Rotation{Type: "tls", Phase: "init"}, Rotation{Type: "kube", Phase: RotationStandby}},
		} {
			if err := s.SetRotation(ctx, bad.r, bad.from); err == nil || errors.Is(err, ErrRotationConflict) {
				t.Errorf("SetRotation(%+v, %+v) = %v; want an error naming the bad argument", bad.r, bad.from, err)
			}
		}
	})
}

// TestRotationABA checks that a move decided on a record read before
// another admin took the rotation round to the same phase again (standby,
// init, rollback, standby) is refused: its fingerprints are stale, though
// the phase it expects is the stored one.
func TestRotationABA(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, location string) {
		other := s
		if location[0] != '/' {
			o, err := Open(location)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { o.Close() })
			other = o
		}
		for _, start := range []string{"absent", "stored"} {
			typ := "kube_" + start
			read := Rotation{Type: typ, Phase: RotationStandby, Current: "sha256:a"}
			if start == "stored" {
				// Begin from a stored standby: the round below ends in
				// a record equal to it but for the version.
				r := Rotation{Type: typ, Phase: "init", Started: t0, Current: "sha256:a", Next: "sha256:z"}
				if err := s.SetRotation(ctx, r, read); err != nil {
					t.Fatal(err)
				}
				r.Version = 1
				if err := s.SetRotation(ctx, read, r); err != nil {
					t.Fatal(err)
				}
				read.Version = 2
			}
			// The other admin's round, through another store where the
			// store allows one.
			cur := read
			for _, step := range []Rotation{
				{Type: typ, Phase: "init", Started: t0, Current: "sha256:a", Next: "sha256:b"},
				{Type: typ, Phase: "update_clients", Started: t0, Current: "sha256:a", Next: "sha256:b", Switched: t0},
				{Type: typ, Phase: "update_servers", Started: t0, Current: "sha256:a", Next: "sha256:b", Switched: t0},
				{Type: typ, Phase: RotationStandby, Started: t0, Current: "sha256:b"},
			} {
				if err := other.SetRotation(ctx, step, cur); err != nil {
					t.Fatalf("%s: the other admin's move to %s: %v", start, step.Phase, err)
				}
				step.Version = cur.Version + 1
				cur = step
			}
			// The first admin's move, from its stale read of standby,
			// would start a rotation whose current is the retired
			// authority.
			stale := Rotation{Type: typ, Phase: "init", Started: t0, Current: read.Current, Next: "sha256:c"}
			if err := s.SetRotation(ctx, stale, read); !errors.Is(err, ErrRotationConflict) {
				t.Fatalf("%s: SetRotation from a standby read before a round back to standby: %v; want ErrRotationConflict", start, err)
			}
			rs, err := s.Rotations(ctx)
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, r := range rs {
				if r.Type == typ {
					found = true
					if r != cur {
						t.Errorf("%s: stored after the refusal: %+v; want %+v", start, r, cur)
					}
				}
			}
			if !found {
				t.Errorf("%s: no record of %s stored", start, typ)
			}
			// From the record as it is, the move is stored.
			fresh := stale
			fresh.Current = cur.Current
			if err := s.SetRotation(ctx, fresh, cur); err != nil {
				t.Errorf("%s: SetRotation from the stored record: %v", start, err)
			}
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
		for i, phase := range []string{RotationStandby, "init"} {
			from := Rotation{Type: "tls", Phase: phase, Started: t0, Current: "x", Version: uint64(i)}
			to := map[string]string{RotationStandby: "init", "init": "update_clients"}[phase]
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
				t.Errorf("from %s: %d admins won; want exactly 1", phase, won)
			}
		}
	})
}

// TestRotationVersionOverflow checks that a stored record at the last
// version (only a forged or damaged document gets there) is refused
// rather than written at version 0, which a caller that read the type
// before any record was stored would match.
func TestRotationVersionOverflow(t *testing.T) {
	stored := Rotation{Type: "tls", Phase: RotationStandby, Version: math.MaxUint64}
	r := Rotation{Type: "tls", Phase: "init", Current: "sha256:a", Next: "sha256:b"}
	got, err := casRotation(r, stored, stored)
	if err == nil {
		t.Fatalf("casRotation from version %d stored version %d; want an error", stored.Version, got.Version)
	}
}
