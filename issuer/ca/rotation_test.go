package ca_test

import (
	"bytes"
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/internal/tlspin"
	"github.com/mwi-project/mwi/issuer/ca"
)

// signedBy returns the fingerprint of the authority of type typ that signs
// in a, found by signing a certificate with it.
func signedBy(t *testing.T, a *ca.Authority, typ ca.Type) string {
	t.Helper()
	now := time.Now()
	switch typ {
	case ca.TypeSSHUser:
		c, err := a.SignSSHUser(ca.SSHUserRequest{Key: newSSHKey(t), KeyID: "k", Principals: []string{"u"}, NotBefore: now, NotAfter: now.Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		return ssh.FingerprintSHA256(c.SignatureKey)
	case ca.TypeSSHHost:
		c, err := a.SignSSHHost(ca.SSHHostRequest{Key: newSSHKey(t), KeyID: "k", Names: []string{"h"}, NotBefore: now, NotAfter: now.Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		return ssh.FingerprintSHA256(c.SignatureKey)
	}
	var signed []byte
	var pool []*x509.Certificate
	switch typ {
	case ca.TypeIdentity:
		csr, _ := newCSR(t)
		c, err := a.SignIdentity(checked(t, csr), ca.Identity{Bot: "b", Instance: "i", Generation: 1}, now, now.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		signed, pool = c.Raw, a.IdentityCAs()
	case ca.TypeKube:
		csr, _ := newCSR(t)
		c, err := a.SignKubernetes(ca.KubernetesRequest{CSR: checked(t, csr), User: "u", NotBefore: now, NotAfter: now.Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		signed, pool = c.Raw, a.KubeCAs()
	case ca.TypeTLS:
		signed, pool = a.ServingCertificate().Certificate[0], a.TLSCAs()
	}
	c := parseCert(t, signed)
	for _, p := range pool {
		if c.CheckSignatureFrom(p) == nil {
			return tlspin.Of(p)
		}
	}
	t.Fatalf("%s: the certificate signed is from no trusted authority", typ)
	return ""
}

// trusted returns the fingerprints of the authorities of type typ that
// a trusts.
func trusted(a *ca.Authority, typ ca.Type) []string {
	var out []string
	switch typ {
	case ca.TypeSSHUser:
		for _, k := range a.SSHUserCAs() {
			out = append(out, ssh.FingerprintSHA256(k))
		}
	case ca.TypeSSHHost:
		for _, k := range a.SSHHostCAs() {
			out = append(out, ssh.FingerprintSHA256(k))
		}
	default:
		cs := map[ca.Type][]*x509.Certificate{ca.TypeIdentity: a.IdentityCAs(), ca.TypeKube: a.KubeCAs(), ca.TypeTLS: a.TLSCAs()}[typ]
		for _, c := range cs {
			out = append(out, tlspin.Of(c))
		}
	}
	return out
}

// TestRotationPhases takes every type through every phase of a rotation
// and of a rollback, and checks which authority signs and which are
// trusted in each, and what the files hold once it is over.
func TestRotationPhases(t *testing.T) {
	for _, typ := range ca.Types {
		for _, rollbackFrom := range []string{"", ca.PhaseInit, ca.PhaseUpdateClients, ca.PhaseUpdateServers} {
			t.Run(string(typ)+"/rollback_from_"+rollbackFrom, func(t *testing.T) {
				a, dir := newAuthority(t, "127.0.0.1")
				cur := a.Fingerprint(typ)
				if got := signedBy(t, a, typ); got != cur {
					t.Fatalf("before: signed by %s, want %s", got, cur)
				}
				next, err := ca.CreateNext(dir, typ)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := ca.CreateNext(dir, typ); err == nil {
					t.Fatal("a second CreateNext replaced the next authority")
				}
				phases := []string{ca.PhaseInit, ca.PhaseUpdateClients, ca.PhaseUpdateServers}
				if rollbackFrom != "" {
					phases = append(phases[:slices.Index(phases, rollbackFrom)+1], ca.PhaseRollback)
				}
				for _, ph := range phases {
					b, err := ca.LoadRotating(dir, []ca.State{{Type: typ, Phase: ph, Current: cur, Next: next}})
					if err != nil {
						t.Fatalf("%s: %v", ph, err)
					}
					if got := trusted(b, typ); !slices.Equal(got, []string{cur, next}) {
						t.Errorf("%s: trusted %v, want %v", ph, got, []string{cur, next})
					}
					want := cur
					if ph == ca.PhaseUpdateClients || ph == ca.PhaseUpdateServers {
						want = next
					}
					if typ == ca.TypeTLS && ph == ca.PhaseUpdateClients {
						want = cur // the serving certificate changes in update_servers
					}
					if got := signedBy(t, b, typ); got != want {
						t.Errorf("%s: signed by %s, want %s", ph, got, want)
					}
				}
				final := next
				if rollbackFrom != "" {
					final = cur
				}
				if err := ca.Tidy(dir, typ, final, next); err != nil {
					t.Fatal(err)
				}
				for _, st := range [][]ca.State{nil, {{Type: typ, Phase: ca.PhaseStandby, Current: final}}} {
					b, err := ca.LoadRotating(dir, st)
					if err != nil {
						t.Fatal(err)
					}
					if got := trusted(b, typ); !slices.Equal(got, []string{final}) {
						t.Errorf("after standby: trusted %v, want %v", got, []string{final})
					}
					if got := signedBy(t, b, typ); got != final {
						t.Errorf("after standby: signed by %s, want %s", got, final)
					}
				}
				names, _ := filepath.Glob(filepath.Join(dir, "*next*"))
				if len(names) > 0 {
					t.Errorf("next files left after standby: %v", names)
				}
				if typ == ca.TypeKube {
					b, _ := ca.Load(dir)
					if err := b.WriteKubeBundle(dir); err != nil {
						t.Fatal(err)
					}
					data, err := os.ReadFile(filepath.Join(dir, ca.KubeBundleFile))
					if err != nil || !bytes.Equal(data, b.KubeBundle()) {
						t.Errorf("bundle = %q, %v", data, err)
					}
				}
			})
		}
	}
}

// TestLoadRotatingUnknownAuthority checks that a state naming an
// authority that is in no file of the directory fails to load, naming it.
func TestLoadRotatingUnknownAuthority(t *testing.T) {
	a, dir := newAuthority(t, "127.0.0.1")
	_, err := ca.LoadRotating(dir, []ca.State{{Type: ca.TypeSSHUser, Phase: ca.PhaseInit, Current: a.Fingerprint(ca.TypeSSHUser), Next: "SHA256:nowhere"}})
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("SHA256:nowhere")) {
		t.Errorf("LoadRotating with an unknown next = %v; want an error naming it", err)
	}
}

// TestLoadRotatingMidTidy checks that a directory caught after the store
// said standby but before Tidy moved the files loads the new authority
// from its next files.
func TestLoadRotatingMidTidy(t *testing.T) {
	for _, typ := range ca.Types {
		_, dir := newAuthority(t, "127.0.0.1")
		next, err := ca.CreateNext(dir, typ)
		if err != nil {
			t.Fatal(err)
		}
		b, err := ca.LoadRotating(dir, []ca.State{{Type: typ, Phase: ca.PhaseStandby, Current: next}})
		if err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		if got := signedBy(t, b, typ); got != next {
			t.Errorf("%s: signed by %s, want %s", typ, got, next)
		}
	}
}

func TestNextPhases(t *testing.T) {
	for _, tc := range []struct {
		from string
		want []string
	}{
		{ca.PhaseStandby, []string{ca.PhaseInit}},
		{ca.PhaseInit, []string{ca.PhaseUpdateClients, ca.PhaseRollback}},
		{ca.PhaseUpdateClients, []string{ca.PhaseUpdateServers, ca.PhaseRollback}},
		{ca.PhaseUpdateServers, []string{ca.PhaseStandby, ca.PhaseRollback}},
		{ca.PhaseRollback, []string{ca.PhaseStandby}},
		{"bogus", nil},
	} {
		if got := ca.NextPhases(tc.from); !slices.Equal(got, tc.want) {
			t.Errorf("NextPhases(%s) = %v, want %v", tc.from, got, tc.want)
		}
	}
}

func parseCert(t *testing.T, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestRotationFilesThroughLinks checks that a symbolic link planted at a
// next file of any type, dangling or to a file, makes CreateNext refuse
// and is not written through, and that the Kubernetes bundle is never
// written through a link at its name.
func TestRotationFilesThroughLinks(t *testing.T) {
	next := map[ca.Type][]string{
		ca.TypeSSHUser:  {"ssh_user_ca.next", "ssh_user_ca.next.pub"},
		ca.TypeSSHHost:  {"ssh_host_ca.next", "ssh_host_ca.next.pub"},
		ca.TypeIdentity: {"identity_ca.next.key", "identity_ca.next.crt"},
		ca.TypeKube:     {"kube_ca.next.key", "kube_ca.next.crt"},
		ca.TypeTLS:      {"tls_ca.next.key", "tls_ca.next.crt"},
	}
	for _, typ := range ca.Types {
		for _, name := range next[typ] {
			for _, dangling := range []bool{false, true} {
				_, dir := newAuthority(t, "127.0.0.1")
				target := filepath.Join(t.TempDir(), "target")
				if !dangling {
					if err := os.WriteFile(target, []byte("theirs"), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
					t.Fatal(err)
				}
				if _, err := ca.CreateNext(dir, typ); err == nil {
					t.Errorf("%s: CreateNext with a link at %s (dangling %v) succeeded", typ, name, dangling)
				}
				data, err := os.ReadFile(target)
				if dangling && err == nil || !dangling && string(data) != "theirs" {
					t.Errorf("%s: the link's target at %s was written: %q, %v", typ, name, data, err)
				}
			}
		}
	}
	a, dir := newAuthority(t, "127.0.0.1")
	target := filepath.Join(t.TempDir(), "bundle")
	if err := os.WriteFile(target, []byte("theirs"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, ca.KubeBundleFile))
	if err := os.Symlink(target, filepath.Join(dir, ca.KubeBundleFile)); err != nil {
		t.Fatal(err)
	}
	if err := a.WriteKubeBundle(dir); err == nil {
		t.Error("WriteKubeBundle through a link succeeded")
	}
	if data, _ := os.ReadFile(target); string(data) != "theirs" {
		t.Errorf("the bundle was written through a link: %q", data)
	}
}
