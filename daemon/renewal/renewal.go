// Package renewal runs mwid's one renewal loop: it obtains credentials,
// schedules the next renewal at about two thirds of their lifetime with
// jitter, and backs off with a cap when the issuer cannot be reached.
// A refusal that retrying cannot overcome (a locked bot, a used token) is
// retried far less often, until someone changes something and asks for a
// renewal.
//
// The loop is the only path to the issuer. Requests for a renewal from
// outside the schedule (a reload, the local API) are answered by the loop's
// attempts, and requests that arrive together share one attempt, so that
// however many are made, the issuer sees at most one renewal at a time.
package renewal

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"
)

// Clock is the loop's source of time; tests replace it.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Result is what one successful renewal obtained.
type Result struct {
	Received time.Time
	Expires  time.Time
}

// Attempt describes one renewal attempt, for status and logs.
type Attempt struct {
	At       time.Time
	Err      error
	Failures int // consecutive failures, including this one
	// Permanent is set when Classify found Err to be a refusal that
	// retrying cannot overcome; Next is then PermanentBackoff away.
	Permanent bool
	Next      time.Time
}

// Class says how a failed attempt is retried.
type Class int

const (
	// Transient failures (an outage, a timeout) are retried with a
	// backoff from MinBackoff to MaxBackoff.
	Transient Class = iota
	// Permanent failures cannot succeed until someone changes something:
	// an operator lifts a lock or issues a token. They are retried after
	// PermanentBackoff; RenewNow and Request still try at once.
	Permanent
)

// Loop renews credentials until its context ends.
type Loop struct {
	// Renew obtains fresh credentials: a join the first time, a renewal
	// after.
	Renew func(ctx context.Context) (Result, error)
	// Report, if set, is called after every attempt.
	Report func(Attempt)
	// Interval, if set and positive, renews at least this often. It is a
	// function so that a configuration reload changes it for the next
	// renewal.
	Interval func() time.Duration
	// MinBackoff and MaxBackoff bound the wait after a transient failure.
	MinBackoff, MaxBackoff time.Duration
	// Classify, if set, says how a failed attempt is retried. Without it
	// every failure is Transient.
	Classify func(error) Class
	// PermanentBackoff is the wait after a Permanent failure; it defaults
	// to DefaultPermanentBackoff.
	PermanentBackoff time.Duration
	// Clock defaults to the real clock.
	Clock Clock
	// Jitter returns a number in [0, 1); it defaults to math/rand.
	Jitter func() float64
	// RequestInterval, if set and positive, is how long the result of an
	// attempt answers Request instead of a new attempt: requests closer
	// together than this make one call to the issuer. It is a function so
	// that a configuration reload changes it.
	RequestInterval func() time.Duration

	st *state
}

// state is what the loop shares with the callers of RenewNow and Request.
type state struct {
	mu      sync.Mutex
	pending *attempt // asked for, and not yet begun
	running *attempt // under way
	last    *attempt // the last one completed
	stopped bool     // Run returned; nothing will begin
	// wake has room for one wake-up: it tells Run that pending is set.
	wake chan struct{}
}

// attempt is one renewal attempt that callers wait for.
type attempt struct {
	done chan struct{} // closed once a is set
	a    Attempt
	// requested is set when Request asked for the attempt, rather than
	// the loop's timer or RenewNow.
	requested bool
}

func newAttempt() *attempt { return &attempt{done: make(chan struct{})} }

// Default backoff bounds.
const (
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = time.Minute
	// DefaultPermanentBackoff is long: nothing changes by itself after a
	// permanent refusal, and each retry is one more refusal in the
	// issuer's audit log.
	DefaultPermanentBackoff = 5 * time.Minute
)

