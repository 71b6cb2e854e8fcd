package server

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/logtest"
	"github.com/mwi-project/mwi/issuer/audit"
	"github.com/mwi-project/mwi/issuer/ca"
)

// gated serves h as Run serves the HTTPS API, through a gate with lim,
// on 127.0.0.1. refused audits refused client certificates.
func gated(t *testing.T, a *ca.Authority, h http.Handler, lim Limits, refused func(string, error), log *slog.Logger) (string, *gate) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := newGate(ln, tlsConfig(a, time.Now), lim, refused, a.AdminName, log)
	srv := newPublicServer(h, g, lim, log)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(g) }()
	t.Cleanup(func() {
		shutdown(time.Second, log, srv)
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String(), g
}

// eventually waits for cond, failing the test if it does not hold within
// a generous bound.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// closedByServer waits until the server closes c: a read ends with EOF or
// a reset, not with the test's own deadline.
func closedByServer(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the server did not close the connection")
	}
}

func dialTLS(t *testing.T, a *ca.Authority, addr string, certs ...tls.Certificate) *tls.Conn {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(a.TLSCA())
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, Certificates: certs, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestServerTimeouts holds connections open in each way a slow or idle
// caller can: the server must close each.
func TestServerTimeouts(t *testing.T) {
	a := testCA(t)
	short := 150 * time.Millisecond
	lim := Limits{HandshakeTimeout: short, ReadHeaderTimeout: short, ReadTimeout: short, IdleTimeout: short, WriteTimeout: 5 * time.Second}
	var logged logtest.Buffer
	addr, g := gated(t, a, publicRoutes(&fakeJoiner{}, nil, discardAudit(), discardLog()), lim, nil, slog.New(slog.NewTextHandler(&logged, nil)))

	for _, tc := range []struct {
		name string
		hold func(t *testing.T) net.Conn
	}{
		{"no TLS handshake", func(t *testing.T) net.Conn {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			return c
		}},
		{"half a TLS handshake", func(t *testing.T) net.Conn {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01}) // a ClientHello's first bytes
			return c
		}},
		{"slow headers", func(t *testing.T) net.Conn {
			c := dialTLS(t, a, addr)
			io.WriteString(c, "POST /v1/join HTTP/1.1\r\nHost: mwi\r\n")
			return c
		}},
		{"slow body", func(t *testing.T) net.Conn {
			c := dialTLS(t, a, addr)
			io.WriteString(c, "POST /v1/join HTTP/1.1\r\nHost: mwi\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"join_")
			return c
		}},
		{"idle after a request", func(t *testing.T) net.Conn {
			c := dialTLS(t, a, addr)
			io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: mwi\r\n\r\n")
			res, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusOK || res.Close {
				t.Fatalf("healthz = %d, close %v; want 200 kept alive", res.StatusCode, res.Close)
			}
			return c
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			closedByServer(t, tc.hold(t))
		})
	}
	eventually(t, "every connection released", func() bool {
		total, _, _ := g.counts()
		return total == 0
	})
	if !strings.Contains(logged.String(), "TLS handshake not done in time") {
		t.Errorf("a handshake timeout was not logged:\n%s", logged.String())
	}
}

