package authority

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/fault"
	"github.com/mwi-project/mwi/issuer/audit"
	"github.com/mwi-project/mwi/issuer/ca"
	"github.com/mwi-project/mwi/issuer/join"
	"github.com/mwi-project/mwi/issuer/resource"
	"github.com/mwi-project/mwi/issuer/store"
)

// ChallengeTTL is how long a bound key pair challenge can be used.
const ChallengeTTL = 60 * time.Second

// verifier returns the ID token verifier.
func (a *Authority) verifier() *join.Verifier {
	if a.IDTokens != nil {
		return a.IDTokens
	}
	a.defaultIDs.Do(func() { a.idTokens = &join.Verifier{} })
	return a.idTokens
}

// audience returns the audience ID tokens for tok must have.
func (a *Authority) audience(tok resource.Token) string {
	switch {
	case tok.Audience != "":
		return tok.Audience
	case a.ClusterName != "":
		return a.ClusterName
	}
	return DefaultClusterName
}

// joinDenied is the refusal of an attestation: the failed check, and never
// the rules.
func joinDenied(check string) *fault.Error {
	return fault.Denied(api.CodeJoinDenied, "%s", check)
}

// joinAttested admits a bot with a token resource and an attestation: an
// ID token (github, gitlab, kubernetes, oidc) or a signature over a
// challenge (bound_keypair).
//
// The checks run in this order: the token resource exists, has the
// request's join method and has not expired; the attestation verifies and
// an allow rule admits it; the bot's roles allow what is asked; an
// identity the caller presented is of the token's bot and not locked; the
// ID token was not used before (recorded now, so a refusal above leaves it
// usable). Then, if the caller presented a valid identity of an instance
// that joined with the same token, that instance is kept and its
// generation advanced, as a renewal would; otherwise a new instance is
// made. A stale generation is the one refusal after the token is
// recorded: it locks the instance, and a token presented with a copied
// identity stays spent.
//
// Every refusal is audited with the token name and the failed check; an
// attestation's refusal is answered join_denied with the check's name.
func (a *Authority) joinAttested(ctx context.Context, req api.JoinRequest, client *ca.Identity, remote string) (api.Credentials, error) {
	attrs := []slog.Attr{slog.String("remote", remote), slog.String("join_method", string(req.JoinMethod)), slog.String("token_name", req.TokenName)}
	if client != nil {
		attrs = append(attrs, slog.String("client_instance", client.Instance), slog.Uint64("client_generation", client.Generation))
	}
	deny := func(err error, more ...slog.Attr) (api.Credentials, error) {
		return api.Credentials{}, a.refuse(ctx, audit.EventJoin, err, append(attrs, more...)...)
	}
	denied := func(d *join.DeniedError) (api.Credentials, error) {
		var more []slog.Attr
		if d.Detail != "" {
			more = append(more, slog.String("detail", d.Detail))
		}
		return deny(joinDenied(d.Check), more...)
	}

	if req.TokenName == "" {
		return deny(badRequest("token_name is empty: name the token resource to join with"))
	}
	if req.Token != "" {
		return deny(badRequest("token is for join method token only"))
	}
	// What the request must carry depends on how the method attests; the
	// token resource's block, looked up below, has the same kind.
	kind, _ := resource.JoinSpecFor(req.JoinMethod)
	if _, challenge := kind.(resource.ChallengeJoin); challenge {
		if req.Challenge == "" || req.Signature == "" {
			return deny(badRequest("join method %s needs challenge and signature", req.JoinMethod))
		}
		if req.IDToken != "" {
			return deny(badRequest("id_token is not for join method %s", req.JoinMethod))
		}
	} else {
		if req.IDToken == "" {
			return deny(badRequest("join method %s needs id_token", req.JoinMethod))
		}
		if req.Challenge != "" || req.Signature != "" {
			return deny(badRequest("challenge and signature are for join method bound_keypair only"))
		}
	}
	keys, ttl, err := parseKeys(req.Keys, req.TTLSeconds, req.HostKeys)
	if err != nil {
		return deny(err)
	}

	now, err := a.now(ctx)
	if err != nil {
		return deny(err)
	}
	tok, ok := a.Resources().Token(req.TokenName)
	switch {
	case !ok:
		return denied(&join.DeniedError{Check: join.CheckTokenUnknown})
	case tok.JoinMethod != req.JoinMethod:
		return denied(&join.DeniedError{Check: join.CheckMethodMismatch, Detail: "the token's join method is " + string(tok.JoinMethod)})
	case tok.Expired(now):
		return denied(&join.DeniedError{Check: join.CheckTokenExpired, Detail: "expired at " + tok.Expires.Format(time.RFC3339)})
	}
	attrs = append(attrs, slog.String("bot", tok.BotName))
	// A locked token refuses every instance that joins with it, new or
	// kept, before its attestation is spent. (Such instances renew only by
	// joining again: see Renew.)
	if err := a.tokenLocked(ctx, tok.Name); err != nil {
		return deny(err)
	}

	// The attestation.
	att, err := a.verifyAttestation(ctx, tok, req)
	var d *join.DeniedError
	switch {
	case errors.As(err, &d):
		return denied(d)
	case errors.Is(err, join.ErrUnavailable):
		a.unavailable.WarnAt(a.localNow(), a.log(), "ID token issuer unavailable", "token_name", tok.Name, "err", err)
		return deny(fault.Unavailable(api.CodeInternal,
			"the keys of the ID token's issuer could not be fetched; try again later"), slog.String("detail", err.Error()))
	case err != nil:
		return api.Credentials{}, err
	}
	attrs = append(attrs, att.attrs...)

	// What the bot may have.
	var presented string
	if client != nil {
		presented = client.Instance
	}
	grant, logins, kube, err := a.entitlements(ctx, tok.BotName, presented, req.SSHLogins, keys.hosts, req.Kubernetes)
	if err != nil {
		return deny(err)
	}

	// Whether the caller's instance is kept is decided before the replay
	// check records the token, so that an identity refused here (another
	// bot's) leaves the token usable.
	keep, err := a.keepInstance(ctx, tok, client)
	if err != nil {
		return deny(err)
	}

	// The time of the join is taken again: the attestation may have
	// taken a while to check.
	if now, err = a.now(ctx); err != nil {
		return deny(err)
	}
	// The instance the token admits is named before the replay check, so
	// that the check can tell a re-join by the same instance (whose platform
	// has not yet rotated the token, as kubelet does only at 80% of a
	// projected token's life) from a replay by anyone else. It is the
	// instance that joins: the caller's only if it is kept, since an
	// identity that gets a new instance each time must not own the token.
	newID, err := newInstanceID()
	if err != nil {
		return api.Credentials{}, err
	}
	owner := newID
	if keep {
		owner = client.Instance
	}
	// One transaction records the ID token, makes the instance or moves
	// the kept one on, and records the host: all of it or none, but for a
	// stale generation, which keeps the token spent and the instance
	// locked.
	w := store.JoinWrite{Now: now}
	if att.replayKey != "" {
		w.Replay = store.Replay{Key: att.replayKey, Owner: owner, Expires: att.replayUntil}
	}
	in := store.Instance{ID: newID, Bot: tok.BotName, Generation: 1, Created: now, JoinMethod: tok.JoinMethod, TokenName: tok.Name, IssuedKey: keys.identityKey()}
	if keep {
		in = store.Instance{ID: client.Instance, Bot: client.Bot}
		w.Keep = &store.RenewWrite{ID: client.Instance, Presented: client.Generation, Key: keys.identityKey(), OnMismatch: mismatchLock(*client, now)}
	} else {
		w.Instance = in
	}
	w.Node = a.node(ctx, in, grant, keys.hosts, remote, now)
	in, err = a.Store.Join(ctx, w)
	if lerr := lockedMeanwhile(err, tok.BotName, tok.Name); lerr != nil {
		return deny(lerr)
	}
	switch {
	case errors.Is(err, store.ErrReplay):
		return denied(&join.DeniedError{Check: join.CheckReplay})
	case keep && err != nil:
		return deny(a.advanceRefusal(ctx, *client, in, err, now))
	case err != nil:
		return api.Credentials{}, fmt.Errorf("authority: join: %w", err)
	}
	attrs = append(attrs, slog.String("instance", in.ID), slog.Uint64("generation", in.Generation), slog.Bool("rejoin", keep))
	return a.sign(ctx, decision{audit.EventJoin, attrs}, in, grant, logins, keys, kube, ttl, identityTTL(req.IdentityTTLSeconds), now)
}

