// Package agent serves mwid's SSH certificates over the SSH agent protocol.
//
// The certificates and their private keys live only in mwid's memory. The
// agent lets stock OpenSSH clients (and tools built on them, such as
// Ansible) use them through SSH_AUTH_SOCK without the keys ever touching
// disk. The agent is read-only: clients can list and sign, but they cannot
// add, remove or lock keys, because the set of keys is mwid's to manage.
//
// The agent signs only for destinations the issuer allows: on a connection
// that ssh bound to a host with session-bind@openssh.com, only the userauth
// request of that session, for a host certificate from the issuer's host
// CA whose labels the certificate's access rules (package sshaccess)
// select with that login. See Agent and ForConn.
package agent

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
	sshagent "golang.org/x/crypto/ssh/agent"

	"github.com/mwi-project/mwi/internal/logging"
	"github.com/mwi-project/mwi/internal/sshaccess"
)

// ErrReadOnly is returned for requests that would change the agent's keys
// or lock state. The x/crypto agent server answers them with
// SSH_AGENT_FAILURE.
var ErrReadOnly = errors.New("agent: read-only agent: keys are managed by mwid")

// SessionBindExtension is the OpenSSH extension with which ssh tells the
// agent which host and session it is authenticating to.
const SessionBindExtension = "session-bind@openssh.com"

// maxSessionIDLen mirrors OpenSSH's AGENT_MAX_SID_LEN: a session identifier
// is an exchange hash, so anything longer is not one.
const maxSessionIDLen = 128

// An Identity is a certificate together with the private key it certifies.
type Identity struct {
	// Cert is the SSH user certificate that the agent offers to servers.
	Cert *ssh.Certificate

	// Signer signs with the private key of Cert.Key. It is the plain key
	// signer, not a certificate signer: the agent only ever produces raw
	// signatures, and the certificate travels separately as the key blob.
	Signer ssh.Signer
}

// A Source supplies the identities the agent may use.
//
// Identities returns the current identities, newest first. It may return an
// expired or not yet valid identity; the agent filters by validity itself.
// mwid keeps the certificates that renewals replaced recently in the list
// (identity.Holder holds the current one and up to three before it) until
// they expire, because a client may have listed one just before a renewal
// swapped keys and will then ask for a signature with it.
//
// Identities is called on every request, possibly from many goroutines at
// once, so it should be cheap (mwid's is an atomic pointer load). The
// returned slice and the Identity values in it must not be modified
// afterwards: the agent caches work derived from each certificate.
//
// HostCAs returns the SSH host authorities of the issuer: the agent signs
// for a session bound to a host only if one of them certified the host's
// key. Like Identities, it is called on every request and its result must
// not be modified.
type Source interface {
	Identities() []Identity
	HostCAs() []ssh.PublicKey
}

// Agent is a read-only SSH agent backed by a Source. It implements
// golang.org/x/crypto/ssh/agent.ExtendedAgent and is safe for concurrent
// use; no lock is held while signing.
//
// An Agent signs only for destinations the issuer allows. Each connection
// is served by a session of its own (see ForConn), which records the
// hosts that ssh binds it to with session-bind@openssh.com and signs only
// userauth requests for those hosts; see Session.SignWithFlags. Requests
// on a connection that no bind reached are refused unless
// SetAllowUnbound(true); so are those made on the Agent itself, which has
// no connection.
type Agent struct {
	src Source
	now func() time.Time

	// Log receives the refusals of sessions, at warning level and at
	// most a few lines a second. If nil, slog.Default() is used. Set it
	// before the Agent serves.
	Log *slog.Logger

	allowUnbound atomic.Bool
	warnings     logging.Limit
	hostCerts    hostCertCache

	// cache holds the marshaled certificates of the identities last seen
	// from src. Sign requests name a key by its wire blob, and marshaling
	// every certificate on every request would dominate the agent's own
	// cost on the hot path; certificates only change on renewal.
	cache atomic.Pointer[snapshot]
}

