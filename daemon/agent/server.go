package agent

import (
	"context"
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
)

// A Server serves an agent over the SSH agent protocol on the connections
// accepted from a listener, typically a Unix socket named by SSH_AUTH_SOCK.
type Server struct {
	// Agent answers the requests. It must be set; it is usually an *Agent.
	Agent sshagent.Agent

	// Check, if non-nil, is called once for each accepted connection
	// before any request is read from it, for example to check the
	// peer's credentials. If it returns an error the connection is
	// logged and closed unserved. It runs on the connection's own
	// goroutine, so a slow Check does not delay other clients.
	Check func(c net.Conn) error

	// Log receives refused connections and connections that end in a
	// protocol error. If nil, slog.Default() is used.
	Log *slog.Logger

	nextID atomic.Uint64
}

func (s *Server) logger() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
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
	log := s.logger()

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
				c.Close()
			}()
			s.serveConn(ctx, c, log)
		}()
	}
}

// serveConn serves one connection until the client hangs up, sends
// something the protocol cannot frame, or the server shuts down.
func (s *Server) serveConn(ctx context.Context, c net.Conn, log *slog.Logger) {
	id := s.nextID.Add(1)
	defer func() {
		// The daemon holds the keys in memory only; a panic provoked by
		// one client must not take them (and every other client) down.
		if r := recover(); r != nil {
			log.Error("agent: panic serving connection", "conn", id, "panic", r, "stack", string(debug.Stack()))
		}
	}()

	if s.Check != nil {
		if err := s.Check(c); err != nil {
			log.Warn("agent: connection refused", "conn", id, "err", err)
			return
		}
	}

	err := sshagent.ServeAgent(s.Agent, c)
	if err == nil || ctx.Err() != nil || hangup(err) {
		return
	}
	log.Warn("agent: connection dropped", "conn", id, "err", err)
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
