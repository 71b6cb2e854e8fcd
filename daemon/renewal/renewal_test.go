package renewal

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestNext(t *testing.T) {
	r := Result{Received: t0, Expires: t0.Add(30 * time.Second)}
	tests := []struct {
		name     string
		interval time.Duration
		jitter   float64
		want     time.Duration
	}{
		{"two thirds", 0, 0, 20 * time.Second},
		{"most jitter takes a tenth off", 0, 0.999, 17*time.Second + 3*time.Millisecond},
		{"interval is sooner", 5 * time.Second, 0, 5 * time.Second},
		{"interval is later", time.Hour, 0, 20 * time.Second},
	}
	for _, tt := range tests {
		got := Next(r, tt.interval, tt.jitter).Sub(t0)
		if got != tt.want {
			t.Errorf("%s: Next = +%v, want +%v", tt.name, got, tt.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		failures int
		jitter   float64
		want     time.Duration
	}{
		{1, 0.5, time.Second},
		{2, 0.5, 2 * time.Second},
		{4, 0.5, 8 * time.Second},
		{20, 0.5, time.Minute}, // capped
		{20, 0, 48 * time.Second},
		{20, 1, 72 * time.Second},
	}
	for _, tt := range tests {
		if got := Backoff(tt.failures, time.Second, time.Minute, tt.jitter); got != tt.want {
			t.Errorf("Backoff(%d, jitter %v) = %v, want %v", tt.failures, tt.jitter, got, tt.want)
		}
	}
}

// fakeClock fires After channels only when the test advances it.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []waiter
	added   chan struct{}
}

type waiter struct {
	at time.Time
	c  chan time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: t0, added: make(chan struct{}, 100)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := waiter{at: c.now.Add(d), c: make(chan time.Time, 1)}
	if d <= 0 {
		w.c <- c.now
		return w.c
	}
	c.waiters = append(c.waiters, w)
	// Tell the test a waiter is registered, so it advances the clock only
	// once the loop is really waiting.
	c.added <- struct{}{}
	return w.c
}

// advanceTo moves the clock to t and fires every waiter due by then.
func (c *fakeClock) advanceTo(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(t) {
			w.c <- t
		} else {
			kept = append(kept, w)
		}
	}
	c.waiters = kept
}

func TestLoop(t *testing.T) {
	clock := newFakeClock()
	errIssuerDown := errors.New("issuer down")
	// Each renewal hands out 30-second credentials or fails, in this order.
	script := []error{nil, errIssuerDown, errIssuerDown, nil}
	var calls int
	attempts := make(chan Attempt, 10)
	l := &Loop{
		Clock:  clock,
		Jitter: func() float64 { return 0.5 },
		Renew: func(ctx context.Context) (Result, error) {
			err := script[calls]
			calls++
			now := clock.Now()
			return Result{Received: now, Expires: now.Add(30 * time.Second)}, err
		},
		Report: func(a Attempt) { attempts <- a },
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- l.Run(ctx) }()

	// The first renewal (the join) happens at once.
	a := <-attempts
	if a.Err != nil || a.Next != t0.Add(18500*time.Millisecond) {
		t.Fatalf("first attempt = %+v; want success, next at +18.5s (2/3 of 30s less half of the jitter)", a)
	}
	<-clock.added // the loop is waiting for a.Next
	clock.advanceTo(a.Next)
	a = <-attempts
	if a.Err != errIssuerDown || a.Failures != 1 || a.Next.Sub(a.At) != time.Second {
		t.Fatalf("second attempt = %+v; want a failure retried after 1s", a)
	}
	<-clock.added
	clock.advanceTo(a.Next)
	a = <-attempts
	if a.Failures != 2 || a.Next.Sub(a.At) != 2*time.Second {
		t.Fatalf("third attempt = %+v; want the second failure retried after 2s", a)
	}
	<-clock.added
	clock.advanceTo(a.Next)
	a = <-attempts
	if a.Err != nil || a.Failures != 0 {
		t.Fatalf("fourth attempt = %+v; want success", a)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestBackoffStaysBeforeExpiry(t *testing.T) {
	clock := newFakeClock()
	var calls int
	attempts := make(chan Attempt, 10)
	l := &Loop{
		Clock:      clock,
		Jitter:     func() float64 { return 0.5 },
		MaxBackoff: time.Hour,
		Renew: func(ctx context.Context) (Result, error) {
			calls++
			if calls == 1 {
				return Result{Received: t0, Expires: t0.Add(30 * time.Second)}, nil
			}
			return Result{}, errors.New("down")
		},
		Report: func(a Attempt) { attempts <- a },
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go l.Run(ctx)
	a := <-attempts
	for i := 0; i < 8; i++ {
		<-clock.added
		clock.advanceTo(a.Next)
		a = <-attempts
		if expires := t0.Add(30 * time.Second); a.At.Before(expires) && !a.Next.Before(expires) && a.Next.Sub(a.At) > time.Second {
			t.Fatalf("attempt %d at +%v retries at +%v, after the credentials expire", i, a.At.Sub(t0), a.Next.Sub(t0))
		}
	}
}

func TestRenewNow(t *testing.T) {
	clock := newFakeClock()
	results := []error{nil, errors.New("refused"), nil}
	var calls int
	attempts := make(chan Attempt, 10)
	l := NewLoop(Loop{
		Clock: clock,
		Renew: func(ctx context.Context) (Result, error) {
			err := results[calls]
			calls++
			now := clock.Now()
			return Result{Received: now, Expires: now.Add(time.Hour)}, err
		},
		Report: func(a Attempt) { attempts <- a },
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go l.Run(ctx)
	<-attempts // the initial join
	if err := l.RenewNow(ctx); err == nil || err.Error() != "refused" {
		t.Fatalf("RenewNow = %v, want the refusal", err)
	}
	if err := l.RenewNow(ctx); err != nil {
		t.Fatalf("RenewNow = %v", err)
	}
	if calls != 3 {
		t.Fatalf("Renew called %d times, want 3", calls)
	}
}
