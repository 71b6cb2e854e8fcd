package store

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// BenchmarkRenewConcurrent measures renewals of 8 instances at once, each
// by its own goroutine: the commit path of a busy issuer.
//   - bolt-batched is Renew on bbolt, whose concurrent calls share a
//     commit (db.Batch);
//   - bolt-serial is the same work with a commit of its own each
//     (db.Update), as renewals were committed before;
//   - postgres is Renew on the test server, where transactions commit
//     concurrently and the server groups their WAL flushes itself.
//
// A commit's fdatasyncs dominate the bbolt figures.
func BenchmarkRenewConcurrent(b *testing.B) {
	openBoltB := func(b *testing.B) Store {
		s, err := Open(filepath.Join(b.TempDir(), "issuer.db"))
		if err != nil {
			b.Fatal(err)
		}
		return s
	}
	renew := func(s Store, w RenewWrite) error {
		_, err := s.Renew(context.Background(), w)
		return err
	}
	for _, tc := range []struct {
		name  string
		open  func(b *testing.B) Store
		renew func(s Store, w RenewWrite) error
	}{
		{"bolt-batched", openBoltB, renew},
		{"bolt-serial", openBoltB, func(s Store, w RenewWrite) error {
			return s.(*boltStore).db.Update(func(tx *bolt.Tx) error {
				_, refused, err := boltAdvance(tx, w)
				if err == nil {
					err = refused
				}
				return err
			})
		}},
		{"postgres", func(b *testing.B) Store {
			s, err := Open(newDatabase(b))
			if err != nil {
				b.Fatal(err)
			}
			return s
		}, renew},
	} {
		b.Run(tc.name, func(b *testing.B) {
			ctx := context.Background()
			s := tc.open(b)
			defer s.Close()
			const n = 8
			for i := range n {
				if err := s.CreateInstance(ctx, Instance{ID: fmt.Sprintf("i%d", i), Bot: "b", Generation: 1, Created: t0}); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					w := RenewWrite{ID: fmt.Sprintf("i%d", i), Presented: 1}
					for j := i; j < b.N; j += n {
						w.Now = time.Now()
						if err := tc.renew(s, w); err != nil {
							b.Error(err)
							return
						}
						w.Presented++
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "renewals/s")
		})
	}
}

// BenchmarkPutNode measures recording a host's renewal in an inventory of
// n other hosts: on bbolt without the commit's fdatasync (NoSync), so that
// the figure is the issuer's CPU, and on the test PostgreSQL server. It
// should not grow with n.
func BenchmarkPutNode(b *testing.B) {
	seedBolt := func(b *testing.B, n int) Store {
		s, err := Open(filepath.Join(b.TempDir(), "issuer.db"))
		if err != nil {
			b.Fatal(err)
		}
		s.(*boltStore).db.NoSync = true
		// Written directly, in one transaction: n PutNodes would
		// take a while if PutNode read the inventory.
		err = s.(*boltStore).db.Update(func(tx *bolt.Tx) error {
			nb, err := tx.CreateBucketIfNotExists(bucketNodes)
			for i := 0; i < n && err == nil; i++ {
				_, err = put(nb, fmt.Sprintf("i%07d", i), Node{Instance: fmt.Sprintf("i%07d", i), Bot: "web",
					Names: []string{fmt.Sprintf("web-%07d", i)}, Renewed: t0})
			}
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		return s
	}
	seedPostgres := func(b *testing.B, n int) Store {
		s, err := Open(newDatabase(b))
		if err != nil {
			b.Fatal(err)
		}
		_, err = s.(*pgStore).pool.Exec(context.Background(), `INSERT INTO nodes (instance, bot, names, renewed, doc)
			SELECT 'i' || lpad(i::text, 7, '0'), 'web', '["web-' || lpad(i::text, 7, '0') || '"]', $1,
				convert_to('{"instance":"i' || lpad(i::text, 7, '0') || '","bot":"web","names":["web-' || lpad(i::text, 7, '0') || '"],"renewed":"2026-03-01T12:00:00Z"}', 'UTF8')
			FROM generate_series(0, $2 - 1) AS i`, unixNanos(t0), n)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.(*pgStore).pool.Exec(context.Background(), `ANALYZE nodes`); err != nil {
			b.Fatal(err)
		}
		return s
	}
	for _, store := range []struct {
		name string
		seed func(b *testing.B, n int) Store
	}{{"bolt", seedBolt}, {"postgres", seedPostgres}} {
		for _, n := range []int{1_000, 10_000, 100_000} {
			b.Run(fmt.Sprintf("%s/nodes=%d", store.name, n), func(b *testing.B) {
				ctx := context.Background()
				s := store.seed(b, n)
				defer s.Close()
				n0 := Node{Instance: "i0000000", Bot: "web", Names: []string{"web-0000000"}, Renewed: t0}
				if err := s.PutNode(ctx, n0); err != nil {
					b.Fatal(err)
				}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					n0.Renewed = t0.Add(time.Duration(i) * time.Second)
					if err := s.PutNode(ctx, n0); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
