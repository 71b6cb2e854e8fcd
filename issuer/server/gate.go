package server

import (
	"container/list"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/mwi-project/mwi/internal/logging"
	"github.com/mwi-project/mwi/issuer/authority"
	"github.com/mwi-project/mwi/issuer/ca"
)

// Limits bound the connections and the time of the issuer's servers. Zero
// fields mean the defaults, which DefaultLimits returns.
type Limits struct {
	// HandshakeTimeout bounds a connection's TLS handshake.
	HandshakeTimeout time.Duration
	// ReadHeaderTimeout, ReadTimeout, WriteTimeout and IdleTimeout are the
	// http.Server fields of the same names: for reading a request's
	// headers, reading all of it, answering it, and waiting for the next
	// one.
	ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	// MaxConns bounds the HTTPS API's connections in all.
	MaxConns int
	// MaxHandshakes bounds the connections in their TLS handshake that
	// have had HandshakeGrace: a new connection past it closes the oldest
	// of them. Younger ones count only against MaxConns, so that a burst
	// of callers is not turned away; when MaxConns is reached, a new
	// connection closes the oldest in its handshake, however young.
	MaxHandshakes int
	// HandshakeGrace is how long a connection may be in its handshake
	// before it can be closed to make room under MaxHandshakes.
	HandshakeGrace time.Duration
	// MaxAnonymous bounds the connections that completed their handshake
	// without a client certificate (joins, challenges, health).
	// Connections with a bot identity do not count against it, so
	// anonymous callers cannot crowd out renewals.
	MaxAnonymous int
	// MaxAnonymousPerSource bounds the anonymous connections from one
	// address (an IPv6 /64 counts as one), so that one source cannot take
	// every anonymous connection and keep out every join.
	MaxAnonymousPerSource int
	// MaxPerInstance bounds the connections that present the identity of
	// one bot instance, and MaxPerBot those of all of one bot's instances.
	// A bot identity proves who is calling, not that it calls in good
	// faith: one bot, or one copy of an identity, must not hold the room
	// that the other bots renew in.
	//
	// A new connection past MaxConns, MaxAnonymous, MaxAnonymousPerSource,
	// MaxPerInstance or MaxPerBot closes the connection of the same kind
	// that has waited longest, idle, for its next request; past MaxConns,
	// an idle anonymous one first, then any idle one, then the oldest in
	// its handshake. Only if there is none is the new connection closed:
	// otherwise whoever holds idle keep-alive connections, which cost
	// nothing to hold, would keep out the callers with a request to make.
	// Connections with a request in progress are bounded in time by the
	// timeouts instead.
	MaxPerInstance, MaxPerBot int
	// MaxAdminConns bounds the admin socket's connections. Only root and
	// the issuer's own user may connect; unless the issuer runs as root,
	// each of them may hold half.
	MaxAdminConns int
	// ShutdownTimeout is how long requests in progress may finish when the
	// issuer stops; then their connections are closed.
	ShutdownTimeout time.Duration
}

// DefaultLimits returns the limits the issuer uses unless told otherwise.
// The connection caps fit within the process's limit on open files, so
// that a full house of connections never keeps the issuer from accepting
// a renewal or opening its own files.
func DefaultLimits() Limits {
	conns := 1024
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Cur < uint64(conns+reservedFiles) {
		conns = max(int(rl.Cur)-reservedFiles, 16)
	}
	return Limits{
		HandshakeTimeout:  10 * time.Second,
		ReadHeaderTimeout: 10 * time.Second,
		// Requests are at most 64 KiB; answers are small too, but a join
		// may first fetch an ID token issuer's keys (two requests of at
		// most 10 seconds each).
		ReadTimeout:           30 * time.Second,
		WriteTimeout:          30 * time.Second,
		IdleTimeout:           60 * time.Second,
		MaxConns:              conns,
		MaxHandshakes:         conns / 8,
		HandshakeGrace:        time.Second,
		MaxAnonymous:          conns / 4,
		MaxAnonymousPerSource: max(conns/32, 1),
		// mwid makes one request at a time, on a connection of its own.
		MaxPerInstance:  8,
		MaxPerBot:       conns / 4,
		MaxAdminConns:   32,
		ShutdownTimeout: 5 * time.Second,
	}
}

// reservedFiles is what DefaultLimits keeps of the open file limit for
// the store, the audit log, the listeners, the admin socket's connections
// and requests to ID token issuers.
const reservedFiles = 96

