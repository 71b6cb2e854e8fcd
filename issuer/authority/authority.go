// Package authority decides who joins and what the issuer signs.
//
// It verifies join attestations, applies the bot's roles, keeps generation
// counters in the store, signs with the certificate authorities and records
// every decision in the audit log. Its refusals are *fault.Error values,
// with a stable code and a kind; the HTTP layer above it only decodes
// requests and renders answers, and picks the status from the kind. User
// certificates carry the bot's access rules and host certificates the
// host's labels (package sshaccess), and every host issued host
// certificates is kept in the node inventory.
package authority

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/fault"
	"github.com/mwi-project/mwi/internal/logging"
	"github.com/mwi-project/mwi/internal/sshaccess"
	"github.com/mwi-project/mwi/issuer/audit"
	"github.com/mwi-project/mwi/issuer/ca"
	"github.com/mwi-project/mwi/issuer/join"
	"github.com/mwi-project/mwi/issuer/resource"
	"github.com/mwi-project/mwi/issuer/store"
)

// backdate is how far before now certificates become valid, so that a
// machine whose clock is a little behind the issuer's accepts them.
const backdate = time.Minute

// MinTTL is the shortest certificate lifetime the issuer signs.
const MinTTL = 5 * time.Second

// DefaultClusterName is the audience of ID tokens when neither the token
// resource nor the Authority names one.
const DefaultClusterName = "mwi"

// Authority makes the issuer's decisions. Set CA, Store and Audit before use.
type Authority struct {
	// CA holds the authorities it starts with; SetCAs replaces them, as a
	// rotation moves, and CAs returns those in use.
	CA    *ca.Authority
	Store store.Store
	Audit *audit.Log
	// ClusterName is the audience that ID tokens must be issued for when
	// their token resource sets none; empty means DefaultClusterName.
	ClusterName string
	// IDTokens verifies ID tokens; nil means a join.Verifier with its
	// defaults (github.com's issuer, the system's authorities).
	IDTokens *join.Verifier
	// Now returns the current time; nil means the store's clock
	// (Store.Now).
	Now func() time.Time
	// Log receives internal errors; nil means slog.Default().
	Log *slog.Logger
	// Observer, if set, is told of every join and renewal decided.
	Observer Observer
	// CacheLocks makes the bot and instance locks that every join and
	// renewal checks come from a copy in memory, loaded again after
	// LocksChanged or a lock written through this authority, rather than
	// from two store lookups per request. Set it only where LocksChanged
	// is called whenever the store counts a change (Store.Changes), as
	// the server's poll does: a lock written through another issuer then
	// refuses requests here within the poll. The store checks the
	// instance's lock again in the transaction that renews it.
	CacheLocks bool

	resources       atomic.Pointer[resource.Set]
	cas             atomic.Pointer[ca.Authority]
	defaultIDs      sync.Once
	idTokens        *join.Verifier
	challengeLimits challengeLimits
	krl             krlCache
	lockSet         lockSet
	trust           atomic.Pointer[trustText]
	refusalLimits   refusalLimits
	// unavailable bounds the warnings of joins refused because an ID
	// token issuer cannot be reached: anyone can send such joins, and a
	// failed discovery is remembered, so each costs no more than a line.
	unavailable logging.Limit
}

// SetResources makes s the resource set that later decisions use.
func (a *Authority) SetResources(s *resource.Set) { a.resources.Store(s) }

// Resources returns the resource set in use.
func (a *Authority) Resources() *resource.Set { return a.resources.Load() }

func (a *Authority) log() *slog.Logger {
	if a.Log != nil {
		return a.Log
	}
	return slog.Default()
}

// Clock returns the time that decides validity, as the authority's own
// decisions take it: for the server's pruning and the certificates it
// signs itself. Its error, when the store cannot tell its time, wraps
// store.ErrUnavailable.
func (a *Authority) Clock(ctx context.Context) (time.Time, error) { return a.now(ctx) }

