package agent

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	sshagent "golang.org/x/crypto/ssh/agent"

	"github.com/mwi-project/mwi/internal/connlimit"
	"github.com/mwi-project/mwi/internal/logging"
	"github.com/mwi-project/mwi/internal/unixsock"
)

// Limits of a Server. A request is one frame of the agent protocol: a
// four-byte length and that many bytes.
const (
	// MaxRequest is the largest request a Server reads, as in OpenSSH's
	// ssh-agent (AGENT_MAX_LEN). x/crypto's ServeAgent trusts a length of
	// up to 16 MiB and allocates it before the bytes arrive; a Server
	// refuses a larger length before ServeAgent sees it, and closes the
	// connection.
	MaxRequest = 256 << 10

	// LargeRequest is the size up to which a request is read on any
	// connection. Sign requests and session bindings are a few KiB; only
	// keys to add, which this agent refuses anyway, come near MaxRequest.
	// Requests larger than LargeRequest take one of largeSlots, so that
	// all connections together hold at most largeSlots × MaxRequest of
	// them; when none is free, the connection is closed.
	LargeRequest = 16 << 10
	largeSlots   = 16

	// DefaultRequestTimeout bounds a request from its first byte to the
	// end of the reply: see Server.RequestTimeout.
	DefaultRequestTimeout = 10 * time.Second
)

// A Server serves an agent over the SSH agent protocol on the connections
// accepted from a Unix socket, typically the one named by SSH_AUTH_SOCK.
type Server struct {
	// Agent answers the requests. It must be set; it is usually an *Agent.
	// If it is a ConnAgent, each connection is served by the agent its
	// ForConn returns for the connection's peer.
	Agent sshagent.Agent

	// Check, if non-nil, decides whether the process at the other end of
	// a connection may use the agent. It is called once for each accepted
	// connection, with the peer's credentials as the kernel recorded them
	// when it connected, before the connection counts against Limits: an
	// error closes it at once, so that a caller refused by policy never
	// holds a place. The function it returns, if non-nil, is called before
	// each request on that connection and an error closes it: this is how
	// a change of policy (a reload that narrows who is allowed) reaches
	// the connections already open. Check runs on the accepting goroutine
	// and should be quick; the function it returns runs for every request
	// and must be cheap.
	Check func(p unixsock.Peer) (recheck func() error, err error)

	// Limits bounds the connections served at once, in all and per user,
	// across every listener the Server serves; a connection beyond them
	// is closed unserved. If nil, the Server has its own, with
	// connlimit's default bounds (which keep the last places for root
	// and the process's own user).
	Limits *connlimit.Limits

	// RequestTimeout bounds each request from its first byte to the end
	// of its reply, so that a client cannot hold a connection (and the
	// memory of its request) in the middle of a request; the connection
	// is closed when it passes. A connection may stay idle between
	// requests for as long as it likes. Zero means DefaultRequestTimeout.
	RequestTimeout time.Duration

	// Log receives refused connections and connections that end in a
	// protocol error, at most a few lines a second. If nil, slog.Default()
	// is used.
	Log *slog.Logger

	nextID atomic.Uint64

	initOnce sync.Once
	large    chan struct{} // a token for each large request being read
	limits   *connlimit.Limits
	warnings logging.Limit
}

func (s *Server) init() {
	s.initOnce.Do(func() {
		s.large = make(chan struct{}, largeSlots)
		s.limits = s.Limits
		if s.limits == nil {
			s.limits = new(connlimit.Limits)
		}
	})
}

func (s *Server) logger() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

// warn logs a line at warning level unless too many were logged in the
// last second: connecting is free, and every refusal would otherwise be a
// line in the journal. The next line logged says how many were dropped.
func (s *Server) warn(msg string, args ...any) {
	s.warnings.Warn(s.logger(), msg, args...)
}

// Serve accepts connections on ln and serves each on its own goroutine
// until ctx is cancelled. It then closes ln and every open connection,
// waits for their goroutines to finish, and returns nil.
//
// A malformed request ends only the connection it arrived on. If accepting
// fails for a reason other than cancellation or a transient shortage of
// file descriptors, Serve shuts down the same way and returns the error.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.Agent == nil {
		ln.Close()
		return errors.New("agent: Server.Agent is nil")
	}
	s.init()
	log := s.logger()
	// The listener checks and counts each connection before Accept
	// returns it, on this goroutine: recheck is that of the connection
	// Accept returned last.
	var recheck func() error
	ln = &connlimit.Listener{Listener: ln, Limits: s.limits, Log: log, Name: "agent",
		Check: func(p unixsock.Peer) error {
			recheck = nil
			if s.Check == nil {
				return nil
			}
			var err error
			if recheck, err = s.Check(p); err != nil {
				s.warn("agent: connection refused", "uid", p.UID, "pid", p.PID, "err", err)
			}
			return err
		}}

	var (
		mu     sync.Mutex
		conns  = make(map[net.Conn]struct{})
		closed bool
		wg     sync.WaitGroup
	)
	// Closing the listener is what unblocks Accept, and closing the
	// connections is what unblocks the goroutines reading from them.
	shutdown := sync.OnceFunc(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		closed = true
		for c := range conns {
			c.Close()
		}
	})
	stop := context.AfterFunc(ctx, shutdown)
	defer func() {
		stop()
		shutdown()
		wg.Wait()
	}()

	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if temporary(err) {
				// Running out of descriptors is usually brief (clients
				// come and go); back off rather than spin or give up,
				// as net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				log.Warn("agent: accept failed; retrying", "err", err, "delay", backoff)
				select {
				case <-time.After(backoff):
				case <-ctx.Done():
				}
				continue
			}
			return fmt.Errorf("agent: accept: %w", err)
		}
		backoff = 0
		// c's own: the next Accept sets recheck anew.
		p, recheck := c.(*connlimit.Conn).Peer(), recheck

		mu.Lock()
		if closed {
			mu.Unlock()
			c.Close()
			continue
		}
		conns[c] = struct{}{}
		wg.Add(1)
		mu.Unlock()

		go func() {
			defer wg.Done()
			defer func() {
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
				c.Close() // gives its place back
			}()
			s.serveConn(ctx, c, p, recheck)
		}()
	}
}

