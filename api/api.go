// Package api defines the JSON wire types shared by mwi-issuer, mwid, the
// client package and mwictl.
//
// It has no dependencies beyond the standard library so that every side of a
// connection, and the contract tests, can import it.
package api

import "time"

// JoinMethodToken is the join method of a one-time join token.
const JoinMethodToken = "token"

// PublicKeys carries the public halves of keys that mwid generated in memory.
// Private keys never cross the wire.
type PublicKeys struct {
	// IdentityCSR is a PEM-encoded PKCS #10 request for the bot identity,
	// signed by its key as proof of possession.
	IdentityCSR string `json:"identity_csr"`
	// SSH is the SSH user key in authorized_keys form.
	SSH string `json:"ssh"`
}

// JoinRequest is the body of POST /v1/join on the issuer.
type JoinRequest struct {
	JoinMethod string     `json:"join_method"`
	Token      string     `json:"token,omitempty"`
	Keys       PublicKeys `json:"keys"`
	// SSHLogins are the principals wanted on the SSH certificate. Empty means
	// every login the bot's roles allow.
	SSHLogins []string `json:"ssh_logins,omitempty"`
	// TTLSeconds is the wanted certificate lifetime; the issuer caps it.
	TTLSeconds int64 `json:"ttl_seconds"`
}

// RenewRequest is the body of POST /v1/renew on the issuer. The caller is
// identified by the bot identity presented over mutual TLS.
type RenewRequest struct {
	Keys       PublicKeys `json:"keys"`
	SSHLogins  []string   `json:"ssh_logins,omitempty"`
	TTLSeconds int64      `json:"ttl_seconds"`
}

// Credentials is the issuer's answer to a join or a renewal.
type Credentials struct {
	Bot        string `json:"bot"`
	Instance   string `json:"instance"`
	Generation uint64 `json:"generation"`
	// IdentityCertificate is the PEM-encoded bot identity certificate.
	IdentityCertificate string `json:"identity_certificate"`
	// SSHCertificate is the SSH user certificate in authorized_keys form.
	SSHCertificate string    `json:"ssh_certificate"`
	Expires        time.Time `json:"expires"`
}

// ErrorBody is the JSON shape of every non-2xx answer of the issuer and of
// mwid's local API.
type ErrorBody struct {
	Error Error `json:"error"`
}

// Error is a stable machine-readable code and a message for people.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Error codes. Clients match on these, never on messages.
const (
	CodeBadRequest         = "bad_request"
	CodeUnauthenticated    = "unauthenticated"
	CodeTokenUnknown       = "token_unknown"
	CodeTokenUsed          = "token_used"
	CodeTokenExpired       = "token_expired"
	CodeBotUnknown         = "bot_unknown"
	CodeBotLocked          = "bot_locked"
	CodeGenerationMismatch = "generation_mismatch"
	CodeLoginNotAllowed    = "login_not_allowed"
	CodeNotFound           = "not_found"
	CodeAccessDenied       = "access_denied"
	CodeNotJoined          = "not_joined"
	CodeInternal           = "internal"
)

// CreateTokenRequest is the body of POST /admin/v1/tokens on the issuer's
// admin socket.
type CreateTokenRequest struct {
	Bot        string `json:"bot"`
	TTLSeconds int64  `json:"ttl_seconds"`
}

// CreateTokenResponse carries the secret of a new join token. The issuer
// keeps only its hash; this is the one time the secret is shown.
type CreateTokenResponse struct {
	Token   string    `json:"token"`
	Bot     string    `json:"bot"`
	Expires time.Time `json:"expires"`
}

// Status is the body of GET /v1/status on mwid's local API.
type Status struct {
	Joined      bool         `json:"joined"`
	State       string       `json:"state"` // "joining", "ready", "degraded", "expired"
	Bot         string       `json:"bot,omitempty"`
	Instance    string       `json:"instance,omitempty"`
	Generation  uint64       `json:"generation,omitempty"`
	Issuer      string       `json:"issuer"`
	Credentials []Credential `json:"credentials"`
	LastRenewal *time.Time   `json:"last_renewal,omitempty"`
	NextRenewal *time.Time   `json:"next_renewal,omitempty"`
	LastError   string       `json:"last_error,omitempty"`
	LastErrorAt *time.Time   `json:"last_error_at,omitempty"`
}

// Credential describes one credential mwid holds, without its secret parts.
type Credential struct {
	Kind       string    `json:"kind"` // "identity" or "ssh"
	Principals []string  `json:"principals,omitempty"`
	ValidAfter time.Time `json:"valid_after"`
	Expires    time.Time `json:"expires"`
}
