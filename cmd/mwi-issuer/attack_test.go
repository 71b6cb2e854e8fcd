package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeIdentityDir writes an admin identity directory, as admin issue
// does, with a self-signed certificate standing for the issued one.
func writeIdentityDir(t *testing.T, dir string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "alice"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		identityKeyFile:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		identityCertFile: certPEM,
		identityCAFile:   certPEM,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRemoteClientIdentityDir reads admin identity directories that
// another user could have changed, or whose key others can read: each is
// refused, naming the file, before anything is sent.
func TestRemoteClientIdentityDir(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, dir string)
		want  string
	}{
		{"key through a link", func(t *testing.T, dir string) {
			elsewhere := filepath.Join(t.TempDir(), "k")
			os.Rename(filepath.Join(dir, identityKeyFile), elsewhere)
			os.Symlink(elsewhere, filepath.Join(dir, identityKeyFile))
		}, identityKeyFile},
		{"certificate through a link", func(t *testing.T, dir string) {
			elsewhere := filepath.Join(t.TempDir(), "c")
			os.Rename(filepath.Join(dir, identityCertFile), elsewhere)
			os.Symlink(elsewhere, filepath.Join(dir, identityCertFile))
		}, identityCertFile},
		{"key others can read", func(t *testing.T, dir string) {
			os.Chmod(filepath.Join(dir, identityKeyFile), 0o644)
		}, identityKeyFile},
		{"key its group can read", func(t *testing.T, dir string) {
			os.Chmod(filepath.Join(dir, identityKeyFile), 0o640)
		}, identityKeyFile},
		{"certificate others can write", func(t *testing.T, dir string) {
			os.Chmod(filepath.Join(dir, identityCertFile), 0o666)
		}, identityCertFile},
		{"directory others can write", func(t *testing.T, dir string) {
			os.Chmod(dir, 0o777)
		}, "writable by users other than its owner"},
		{"directory through a link", func(t *testing.T, dir string) {
			real := dir + ".real"
			os.Rename(dir, real)
			os.Symlink(real, dir)
		}, "symbolic link"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "id")
			writeIdentityDir(t, dir)
			if _, err := remoteClient(dir, "127.0.0.1:1"); err != nil {
				t.Fatalf("a good directory: %v", err)
			}
			tc.setup(t, dir)
			if _, err := remoteClient(dir, "127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want a refusal naming %q", err, tc.want)
			}
		})
	}
}
