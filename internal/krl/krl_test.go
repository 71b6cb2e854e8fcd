package krl

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// sshKeygen returns the path of ssh-keygen, or skips the test with how to
// install it; with MWI_REQUIRE_INTEGRATION=1 (as in CI) it fails instead.
func sshKeygen(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("ssh-keygen")
	if err != nil {
		msg := "ssh-keygen not found: apt-get install -y --no-install-recommends openssh-client"
		if os.Getenv("MWI_REQUIRE_INTEGRATION") == "1" {
			t.Fatal(msg + " (MWI_REQUIRE_INTEGRATION=1)")
		}
		t.Skip(msg)
	}
	return p
}

func newSigner(t *testing.T) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// userCert writes a user certificate with the given key ID and serial,
// signed by ca, into dir and returns its path.
func userCert(t *testing.T, dir string, ca ssh.Signer, keyID string, serial uint64) string {
	t.Helper()
	cert := &ssh.Certificate{
		Key:             newSigner(t).PublicKey(),
		Serial:          serial,
		CertType:        ssh.UserCert,
		KeyId:           keyID,
		ValidPrincipals: []string{"deploy"},
		ValidAfter:      uint64(time.Now().Add(-time.Minute).Unix()),
		ValidBefore:     uint64(time.Now().Add(time.Hour).Unix()),
	}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(dir, "cert-*.pub")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(ssh.MarshalAuthorizedKey(cert)); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

// TestRevokedByOpenSSH checks the KRLs Marshal writes against OpenSSH's
// own reader: ssh-keygen -Q reports exactly the certificates revoked by
// key ID or serial under their CA as REVOKED, and lists the file with -l.
func TestRevokedByOpenSSH(t *testing.T) {
	keygen := sshKeygen(t)
	dir := t.TempDir()
	ca, other := newSigner(t), newSigner(t)
	revokedID := "bot=ci instance=0f3a"
	krl := &KRL{
		Version:   7,
		Generated: time.Now(),
		Comment:   "mwi test",
		Certs: []CertRevocation{{
			CA:      ca.PublicKey(),
			KeyIDs:  []string{"bot=web instance=99", revokedID, revokedID, "bot=a instance=1"},
			Serials: []uint64{42, 7, 42},
		}},
	}
	data, err := krl.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	krlPath := filepath.Join(dir, "revoked.krl")
	if err := os.WriteFile(krlPath, data, 0o644); err != nil {
		t.Fatal(err)
	}
	emptyPath := filepath.Join(dir, "empty.krl")
	empty, err := (&KRL{Version: 1}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(emptyPath, empty, 0o644); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name    string
		krl     string
		ca      ssh.Signer
		keyID   string
		serial  uint64
		revoked bool
	}{
		{"revoked key ID", krlPath, ca, revokedID, 1, true},
		{"another revoked key ID", krlPath, ca, "bot=a instance=1", 1, true},
		{"revoked serial", krlPath, ca, "bot=other instance=2", 42, true},
		{"key ID not revoked", krlPath, ca, "bot=ci instance=0f3b", 1, false},
		{"key ID a prefix of a revoked one", krlPath, ca, "bot=ci instance=0f3", 1, false},
		{"revoked key ID under another CA", krlPath, other, revokedID, 1, false},
		{"revoked serial under another CA", krlPath, other, "x", 42, false},
		{"empty KRL", emptyPath, ca, revokedID, 42, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cert := userCert(t, dir, tc.ca, tc.keyID, tc.serial)
			out, err := exec.Command(keygen, "-Q", "-f", tc.krl, cert).CombinedOutput()
			var exit *exec.ExitError
			switch {
			case tc.revoked && (!errors.As(err, &exit) || !bytes.Contains(out, []byte("REVOKED"))):
				t.Errorf("ssh-keygen -Q: %v, %s; want REVOKED", err, out)
			case !tc.revoked && (err != nil || !bytes.Contains(out, []byte(": ok"))):
				t.Errorf("ssh-keygen -Q: %v, %s; want ok", err, out)
			}
		})
	}

	out, err := exec.Command(keygen, "-Q", "-l", "-f", krlPath).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen -Q -l: %v\n%s", err, out)
	}
	for _, want := range []string{"KRL version 7", "mwi test", revokedID, "bot=web instance=99"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("ssh-keygen -Q -l does not show %q:\n%s", want, out)
		}
	}
	if out, err := exec.Command(keygen, "-Q", "-l", "-f", emptyPath).CombinedOutput(); err != nil {
		t.Errorf("ssh-keygen -Q -l of the empty KRL: %v\n%s", err, out)
	}
}

// TestMarshal checks what Marshal refuses and that equal content has one
// encoding, whatever the order of its key IDs and serials.
func TestMarshal(t *testing.T) {
	ca := newSigner(t).PublicKey()
	for _, tc := range []struct {
		name string
		krl  KRL
		err  string
	}{
		{"no CA", KRL{Certs: []CertRevocation{{KeyIDs: []string{"a"}}}}, "no CA key"},
		{"empty key ID", KRL{Certs: []CertRevocation{{CA: ca, KeyIDs: []string{""}}}}, "empty or holds a NUL"},
		{"NUL in key ID", KRL{Certs: []CertRevocation{{CA: ca, KeyIDs: []string{"a\x00b"}}}}, "empty or holds a NUL"},
		{"fine", KRL{Certs: []CertRevocation{{CA: ca, KeyIDs: []string{"a"}}}}, ""},
	} {
		_, err := tc.krl.Marshal()
		if (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: Marshal error %v, want %q", tc.name, err, tc.err)
		}
	}
	a, _ := (&KRL{Version: 2, Certs: []CertRevocation{{CA: ca, KeyIDs: []string{"b", "a"}, Serials: []uint64{3, 1}}}}).Marshal()
	b, _ := (&KRL{Version: 2, Certs: []CertRevocation{{CA: ca, KeyIDs: []string{"a", "b", "a"}, Serials: []uint64{1, 3}}}}).Marshal()
	if !bytes.Equal(a, b) {
		t.Error("the same content in another order has another encoding")
	}
	if !bytes.HasPrefix(a, []byte("SSHKRL\n\x00")) {
		t.Errorf("KRL starts %q, want the magic SSHKRL\\n\\0", a[:8])
	}
}

// TestCheck: what Marshal writes checks out; what is not a KRL, which
// sshd would read as a list of keys that revokes nothing, does not.
func TestCheck(t *testing.T) {
	ca := newTestCA(t)
	full, err := (&KRL{Version: 7, Comment: "c", Certs: []CertRevocation{{CA: ca, KeyIDs: []string{"bot=a instance=b"}, Serials: []uint64{1}}}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	empty, _ := (&KRL{}).Marshal()
	for _, tc := range []struct {
		name string
		data []byte
		ok   bool
	}{
		{"full", full, true},
		{"no sections", empty, true},
		{"empty", nil, false},
		{"text", []byte("SSHKRL 1"), false},
		{"html", []byte("<html>502 Bad Gateway</html>"), false},
		{"public key", []byte("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"), false},
		{"header only", full[:36], false},
		{"truncated section", full[:len(full)-1], false},
		{"trailing byte", append(bytes.Clone(full), 1), false},
		{"format version 2", append(append(bytes.Clone(full[:8]), 0, 0, 0, 2), full[12:]...), false},
	} {
		if err := Check(tc.data); (err == nil) != tc.ok {
			t.Errorf("%s: Check = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}

func newTestCA(t *testing.T) ssh.PublicKey {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
