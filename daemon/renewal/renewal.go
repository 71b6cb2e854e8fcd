// Package renewal runs mwid's one renewal loop: it obtains credentials,
// schedules the next renewal at about two thirds of their lifetime with
// jitter, and backs off with a cap when the issuer cannot be reached.
package renewal

import (
	"context"
	"math/rand/v2"
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
	Next     time.Time
}

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
	// MinBackoff and MaxBackoff bound the wait after a failure.
	MinBackoff, MaxBackoff time.Duration
	// Clock defaults to the real clock.
	Clock Clock
	// Jitter returns a number in [0, 1); it defaults to math/rand.
	Jitter func() float64

	trigger chan chan error
}

// Default backoff bounds.
const (
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = time.Minute
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
	if l.trigger == nil {
		l.trigger = make(chan chan error)
	}
}

// Run renews at once, then whenever Next says, until ctx is done.
func (l *Loop) Run(ctx context.Context) error {
	l.init()
	var (
		failures int
		last     Result // the last success; zero before the first
		wait     <-chan time.Time
		reply    chan error
	)
	wait = l.Clock.After(0)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-wait:
		case reply = <-l.trigger:
		}
		res, err := l.Renew(ctx)
		if ctx.Err() != nil {
			if reply != nil {
				reply <- ctx.Err()
			}
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
		if reply != nil {
			reply <- err
			reply = nil
		}
		wait = l.Clock.After(max(0, a.Next.Sub(now)))
	}
}

// RenewNow makes the running loop renew at once and returns the result. It
// waits for the loop if a renewal is already under way.
func (l *Loop) RenewNow(ctx context.Context) error {
	reply := make(chan error, 1)
	select {
	case l.trigger <- reply:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
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
