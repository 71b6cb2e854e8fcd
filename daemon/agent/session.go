package agent

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
	sshagent "golang.org/x/crypto/ssh/agent"

	"github.com/mwi-project/mwi/internal/sshaccess"
	"github.com/mwi-project/mwi/internal/unixsock"
)

// maxBinds mirrors OpenSSH's AGENT_MAX_SESSION_IDS: how many binds one
// connection may record. Only a chain of forwarded agents binds a
// connection more than once.
const maxBinds = 16

// errUnbound refuses a sign request that no session-bind reached.
var errUnbound = errors.New("agent: no session-bind@openssh.com on this connection, and agent.unbound is refuse " +
	"(OpenSSH before 8.9 and paramiko do not bind sessions; set agent: {unbound: allow} in mwid's config to sign for them)")

// A ConnAgent serves each connection with an agent of its own. Server
// asks for one with ForConn for every connection it accepts, if its Agent
// is a ConnAgent, and serves the connection with it.
type ConnAgent interface {
	ForConn(p unixsock.Peer) sshagent.Agent
}

var _ ConnAgent = (*Agent)(nil)

// ForConn returns the agent for one connection, from the process p: a
// session that shares a's identities and caches, and records the
// connection's session binds.
func (a *Agent) ForConn(p unixsock.Peer) sshagent.Agent {
	return &session{Agent: a, peer: p}
}

// A session is an Agent serving one connection. It records the
// session-bind@openssh.com requests ssh sends on the connection, and signs
// only userauth requests for the host of the last one (see SignWithFlags).
type session struct {
	*Agent
	peer unixsock.Peer

	mu    sync.Mutex
	binds []bind
}

// Extension records a valid session-bind@openssh.com request, under
// OpenSSH's ssh-agent's rules: once a bind without the forwarding flag
// (ssh's own, for authenticating) is recorded, the connection is ssh's
// and no further bind is accepted; a session identifier is bound to one
// host key only; at most maxBinds are recorded. An identical bind again
// is accepted and recorded once.
func (s *session) Extension(extensionType string, contents []byte) ([]byte, error) {
	if extensionType != SessionBindExtension {
		return s.Agent.Extension(extensionType, contents)
	}
	b, err := checkSessionBind(contents)
	if err != nil {
		s.refuse(describeHost(nil), "", err.Error())
		return nil, err
	}
	if err := s.record(b); err != nil {
		s.refuse(describeHost(b.hostKey), "", err.Error())
		return nil, err
	}
	return nil, nil
}

func (s *session) record(b bind) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, old := range s.binds {
		if !old.forwarding {
			return fmt.Errorf("agent: %s: the connection is already bound for authentication", SessionBindExtension)
		}
		if bytes.Equal(old.sessionID, b.sessionID) {
			if bytes.Equal(old.hostBlob, b.hostBlob) {
				return nil
			}
			return fmt.Errorf("agent: %s: session identifier already bound to another host key", SessionBindExtension)
		}
	}
	if len(s.binds) >= maxBinds {
		return fmt.Errorf("agent: %s: more than %d binds on one connection", SessionBindExtension, maxBinds)
	}
	b.sessionID = bytes.Clone(b.sessionID)
	b.hostBlob = bytes.Clone(b.hostBlob)
	s.binds = append(s.binds, b)
	return nil
}

// Sign signs data as SignWithFlags does.
func (s *session) Sign(key ssh.PublicKey, data []byte) (*ssh.Signature, error) {
	return s.SignWithFlags(key, data, 0)
}

// SignWithFlags signs data with the identity whose certificate is key,
// if the destination is allowed.
//
// On a connection that ssh bound to a host, data must be the userauth
// request of the last bind's session for the certificate key, and the
// host's key must be a host certificate, valid now, from one of the
// issuer's host CAs; the certificate's access rules (sshaccess.Access)
// must allow the login on a host with that certificate's labels; and if
// any bind came through a forwarded agent, the rules must allow agent
// forwarding. On a connection without a bind, the agent signs anything
// if SetAllowUnbound(true), and nothing otherwise.
//
// Every refusal is logged with the host, the login and the caller, and
// the client gets SSH_AGENT_FAILURE.
func (s *session) SignWithFlags(key ssh.PublicKey, data []byte, flags sshagent.SignatureFlags) (*ssh.Signature, error) {
	id, e, err := s.find(key)
	if err != nil {
		return nil, err
	}
	if err := s.permit(e, data); err != nil {
		return nil, err
	}
	return sign(id, data, flags)
}