// TestRenewalWhileAnonymousConnectionsAreFull fills the room for
// connections in their handshake and for connections without an
// identity: a renewal must still get through, and the limits say so in
// the log.
func TestRenewalWhileAnonymousConnectionsAreFull(t *testing.T) {
	a := testCA(t)
	f := &fakeJoiner{}
	// Connections in their handshake can be closed to make room at once.
	lim := Limits{MaxConns: 16, MaxHandshakes: 3, MaxAnonymous: 2, HandshakeGrace: time.Nanosecond}
	var logged logtest.Buffer
	addr, g := gated(t, a, publicRoutes(f, nil, discardAudit(), discardLog()), lim, nil, slog.New(slog.NewTextHandler(&logged, nil)))

	// Connections that never start their handshake fill that room.
	var raw []net.Conn
	for range lim.MaxHandshakes {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		raw = append(raw, c)
	}
	eventually(t, "connections in their handshake", func() bool {
		_, hs, _ := g.counts()
		return hs == lim.MaxHandshakes
	})
	// Anonymous connections that start a request and stall fill theirs.
	for range lim.MaxAnonymous {
		c := dialTLS(t, a, addr)
		io.WriteString(c, "POST /v1/join HTTP/1.1\r\n")
		// Each new connection closed the oldest one in its handshake.
		eventually(t, "an anonymous connection counted", func() bool {
			_, _, anon := g.counts()
			return anon >= 1
		})
	}
	eventually(t, "the anonymous connections counted", func() bool {
		_, _, anon := g.counts()
		return anon == lim.MaxAnonymous
	})
	// One more anonymous caller is turned away.
	closedByServer(t, dialTLS(t, a, addr))
	// Refill the room for handshakes.
	for range lim.MaxHandshakes {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	eventually(t, "connections in their handshake", func() bool {
		_, hs, _ := g.counts()
		return hs == lim.MaxHandshakes
	})

	// A bot renews anyway.
	id := ca.Identity{Bot: "ci", Instance: "i1", Generation: 3}
	res, body, err := post(t, tlsClient(t, a, identityCert(t, a, id)), "https://"+addr+"/v1/renew", api.RenewRequest{TTLSeconds: 600})
	if err != nil {
		t.Fatalf("renewal while anonymous connections are full: %v", err)
	}
	if res.StatusCode != http.StatusOK {
		t.Fatalf("renewal: %d %s", res.StatusCode, body)
	}
	if _, renews := f.calls(); renews != 1 {
		t.Errorf("%d renewals reached the authority, want 1", renews)
	}
	for _, msg := range []string{"too many connections without a bot identity", "too many handshakes"} {
		if !strings.Contains(logged.String(), msg) {
			t.Errorf("the log does not say %q:\n%s", msg, logged.String())
		}
	}
	if !strings.Contains(logged.String(), "level=WARN") {
		t.Errorf("limits were not logged as warnings:\n%s", logged.String())
	}
}

// TestHandshakeGrace opens a burst of connections: those in their
// handshake for less than HandshakeGrace are not closed to make room
// under MaxHandshakes, but MaxConns still holds.
func TestHandshakeGrace(t *testing.T) {
	a := testCA(t)
	lim := Limits{MaxConns: 6, MaxHandshakes: 2, MaxAnonymous: 2, HandshakeGrace: time.Hour}
	addr, g := gated(t, a, publicRoutes(&fakeJoiner{}, nil, discardAudit(), discardLog()), lim, nil, discardLog())
	var conns []net.Conn
	for i := range lim.MaxConns + 1 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
		want := min(i+1, lim.MaxConns)
		eventually(t, "the connection counted", func() bool {
			total, hs, _ := g.counts()
			return total == want && hs == want
		})
	}
	// The last one made room by closing the first.
	closedByServer(t, conns[0])
}

// TestConnectionCap refuses connections past MaxConns when none is in
// its handshake to make room.
func TestConnectionCap(t *testing.T) {
	a := testCA(t)
	lim := Limits{MaxConns: 2, MaxHandshakes: 2, MaxAnonymous: 2}
	addr, g := gated(t, a, publicRoutes(&fakeJoiner{}, nil, discardAudit(), discardLog()), lim, nil, discardLog())
	for range lim.MaxConns {
		c := dialTLS(t, a, addr)
		io.WriteString(c, "POST /v1/join HTTP/1.1\r\n")
	}
	eventually(t, "the connections counted", func() bool {
		total, hs, _ := g.counts()
		return total == lim.MaxConns && hs == 0
	})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	closedByServer(t, c)
	if total, _, _ := g.counts(); total != lim.MaxConns {
		t.Errorf("%d connections counted, want %d", total, lim.MaxConns)
	}
}

