// Package api defines the JSON wire types shared by mwi-issuer, mwid, the
// client package and mwictl.
//
// It has no dependencies beyond the standard library so that every side of a
// connection, and the contract tests, can import it.
package api

import "time"

// A JoinMethod names how a machine proves itself when it joins: the
// join_method of a JoinRequest, of mwid's onboarding and of the issuer's
// token resources.
type JoinMethod string

// Join methods. JoinMethodToken is a one-time secret made by the issuer's
// admin command; the others name a token resource on the issuer
// (JoinRequest.TokenName) whose rules admit an attestation.
const (
	JoinMethodToken        JoinMethod = "token"
	JoinMethodGitHub       JoinMethod = "github"
	JoinMethodGitLab       JoinMethod = "gitlab"
	JoinMethodKubernetes   JoinMethod = "kubernetes"
	JoinMethodOIDC         JoinMethod = "oidc"
	JoinMethodBoundKeypair JoinMethod = "bound_keypair"
)

// JoinMethods lists every join method, in the order messages name them.
var JoinMethods = []JoinMethod{
	JoinMethodToken, JoinMethodGitHub, JoinMethodGitLab,
	JoinMethodKubernetes, JoinMethodOIDC, JoinMethodBoundKeypair,
}

// Known reports whether m is one of JoinMethods.
func (m JoinMethod) Known() bool {
	for _, k := range JoinMethods {
		if m == k {
			return true
		}
	}
	return false
}

// UsesIDToken reports whether m joins with an OIDC ID token.
func (m JoinMethod) UsesIDToken() bool {
	switch m {
	case JoinMethodGitHub, JoinMethodGitLab, JoinMethodKubernetes, JoinMethodOIDC:
		return true
	}
	return false
}

// JoinMethodList names the given methods for a message: "a, b or c".
func JoinMethodList(ms ...JoinMethod) string {
	var s string
	for i, m := range ms {
		switch {
		case i == 0:
		case i == len(ms)-1:
			s += " or "
		default:
			s += ", "
		}
		s += string(m)
	}
	return s
}

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
//
// For join methods other than "token", a join is repeated at every renewal
// with a fresh attestation (an ID token is short-lived and cannot renew an
// identity by itself). A daemon that still holds a valid identity makes
// that join over mutual TLS with it, and the issuer then keeps the
// instance, advancing its generation as a renewal would.
type JoinRequest struct {
	JoinMethod JoinMethod `json:"join_method"`
	// Token is the one-time secret of join method "token".
	Token string `json:"token,omitempty"`
	// TokenName names the issuer's token resource for the other methods.
	TokenName string `json:"token_name,omitempty"`
	// IDToken is the OIDC ID token (a JWT) for methods github, gitlab,
	// kubernetes and oidc.
	IDToken string `json:"id_token,omitempty"`
	// Challenge and Signature prove possession of a bound key pair: the
	// challenge from POST /v1/join/challenge, and the SSH signature by the
	// bound key (ssh.Signature in wire form, base64) over
	// BoundKeypairSignedData(Challenge).
	Challenge string     `json:"challenge,omitempty"`
	Signature string     `json:"signature,omitempty"`
	Keys      PublicKeys `json:"keys"`
	// SSHLogins are the principals wanted on the SSH certificate. Empty means
	// every login the bot's roles allow.
	SSHLogins []string `json:"ssh_logins,omitempty"`
	// TTLSeconds is the wanted certificate lifetime; the issuer caps it.
	TTLSeconds int64 `json:"ttl_seconds"`
	// IdentityTTLSeconds is the wanted lifetime of the bot identity, which
	// may be longer than TTLSeconds; zero means the same. The issuer caps it.
	IdentityTTLSeconds int64 `json:"identity_ttl_seconds,omitempty"`
	// HostKeys asks for SSH host certificates for these host keys.
	HostKeys []HostKeyRequest `json:"host_keys,omitempty"`
	// Kubernetes asks for Kubernetes client certificates.
	Kubernetes *KubernetesRequest `json:"kubernetes,omitempty"`
}

// HostKeyRequest asks for an SSH host certificate. The host's key stays on
// the host; only its public half is sent.
type HostKeyRequest struct {
	// PublicKey is the host's public key in authorized_keys form.
	PublicKey string `json:"public_key"`
	// Names are the host names wanted on the certificate. Empty means every
	// name the bot's roles allow; the issuer refuses any other name.
	Names []string `json:"names,omitempty"`
	// Labels are the labels wanted on the certificate, by which roles
	// select hosts (node_labels). The issuer refuses a label that the
	// bot's roles do not allow (host_labels).
	Labels map[string]string `json:"labels,omitempty"`
}

