package join_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/issuer/join"
)

func signer(t *testing.T, key any) ssh.Signer {
	t.Helper()
	s, err := ssh.NewSignerFromKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// sign signs data with s as it is, with algorithm alg if not empty.
func sign(t *testing.T, s ssh.Signer, data, alg string) string {
	t.Helper()
	var sig *ssh.Signature
	var err error
	if alg != "" {
		sig, err = s.(ssh.AlgorithmSigner).SignWithAlgorithm(rand.Reader, []byte(data), alg)
	} else {
		sig, err = s.Sign(rand.Reader, []byte(data))
	}
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(ssh.Marshal(sig))
}

func TestVerifyKeypair(t *testing.T) {
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ed, other, rs := signer(t, edKey), signer(t, otherKey), signer(t, rsaKey)
	const challenge = "q83vEjRWeJC6TY/mFkLVbKpn0aSx5IqZf0zQxrzkZqk="
	signed := string(api.BoundKeypairSignedData(challenge))
	if signed != "mwi bound_keypair join v1\x00"+challenge {
		t.Fatalf("signed data = %q", signed)
	}
	if err := join.VerifyKeypair(ed.PublicKey(), challenge, sign(t, ed, signed, "")); err != nil {
		t.Errorf("good ed25519 signature: %v", err)
	}
	if err := join.VerifyKeypair(rs.PublicKey(), challenge, sign(t, rs, signed, ssh.KeyAlgoRSASHA512)); err != nil {
		t.Errorf("good rsa-sha2-512 signature: %v", err)
	}
	if err := join.VerifyKeypair(rs.PublicKey(), challenge, sign(t, rs, signed, ssh.KeyAlgoRSASHA256)); err != nil {
		t.Errorf("good rsa-sha2-256 signature: %v", err)
	}
	for name, sig := range map[string]string{
		"wrong key":              sign(t, other, signed, ""),
		"other challenge":        sign(t, ed, signed+"x", ""),
		"decoded challenge":      sign(t, ed, "mwi bound_keypair join v1\x00\xab\xcd", ""),
		"bare challenge":         sign(t, ed, challenge, ""),
		"context without NUL":    sign(t, ed, "mwi bound_keypair join v1"+challenge, ""),
		"other context":          sign(t, ed, "mwi bound_keypair join v2\x00"+challenge, ""),
		"not base64":             "%%%",
		"not a signature":        base64.StdEncoding.EncodeToString([]byte("hello")),
		"empty":                  "",
		"another key type's sig": sign(t, rs, signed, ssh.KeyAlgoRSASHA512),
	} {
		var d *join.DeniedError
		if err := join.VerifyKeypair(ed.PublicKey(), challenge, sig); err == nil {
			t.Errorf("%s: verified", name)
		} else if !asDenied(err, &d) || d.Check != join.CheckSignature {
			t.Errorf("%s: error = %v, want denial %q", name, err, join.CheckSignature)
		}
	}
	// SHA-1 RSA signatures are refused even when they verify.
	if err := join.VerifyKeypair(rs.PublicKey(), challenge, sign(t, rs, signed, ssh.KeyAlgoRSA)); err == nil {
		t.Error("ssh-rsa (SHA-1) signature accepted")
	}
}

// TestVerifyKeypairBareChallenge checks that a signature over the bare
// challenge, as mwid made before signatures had a context, is refused and
// that the audit detail says why.
func TestVerifyKeypairBareChallenge(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	s := signer(t, key)
	const challenge = "q83vEjRWeJC6TY/mFkLVbKpn0aSx5IqZf0zQxrzkZqk="
	err := join.VerifyKeypair(s.PublicKey(), challenge, sign(t, s, challenge, ""))
	var d *join.DeniedError
	if !asDenied(err, &d) || d.Check != join.CheckSignature || !strings.Contains(d.Detail, "bare challenge") {
		t.Errorf("bare challenge: %v", err)
	}
}
