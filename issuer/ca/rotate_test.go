package ca_test

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mwi-project/mwi/internal/tlspin"
	"github.com/mwi-project/mwi/issuer/ca"
)

// servingChain parses the serving chain of a and checks that its key
// belongs to its leaf.
func servingChain(t *testing.T, a *ca.Authority) []*x509.Certificate {
	t.Helper()
	sc := a.ServingCertificate()
	var chain []*x509.Certificate
	for _, der := range sc.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, c)
	}
	if len(chain) != 2 {
		t.Fatalf("serving chain has %d certificates, want leaf and authority", len(chain))
	}
	signer, ok := sc.PrivateKey.(crypto.Signer)
	if !ok {
		t.Fatalf("serving key %T cannot sign", sc.PrivateKey)
	}
	if !signer.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(chain[0].PublicKey) {
		t.Fatal("serving key does not match the serving certificate")
	}
	return chain
}

func TestRotateServing(t *testing.T) {
	before, dir := newAuthority(t, "127.0.0.1", "issuer.example")
	oldFiles := readDir(t, dir)
	oldChain := servingChain(t, before)
	oldKey, err := os.Lstat(filepath.Join(dir, "tls.key"))
	if err != nil {
		t.Fatal(err)
	}

	if err := ca.RotateServing(dir, nil); err != nil {
		t.Fatalf("RotateServing: %v", err)
	}
	newFiles := readDir(t, dir)
	// Only the serving pair changed; no temporary file is left behind.
	if got, want := slices.Sorted(maps.Keys(newFiles)), slices.Sorted(maps.Keys(oldFiles)); !slices.Equal(got, want) {
		t.Fatalf("files after rotation = %v, want %v", got, want)
	}
	for name, data := range oldFiles {
		changed := !bytes.Equal(newFiles[name], data)
		if serving := name == "tls.key" || name == "tls.crt"; changed != serving {
			t.Errorf("%s changed = %v, want %v", name, changed, serving)
		}
	}
	for _, name := range []string{"tls.key", "tls.crt"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode = %v, want 0600", name, fi.Mode().Perm())
		}
	}
	// The key was replaced by a new file renamed over it, not written in
	// place, so a reader never sees part of it.
	if newKey, err := os.Lstat(filepath.Join(dir, "tls.key")); err != nil || os.SameFile(oldKey, newKey) {
		t.Errorf("tls.key was written in place (%v)", err)
	}

	after, err := ca.Load(dir)
	if err != nil {
		t.Fatalf("Load after rotation: %v", err)
	}
	chain := servingChain(t, after)
	if chain[0].Equal(oldChain[0]) || chain[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(oldChain[0].PublicKey) {
		t.Error("the serving certificate or its key did not change")
	}
	if !chain[1].Equal(before.TLSCA()) || !after.TLSCA().Equal(before.TLSCA()) || after.Pin() != before.Pin() {
		t.Error("the TLS authority changed")
	}
	// The new certificate keeps the hosts of the old one, and daemons
	// pinning the authority verify it.
	if !slices.Equal(chain[0].DNSNames, oldChain[0].DNSNames) || len(chain[0].IPAddresses) != 1 || !chain[0].IPAddresses[0].Equal(oldChain[0].IPAddresses[0]) {
		t.Errorf("hosts = %v %v, want %v %v", chain[0].DNSNames, chain[0].IPAddresses, oldChain[0].DNSNames, oldChain[0].IPAddresses)
	}
	for _, host := range []string{"127.0.0.1", "issuer.example"} {
		if err := tlspin.Verify(chain, host, nil, []string{before.Pin()}); err != nil {
			t.Errorf("verify the rotated certificate for %s with the old pin: %v", host, err)
		}
	}

	// Named hosts replace the old ones.
	if err := ca.RotateServing(dir, []string{"issuer.example.org", "::1"}); err != nil {
		t.Fatalf("RotateServing with hosts: %v", err)
	}
	renamed, err := ca.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	chain = servingChain(t, renamed)
	if err := tlspin.Verify(chain, "issuer.example.org", nil, []string{before.Pin()}); err != nil {
		t.Errorf("verify for the new name: %v", err)
	}
	if err := tlspin.Verify(chain, "::1", nil, []string{before.Pin()}); err != nil {
		t.Errorf("verify for the new address: %v", err)
	}
	if err := tlspin.Verify(chain, "127.0.0.1", nil, []string{before.Pin()}); err == nil {
		t.Error("the rotated certificate still names 127.0.0.1")
	}
}