// now returns the time that decides validity: a.Now's, or the store's
// clock (Store.Now), which several issuers on one database share. When
// the store cannot tell its time, now fails, wrapping
// store.ErrUnavailable, rather than taking the local clock: a replica's
// clock may be far from the database's, and a store that answers the next
// query would take what was decided with it (a lock that has not expired
// taken as expired, certificates dated an hour off).
func (a *Authority) now(ctx context.Context) (time.Time, error) {
	if a.Now != nil {
		return a.Now(), nil
	}
	t, err := a.Store.Now(ctx)
	if err != nil {
		if !errors.Is(err, store.ErrUnavailable) {
			err = fmt.Errorf("%w: %w", store.ErrUnavailable, err)
		}
		return time.Time{}, err
	}
	return t, nil
}

// localNow is the clock of what only measures intervals in this process,
// such as the rate limits, and needs no store: a.Now's, or the local one.
func (a *Authority) localNow() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// join admits a bot instance and signs its credentials, for Join.
//
// With join method "token", the request's one-time token admits a new
// instance. With the other methods, the token resource named by the
// request decides, from an ID token or a bound key pair's signature; see
// joinAttested. client is the bot identity that the caller presented over
// mutual TLS, or nil.
func (a *Authority) join(ctx context.Context, req api.JoinRequest, client *ca.Identity, remote string) (api.Credentials, error) {
	attrs := []slog.Attr{slog.String("remote", remote), slog.String("join_method", string(req.JoinMethod))}
	// A token join always makes a new instance, but one that presents a
	// locked instance's identity comes from a holder of a copy, and is
	// refused as every request presenting it is.
	var presented string
	if client != nil {
		presented = client.Instance
		attrs = append(attrs, slog.String("client_instance", client.Instance), slog.Uint64("client_generation", client.Generation))
	}
	deny := func(err error) (api.Credentials, error) {
		return api.Credentials{}, a.refuse(ctx, audit.EventJoin, err, attrs...)
	}
	if req.JoinMethod != api.JoinMethodToken {
		if _, ok := resource.JoinSpecFor(req.JoinMethod); ok {
			return a.joinAttested(ctx, req, client, remote)
		}
		// The method is in the audit record's join_method already.
		return deny(badRequest("join_method: unsupported (want %s)", api.JoinMethodList(api.JoinMethods...)))
	}
	if req.Token == "" {
		return deny(badRequest("token is empty"))
	}
	keys, ttl, err := parseKeys(req.Keys, req.TTLSeconds, req.HostKeys)
	if err != nil {
		return deny(err)
	}
	hash := HashToken(req.Token)
	// The prefix is enough to match the line with the token's creation and
	// too short to help anyone guess the secret.
	attrs = append(attrs, slog.String("token", hash[:12]))
	now, err := a.now(ctx)
	if err != nil {
		return deny(err)
	}
	tok, err := a.Store.Token(ctx, hash, now)
	if err != nil {
		return deny(tokenError(err, "token lookup"))
	}
	attrs = append(attrs, slog.String("bot", tok.Bot))
	grant, logins, kube, err := a.entitlements(ctx, tok.Bot, presented, req.SSHLogins, keys.hosts, req.Kubernetes)
	if err != nil {
		return deny(err)
	}
	instance, err := newInstanceID()
	if err != nil {
		return api.Credentials{}, err
	}
	attrs = append(attrs, slog.String("instance", instance))
	if now, err = a.now(ctx); err != nil {
		return deny(err)
	}
	in := store.Instance{ID: instance, Bot: tok.Bot, Generation: 1, Created: now, JoinMethod: api.JoinMethodToken}
	// One transaction consumes the token, makes the instance and records
	// the host: a crash or a failure leaves all of it or none. Consuming
	// re-checks the token: of two joins racing with the same token, one
	// wins and the other is told it was used.
	in, err = a.Store.Join(ctx, store.JoinWrite{Now: now, TokenHash: hash, Instance: in, Node: a.node(ctx, in, grant, keys.hosts, remote, now)})
	if lerr := lockedMeanwhile(err, tok.Bot, ""); lerr != nil {
		return deny(lerr)
	}
	if err != nil {
		return deny(tokenError(err, "join"))
	}
	return a.sign(ctx, decision{audit.EventJoin, append(attrs, slog.Uint64("generation", in.Generation))},
		in, grant, logins, keys, kube, ttl, identityTTL(req.IdentityTTLSeconds), now)
}

