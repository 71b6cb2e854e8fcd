// Package store keeps the issuer's durable state: join tokens, bot instances
// with their generation counters, locks of bots and of instances, the ID
// tokens already used, the pending challenges of bound key pair joins, the
// inventory of hosts (nodes), the resource documents created through the
// admin API, kept as written, and the phases of the certificate
// authorities' rotations. Locks are of bots, of instances and of
// token resources; a lock may expire by itself.
//
// A join and a renewal are each written by one call, Join or Renew, in one
// transaction; the single-purpose methods serve the admin paths. Now is
// the clock that decides validity, the database's where there is one.
//
// Open returns one of two implementations: the embedded one, a bbolt file
// for a single issuer, or PostgreSQL, which several issuers can share.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mwi-project/mwi/api"
)

// Errors returned by Store methods. Callers match them with errors.Is.
var (
	ErrTokenUnknown       = errors.New("token unknown")
	ErrTokenUsed          = errors.New("token already used")
	ErrTokenExpired       = errors.New("token expired")
	ErrInstanceUnknown    = errors.New("bot instance unknown")
	ErrGenerationMismatch = errors.New("generation mismatch")
	ErrExists             = errors.New("already exists")
	// ErrInstanceLocked is an instance whose lock refuses it a new
	// generation.
	ErrInstanceLocked = errors.New("bot instance locked")
	// ErrBotLocked and ErrTokenLocked are a join or a renewal refused,
	// in the transaction that would write it, by a lock of its bot or of
	// the token resource its instance joins with.
	ErrBotLocked   = errors.New("bot locked")
	ErrTokenLocked = errors.New("token locked")
	// ErrReplay is a key given to MarkUsed that was already used.
	ErrReplay = errors.New("already used")
	// ErrChallengeUnknown is a challenge that was never issued, was used
	// already, or has expired.
	ErrChallengeUnknown = errors.New("challenge unknown, used or expired")
	// ErrUnavailable is a store that cannot be reached now, such as a
	// database that refuses connections or does not answer in time. The
	// same request may succeed once it is back.
	ErrUnavailable = errors.New("store unavailable")
)

// Token is a one-time join token. Only the SHA-256 hash of its secret is kept.
type Token struct {
	Hash       string    `json:"hash"` // hex SHA-256 of the secret
	Bot        string    `json:"bot"`
	Created    time.Time `json:"created"`
	Expires    time.Time `json:"expires"`
	ConsumedAt time.Time `json:"consumed_at,omitzero"`
	ConsumedBy string    `json:"consumed_by,omitempty"` // instance ID
}

// Instance is one joined copy of a bot: one mwid process's identity.
type Instance struct {
	ID         string    `json:"id"`
	Bot        string    `json:"bot"`
	Generation uint64    `json:"generation"`
	Created    time.Time `json:"created"`
	Renewed    time.Time `json:"renewed,omitzero"`
	// JoinMethod is how the instance joined (api.JoinMethod*); records
	// made before join methods existed have none. Use Method.
	JoinMethod api.JoinMethod `json:"join_method,omitempty"`
	// TokenName is the token resource the instance joined with, for join
	// methods other than "token".
	TokenName string `json:"token_name,omitempty"`
	// IssuedKey identifies the identity key issued at Generation (a hash
	// of its public key), so that a retry of the renewal that issued it,
	// whose answer was lost, is told apart from a copied identity.
	IssuedKey string `json:"issued_key,omitempty"`
}

// Method returns how the instance joined: JoinMethod, or "token" for a
// record without one, since one-time tokens were the only method then.
func (in Instance) Method() api.JoinMethod {
	if in.JoinMethod == "" {
		return api.JoinMethodToken
	}
	return in.JoinMethod
}

