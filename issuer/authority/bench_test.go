package authority_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/pgtest"
	"github.com/mwi-project/mwi/issuer/audit"
	"github.com/mwi-project/mwi/issuer/authority"
	"github.com/mwi-project/mwi/issuer/ca"
	"github.com/mwi-project/mwi/issuer/resource"
	"github.com/mwi-project/mwi/issuer/store"
)

// BenchmarkRenew measures the authority's own work for one renewal: the
// request's keys checked, the store asked and advanced, the identity and
// SSH certificates signed and audited. The store is on a memory file
// system when there is one, so that ns/op is CPU time rather than waiting
// for a disk; the TLS handshake is not part of it (mwi-loadgen measures
// the whole). The keys are made before the timer starts, as mwid makes
// them on its own machine.
//
// BenchmarkRenew runs it on bbolt as the authority is configured in
// tests. BenchmarkRenewStores runs it on bbolt and on a PostgreSQL server
// the benchmark starts (whose own CPU is not counted), with the locks
// looked up in the store for each request and as the server has them
// (CacheLocks).
func BenchmarkRenew(b *testing.B) {
	benchmarkRenew(b, openBenchBolt, false)
}

func BenchmarkRenewStores(b *testing.B) {
	openPostgres := func(b *testing.B, dir string) store.Store {
		srv, err := pgtest.Start()
		pgtest.Skip(b, err)
		b.Cleanup(srv.Stop)
		url, err := srv.CreateDatabase("bench", "")
		if err != nil {
			b.Fatal(err)
		}
		st, err := store.Open(url)
		if err != nil {
			b.Fatal(err)
		}
		return st
	}
	for _, st := range []struct {
		name string
		open func(b *testing.B, dir string) store.Store
	}{{"bolt", openBenchBolt}, {"postgres", openPostgres}} {
		for _, cache := range []bool{false, true} {
			locks := "store-locks"
			if cache {
				locks = "cached-locks"
			}
			b.Run(st.name+"/"+locks, func(b *testing.B) { benchmarkRenew(b, st.open, cache) })
		}
	}
}

// openBenchBolt opens a bbolt store on a memory file system when there is
// one, so that ns/op is CPU time rather than waiting for a disk.
func openBenchBolt(b *testing.B, dir string) store.Store {
	storeDir := dir
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if storeDir, err = os.MkdirTemp("/dev/shm", "mwi-bench-"); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(storeDir) })
	}
	st, err := store.Open(filepath.Join(storeDir, "store.db"))
	if err != nil {
		b.Fatal(err)
	}
	return st
}

func benchmarkRenew(b *testing.B, open func(b *testing.B, dir string) store.Store, cacheLocks bool) {
	dir := b.TempDir()
	state := filepath.Join(dir, "state")
	if err := ca.Init(state, []string{"127.0.0.1"}); err != nil {
		b.Fatal(err)
	}
	authorities, err := ca.Load(state)
	if err != nil {
		b.Fatal(err)
	}
	st := open(b, dir)
	defer st.Close()
	if err := os.WriteFile(filepath.Join(dir, "r.yaml"), []byte(resourcesYAML), 0o600); err != nil {
		b.Fatal(err)
	}
	set, err := resource.LoadDir(dir)
	if err != nil {
		b.Fatal(err)
	}
	a := &authority.Authority{CA: authorities, Store: st, Audit: audit.New(io.Discard), CacheLocks: cacheLocks}
	a.SetResources(set)
	ctx := context.Background()
	tok, err := a.CreateToken(ctx, "ci", time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	keys := make([]api.PublicKeys, b.N+1)
	for i := range keys {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "mwid"}}, k)
		if err != nil {
			b.Fatal(err)
		}
		sk, err := ssh.NewPublicKey(&k.PublicKey)
		if err != nil {
			b.Fatal(err)
		}
		keys[i] = api.PublicKeys{IdentityCSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})),
			SSH: string(ssh.MarshalAuthorizedKey(sk))}
	}
	creds, err := a.Join(ctx, api.JoinRequest{JoinMethod: api.JoinMethodToken, Token: tok.Token, Keys: keys[0], TTLSeconds: 1200}, nil, "192.0.2.1:1")
	if err != nil {
		b.Fatal(err)
	}
	id := ca.Identity{Bot: creds.Bot, Instance: creds.Instance, Generation: creds.Generation}
	b.ReportAllocs()
	b.ResetTimer()
	// The machine may be shared: CPU time is what the renewals cost,
	// whatever else runs.
	before := cpuTime(b)
	defer func() { b.ReportMetric(float64(cpuTime(b)-before)/float64(b.N), "cpu-ns/op") }()
	for i := range b.N {
		c, err := a.Renew(ctx, id, api.RenewRequest{Keys: keys[i+1], TTLSeconds: 1200}, "192.0.2.1:1")
		if err != nil {
			b.Fatal(err)
		}
		id.Generation = c.Generation
	}
}

// cpuTime returns the CPU time the process has used, user and system.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
