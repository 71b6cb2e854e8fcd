package authority

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/fault"
	"github.com/mwi-project/mwi/internal/krl"
	"github.com/mwi-project/mwi/internal/sshaccess"
	"github.com/mwi-project/mwi/issuer/audit"
	"github.com/mwi-project/mwi/issuer/ca"
	"github.com/mwi-project/mwi/issuer/store"
)

// maxLockReason bounds the reason an operator gives for a lock.
const maxLockReason = 1024

// lockKind is one kind of lock target: a bot, an instance or a token
// resource.
type lockKind struct {
	name                   string // as in messages and mwi-issuer's flags
	lockEvent, unlockEvent string
	put                    func(store.Store, context.Context, store.Lock) error
	get                    func(store.Store, context.Context, string, time.Time) (store.Lock, bool, error)
	remove                 func(store.Store, context.Context, string) (store.Lock, bool, error)
}

var (
	botLocks = lockKind{"bot", audit.EventBotLock, audit.EventBotUnlock,
		store.Store.LockBot, store.Store.BotLock, store.Store.UnlockBot}
	instanceLocks = lockKind{"instance", audit.EventInstanceLock, audit.EventInstanceUnlock,
		store.Store.LockInstance, store.Store.InstanceLock, store.Store.UnlockInstance}
	tokenLocks = lockKind{"token", audit.EventTokenLock, audit.EventTokenUnlock,
		store.Store.LockToken, store.Store.TokenLock, store.Store.UnlockToken}
)

// lockTarget returns the kind of lock t names and its key, or the refusal
// of a target that names none or more than one.
func lockTarget(t api.LockTarget) (lockKind, string, *fault.Error) {
	var kinds []lockKind
	var key string
	for _, c := range []struct {
		kind lockKind
		key  string
	}{{botLocks, t.Bot}, {instanceLocks, t.Instance}, {tokenLocks, t.Token}} {
		if c.key != "" {
			kinds, key = append(kinds, c.kind), c.key
		}
	}
	if len(kinds) != 1 {
		return lockKind{}, "", badRequest("a lock names exactly one of a bot, an instance and a token; this one names %d", len(kinds))
	}
	return kinds[0], key, nil
}

// lockAttrs are the audit attributes naming t.
func lockAttrs(t api.LockTarget) []slog.Attr {
	var attrs []slog.Attr
	for _, a := range []slog.Attr{slog.String("bot", t.Bot), slog.String("instance", t.Instance), slog.String("token", t.Token)} {
		if a.Value.String() != "" {
			attrs = append(attrs, a)
		}
	}
	return attrs
}

// AddLock locks the target t for reason, for ttl if it is positive or
// until it is removed: a bot with every instance of it, one instance, or
// every instance that joined with a token resource. A target locked
// already keeps its first lock, which AddLock returns.
//
// A lock only stops, so it is not undone for want of an audit record: if
// the record cannot be written, the lock stays and the error says so.
func (a *Authority) AddLock(ctx context.Context, t api.LockTarget, reason string, ttl time.Duration) (api.Lock, error) {
	kind, key, herr := lockTarget(t)
	if herr != nil {
		a.Audit.Record(ctx, audit.EventRequest, audit.Denied, append(lockAttrs(t), slog.String("reason", herr.Message))...)
		return api.Lock{}, herr
	}
	deny := func(err error) (api.Lock, error) {
		return api.Lock{}, a.refuse(ctx, kind.lockEvent, err, lockAttrs(t)...)
	}
	if herr := checkLockReason(reason); herr != nil {
		return deny(herr)
	}
	if ttl < 0 {
		return deny(badRequest("the lifetime of a lock must be positive"))
	}
	now, err := a.now(ctx)
	if err != nil {
		return api.Lock{}, err
	}
	l := store.Lock{Reason: reason, At: now}
	if ttl > 0 {
		l.Expires = now.Add(ttl)
	}
	switch kind.name {
	case "bot":
		if _, ok := a.Resources().Bot(key); !ok {
			return deny(fault.NotFound(api.CodeBotUnknown, "no bot named %q in the issuer's resources", key))
		}
		l.Bot = key
	case "instance":
		in, err := a.Store.Instance(ctx, key)
		if errors.Is(err, store.ErrInstanceUnknown) {
			return deny(fault.NotFound(api.CodeNotFound, "no bot instance %q on this issuer", key))
		} else if err != nil {
			return api.Lock{}, err
		}
		l.Bot, l.Instance = in.Bot, key
	case "token":
		if err := a.checkTokenTarget(ctx, key); err != nil {
			return deny(err)
		}
		l.Token = key
	}
	err = kind.put(a.Store, ctx, l)
	a.invalidateLocks() // even after an error: the write may have landed
	if err != nil {
		return api.Lock{}, err
	}
	l, _, err = kind.get(a.Store, ctx, key, now)
	if err != nil {
		return api.Lock{}, err
	}
	attrs := append(lockAttrs(t), slog.String("bot", l.Bot), slog.String("reason", l.Reason))
	if !l.Expires.IsZero() {
		attrs = append(attrs, slog.Time("expires", l.Expires))
	}
	if err := a.Audit.Record(ctx, kind.lockEvent, audit.Allowed, dedupe(attrs)...); err != nil {
		return apiLock(l), lockUnrecorded(kind.name + " " + key)
	}
	return apiLock(l), nil
}