// renew signs fresh credentials for a bot instance that proved its current
// identity over mutual TLS. The identity's generation must be the one the
// store holds: an older one means a copy of the identity is in use, and the
// instance is locked.
func (a *Authority) renew(ctx context.Context, id ca.Identity, req api.RenewRequest, remote string) (api.Credentials, error) {
	attrs := []slog.Attr{
		slog.String("remote", remote), slog.String("bot", id.Bot),
		slog.String("instance", id.Instance), slog.Uint64("generation", id.Generation),
	}
	deny := func(err error) (api.Credentials, error) {
		return api.Credentials{}, a.refuse(ctx, audit.EventRenew, err, attrs...)
	}
	keys, ttl, err := parseKeys(req.Keys, req.TTLSeconds, req.HostKeys)
	if err != nil {
		return deny(err)
	}
	grant, logins, kube, err := a.entitlements(ctx, id.Bot, id.Instance, req.SSHLogins, keys.hosts, req.Kubernetes)
	if err != nil {
		return deny(err)
	}
	now, err := a.now(ctx)
	if err != nil {
		return deny(err)
	}
	// One transaction checks the instance, moves the generation on and
	// records the host; a stale generation locks the instance in it.
	in, err := a.Store.Renew(ctx, store.RenewWrite{
		ID: id.Instance, Presented: id.Generation, Key: keys.identityKey(), Now: now,
		Check:      func(in store.Instance) error { return renewable(id, in) },
		OnMismatch: mismatchLock(id, now),
		Node:       a.node(ctx, store.Instance{ID: id.Instance, Bot: id.Bot}, grant, keys.hosts, remote, now),
	})
	if _, refused := fault.As(err); refused {
		return deny(err)
	} else if err != nil {
		return deny(a.advanceRefusal(ctx, id, in, err, now))
	}
	// The record names the generation the new certificates carry; the
	// one presented is one less, or the same for a retried renewal.
	rec := []slog.Attr{attrs[0], attrs[1], attrs[2], slog.Uint64("generation", in.Generation)}
	return a.sign(ctx, decision{audit.EventRenew, rec}, in, grant, logins, keys, kube, ttl, identityTTL(req.IdentityTTLSeconds), now)
}

// renewable returns the refusal of a renewal presenting id, whose
// instance the store holds as in, or nil. The instance must belong to the
// bot the identity names, as identityInstance checks, before its counter
// moves; otherwise a mismatched identity could advance another bot's
// counter and get that bot locked. And it must have joined with a
// one-time token: an ID token or a key pair proves the machine only when
// it is presented, and the identity alone must not outlive it.
func renewable(id ca.Identity, in store.Instance) error {
	if in.Bot != id.Bot {
		return fault.Unauthenticated(api.CodeUnauthenticated, "instance %s does not belong to bot %s", id.Instance, id.Bot)
	}
	if in.Method() != api.JoinMethodToken {
		return fault.Denied(api.CodeNotRenewable,
			"instance %s joined with method %s, whose identities do not renew: re-join with a fresh attestation", id.Instance, in.Method())
	}
	return nil
}

// refuse audits err as the denial of event, with attrs and err's message
// as the reason, if err is a refusal (a *fault.Error), and returns it. Any
// other error is the issuer's own failure, not a decision: the renderer
// logs it and answers an internal error, and the audit log has no line.
func (a *Authority) refuse(ctx context.Context, event string, err error, attrs ...slog.Attr) error {
	if e, ok := fault.As(err); ok {
		a.Audit.Record(ctx, event, audit.Denied, append(attrs, slog.String("reason", e.Message))...)
	}
	return err
}

// identityInstance returns the instance that id names, which must be known
// to the store and belong to id's bot, as an identity's instance must be
// before the issuer acts on it. Its refusals are *fault.Error; any other
// error is the store's.
func (a *Authority) identityInstance(ctx context.Context, id ca.Identity) (store.Instance, error) {
	in, err := a.Store.Instance(ctx, id.Instance)
	switch {
	case errors.Is(err, store.ErrInstanceUnknown):
		return in, fault.Unauthenticated(api.CodeUnauthenticated, "bot instance %s is unknown to this issuer", id.Instance)
	case err != nil:
		return in, err
	case in.Bot != id.Bot:
		return in, fault.Unauthenticated(api.CodeUnauthenticated, "instance %s does not belong to bot %s", id.Instance, id.Bot)
	}
	return in, nil
}

