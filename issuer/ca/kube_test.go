package ca_test

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mwi-project/mwi/issuer/ca"
)

func TestSignKubernetes(t *testing.T) {
	a, dir := newAuthority(t, "127.0.0.1")
	if got := a.KubeCAFile(); got != filepath.Join(dir, "kube_ca_bundle.crt") || !filepath.IsAbs(got) {
		t.Errorf("KubeCAFile = %q", got)
	}
	if a.Created() != nil {
		t.Errorf("Created after Init = %v, want nothing", a.Created())
	}
	data, err := os.ReadFile(a.KubeCAFile())
	if err != nil {
		t.Fatal(err)
	}
	if block, _ := pem.Decode(data); block == nil || !bytes.Equal(block.Bytes, a.KubeCA().Raw) {
		t.Error("KubeCA differs from the bundle")
	}
	if !a.KubeCA().IsCA || a.KubeCA().Equal(a.TLSCA()) {
		t.Error("KubeCA is not a CA of its own")
	}

	csr, key := newCSR(t)
	now := time.Now().Truncate(time.Second)
	c, err := a.SignKubernetes(ca.KubernetesRequest{
		CSR: checked(t, csr), User: "alice", Groups: []string{"system:masters", "team-a"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(10 * time.Minute),
	})
	if err != nil {
		t.Fatal(err)
	}
	// The groups are one multi-valued RDN, whose values DER sorts.
	if c.Subject.CommonName != "alice" || !slices.Equal(slices.Sorted(slices.Values(c.Subject.Organization)), []string{"system:masters", "team-a"}) {
		t.Errorf("subject = %v", c.Subject)
	}
	if !c.NotBefore.Equal(now.Add(-time.Minute)) || !c.NotAfter.Equal(now.Add(10*time.Minute)) {
		t.Errorf("validity %v to %v", c.NotBefore, c.NotAfter)
	}
	if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) || c.IsCA || len(c.DNSNames)+len(c.URIs) != 0 {
		t.Errorf("usage %v, IsCA %v, SANs %v %v", c.ExtKeyUsage, c.IsCA, c.DNSNames, c.URIs)
	}
	if !c.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()) {
		t.Error("certificate is not for the CSR's key")
	}
	pool := x509.NewCertPool()
	pool.AddCert(a.KubeCA())
	opts := x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if _, err := c.Verify(opts); err != nil {
		t.Errorf("does not verify against the Kubernetes CA: %v", err)
	}
	// A Kubernetes certificate is no bot identity, and the reverse.
	opts.Roots = a.IdentityPool()
	if _, err := c.Verify(opts); err == nil {
		t.Error("a Kubernetes certificate verifies as a bot identity")
	}

	if _, err := a.SignKubernetes(ca.KubernetesRequest{CSR: checked(t, csr), NotBefore: now, NotAfter: now.Add(time.Minute)}); err == nil {
		t.Error("signed a Kubernetes certificate with no user")
	}
	bad := *csr
	bad.Signature = slices.Clone(csr.Signature)
	bad.Signature[len(bad.Signature)-1] ^= 1
	if _, err := ca.CheckCSR(&bad); err == nil {
		t.Error("CheckCSR passed a CSR whose signature does not verify")
	}
	if _, err := a.SignKubernetes(ca.KubernetesRequest{CSR: &ca.CSR{}, User: "x", NotBefore: now, NotAfter: now.Add(time.Minute)}); err == nil {
		t.Error("signed a CSR that was not checked")
	}
}

// TestLoadCreatesKubeCA covers a state directory made before the
// Kubernetes client CA existed: Load creates it once, and never replaces
// a file.
func TestLoadCreatesKubeCA(t *testing.T) { testLoadCreates(t, "kube_ca") }

// TestLoadCreatesAdminCA covers a state directory made before the admin
// CA existed, as TestLoadCreatesKubeCA does for the Kubernetes client CA.
func TestLoadCreatesAdminCA(t *testing.T) { testLoadCreates(t, "admin_ca") }

func testLoadCreates(t *testing.T, base string) {
	_, dir := newAuthority(t, "127.0.0.1")
	for _, f := range []string{base + ".key", base + ".crt"} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	before := readDir(t, dir)
	a, err := ca.Load(dir)
	if err != nil {
		t.Fatalf("Load of an older state directory: %v", err)
	}
	if got, want := a.Created(), []string{filepath.Join(dir, base+".key"), filepath.Join(dir, base+".crt")}; !slices.Equal(got, want) {
		t.Errorf("Created = %v, want %v", got, want)
	}
	after := readDir(t, dir)
	for name, data := range before {
		if !bytes.Equal(after[name], data) {
			t.Errorf("Load changed %s", name)
		}
	}
	for _, f := range []string{base + ".key", base + ".crt"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %o, want 600", f, fi.Mode().Perm())
		}
	}
	if len(after) != len(before)+2 {
		t.Errorf("Load left %d files, want %d (no temporary files)", len(after), len(before)+2)
	}
	b, err := ca.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if b.Created() != nil || !b.KubeCA().Equal(a.KubeCA()) || !b.AdminCA().Equal(a.AdminCA()) {
		t.Errorf("second Load: Created %v, same CAs %v %v", b.Created(), b.KubeCA().Equal(a.KubeCA()), b.AdminCA().Equal(a.AdminCA()))
	}

	// Under systemd's DynamicUser=, the state directory is a link: the CA
	// is made where it leads.
	t.Run("linked state directory", func(t *testing.T) {
		_, dir := newAuthority(t, "127.0.0.1")
		for _, f := range []string{base + ".key", base + ".crt"} {
			if err := os.Remove(filepath.Join(dir, f)); err != nil {
				t.Fatal(err)
			}
		}
		link := filepath.Join(t.TempDir(), "link")
		if err := os.Symlink(dir, link); err != nil {
			t.Fatal(err)
		}
		a, err := ca.Load(link)
		if err != nil {
			t.Fatalf("Load through a link: %v", err)
		}
		if len(a.Created()) != 2 {
			t.Errorf("Created = %v, want the two files", a.Created())
		}
		for _, f := range []string{base + ".key", base + ".crt"} {
			if fi, err := os.Lstat(filepath.Join(dir, f)); err != nil || !fi.Mode().IsRegular() {
				t.Errorf("%s in the linked directory: %v, %v", f, fi, err)
			}
		}
	})

	// Half a CA is refused, and left as it is.
	for _, keep := range []string{base + ".key", base + ".crt"} {
		t.Run("only "+keep, func(t *testing.T) {
			_, dir := newAuthority(t, "127.0.0.1")
			other := base + ".crt"
			if keep == other {
				other = base + ".key"
			}
			os.Remove(filepath.Join(dir, other))
			kept, _ := os.ReadFile(filepath.Join(dir, keep))
			_, err := ca.Load(dir)
			if err == nil || !strings.Contains(err.Error(), "exists without "+other) {
				t.Fatalf("Load = %v, want an error saying %s exists without %s", err, keep, other)
			}
			if now, _ := os.ReadFile(filepath.Join(dir, keep)); !bytes.Equal(now, kept) {
				t.Errorf("Load changed %s", keep)
			}
			if _, err := os.Stat(filepath.Join(dir, other)); err == nil {
				t.Errorf("Load made %s", other)
			}
		})
	}
}
