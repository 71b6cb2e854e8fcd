package authority_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/fault"
	"github.com/mwi-project/mwi/internal/httpjson"
	"github.com/mwi-project/mwi/issuer/audit"
	"github.com/mwi-project/mwi/issuer/authority"
	"github.com/mwi-project/mwi/issuer/ca"
)

// challengeStatus asks for a challenge for token and returns 200 or the
// refusal's status.
func (e *attestEnv) challengeStatus(t *testing.T, token string, client *ca.Identity, remote string) int {
	t.Helper()
	_, err := e.auth.Challenge(context.Background(), api.ChallengeRequest{TokenName: token}, client, remote)
	var herr *fault.Error
	switch {
	case err == nil:
		return http.StatusOK
	case errors.As(err, &herr):
		return httpjson.Status(herr.Kind)
	}
	t.Fatalf("Challenge: %v", err)
	return 0
}

// TestChallengeStarvation floods the challenge endpoint anonymously for
// the token of a bound key pair host: the flood is limited by its source
// and by the anonymous total, while the host, presenting its identity, and
// anonymous callers elsewhere still get challenges.
func TestChallengeStarvation(t *testing.T) {
	e := newAttestEnv(t)
	ctx := context.Background()
	// The host joined with build-01 from its own address.
	creds, err := e.auth.Join(ctx, e.keypairReq(t, "build-01", e.signer), nil, "198.51.100.20:4000")
	if err != nil {
		t.Fatal(err)
	}
	host := ca.Identity{Bot: "ci", Instance: creds.Instance, Generation: creds.Generation}

	t.Run("one source", func(t *testing.T) {
		offset := e.audit.Len()
		refused := 0
		for i := range 1000 {
			switch s := e.challengeStatus(t, "build-01", nil, fmt.Sprintf("203.0.113.66:%d", 1024+i)); s {
			case http.StatusOK:
			case http.StatusTooManyRequests:
				refused++
			default:
				t.Fatalf("status %d", s)
			}
		}
		if refused != 990 {
			t.Errorf("%d of 1000 anonymous challenges from one address refused, want 990", refused)
		}
		// Every refusal is accounted for: recorded, or (past the audit
		// log's rate for denials, which the caller's volume must not
		// defeat) counted in a suppressed record.
		if err := e.auth.Audit.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		denied, suppressed := 0, 0
		for _, l := range e.auditLines(t, offset) {
			if l["event"] != audit.EventJoinChallenge {
				continue
			}
			switch l["outcome"] {
			case audit.Denied:
				denied++
			case audit.Suppressed:
				suppressed += int(l["count"].(float64))
			}
		}
		if denied+suppressed != refused || denied == 0 {
			t.Errorf("%d refusals audited and %d counted as suppressed, want %d in all", denied, suppressed, refused)
		}
		// The host, even from the flooding address (a NAT, say), with its
		// identity.
		for _, remote := range []string{"198.51.100.20:4001", "203.0.113.66:999"} {
			if s := e.challengeStatus(t, "build-01", &host, remote); s != http.StatusOK {
				t.Errorf("the host with its identity from %s: status %d", remote, s)
			}
		}
		// A challenge it got joins it, keeping its instance.
		req := e.keypairReq(t, "build-01", e.signer) // anonymous, from "r"
		again, err := e.auth.Join(ctx, req, &host, "198.51.100.20:4002")
		if err != nil || again.Instance != host.Instance {
			t.Fatalf("re-join = %+v, %v", again, err)
		}
		host.Generation = again.Generation
		// Anonymous callers elsewhere are not affected.
		if s := e.challengeStatus(t, "build-01", nil, "192.0.2.80:1"); s != http.StatusOK {
			t.Errorf("another address: status %d", s)
		}
	})

	t.Run("IPv6 by /64", func(t *testing.T) {
		for i := range anonymousBurst {
			if s := e.challengeStatus(t, "build-01", nil, fmt.Sprintf("[2001:db8:1:2::%x]:443", i+1)); s != http.StatusOK {
				t.Fatalf("challenge %d: status %d", i, s)
			}
		}
		if s := e.challengeStatus(t, "build-01", nil, "[2001:db8:1:2:ffff::1]:443"); s != http.StatusTooManyRequests {
			t.Errorf("another address of the /64: status %d, want 429", s)
		}
		if s := e.challengeStatus(t, "build-01", nil, "[2001:db8:1:3::1]:443"); s != http.StatusOK {
			t.Errorf("another /64: status %d", s)
		}
	})

	t.Run("identities that prove nothing are anonymous", func(t *testing.T) {
		other, err := e.auth.Join(ctx, joinReq(t, api.JoinMethodGitHub, "gh", e.p.Mint(e.p.GitHubClaims("mwi", "org/repo"))), nil, "r")
		if err != nil {
			t.Fatal(err)
		}
		for name, id := range map[string]ca.Identity{
			"an instance of another token":   {Bot: "ci", Instance: other.Instance, Generation: other.Generation},
			"an instance unknown":            {Bot: "ci", Instance: "0123456789abcdef0123456789abcdef", Generation: 1},
			"the host's instance, other bot": {Bot: "web", Instance: host.Instance, Generation: host.Generation},
		} {
			if s := e.challengeStatus(t, "build-01", &id, "203.0.113.66:1"); s != http.StatusTooManyRequests {
				t.Errorf("%s from the flooding address: status %d, want 429", name, s)
			}
		}
	})

	t.Run("all sources together", func(t *testing.T) {
		e.now = e.now.Add(time.Hour)
		e.auth.SetMaxAnonymousChallenges(50)
		defer e.auth.SetMaxAnonymousChallenges(0)
		for i := range 50 {
			if s := e.challengeStatus(t, "build-01", nil, fmt.Sprintf("10.0.%d.%d:1", i/250, i%250)); s != http.StatusOK {
				t.Fatalf("anonymous challenge %d: status %d", i, s)
			}
		}
		if s := e.challengeStatus(t, "build-01", nil, "10.9.9.9:1"); s != http.StatusTooManyRequests {
			t.Errorf("a fresh address past the total: status %d, want 429", s)
		}
		if s := e.challengeStatus(t, "build-01", &host, "10.9.9.9:1"); s != http.StatusOK {
			t.Errorf("the host past the anonymous total: status %d", s)
		}
		// Once those challenges have expired, anonymous callers are served
		// again.
		e.now = e.now.Add(authority.ChallengeTTL)
		if s := e.challengeStatus(t, "build-01", nil, "10.9.9.9:1"); s != http.StatusOK {
			t.Errorf("after ChallengeTTL: status %d", s)
		}
	})

	t.Run("an instance has its own limit", func(t *testing.T) {
		e.now = e.now.Add(time.Hour)
		refused := 0
		for range 100 {
			if e.challengeStatus(t, "build-01", &host, "198.51.100.20:4003") == http.StatusTooManyRequests {
				refused++
			}
		}
		if refused != 70 {
			t.Errorf("%d of 100 challenges at once for one instance refused, want 70", refused)
		}
		e.now = e.now.Add(2 * time.Second)
		if s := e.challengeStatus(t, "build-01", &host, "198.51.100.20:4003"); s != http.StatusOK {
			t.Errorf("two seconds later: status %d", s)
		}
		// Anonymous callers, from the host's own address too, are not
		// limited by it.
		if s := e.challengeStatus(t, "build-01", nil, "198.51.100.20:4004"); s != http.StatusOK {
			t.Errorf("anonymous from the host's address: status %d", s)
		}
	})
}

// anonymousBurst is how many challenges one address gets at once.
const anonymousBurst = 10

// TestSourceOf checks what one source is, for the challenge limits and
// the issuer's connection limits alike: an IPv4 address, however spelled,
// and an IPv6 /64.
func TestSourceOf(t *testing.T) {
	for _, tc := range []struct{ remote, want string }{
		{"192.0.2.7:443", "192.0.2.7"},
		{"[::ffff:192.0.2.7]:443", "192.0.2.7"},
		{"[2001:db8:1:2:3:4:5:6]:443", "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:ffff::1]:80", "2001:db8:1:2::/64"},
		{"[fe80::1%eth0]:80", "fe80::/64"},
		{"not an address", "not an address"},
	} {
		if got := authority.SourceOf(tc.remote); got != tc.want {
			t.Errorf("SourceOf(%q) = %q, want %q", tc.remote, got, tc.want)
		}
	}
}