func TestRotateServingRefuses(t *testing.T) {
	otherAuthority := func(t *testing.T) string {
		_, dir := newAuthority(t, "127.0.0.1")
		return dir
	}
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
		hosts []string
		want  string
	}{
		{"no issuer", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, "ssh_user_ca")) }, nil, "holds no issuer"},
		{"authority key of another issuer", func(t *testing.T, dir string) {
			data, err := os.ReadFile(filepath.Join(otherAuthority(t), "tls_ca.key"))
			if err != nil {
				t.Fatal(err)
			}
			overwrite(t, dir, "tls_ca.key", string(data))
		}, nil, "does not hold the key"},
		{"unreadable authority", func(t *testing.T, dir string) { overwrite(t, dir, "tls_ca.crt", "junk") }, nil, "TLS authority"},
		{"no current certificate and no hosts", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, "tls.crt")) }, nil, "name the hosts"},
		{"empty host", nil, []string{"a.example", ""}, "empty host"},
		{"serving key is a link", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "tls.key"))
			if err := os.Symlink(filepath.Join(dir, "identity_ca.key"), filepath.Join(dir, "tls.key")); err != nil {
				t.Fatal(err)
			}
		}, nil, "not a regular file"},
		{"serving certificate is a link", func(t *testing.T, dir string) {
			elsewhere := filepath.Join(t.TempDir(), "elsewhere")
			overwrite(t, filepath.Dir(elsewhere), "elsewhere", "keep")
			os.Remove(filepath.Join(dir, "tls.crt"))
			if err := os.Symlink(elsewhere, filepath.Join(dir, "tls.crt")); err != nil {
				t.Fatal(err)
			}
		}, []string{"127.0.0.1"}, "not a regular file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, dir := newAuthority(t, "127.0.0.1")
			if tt.setup != nil {
				tt.setup(t, dir)
			}
			before := readDir(t, dir)
			err := ca.RotateServing(dir, tt.hosts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("RotateServing = %v, want an error containing %q", err, tt.want)
			}
			after := readDir(t, dir)
			if len(after) != len(before) {
				t.Errorf("a refused rotation left %d files, had %d", len(after), len(before))
			}
			for name, data := range before {
				if !bytes.Equal(after[name], data) {
					t.Errorf("a refused rotation changed %s", name)
				}
			}
		})
	}
}

func TestRotateServingMissingDir(t *testing.T) {
	if err := ca.RotateServing(filepath.Join(t.TempDir(), "none"), []string{"localhost"}); err == nil {
		t.Fatal("RotateServing of a missing directory succeeded")
	}
}

// TestRotateServingRefusesLinkedDir reaches the state directory through a
// symbolic link: RotateServing refuses to write there.
func TestRotateServingRefusesLinkedDir(t *testing.T) {
	_, dir := newAuthority(t, "127.0.0.1")
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	before := readDir(t, dir)
	err := ca.RotateServing(link, nil)
	if err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("RotateServing through a link = %v, want a refusal naming it", err)
	}
	after := readDir(t, dir)
	if len(after) != len(before) {
		t.Errorf("a refused rotation left %d files, had %d", len(after), len(before))
	}
	for name, data := range before {
		if !bytes.Equal(after[name], data) {
			t.Errorf("a refused rotation changed %s", name)
		}
	}
}