// attestation is what a verified attestation adds to a join.
type attestation struct {
	attrs []slog.Attr // for the audit record
	// replayKey, if not empty, names the attestation in the store's record
	// of used ones until replayUntil.
	replayKey   string
	replayUntil time.Time
}

// verifyAttestation verifies the attestation of req against tok's join
// block, by the kind of the block: an ID token, or a signature over a
// challenge (consumed here, so that it is used once whatever follows). A
// refusal is a *join.DeniedError; an error wrapping join.ErrUnavailable
// means an ID token's issuer could not be asked for its keys.
func (a *Authority) verifyAttestation(ctx context.Context, tok resource.Token, req api.JoinRequest) (attestation, error) {
	switch spec := tok.Join.(type) {
	case resource.ChallengeJoin:
		now, err := a.now(ctx)
		if err != nil {
			return attestation{}, err
		}
		name, err := a.Store.ConsumeChallenge(ctx, req.Challenge, now)
		switch {
		case errors.Is(err, store.ErrChallengeUnknown):
			return attestation{}, &join.DeniedError{Check: join.CheckChallenge, Detail: err.Error()}
		case err != nil:
			return attestation{}, fmt.Errorf("authority: consume challenge: %w", err)
		case name != tok.Name:
			return attestation{}, &join.DeniedError{Check: join.CheckChallenge, Detail: fmt.Sprintf("the challenge was issued for token %q", name)}
		}
		if err := join.VerifyKeypair(spec.SigningKey(), req.Challenge, req.Signature); err != nil {
			return attestation{}, err
		}
		return attestation{}, nil
	case resource.IDTokenJoin:
		// The token is judged at the clock that keeps and prunes its
		// replay record: on a replica whose clock is behind the store's,
		// one expired (its record perhaps pruned) would otherwise pass.
		now, err := a.now(ctx)
		if err != nil {
			return attestation{}, err
		}
		att, err := a.verifier().VerifyIDTokenAt(ctx, tok, a.audience(tok), req.IDToken, now)
		if err != nil {
			return attestation{}, err
		}
		return attestation{
			attrs:       []slog.Attr{slog.String("subject", att.Subject), slog.Int("rule", att.Rule)},
			replayKey:   att.ReplayKey,
			replayUntil: att.Expiry.Add(join.Leeway),
		}, nil
	}
	return attestation{}, fmt.Errorf("authority: token %q: join method %s has no attestation", tok.Name, tok.JoinMethod)
}

