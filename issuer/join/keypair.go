package join

import (
	"encoding/base64"

	"golang.org/x/crypto/ssh"
)

// VerifyKeypair checks a bound key pair's proof of possession: signature
// is the base64 of an SSH signature (ssh.Signature in wire form) by key
// over the bytes of the challenge string, as the issuer sent it. RSA
// signatures must use SHA-256 or SHA-512, not the SHA-1 of "ssh-rsa".
// A refusal is a *DeniedError.
func VerifyKeypair(key ssh.PublicKey, challenge, signature string) error {
	raw, err := base64.StdEncoding.DecodeString(signature)
	if err != nil {
		return deny(CheckSignature, "signature is not base64")
	}
	var sig ssh.Signature
	if err := ssh.Unmarshal(raw, &sig); err != nil {
		return deny(CheckSignature, "signature is not an SSH signature in wire form")
	}
	if sig.Format == ssh.KeyAlgoRSA {
		return deny(CheckSignature, "ssh-rsa (SHA-1) signatures are refused; sign with rsa-sha2-256 or rsa-sha2-512")
	}
	if err := key.Verify([]byte(challenge), &sig); err != nil {
		return deny(CheckSignature, "the signature is not by the registered key: "+err.Error())
	}
	return nil
}