// mismatchLock returns the store.RenewWrite.OnMismatch of a renewal or a
// re-join presenting id at now: the lock of id's instance, a copy of
// whose identity is in use.
//
// The lock is the instance's, not the bot's: whoever holds a stale copy of
// one identity must not be able to stop every other instance of the bot,
// and a fresh join, which proves the machine anew, still makes a new
// instance. A locked instance gets no new generation until an operator
// lifts the lock; the store checks it in the transaction that moves the
// generation.
func mismatchLock(id ca.Identity, now time.Time) func(store.Instance) store.Lock {
	return func(stored store.Instance) store.Lock {
		return store.Lock{Bot: id.Bot, Instance: id.Instance, Reason: mismatchReason(id, stored), At: now}
	}
}

func mismatchReason(id ca.Identity, stored store.Instance) string {
	return fmt.Sprintf("generation mismatch on instance %s: presented %d, expected %d; the identity was probably copied",
		id.Instance, id.Generation, stored.Generation)
}

// advanceRefusal returns the refusal, a *fault.Error, of a renewal or a
// re-join of id's instance that the store refused with err, in is the
// stored instance it returned: unknown, locked, or a stale generation,
// which means a copy of the identity is in use and which locked the
// instance (audited here). Any other error is the store's, returned as it
// is.
func (a *Authority) advanceRefusal(ctx context.Context, id ca.Identity, in store.Instance, err error, now time.Time) error {
	if lerr := lockedMeanwhile(err, id.Bot, in.TokenName); lerr != nil {
		return lerr
	}
	switch {
	case errors.Is(err, store.ErrInstanceUnknown):
		return fault.Unauthenticated(api.CodeUnauthenticated, "bot instance %s is unknown to this issuer", id.Instance)
	case errors.Is(err, store.ErrInstanceLocked):
		lock, locked, lerr := a.Store.InstanceLock(ctx, id.Instance, now)
		if lerr != nil {
			return lerr
		}
		if !locked {
			return fault.Conflict(api.CodeInstanceLocked,
				"instance %s was locked when this request was checked and has been unlocked since; try again", id.Instance)
		}
		return instanceLocked(lock)
	case errors.Is(err, store.ErrGenerationMismatch):
		a.invalidateLocks() // the store locked the instance
		reason := mismatchReason(id, in)
		a.Audit.Record(ctx, audit.EventInstanceLock, audit.Allowed, slog.String("bot", id.Bot),
			slog.String("instance", id.Instance), slog.String("reason", reason))
		return fault.Denied(api.CodeGenerationMismatch,
			"%s; instance %s is now locked (the bot's other instances are not); an operator can lift it with mwi-issuer instance unlock %s",
			reason, id.Instance, id.Instance)
	}
	return err
}

// lockedMeanwhile returns the refusal of a join or renewal of bot, with
// the token resource token, that the store refused because a lock of the
// bot or the token was recorded after the authority looked for locks and
// before the store committed; or nil if err is not such a refusal.
func lockedMeanwhile(err error, bot, token string) error {
	switch {
	case errors.Is(err, store.ErrBotLocked):
		return fault.Denied(api.CodeBotLocked,
			"bot %s was locked while this request was decided; an operator can lift it with mwi-issuer bot unlock %s", bot, bot)
	case errors.Is(err, store.ErrTokenLocked):
		return fault.Denied(api.CodeTokenLocked,
			"token %s was locked while this request was decided; an operator can lift it with mwi-issuer lock rm --token %s", token, token)
	}
	return nil
}

// instanceLocked is the refusal of a locked instance.
func instanceLocked(l store.Lock) *fault.Error {
	return fault.Denied(api.CodeInstanceLocked,
		"instance %s is locked: %s; an operator can lift it with mwi-issuer instance unlock %s", l.Instance, l.Reason, l.Instance)
}