// dedupe drops the attributes whose key comes again later, and empty
// ones, so that a record names each thing once.
func dedupe(attrs []slog.Attr) []slog.Attr {
	var out []slog.Attr
	for i, a := range attrs {
		later := slices.ContainsFunc(attrs[i+1:], func(b slog.Attr) bool { return b.Key == a.Key })
		if !later && a.Value.String() != "" {
			out = append(out, a)
		}
	}
	return out
}

// checkTokenTarget refuses to lock a token name that is neither a token
// resource nor the token of any instance: a mistyped name would otherwise
// lock nothing and pass for a success.
func (a *Authority) checkTokenTarget(ctx context.Context, name string) error {
	if _, ok := a.Resources().Token(name); ok {
		return nil
	}
	ins, err := a.Store.InstancesOfToken(ctx, name)
	if err != nil {
		return err
	}
	if len(ins) == 0 {
		return fault.NotFound(api.CodeNotFound,
			"no token resource %q in the issuer's resources, and no instance joined with one", name)
	}
	return nil
}

// lockUnrecorded tells the operator that what was locked stays locked,
// but that the audit log has no record of it. A lock only stops, so it
// is not undone for want of a record, unlike what issues or unlocks.
func lockUnrecorded(what string) *fault.Error {
	return fault.Internal(api.CodeAuditUnavailable,
		"%s is locked, but the issuer's audit log cannot be written, so the lock is not recorded", what)
}

func checkLockReason(reason string) *fault.Error {
	switch {
	case strings.TrimSpace(reason) == "":
		return badRequest("a lock needs a reason")
	case len(reason) > maxLockReason:
		return badRequest("the reason of a lock is longer than %d bytes", maxLockReason)
	}
	return nil
}

// RemoveLock lifts the lock of the target t and returns it. A target that
// is not locked (or whose lock has expired) is a not_found error, so that
// a mistyped name does not pass for a success. The record comes first: no
// lock is lifted unrecorded. Removing a bot's lock leaves the locks of its
// instances in place.
func (a *Authority) RemoveLock(ctx context.Context, t api.LockTarget) (api.Lock, error) {
	kind, key, herr := lockTarget(t)
	if herr != nil {
		a.Audit.Record(ctx, audit.EventRequest, audit.Denied, append(lockAttrs(t), slog.String("reason", herr.Message))...)
		return api.Lock{}, herr
	}
	now, err := a.now(ctx)
	if err != nil {
		return api.Lock{}, err
	}
	l, ok, err := kind.get(a.Store, ctx, key, now)
	if err != nil {
		return api.Lock{}, err
	}
	if !ok {
		herr := fault.NotFound(api.CodeNotFound, "%s %q is not locked (mwi-issuer lock ls lists the locks)", kind.name, key)
		a.Audit.Record(ctx, kind.unlockEvent, audit.Denied, append(lockAttrs(t), slog.String("reason", herr.Message))...)
		return api.Lock{}, herr
	}
	attrs := append(lockAttrs(t), slog.String("bot", l.Bot), slog.String("lock_reason", l.Reason), slog.Time("locked_at", l.At))
	if err := a.Audit.Record(ctx, kind.unlockEvent, audit.Allowed, dedupe(attrs)...); err != nil {
		return api.Lock{}, auditFailed(err)
	}
	_, _, err = kind.remove(a.Store, ctx, key)
	a.invalidateLocks()
	if err != nil {
		return api.Lock{}, err
	}
	return apiLock(l), nil
}

