package server

import (
	"math"
	"time"

	"github.com/mwi-project/mwi/internal/httpjson"
)

// Bounds of the requests the issuer decodes. Every string and list in a
// request is bounded, so that nothing a caller sends is copied whole into
// memory, the store or the audit log; past a bound the request is refused
// with a 400 that names the field, before any other work.
const (
	// maxName bounds names: of a token resource, a bot, a login, a host,
	// a Kubernetes cluster or label; a join method; a join token secret
	// and a challenge (both much shorter).
	maxName = 253
	// maxPEM bounds a PEM certificate request (an RSA 8192 one is about
	// 3.2 KiB).
	maxPEM = 8 << 10
	// maxPublicKey bounds an SSH public key in authorized_keys form, and
	// an SSH signature in base64.
	maxPublicKey = 4 << 10
	// maxIDToken bounds an OIDC ID token; GitHub's are about 1.5 KiB.
	maxIDToken = 16 << 10
	// maxItems bounds every list and map: logins, host names, clusters,
	// label selectors and their labels.
	maxItems = 64
	// maxHostKeys is the authority's bound on host keys in one request.
	maxHostKeys = 8
	// maxTTLSeconds is the longest lifetime in seconds that a
	// time.Duration holds (about 292 years); more would wrap around.
	maxTTLSeconds = math.MaxInt64 / int64(time.Second)
)

// credentialLimits bound a join or a renewal: public keys, host keys and
// an ID token.
var credentialLimits = httpjson.Limits{
	Body:   64 << 10,
	String: maxName,
	Items:  maxItems,
	Strings: map[string]int{
		"id_token":             maxIDToken,
		"signature":            maxPublicKey,
		"keys.identity_csr":    maxPEM,
		"keys.ssh":             maxPublicKey,
		"host_keys.public_key": maxPublicKey,
		"kubernetes.csr":       maxPEM,
	},
	Lists: map[string]int{"host_keys": maxHostKeys},
}

// smallLimits bound requests that carry names only: a challenge request,
// a token to create.
var smallLimits = httpjson.Limits{Body: 4 << 10, String: maxName, Items: maxItems}

// lockLimits bound a lock request: its reason, which the authority bounds
// at the same length.
var lockLimits = httpjson.Limits{Body: 4 << 10, String: maxName, Items: maxItems,
	Strings: map[string]int{"reason": 1024}}

// refusalLimits bound an SSH refusal that a host reports: names, its
// reason, and the key ID of the refused certificate.
var refusalLimits = httpjson.Limits{Body: 8 << 10, String: maxName, Items: maxItems,
	Strings: map[string]int{"reason": 1024, "key_id": 1024}}
