package attest

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/config"
)

// BoundKeypairSource is the Source of join method bound_keypair: a
// signature by the private key Key over a fresh challenge from the issuer.
type BoundKeypairSource struct {
	Key config.SecretSource
}

// Attest proves possession of the bound key pair: it reads the private
// key, asks the issuer for a challenge for req.TokenName (presenting
// identity, if not nil, as Attest says), and signs the fixed context
// api.BoundKeypairContext followed by the challenge string's bytes, as
// sent (api.BoundKeypairSignedData). It sets req.Challenge and
// req.Signature (ssh.Signature in wire form, base64). The key is read at
// every join, so a rotated credential is used from the next join, and it
// is not kept.
func (s BoundKeypairSource) Attest(ctx context.Context, req *api.JoinRequest, ch Challenger, identity *tls.Certificate) error {
	signer, err := readKey(s.Key)
	if err != nil {
		return fmt.Errorf("bound key pair: %w", err)
	}
	resp, err := ch.Challenge(ctx, identity, req.TokenName)
	if err != nil {
		return fmt.Errorf("bound key pair: challenge: %w", err)
	}
	if resp.Challenge == "" {
		return errors.New("bound key pair: the issuer's answer has no challenge")
	}
	sig, err := sign(signer, api.BoundKeypairSignedData(resp.Challenge))
	if err != nil {
		return fmt.Errorf("bound key pair: signing the challenge: %w", err)
	}
	req.Challenge, req.Signature = resp.Challenge, base64.StdEncoding.EncodeToString(ssh.Marshal(sig))
	return nil
}

// readKey reads and parses the OpenSSH private key src names.
func readKey(src config.SecretSource) (ssh.Signer, error) {
	where := src.File
	if src.Credential != "" {
		where = "credential " + src.Credential
	}
	pemText, err := src.Read()
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey([]byte(pemText))
	var pm *ssh.PassphraseMissingError
	switch {
	case errors.As(err, &pm):
		return nil, fmt.Errorf("private key %s is encrypted with a passphrase; mwid needs it without one (systemd's LoadCredentialEncrypted= protects it at rest)", where)
	case err != nil:
		return nil, fmt.Errorf("private key %s: %w", where, err)
	}
	return signer, nil
}

// sign signs data with s. An RSA key signs with SHA-512 rather than the
// SHA-1 of ssh-rsa.
func sign(s ssh.Signer, data []byte) (*ssh.Signature, error) {
	if as, ok := s.(ssh.AlgorithmSigner); ok && s.PublicKey().Type() == ssh.KeyAlgoRSA {
		return as.SignWithAlgorithm(rand.Reader, data, ssh.KeyAlgoRSASHA512)
	}
	return s.Sign(rand.Reader, data)
}