// LockBot locks the named bot, with every instance of it, for reason, as
// AddLock does.
func (a *Authority) LockBot(ctx context.Context, bot, reason string) (api.Lock, error) {
	return a.AddLock(ctx, api.LockTarget{Bot: bot}, reason, 0)
}

// LockInstance locks the bot instance with the given ID for reason, as
// AddLock does.
func (a *Authority) LockInstance(ctx context.Context, id, reason string) (api.Lock, error) {
	return a.AddLock(ctx, api.LockTarget{Instance: id}, reason, 0)
}

// UnlockBot lifts a bot's lock, as RemoveLock does, except that a bot that
// is not locked is no error: unlocking it is harmless.
func (a *Authority) UnlockBot(ctx context.Context, bot string) error {
	_, err := a.RemoveLock(ctx, api.LockTarget{Bot: bot})
	if e, ok := fault.As(err); ok && e.Code == api.CodeNotFound {
		return nil
	}
	return err
}

// UnlockInstance lifts the lock of the instance with the given ID, as
// RemoveLock does.
func (a *Authority) UnlockInstance(ctx context.Context, id string) (api.Lock, error) {
	return a.RemoveLock(ctx, api.LockTarget{Instance: id})
}

// Locks returns the locks in force: of bots, then of instances, then of
// tokens.
func (a *Authority) Locks(ctx context.Context) ([]api.Lock, error) {
	now, err := a.now(ctx)
	if err != nil {
		return nil, err
	}
	locks, err := a.Store.Locks(ctx, now)
	if err != nil {
		return nil, err
	}
	out := make([]api.Lock, len(locks))
	for i, l := range locks {
		out[i] = apiLock(l)
	}
	return out, nil
}

func apiLock(l store.Lock) api.Lock {
	return api.Lock{Bot: l.Bot, Instance: l.Instance, Token: l.Token, Reason: l.Reason, At: l.At, Expires: l.Expires}
}

// tokenLocked returns the refusal of an instance that joins with the named
// token resource while it is locked.
func (a *Authority) tokenLocked(ctx context.Context, name string) error {
	if name == "" {
		return nil
	}
	now, err := a.now(ctx)
	if err != nil {
		return err
	}
	l, locked, err := a.Store.TokenLock(ctx, name, now)
	if err != nil || !locked {
		return err
	}
	return fault.Denied(api.CodeTokenLocked,
		"token %s is locked: %s; an operator can lift it with mwi-issuer lock rm --token %s", name, l.Reason, name)
}

// LockList returns the locks in force, for hosts to enforce, with a
// strong entity tag of the locks: it changes exactly when they do.
func (a *Authority) LockList(ctx context.Context) (api.LockList, string, error) {
	now, err := a.now(ctx)
	if err != nil {
		return api.LockList{}, "", err
	}
	locks, err := a.Locks(ctx)
	if err != nil {
		return api.LockList{}, "", err
	}
	return api.LockList{Locks: locks, Now: now}, etag(locks), nil
}

// etag returns a strong entity tag of v: a hash of its JSON encoding.
func etag(v any) string {
	data, _ := json.Marshal(v) // of locks and strings, which always encode
	sum := sha256.Sum256(data)
	return `"` + hex.EncodeToString(sum[:16]) + `"`
}

// krlRecheck is how long a KRL built for unchanged locks is served before
// the instances they cover are listed again. Locking changes the locks, so
// a new lock is in the next KRL at once; the recheck catches an instance
// made while a bot lock was being added.
const krlRecheck = 30 * time.Second

// krlCache holds the KRL last built.
type krlCache struct {
	mu      sync.Mutex
	locks   string    // etag of the locks it was built for
	ids     string    // etag of the key IDs it revokes
	checked time.Time // when ids was last listed
	version uint64
	data    []byte
	etag    string
}