// permit decides whether the session may sign data with the identity of
// e, and logs a refusal.
func (s *session) permit(e *entry, data []byte) error {
	s.mu.Lock()
	binds := s.binds // append-only: the prefix seen here does not change
	s.mu.Unlock()
	if len(binds) == 0 {
		if !s.allowUnbound.Load() {
			s.refuse("(no session-bind)", "", errUnbound.Error())
			return errUnbound
		}
		return nil
	}
	last := binds[len(binds)-1]
	req, err := parseUserauth(data)
	if err != nil {
		err = fmt.Errorf("agent: the connection is bound to a host and the data to sign is not an SSH userauth request: %v", err)
		s.refuse(describeHost(last.hostKey), "", err.Error())
		return err
	}
	if err := s.check(e, req, binds); err != nil {
		s.refuse(describeHost(last.hostKey), req.user, err.Error())
		return err
	}
	return nil
}

// check applies the destination checks of a bound connection to the
// userauth request req, to be signed with the identity of e.
func (s *session) check(e *entry, req userauth, binds []bind) error {
	last := binds[len(binds)-1]
	if !bytes.Equal(req.sessionID, last.sessionID) {
		return errors.New("agent: the userauth request is for another session than the one last bound")
	}
	if req.hostKey != nil && !sameHostKey(req.hostKey, last) {
		return errors.New("agent: the userauth request names another host key than the one bound")
	}
	if !bytes.Equal(req.key, e.blob) {
		return errors.New("agent: the userauth request is for another key than the one asked to sign")
	}
	if e.accessErr != nil {
		if errors.Is(e.accessErr, sshaccess.ErrNoAccess) {
			return fmt.Errorf("agent: certificate %q carries no access rules: its issuer is too old for destination checks; upgrade mwi-issuer", e.cert.KeyId)
		}
		return fmt.Errorf("agent: certificate %q: %v", e.cert.KeyId, e.accessErr)
	}
	access := e.access
	if !access.ForwardAgent {
		for _, b := range binds {
			if b.forwarding {
				return fmt.Errorf("agent: the agent was forwarded (to %s) and no role of bot %s allows forward_agent", describeHost(b.hostKey), access.Bot)
			}
		}
	}
	labels, err := s.checkHost(last)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	if err := access.Decide(req.user, labels); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	return nil
}

// checkHost checks that b's host key is a host certificate, valid now,
// from one of the issuer's host CAs, and returns its labels.
func (s *session) checkHost(b bind) (map[string]string, error) {
	cert, ok := b.hostKey.(*ssh.Certificate)
	if !ok || cert.CertType != ssh.HostCert {
		return nil, errors.New("the host key is not a host certificate, so the issuer does not vouch for the host")
	}
	info := s.hostCerts.get(cert, b.hostBlob)
	if !slices.ContainsFunc(s.src.HostCAs(), func(k ssh.PublicKey) bool { return bytes.Equal(k.Marshal(), info.ca) }) {
		return nil, fmt.Errorf("the host certificate is signed by %s, not by the issuer's host CA", ssh.FingerprintSHA256(cert.SignatureKey))
	}
	if now := s.now(); !validAt(cert, now) {
		return nil, fmt.Errorf("the host certificate is valid from %s to %s, not now",
			certTime(cert.ValidAfter), certTime(cert.ValidBefore))
	}
	return info.labels, info.err
}

// refuse logs a refused request of the session.
func (s *session) refuse(host, login, reason string) {
	s.warnings.Warn(s.logger(), "agent: request refused", "host", host, "login", login,
		"pid", s.peer.PID, "uid", s.peer.UID, "reason", reason)
}

func (a *Agent) logger() *slog.Logger {
	if a.Log != nil {
		return a.Log
	}
	return slog.Default()
}

// describeHost names a host key for a log line: a certificate by its key
// ID and principals, a plain key by its fingerprint.
func describeHost(k ssh.PublicKey) string {
	switch k := k.(type) {
	case nil:
		return "(unknown)"
	case *ssh.Certificate:
		return fmt.Sprintf("%q (principals %s)", k.KeyId, strings.Join(k.ValidPrincipals, ","))
	default:
		return ssh.FingerprintSHA256(k)
	}
}

// sameHostKey reports whether the host key of a hostbound userauth
// request, as a wire blob, is b's: the certificate or its plain key.
func sameHostKey(blob []byte, b bind) bool {
	if bytes.Equal(blob, b.hostBlob) {
		return true
	}
	cert, ok := b.hostKey.(*ssh.Certificate)
	return ok && bytes.Equal(blob, cert.Key.Marshal())
}

// Userauth methods whose requests the agent signs: RFC 4252's publickey,
// and OpenSSH's variant that also names the server's host key.
const (
	methodPublickey = "publickey"
	methodHostbound = "publickey-hostbound-v00@openssh.com"
)