// withDefaults fills in l's zero fields.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	for _, f := range []struct{ v, d *time.Duration }{
		{&l.HandshakeTimeout, &d.HandshakeTimeout}, {&l.ReadHeaderTimeout, &d.ReadHeaderTimeout},
		{&l.ReadTimeout, &d.ReadTimeout}, {&l.WriteTimeout, &d.WriteTimeout},
		{&l.IdleTimeout, &d.IdleTimeout}, {&l.ShutdownTimeout, &d.ShutdownTimeout},
		{&l.HandshakeGrace, &d.HandshakeGrace},
	} {
		if *f.v <= 0 {
			*f.v = *f.d
		}
	}
	for _, f := range []struct{ v, d *int }{
		{&l.MaxConns, &d.MaxConns}, {&l.MaxHandshakes, &d.MaxHandshakes},
		{&l.MaxAnonymous, &d.MaxAnonymous}, {&l.MaxAdminConns, &d.MaxAdminConns},
		{&l.MaxPerInstance, &d.MaxPerInstance}, {&l.MaxPerBot, &d.MaxPerBot},
		{&l.MaxAnonymousPerSource, &d.MaxAnonymousPerSource},
	} {
		if *f.v <= 0 {
			*f.v = *f.d
		}
	}
	return l
}

// gate is the listener of the HTTPS API. It makes each connection's TLS
// handshake itself, within HandshakeTimeout, so that it knows who the
// caller is before the HTTP server sees the connection, and it bounds
// connections by kind (see Limits): connections that have not finished
// their handshake, or that carry no bot identity, cannot take the room
// that renewals need. Accept returns *tls.Conn connections whose
// handshake is done. The server's ConnState hook must be the gate's
// connState, which tells it which connections are idle.
type gate struct {
	ln  net.Listener
	tls *tls.Config
	lim Limits
	// refused is told of each client certificate the handshake refused.
	refused func(remote string, err error)
	// admin tells an admin identity from a bot identity.
	admin adminNamer
	log   *slog.Logger
	warn  logging.Limit

	ready   chan net.Conn
	errs    chan error
	done    chan struct{}
	closing sync.Once

	mu        sync.Mutex
	closed    bool
	total     int            // connections open
	pending   *list.List     // of *gatedConn in their handshake, oldest first
	idle      *list.List     // of *gatedConn past it, idle, longest idle first
	anonymous int            // connections past their handshake without an identity
	sources   map[string]int // and by source address
	bots      map[string]int // connections past their handshake, by bot
	instances map[string]int // and by bot instance
}

// Connection states.
const (
	inHandshake = iota
	anonymous
	identified
	released
)

// gatedConn is a connection under the gate: its Close gives back its room.
type gatedConn struct {
	net.Conn
	g       *gate
	started time.Time
	state   int           // guarded by g.mu
	elem    *list.Element // in g.pending while in its handshake
	idle    *list.Element // in g.idle while waiting for a request
	id      ca.Identity   // once identified
	source  string        // once anonymous
}

func (c *gatedConn) Close() error {
	c.g.release(c)
	return c.Conn.Close()
}

// newGate gates the connections of ln. refused may be nil. admin tells
// admin identities, whose connections are counted as those of one bot
// per admin name, from bot identities.
func newGate(ln net.Listener, cfg *tls.Config, lim Limits, refused func(string, error), admin adminNamer, log *slog.Logger) *gate {
	g := &gate{
		ln:        ln,
		tls:       cfg,
		lim:       lim.withDefaults(),
		refused:   refused,
		admin:     admin,
		log:       log,
		ready:     make(chan net.Conn),
		errs:      make(chan error),
		done:      make(chan struct{}),
		pending:   list.New(),
		idle:      list.New(),
		sources:   make(map[string]int),
		bots:      make(map[string]int),
		instances: make(map[string]int),
	}
	go g.acceptLoop()
	return g
}

