package join

import (
	"encoding/base64"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
)

// VerifyKeypair checks a bound key pair's proof of possession: signature
// is the base64 of an SSH signature (ssh.Signature in wire form) by key
// over api.BoundKeypairSignedData(challenge), the challenge string as the
// issuer sent it after a fixed context. A signature over the bare
// challenge is refused. RSA signatures must use SHA-256 or SHA-512, not
// the SHA-1 of "ssh-rsa". A refusal is a *DeniedError.
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
	if err := key.Verify(api.BoundKeypairSignedData(challenge), &sig); err != nil {
		if key.Verify([]byte(challenge), &sig) == nil {
			// Said for the audit log: a daemon older than the issuer.
			return deny(CheckSignature, "the signature is over the bare challenge, without the context "+
				"\"mwi bound_keypair join v1\": is mwid older than the issuer?")
		}
		return deny(CheckSignature, "the signature is not by the registered key: "+err.Error())
	}
	return nil
}
