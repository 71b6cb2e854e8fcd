package authority

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/fault"
)

// Limits on bound key pair challenges. Asking for one costs nothing and
// each is stored until it expires; hosts that join with a bound key pair
// renew only by joining again with a fresh challenge, so a host denied
// challenges loses its credentials.
//
// A caller that presents the identity of an instance that joined with the
// token is limited on that instance alone, generously: it has proved it
// is the host. Anonymous callers (a first join, a host whose identity
// expired) are limited by source address, a token bucket each, and all
// together by the number of anonymous challenges made in the last
// ChallengeTTL, which bounds what they can make the store hold. None of
// the anonymous limits applies to a caller with an identity.
const (
	// An instance may have instanceChallengeBurst challenges at once, and
	// one more every instanceChallengeEvery: far more than a renewal
	// with retries needs.
	instanceChallengeBurst = 30
	instanceChallengeEvery = 2 * time.Second
	// A source address (for IPv6, its /64) may have
	// anonymousChallengeBurst challenges at once, and one more every
	// anonymousChallengeEvery.
	anonymousChallengeBurst = 10
	anonymousChallengeEvery = 6 * time.Second
	// defaultMaxAnonymousChallenges bounds the anonymous challenges one
	// issuer made in the last ChallengeTTL, used or not.
	defaultMaxAnonymousChallenges = 1000
)

// challengeLimits holds the state of the limits on challenges.
type challengeLimits struct {
	mu        sync.Mutex
	instances buckets
	sources   buckets
	// anonymous holds the expiry of each anonymous challenge made, oldest
	// first; max bounds its length (zero: defaultMaxAnonymousChallenges).
	anonymous []time.Time
	max       int
}

// allowChallenge counts a challenge for the caller and returns the refusal
// if it is over its limit: instance is the instance whose identity the
// caller presented ("" if none or not of the token), remote its address.
func (a *Authority) allowChallenge(instance, remote string, now time.Time) error {
	l := &a.challengeLimits
	l.mu.Lock()
	defer l.mu.Unlock()
	if instance != "" {
		if !l.instances.take(instance, now, instanceChallengeBurst, instanceChallengeEvery) {
			return tooManyChallenges("too many challenges for instance %s; try again in a few seconds", instance)
		}
		return nil
	}
	i := 0
	for i < len(l.anonymous) && !now.Before(l.anonymous[i]) {
		i++
	}
	l.anonymous = append(l.anonymous[:0], l.anonymous[i:]...)
	max := l.max
	if max <= 0 {
		max = defaultMaxAnonymousChallenges
	}
	if len(l.anonymous) >= max {
		return tooManyChallenges("too many challenges for callers without an identity; try again in a minute")
	}
	if !l.sources.take(SourceOf(remote), now, anonymousChallengeBurst, anonymousChallengeEvery) {
		return tooManyChallenges("too many challenges from this address; try again in a minute")
	}
	l.anonymous = append(l.anonymous, now.Add(ChallengeTTL))
	return nil
}

func tooManyChallenges(format string, args ...any) *fault.Error {
	return fault.RateLimited(api.CodeJoinDenied, format, args...)
}

// SourceOf returns the source that remote, a "host:port" address, is
// limited as: its IP address, or the /64 network of an IPv6 address, which
// one host commonly has whole. The issuer's connection limits count
// sources the same way.
func SourceOf(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	ip = ip.WithZone("").Unmap()
	if ip.Is6() {
		if p, err := ip.Prefix(64); err == nil {
			return p.String()
		}
	}
	return ip.String()
}

// buckets are token buckets by key, each holding up to burst tokens and
// gaining one every period; a key takes memory only while its bucket is
// not full. The zero value is ready to use; it is not safe for concurrent
// use.
type buckets struct {
	// tat is, for each key, the time at which its bucket is full again
	// (the "theoretical arrival time" of the generic cell rate algorithm).
	tat   map[string]time.Time
	swept time.Time
}

// take takes a token from key's bucket and reports whether there was one.
func (b *buckets) take(key string, now time.Time, burst int, every time.Duration) bool {
	if b.tat == nil {
		b.tat = make(map[string]time.Time)
	}
	// Forget the keys whose buckets are full, at most once per time it
	// takes a bucket to fill.
	if now.Sub(b.swept) >= time.Duration(burst)*every || now.Before(b.swept) {
		for k, t := range b.tat {
			if !t.After(now) {
				delete(b.tat, k)
			}
		}
		b.swept = now
	}
	tat, ok := b.tat[key]
	if !ok || tat.Before(now) {
		tat = now
	}
	if tat.Sub(now) > time.Duration(burst-1)*every {
		return false
	}
	b.tat[key] = tat.Add(every)
	return true
}