// KRL returns the OpenSSH key revocation list of the user certificates
// that the locks in force refuse, with a strong entity tag. It revokes,
// under every trusted SSH user CA (two during a rotation), the key ID (sshaccess.KeyID) of every instance of
// a locked bot, of every instance that joined with a locked token, and of
// every locked instance. Its version grows each time its content changes.
//
// The KRL is built again only when the locks change, or krlRecheck after
// it was last built, so that anonymous callers, who may fetch it, cost a
// read of the locks and no more.
func (a *Authority) KRL(ctx context.Context) ([]byte, string, error) {
	now, err := a.now(ctx)
	if err != nil {
		return nil, "", err
	}
	locks, err := a.Store.Locks(ctx, now)
	if err != nil {
		return nil, "", err
	}
	c := &a.krl
	c.mu.Lock()
	defer c.mu.Unlock()
	// A rotation changes the authorities the KRL revokes under: it is
	// built again then, as when the locks change.
	userCAs := a.CAs().SSHUserCAs()
	caTag := etag(authorizedKeys(userCAs))
	locksTag := etag(locks) + caTag
	if c.data != nil && c.locks == locksTag && now.Sub(c.checked) < krlRecheck && !now.Before(c.checked) {
		return c.data, c.etag, nil
	}
	ids, err := a.revokedKeyIDs(ctx, locks)
	if err != nil {
		return nil, "", err
	}
	idsTag := etag(ids) + caTag
	c.locks, c.checked = locksTag, now
	if c.data != nil && c.ids == idsTag {
		return c.data, c.etag, nil
	}
	version := max(c.version+1, uint64(max(now.Unix(), 0)))
	list := krl.KRL{
		Version:   version,
		Generated: now,
		Comment:   "mwi-issuer: user certificates of locked bots, instances and tokens",
		Certs:     revocations(userCAs, ids),
	}
	data, err := list.Marshal()
	if err != nil {
		return nil, "", fmt.Errorf("authority: KRL: %w", err)
	}
	c.ids, c.version, c.data, c.etag = idsTag, version, data, etag(data)
	return c.data, c.etag, nil
}

// LocksChanged tells the authority that the locks or the instances they
// cover may have changed through another issuer on the same store. The
// KRL and the lock list read the locks from the store each time, so they
// see such changes anyway; LocksChanged makes the next join or renewal
// load the locks again (see CacheLocks), and the next KRL list the
// instances of locked bots and tokens again too, rather than krlRecheck
// after it last did.
func (a *Authority) LocksChanged() {
	a.invalidateLocks()
	a.krl.mu.Lock()
	defer a.krl.mu.Unlock()
	a.krl.checked = time.Time{}
}