// Accept returns the next connection whose handshake is done.
func (g *gate) Accept() (net.Conn, error) {
	select {
	case c := <-g.ready:
		return c, nil
	case err := <-g.errs:
		return nil, err
	case <-g.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting and closes the connections still in their
// handshake. Connections already returned by Accept are the server's.
func (g *gate) Close() error {
	var err error
	g.closing.Do(func() {
		close(g.done)
		err = g.ln.Close()
		g.mu.Lock()
		g.closed = true
		var conns []*gatedConn
		for e := g.pending.Front(); e != nil; e = e.Next() {
			conns = append(conns, e.Value.(*gatedConn))
		}
		g.mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return err
}

func (g *gate) Addr() net.Addr { return g.ln.Addr() }

func (g *gate) acceptLoop() {
	for {
		raw, err := g.ln.Accept()
		if err != nil {
			// The server backs off on a temporary error, such as too many
			// open files, and stops on any other.
			select {
			case g.errs <- err:
			case <-g.done:
				return
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() && !isTemporary(err) {
				return
			}
			continue
		}
		if c := g.admit(raw); c != nil {
			go g.handshake(c)
		}
	}
}

// isTemporary reports whether an Accept error may pass, as http.Server
// decides.
func isTemporary(err error) bool {
	te, ok := err.(interface{ Temporary() bool })
	return ok && te.Temporary()
}

// admit counts a new connection, making room for it if need be (see
// Limits), or refuses it.
func (g *gate) admit(raw net.Conn) *gatedConn {
	now := time.Now()
	remote := raw.RemoteAddr().String()
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		raw.Close()
		return nil
	}
	var oldest *gatedConn
	if e := g.pending.Front(); e != nil {
		oldest = e.Value.(*gatedConn)
	}
	var evict *gatedConn
	var msg string
	limit := g.lim.MaxConns
	switch {
	case g.pending.Len() >= g.lim.MaxHandshakes && now.Sub(oldest.started) >= g.lim.HandshakeGrace:
		evict, msg, limit = oldest, "closed the oldest connection in its TLS handshake: too many handshakes", g.lim.MaxHandshakes
	case g.total >= g.lim.MaxConns:
		msg = "closed the longest idle connection: too many connections"
		if evict = g.idleLocked(isAnonymous); evict == nil {
			evict = g.idleLocked(func(*gatedConn) bool { return true })
		}
		if evict == nil && oldest != nil {
			evict, msg = oldest, "closed the oldest connection in its TLS handshake: too many connections"
		}
		if evict == nil {
			g.mu.Unlock()
			g.warn.Warn(g.log, "connection refused: too many connections", "limit", g.lim.MaxConns, "remote", remote)
			raw.Close()
			return nil
		}
	}
	if evict != nil {
		g.releaseLocked(evict)
	}
	c := &gatedConn{Conn: raw, g: g, started: now, state: inHandshake}
	c.elem = g.pending.PushBack(c)
	g.total++
	g.mu.Unlock()
	if evict != nil {
		g.closeFor(evict, msg, limit, remote)
	}
	return c
}

// isAnonymous reports whether c is past its handshake without an identity.
func isAnonymous(c *gatedConn) bool { return c.state == anonymous }

// idleLocked returns the connection that has been idle longest of those
// for which in reports true, or nil.
func (g *gate) idleLocked(in func(*gatedConn) bool) *gatedConn {
	for e := g.idle.Front(); e != nil; e = e.Next() {
		if c := e.Value.(*gatedConn); in(c) {
			return c
		}
	}
	return nil
}

// closeFor closes c, which g has released to make room for a new
// connection from remote, and logs msg with the limit that was reached.
func (g *gate) closeFor(c *gatedConn, msg string, limit int, remote string) {
	args := []any{"limit", limit, "closed", c.RemoteAddr().String(), "remote", remote}
	if c.id.Bot != "" {
		args = append(args, "closed_bot", c.id.Bot, "closed_instance", c.id.Instance)
	}
	g.warn.Warn(g.log, msg, args...)
	c.Conn.Close()
}

// connState is the ConnState hook of the server that serves g: it keeps
// track of which connections wait, idle, for their next request, so that
// a new connection past a limit can close one of them instead of being
// refused.
func (g *gate) connState(nc net.Conn, state http.ConnState) {
	tc, ok := nc.(*tls.Conn)
	if !ok {
		return
	}
	c, ok := tc.NetConn().(*gatedConn)
	if !ok || c.g != g {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if c.idle != nil {
		g.idle.Remove(c.idle)
		c.idle = nil
	}
	if state == http.StateIdle && (c.state == anonymous || c.state == identified) {
		c.idle = g.idle.PushBack(c)
	}
}

// handshake completes c's TLS handshake and hands it to Accept.
func (g *gate) handshake(c *gatedConn) {
	remote := c.RemoteAddr().String()
	tc := tls.Server(c, g.tls)
	ctx, cancel := context.WithTimeout(context.Background(), g.lim.HandshakeTimeout)
	err := tc.HandshakeContext(ctx)
	timedOut := ctx.Err() != nil
	cancel()
	if err != nil {
		var verr *tls.CertificateVerificationError
		switch {
		case errors.As(err, &verr):
			if g.refused != nil {
				g.refused(remote, err)
			}
		case timedOut:
			g.warn.Warn(g.log, "connection closed: TLS handshake not done in time", "timeout", g.lim.HandshakeTimeout, "remote", remote)
		default:
			g.log.Debug("TLS handshake failed", "remote", remote, "err", err)
		}
		tc.Close()
		return
	}
	// The handshake verified any certificate against the identity
	// authority or the admin CA, so a verified chain is a bot identity or
	// an admin's. An admin is counted as a bot of its own, under a name
	// that no bot has (bot names hold no space), and held to the same
	// limits.
	who := anonymous
	var id ca.Identity
	if chains := tc.ConnectionState().VerifiedChains; len(chains) > 0 {
		who = identified
		if name, err := g.adminName(chains[0]); err == nil {
			id = ca.Identity{Bot: "admin " + name, Instance: "admin " + name}
		} else {
			// One that does not parse is refused by the handlers; it is
			// counted under the empty name meanwhile.
			id, _ = ca.ParseIdentity(chains[0][0])
		}
	}
	source := authority.SourceOf(remote)
	g.mu.Lock()
	if c.state == released {
		// Closed by Close or to make room, while finishing.
		g.mu.Unlock()
		tc.Close()
		return
	}
	// The narrowest limit reached names the kind of connection to close
	// to make room; closing one of that kind makes room under the wider
	// limits too.
	var (
		reason string
		limit  int
		in     func(*gatedConn) bool // the kind of connection to close
	)
	switch {
	case who == anonymous && g.sources[source] >= g.lim.MaxAnonymousPerSource:
		reason, limit = "too many connections without a bot identity from one address", g.lim.MaxAnonymousPerSource
		in = func(o *gatedConn) bool { return o.state == anonymous && o.source == source }
	case who == anonymous && g.anonymous >= g.lim.MaxAnonymous:
		reason, limit = "too many connections without a bot identity", g.lim.MaxAnonymous
		in = isAnonymous
	case who == identified && g.instances[id.Instance] >= g.lim.MaxPerInstance:
		reason, limit = "too many connections with one bot instance's identity", g.lim.MaxPerInstance
		in = func(o *gatedConn) bool { return o.state == identified && o.id.Instance == id.Instance }
	case who == identified && g.bots[id.Bot] >= g.lim.MaxPerBot:
		reason, limit = "too many connections of one bot", g.lim.MaxPerBot
		in = func(o *gatedConn) bool { return o.state == identified && o.id.Bot == id.Bot }
	}
	var evict *gatedConn
	if in != nil {
		if evict = g.idleLocked(in); evict == nil {
			g.releaseLocked(c)
			g.mu.Unlock()
			args := []any{"limit", limit, "remote", remote}
			if who == identified {
				args = append(args, "bot", id.Bot, "instance", id.Instance)
			}
			g.warn.Warn(g.log, "connection closed: "+reason, args...)
			tc.Close()
			return
		}
		g.releaseLocked(evict)
	}
	g.pending.Remove(c.elem)
	c.elem = nil
	c.state = who
	switch who {
	case anonymous:
		g.anonymous++
		c.source = source
		g.sources[c.source]++
	case identified:
		c.id = id
		g.bots[id.Bot]++
		g.instances[id.Instance]++
	}
	g.mu.Unlock()
	if evict != nil {
		g.closeFor(evict, "closed the longest idle connection: "+reason, limit, remote)
	}
	select {
	case g.ready <- tc:
	case <-g.done:
		tc.Close()
	}
}

// adminName returns the admin name of chain, or an error if it is not an
// admin identity.
func (g *gate) adminName(chain []*x509.Certificate) (string, error) {
	if g.admin == nil {
		return "", ca.ErrNotAdmin
	}
	return g.admin(chain)
}

func (g *gate) release(c *gatedConn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.releaseLocked(c)
}

func (g *gate) releaseLocked(c *gatedConn) {
	switch c.state {
	case released:
		return
	case inHandshake:
		g.pending.Remove(c.elem)
		c.elem = nil
	case anonymous:
		g.anonymous--
		uncount(g.sources, c.source)
	case identified:
		uncount(g.bots, c.id.Bot)
		uncount(g.instances, c.id.Instance)
	}
	if c.idle != nil {
		g.idle.Remove(c.idle)
		c.idle = nil
	}
	c.state = released
	g.total--
}

// uncount takes one from m[k], forgetting k at zero.
func uncount(m map[string]int, k string) {
	if m[k] <= 1 {
		delete(m, k)
		return
	}
	m[k]--
}

// counts returns the connections open, in their handshake, and past it
// without an identity.
func (g *gate) counts() (total, handshakes, anonymous int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.total, g.pending.Len(), g.anonymous
}

// idles returns the connections idle between requests.
func (g *gate) idles() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.idle.Len()
}
