package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/mwi-project/mwi/api"
)

// TestSeed checks that instances written in bulk read back as joined ones
// do, that they renew, and that seeding an instance ID twice fails.
func TestSeed(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store, location string) {
		// Seed writes to the location itself; bbolt allows one opener.
		s.Close()
		ctx := context.Background()
		created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		var want []Instance
		for i := range seedBatch + 3 { // more than one batch
			want = append(want, Instance{ID: fmt.Sprintf("i%06d", i), Bot: "load", Generation: 1, Created: created, JoinMethod: api.JoinMethodToken})
		}
		n, err := Seed(ctx, location, slices.Values(want))
		if err != nil || n != len(want) {
			t.Fatalf("Seed = %d, %v; want %d, nil", n, err, len(want))
		}
		if _, err := Seed(ctx, location, slices.Values(want[:1])); err == nil {
			t.Fatal("seeding an existing instance again succeeded")
		}
		s, err = Open(location)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		for _, w := range []Instance{want[0], want[len(want)-1]} {
			got, err := s.Instance(ctx, w.ID)
			if err != nil || !got.Created.Equal(w.Created) || got.Bot != w.Bot || got.Generation != 1 {
				t.Errorf("Instance(%s) = %+v, %v; want %+v", w.ID, got, err, w)
			}
		}
		in, err := s.AdvanceGeneration(ctx, want[1].ID, 1, "k", created.Add(time.Hour))
		if err != nil || in.Generation != 2 {
			t.Errorf("AdvanceGeneration of a seeded instance = %+v, %v; want generation 2", in, err)
		}
		if _, err := Seed(ctx, "etcd://x", slices.Values(want[:1])); err == nil || errors.Is(err, ErrExists) {
			t.Errorf("Seed of an unknown kind of store: %v; want an error naming it", err)
		}
	})
}