// keepInstance reports whether an admitted attestation re-joins as the
// caller's instance. It reads and records nothing, so that its refusals
// come before the ID token is recorded as used.
//
// A caller that presented its identity over mutual TLS keeps its instance
// if the instance joined with the same token resource. An identity of
// another bot is refused; one of an instance unknown to the store (such as
// after a store was reset), or of an instance that joined otherwise, gets
// a new instance as a join without an identity does. Its refusals are
// *fault.Error; any other error is the store's.
func (a *Authority) keepInstance(ctx context.Context, tok resource.Token, client *ca.Identity) (bool, error) {
	if client == nil {
		return false, nil
	}
	if client.Bot != tok.BotName {
		return false, joinDenied(join.CheckWrongBot)
	}
	in, err := a.Store.Instance(ctx, client.Instance)
	switch {
	case errors.Is(err, store.ErrInstanceUnknown):
		return false, nil
	case err != nil:
		return false, err
	case in.Bot != client.Bot:
		return false, fault.Unauthenticated(api.CodeUnauthenticated, "instance %s does not belong to bot %s", client.Instance, client.Bot)
	}
	return in.Method() == tok.JoinMethod && in.TokenName == tok.Name, nil
}

// Challenge makes a challenge for a bound key pair join with the named
// token resource: base64 of 32 random bytes, usable once within
// ChallengeTTL by any issuer sharing the store.
//
// Anyone may ask, and token names are not secret, so challenges are
// limited (see challengeLimits). client is the bot identity the caller
// presented over mutual TLS, or nil: a host renewing its identity, which
// joined with this token, presents it and is limited apart from anonymous
// callers, so that no amount of anonymous traffic denies it a challenge.
func (a *Authority) Challenge(ctx context.Context, req api.ChallengeRequest, client *ca.Identity, remote string) (api.ChallengeResponse, error) {
	attrs := []slog.Attr{slog.String("remote", remote), slog.String("token_name", req.TokenName)}
	if client != nil {
		attrs = append(attrs, slog.String("client_instance", client.Instance), slog.Uint64("client_generation", client.Generation))
	}
	deny := func(err error, more ...slog.Attr) (api.ChallengeResponse, error) {
		return api.ChallengeResponse{}, a.refuse(ctx, audit.EventJoinChallenge, err, append(attrs, more...)...)
	}
	if req.TokenName == "" {
		return deny(badRequest("token_name is empty: name the token resource to join with"))
	}
	now, err := a.now(ctx)
	if err != nil {
		return deny(err)
	}
	tok, ok := a.Resources().Token(req.TokenName)
	switch {
	case !ok:
		return deny(joinDenied(join.CheckTokenUnknown))
	case !challengeJoin(tok):
		return deny(joinDenied(join.CheckMethodMismatch), slog.String("detail", "the token's join method is "+string(tok.JoinMethod)))
	case tok.Expired(now):
		return deny(joinDenied(join.CheckTokenExpired))
	}
	instance, err := a.challengeInstance(ctx, tok, client)
	if err != nil {
		return api.ChallengeResponse{}, err
	}
	if instance != "" {
		attrs = append(attrs, slog.String("instance", instance))
	}
	if err := a.allowChallenge(instance, remote, now); err != nil {
		return deny(err)
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return api.ChallengeResponse{}, err
	}
	challenge := base64.StdEncoding.EncodeToString(b[:])
	expires := now.Add(ChallengeTTL)
	if err := a.Store.PutChallenge(ctx, challenge, tok.Name, expires, now); err != nil {
		return api.ChallengeResponse{}, fmt.Errorf("authority: put challenge: %w", err)
	}
	if err := a.Audit.Record(ctx, audit.EventJoinChallenge, audit.Allowed, append(attrs, slog.String("bot", tok.BotName), slog.Time("expires", expires))...); err != nil {
		return api.ChallengeResponse{}, auditFailed(err)
	}
	return api.ChallengeResponse{Challenge: challenge, Expires: expires}, nil
}

// challengeInstance returns the instance whose identity client is, if it
// is an instance of tok's bot that joined with tok, and "" otherwise: an
// identity that proves nothing about this token is served as an anonymous
// caller. The generation is not checked: a challenge admits no one by
// itself, and the join that uses it checks the generation.
func (a *Authority) challengeInstance(ctx context.Context, tok resource.Token, client *ca.Identity) (string, error) {
	if client == nil || client.Bot != tok.BotName {
		return "", nil
	}
	in, err := a.Store.Instance(ctx, client.Instance)
	switch {
	case errors.Is(err, store.ErrInstanceUnknown):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("authority: challenge: %w", err)
	case in.Bot != client.Bot || in.Method() != tok.JoinMethod || in.TokenName != tok.Name:
		return "", nil
	}
	return in.ID, nil
}

// challengeJoin reports whether tok's machines attest with a signature over
// a challenge.
func challengeJoin(tok resource.Token) bool {
	_, ok := tok.Join.(resource.ChallengeJoin)
	return ok
}
