package authority

import (
	"slices"

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

// trustText is what every set of credentials tells a daemon to trust, as
// text: the SSH authorities in authorized_keys form and the pins of the
// issuer's TLS authorities. It depends only on the authorities, so it is
// made once for each set in use (see caTrust) rather than per request.
type trustText struct {
	cas              *ca.Authority
	hostCAs, userCAs []string
	pins             []string
}

// caTrust returns the trustText of cas, the authorities a request is
// signed with, made again only when they change. The slices are the
// caller's own.
func (a *Authority) caTrust(cas *ca.Authority) (hostCAs, userCAs, pins []string) {
	t := a.trust.Load()
	if t == nil || t.cas != cas {
		t = &trustText{cas: cas, hostCAs: authorizedKeys(cas.SSHHostCAs()), userCAs: authorizedKeys(cas.SSHUserCAs()), pins: cas.Pins()}
		a.trust.Store(t)
	}
	return slices.Clone(t.hostCAs), slices.Clone(t.userCAs), slices.Clone(t.pins)
}

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