// userauth is the part of an SSH_MSG_USERAUTH_REQUEST the agent checks.
type userauth struct {
	sessionID []byte
	user      string
	key       []byte // the user key blob
	hostKey   []byte // the host key blob, for methodHostbound only
}

// parseUserauth parses data as the client signs it for publickey
// authentication (RFC 4252 section 7, with OpenSSH's hostbound variant
// from PROTOCOL): string session identifier, byte
// SSH_MSG_USERAUTH_REQUEST, string user, string "ssh-connection", string
// method, boolean TRUE, string algorithm, string key, and for the
// hostbound method string host key.
func parseUserauth(data []byte) (userauth, error) {
	var u userauth
	var ok bool
	if u.sessionID, data, ok = parseString(data); !ok || len(u.sessionID) == 0 || len(u.sessionID) > maxSessionIDLen {
		return u, errors.New("no session identifier")
	}
	const msgUserauthRequest = 50
	if len(data) == 0 || data[0] != msgUserauthRequest {
		return u, errors.New("not SSH_MSG_USERAUTH_REQUEST")
	}
	data = data[1:]
	var user, service, method, alg []byte
	if user, data, ok = parseString(data); !ok {
		return u, errors.New("malformed user")
	}
	u.user = string(user)
	if service, data, ok = parseString(data); !ok || string(service) != "ssh-connection" {
		return u, errors.New("service is not ssh-connection")
	}
	if method, data, ok = parseString(data); !ok || (string(method) != methodPublickey && string(method) != methodHostbound) {
		return u, errors.New("method is not publickey")
	}
	if len(data) == 0 || data[0] != 1 {
		return u, errors.New("not a publickey signature request")
	}
	data = data[1:]
	if alg, data, ok = parseString(data); !ok || len(alg) == 0 {
		return u, errors.New("malformed key algorithm")
	}
	if u.key, data, ok = parseString(data); !ok {
		return u, errors.New("malformed key")
	}
	if string(method) == methodHostbound {
		if u.hostKey, data, ok = parseString(data); !ok {
			return u, errors.New("malformed host key")
		}
	}
	if len(data) != 0 {
		return u, errors.New("trailing data")
	}
	return u, nil
}

// parseString parses an SSH string off the front of in.
func parseString(in []byte) (s, rest []byte, ok bool) {
	if len(in) < 4 {
		return nil, nil, false
	}
	n := uint32(in[0])<<24 | uint32(in[1])<<16 | uint32(in[2])<<8 | uint32(in[3])
	if uint64(len(in)-4) < uint64(n) {
		return nil, nil, false
	}
	return in[4 : 4+n], in[4+n:], true
}

// maxHostCerts bounds hostCertCache: a client decides how many host
// certificates it binds, and the cache is only for speed.
const maxHostCerts = 64

// hostCertCache remembers, for the host certificates bound recently,
// their CA, whether the CA's signature verifies and what labels they
// carry: verifying costs more than signing, and ssh binds the same host
// on every login.
type hostCertCache struct {
	mu sync.Mutex
	m  map[string]hostCertInfo
}

type hostCertInfo struct {
	ca     []byte // the wire form of the CA's key
	labels map[string]string
	err    error // why the certificate is unusable, if it is
}

// get returns what cert says, its signature by its CA verified; blob is
// cert's wire form. None of it depends on the time or on which CAs are
// trusted, so it is cached by blob.
func (c *hostCertCache) get(cert *ssh.Certificate, blob []byte) hostCertInfo {
	c.mu.Lock()
	info, ok := c.m[string(blob)]
	c.mu.Unlock()
	if ok {
		return info
	}
	info.ca = cert.SignatureKey.Marshal()
	info.labels, info.err = checkHostCert(cert)
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxHostCerts {
		c.m = make(map[string]hostCertInfo)
	}
	c.m[string(blob)] = info
	c.mu.Unlock()
	return info
}

func checkHostCert(cert *ssh.Certificate) (map[string]string, error) {
	// The signed part is the certificate's encoding without its final
	// field, the signature, which encodes as an empty string when nil.
	unsigned := *cert
	unsigned.Signature = nil
	b := unsigned.Marshal()
	if err := cert.SignatureKey.Verify(b[:len(b)-4], cert.Signature); err != nil {
		return nil, fmt.Errorf("the host certificate's signature does not verify: %v", err)
	}
	if len(cert.CriticalOptions) != 0 {
		return nil, errors.New("the host certificate has critical options, which host certificates do not define")
	}
	labels, err := sshaccess.HostLabels(cert)
	if err != nil {
		return nil, fmt.Errorf("the host certificate's labels: %v", err)
	}
	return labels, nil
}