func (l *Loop) init() {
	if l.Clock == nil {
		l.Clock = realClock{}
	}
	if l.Jitter == nil {
		l.Jitter = rand.Float64
	}
	if l.MinBackoff <= 0 {
		l.MinBackoff = DefaultMinBackoff
	}
	if l.MaxBackoff < l.MinBackoff {
		l.MaxBackoff = max(DefaultMaxBackoff, l.MinBackoff)
	}
	if l.PermanentBackoff <= 0 {
		l.PermanentBackoff = DefaultPermanentBackoff
	}
	if l.st == nil {
		l.st = &state{wake: make(chan struct{}, 1)}
	}
}

// Run renews at once, then whenever Next says or a renewal is asked for,
// until ctx is done.
func (l *Loop) Run(ctx context.Context) error {
	l.init()
	st := l.st
	st.mu.Lock()
	st.stopped = false
	st.mu.Unlock()
	defer l.stop()
	var (
		failures int
		last     Result // the last success; zero before the first
		wait     <-chan time.Time
	)
	wait = l.Clock.After(0)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-wait:
		case <-st.wake:
		}
		cur := l.begin()
		res, err := l.Renew(ctx)
		if ctx.Err() != nil {
			l.end(cur, Attempt{At: l.Clock.Now(), Err: ctx.Err()}, false)
			return nil
		}
		now := l.Clock.Now()
		a := Attempt{At: now, Err: err}
		if err == nil {
			failures = 0
			last = res
			var interval time.Duration
			if l.Interval != nil {
				interval = l.Interval()
			}
			a.Next = Next(res, interval, l.Jitter())
		} else if l.Classify != nil && l.Classify(err) == Permanent {
			failures++
			a.Failures = failures
			a.Permanent = true
			// Spread like Backoff, and not brought before the held
			// credentials' expiry: retrying sooner cannot help.
			a.Next = now.Add(time.Duration(float64(l.PermanentBackoff) * (0.8 + 0.4*l.Jitter())))
		} else {
			failures++
			a.Failures = failures
			a.Next = now.Add(Backoff(failures, l.MinBackoff, l.MaxBackoff, l.Jitter()))
			// While the held credentials are valid, retry at least twice
			// more before they expire, so a short outage cannot outlast
			// a long backoff step.
			if left := last.Expires.Sub(now); left > 0 {
				a.Next = minTime(a.Next, now.Add(max(l.MinBackoff, left/3)))
			}
		}
		if l.Report != nil {
			l.Report(a)
		}
		// Callers are answered after Report, so that the status they
		// read next already shows this attempt.
		l.end(cur, a, true)
		wait = l.Clock.After(max(0, a.Next.Sub(now)))
	}
}

// begin marks the start of an attempt: the one asked for, if any, which
// the attempt about to be made answers, since it reads everything afresh.
func (l *Loop) begin() *attempt {
	st := l.st
	st.mu.Lock()
	defer st.mu.Unlock()
	cur := st.pending
	if cur == nil {
		cur = newAttempt()
	}
	st.pending = nil
	st.running = cur
	// A wake-up for the pending attempt is answered by this one.
	select {
	case <-st.wake:
	default:
	}
	return cur
}

// end answers the callers waiting for cur. An attempt cut short by the
// loop's end is not kept as the last one.
func (l *Loop) end(cur *attempt, a Attempt, keep bool) {
	st := l.st
	st.mu.Lock()
	defer st.mu.Unlock()
	cur.a = a
	close(cur.done)
	st.running = nil
	if keep {
		st.last = cur
	}
}

// errStopped answers the requests that the loop will not serve.
var errStopped = errors.New("renewal: the renewal loop is not running")

// stop answers a pending request when Run returns.
func (l *Loop) stop() {
	st := l.st
	st.mu.Lock()
	defer st.mu.Unlock()
	st.stopped = true
	if p := st.pending; p != nil {
		st.pending = nil
		p.a = Attempt{At: l.Clock.Now(), Err: errStopped}
		close(p.done)
	}
}

// RenewNow makes the running loop renew at once and returns the result. If
// a renewal is under way, it waits for the next one, which starts after
// it: the caller gets credentials obtained after it asked, for example
// with a configuration it has just changed. Callers that ask before that
// next renewal starts share it.
func (l *Loop) RenewNow(ctx context.Context) error {
	st := l.st
	st.mu.Lock()
	if st.stopped {
		st.mu.Unlock()
		return errStopped
	}
	p := l.ask()
	st.mu.Unlock()
	a, err := wait(ctx, p)
	if err != nil {
		return err
	}
	return a.Err
}