// BoundKeypairContext is what a bound key pair's signature over a
// challenge begins with. The fixed context makes the signature good for
// joining this issuer and for nothing else: a key that signs something
// for another purpose, or is asked to sign an arbitrary string, does not
// sign an mwi join.
const BoundKeypairContext = "mwi bound_keypair join v1\x00"

// BoundKeypairSignedData returns the bytes a bound key pair signs to join
// with challenge: BoundKeypairContext followed by the challenge string's
// bytes, as the issuer sent them.
func BoundKeypairSignedData(challenge string) []byte {
	return []byte(BoundKeypairContext + challenge)
}

// ChallengeRequest is the body of POST /v1/join/challenge on the issuer.
type ChallengeRequest struct {
	TokenName string `json:"token_name"`
}

// ChallengeResponse carries a fresh challenge for a bound key pair join. It
// can be used once, before it expires.
type ChallengeResponse struct {
	Challenge string    `json:"challenge"`
	Expires   time.Time `json:"expires"`
}

// RenewRequest is the body of POST /v1/renew on the issuer. The caller is
// identified by the bot identity presented over mutual TLS.
type RenewRequest struct {
	Keys       PublicKeys `json:"keys"`
	SSHLogins  []string   `json:"ssh_logins,omitempty"`
	TTLSeconds int64      `json:"ttl_seconds"`
	// IdentityTTLSeconds is as in JoinRequest.
	IdentityTTLSeconds int64            `json:"identity_ttl_seconds,omitempty"`
	HostKeys           []HostKeyRequest `json:"host_keys,omitempty"`
	// Kubernetes asks for Kubernetes client certificates.
	Kubernetes *KubernetesRequest `json:"kubernetes,omitempty"`
}

