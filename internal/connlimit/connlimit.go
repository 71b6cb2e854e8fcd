// Package connlimit bounds the connections a server on a Unix socket holds
// at once, in all and per user, so that one local caller cannot take every
// connection, file descriptor or the memory they hold. A caller the
// socket's rules refuse is refused before it is counted (a few are kept
// apart, briefly, to be told why), and the last places are kept for root
// and the server's own user.
package connlimit

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/mwi-project/mwi/internal/logging"
	"github.com/mwi-project/mwi/internal/unixsock"
)

// Default bounds: well above what a busy host opens (an Ansible controller
// with hundreds of forks, sshd asking mwictl at every login), and a user
// at its bound leaves as many to the others. The last DefaultReserved
// places are for root and the server's own user only: other users at
// their bounds cannot shut out root, sshd's AuthorizedPrincipalsCommand
// or the service's own tools.
const (
	DefaultMax      = 1024
	DefaultPerUID   = 512
	DefaultReserved = 64
)

// self is the process's effective user, which Limits keeps room for.
var self = uint32(os.Geteuid())

// Limits counts open connections by the user at the other end. The zero
// value uses the default bounds; a Limits may be shared by several
// listeners, which then share its bounds.
type Limits struct {
	// Max and PerUID bound the connections open at once, in all and for
	// one user. Zero means DefaultMax and DefaultPerUID.
	Max, PerUID int
	// Reserved is how many of the Max places only root and the process's
	// own user may take; others together have Max-Reserved. Zero means
	// DefaultReserved; a value of Max or more keeps every place for them,
	// and a negative value keeps none.
	Reserved int

	mu     sync.Mutex
	open   int
	perUID map[uint32]int
}

// bounds returns l's bounds with the defaults filled in.
func (l *Limits) bounds() (max, perUID, reserved int) {
	max, perUID, reserved = l.Max, l.PerUID, l.Reserved
	if max <= 0 {
		max = DefaultMax
	}
	if perUID <= 0 {
		perUID = DefaultPerUID
	}
	switch {
	case reserved == 0:
		reserved = DefaultReserved
	case reserved < 0:
		reserved = 0
	}
	return max, perUID, min(reserved, max)
}

// Admit counts a new connection of user uid, or says which bound it would
// exceed. Every admitted connection must be given back with Leave.
func (l *Limits) Admit(uid uint32) error {
	max, perUID, reserved := l.bounds()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open >= max {
		return fmt.Errorf("%d connections open, the most served at once", l.open)
	}
	if uid != 0 && uid != self && l.open >= max-reserved {
		return fmt.Errorf("%d connections open; the remaining %d are kept for root and uid %d", l.open, max-l.open, self)
	}
	if l.perUID[uid] >= perUID {
		return fmt.Errorf("uid %d has %d connections open, the most served at once for one user", uid, l.perUID[uid])
	}
	if l.perUID == nil {
		l.perUID = make(map[uint32]int)
	}
	l.open++
	l.perUID[uid]++
	return nil
}

// Leave gives back a connection of uid that Admit counted.
func (l *Limits) Leave(uid uint32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if l.perUID[uid]--; l.perUID[uid] <= 0 {
		delete(l.perUID, uid)
	}
}

// Open returns the number of connections counted.
func (l *Limits) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// A Listener is a Unix socket listener whose Accept returns only the
// connections that Check allows and then Limits admits (and a few that
// Check refused, to be told why: see Answer); it closes the others, and
// logs those that Limits refused at warning level, a few lines a second. The connections it
// returns are *Conn, and count until closed.
type Listener struct {
	net.Listener
	Limits *Limits
	// Check, if non-nil, decides whether the caller may use the socket at
	// all. It is called in Accept, before the connection is counted, so
	// that a caller the socket's rules refuse never holds a place: only
	// the mode of the socket's file lets it connect. A server that checks
	// each request as well (its rules may change) must still do so.
	// Check runs on the accepting goroutine and should be quick. It
	// reports its refusals itself, in the words the server uses for the
	// same refusal of a request; the Listener logs only its own.
	Check func(unixsock.Peer) error
	// Answer is how many connections that Check refused Accept may still
	// return at once, so that the server tells the caller why (an HTTP
	// server answers 403 and closes): a refused caller should learn it
	// was refused rather than find its connection gone. Such a
	// connection counts against Answer only, never against Limits, and is
	// closed AnswerTimeout after it was accepted whatever the server
	// does; Refused says why it was refused. Beyond Answer, or if it is
	// zero, a refused connection is closed at once.
	Answer int
	// Log receives the refusals, with Name as the socket's name.
	Log  *slog.Logger
	Name string

	refusals  logging.Limit
	mu        sync.Mutex
	answering int
}

// AnswerTimeout is how long a Listener keeps a refused connection that it
// returned to be told why: long enough to read a request and answer it.
const AnswerTimeout = 5 * time.Second

// Accept waits for the next connection within the limits.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		p, err := unixsock.PeerOf(c)
		if err != nil {
			l.refused(p, fmt.Errorf("the caller's credentials are unknown: %w", err))
			c.Close()
			continue
		}
		if l.Check != nil {
			if err := l.Check(p); err != nil {
				if rc := l.answer(c, p, err); rc != nil {
					return rc, nil
				}
				c.Close()
				continue
			}
		}
		if err := l.Limits.Admit(p.UID); err != nil {
			l.refused(p, err)
			c.Close()
			continue
		}
		return &Conn{Conn: c, peer: p, release: sync.OnceFunc(func() { l.Limits.Leave(p.UID) })}, nil
	}
}

// refused logs the refusal of a caller, a few lines a second.
func (l *Listener) refused(p unixsock.Peer, err error) {
	if l.Log != nil {
		l.refusals.Warn(l.Log, "connection refused", "socket", l.Name, "uid", p.UID, "pid", p.PID, "err", err)
	}
}

// answer returns c, which Check refused with err, as a Conn to be told why,
// if fewer than l.Answer such connections are open; otherwise nil.
func (l *Listener) answer(c net.Conn, p unixsock.Peer, err error) *Conn {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.answering >= l.Answer {
		return nil
	}
	l.answering++
	// The server may set deadlines of its own; this one it cannot move.
	t := time.AfterFunc(AnswerTimeout, func() { c.Close() })
	return &Conn{Conn: c, peer: p, refused: err, release: sync.OnceFunc(func() {
		t.Stop()
		l.mu.Lock()
		l.answering--
		l.mu.Unlock()
	})}
}

// Conn is a connection that a Listener admitted. Closing it gives its
// place back.
type Conn struct {
	net.Conn
	peer    unixsock.Peer
	refused error
	release func()
}

// Peer returns the caller's credentials, as Check saw them.
func (c *Conn) Peer() unixsock.Peer { return c.peer }

// Refused returns Check's error if the connection was refused and is
// returned only to be told why (see Listener.Answer); it is nil for a
// connection that Limits admitted.
func (c *Conn) Refused() error { return c.refused }

// Close closes the connection and gives its place back.
func (c *Conn) Close() error {
	defer c.release()
	return c.Conn.Close()
}

// Unwrap returns the underlying connection, for its peer credentials.
func (c *Conn) Unwrap() net.Conn { return c.Conn }
