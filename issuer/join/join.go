// Package join verifies the attestations that machines join the issuer
// with, against the issuer's token resources: OIDC ID tokens from GitHub
// Actions, GitLab CI, Kubernetes service accounts and any OIDC issuer, and
// signatures by bound key pairs.
//
// An ID token must be a compact JWS in canonical form, each segment
// unpadded base64url with nothing else in it, so that a token has one
// spelling. It is verified with github.com/coreos/go-oidc/v3: the
// signature by a key of the issuer (found through OIDC discovery, or in
// the token's static_jwks), the issuer, the audience, the expiry and
// not-before times with [Leeway], and an allow-list of algorithms
// ([SigningAlgs]: no "none", no HMAC). The issuer and its keys, and then
// the allow rules, come from the token resource's join block (a
// resource.IDTokenJoin): any one rule admits, and a rule admits when
// every claim it names has the value it gives. What is shared by every
// join method that uses ID tokens (decoding, verifying, the replay key)
// is here; what differs is in the method's block.
//
// A refusal is a [*DeniedError] whose Check names the failed check in
// words fit for the joining machine, without the rules; its Detail is for
// the audit log.
package join

import (
	"errors"
	"time"
)

// Leeway is the clock skew allowed on an ID token's exp, nbf and iat.
const Leeway = time.Minute

// SigningAlgs are the JWS algorithms an ID token may be signed with.
var SigningAlgs = []string{"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256"}

// DefaultGitHubIssuer is the issuer of GitHub Actions' ID tokens on
// github.com.
const DefaultGitHubIssuer = "https://token.actions.githubusercontent.com"

// Checks: the Check of a DeniedError. Clients may show them; they never
// name a rule or a claim's expected value.
const (
	CheckMalformed      = "malformed token"
	CheckAlgorithm      = "unsupported algorithm" // followed by the algorithm
	CheckUnknownKeyID   = "unknown key id"
	CheckSignature      = "signature does not verify"
	CheckIssuer         = "issuer mismatch"
	CheckAudience       = "audience mismatch"
	CheckExpired        = "token expired"
	CheckNotYetValid    = "token not yet valid"
	CheckNoRule         = "no allow rule matched"
	CheckReplay         = "ID token was already used"
	CheckChallenge      = "challenge unknown, used or expired"
	CheckTokenUnknown   = "token resource unknown"
	CheckTokenExpired   = "token resource expired"
	CheckMethodMismatch = "join method mismatch"
	CheckWrongBot       = "identity belongs to another bot"
)

// A DeniedError is a refused attestation.
type DeniedError struct {
	// Check names the failed check, such as "audience mismatch". It is
	// shown to the joining machine.
	Check string
	// Detail says more, for the audit log only: it may name expected
	// values that the joining machine must not learn.
	Detail string
}

func (e *DeniedError) Error() string {
	if e.Detail == "" {
		return "join denied: " + e.Check
	}
	return "join denied: " + e.Check + ": " + e.Detail
}

func deny(check, detail string) *DeniedError {
	return &DeniedError{Check: check, Detail: detail}
}

// ErrUnavailable is wrapped by errors that come from failing to fetch an
// issuer's discovery document or keys: the attestation was not judged,
// and a later attempt may succeed.
var ErrUnavailable = errors.New("issuer keys unavailable")

// An Attestation is what a verified and admitted ID token says.
type Attestation struct {
	Issuer   string
	Subject  string
	Audience []string
	// Expiry is the token's exp; the issuer remembers the token as used
	// until Expiry plus Leeway.
	Expiry time.Time
	// ReplayKey identifies the token for the replay check: derived from
	// the issuer and the jti, or, for a token without a jti, from the
	// issuer and the decoded header and payload (the bytes signed).
	ReplayKey string
	// Claims are the token's claims, numbers as json.Number.
	Claims map[string]any
	// Rule is the index of the allow rule that admitted the token.
	Rule int
}