// Lock records why a bot, one instance of it, or every instance that
// joined with a token resource may no longer join or renew.
type Lock struct {
	// Bot is the locked bot, or the bot of the locked instance; empty in a
	// lock of a token.
	Bot string `json:"bot,omitempty"`
	// Instance is the locked instance's ID; it is empty in a lock of the
	// whole bot and in a lock of a token.
	Instance string `json:"instance,omitempty"`
	// Token is the name of the locked token resource; empty in the other
	// locks.
	Token  string    `json:"token,omitempty"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
	// Expires is when the lock lifts by itself; zero for a lock that stays
	// until it is removed.
	Expires time.Time `json:"expires,omitzero"`
}

// InForce reports whether l still applies at now: it has no expiry, or
// has not reached it.
func (l Lock) InForce(now time.Time) bool {
	return l.Expires.IsZero() || now.Before(l.Expires)
}

// Node is a host in the inventory: a bot instance that was issued SSH host
// certificates, as of its last join or renewal.
type Node struct {
	Instance string            `json:"instance"`
	Bot      string            `json:"bot"`
	Names    []string          `json:"names"`
	Labels   map[string]string `json:"labels,omitempty"`
	// Address is the address the request came from, without its port.
	Address string `json:"address,omitempty"`
	// Version is the version of mwid the host runs, from its User-Agent;
	// empty if it did not say.
	Version string `json:"version,omitempty"`
	// Renewed is when the host was last issued host certificates.
	Renewed time.Time `json:"renewed"`
}

// NodeRetention is how long a node stays in the inventory after its last
// renewal: longer than any certificate the issuer signs lives.
const NodeRetention = 31 * 24 * time.Hour

// Store is the issuer's durable state. Every method is safe for concurrent
// use, and each is atomic.
type Store interface {
	// PutToken records a new token; ErrExists if the hash is taken.
	PutToken(ctx context.Context, t Token) error
	// ConsumeToken marks the token with the given hash as used by instance,
	// at time now, and returns it. It fails with ErrTokenUnknown,
	// ErrTokenUsed or ErrTokenExpired (checked in that order) and then
	// leaves the token unchanged.
	ConsumeToken(ctx context.Context, hash, instance string, now time.Time) (Token, error)
	// Token returns the token with the given hash if it can still be used at
	// now, and otherwise the error ConsumeToken would return. It changes
	// nothing, so callers can check a join fully before consuming its token.
	Token(ctx context.Context, hash string, now time.Time) (Token, error)
	// CreateInstance records a new instance; ErrExists if the ID is taken.
	CreateInstance(ctx context.Context, in Instance) error
	// Instance returns the instance with the given ID or ErrInstanceUnknown.
	Instance(ctx context.Context, id string) (Instance, error)
	// AdvanceGeneration moves the instance from generation presented to
	// presented+1, records key as the identity key issued for it, sets
	// Renewed to now, and returns the updated instance. If the stored
	// generation is presented+1 and key is the one recorded for it, the
	// caller is retrying the renewal that issued it (its answer was lost):
	// AdvanceGeneration changes nothing and returns the stored instance.
	// Any other generation changes nothing and returns
	// ErrGenerationMismatch with the stored instance. A locked instance
	// at now (see LockInstance) changes nothing and fails with
	// ErrInstanceLocked, whatever the generation presented; so does one
	// whose bot or token resource is locked, with ErrBotLocked or
	// ErrTokenLocked.
	AdvanceGeneration(ctx context.Context, id string, presented uint64, key string, now time.Time) (Instance, error)
	// Join writes what a join writes, w, in one transaction, and returns
	// the instance joined: w.Instance as stored, or the kept instance
	// w.Keep as Renew returns it. It checks everything before it writes:
	// the token (ConsumeToken's errors), the replay record (ErrReplay),
	// then the kept instance (Renew's errors) or that the new one's ID is
	// free (ErrExists). A refusal writes nothing, except a stale
	// generation of a kept instance with w.Keep.OnMismatch set, which
	// writes the lock and the replay record (the token of a copied
	// identity stays spent) and returns ErrGenerationMismatch with the
	// stored instance.
	Join(ctx context.Context, w JoinWrite) (Instance, error)
	// Renew moves the generation of instance w.ID on as AdvanceGeneration
	// does, with the same errors, and puts w.Node in the inventory, in
	// one transaction. With a stale generation and w.OnMismatch set, it
	// locks the instance in the same transaction, as LockInstance would,
	// before it returns ErrGenerationMismatch. An error of w.Check is
	// returned as it is.
	Renew(ctx context.Context, w RenewWrite) (Instance, error)
	// Now returns the time that decides validity: the times certificates,
	// tokens, locks and records are checked against and made with. Several
	// issuers sharing a store take it from the same clock, the store's own
	// where it has one. It fails only when the store cannot tell it, such
	// as a database that cannot be reached.
	Now(ctx context.Context) (time.Time, error)
	// LockBot locks a bot, l.Bot, with every instance of it; l.Instance
	// and l.Token must be empty. Locking a locked bot keeps the first lock
	// unless it has expired at l.At.
	LockBot(ctx context.Context, l Lock) error
	// UnlockBot removes a bot's lock and returns it, or returns false if
	// the bot was not locked (an expired lock is removed all the same).
	UnlockBot(ctx context.Context, bot string) (Lock, bool, error)
	// BotLock returns the bot's lock and true, or false if it is not locked
	// at now.
	BotLock(ctx context.Context, bot string, now time.Time) (Lock, bool, error)
	// LockInstance locks one instance, l.Instance, of the bot l.Bot; both
	// must be set, and l.Token empty. Locking a locked instance keeps the
	// first lock unless it has expired at l.At.
	LockInstance(ctx context.Context, l Lock) error
	// UnlockInstance removes an instance's lock and returns it, or returns
	// false if the instance was not locked.
	UnlockInstance(ctx context.Context, id string) (Lock, bool, error)
	// InstanceLock returns the instance's lock and true, or false if it is
	// not locked at now.
	InstanceLock(ctx context.Context, id string, now time.Time) (Lock, bool, error)
	// LockToken locks the token resource l.Token: every instance whose
	// TokenName it is. l.Bot and l.Instance must be empty. Locking a locked
	// token keeps the first lock unless it has expired at l.At.
	LockToken(ctx context.Context, l Lock) error
	// UnlockToken removes a token resource's lock and returns it, or
	// returns false if the token was not locked.
	UnlockToken(ctx context.Context, name string) (Lock, bool, error)
	// TokenLock returns the token resource's lock and true, or false if it
	// is not locked at now.
	TokenLock(ctx context.Context, name string, now time.Time) (Lock, bool, error)
	// Locks returns the locks in force at now: those of bots, then of
	// instances, then of tokens, each in the order of their keys. Expired
	// locks are left out (and stay stored until they are removed or
	// replaced).
	Locks(ctx context.Context, now time.Time) ([]Lock, error)
	// InstancesOfBot returns the instances of the named bot, and
	// InstancesOfToken those that joined with the named token resource,
	// in the order of their IDs. Both read every instance: the KRL, their
	// one caller, is rebuilt only when the locks change.
	InstancesOfBot(ctx context.Context, bot string) ([]Instance, error)
	InstancesOfToken(ctx context.Context, name string) ([]Instance, error)
	// MarkUsed records that key (such as an ID token's jti) was used, until
	// expires. If key is already recorded and its record has not expired
	// at now, MarkUsed changes nothing and returns ErrReplay. Records that
	// have expired at now are removed.
	//
	// A key used by a bot instance (owner, non-empty) may be used again by
	// the same instance: a daemon re-joining with an ID token it already
	// presented, because its platform has not rotated it yet, is no replay.
	MarkUsed(ctx context.Context, key, owner string, expires, now time.Time) error
	// PutChallenge records a challenge issued for the named token resource,
	// usable once before expires; ErrExists if it is recorded already.
	// Challenges that have expired at now are removed.
	PutChallenge(ctx context.Context, challenge, tokenName string, expires, now time.Time) error
	// ConsumeChallenge removes the challenge and returns the name of the
	// token resource it was issued for. It returns ErrChallengeUnknown for
	// a challenge that was never issued, was consumed already, or has
	// expired at now.
	ConsumeChallenge(ctx context.Context, challenge string, now time.Time) (tokenName string, err error)
	// PutNode records n, replacing the record of the same instance and
	// that of an earlier instance of the same bot with the same names (the
	// host joined anew). Records last renewed more than NodeRetention
	// before n.Renewed are removed.
	PutNode(ctx context.Context, n Node) error
	// Nodes returns every node, ordered by instance ID.
	Nodes(ctx context.Context) ([]Node, error)
	// Tokens returns every one-time token, used or not, ordered by hash.
	Tokens(ctx context.Context) ([]Token, error)
	// DeleteToken removes the one-time token with the given hash, or
	// returns ErrTokenUnknown.
	DeleteToken(ctx context.Context, hash string) error
	// Instances returns every instance, ordered by ID.
	Instances(ctx context.Context) ([]Instance, error)
	// PutResources writes the resource documents rs, all or none. Without
	// replace, a key already held fails with ErrExists and writes none.
	PutResources(ctx context.Context, rs []Resource, replace bool) error
	// DeleteResource removes the document KIND/NAME, or returns
	// ErrResourceUnknown.
	DeleteResource(ctx context.Context, kind, name string) error
	// Resources returns every resource document, ordered by key.
	Resources(ctx context.Context) ([]Resource, error)
	// Prune removes the records of no further use at now: one-time
	// tokens consumed or expired TokenGrace or longer before now,
	// challenges and replay records expired at now, locks expired at now,
	// and nodes last renewed more than NodeRetention before now. It works
	// in batches, each its own short transaction, so that a large store
	// is never held by one; what was removed before an error stays
	// removed and is counted. A record that does not decode is kept and
	// named in the error, and the prune goes on past it, and to the
	// other kinds after an error in one. Removing is idempotent: issuers
	// sharing a store may prune it at the same time.
	Prune(ctx context.Context, now time.Time) (PruneStats, error)
	// Changes returns a count that grows with every write of the resource
	// documents or the locks, made through any Store on the same data, in
	// the transaction of the write. Several issuers on one database poll
	// it to notice each other's changes. A write that changes nothing may
	// count too.
	Changes(ctx context.Context) (uint64, error)
	// Rotations returns the stored state of every certificate authority
	// rotation, ordered by type. A type without a record is in
	// RotationStandby with its authority as loaded.
	Rotations(ctx context.Context) ([]Rotation, error)
	// SetRotation stores r, with the next Version, as the state of the
	// rotation of r.Type if the stored record is still from, the one the
	// caller read (Version and Phase; a type without a record is
	// RotationStandby at Version 0), and fails with ErrRotationConflict
	// otherwise: two admins, on two issuers, cannot both move one
	// rotation, and a move decided on a record that has changed since,
	// even through a round back to the same phase, is not stored. A
	// write counts in Changes, so that every issuer loads the new
	// authorities.
	SetRotation(ctx context.Context, r, from Rotation) error
	// Close releases the store.
	Close() error
}

// checkBotLock, checkInstanceLock and checkTokenLock refuse a lock given
// to LockBot, LockInstance or LockToken that does not name exactly what
// that method locks.
func checkBotLock(l Lock) error {
	if l.Bot == "" || l.Instance != "" || l.Token != "" {
		return lockArgsError("bot", "want a bot name only", l)
	}
	return nil
}

func checkInstanceLock(l Lock) error {
	if l.Bot == "" || l.Instance == "" || l.Token != "" {
		return lockArgsError("instance", "want a bot name and an instance", l)
	}
	return nil
}

func checkTokenLock(l Lock) error {
	if l.Token == "" || l.Bot != "" || l.Instance != "" {
		return lockArgsError("token", "want a token name only", l)
	}
	return nil
}

func lockArgsError(kind, want string, l Lock) error {
	return fmt.Errorf("store: lock %s: %s, got bot %q instance %q token %q", kind, want, l.Bot, l.Instance, l.Token)
}
