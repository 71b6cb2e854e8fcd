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