// CreateToken makes a one-time join token for bot, valid for ttl, and
// returns its secret. Only the secret's hash is stored.
func (a *Authority) CreateToken(ctx context.Context, bot string, ttl time.Duration) (api.CreateTokenResponse, error) {
	deny := func(err error) (api.CreateTokenResponse, error) {
		return api.CreateTokenResponse{}, a.refuse(ctx, audit.EventTokenCreate, err, slog.String("bot", bot))
	}
	if _, ok := a.Resources().Bot(bot); !ok {
		return deny(fault.NotFound(api.CodeBotUnknown, "no bot named %q in the issuer's resources", bot))
	}
	if ttl <= 0 {
		return deny(badRequest("token lifetime must be positive"))
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return api.CreateTokenResponse{}, err
	}
	secret := hex.EncodeToString(b[:])
	now, err := a.now(ctx)
	if err != nil {
		return deny(err)
	}
	t := store.Token{Hash: HashToken(secret), Bot: bot, Created: now, Expires: now.Add(ttl)}
	if err := a.Store.PutToken(ctx, t); err != nil {
		return api.CreateTokenResponse{}, err
	}
	if err := a.Audit.Record(ctx, audit.EventTokenCreate, audit.Allowed, slog.String("bot", bot),
		slog.String("token", t.Hash[:12]), slog.Time("expires", t.Expires)); err != nil {
		// The stored token is useless: its secret is never shown.
		return api.CreateTokenResponse{}, auditFailed(err)
	}
	return api.CreateTokenResponse{Token: secret, Bot: bot, Expires: t.Expires}, nil
}

// auditFailed refuses a decision whose audit record could not be written:
// the issuer issues nothing it has not recorded. The audit log has logged
// the failure, and health shows it.
func auditFailed(err error) *fault.Error {
	return fault.Internal(api.CodeAuditUnavailable,
		"the issuer's audit log cannot be written, so nothing is issued; try again later")
}