// TestClientCertificateRefusalAudited presents an identity signed by
// another issuer: the handshake fails and the refusal is audited.
func TestClientCertificateRefusalAudited(t *testing.T) {
	a, other := testCA(t), testCA(t)
	al, buf := newAuditBuffer()
	addr, _ := gated(t, a, publicRoutes(&fakeJoiner{}, nil, al, discardLog()), Limits{}, auditRefused(al), discardLog())
	_, _, err := post(t, tlsClient(t, a, identityCert(t, other, ca.Identity{Bot: "ci", Instance: "i1", Generation: 1})), "https://"+addr+"/v1/renew", api.RenewRequest{TTLSeconds: 600})
	if err == nil {
		t.Fatal("a client certificate of another issuer was accepted")
	}
	eventually(t, "the refusal audited", func() bool { return len(buf.records(t)) > 0 })
	r := buf.records(t)[0]
	if r["event"] != audit.EventTLS || r["outcome"] != audit.Denied || r["remote"] == "" {
		t.Errorf("audit = %v, want a tls denial with the remote address", r)
	}
	if reason, _ := r["reason"].(string); !strings.Contains(reason, "certificate") {
		t.Errorf("reason %q does not name the certificate", reason)
	}
}

// TestShutdownClosesStuckRequests stops a server whose handler never
// returns: shutdown must return, and close the connection.
func TestShutdownClosesStuckRequests(t *testing.T) {
	a := testCA(t)
	stuck := make(chan struct{})
	defer close(stuck)
	started := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-stuck
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := newGate(ln, tlsConfig(a, time.Now), Limits{}, nil, a.AdminName, discardLog())
	srv := newPublicServer(h, g, Limits{}, discardLog())
	go srv.Serve(g)
	c := dialTLS(t, a, ln.Addr().String())
	io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: mwi\r\n\r\n")
	<-started

	done := make(chan struct{})
	go func() {
		shutdown(50*time.Millisecond, discardLog(), srv)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("shutdown did not return with a request stuck")
	}
	closedByServer(t, c)
}

