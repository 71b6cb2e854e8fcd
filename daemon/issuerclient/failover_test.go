package issuerclient

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/config"
)

// replica is a test issuer whose answer a test changes: 0 answers 200,
// another status answers that status with an error body.
type replica struct {
	srv    *httptest.Server
	status atomic.Int32
	hits   atomic.Int32
}

func newReplica(t *testing.T) *replica {
	r := &replica{}
	r.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		switch st := int(r.status.Load()); st {
		case 0:
			json.NewEncoder(w).Encode(api.Credentials{Bot: "ci"})
		case http.StatusServiceUnavailable:
			w.WriteHeader(st)
			json.NewEncoder(w).Encode(api.ErrorBody{Error: api.Error{Code: api.CodeAuditUnavailable, Message: "store unavailable"}})
		default:
			w.WriteHeader(st)
			json.NewEncoder(w).Encode(api.ErrorBody{Error: api.Error{Code: api.CodeBotLocked, Message: "bot ci is locked"}})
		}
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *replica) addr() string { return strings.TrimPrefix(r.srv.URL, "https://") }

// closedAddr returns a loopback address where nothing listens.
func closedAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := l.Addr().String()
	l.Close()
	return a
}

// newFailoverClient returns a client of addrs, trusting the httptest
// certificate, and the buffer its log goes to.
func newFailoverClient(t *testing.T, addrs ...string) (*Client, *bytes.Buffer) {
	t.Helper()
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644)
	var logs bytes.Buffer
	c, err := New(config.Issuer{Addresses: addrs, CAFile: caFile}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return c, &logs
}

func renew(c *Client) error {
	_, err := c.Renew(context.Background(), nil, api.RenewRequest{})
	return err
}

// TestFailoverOrder checks that an address that cannot be reached or that
// answers 503 is passed over for the next, in the order configured.
func TestFailoverOrder(t *testing.T) {
	unavailable, up := newReplica(t), newReplica(t)
	unavailable.status.Store(http.StatusServiceUnavailable)
	closed := closedAddr(t)
	c, logs := newFailoverClient(t, closed, unavailable.addr(), up.addr())
	if c.Current() != closed {
		t.Errorf("Current before any answer = %q, want the first address %q", c.Current(), closed)
	}
	if err := renew(c); err != nil {
		t.Fatalf("renew past a closed and an unavailable replica: %v", err)
	}
	if unavailable.hits.Load() != 1 || up.hits.Load() != 1 {
		t.Errorf("hits = %d, %d; want the unavailable replica tried once, then the next", unavailable.hits.Load(), up.hits.Load())
	}
	if c.Current() != up.addr() {
		t.Errorf("Current = %q, want %q", c.Current(), up.addr())
	}
	// The first address to answer is no failover.
	if strings.Contains(logs.String(), "failover") {
		t.Errorf("log = %q", logs)
	}

	// All unavailable: the last failure is returned.
	up.status.Store(http.StatusServiceUnavailable)
	err := renew(c)
	if err == nil || !strings.Contains(err.Error(), "store unavailable") || isRefused(err) {
		t.Errorf("renew with no replica available = %v", err)
	}
}

// TestFailoverSticky checks that requests stay on the address that last
// answered, even after an earlier one comes back, and that each change of
// address is logged once.
func TestFailoverSticky(t *testing.T) {
	a, b := newReplica(t), newReplica(t)
	c, logs := newFailoverClient(t, a.addr(), b.addr())
	if err := renew(c); err != nil || a.hits.Load() != 1 || b.hits.Load() != 0 {
		t.Fatalf("renew = %v, hits %d, %d; want the first replica", err, a.hits.Load(), b.hits.Load())
	}
	a.status.Store(http.StatusServiceUnavailable)
	if err := renew(c); err != nil || a.hits.Load() != 2 || b.hits.Load() != 1 {
		t.Fatalf("renew = %v, hits %d, %d; want a failover to the second", err, a.hits.Load(), b.hits.Load())
	}
	a.status.Store(0)
	for range 3 {
		if err := renew(c); err != nil {
			t.Fatal(err)
		}
	}
	if a.hits.Load() != 2 || b.hits.Load() != 4 || c.Current() != b.addr() {
		t.Errorf("hits = %d, %d, current %q; want requests to stay on the second", a.hits.Load(), b.hits.Load(), c.Current())
	}
	if n := strings.Count(logs.String(), "issuer failover"); n != 1 || !strings.Contains(logs.String(), "to="+b.addr()) {
		t.Errorf("log = %q; want one failover line", logs)
	}
}

// TestFailoverRefusalNotRetried checks that a refusal is the issuer's
// answer: another replica, on the same store, would give the same one.
func TestFailoverRefusalNotRetried(t *testing.T) {
	for _, status := range []int{http.StatusForbidden, http.StatusUnauthorized, http.StatusTooManyRequests} {
		a, b := newReplica(t), newReplica(t)
		a.status.Store(int32(status))
		c, _ := newFailoverClient(t, a.addr(), b.addr())
		if err := renew(c); err == nil || !strings.Contains(err.Error(), "issuer refused") || b.hits.Load() != 0 {
			t.Errorf("%d: renew = %v, second replica hit %d times; want the refusal, and no retry", status, err, b.hits.Load())
		}
		if c.Current() != a.addr() {
			t.Errorf("%d: Current = %q; a replica that refuses answered", status, c.Current())
		}
	}
}

// TestFailoverResolvedName checks that a name resolving to several
// addresses counts as several, and that the TLS server name stays the
// configured name.
func TestFailoverResolvedName(t *testing.T) {
	up := newReplica(t)
	_, port, _ := net.SplitHostPort(up.addr())
	name := net.JoinHostPort("example.com", port) // in the httptest certificate
	c, _ := newFailoverClient(t, name)
	var lookups atomic.Int32
	c.lookup = func(ctx context.Context, host string) ([]string, error) {
		lookups.Add(1)
		if host != "example.com" {
			t.Errorf("lookup of %q", host)
		}
		// Nothing listens on 127.0.0.2 at the replica's port.
		return []string{"127.0.0.2", "127.0.0.1"}, nil
	}
	for range 2 {
		if err := renew(c); err != nil {
			t.Fatalf("renew through a name with two addresses: %v", err)
		}
	}
	if want := name + " (127.0.0.1:" + port + ")"; c.Current() != want || up.hits.Load() != 2 {
		t.Errorf("Current = %q, hits %d; want %q", c.Current(), up.hits.Load(), want)
	}
	if lookups.Load() != 2 {
		t.Errorf("%d lookups; want one at each request", lookups.Load())
	}
}
