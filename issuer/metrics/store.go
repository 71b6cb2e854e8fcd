package metrics

import (
	"context"
	"errors"
	"time"

	"github.com/mwi-project/mwi/issuer/authority"
	"github.com/mwi-project/mwi/issuer/store"
)

// InstrumentStore returns st with each call timed:
// mwi_issuer_store_operation_duration_seconds{operation}, with operation
// the method's name in snake case (consume_token, advance_generation), and
// mwi_issuer_store_errors_total{operation} for the calls that failed for
// want of the store. Methods added to store.Store after this file pass
// through st untimed until they are listed here.
func (m *Metrics) InstrumentStore(st store.Store) store.Store {
	// The error counters exist from the start, at zero, so that the
	// first failure is an increase that rate() and alerts see.
	for _, op := range storeOperations {
		m.storeErrors.WithLabelValues(op)
	}
	return &timedStore{Store: st, m: m}
}

// storeOperations are the operation label values of the timed methods.
var storeOperations = []string{
	"probe",
	"put_token",
	"consume_token",
	"token",
	"create_instance",
	"instance",
	"advance_generation",
	"lock_bot",
	"unlock_bot",
	"bot_lock",
	"lock_instance",
	"unlock_instance",
	"instance_lock",
	"lock_token",
	"unlock_token",
	"token_lock",
	"locks",
	"instances_of_bot",
	"instances_of_token",
	"mark_used",
	"put_challenge",
	"consume_challenge",
	"put_node",
	"nodes",
	"tokens",
	"delete_token",
	"instances",
	"put_resources",
	"delete_resource",
	"resources",
	"prune",
	"changes",
	"join",
	"renew",
	"now",
	"rotations",
	"set_rotation",
}

type timedStore struct {
	store.Store
	m *Metrics
}

// done records a call of op that began at start and ended with *err.
func (s *timedStore) done(op string, start time.Time, err *error) {
	s.m.storeDuration.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if *err != nil && !isAnswer(*err) {
		s.m.storeErrors.WithLabelValues(op).Inc()
	}
}

// answers are the errors with which a working store answers: a token
// unknown or used, a generation that does not match. They are decisions'
// inputs, not the store's failures.
var answers = []error{
	store.ErrTokenUnknown, store.ErrTokenUsed, store.ErrTokenExpired, store.ErrInstanceUnknown,
	store.ErrGenerationMismatch, store.ErrExists, store.ErrInstanceLocked, store.ErrReplay,
	store.ErrChallengeUnknown, store.ErrResourceUnknown,
}

func isAnswer(err error) bool {
	for _, a := range answers {
		if errors.Is(err, a) {
			return true
		}
	}
	return false
}

// Probe is timed too; see store.Probe.
func (s *timedStore) Probe(ctx context.Context) (err error) {
	defer s.done("probe", time.Now(), &err)
	return store.Probe(ctx, s.Store)
}

// Close is not timed.
func (s *timedStore) Close() error { return s.Store.Close() }

func (s *timedStore) PutToken(ctx context.Context, t store.Token) (err error) {
	defer s.done("put_token", time.Now(), &err)
	return s.Store.PutToken(ctx, t)
}

func (s *timedStore) ConsumeToken(ctx context.Context, hash, instance string, now time.Time) (r0 store.Token, err error) {
	defer s.done("consume_token", time.Now(), &err)
	return s.Store.ConsumeToken(ctx, hash, instance, now)
}

func (s *timedStore) Token(ctx context.Context, hash string, now time.Time) (r0 store.Token, err error) {
	defer s.done("token", time.Now(), &err)
	return s.Store.Token(ctx, hash, now)
}

func (s *timedStore) CreateInstance(ctx context.Context, in store.Instance) (err error) {
	defer s.done("create_instance", time.Now(), &err)
	return s.Store.CreateInstance(ctx, in)
}

func (s *timedStore) Instance(ctx context.Context, id string) (r0 store.Instance, err error) {
	defer s.done("instance", time.Now(), &err)
	return s.Store.Instance(ctx, id)
}

func (s *timedStore) AdvanceGeneration(ctx context.Context, id string, presented uint64, key string, now time.Time) (r0 store.Instance, err error) {
	defer s.done("advance_generation", time.Now(), &err)
	return s.Store.AdvanceGeneration(ctx, id, presented, key, now)
}

func (s *timedStore) Join(ctx context.Context, w store.JoinWrite) (r0 store.Instance, err error) {
	defer s.done("join", time.Now(), &err)
	return s.Store.Join(ctx, w)
}

func (s *timedStore) Renew(ctx context.Context, w store.RenewWrite) (r0 store.Instance, err error) {
	defer s.done("renew", time.Now(), &err)
	return s.Store.Renew(ctx, w)
}

func (s *timedStore) Now(ctx context.Context) (r0 time.Time, err error) {
	defer s.done("now", time.Now(), &err)
	return s.Store.Now(ctx)
}

func (s *timedStore) Rotations(ctx context.Context) (r0 []store.Rotation, err error) {
	defer s.done("rotations", time.Now(), &err)
	return s.Store.Rotations(ctx)
}

func (s *timedStore) SetRotation(ctx context.Context, r, from store.Rotation) (err error) {
	defer s.done("set_rotation", time.Now(), &err)
	return s.Store.SetRotation(ctx, r, from)
}

func (s *timedStore) LockBot(ctx context.Context, l store.Lock) (err error) {
	defer s.done("lock_bot", time.Now(), &err)
	return s.Store.LockBot(ctx, l)
}