// Credentials is the issuer's answer to a join or a renewal.
type Credentials struct {
	Bot        string `json:"bot"`
	Instance   string `json:"instance"`
	Generation uint64 `json:"generation"`
	// IdentityCertificate is the PEM-encoded bot identity certificate.
	IdentityCertificate string `json:"identity_certificate"`
	// SSHCertificate is the SSH user certificate in authorized_keys form,
	// or empty when the bot's roles allow no logins.
	SSHCertificate string `json:"ssh_certificate,omitempty"`
	// HostCertificates answer the request's HostKeys, in the same order,
	// in authorized_keys form.
	HostCertificates []string `json:"host_certificates,omitempty"`
	// SSHHostCAs are the issuer's SSH host authorities in authorized_keys
	// form, for known_hosts @cert-authority lines.
	SSHHostCAs []string `json:"ssh_host_cas"`
	// SSHUserCAs are the issuer's SSH user authorities in authorized_keys
	// form, for a host's TrustedUserCAKeys. Both lists hold two
	// authorities while one is rotated.
	SSHUserCAs []string `json:"ssh_user_cas,omitempty"`
	// IssuerCAPins are the pins (sha256:…) of every TLS authority the
	// issuer's serving certificate may come from: two while it is
	// rotated, so that a daemon that pins the issuer keeps trusting it
	// once the serving certificate changes authority.
	IssuerCAPins []string  `json:"issuer_ca_pins,omitempty"`
	Expires      time.Time `json:"expires"`
	// Kubernetes answers the request's Kubernetes selectors: one
	// certificate for each cluster that they select and the roles allow.
	Kubernetes []KubernetesCredential `json:"kubernetes,omitempty"`
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
	CodeBadRequest      = "bad_request"
	CodeUnauthenticated = "unauthenticated"
	CodeTokenUnknown    = "token_unknown"
	CodeTokenUsed       = "token_used"
	CodeTokenExpired    = "token_expired"
	// CodeJoinDenied is a refused attestation (ID token, key pair). Its
	// message names the failed check but not the rules.
	CodeJoinDenied     = "join_denied"
	CodeNotRenewable   = "not_renewable"
	CodeBotUnknown     = "bot_unknown"
	CodeBotLocked      = "bot_locked"
	CodeInstanceLocked = "instance_locked"
	// CodeTokenLocked refuses an instance that joined with a locked token
	// resource (mwi-issuer lock add --token).
	CodeTokenLocked        = "token_locked"
	CodeGenerationMismatch = "generation_mismatch"
	CodeLoginNotAllowed    = "login_not_allowed"
	CodeHostNameNotAllowed = "host_name_not_allowed"
	// CodeHostLabelNotAllowed refuses a host certificate with a label that
	// the bot's roles do not allow (host_labels).
	CodeHostLabelNotAllowed = "host_label_not_allowed"
	CodeNotFound            = "not_found"
	CodeAccessDenied        = "access_denied"
	CodeNotJoined           = "not_joined"
	CodeRenewFailed         = "renew_failed"
	CodeReloadFailed        = "reload_failed"
	// CodeIssuerFailed is a request of mwid's local API that mwid passed
	// on to the issuer, and that failed there or on the way.
	CodeIssuerFailed = "issuer_failed"
	CodeInternal     = "internal"
	// CodeAuditUnavailable refuses an issuance whose audit record could
	// not be written; the issuer's health fails with it too.
	CodeAuditUnavailable = "audit_unavailable"
	// CodeStoreUnavailable refuses a request that needs the issuer's
	// database while the issuer cannot reach it; the issuer's health fails
	// with it too. It clears by itself when the database is back.
	CodeStoreUnavailable = "store_unavailable"
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

// IssueAdminRequest is the body of POST /admin/v1/admins on the issuer's
// admin socket: a certificate request for an admin identity, which lets
// its holder use the admin API over the issuer's HTTPS listener. The key
// stays with the caller.
type IssueAdminRequest struct {
	Name       string `json:"name"`
	CSR        string `json:"csr"` // PEM
	TTLSeconds int64  `json:"ttl_seconds"`
}

// IssueAdminResponse carries an admin identity's certificate and the
// authority that the issuer's HTTPS certificate chains to, which the
// holder verifies the issuer by.
type IssueAdminResponse struct {
	Name        string    `json:"name"`
	Certificate string    `json:"certificate"` // PEM
	IssuerCA    string    `json:"issuer_ca"`   // PEM
	Expires     time.Time `json:"expires"`
}

// Lock is a lock on the issuer: of a whole bot, or of one instance of it
// (Instance set), such as the instance whose identity a renewal showed
// was copied.
type Lock struct {
	Bot string `json:"bot,omitempty"`
	// Instance is the locked instance's ID; empty in a lock of a whole
	// bot or of a token.
	Instance string `json:"instance,omitempty"`
	// Token is the locked token resource: it refuses every instance that
	// joined with it. Empty in a lock of a bot or of an instance.
	Token  string    `json:"token,omitempty"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
	// Expires is when the lock lifts by itself; zero for a lock that
	// stays until it is removed.
	Expires time.Time `json:"expires,omitzero"`
}

// LockTarget names what a lock applies to: exactly one of a bot, an
// instance and a token resource. It is the body of POST
// /admin/v1/locks/remove on the issuer's admin socket.
type LockTarget struct {
	Bot      string `json:"bot,omitempty"`
	Instance string `json:"instance,omitempty"`
	Token    string `json:"token,omitempty"`
}

// String names the target as people read it: "bot NAME", "instance ID" or
// "token NAME".
func (t LockTarget) String() string {
	switch {
	case t.Instance != "":
		return "instance " + t.Instance
	case t.Token != "":
		return "token " + t.Token
	}
	return "bot " + t.Bot
}

// Target returns what l locks.
func (l Lock) Target() LockTarget {
	return LockTarget{Bot: l.Bot, Instance: l.Instance, Token: l.Token}
}

// LockRequest is the body of POST /admin/v1/locks, which names its target,
// and of POST /admin/v1/bots/{bot}/lock and /admin/v1/instances/{id}/lock,
// whose path does, on the issuer's admin socket.
type LockRequest struct {
	LockTarget
	Reason string `json:"reason"`
	// TTLSeconds, if positive, is how long the lock lasts; zero means
	// until it is removed.
	TTLSeconds int64 `json:"ttl_seconds,omitempty"`
}

// LockList is the body of GET /v1/locks on the issuer: the locks in force,
// for hosts that enforce them. The answer carries an ETag; a request with
// If-None-Match of the current one is answered 304 Not Modified.
type LockList struct {
	Locks []Lock `json:"locks"`
	// Now is the issuer's time when it answered.
	Now time.Time `json:"now"`
}

// SSHRefusal is a login that a host refused to an MWI certificate, as
// mwictl ssh authorized-principals reports it to mwid (POST
// /v1/ssh/refusals on the local API) and mwid to the issuer's audit log
// (POST /v1/audit/ssh-refusal).
type SSHRefusal struct {
	Login    string `json:"login"`
	Bot      string `json:"bot,omitempty"`
	Instance string `json:"instance,omitempty"`
	KeyID    string `json:"key_id,omitempty"`
	Serial   string `json:"serial,omitempty"`
	Reason   string `json:"reason"`
	// Host is the refusing host's name (its certificate's first name), as
	// mwid fills it in.
	Host string `json:"host,omitempty"`
}

// Locks is the body of GET /admin/v1/locks on the issuer's admin socket.
type Locks struct {
	Locks []Lock `json:"locks"`
}

// Node is a host in the issuer's inventory: a bot instance that was
// issued SSH host certificates, as of its last join or renewal.
type Node struct {
	// Names are the host's names, from its host certificates.
	Names    []string          `json:"names" yaml:"names"`
	Instance string            `json:"instance" yaml:"instance"`
	Bot      string            `json:"bot" yaml:"bot"`
	Labels   map[string]string `json:"labels" yaml:"labels"`
	// Address is the address the host's last request came from.
	Address string `json:"address,omitempty" yaml:"address,omitempty"`
	// Version is the version of mwid on the host; empty if unknown.
	Version string `json:"version,omitempty" yaml:"version,omitempty"`
	// Renewed is when the host was last issued host certificates.
	Renewed time.Time `json:"renewed" yaml:"renewed"`
}

// Nodes is the body of GET /admin/v1/nodes on the issuer's admin socket.
type Nodes struct {
	Nodes []Node `json:"nodes" yaml:"nodes"`
}

// MaxReachableNodes bounds the nodes of one ReachableNodes answer.
const MaxReachableNodes = 1000

// ReachableNode is a host of the issuer's inventory on which a bot's roles
// allow at least one login.
type ReachableNode struct {
	// Name is the host's first name, from its host certificate.
	Name string `json:"name"`
	// Names are all the host's names, Name first.
	Names  []string          `json:"names"`
	Labels map[string]string `json:"labels"`
	// Logins are the logins the bot's roles allow on the host, sorted.
	Logins []string `json:"logins"`
}

// ReachableNodes is the body of GET /v1/nodes on the issuer: the hosts
// the calling bot may log in to, ordered by name. At most
// MaxReachableNodes are listed; Truncated says that more were left out.
type ReachableNodes struct {
	Nodes     []ReachableNode `json:"nodes"`
	Truncated bool            `json:"truncated,omitempty"`
}

// SSHNodes is the body of GET /v1/ssh/nodes on mwid's local API: the
// issuer's ReachableNodes, keeping only the logins that mwid's SSH user
// certificate holds, and what an ssh_config needs to reach them.
type SSHNodes struct {
	Bot string `json:"bot"`
	// Agent is the path of mwid's agent socket.
	Agent     string          `json:"agent"`
	Nodes     []ReachableNode `json:"nodes"`
	Truncated bool            `json:"truncated,omitempty"`
}

// Status is the body of GET /v1/status on mwid's local API.
type Status struct {
	Joined      bool         `json:"joined"`
	State       string       `json:"state"` // "joining", "ready", "degraded", "expired", "refused"
	Bot         string       `json:"bot,omitempty"`
	Instance    string       `json:"instance,omitempty"`
	Generation  uint64       `json:"generation,omitempty"`
	Issuer      string       `json:"issuer"` // the issuer address in use: the last to answer
	Credentials []Credential `json:"credentials"`
	Outputs     []Output     `json:"outputs"`
	LastRenewal *time.Time   `json:"last_renewal,omitempty"`
	NextRenewal *time.Time   `json:"next_renewal,omitempty"`
	LastError   string       `json:"last_error,omitempty"`
	LastErrorAt *time.Time   `json:"last_error_at,omitempty"`
	// Refusal is set, and State is "refused", while the issuer refuses
	// mwid in a way that retrying cannot overcome.
	Refusal *Refusal     `json:"refusal,omitempty"`
	Config  ConfigStatus `json:"config"`
	// Renewal is set only in the answer to POST /v1/renew: it says which
	// renewal answered the request.
	Renewal *RenewOutcome `json:"renewal,omitempty"`
}

// Refusal is an issuer's refusal that retrying cannot overcome, such as a
// locked bot or a used join token: mwid retries it only rarely, or when a
// reload or mwictl renew asks, until an operator acts.
type Refusal struct {
	// Code is the issuer's error code, such as "bot_locked".
	Code string `json:"code"`
	// Message is the issuer's message.
	Message string `json:"message"`
	// Action says what an operator must do.
	Action string `json:"action"`
}

// RenewOutcome says which renewal answered a POST /v1/renew. Requests
// share renewals: mwid asks the issuer once for the requests that arrive
// during a renewal, and answers the requests that arrive less than
// renew_min_interval after one completed with its result.
type RenewOutcome struct {
	// Shared is true when the issuer was not asked for this request.
	Shared bool `json:"shared"`
	// CompletedAt is when the renewal that answers completed.
	CompletedAt time.Time `json:"completed_at"`
	// Message says the same for people.
	Message string `json:"message"`
}

// Credential describes one credential mwid holds, without its secret parts.
type Credential struct {
	Kind       string   `json:"kind"` // "identity", "ssh", "ssh_host" or "kubernetes"
	Principals []string `json:"principals,omitempty"`
	// Cluster is the Kubernetes cluster of a "kubernetes" credential,
	// whose Principals are its user and then its groups.
	Cluster    string    `json:"cluster,omitempty"`
	ValidAfter time.Time `json:"valid_after"`
	Expires    time.Time `json:"expires"`
}

// Output describes one configured output and its last write.
type Output struct {
	Type        string     `json:"type"` // "ssh_host", "kubernetes" or "identity"
	Path        string     `json:"path"`
	LastWrite   *time.Time `json:"last_write,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
	// AccessDir is the state of an ssh_host output's access_dir, once
	// mwid has written it.
	AccessDir *AccessDirStatus `json:"access_dir,omitempty"`
}

// AccessDirStatus is the state of the access directory of an ssh_host
// output, which mwictl ssh authorized-principals reads.
type AccessDirStatus struct {
	Path      string     `json:"path"`
	LastWrite *time.Time `json:"last_write,omitempty"`
	// LocksUpdated is when the issuer last answered mwid's poll of its
	// locks; absent if it has not since mwid started, and the directory
	// held none from before.
	LocksUpdated *time.Time `json:"locks_updated,omitempty"`
	// Locks is how many locks are in force.
	Locks     int    `json:"locks"`
	LastError string `json:"last_error,omitempty"`
	// PollError is why the last poll of the issuer failed, if it did.
	PollError string `json:"poll_error,omitempty"`
}

// SSHHostOutput is an ssh_host output of mwid's configuration, as GET
// /v1/ssh/host_outputs lists it for mwictl ssh sshd-config.
type SSHHostOutput struct {
	HostKey     string            `json:"host_key"`
	Certificate string            `json:"certificate"`
	AccessDir   string            `json:"access_dir,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
}

// ConfigStatus describes the configuration in use.
type ConfigStatus struct {
	Path string `json:"path"`
	// Revision is a short hash of the configuration file's bytes.
	Revision        string     `json:"revision"`
	LoadedAt        time.Time  `json:"loaded_at"`
	LastReloadError string     `json:"last_reload_error,omitempty"`
	LastReloadAt    *time.Time `json:"last_reload_at,omitempty"`
}

// Identity is the body of GET /v1/identity: the SSH user certificate mwid
// serves on its agent socket.
type Identity struct {
	Bot         string    `json:"bot"`
	Instance    string    `json:"instance"`
	Certificate string    `json:"certificate"` // authorized_keys form
	KeyID       string    `json:"key_id"`
	Serial      uint64    `json:"serial,string"` // a string: it often exceeds 2^53, where JSON numbers lose precision
	Principals  []string  `json:"principals"`
	ValidAfter  time.Time `json:"valid_after"`
	ValidBefore time.Time `json:"valid_before"`
}

// ReloadResult is the body of a successful POST /v1/reload.
type ReloadResult struct {
	Changed  bool   `json:"changed"`
	Revision string `json:"revision"`
}

// Readiness is the body of GET /readyz.
type Readiness struct {
	Ready       bool             `json:"ready"`
	State       string           `json:"state"`
	Credentials []CredentialRead `json:"credentials"`
}

// Version is the body of GET /v1/version: the version and commit mwid was
// built from.
type Version struct {
	Version string `json:"version"`
	Commit  string `json:"commit"`
}

// CredentialRead says whether one credential is valid now.
type CredentialRead struct {
	Kind    string    `json:"kind"`
	Valid   bool      `json:"valid"`
	Expires time.Time `json:"expires"`
}