var _ sshagent.ExtendedAgent = (*Agent)(nil)

// New returns an Agent that serves the identities of src. The function now
// tells the time against which certificate validity is checked; if it is
// nil, time.Now is used.
func New(src Source, now func() time.Time) *Agent {
	if now == nil {
		now = time.Now
	}
	return &Agent{src: src, now: now}
}

// SetAllowUnbound sets whether the agent signs on a connection that no
// session-bind@openssh.com reached, for any destination, as agents
// without destination checks do. Clients that do not bind sessions
// (OpenSSH before 8.9, paramiko and so Ansible's paramiko connection)
// need it; it is off by default. It may be changed at any time, as a
// configuration reload does.
func (a *Agent) SetAllowUnbound(allow bool) { a.allowUnbound.Store(allow) }

// snapshot is derived from one slice returned by Source.Identities.
type snapshot struct {
	entries []entry
}

type entry struct {
	cert *ssh.Certificate
	// blob is cert.Marshal(): the key blob clients list and sign with.
	blob []byte
	// usable reports whether the identity can sign for its certificate.
	// An identity whose signer does not hold the certified key would
	// only produce signatures that servers reject, so it is never offered.
	usable bool
	// access is the certificate's sshaccess.Access, or accessErr why it
	// has none: decoded once, since every bound sign request needs it.
	access    *sshaccess.Access
	accessErr error
}

// matches reports whether s was derived from ids. Certificates are
// compared by pointer, which is what makes the check cheap; Source's
// contract that identities are not modified makes it sound.
func (s *snapshot) matches(ids []Identity) bool {
	if len(s.entries) != len(ids) {
		return false
	}
	for i := range ids {
		if s.entries[i].cert != ids[i].Cert {
			return false
		}
	}
	return true
}

func newSnapshot(ids []Identity) *snapshot {
	s := &snapshot{entries: make([]entry, len(ids))}
	for i, id := range ids {
		e := entry{cert: id.Cert}
		if id.Cert != nil && id.Cert.Key != nil {
			e.blob = id.Cert.Marshal()
			e.usable = id.Signer != nil &&
				bytes.Equal(id.Cert.Key.Marshal(), id.Signer.PublicKey().Marshal())
			e.access, e.accessErr = sshaccess.FromCertificate(id.Cert)
		}
		s.entries[i] = e
	}
	return s
}

// current returns the source's identities and the matching cache entries,
// rebuilding the cache if the source has changed. Concurrent rebuilds are
// harmless: each builds an equivalent snapshot and the last store wins.
func (a *Agent) current() ([]Identity, []entry) {
	ids := a.src.Identities()
	s := a.cache.Load()
	if s == nil || !s.matches(ids) {
		s = newSnapshot(ids)
		a.cache.Store(s)
	}
	return ids, s.entries
}

// validAt reports whether c is valid at t, using the certificate's own
// half-open interval [ValidAfter, ValidBefore). The comparison stays in
// uint64 seconds so that ValidBefore == ssh.CertTimeInfinity, which does
// not fit in an int64, means "forever" rather than a date in the past.
func validAt(c *ssh.Certificate, t time.Time) bool {
	s := t.Unix()
	if s < 0 {
		return false
	}
	u := uint64(s)
	return c.ValidAfter <= u && u < c.ValidBefore
}

// certTime formats a certificate timestamp for error messages.
func certTime(v uint64) string {
	if v > math.MaxInt64 {
		return "forever"
	}
	return time.Unix(int64(v), 0).UTC().Format(time.RFC3339)
}

