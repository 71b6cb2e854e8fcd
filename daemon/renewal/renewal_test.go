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

// TestRenewNowWaitsForNext checks that RenewNow during an attempt waits for
// a new one: a reload's configuration must reach the issuer.
func TestRenewNowWaitsForNext(t *testing.T) {
	clock := newFakeClock()
	started := make(chan int, 10)
	release := make(chan struct{})
	attempts := make(chan Attempt, 10)
	var calls int
	l := NewLoop(Loop{
		Clock: clock,
		Renew: func(ctx context.Context) (Result, error) {
			calls++
			started <- calls
			if calls == 2 {
				<-release
			}
			now := clock.Now()
			return Result{Received: now, Expires: now.Add(time.Hour)}, nil
		},
		Report: func(a Attempt) { attempts <- a },
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go l.Run(ctx)
	<-started // the initial join
	// A request while the join is still under way would share it; wait
	// until it has ended, so that the request below starts attempt 2.
	<-attempts
	shared := make(chan error, 1)
	go func() {
		_, _, err := l.Request(ctx) // starts attempt 2
		shared <- err
	}()
	<-started
	done := make(chan error, 1)
	go func() { done <- l.RenewNow(ctx) }()
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := <-shared; err != nil {
		t.Fatal(err)
	}
	// Had RenewNow arrived after attempt 2 ended, it would still have made
	// attempt 3; arriving during it, it must not share it.
	if calls != 3 {
		t.Errorf("Renew called %d times, want 3: RenewNow must not share an attempt under way or a recent one", calls)
	}
}

// TestRequestCoalesces checks that concurrent requests share one attempt,
// and that requests closer together than RequestInterval are answered by
// the last attempt, failed or not, without calling Renew again.
func TestRequestCoalesces(t *testing.T) {
	clock := newFakeClock()
	errRefused := errors.New("refused")
	var (
		mu    sync.Mutex
		calls int
		fail  bool
	)
	started := make(chan struct{}, 200)
	release := make(chan struct{}, 200)
	l := NewLoop(Loop{
		Clock:  clock,
		Jitter: func() float64 { return 0 },
		// No retry of a failure comes due in this test: every attempt
		// after the join is asked for.
		MinBackoff:      time.Hour,
		MaxBackoff:      time.Hour,
		RequestInterval: func() time.Duration { return 10 * time.Second },
		Renew: func(ctx context.Context) (Result, error) {
			mu.Lock()
			calls++
			n, f := calls, fail
			mu.Unlock()
			if n > 1 {
				started <- struct{}{}
				<-release
			}
			if f {
				return Result{}, errRefused
			}
			now := clock.Now()
			return Result{Received: now, Expires: now.Add(time.Hour)}, nil
		},
	})
	renewCalls := func() int {
		mu.Lock()
		defer mu.Unlock()
		return calls
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go l.Run(ctx)
	<-clock.added // the join is done; the loop waits for its schedule

	// Right after the join, a request is answered by it.
	if a, how, err := l.Request(ctx); err != nil || a.Err != nil || how != Recent {
		t.Fatalf("Request just after the join = %+v, %v, %v; want the join's success, Recent", a, how, err)
	}

	// 100 concurrent requests, once the join is older than the interval:
	// the clock does not move while they run, so whenever each arrives it
	// shares the one attempt (asked for, under way, or just completed).
	clock.advanceTo(t0.Add(11 * time.Second))
	const n = 100
	var wg sync.WaitGroup
	answers := make(chan Shared, n)
	for range n {
		wg.Go(func() {
			a, how, err := l.Request(ctx)
			if err != nil || a.Err != nil {
				t.Errorf("Request = %+v, %v", a, err)
			}
			answers <- how
		})
	}
	<-started
	release <- struct{}{}
	wg.Wait()
	close(answers)
	if got := renewCalls(); got != 2 {
		t.Errorf("%d concurrent requests made %d renewals after the join; want 1", n, got-1)
	}
	count := map[Shared]int{}
	for how := range answers {
		count[how]++
	}
	t.Logf("answers: %d not shared (asked before the attempt began), %d in flight, %d recent", count[NotShared], count[InFlight], count[Recent])

	// Sequential requests, one a second for a minute, some failing: one
	// renewal per interval at most. The failure is shared as well.
	mu.Lock()
	fail = true
	mu.Unlock()
	before := renewCalls()
	for i := range 60 {
		clock.advanceTo(t0.Add(30*time.Second + time.Duration(i)*time.Second))
		release <- struct{}{} // lets an attempt through if one starts
		a, _, err := l.Request(ctx)
		if err != nil || a.Err != errRefused {
			t.Fatalf("request %d = %+v, %v; want the refusal", i, a, err)
		}
	}
	if got := renewCalls() - before; got != 6 {
		t.Errorf("60 requests over 60s made %d renewals; want 6, one per 10s", got)
	}
}

// TestRequestAfterStop checks that a request to a loop that stopped fails
// instead of waiting.
func TestRequestAfterStop(t *testing.T) {
	l := NewLoop(Loop{Clock: newFakeClock(), Renew: func(ctx context.Context) (Result, error) {
		return Result{}, nil
	}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- l.Run(ctx) }()
	cancel()
	<-done
	if _, _, err := l.Request(context.Background()); err == nil {
		t.Error("Request after Run returned succeeded")
	}
	if err := l.RenewNow(context.Background()); err == nil {
		t.Error("RenewNow after Run returned succeeded")
	}
}

// TestRequestAfterLoopFailure checks that a failure of the loop's own
// attempt does not answer a request, which may come because its cause was
// just fixed (an operator lifted a lock): the request reaches the issuer,
// and its own failure answers the requests that follow within the interval.
func TestRequestAfterLoopFailure(t *testing.T) {
	clock := newFakeClock()
	errLocked := errors.New("locked")
	var (
		mu    sync.Mutex
		calls int
		fixed bool
	)
	l := NewLoop(Loop{
		Clock:           clock,
		Jitter:          func() float64 { return 0 },
		MinBackoff:      time.Hour, // no retry of the loop's own comes due
		MaxBackoff:      time.Hour,
		RequestInterval: func() time.Duration { return 10 * time.Second },
		Renew: func(ctx context.Context) (Result, error) {
			mu.Lock()
			defer mu.Unlock()
			calls++
			if !fixed {
				return Result{}, errLocked
			}
			now := clock.Now()
			return Result{Received: now, Expires: now.Add(time.Hour)}, nil
		},
	})
	renewCalls := func() int {
		mu.Lock()
		defer mu.Unlock()
		return calls
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go l.Run(ctx)
	<-clock.added // the loop's first attempt failed; it waits for its backoff

	// Still failing: the request is tried, and its failure is shared.
	if a, how, err := l.Request(ctx); err != nil || a.Err != errLocked || how != NotShared {
		t.Fatalf("first request = %+v, %v, %v; want a new attempt that fails", a, how, err)
	}
	if a, how, err := l.Request(ctx); err != nil || a.Err != errLocked || how != Recent {
		t.Fatalf("second request = %+v, %v, %v; want the first one's failure, shared", a, how, err)
	}
	if got := renewCalls(); got != 2 {
		t.Fatalf("%d renewals, want 2 (the loop's, the first request's)", got)
	}

	// Fixed; within the interval the requested failure still answers.
	mu.Lock()
	fixed = true
	mu.Unlock()
	clock.advanceTo(t0.Add(11 * time.Second))
	if a, how, err := l.Request(ctx); err != nil || a.Err != nil || how != NotShared {
		t.Fatalf("request after the fix = %+v, %v, %v; want a new attempt that succeeds", a, how, err)
	}
}

// TestClassify checks that a permanent refusal waits PermanentBackoff, a
// transient failure the short backoff, and that a request after a
// permanent refusal still tries at once.
func TestClassify(t *testing.T) {
	clock := newFakeClock()
	errLocked := errors.New("bot locked")
	errDown := errors.New("issuer down")
	script := []error{nil, errLocked, errDown, errLocked, nil}
	var calls int
	attempts := make(chan Attempt, 10)
	l := NewLoop(Loop{
		Clock:  clock,
		Jitter: func() float64 { return 0.5 },
		Classify: func(err error) Class {
			if err == errLocked {
				return Permanent
			}
			return Transient
		},
		Renew: func(ctx context.Context) (Result, error) {
			err := script[calls]
			calls++
			now := clock.Now()
			return Result{Received: now, Expires: now.Add(time.Hour)}, err
		},
		Report: func(a Attempt) { attempts <- a },
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go l.Run(ctx)
	a := <-attempts // the join
	<-clock.added
	clock.advanceTo(a.Next)
	a = <-attempts
	if a.Err != errLocked || !a.Permanent || a.Next.Sub(a.At) != DefaultPermanentBackoff {
		t.Fatalf("attempt = %+v; want a permanent refusal retried after %v", a, DefaultPermanentBackoff)
	}
	<-clock.added
	clock.advanceTo(a.Next)
	a = <-attempts
	if a.Err != errDown || a.Permanent || a.Next.Sub(a.At) != 2*time.Second {
		t.Fatalf("attempt = %+v; want a transient failure retried after 2s", a)
	}
	<-clock.added
	clock.advanceTo(a.Next)
	a = <-attempts
	if !a.Permanent || a.Next.Sub(a.At) != DefaultPermanentBackoff {
		t.Fatalf("attempt = %+v; want a permanent refusal", a)
	}
	<-clock.added
	// An operator lifted the lock and asks: the loop tries at once, long
	// before the permanent backoff.
	if err := l.RenewNow(ctx); err != nil {
		t.Fatalf("RenewNow = %v", err)
	}
	if a = <-attempts; a.Err != nil || a.At != clock.Now() {
		t.Fatalf("attempt = %+v; want a success at once", a)
	}
}