// revokedKeyIDs returns, sorted, the key IDs of the user certificates that
// locks refuse.
func (a *Authority) revokedKeyIDs(ctx context.Context, locks []store.Lock) ([]string, error) {
	var ids []string
	for _, l := range locks {
		var ins []store.Instance
		var err error
		switch {
		case l.Instance != "":
			ins = []store.Instance{{ID: l.Instance, Bot: l.Bot}}
		case l.Token != "":
			ins, err = a.Store.InstancesOfToken(ctx, l.Token)
		case l.Bot != "":
			ins, err = a.Store.InstancesOfBot(ctx, l.Bot)
		}
		if err != nil {
			return nil, err
		}
		for _, in := range ins {
			ids = append(ids, sshaccess.KeyID(in.Bot, in.ID))
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids), nil
}

// Limits on the SSH refusals a host reports. Each is an audit record, and
// a host decides how many logins it refuses (anyone can try to log in to
// it), so each reporting instance may have refusalBurst recorded at once
// and one more every refusalEvery; the reports past that are counted and
// the count is recorded with the next report that is. The audit log's own
// limit on denials bounds all hosts together.
const (
	refusalBurst = 20
	refusalEvery = 3 * time.Second
)

// refusalLimits holds the state of the limits on SSH refusal reports.
type refusalLimits struct {
	mu      sync.Mutex
	buckets buckets
	dropped map[string]int // reports not recorded, by reporting instance
}

// take counts a report by instance and reports whether it is recorded,
// and how many of the instance's reports were not since the last one that
// was.
func (l *refusalLimits) take(instance string, now time.Time) (ok bool, dropped int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dropped == nil {
		l.dropped = make(map[string]int)
	}
	if !l.buckets.take(instance, now, refusalBurst, refusalEvery) {
		l.dropped[instance]++
		return false, 0
	}
	dropped = l.dropped[instance]
	delete(l.dropped, instance)
	return true, dropped
}

// SSHRefusal records in the audit log (event ssh_refused, outcome denied)
// a login that a host refused to an MWI certificate, as the host's mwid
// reports it; reporter is the reporting host's identity. A host reporting
// faster than the limits above is answered 429 and its report is counted,
// not recorded.
func (a *Authority) SSHRefusal(ctx context.Context, reporter ca.Identity, r api.SSHRefusal, remote string) error {
	if strings.TrimSpace(r.Login) == "" || strings.TrimSpace(r.Reason) == "" {
		return badRequest("an SSH refusal names the login and the reason")
	}
	ok, dropped := a.refusalLimits.take(reporter.Instance, a.localNow())
	if !ok {
		return fault.RateLimited(api.CodeAccessDenied,
			"too many SSH refusals reported by instance %s; they are counted, and the count is recorded with the next report", reporter.Instance)
	}
	attrs := []slog.Attr{
		slog.String("remote", remote),
		slog.String("reporter_bot", reporter.Bot), slog.String("reporter_instance", reporter.Instance),
		slog.String("host", r.Host), slog.String("login", r.Login),
		slog.String("bot", r.Bot), slog.String("instance", r.Instance),
		slog.String("key_id", r.KeyID), slog.String("serial", r.Serial), slog.String("reason", r.Reason),
	}
	if dropped > 0 {
		attrs = append(attrs, slog.Int("unrecorded_before", dropped))
	}
	if err := a.Audit.Record(ctx, audit.EventSSHRefused, audit.Denied, attrs...); err != nil {
		return auditFailed(err)
	}
	return nil
}

// lockSet is the authority's copy of the bot and instance locks, which
// every join and renewal checks (see grant), when Authority.CacheLocks is
// set. It is loaded from the store when first needed after it was
// invalidated: by LocksChanged, when the store counts a change, and by
// the authority's own writes of locks, so that a lock written through this
// authority refuses its next request, and one written through another
// issuer on the same store refuses within the server's poll.
type lockSet struct {
	mu sync.Mutex
	// gen counts invalidations; the maps are those loaded at loaded, and
	// are current only while loaded == gen and valid.
	gen, loaded     uint64
	valid           bool
	bots, instances map[string]store.Lock
}

// invalidateLocks makes the next lock check load the locks again.
func (a *Authority) invalidateLocks() {
	a.lockSet.mu.Lock()
	a.lockSet.gen++
	a.lockSet.mu.Unlock()
}

// lockOf returns the lock of the bot (kind botLocks) or instance
// (instanceLocks) named key in force at now, as the store's BotLock and
// InstanceLock do, from the lockSet if a.CacheLocks is set.
func (a *Authority) lockOf(ctx context.Context, kind lockKind, key string, now time.Time) (store.Lock, bool, error) {
	if !a.CacheLocks {
		return kind.get(a.Store, ctx, key, now)
	}
	pick := func(bots, instances map[string]store.Lock) (store.Lock, bool) {
		m := bots
		if kind.name == instanceLocks.name {
			m = instances
		}
		l, ok := m[key]
		if !ok || !l.InForce(now) {
			return store.Lock{}, false
		}
		return l, true
	}
	s := &a.lockSet
	s.mu.Lock()
	if s.valid && s.loaded == s.gen {
		l, ok := pick(s.bots, s.instances)
		s.mu.Unlock()
		return l, ok, nil
	}
	gen := s.gen
	s.mu.Unlock()
	// Locks in force at now stay in force until they expire, which pick
	// checks at each lookup.
	locks, err := a.Store.Locks(ctx, now)
	if err != nil {
		return store.Lock{}, false, err
	}
	bots, instances := make(map[string]store.Lock), make(map[string]store.Lock)
	for _, l := range locks {
		switch {
		case l.Instance != "":
			instances[l.Instance] = l
		case l.Token != "":
		case l.Bot != "":
			bots[l.Bot] = l
		}
	}
	s.mu.Lock()
	// A set loaded across an invalidation may miss the change that made
	// it; it answers this request, which raced the change, and no other.
	if s.gen == gen {
		s.valid, s.loaded, s.bots, s.instances = true, gen, bots, instances
	}
	s.mu.Unlock()
	l, ok := pick(bots, instances)
	return l, ok, nil
}