// List returns the newest identity that is valid now, as its certificate.
// Only one is listed because ssh offers every listed key in turn and each
// offer spends one of sshd's MaxAuthTries; older certificates stay usable
// for signing (see Source) without being advertised.
func (a *Agent) List() ([]*sshagent.Key, error) {
	ids, entries := a.current()
	now := a.now()
	for i, id := range ids {
		if !entries[i].usable || !validAt(id.Cert, now) {
			continue
		}
		return []*sshagent.Key{{
			Format: id.Cert.Type(),
			// Copied so that a caller in this process cannot corrupt
			// the cache; over the socket this costs a few hundred bytes.
			Blob:    bytes.Clone(entries[i].blob),
			Comment: id.Cert.KeyId,
		}}, nil
	}
	return nil, nil
}

// Sign signs data with the identity whose certificate is key.
func (a *Agent) Sign(key ssh.PublicKey, data []byte) (*ssh.Signature, error) {
	return a.SignWithFlags(key, data, 0)
}

// SignWithFlags signs data with the identity whose certificate is key, if
// that certificate is valid now. Any held identity may sign, not only the
// listed one, so that a client racing a renewal still succeeds. For RSA
// keys the flags select rsa-sha2-256 or rsa-sha2-512 as in OpenSSH's agent;
// other key types have a single signature algorithm and ignore them.
func (a *Agent) SignWithFlags(key ssh.PublicKey, data []byte, flags sshagent.SignatureFlags) (*ssh.Signature, error) {
	id, _, err := a.find(key)
	if err != nil {
		return nil, err
	}
	if !a.allowUnbound.Load() {
		// A caller in this process has no connection to bind; over the
		// socket, each connection is served by a session (see ForConn).
		return nil, errUnbound
	}
	return sign(id, data, flags)
}

// find returns the identity whose certificate is key and is valid now,
// with its cache entry.
func (a *Agent) find(key ssh.PublicKey) (Identity, *entry, error) {
	ids, entries := a.current()
	now := a.now()
	want := key.Marshal()

	var refused error
	for i, id := range ids {
		e := &entries[i]
		if !e.usable || !bytes.Equal(e.blob, want) {
			continue
		}
		if !validAt(id.Cert, now) {
			// Keep looking: the same certificate may be held twice.
			refused = invalidCertError(id.Cert, now)
			continue
		}
		return id, e, nil
	}
	if refused != nil {
		return Identity{}, nil, refused
	}
	return Identity{}, nil, fmt.Errorf("agent: no certificate held for key %s", ssh.FingerprintSHA256(key))
}

func invalidCertError(c *ssh.Certificate, now time.Time) error {
	if n := now.Unix(); n >= 0 && uint64(n) < c.ValidAfter {
		return fmt.Errorf("agent: certificate %q (serial %d) is not valid until %s",
			c.KeyId, c.Serial, certTime(c.ValidAfter))
	}
	return fmt.Errorf("agent: certificate %q (serial %d) expired at %s",
		c.KeyId, c.Serial, certTime(c.ValidBefore))
}

func sign(id Identity, data []byte, flags sshagent.SignatureFlags) (*ssh.Signature, error) {
	if id.Cert.Key.Type() == ssh.KeyAlgoRSA {
		// OpenSSH prefers SHA-256 when both bits are set; do the same
		// so the two agents behave identically.
		var algo string
		switch {
		case flags&sshagent.SignatureFlagRsaSha256 != 0:
			algo = ssh.KeyAlgoRSASHA256
		case flags&sshagent.SignatureFlagRsaSha512 != 0:
			algo = ssh.KeyAlgoRSASHA512
		}
		if algo != "" {
			as, ok := id.Signer.(ssh.AlgorithmSigner)
			if !ok {
				return nil, fmt.Errorf("agent: signer for %q cannot sign with %s", id.Cert.KeyId, algo)
			}
			return as.SignWithAlgorithm(rand.Reader, data, algo)
		}
	}
	return id.Signer.Sign(rand.Reader, data)
}