// HashToken returns the hex SHA-256 of a token secret, the form the store keeps.
func HashToken(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// entitlements checks a request against the bot's roles: that the bot
// exists and is not locked, nor the instance whose identity the caller
// presented (instance, or "" for none), and which logins, host names and
// Kubernetes clusters it may have. Every join and renewal asks it, before
// anything is spent. Its errors are *fault.Error refusals.
func (a *Authority) entitlements(ctx context.Context, bot, instance string, wanted []string, hosts []hostKey, kreq *api.KubernetesRequest) (resource.Grant, []string, *kubePlan, error) {
	grant, logins, err := a.grant(ctx, bot, instance, wanted)
	if err != nil {
		return grant, nil, nil, err
	}
	if err := checkHostNames(grant, hosts); err != nil {
		return grant, nil, nil, err
	}
	if err := checkHostLabels(grant, hosts); err != nil {
		return grant, nil, nil, err
	}
	kube, err := a.kubernetes(bot, kreq)
	if err != nil {
		return grant, nil, nil, err
	}
	return grant, logins, kube, nil
}

// grant checks that bot exists and is not locked, that instance (if not
// "") is not locked, and which of the wanted logins the bot may have.
//
// A request presenting a locked instance's identity is refused whatever
// it asks, even a re-join that would otherwise make a new instance: the
// identity is known to be copied. Checking here, before an ID token is
// recorded as used, leaves the token to a fresh join without it.
//
// A failed store lookup is refused too, as an internal error whose cause
// is logged: the refusal is audited with the request's other refusals.
func (a *Authority) grant(ctx context.Context, bot, instance string, wanted []string) (resource.Grant, []string, error) {
	g, err := a.Resources().Grant(bot)
	if err != nil {
		return g, nil, fault.Denied(api.CodeBotUnknown, "bot %q is not defined on the issuer", bot)
	}
	now, err := a.now(ctx)
	if err != nil {
		return g, nil, err
	}
	lock, locked, err := a.lockOf(ctx, botLocks, bot, now)
	if err != nil {
		return g, nil, a.lockLookupFailed("bot", bot, err)
	}
	if locked {
		return g, nil, fault.Denied(api.CodeBotLocked,
			"bot %s is locked: %s; an operator can lift it with mwi-issuer bot unlock %s", bot, lock.Reason, bot)
	}
	if instance != "" {
		lock, locked, err := a.lockOf(ctx, instanceLocks, instance, now)
		if err != nil {
			return g, nil, a.lockLookupFailed("instance", instance, err)
		}
		if locked {
			return g, nil, instanceLocked(lock)
		}
	}
	if len(wanted) == 0 {
		// A bot whose roles allow no logins, such as an SSH server that
		// only needs a host certificate, gets no user certificate.
		return g, g.Logins, nil
	}
	var refused []string
	for _, l := range wanted {
		if !slices.Contains(g.Logins, l) {
			refused = append(refused, l)
		}
	}
	if len(refused) > 0 {
		return g, nil, fault.Denied(api.CodeLoginNotAllowed, "the roles of bot %s do not allow SSH login %s", bot, strings.Join(refused, ", "))
	}
	logins := slices.Clone(wanted)
	slices.Sort(logins)
	return g, slices.Compact(logins), nil
}

// identityTTL converts a requested identity lifetime; zero means "as the
// other certificates".
func identityTTL(seconds int64) time.Duration {
	if seconds <= 0 || seconds > int64(365*24*time.Hour/time.Second) {
		return 0
	}
	return time.Duration(seconds) * time.Second
}

// decision is the allowed decision that sign records, with the
// certificates it signed: a join or a renewal is one audit record.
type decision struct {
	event string
	attrs []slog.Attr
}

// sign signs the identity, SSH and Kubernetes certificates of an instance
// and records d with them: the record is written before anything is
// returned, so nothing is issued unrecorded.
//
// The identity may live longer than the rest (idTTL): it only ever proves
// the instance to this issuer, from the daemon's memory, and a copy is
// caught by the generation check; outliving the short certificates it
// renews lets a daemon recover from an issuer outage longer than they
// last. Both are capped by the roles' max_ttl.
//
// The host's record in the node inventory was written with the instance
// (see node).
func (a *Authority) sign(ctx context.Context, d decision, in store.Instance, g resource.Grant, logins []string, k keys, kube *kubePlan, ttl, idTTL time.Duration, now time.Time) (api.Credentials, error) {
	ttl = min(ttl, g.MaxTTL)
	idTTL = min(max(idTTL, ttl), g.MaxTTL)
	notBefore, notAfter := now.Add(-backdate), now.Add(ttl)
	// One set of authorities signs the whole answer, even if a rotation
	// moves meanwhile.
	cas := a.CAs()
	idCert, err := cas.SignIdentityDER(k.csr, ca.Identity{Bot: in.Bot, Instance: in.ID, Generation: in.Generation}, notBefore, now.Add(idTTL))
	if err != nil {
		return api.Credentials{}, err
	}
	// Certificates carry whole seconds; so does the record.
	expires := notAfter.Truncate(time.Second)
	issued := []slog.Attr{slog.String("identity_serial", idCert.SerialNumber.Text(16))}
	var sshCertText string
	if len(logins) > 0 {
		access, err := userAccess(in, g, logins)
		if err != nil {
			return api.Credentials{}, err
		}
		sshCert, err := cas.SignSSHUser(ca.SSHUserRequest{
			Key:             k.ssh,
			KeyID:           userKeyID(in),
			Principals:      logins,
			NotBefore:       notBefore,
			NotAfter:        notAfter,
			AgentForwarding: g.ForwardAgent,
			Extensions:      map[string]string{sshaccess.AccessExtension: access},
		})
		if err != nil {
			return api.Credentials{}, err
		}
		sshCertText = string(ssh.MarshalAuthorizedKey(sshCert))
		// The key ID is "bot=NAME instance=ID", which the record has.
		issued = append(issued, slog.String("ssh_serial", strconv.FormatUint(sshCert.Serial, 10)), slog.Any("principals", logins))
		if g.ForwardAgent {
			issued = append(issued, slog.Bool("forward_agent", true))
		}
	}
	var hostCerts []string
	var hostRecords []hostRecord
	for _, h := range k.hosts {
		names := h.names
		if len(names) == 0 {
			names = g.HostNames
		}
		labels := h.labels
		if labels == nil {
			labels = map[string]string{}
		}
		cert, err := cas.SignSSHHost(ca.SSHHostRequest{
			Key:        h.key,
			KeyID:      fmt.Sprintf("bot=%s instance=%s host=%s", in.Bot, in.ID, names[0]),
			Names:      names,
			NotBefore:  notBefore,
			NotAfter:   notAfter,
			Extensions: hostExtensions(labels),
		})
		if err != nil {
			return api.Credentials{}, err
		}
		hostRecords = append(hostRecords, hostRecord{Serial: strconv.FormatUint(cert.Serial, 10), Names: names, Labels: labels})
		hostCerts = append(hostCerts, string(ssh.MarshalAuthorizedKey(cert)))
	}
	kubeCreds, kubeRecords, err := a.signKubernetes(cas, in, kube, notBefore, notAfter)
	if err != nil {
		return api.Credentials{}, err
	}
	if len(hostRecords) > 0 {
		issued = append(issued, slog.Any("host_certs", hostRecords))
	}
	if len(kubeRecords) > 0 {
		issued = append(issued, slog.Any("kube_certs", kubeRecords))
	}
	issued = append(issued, slog.Time("expires", expires))
	if !idCert.NotAfter.Equal(expires) {
		issued = append(issued, slog.Time("identity_expires", idCert.NotAfter))
	}
	if err := a.Audit.Record(ctx, d.event, audit.Allowed, append(d.attrs, issued...)...); err != nil {
		return api.Credentials{}, auditFailed(err)
	}
	hostCAs, userCAs, pins := a.caTrust(cas)
	return api.Credentials{
		Bot:                 in.Bot,
		Instance:            in.ID,
		Generation:          in.Generation,
		IdentityCertificate: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: idCert.Raw})),
		SSHCertificate:      sshCertText,
		HostCertificates:    hostCerts,
		SSHHostCAs:          hostCAs,
		SSHUserCAs:          userCAs,
		IssuerCAPins:        pins,
		Expires:             notAfter,
		Kubernetes:          kubeCreds,
	}, nil
}

