package authority

import (
	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/internal/krl"
	"github.com/mwi-project/mwi/issuer/ca"
)

// CAs returns the authorities in use: the last SetCAs gave, or CA.
func (a *Authority) CAs() *ca.Authority {
	if c := a.cas.Load(); c != nil {
		return c
	}
	return a.CA
}

// SetCAs makes c the authorities that later requests are signed and
// checked with, as a rotation moves to another phase. Requests in
// progress finish with the authorities they started with.
func (a *Authority) SetCAs(c *ca.Authority) { a.cas.Store(c) }

// authorizedKeys returns keys in authorized_keys form, one line each.
func authorizedKeys(keys []ssh.PublicKey) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = string(ssh.MarshalAuthorizedKey(k))
	}
	return out
}

// revocations revokes the key IDs ids under each of cas: a certificate
// from either authority of a rotation is refused.
func revocations(cas []ssh.PublicKey, ids []string) []krl.CertRevocation {
	out := make([]krl.CertRevocation, len(cas))
	for i, c := range cas {
		out[i] = krl.CertRevocation{CA: c, KeyIDs: ids}
	}
	return out
}