// Signers returns certificate signers for the identities that are valid
// now, newest first, for use by an SSH client in this process.
func (a *Agent) Signers() ([]ssh.Signer, error) {
	ids, entries := a.current()
	now := a.now()
	var signers []ssh.Signer
	for i, id := range ids {
		if !entries[i].usable || !validAt(id.Cert, now) {
			continue
		}
		s, err := ssh.NewCertSigner(id.Cert, id.Signer)
		if err != nil {
			// Unreachable for a usable entry, whose key was checked
			// to match; skipping keeps Signers consistent with List.
			continue
		}
		signers = append(signers, s)
	}
	return signers, nil
}

// Add refuses: the agent's keys are managed by mwid.
func (a *Agent) Add(key sshagent.AddedKey) error { return ErrReadOnly }

// Remove refuses: the agent's keys are managed by mwid.
func (a *Agent) Remove(key ssh.PublicKey) error { return ErrReadOnly }

// RemoveAll refuses: the agent's keys are managed by mwid.
func (a *Agent) RemoveAll() error { return ErrReadOnly }

// Lock refuses. A locked agent would stop every automated client on the
// host until someone unlocked it, which no one is there to do.
func (a *Agent) Lock(passphrase []byte) error { return ErrReadOnly }

// Unlock refuses, since the agent is never locked.
func (a *Agent) Unlock(passphrase []byte) error { return ErrReadOnly }

// sessionBind is the payload of a session-bind@openssh.com request, as
// defined in OpenSSH's PROTOCOL.agent.
type sessionBind struct {
	HostKey      []byte
	SessionID    []byte
	Signature    []byte
	IsForwarding bool
}

// Extension handles the session-bind@openssh.com extension and reports
// every other extension as unsupported.
//
// ssh sends session-bind after key exchange on every connection. The
// Agent itself serves no connection, so it only checks that the request
// is well formed and that the host key really signed the session
// identifier, then answers SSH_AGENT_SUCCESS; a malformed request gets
// SSH_AGENT_EXTENSION_FAILURE. A session also records the bind.
func (a *Agent) Extension(extensionType string, contents []byte) ([]byte, error) {
	if extensionType != SessionBindExtension {
		return nil, sshagent.ErrExtensionUnsupported
	}
	if _, err := checkSessionBind(contents); err != nil {
		return nil, err
	}
	// x/crypto's server answers SSH_AGENT_SUCCESS for an empty result; a
	// non-empty one would be sent verbatim as the whole reply.
	return nil, nil
}

// A bind is a session-bind@openssh.com request that checked out.
type bind struct {
	hostKey    ssh.PublicKey
	hostBlob   []byte
	sessionID  []byte
	forwarding bool
}

func checkSessionBind(contents []byte) (bind, error) {
	var req sessionBind
	// ssh.Unmarshal also rejects trailing bytes.
	if err := ssh.Unmarshal(contents, &req); err != nil {
		return bind{}, fmt.Errorf("agent: malformed %s request: %v", SessionBindExtension, err)
	}
	if len(req.SessionID) == 0 || len(req.SessionID) > maxSessionIDLen {
		return bind{}, fmt.Errorf("agent: %s: bad session identifier length %d", SessionBindExtension, len(req.SessionID))
	}
	hostKey, err := ssh.ParsePublicKey(req.HostKey)
	if err != nil {
		return bind{}, fmt.Errorf("agent: %s: bad host key: %v", SessionBindExtension, err)
	}
	var sig ssh.Signature
	if err := ssh.Unmarshal(req.Signature, &sig); err != nil {
		return bind{}, fmt.Errorf("agent: %s: malformed signature: %v", SessionBindExtension, err)
	}
	if err := hostKey.Verify(req.SessionID, &sig); err != nil {
		return bind{}, fmt.Errorf("agent: %s: host key signature does not verify: %v", SessionBindExtension, err)
	}
	return bind{hostKey: hostKey, hostBlob: req.HostKey, sessionID: req.SessionID, forwarding: req.IsForwarding}, nil
}
