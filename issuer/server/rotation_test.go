package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/fault"
	"github.com/mwi-project/mwi/internal/tlspin"
	"github.com/mwi-project/mwi/issuer/ca"
	"github.com/mwi-project/mwi/issuer/store"
)

// rotationServer returns a server, not running, on a new state directory.
func rotationServer(t *testing.T) (*Server, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	if err := ca.Init(dir, []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "resources"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "resources", "bots.yaml"), []byte(botsYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := New(DefaultConfig(dir), discardLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dir
}

func rotate(s *Server, typ, phase string, force bool) error {
	_, err := s.RotateCA(context.Background(), api.RotateCARequest{Type: typ, Phase: phase, Force: force})
	return err
}

// rotateThrough takes the authorities of typ through phases in order,
// failing the test at the first refusal.
func rotateThrough(t *testing.T, s *Server, typ string, phases ...string) {
	t.Helper()
	for _, ph := range phases {
		if err := rotate(s, typ, ph, false); err != nil {
			t.Fatalf("rotate %s %s: %v", typ, ph, err)
		}
	}
}

func code(err error) string {
	if e, ok := fault.As(err); ok {
		return e.Code
	}
	return ""
}

// TestRotateCA takes the SSH user authority through a rotation on a
// server: what it signs with and trusts in each phase, the refusals of a
// phase out of order and of a retirement that would cut off an instance
// not caught up, and the files and bundle once it is over.
func TestRotateCA(t *testing.T) {
	ctx := context.Background()
	s, dir := rotationServer(t)
	old := s.auth.CAs().SSHUserCAs()[0]
	if err := rotate(s, "ssh_user", "update_clients", false); code(err) != api.CodeRotationPhase || !strings.Contains(err.Error(), "init") {
		t.Fatalf("update_clients from standby: %v; want %s naming init", err, api.CodeRotationPhase)
	}
	if err := rotate(s, "bogus", "init", false); code(err) != api.CodeBadRequest {
		t.Fatalf("unknown type: %v", err)
	}
	// An instance that renewed long ago, whose certificates may live on.
	if err := s.auth.Store.CreateInstance(ctx, store.Instance{ID: "old", Bot: "ci", Created: time.Now().Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	for _, ph := range []string{"init", "update_clients", "update_servers"} {
		if err := rotate(s, "ssh_user", ph, false); err != nil {
			t.Fatalf("%s: %v", ph, err)
		}
		cas := s.auth.CAs().SSHUserCAs()
		if len(cas) != 2 || string(cas[0].Marshal()) != string(old.Marshal()) {
			t.Fatalf("%s: trusted %d user CAs; want the old and the next", ph, len(cas))
		}
	}
	st, err := s.CARotations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r := st.Rotations[0]; r.Type != "ssh_user" || r.Phase != "update_servers" || r.Loaded != "update_servers" || r.NotCaughtUpTotal != 1 || r.NotCaughtUp[0].Instance != "old" {
		t.Errorf("status = %+v; want ssh_user in update_servers with instance old not caught up", r)
	}
	if err := rotate(s, "ssh_user", "standby", false); code(err) != api.CodeRotationPhase || !strings.Contains(err.Error(), "instance old") {
		t.Fatalf("standby with an instance behind: %v; want a refusal naming it", err)
	}
	if err := rotate(s, "ssh_user", "standby", true); err != nil {
		t.Fatal(err)
	}
	cas := s.auth.CAs().SSHUserCAs()
	if len(cas) != 1 || string(cas[0].Marshal()) == string(old.Marshal()) {
		t.Fatalf("after standby: trusted %d user CAs, the old among them: %v", len(cas), len(cas) == 1)
	}
	pub, err := os.ReadFile(filepath.Join(dir, "ssh_user_ca.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if k, _, _, _, err := ssh.ParseAuthorizedKey(pub); err != nil || string(k.Marshal()) != string(cas[0].Marshal()) {
		t.Errorf("ssh_user_ca.pub does not hold the new authority: %v", err)
	}
	if names, _ := filepath.Glob(filepath.Join(dir, "*.next*")); len(names) > 0 {
		t.Errorf("next files left: %v", names)
	}
	// A new server on the same directory and store loads the same.
	s.Close()
	s2, err := New(DefaultConfig(dir), discardLog())
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got := s2.auth.CAs().SSHUserCAs(); len(got) != 1 || string(got[0].Marshal()) != string(cas[0].Marshal()) {
		t.Error("a restarted issuer does not trust the new authority alone")
	}
}

// TestRotateCARollback checks that a rollback signs with the current
// authority again and that standby then drops the next one; and that
// --type all moves every type.
func TestRotateCARollback(t *testing.T) {
	s, dir := rotationServer(t)
	before := map[ca.Type]string{}
	for _, typ := range ca.Types {
		before[typ] = s.auth.CAs().Fingerprint(typ)
	}
	bundle, _ := os.ReadFile(filepath.Join(dir, ca.KubeBundleFile))
	for _, ph := range []string{"init", "update_clients", "rollback"} {
		if err := rotate(s, "all", ph, false); err != nil {
			t.Fatalf("%s: %v", ph, err)
		}
		if ph == "init" {
			if b, _ := os.ReadFile(filepath.Join(dir, ca.KubeBundleFile)); strings.Count(string(b), "BEGIN CERTIFICATE") != 2 {
				t.Errorf("bundle in init holds %d certificates, want 2", strings.Count(string(b), "BEGIN CERTIFICATE"))
			}
		}
	}
	if len(s.auth.CAs().TLSCAs()) != 2 {
		t.Error("rollback: the next TLS authority is no longer trusted")
	}
	if err := rotate(s, "all", "standby", false); err != nil {
		t.Fatal(err)
	}
	for _, typ := range ca.Types {
		if got := s.auth.CAs().Fingerprint(typ); got != before[typ] {
			t.Errorf("%s after rollback: %s, want %s", typ, got, before[typ])
		}
	}
	if len(s.auth.CAs().TLSCAs()) != 1 || len(s.auth.CAs().KubeCAs()) != 1 {
		t.Error("standby after rollback still trusts the next authorities")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, ca.KubeBundleFile)); string(b) != string(bundle) {
		t.Error("the bundle after rollback differs from the one before")
	}
	if names, _ := filepath.Glob(filepath.Join(dir, "*.next*")); len(names) > 0 {
		t.Errorf("next files left: %v", names)
	}
}

// TestRotationUnknownKey checks that an issuer told by the store of an
// authority it cannot find in its state directory, as a replica whose
// directory lacks the key another made, keeps signing with the
// authorities it has, says why in status, and loads the phase once the
// key arrives.
func TestRotationUnknownKey(t *testing.T) {
	ctx := context.Background()
	s, dir := rotationServer(t)
	before := s.auth.CAs()
	fp := before.Fingerprint(ca.TypeSSHUser)
	// Another issuer moved the rotation, with a key made elsewhere.
	other := filepath.Join(t.TempDir(), "other")
	if err := ca.Init(other, []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	next, err := ca.CreateNext(other, ca.TypeSSHUser)
	if err != nil {
		t.Fatal(err)
	}
	r := store.Rotation{Type: "ssh_user", Phase: ca.PhaseInit, Started: time.Now(), Current: fp, Next: next}
	if err := setRotation(ctx, s.auth.Store, r, ca.PhaseStandby); err != nil {
		t.Fatal(err)
	}
	s.syncStore(ctx)
	if s.auth.CAs() != before {
		t.Fatal("the issuer changed its authorities for a rotation whose key it lacks")
	}
	st, err := s.CARotations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if u := st.Rotations[0]; u.Phase != ca.PhaseInit || u.Loaded != ca.PhaseStandby || !strings.Contains(u.LoadError, next) {
		t.Errorf("status = %+v; want init, loaded standby, and an error naming %s", u, next)
	}
	// The key arrives (the shared directory catches up): the next poll
	// loads it, though the store did not change.
	for _, name := range []string{"ssh_user_ca.next", "ssh_user_ca.next.pub"} {
		data, err := os.ReadFile(filepath.Join(other, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s.syncStore(ctx)
	if got := s.auth.CAs().SSHUserCAs(); len(got) != 2 {
		t.Errorf("after the key arrived: %d user CAs trusted, want 2", len(got))
	}
	if st, _ := s.CARotations(ctx); st.Rotations[0].LoadError != "" || st.Rotations[0].Loaded != ca.PhaseInit {
		t.Errorf("after the key arrived: status %+v", st.Rotations[0])
	}
}

// TestRotateCAInitAllOrNone checks that an init of every type that cannot
// make one next authority (a file left in the way) moves none and leaves
// no next authority behind but the file that was in the way.
func TestRotateCAInitAllOrNone(t *testing.T) {
	s, dir := rotationServer(t)
	if err := os.WriteFile(filepath.Join(dir, "tls_ca.next.key"), []byte("left over"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := rotate(s, "all", "init", false)
	if code(err) != api.CodeRotationPhase || !strings.Contains(err.Error(), "tls_ca.next.key") {
		t.Fatalf("init with a next file in the way: %v; want a refusal naming it", err)
	}
	rs, err := s.auth.Store.Rotations(context.Background())
	if err != nil || len(rs) != 0 {
		t.Errorf("rotations stored after a refused init: %v, %v", rs, err)
	}
	names, _ := filepath.Glob(filepath.Join(dir, "*.next*"))
	if len(names) != 1 {
		t.Errorf("next files after a refused init: %v; want only the one in the way", names)
	}
}

// TestRotateCAAfterStandbyCrash checks, for every type, an issuer stopped
// after it stored a rotation's end but before it moved the files: the
// next authority, in the next files, signs at the next load, and the next
// rotation's init finishes the moves rather than refusing on next files
// that hold the current authority (whose removal, as the refusal advised,
// would lose it).
func TestRotateCAAfterStandbyCrash(t *testing.T) {
	ctx := context.Background()
	for _, typ := range ca.Types {
		t.Run(string(typ), func(t *testing.T) {
			s, dir := rotationServer(t)
			rotateThrough(t, s, string(typ), "init", "update_clients", "update_servers")
			rs, err := s.auth.Store.Rotations(ctx)
			if err != nil || len(rs) != 1 {
				t.Fatalf("rotations: %v, %v", rs, err)
			}
			// The store write of standby, and no file moved.
			r := rs[0]
			r.Phase, r.Current, r.Next, r.Switched = ca.PhaseStandby, r.Next, "", time.Time{}
			if err := setRotation(ctx, s.auth.Store, r, ca.PhaseUpdateServers); err != nil {
				t.Fatal(err)
			}
			s.syncStore(ctx)
			if got := s.auth.CAs().Fingerprint(typ); got != r.Current {
				t.Fatalf("after the crash: authority %s, want %s", got, r.Current)
			}
			if err := rotate(s, string(typ), "init", false); err != nil {
				t.Fatalf("init after a rotation whose files were not moved: %v", err)
			}
			if got := s.auth.CAs().Fingerprint(typ); got != r.Current {
				t.Errorf("after init: authority %s, want %s", got, r.Current)
			}
			// The promoted authority is in the current files: a new
			// issuer without the store's record would load it.
			a, err := ca.Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			if got := a.Fingerprint(typ); got != r.Current {
				t.Errorf("current files hold %s, want %s", got, r.Current)
			}
		})
	}
}

// TestRotateCAUnloadable checks that a move this issuer could not load is
// refused before it is stored, and leaves no next files: a phase that
// names a key its state directory lacks (a replica whose directory has
// not caught up), and a record whose current fingerprint names no
// authority at all.
func TestRotateCAUnloadable(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		stale func(fp, next string) store.Rotation // the record another issuer stored
		from  string
		to    string
	}{
		{"next key missing", func(fp, next string) store.Rotation {
			return store.Rotation{Type: "ssh_user", Phase: ca.PhaseInit, Current: fp, Next: next}
		}, ca.PhaseStandby, ca.PhaseUpdateClients},
		{"stale current", func(fp, next string) store.Rotation {
			return store.Rotation{Type: "ssh_user", Phase: ca.PhaseRollback, Current: "SHA256:stale"}
		}, ca.PhaseStandby, ca.PhaseStandby},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, dir := rotationServer(t)
			other := filepath.Join(t.TempDir(), "other")
			if err := ca.Init(other, []string{"127.0.0.1"}); err != nil {
				t.Fatal(err)
			}
			next, err := ca.CreateNext(other, ca.TypeSSHUser)
			if err != nil {
				t.Fatal(err)
			}
			r := tc.stale(s.auth.CAs().Fingerprint(ca.TypeSSHUser), next)
			r.Started = time.Now()
			if err := setRotation(ctx, s.auth.Store, r, tc.from); err != nil {
				t.Fatal(err)
			}
			err = rotate(s, "ssh_user", tc.to, false)
			if code(err) != api.CodeRotationPhase {
				t.Fatalf("%s: %v; want %s", tc.to, err, api.CodeRotationPhase)
			}
			rs, _ := s.auth.Store.Rotations(ctx)
			if len(rs) != 1 || rs[0].Phase != r.Phase {
				t.Errorf("stored after the refusal: %+v; want phase %s", rs, r.Phase)
			}
			if names, _ := filepath.Glob(filepath.Join(dir, "*.next*")); len(names) > 0 {
				t.Errorf("next files after the refusal: %v", names)
			}
		})
	}
	// init on a record whose current authority is nowhere.
	s, dir := rotationServer(t)
	r := store.Rotation{Type: "kube", Phase: ca.PhaseRollback, Started: time.Now(), Current: "sha256:stale"}
	if err := setRotation(ctx, s.auth.Store, r, ca.PhaseStandby); err != nil {
		t.Fatal(err)
	}
	r.Phase = ca.PhaseStandby
	if err := setRotation(ctx, s.auth.Store, r, ca.PhaseRollback); err != nil {
		t.Fatal(err)
	}
	if err := rotate(s, "kube", "init", false); code(err) != api.CodeRotationPhase {
		t.Fatalf("init with a stale current: %v; want %s", err, api.CodeRotationPhase)
	}
	if names, _ := filepath.Glob(filepath.Join(dir, "*.next*")); len(names) > 0 {
		t.Errorf("next files after the refused init: %v", names)
	}
}

// TestRotateCANextKeyLost checks that a rotation whose next key is lost
// from the state directory can still be rolled back and ended.
func TestRotateCANextKeyLost(t *testing.T) {
	for _, typ := range ca.Types {
		t.Run(string(typ), func(t *testing.T) {
			s, dir := rotationServer(t)
			before := s.auth.CAs().Fingerprint(typ)
			rotateThrough(t, s, string(typ), "init", "update_clients")
			names, _ := filepath.Glob(filepath.Join(dir, "*.next*"))
			for _, n := range names {
				os.Remove(n)
			}
			rotate(s, string(typ), "rollback", false) // stored, if not loaded
			if err := rotate(s, string(typ), "standby", false); err != nil {
				t.Fatalf("standby after the rollback: %v", err)
			}
			if got := s.auth.CAs().Fingerprint(typ); got != before {
				t.Errorf("after standby: %s, want %s", got, before)
			}
		})
	}
}

// TestRotateCARollbackStandbyRefused checks that the standby that ends a
// rollback from a phase in which the next authority signed is refused,
// unless forced, while an instance issued certificates by it may still
// hold them: standby drops the next authority, as a rotation's end drops
// the old one. An instance that renewed before the next authority signed
// holds certificates from the current one and does not hold it back, nor
// does a rollback from init.
func TestRotateCARollbackStandbyRefused(t *testing.T) {
	ctx := context.Background()
	s, _ := rotationServer(t)
	if err := s.auth.Store.CreateInstance(ctx, store.Instance{ID: "before", Bot: "ci", Created: time.Now().Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	rotateThrough(t, s, "identity", "init", "rollback", "standby")
	rotateThrough(t, s, "identity", "init", "update_clients")
	// Joined while the next authority signed.
	if err := s.auth.Store.CreateInstance(ctx, store.Instance{ID: "during", Bot: "ci", Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := rotate(s, "identity", "rollback", false); err != nil {
		t.Fatal(err)
	}
	err := rotate(s, "identity", "standby", false)
	if code(err) != api.CodeRotationPhase || !strings.Contains(err.Error(), "instance during") || strings.Contains(err.Error(), "instance before") {
		t.Fatalf("standby with an instance holding certificates from the next authority: %v; want a refusal naming it alone", err)
	}
	if err := rotate(s, "identity", "standby", true); err != nil {
		t.Fatal(err)
	}
}

// TestRotateCATLSUpdateServersRefused checks that update_servers of the
// TLS authority, which re-signs the serving certificate with the next
// one, is refused, unless forced, while an instance that may not hold the
// next pin may still be in use; other types are not held back.
func TestRotateCATLSUpdateServersRefused(t *testing.T) {
	ctx := context.Background()
	s, _ := rotationServer(t)
	if err := s.auth.Store.CreateInstance(ctx, store.Instance{ID: "old", Bot: "ci", Created: time.Now().Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	rotateThrough(t, s, "all", "init", "update_clients")
	for _, typ := range []string{"tls", "all"} {
		if err := rotate(s, typ, "update_servers", false); code(err) != api.CodeRotationPhase || !strings.Contains(err.Error(), "instance old") {
			t.Fatalf("update_servers of %s with an instance behind: %v; want a refusal naming it", typ, err)
		}
	}
	if err := rotate(s, "ssh_user", "update_servers", false); err != nil {
		t.Fatalf("update_servers of ssh_user: %v", err)
	}
	if err := rotate(s, "tls", "update_servers", true); err != nil {
		t.Fatalf("update_servers of tls, forced: %v", err)
	}
	if got := s.auth.CAs().Phase(ca.TypeTLS); got != ca.PhaseUpdateServers {
		t.Errorf("tls loaded in %s after the forced move", got)
	}
}

// TestRotateCAAfterHalfPromotion checks, for every type, an issuer
// stopped between the two renames that make the next authority current at
// a rotation's end: the current key file holds the next key, the current
// certificate (or public key) does not yet. Another issuer on the store
// loads the new authority alone at its next poll, rather than failing to
// load and going on trusting the old one.
func TestRotateCAAfterHalfPromotion(t *testing.T) {
	ctx := context.Background()
	files := map[ca.Type][2]string{
		ca.TypeSSHUser:  {"ssh_user_ca", "ssh_user_ca.next"},
		ca.TypeSSHHost:  {"ssh_host_ca", "ssh_host_ca.next"},
		ca.TypeIdentity: {"identity_ca.key", "identity_ca.next.key"},
		ca.TypeKube:     {"kube_ca.key", "kube_ca.next.key"},
		ca.TypeTLS:      {"tls_ca.key", "tls_ca.next.key"},
	}
	for _, typ := range ca.Types {
		t.Run(string(typ), func(t *testing.T) {
			s, dir := rotationServer(t)
			rotateThrough(t, s, string(typ), "init", "update_clients", "update_servers")
			rs, _ := s.auth.Store.Rotations(ctx)
			r := rs[0]
			r.Phase, r.Current, r.Next, r.Switched = ca.PhaseStandby, r.Next, "", time.Time{}
			if err := setRotation(ctx, s.auth.Store, r, ca.PhaseUpdateServers); err != nil {
				t.Fatal(err)
			}
			key, err := os.ReadFile(filepath.Join(dir, files[typ][1]))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, files[typ][0]), key, 0o600); err != nil {
				t.Fatal(err)
			}
			s.syncStore(ctx)
			st, err := s.CARotations(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range st.Rotations {
				if x.LoadError != "" {
					t.Fatalf("load error: %s", x.LoadError)
				}
			}
			a := s.auth.CAs()
			if a.Phase(typ) != ca.PhaseStandby || a.Fingerprint(typ) != r.Current {
				t.Errorf("loaded %s %s, want standby %s", a.Phase(typ), a.Fingerprint(typ), r.Current)
			}
			if n := map[ca.Type]int{ca.TypeSSHUser: len(a.SSHUserCAs()), ca.TypeSSHHost: len(a.SSHHostCAs()),
				ca.TypeIdentity: len(a.IdentityCAs()), ca.TypeKube: len(a.KubeCAs()), ca.TypeTLS: len(a.TLSCAs())}[typ]; n != 1 {
				t.Errorf("%d authorities trusted after standby, want 1", n)
			}
		})
	}
}

// TestRotateCAAfterServingHalfWritten checks an issuer stopped as the end
// of a TLS rotation wrote the serving certificate of the new authority,
// between its two renames: the key is new, the certificate is not. The
// other issuers load the new authority at their next poll, and an issuer
// started on the directory starts.
func TestRotateCAAfterServingHalfWritten(t *testing.T) {
	ctx := context.Background()
	s, dir := rotationServer(t)
	rotateThrough(t, s, "tls", "init", "update_clients", "update_servers")
	rs, _ := s.auth.Store.Rotations(ctx)
	r := rs[0]
	r.Phase, r.Current, r.Next, r.Switched = ca.PhaseStandby, r.Next, "", time.Time{}
	if err := setRotation(ctx, s.auth.Store, r, ca.PhaseUpdateServers); err != nil {
		t.Fatal(err)
	}
	// Tidy moved the authority's files, and renamed only the serving key.
	for _, f := range [][2]string{{"tls_ca.next.key", "tls_ca.key"}, {"tls_ca.next.crt", "tls_ca.crt"}} {
		if err := os.Rename(filepath.Join(dir, f[0]), filepath.Join(dir, f[1])); err != nil {
			t.Fatal(err)
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	if err := os.WriteFile(filepath.Join(dir, "tls.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	s.syncStore(ctx)
	if a := s.auth.CAs(); a.Phase(ca.TypeTLS) != ca.PhaseStandby || len(a.TLSCAs()) != 1 || a.Fingerprint(ca.TypeTLS) != r.Current {
		t.Errorf("loaded tls %s with %d authorities; want standby with %s alone", a.Phase(ca.TypeTLS), len(a.TLSCAs()), r.Current)
	}
	s.Close()
	s2, err := New(DefaultConfig(dir), discardLog())
	if err != nil {
		t.Fatalf("an issuer started on the directory: %v", err)
	}
	defer s2.Close()
	if got := tlspin.Of(s2.auth.CAs().TLSCA()); got != r.Current {
		t.Errorf("the restarted issuer serves from %s, want %s", got, r.Current)
	}
}

// TestStartAfterHalfMove checks, for every type, that an issuer, alone on
// its store, that was stopped between two renames of a rotation's end
// starts again, with the new authority alone: the current key file holds
// the next key and the current certificate does not, or, for the TLS
// authority, the moves are done and the serving key was renamed without
// its certificate.
func TestStartAfterHalfMove(t *testing.T) {
	ctx := context.Background()
	files := map[ca.Type][2]string{
		ca.TypeSSHUser:  {"ssh_user_ca", "ssh_user_ca.next"},
		ca.TypeSSHHost:  {"ssh_host_ca", "ssh_host_ca.next"},
		ca.TypeIdentity: {"identity_ca.key", "identity_ca.next.key"},
		ca.TypeKube:     {"kube_ca.key", "kube_ca.next.key"},
		ca.TypeTLS:      {"tls_ca.key", "tls_ca.next.key"},
	}
	for _, tc := range []struct {
		typ     ca.Type
		serving bool
	}{{ca.TypeSSHUser, false}, {ca.TypeSSHHost, false}, {ca.TypeIdentity, false}, {ca.TypeKube, false}, {ca.TypeTLS, false}, {ca.TypeTLS, true}} {
		t.Run(fmt.Sprintf("%s/serving=%v", tc.typ, tc.serving), func(t *testing.T) {
			s, dir := rotationServer(t)
			rotateThrough(t, s, string(tc.typ), "init", "update_clients", "update_servers")
			rs, _ := s.auth.Store.Rotations(ctx)
			r := rs[0]
			r.Phase, r.Current, r.Next, r.Switched = ca.PhaseStandby, r.Next, "", time.Time{}
			if err := setRotation(ctx, s.auth.Store, r, ca.PhaseUpdateServers); err != nil {
				t.Fatal(err)
			}
			s.Close()
			if tc.serving {
				for _, f := range [][2]string{{"tls_ca.next.key", "tls_ca.key"}, {"tls_ca.next.crt", "tls_ca.crt"}} {
					if err := os.Rename(filepath.Join(dir, f[0]), filepath.Join(dir, f[1])); err != nil {
						t.Fatal(err)
					}
				}
				key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				der, _ := x509.MarshalPKCS8PrivateKey(key)
				if err := os.WriteFile(filepath.Join(dir, "tls.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
					t.Fatal(err)
				}
			} else {
				key, err := os.ReadFile(filepath.Join(dir, files[tc.typ][1]))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, files[tc.typ][0]), key, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			s2, err := New(DefaultConfig(dir), discardLog())
			if err != nil {
				t.Fatalf("start: %v", err)
			}
			defer s2.Close()
			if a := s2.auth.CAs(); a.Fingerprint(tc.typ) != r.Current || signedWith(t, a, tc.typ) != r.Current {
				t.Errorf("started with %s, want %s", a.Fingerprint(tc.typ), r.Current)
			}
			if names, _ := filepath.Glob(filepath.Join(dir, "*.next*")); len(names) > 0 {
				t.Errorf("next files left: %v", names)
			}
			b, err := ca.Load(dir)
			if err != nil || b.Fingerprint(tc.typ) != r.Current {
				t.Errorf("the current files: %v", err)
			}
		})
	}
}

// signedWith returns the fingerprint of the authority of type typ that
// signs in a, or that signed the serving certificate for the TLS one.
func signedWith(t *testing.T, a *ca.Authority, typ ca.Type) string {
	t.Helper()
	switch typ {
	case ca.TypeSSHUser:
		return ssh.FingerprintSHA256(a.SSHUserCA())
	case ca.TypeSSHHost:
		return ssh.FingerprintSHA256(a.SSHHostCA())
	case ca.TypeIdentity:
		return tlspin.Of(a.IdentityCA())
	case ca.TypeKube:
		return tlspin.Of(a.KubeCA())
	}
	leaf := a.ServingCertificate().Leaf
	for _, c := range a.TLSCAs() {
		if leaf.CheckSignatureFrom(c) == nil {
			return tlspin.Of(c)
		}
	}
	return ""
}

// TestRotateCARefusalsAudited checks that each way a rotate request is
// refused writes a ca.rotate record, denied, with the reason.
func TestRotateCARefusalsAudited(t *testing.T) {
	ctx := context.Background()
	s, dir := rotationServer(t)
	al, buf := newAuditBuffer()
	s.auth.Audit = al
	if err := s.auth.Store.CreateInstance(ctx, store.Instance{ID: "old", Bot: "ci", Created: time.Now().Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name        string
		typ, phase  string
		force       bool
		refused     bool
		reasonNames string
	}{
		{"unknown type", "bogus", "init", false, true, "bogus"},
		{"unknown phase", "ssh_user", "bogus", false, true, "bogus"},
		{"type all with no phase", "all", "", false, true, "phase"},
		{"out of order", "ssh_user", "update_servers", false, true, "init"},
		{"init", "ssh_user", "init", false, false, ""},
		{"init again", "ssh_user", "init", false, true, "update_clients"},
		{"type all with one type mid-rotation", "all", "init", false, true, "ssh_user"},
		{"skip a phase", "ssh_user", "standby", false, true, "update_clients"},
		{"update_clients", "ssh_user", "update_clients", false, false, ""},
		{"update_servers", "ssh_user", "update_servers", false, false, ""},
		{"standby with an instance behind", "ssh_user", "standby", false, true, "instance old"},
		{"standby forced", "ssh_user", "standby", true, false, ""},
		{"rollback from standby", "ssh_user", "rollback", false, true, "init"},
	}
	for _, st := range steps {
		n := len(buf.records(t))
		err := rotate(s, st.typ, st.phase, st.force)
		if (err != nil) != st.refused {
			t.Fatalf("%s: %v; want refused %v", st.name, err, st.refused)
		}
		recs := buf.records(t)[n:]
		if len(recs) == 0 {
			t.Fatalf("%s: no audit record", st.name)
		}
		r := recs[len(recs)-1]
		if r["event"] != "ca.rotate" {
			t.Fatalf("%s: record %v", st.name, r)
		}
		reason, _ := r["reason"].(string)
		if st.refused && (r["outcome"] != "denied" || !strings.Contains(reason, st.reasonNames)) {
			t.Errorf("%s: record %v; want denied with a reason naming %q", st.name, r, st.reasonNames)
		}
	}
	// A next file in the way of an init, and a move this issuer cannot
	// load.
	if err := os.WriteFile(filepath.Join(dir, "kube_ca.next.key"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	n := len(buf.records(t))
	if err := rotate(s, "kube", "init", false); err == nil {
		t.Fatal("init with a next file in the way succeeded")
	}
	if recs := buf.records(t)[n:]; len(recs) != 1 || recs[0]["outcome"] != "denied" || !strings.Contains(recs[0]["reason"].(string), "kube_ca.next.key") {
		t.Errorf("init with a next file in the way: records %v", recs)
	}
}

// TestRotateCANextIdentityIsNoAdmin checks, while the next identity
// authority signs, that neither a bot identity it signed nor a
// certificate it signed that claims to name an admin reaches the admin
// API over HTTPS, on the rotate route or any: the admin CA alone makes an
// admin, in every phase.
func TestRotateCANextIdentityIsNoAdmin(t *testing.T) {
	ctx := context.Background()
	s, dir := rotationServer(t)
	rotateThrough(t, s, "identity", "init", "update_clients")
	a := s.auth.CAs()
	bot := identityCert(t, a, ca.Identity{Bot: "ci", Instance: "i1", Generation: 1})
	if tlspin.Of(a.IdentityCA()) == tlspin.Of(a.IdentityCAs()[0]) {
		t.Fatal("the next identity authority does not sign in update_clients")
	}
	// What a flaw in bot issuance could make: the next identity
	// authority's signature on an admin's name.
	data, err := os.ReadFile(filepath.Join(dir, "identity_ca.next.key"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	caKey, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "eve", Organization: []string{"mwi admin"}},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs: []*url.URL{{Scheme: "mwi", Host: "admin", Path: "/eve"}}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.IdentityCA(), key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	forged := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}

	remote := &remoteAdmin{routes: adminAPI(s.auth, s, s.auth.Audit, discardLog()), name: a.AdminName}
	addr, _ := gated(t, a, publicRoutes(s.auth, remote, s.auth.Audit, discardLog()), Limits{}, auditRefused(s.auth.Audit), discardLog())
	for name, cert := range map[string]tls.Certificate{"bot identity": bot, "admin name from the identity authority": forged} {
		c := tlsClient(t, a, cert)
		status, body := call(t, c, http.MethodPost, "https://"+addr+"/admin/v1/ca/rotate", api.RotateCARequest{Type: "identity", Phase: "rollback"}, nil)
		if status != http.StatusForbidden {
			t.Errorf("%s: rotate: %d %s, want 403", name, status, body)
		}
		if status, body := call(t, c, http.MethodGet, "https://"+addr+"/admin/v1/ca/rotations", nil, nil); status != http.StatusForbidden {
			t.Errorf("%s: rotations: %d %s, want 403", name, status, body)
		}
	}
	if rs, _ := s.auth.Store.Rotations(ctx); len(rs) != 1 || rs[0].Phase != ca.PhaseUpdateClients {
		t.Errorf("rotations after the refusals: %+v", rs)
	}
}

// setRotation stores r over the stored record of its type, which must be
// in phase from: the tests make states that way without an admin's read.
func setRotation(ctx context.Context, st store.Store, r store.Rotation, from string) error {
	rs, err := st.Rotations(ctx)
	if err != nil {
		return err
	}
	old := store.Rotation{Type: r.Type, Phase: store.RotationStandby}
	for _, o := range rs {
		if o.Type == r.Type {
			old = o
		}
	}
	if old.Phase != from {
		return fmt.Errorf("the stored %s rotation is in %s, not %s", r.Type, old.Phase, from)
	}
	return st.SetRotation(ctx, r, old)
}

// roundStore is a store on which, just before the first SetRotation it
// is asked for, another admin takes that type's rotation round from
// standby back to standby, as through another replica between the read
// and the write of RotateCA.
type roundStore struct {
	store.Store
	done bool
	skip int // SetRotations to let through before the round
}

func (s *roundStore) SetRotation(ctx context.Context, r, from store.Rotation) error {
	if s.skip > 0 {
		s.skip--
	} else if !s.done {
		s.done = true
		cur := from
		for _, phase := range []string{ca.PhaseInit, ca.PhaseRollback, ca.PhaseStandby} {
			step := cur
			step.Phase, step.Admin = phase, "other"
			if err := s.Store.SetRotation(ctx, step, cur); err != nil {
				return fmt.Errorf("the other admin's move to %s: %v", phase, err)
			}
			step.Version = cur.Version + 1
			cur = step
		}
	}
	return s.Store.SetRotation(ctx, r, from)
}

// TestRotateCAStaleRead checks that RotateCA stores its move only over
// the record it read: after another admin's round back to the same phase
// meanwhile, the move is refused as a conflict, the record stays the
// other admin's, and the next authorities made for the refused init go,
// for one type and for --type all (whose first type meets the round).
func TestRotateCAStaleRead(t *testing.T) {
	ctx := context.Background()
	for _, typ := range []string{"ssh_host", "all"} {
		t.Run(typ, func(t *testing.T) {
			s, dir := rotationServer(t)
			s.auth.Store = &roundStore{Store: s.auth.Store}
			err := rotate(s, typ, ca.PhaseInit, false)
			if code(err) != api.CodeRotationConflict {
				t.Fatalf("init over a record changed since it was read: %v; want %s", err, api.CodeRotationConflict)
			}
			rs, err := s.auth.Store.Rotations(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(rs) != 1 || rs[0].Phase != ca.PhaseStandby || rs[0].Admin != "other" || rs[0].Next != "" {
				t.Errorf("stored after the refusal: %+v; want the other admin's standby alone", rs)
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				if strings.Contains(e.Name(), ".next") || strings.Contains(e.Name(), ".tidy-") {
					t.Errorf("left by the refused init: %s", e.Name())
				}
			}
			if err := rotate(s, typ, ca.PhaseInit, false); err != nil {
				t.Errorf("init from the stored record: %v", err)
			}
		})
	}
}

// TestRotateCAAllPartialConflict checks a --type all move whose third
// type meets another admin's round: the types before it moved and keep
// their next authorities, the others keep none, and the refusal names
// the types that moved, so that the admin does not take the whole move
// for refused.
func TestRotateCAAllPartialConflict(t *testing.T) {
	ctx := context.Background()
	s, dir := rotationServer(t)
	s.auth.Store = &roundStore{Store: s.auth.Store, skip: 2}
	err := rotate(s, "all", ca.PhaseInit, false)
	if code(err) != api.CodeRotationConflict {
		t.Fatalf("init over a record changed since it was read: %v; want %s", err, api.CodeRotationConflict)
	}
	moved := ca.Types[:2]
	for _, typ := range moved {
		if !strings.Contains(err.Error(), string(typ)) {
			t.Errorf("the refusal %q does not name %s, which moved", err, typ)
		}
	}
	rs, err := s.auth.Store.Rotations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		want := ca.PhaseStandby
		if slices.Contains(moved, ca.Type(r.Type)) {
			want = ca.PhaseInit
		}
		if r.Phase != want {
			t.Errorf("%s stored in %s; want %s", r.Type, r.Phase, want)
		}
		if hasNext := r.Next != "" && ca.NextHolds(dir, ca.Type(r.Type), r.Next); hasNext != (want == ca.PhaseInit) {
			t.Errorf("%s: next files hold the stored next %q: %v", r.Type, r.Next, hasNext)
		}
	}
}
