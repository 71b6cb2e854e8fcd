package resource

import (
	"crypto/rsa"
	"errors"
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
)

// BoundKeypairJoin is the bound_keypair block of a token: the public key
// whose holder may join.
type BoundKeypairJoin struct {
	// PublicKey is the registered key, as written (authorized_keys form).
	PublicKey string
	// Key is PublicKey parsed.
	Key ssh.PublicKey
}

// BoundKeypair returns t's bound_keypair block, or nil if t has another
// join method.
func (t Token) BoundKeypair() *BoundKeypairJoin {
	b, _ := t.Join.(*BoundKeypairJoin)
	return b
}

// Method returns api.JoinMethodBoundKeypair.
func (*BoundKeypairJoin) Method() api.JoinMethod { return api.JoinMethodBoundKeypair }

// SigningKey returns the registered key.
func (b *BoundKeypairJoin) SigningKey() ssh.PublicKey { return b.Key }

func (b *BoundKeypairJoin) clone() JoinSpec {
	c := *b
	return &c
}

func (*BoundKeypairJoin) parse(p *fileParser, n *yaml.Node, path string, line int) JoinSpec {
	m, ok := p.Fields(n, path, "public_key")
	if !ok {
		return nil
	}
	b := &BoundKeypairJoin{}
	if v := m["public_key"]; v == nil {
		p.Errorf(line, "missing %s.public_key (the key in authorized_keys form)", path)
	} else {
		p.boundKey(v, path+".public_key", b)
	}
	return b
}

// boundKey decodes the public key at path, n, into b. MWI's block names it
// public_key and Teleport's onboarding.initial_public_key; the key is the
// same, in authorized_keys form, and is checked the same way.
func (p *fileParser) boundKey(n *yaml.Node, path string, b *BoundKeypairJoin) {
	s, ok := p.Scalar(n, path)
	if !ok {
		return
	}
	key, err := parseBoundKey(s)
	if err != nil {
		p.Errorf(n.Line, "invalid %s: %v", path, err)
		return
	}
	b.PublicKey = strings.TrimSpace(s)
	b.Key = key
}

// parseBoundKey parses the public key of a bound_keypair token.
func parseBoundKey(s string) (ssh.PublicKey, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("empty")
	}
	key, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(s))
	if err != nil {
		return nil, errors.New("not a public key in authorized_keys form (ssh-ed25519 AAAA...)")
	}
	if strings.TrimSpace(string(rest)) != "" {
		return nil, errors.New("holds more than one key")
	}
	if _, isCert := key.(*ssh.Certificate); isCert {
		return nil, errors.New("want a public key, not a certificate")
	}
	if cpk, ok := key.(ssh.CryptoPublicKey); ok {
		if pub, ok := cpk.CryptoPublicKey().(*rsa.PublicKey); ok && pub.N.BitLen() < 2048 {
			return nil, errors.New("RSA keys must have at least 2048 bits")
		}
	}
	switch key.Type() {
	case ssh.KeyAlgoED25519, ssh.KeyAlgoRSA, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521:
	default:
		return nil, fmt.Errorf("unsupported key type %s (want ssh-ed25519, ecdsa-sha2-* or ssh-rsa)", key.Type())
	}
	return key, nil
}