// serveConn serves one connection until the client hangs up, sends
// something the protocol cannot frame, or the server shuts down.
func (s *Server) serveConn(ctx context.Context, c net.Conn, p unixsock.Peer, recheck func() error) {
	id := s.nextID.Add(1)
	defer func() {
		// The daemon holds the keys in memory only; a panic provoked by
		// one client must not take them (and every other client) down.
		if r := recover(); r != nil {
			s.logger().Error("agent: panic serving connection", "conn", id, "uid", p.UID, "pid", p.PID,
				"panic", r, "stack", string(debug.Stack()))
		}
	}()

	fc := &frameConn{Conn: c, recheck: recheck, large: s.large, timeout: s.RequestTimeout}
	if fc.timeout <= 0 {
		fc.timeout = DefaultRequestTimeout
	}
	defer fc.release()

	a := s.Agent
	if ca, ok := a.(ConnAgent); ok {
		a = ca.ForConn(p)
	}
	err := sshagent.ServeAgent(a, fc)
	if err == nil || ctx.Err() != nil || hangup(err) {
		return
	}
	s.warn("agent: connection dropped", "conn", id, "uid", p.UID, "pid", p.PID, "err", err)
}

// frameConn is a connection as ServeAgent reads it, with the frames'
// bounds enforced. ServeAgent reads a frame as io.ReadFull of its 4-byte
// length, then io.ReadFull of that many bytes; frameConn keeps every read
// within the part being read, so it sees each length whole before
// ServeAgent does, and refuses one it would not serve. It refuses by
// returning fewer bytes than ServeAgent asked for, with an error, so that
// ServeAgent returns that error without allocating.
type frameConn struct {
	net.Conn
	recheck func() error  // before each request; may be nil
	large   chan struct{} // the Server's large request slots
	timeout time.Duration // for each request

	hdr      [4]byte
	hn       int    // bytes of the current length read so far
	left     uint32 // bytes of the current request not yet read
	timed    bool   // a deadline is set for the request under way
	holdsBig bool   // a large request slot is held
}

// Errors that end a connection.
var (
	errTooLarge  = fmt.Errorf("agent: request larger than %d bytes", MaxRequest)
	errLargeBusy = fmt.Errorf("agent: too many requests larger than %d bytes at once", LargeRequest)
)

func (f *frameConn) Read(p []byte) (int, error) {
	if f.left > 0 {
		if uint32(len(p)) > f.left {
			p = p[:f.left]
		}
		n, err := f.Conn.Read(p)
		f.left -= uint32(n)
		return n, err
	}
	if f.hn == 0 {
		// Between requests: the last one is answered, and the next may
		// be long in coming.
		f.release()
	}
	if len(p) > len(f.hdr)-f.hn {
		p = p[:len(f.hdr)-f.hn]
	}
	n, err := f.Conn.Read(p)
	if n == 0 {
		return n, err
	}
	if !f.timed {
		// The first byte of a request: the rest, and the reply, must
		// follow in time.
		f.Conn.SetDeadline(time.Now().Add(f.timeout))
		f.timed = true
	}
	copy(f.hdr[f.hn:], p[:n])
	if f.hn += n; f.hn < len(f.hdr) {
		return n, err
	}
	f.hn = 0
	l := binary.BigEndian.Uint32(f.hdr[:])
	if err := f.admit(l); err != nil {
		return 0, err
	}
	f.left = l
	return n, err
}

// admit decides whether to read a request of l bytes.
func (f *frameConn) admit(l uint32) error {
	if l > MaxRequest {
		return fmt.Errorf("%w: %d bytes announced", errTooLarge, l)
	}
	if f.recheck != nil {
		if err := f.recheck(); err != nil {
			return err
		}
	}
	if l > LargeRequest {
		select {
		case f.large <- struct{}{}:
			f.holdsBig = true
		default:
			return errLargeBusy
		}
	}
	return nil
}

// release ends the request under way: its deadline, and its large request
// slot. ServeAgent no longer holds the request's bytes once it asks for
// the next one.
func (f *frameConn) release() {
	if f.timed {
		f.Conn.SetDeadline(time.Time{})
		f.timed = false
	}
	if f.holdsBig {
		<-f.large
		f.holdsBig = false
	}
}

// hangup reports whether err is the normal end of a connection rather
// than a protocol error worth logging.
func hangup(err error) bool {
	return errors.Is(err, io.EOF) ||
		errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE)
}

// temporary reports whether an Accept error is worth retrying.
func temporary(err error) bool {
	return errors.Is(err, syscall.EMFILE) ||
		errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) ||
		errors.Is(err, syscall.ENOMEM) ||
		errors.Is(err, syscall.ECONNABORTED)
}
