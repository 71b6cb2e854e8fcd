package join_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"testing"

	"golang.org/x/crypto/ssh"

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
	if err := join.VerifyKeypair(ed.PublicKey(), challenge, sign(t, ed, challenge, "")); err != nil {
		t.Errorf("good ed25519 signature: %v", err)
	}
	if err := join.VerifyKeypair(rs.PublicKey(), challenge, sign(t, rs, challenge, ssh.KeyAlgoRSASHA512)); err != nil {
		t.Errorf("good rsa-sha2-512 signature: %v", err)
	}
	if err := join.VerifyKeypair(rs.PublicKey(), challenge, sign(t, rs, challenge, ssh.KeyAlgoRSASHA256)); err != nil {
		t.Errorf("good rsa-sha2-256 signature: %v", err)
	}
	for name, sig := range map[string]string{
		"wrong key":              sign(t, other, challenge, ""),
		"other challenge":        sign(t, ed, challenge+"x", ""),
		"decoded challenge":      sign(t, ed, "\xab\xcd", ""),
		"not base64":             "%%%",
		"not a signature":        base64.StdEncoding.EncodeToString([]byte("hello")),
		"empty":                  "",
		"another key type's sig": sign(t, rs, challenge, ssh.KeyAlgoRSASHA512),
	} {
		var d *join.DeniedError
		if err := join.VerifyKeypair(ed.PublicKey(), challenge, sig); err == nil {
			t.Errorf("%s: verified", name)
		} else if !asDenied(err, &d) || d.Check != join.CheckSignature {
			t.Errorf("%s: error = %v, want denial %q", name, err, join.CheckSignature)
		}
	}
	// SHA-1 RSA signatures are refused even when they verify.
	if err := join.VerifyKeypair(rs.PublicKey(), challenge, sign(t, rs, challenge, ssh.KeyAlgoRSA)); err == nil {
		t.Error("ssh-rsa (SHA-1) signature accepted")
	}
}
