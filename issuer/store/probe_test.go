package store

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mwi-project/mwi/internal/pgtest"
)

// TestProbe checks that Probe succeeds on a store that takes writes and
// changes nothing the other methods read, on both stores.
func TestProbe(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store, _ string) {
		ctx := context.Background()
		before, err := s.Changes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if err := Probe(ctx, s); err != nil {
				t.Fatalf("Probe: %v", err)
			}
		}
		if after, err := s.Changes(ctx); err != nil || after != before {
			t.Errorf("Changes after Probe = %d, %v; want %d: a probe is no change", after, err, before)
		}
		if _, err := s.Prune(ctx, time.Now()); err != nil {
			t.Errorf("Prune after Probe: %v", err)
		}
	})
}

// TestProbeReadOnly checks that Probe fails, saying why, while the
// PostgreSQL database refuses writes, although it still answers reads,
// and succeeds again once it takes them.
func TestProbeReadOnly(t *testing.T) {
	t.Parallel()
	s, url := openPostgresTemp(t)
	ctx := context.Background()
	if err := pgtest.SetReadOnly(url, true); err != nil {
		t.Fatal(err)
	}
	// The sessions the pool held were ended; the first use of one may say
	// so, and the next connection is read-only.
	var err error
	for range 10 {
		if err = Probe(ctx, s); err != nil && strings.Contains(err.Error(), "read-only") {
			break
		}
	}
	if err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("Probe of a read-only database = %v, want a read-only error", err)
	}
	if _, err := s.Changes(ctx); err != nil {
		t.Fatalf("Changes of a read-only database = %v: reads still work", err)
	}
	if err := pgtest.SetReadOnly(url, false); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if err = Probe(ctx, s); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("Probe once the database takes writes again = %v", err)
	}
}