// TestHTTP1Only offers HTTP/2: the server must answer in HTTP/1.1. Over
// HTTP/2 one connection carries up to 250 requests at once, each holding
// its body in memory, and the caps on connections would not bound them.
func TestHTTP1Only(t *testing.T) {
	a := testCA(t)
	addr, _ := gated(t, a, publicRoutes(&fakeJoiner{}, nil, discardAudit(), discardLog()), Limits{}, nil, discardLog())
	roots := x509.NewCertPool()
	roots.AddCert(a.TLSCA())
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if p := c.ConnectionState().NegotiatedProtocol; p == "h2" {
		t.Errorf("the server negotiated %q", p)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	res, err := (&http.Client{Transport: tr}).Get("https://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.ProtoMajor != 1 {
		t.Errorf("a client that prefers HTTP/2 was answered in %s", res.Proto)
	}
}

// TestIdentityConnectionCaps holds connections with bot identities: one
// identity, or one bot's instances together, cannot take every
// connection, or one bot could keep all the others from renewing.
func TestIdentityConnectionCaps(t *testing.T) {
	a := testCA(t)
	lim := Limits{MaxConns: 16, MaxAnonymous: 4, MaxPerInstance: 2, MaxPerBot: 3}
	var logged logtest.Buffer
	addr, g := gated(t, a, publicRoutes(&fakeJoiner{}, nil, discardAudit(), discardLog()), lim, nil, slog.New(slog.NewTextHandler(&logged, nil)))
	cert := func(bot, instance string) tls.Certificate {
		return identityCert(t, a, ca.Identity{Bot: bot, Instance: instance, Generation: 1})
	}
	i1, i2, i3, j1 := cert("ci", "i1"), cert("ci", "i2"), cert("ci", "i3"), cert("other", "j1")
	held := func(n int, c tls.Certificate) {
		t.Helper()
		total, _, _ := g.counts()
		for range n {
			dialTLS(t, a, addr, c)
		}
		eventually(t, "the connections counted", func() bool {
			now, hs, _ := g.counts()
			return now == total+n && hs == 0
		})
	}
	held(2, i1)
	closedByServer(t, dialTLS(t, a, addr, i1)) // a third with the same identity
	held(1, i2)
	closedByServer(t, dialTLS(t, a, addr, i3)) // a fourth of bot ci
	held(2, j1)                                // another bot is not held back
	for _, msg := range []string{"too many connections with one bot instance's identity", "too many connections of one bot"} {
		if !strings.Contains(logged.String(), msg) {
			t.Errorf("the log does not say %q:\n%s", msg, logged.String())
		}
	}
}

// TestAnonymousPerSource holds anonymous connections from one address:
// past its share, its new connections are closed, and another address
// still gets in, so that one source cannot keep every join out.
func TestAnonymousPerSource(t *testing.T) {
	a := testCA(t)
	lim := Limits{MaxConns: 16, MaxAnonymous: 8, MaxAnonymousPerSource: 2}
	var logged logtest.Buffer
	addr, g := gated(t, a, publicRoutes(&fakeJoiner{}, nil, discardAudit(), discardLog()), lim, nil, slog.New(slog.NewTextHandler(&logged, nil)))
	roots := x509.NewCertPool()
	roots.AddCert(a.TLSCA())
	from := func(src string) *tls.Conn {
		t.Helper()
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{RootCAs: roots, NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	for range 2 {
		from("127.0.0.1")
	}
	eventually(t, "the anonymous connections counted", func() bool {
		_, _, anon := g.counts()
		return anon == 2
	})
	closedByServer(t, from("127.0.0.1"))
	from("127.0.0.2")
	eventually(t, "another address's connection counted", func() bool {
		_, _, anon := g.counts()
		return anon == 3
	})
	if !strings.Contains(logged.String(), "too many connections without a bot identity from one address") {
		t.Errorf("the limit was not logged:\n%s", logged.String())
	}
}

// request opens a connection to addr from the address src with certs and
// makes one request on it, which it then leaves open: idle, or, if
// active, in the middle of a second request whose body has not come.
func request(t *testing.T, a *ca.Authority, addr, src string, active bool, certs ...tls.Certificate) (*tls.Conn, error) {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(a.TLSCA())
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{RootCAs: roots, Certificates: certs, NextProtos: []string{"http/1.1"}})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: mwi\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil, err
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Close {
		return nil, errors.New("healthz: " + res.Status)
	}
	c.SetDeadline(time.Time{})
	if active {
		io.WriteString(c, "POST /v1/join HTTP/1.1\r\nHost: mwi\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
	}
	return c, nil
}

// TestCapsCloseIdleConnections fills each limit on connections with
// connections of its kind. When they are idle between requests, a new
// connection of that kind closes the one idle longest and is served, so
// that holding idle keep-alive connections keeps no one out; when each has
// a request in progress, the new one is refused as before.
func TestCapsCloseIdleConnections(t *testing.T) {
	a := testCA(t)
	cert := func(bot, instance string) []tls.Certificate {
		return []tls.Certificate{identityCert(t, a, ca.Identity{Bot: bot, Instance: instance, Generation: 1})}
	}
	i1, i2, i3 := cert("ci", "i1"), cert("ci", "i2"), cert("ci", "i3")
	type conn struct {
		src   string
		certs []tls.Certificate
	}
	for _, tc := range []struct {
		name    string
		lim     Limits
		held    []conn // filling the limit, oldest first
		next    conn
		closes  int    // the held connection the next one closes when they are idle
		reason  string // what the log says in either case
		refusal string // what the log says when they are active
	}{
		{"per instance", Limits{MaxConns: 16, MaxPerInstance: 2, MaxPerBot: 8},
			[]conn{{"127.0.0.1", i1}, {"127.0.0.1", i1}}, conn{"127.0.0.1", i1}, 0,
			"too many connections with one bot instance's identity", "connection closed: "},
		{"per bot", Limits{MaxConns: 16, MaxPerInstance: 2, MaxPerBot: 3},
			[]conn{{"127.0.0.1", i1}, {"127.0.0.1", i2}, {"127.0.0.1", i2}}, conn{"127.0.0.1", i3}, 0,
			"too many connections of one bot", "connection closed: "},
		{"anonymous per source", Limits{MaxConns: 16, MaxAnonymous: 8, MaxAnonymousPerSource: 2},
			[]conn{{"127.0.0.2", nil}, {"127.0.0.1", nil}, {"127.0.0.1", nil}}, conn{"127.0.0.1", nil}, 1,
			"too many connections without a bot identity from one address", "connection closed: "},
		{"anonymous", Limits{MaxConns: 16, MaxAnonymous: 2, MaxAnonymousPerSource: 2},
			[]conn{{"127.0.0.1", nil}, {"127.0.0.2", nil}, {"127.0.0.1", i1}}, conn{"127.0.0.3", nil}, 0,
			"too many connections without a bot identity", "connection closed: "},
		// An anonymous connection goes first, though another is idle longer.
		{"in all", Limits{MaxConns: 3, MaxHandshakes: 3, MaxAnonymous: 3},
			[]conn{{"127.0.0.1", i1}, {"127.0.0.1", nil}, {"127.0.0.1", i2}}, conn{"127.0.0.1", i3}, 1,
			"too many connections", "connection refused: "},
	} {
		for _, active := range []bool{false, true} {
			name := tc.name + "/idle"
			if active {
				name = tc.name + "/active"
			}
			t.Run(name, func(t *testing.T) {
				var logged logtest.Buffer
				addr, g := gated(t, a, publicRoutes(&fakeJoiner{}, nil, discardAudit(), discardLog()), tc.lim, nil, slog.New(slog.NewTextHandler(&logged, nil)))
				var held []*tls.Conn
				for i, h := range tc.held {
					c, err := request(t, a, addr, h.src, active, h.certs...)
					if err != nil {
						t.Fatalf("connection %d: %v", i, err)
					}
					held = append(held, c)
					// Each is idle, or has its request in progress, before
					// the next is opened: the server reads the first byte of
					// a request before it counts the connection active. The
					// client is done with its handshake before the server
					// is: a connection still in the server's handshake is
					// one the gate may close to make room, so the test
					// waits for none to be.
					eventually(t, "the connection idle or active", func() bool {
						total, handshakes, _ := g.counts()
						if active {
							return total == i+1 && handshakes == 0 && g.idles() == 0
						}
						return total == i+1 && g.idles() == i+1
					})
				}
				_, err := request(t, a, addr, tc.next.src, false, tc.next.certs...)
				if active {
					if err == nil {
						t.Fatal("a connection past the limit was served while every other had a request in progress")
					}
					if msg := tc.refusal + tc.reason; !strings.Contains(logged.String(), msg) {
						t.Errorf("the log does not say %q:\n%s", msg, logged.String())
					}
					for i, c := range held {
						c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
						if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
							t.Errorf("connection %d with a request in progress: %v", i, err)
						}
					}
					return
				}
				if err != nil {
					t.Fatalf("a connection past the limit was refused while others were idle: %v", err)
				}
				closedByServer(t, held[tc.closes])
				if msg := "closed the longest idle connection: " + tc.reason; !strings.Contains(logged.String(), msg) {
					t.Errorf("the log does not say %q:\n%s", msg, logged.String())
				}
				if !strings.Contains(logged.String(), "level=WARN") {
					t.Errorf("the closing was not logged as a warning:\n%s", logged.String())
				}
				if total, _, _ := g.counts(); total != len(tc.held) {
					t.Errorf("%d connections counted, want %d", total, len(tc.held))
				}
				for i, c := range held {
					if i == tc.closes {
						continue
					}
					c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
					if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
						t.Errorf("idle connection %d, not the longest idle of its kind: %v", i, err)
					}
				}
			})
		}
	}
}

// TestIdleConnectionsOfOneBotDoNotStopItsRenewals is the attack of a low
// trust CI job that joins 32 times as one bot and holds 8 idle connections
// with each identity, the bot's whole share: another instance of the bot
// still renews.
func TestIdleConnectionsOfOneBotDoNotStopItsRenewals(t *testing.T) {
	a := testCA(t)
	f := &fakeJoiner{}
	lim := Limits{MaxConns: 1024, MaxAnonymous: 256, MaxPerInstance: 8, MaxPerBot: 256}
	var logged logtest.Buffer
	addr, g := gated(t, a, publicRoutes(f, nil, discardAudit(), discardLog()), lim, nil, slog.New(slog.NewTextHandler(&logged, nil)))
	var first *tls.Conn
	for i := range lim.MaxPerBot / lim.MaxPerInstance {
		cert := identityCert(t, a, ca.Identity{Bot: "ci", Instance: "held" + strconv.Itoa(i), Generation: 1})
		for range lim.MaxPerInstance {
			c, err := request(t, a, addr, "127.0.0.1", false, cert)
			if err != nil {
				t.Fatal(err)
			}
			if first == nil {
				// The server marks a connection idle after it has sent
				// the answer, maybe after the next one is open: wait, so
				// that this one is the longest idle.
				first = c
				eventually(t, "the first connection idle", func() bool { return g.idles() == 1 })
			}
		}
	}
	eventually(t, "the bot's share of connections idle", func() bool {
		total, _, _ := g.counts()
		return total == lim.MaxPerBot && g.idles() == lim.MaxPerBot
	})

	id := ca.Identity{Bot: "ci", Instance: "fleet", Generation: 3}
	res, body, err := post(t, tlsClient(t, a, identityCert(t, a, id)), "https://"+addr+"/v1/renew", api.RenewRequest{TTLSeconds: 600})
	if err != nil {
		t.Fatalf("renewal while the bot's connections are held idle: %v", err)
	}
	if res.StatusCode != http.StatusOK {
		t.Fatalf("renewal: %d %s", res.StatusCode, body)
	}
	if _, renews := f.calls(); renews != 1 {
		t.Errorf("%d renewals reached the authority, want 1", renews)
	}
	closedByServer(t, first)
	if msg := "closed the longest idle connection: too many connections of one bot"; !strings.Contains(logged.String(), msg) {
		t.Errorf("the log does not say %q:\n%s", msg, logged.String())
	}
}

// TestIdleAnonymousConnectionsDoNotStopJoins holds the anonymous share of
// connections idle from 8 addresses, each its own share of it, as 8 IPv6
// /64s of one /48 can: a first join from another address still gets in.
func TestIdleAnonymousConnectionsDoNotStopJoins(t *testing.T) {
	a := testCA(t)
	f := &fakeJoiner{}
	lim := Limits{MaxConns: 1024, MaxAnonymous: 256, MaxAnonymousPerSource: 32}
	var logged logtest.Buffer
	addr, g := gated(t, a, publicRoutes(f, nil, discardAudit(), discardLog()), lim, nil, slog.New(slog.NewTextHandler(&logged, nil)))
	var first *tls.Conn
	for i := range lim.MaxAnonymous / lim.MaxAnonymousPerSource {
		for range lim.MaxAnonymousPerSource {
			c, err := request(t, a, addr, "127.0.0."+strconv.Itoa(i+1), false)
			if err != nil {
				t.Fatal(err)
			}
			if first == nil {
				// The server marks a connection idle after it has sent
				// the answer, maybe after the next one is open: wait, so
				// that this one is the longest idle.
				first = c
				eventually(t, "the first connection idle", func() bool { return g.idles() == 1 })
			}
		}
	}
	eventually(t, "the anonymous share of connections idle", func() bool {
		_, _, anon := g.counts()
		return anon == lim.MaxAnonymous && g.idles() == lim.MaxAnonymous
	})

	roots := x509.NewCertPool()
	roots.AddCert(a.TLSCA())
	tr := &http.Transport{
		DialContext:     (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.9")}}).DialContext,
		TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
	}
	defer tr.CloseIdleConnections()
	req := api.JoinRequest{JoinMethod: api.JoinMethodToken, Token: "s3cret", Keys: api.PublicKeys{IdentityCSR: "c", SSH: "k"}, TTLSeconds: 600}
	res, body, err := post(t, &http.Client{Transport: tr, Timeout: 10 * time.Second}, "https://"+addr+"/v1/join", req)
	if err != nil {
		t.Fatalf("join while the anonymous connections are held idle: %v", err)
	}
	if res.StatusCode != http.StatusOK {
		t.Fatalf("join: %d %s", res.StatusCode, body)
	}
	if joins, _ := f.calls(); joins != 1 {
		t.Errorf("%d joins reached the authority, want 1", joins)
	}
	closedByServer(t, first)
	if msg := "closed the longest idle connection: too many connections without a bot identity"; !strings.Contains(logged.String(), msg) {
		t.Errorf("the log does not say %q:\n%s", msg, logged.String())
	}
}

// TestTLSConfigWholeRecords checks that answers are sealed in whole
// records: with dynamic record sizing, a renewal's answer of a few
// kilobytes went out as several small records, each written to the socket
// apart (see tlsConfig).
func TestTLSConfigWholeRecords(t *testing.T) {
	if !tlsConfig(testCA(t), time.Now).DynamicRecordSizingDisabled {
		t.Error("tlsConfig: DynamicRecordSizingDisabled is false, want true")
	}
}