// hostRecord is an SSH host certificate as a join or renewal record names
// it.
type hostRecord struct {
	Serial string            `json:"serial"`
	Names  []string          `json:"names"`
	Labels map[string]string `json:"labels"`
}

// identityKey identifies the proposed identity key: the hash of its
// public key.
func (k keys) identityKey() string {
	sum := sha256.Sum256(k.csr.RawSubjectPublicKeyInfo())
	return hex.EncodeToString(sum[:])
}

type keys struct {
	csr   *ca.CSR
	ssh   ssh.PublicKey
	hosts []hostKey
}

type hostKey struct {
	key    ssh.PublicKey
	names  []string
	labels map[string]string
}

// maxHostKeys bounds the host keys of one request; a host has a handful.
const maxHostKeys = 8

// checkHostNames checks that the bot's roles allow every host name asked for.
func checkHostNames(g resource.Grant, hosts []hostKey) error {
	for _, h := range hosts {
		if len(h.names) == 0 && len(g.HostNames) == 0 {
			return fault.Denied(api.CodeHostNameNotAllowed, "the roles of bot %s allow no SSH host names", g.Bot)
		}
		for _, n := range h.names {
			if !slices.Contains(g.HostNames, n) {
				return fault.Denied(api.CodeHostNameNotAllowed, "the roles of bot %s do not allow host name %s", g.Bot, n)
			}
		}
	}
	return nil
}

// parseKeys checks the public keys and the lifetime of a request.
func parseKeys(pk api.PublicKeys, ttlSeconds int64, hosts []api.HostKeyRequest) (keys, time.Duration, error) {
	var k keys
	block, _ := pem.Decode([]byte(pk.IdentityCSR))
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return k, 0, badRequest("keys.identity_csr: want a PEM CERTIFICATE REQUEST")
	}
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return k, 0, badRequest("keys.identity_csr: %v", err)
	}
	// Checked here, once: the signing below takes the checked request.
	csr, err := ca.CheckCSR(req)
	if err != nil {
		return k, 0, badRequest("keys.identity_csr: signature does not verify: %v", err)
	}
	if err := checkKeyStrength("keys.identity_csr", csr.PublicKey()); err != nil {
		return k, 0, err
	}
	k.csr = csr
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(pk.SSH))
	if err != nil {
		return k, 0, badRequest("keys.ssh: %v", err)
	}
	if _, isCert := pub.(*ssh.Certificate); isCert {
		return k, 0, badRequest("keys.ssh: want a public key, not a certificate")
	}
	if err := checkSSHKey("keys.ssh", pub); err != nil {
		return k, 0, err
	}
	k.ssh = pub
	if len(hosts) > maxHostKeys {
		return k, 0, badRequest("host_keys: at most %d host keys in one request", maxHostKeys)
	}
	for i, h := range hosts {
		hk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(h.PublicKey))
		if err != nil {
			return k, 0, badRequest("host_keys[%d].public_key: %v", i, err)
		}
		if _, isCert := hk.(*ssh.Certificate); isCert {
			return k, 0, badRequest("host_keys[%d].public_key: want a public key, not a certificate", i)
		}
		if err := checkSSHKey(fmt.Sprintf("host_keys[%d].public_key", i), hk); err != nil {
			return k, 0, err
		}
		if err := checkRequestLabels(i, h.Labels); err != nil {
			return k, 0, err
		}
		k.hosts = append(k.hosts, hostKey{key: hk, names: h.Names, labels: h.Labels})
	}
	ttl := time.Duration(ttlSeconds) * time.Second
	if ttlSeconds <= 0 || ttlSeconds > int64(365*24*time.Hour/time.Second) {
		return k, 0, badRequest("ttl_seconds must be between 1 and one year, got %d", ttlSeconds)
	}
	if ttl < MinTTL {
		ttl = MinTTL
	}
	return k, ttl, nil
}