func (s *timedStore) UnlockBot(ctx context.Context, bot string) (r0 store.Lock, r1 bool, err error) {
	defer s.done("unlock_bot", time.Now(), &err)
	return s.Store.UnlockBot(ctx, bot)
}

func (s *timedStore) BotLock(ctx context.Context, bot string, now time.Time) (r0 store.Lock, r1 bool, err error) {
	defer s.done("bot_lock", time.Now(), &err)
	return s.Store.BotLock(ctx, bot, now)
}

func (s *timedStore) LockInstance(ctx context.Context, l store.Lock) (err error) {
	defer s.done("lock_instance", time.Now(), &err)
	return s.Store.LockInstance(ctx, l)
}

func (s *timedStore) UnlockInstance(ctx context.Context, id string) (r0 store.Lock, r1 bool, err error) {
	defer s.done("unlock_instance", time.Now(), &err)
	return s.Store.UnlockInstance(ctx, id)
}

func (s *timedStore) InstanceLock(ctx context.Context, id string, now time.Time) (r0 store.Lock, r1 bool, err error) {
	defer s.done("instance_lock", time.Now(), &err)
	return s.Store.InstanceLock(ctx, id, now)
}

func (s *timedStore) LockToken(ctx context.Context, l store.Lock) (err error) {
	defer s.done("lock_token", time.Now(), &err)
	return s.Store.LockToken(ctx, l)
}

func (s *timedStore) UnlockToken(ctx context.Context, name string) (r0 store.Lock, r1 bool, err error) {
	defer s.done("unlock_token", time.Now(), &err)
	return s.Store.UnlockToken(ctx, name)
}

func (s *timedStore) TokenLock(ctx context.Context, name string, now time.Time) (r0 store.Lock, r1 bool, err error) {
	defer s.done("token_lock", time.Now(), &err)
	return s.Store.TokenLock(ctx, name, now)
}

func (s *timedStore) Locks(ctx context.Context, now time.Time) (r0 []store.Lock, err error) {
	defer s.done("locks", time.Now(), &err)
	return s.Store.Locks(ctx, now)
}

func (s *timedStore) InstancesOfBot(ctx context.Context, bot string) (r0 []store.Instance, err error) {
	defer s.done("instances_of_bot", time.Now(), &err)
	return s.Store.InstancesOfBot(ctx, bot)
}

func (s *timedStore) InstancesOfToken(ctx context.Context, name string) (r0 []store.Instance, err error) {
	defer s.done("instances_of_token", time.Now(), &err)
	return s.Store.InstancesOfToken(ctx, name)
}

func (s *timedStore) MarkUsed(ctx context.Context, key, owner string, expires, now time.Time) (err error) {
	defer s.done("mark_used", time.Now(), &err)
	return s.Store.MarkUsed(ctx, key, owner, expires, now)
}

func (s *timedStore) PutChallenge(ctx context.Context, challenge, tokenName string, expires, now time.Time) (err error) {
	defer s.done("put_challenge", time.Now(), &err)
	return s.Store.PutChallenge(ctx, challenge, tokenName, expires, now)
}

func (s *timedStore) ConsumeChallenge(ctx context.Context, challenge string, now time.Time) (tokenName string, err error) {
	defer s.done("consume_challenge", time.Now(), &err)
	return s.Store.ConsumeChallenge(ctx, challenge, now)
}

func (s *timedStore) PutNode(ctx context.Context, n store.Node) (err error) {
	defer s.done("put_node", time.Now(), &err)
	return s.Store.PutNode(ctx, n)
}

func (s *timedStore) Nodes(ctx context.Context) (r0 []store.Node, err error) {
	defer s.done("nodes", time.Now(), &err)
	return s.Store.Nodes(ctx)
}

func (s *timedStore) Tokens(ctx context.Context) (r0 []store.Token, err error) {
	defer s.done("tokens", time.Now(), &err)
	return s.Store.Tokens(ctx)
}

func (s *timedStore) DeleteToken(ctx context.Context, hash string) (err error) {
	defer s.done("delete_token", time.Now(), &err)
	return s.Store.DeleteToken(ctx, hash)
}

func (s *timedStore) Instances(ctx context.Context) (r0 []store.Instance, err error) {
	defer s.done("instances", time.Now(), &err)
	return s.Store.Instances(ctx)
}

func (s *timedStore) PutResources(ctx context.Context, rs []store.Resource, replace bool) (err error) {
	defer s.done("put_resources", time.Now(), &err)
	return s.Store.PutResources(ctx, rs, replace)
}

func (s *timedStore) DeleteResource(ctx context.Context, kind, name string) (err error) {
	defer s.done("delete_resource", time.Now(), &err)
	return s.Store.DeleteResource(ctx, kind, name)
}

func (s *timedStore) Resources(ctx context.Context) (r0 []store.Resource, err error) {
	defer s.done("resources", time.Now(), &err)
	return s.Store.Resources(ctx)
}

func (s *timedStore) Prune(ctx context.Context, now time.Time) (r0 store.PruneStats, err error) {
	defer s.done("prune", time.Now(), &err)
	return s.Store.Prune(ctx, now)
}

func (s *timedStore) Changes(ctx context.Context) (r0 uint64, err error) {
	defer s.done("changes", time.Now(), &err)
	return s.Store.Changes(ctx)
}

var (
	_ store.Prober       = (*timedStore)(nil)
	_ authority.Observer = (*Metrics)(nil)
)
