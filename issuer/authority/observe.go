package authority

import (
	"context"
	"errors"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/fault"
	"github.com/mwi-project/mwi/issuer/ca"
	"github.com/mwi-project/mwi/issuer/store"
)

// Decisions an Observer is told of: the values of Decision.Event.
const (
	DecisionJoin  = "join"
	DecisionRenew = "renew"
)

// Outcomes of a decision: the values of Decision.Outcome.
const (
	// OutcomeAllowed is a join or renewal that was answered with
	// credentials.
	OutcomeAllowed = "allowed"
	// OutcomeDenied is a refusal of the request: its token, identity,
	// roles or locks do not allow it, or it is malformed.
	OutcomeDenied = "denied"
	// OutcomeError is a request the issuer failed to decide: its store
	// or audit log could not be used, or an internal error.
	OutcomeError = "error"
)

// Decision is one join or renewal, as an Observer sees it.
type Decision struct {
	// Event is DecisionJoin or DecisionRenew.
	Event string
	// Method is the join method of a join; empty for a renewal, which
	// only instances that joined with a one-time token make.
	Method api.JoinMethod
	// Outcome is OutcomeAllowed, OutcomeDenied or OutcomeError.
	Outcome string
	// Reason is the refusal's stable code (api.Code*) when Outcome is not
	// OutcomeAllowed: a small, fixed set of values, unlike the audit
	// log's reason, which names bots and instances.
	Reason string
	// Duration is how long the decision took, signing included.
	Duration time.Duration
}

// An Observer is told of every join and renewal the Authority decides,
// for metrics. It is called on the request's path, once the decision is
// made, so it must be fast and safe for concurrent use. Package
// issuer/metrics implements it; the authority itself knows nothing of
// how decisions are counted.
type Observer interface {
	Decision(Decision)
}

// Join admits a bot instance and signs its credentials.
//
// With join method "token", the request's one-time token admits a new
// instance. With the other methods, the token resource named by the
// request decides, from an ID token or a bound key pair's signature; see
// joinAttested. client is the bot identity that the caller presented over
// mutual TLS, or nil. The decision is told to a.Observer.
func (a *Authority) Join(ctx context.Context, req api.JoinRequest, client *ca.Identity, remote string) (api.Credentials, error) {
	start := time.Now()
	creds, err := a.join(ctx, req, client, remote)
	method := req.JoinMethod
	if !method.Known() {
		// The caller chose it: an Observer must not see unbounded values.
		method = "unknown"
	}
	a.observe(DecisionJoin, method, start, err)
	return creds, err
}

// Renew signs fresh credentials for a bot instance that proved its current
// identity over mutual TLS. The identity's generation must be the one the
// store holds: an older one means a copy of the identity is in use, and the
// instance is locked. The decision is told to a.Observer.
func (a *Authority) Renew(ctx context.Context, id ca.Identity, req api.RenewRequest, remote string) (api.Credentials, error) {
	start := time.Now()
	creds, err := a.renew(ctx, id, req, remote)
	a.observe(DecisionRenew, "", start, err)
	return creds, err
}

// observe tells a.Observer, if set, of the decision of event made since
// start that ended with err.
func (a *Authority) observe(event string, method api.JoinMethod, start time.Time, err error) {
	if a.Observer == nil {
		return
	}
	outcome, reason := classify(err)
	a.Observer.Decision(Decision{Event: event, Method: method, Outcome: outcome, Reason: reason, Duration: time.Since(start)})
}

// classify returns the outcome and the reason code of a decision that
// ended with err.
func classify(err error) (outcome, reason string) {
	if err == nil {
		return OutcomeAllowed, ""
	}
	if e, ok := fault.As(err); ok {
		switch e.Kind {
		case fault.KindInternal, fault.KindUnavailable:
			return OutcomeError, e.Code
		}
		return OutcomeDenied, e.Code
	}
	if errors.Is(err, store.ErrUnavailable) {
		return OutcomeError, api.CodeStoreUnavailable
	}
	return OutcomeError, api.CodeInternal
}