// Shared says how Request was answered.
type Shared int

const (
	// NotShared: an attempt that began after the request.
	NotShared Shared = iota
	// InFlight: the attempt under way when the request arrived.
	InFlight
	// Recent: an attempt completed less than RequestInterval before.
	Recent
)

// Request asks for a renewal on behalf of a client that may ask often:
// it shares the attempt under way if there is one, or one asked for and
// not yet begun, and answers with the last attempt if it completed less
// than RequestInterval ago (see recent), so that
// however often it is called, the issuer sees no more than one renewal per
// RequestInterval from it. It returns the attempt that answers (whose Err
// says whether that renewal failed) and how it was shared, or an error if
// ctx ends or the loop is not running.
func (l *Loop) Request(ctx context.Context) (Attempt, Shared, error) {
	st := l.st
	st.mu.Lock()
	if st.stopped {
		st.mu.Unlock()
		return Attempt{}, NotShared, errStopped
	}
	var (
		p   *attempt
		how = NotShared
	)
	switch {
	case st.running != nil:
		p, how = st.running, InFlight
	case st.pending != nil:
		// Asked for and not begun: it will read everything afresh.
		p = st.pending
		p.requested = true
	case l.recent(st.last):
		p, how = st.last, Recent
	default:
		p = l.ask()
		p.requested = true
	}
	st.mu.Unlock()
	a, err := wait(ctx, p)
	return a, how, err
}

// recent reports whether the completed attempt last answers a Request: it
// completed less than RequestInterval ago, and either succeeded or was
// itself asked for by a Request. A failure of the loop's own retry does
// not answer: the client may be asking because it has just fixed the
// cause (an operator lifted a lock, say), and its request reaches the
// issuer at once; its own failure then answers the requests that follow
// it within the interval. st.mu must be held.
func (l *Loop) recent(last *attempt) bool {
	if last == nil || l.RequestInterval == nil || l.Clock.Now().Sub(last.a.At) >= l.RequestInterval() {
		return false
	}
	return last.a.Err == nil || last.requested
}

// ask returns the pending attempt, asking Run for one if there is none.
// st.mu must be held.
func (l *Loop) ask() *attempt {
	st := l.st
	if st.pending == nil {
		st.pending = newAttempt()
		select {
		case st.wake <- struct{}{}:
		default:
		}
	}
	return st.pending
}

// wait waits for p to complete, or ctx to end.
func wait(ctx context.Context, p *attempt) (Attempt, error) {
	select {
	case <-p.done:
		return p.a, nil
	case <-ctx.Done():
		return Attempt{}, ctx.Err()
	}
}

// NewLoop returns a Loop ready for Run and RenewNow. Use it when RenewNow
// may be called before Run starts.
func NewLoop(l Loop) *Loop {
	l.init()
	return &l
}

// Next returns when to renew credentials obtained as r: at two thirds of
// their lifetime, less up to a tenth of it at random so that many daemons
// started together do not renew together, and no later than interval after
// they were received.
func Next(r Result, interval time.Duration, jitter float64) time.Time {
	life := r.Expires.Sub(r.Received)
	d := life*2/3 - time.Duration(jitter*float64(life/10))
	if interval > 0 && interval < d {
		d = interval
	}
	return r.Received.Add(max(d, 0))
}

// Backoff returns the wait after the given number of consecutive failures:
// doubling from lo, capped at hi, then spread by up to ±20% so that
// daemons that failed together do not retry together.
func Backoff(failures int, lo, hi time.Duration, jitter float64) time.Duration {
	d := lo
	for i := 1; i < failures && d < hi; i++ {
		d *= 2
	}
	if d > hi {
		d = hi
	}
	return time.Duration(float64(d) * (0.8 + 0.4*jitter))
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