// RSA keys the issuer signs must have between minRSABits and maxRSABits:
// fewer is too weak, and Go's TLS refuses peers' RSA keys of more than
// 8192 bits, so an identity with a larger key could not be used.
const (
	minRSABits = 2048
	maxRSABits = 8192
)

// checkKeyStrength refuses a public key that the issuer must not certify:
// RSA outside [minRSABits, maxRSABits], ECDSA on a curve other than P-256,
// P-384 and P-521 (a P-224 identity, for one, is useless over TLS), and
// any other type but Ed25519. Every key the issuer signs passes here.
func checkKeyStrength(field string, pub any) error {
	switch p := pub.(type) {
	case ed25519.PublicKey:
		return nil
	case *ecdsa.PublicKey:
		switch p.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
			return nil
		}
		name := "an unknown curve"
		if p.Curve != nil && p.Curve.Params() != nil {
			name = p.Curve.Params().Name
		}
		return badRequest("%s: ECDSA keys must use curve P-256, P-384 or P-521, not %s", field, name)
	case *rsa.PublicKey:
		if n := p.N.BitLen(); n < minRSABits || n > maxRSABits {
			return badRequest("%s: RSA keys must have %d to %d bits, not %d", field, minRSABits, maxRSABits, n)
		}
		return nil
	default:
		return badRequest("%s: unsupported key type %T (want Ed25519, ECDSA or RSA)", field, pub)
	}
}

// checkSSHKey is checkKeyStrength for an SSH public key.
func checkSSHKey(field string, pub ssh.PublicKey) error {
	cpk, ok := pub.(ssh.CryptoPublicKey)
	if !ok {
		return badRequest("%s: unsupported key type %s", field, pub.Type())
	}
	return checkKeyStrength(field, cpk.CryptoPublicKey())
}

// tokenError returns the refusal that err, a failed token lookup or use,
// means, or err itself, wrapped with what failed, if it is no refusal.
func tokenError(err error, what string) error {
	switch {
	case errors.Is(err, store.ErrTokenUnknown):
		return fault.Denied(api.CodeTokenUnknown, "join token is unknown")
	case errors.Is(err, store.ErrTokenUsed):
		return fault.Denied(api.CodeTokenUsed, "join token was already used")
	case errors.Is(err, store.ErrTokenExpired):
		return fault.Denied(api.CodeTokenExpired, "join token has expired")
	default:
		// Not a refusal: the renderer logs it and shows an internal error.
		return fmt.Errorf("authority: %s: %w", what, err)
	}
}

func badRequest(format string, args ...any) *fault.Error {
	return fault.Invalid(api.CodeBadRequest, format, args...)
}

func newInstanceID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// StoreHealth asks the store one cheap question, for the issuer's health:
// its error says why the store does not answer.
func (a *Authority) StoreHealth(ctx context.Context) error {
	_, err := a.Store.Changes(ctx)
	return err
}

// lockLookupFailed returns the refusal for a lock of what (a bot or an
// instance) named name that the store could not look up: err itself if
// the store cannot be reached, which the server answers as such, and
// otherwise an internal error, after logging err.
func (a *Authority) lockLookupFailed(what, name string, err error) error {
	if errors.Is(err, store.ErrUnavailable) {
		return fmt.Errorf("%s %s: lock lookup: %w", what, name, err)
	}
	a.log().Error(what+" lock lookup failed", what, name, "err", err)
	return fault.Internal(api.CodeInternal, "internal error")
}
