// Package connlimit bounds the connections a server on a Unix socket holds
// at once, in all and per user, so that one local caller cannot take every
// connection, file descriptor or the memory they hold.
package connlimit

import (
	"fmt"
	"log/slog"
	"net"
	"sync"

	"github.com/mwi-project/mwi/internal/logging"
	"github.com/mwi-project/mwi/internal/unixsock"
)

// Default bounds: well above what a busy host opens (an Ansible controller
// with hundreds of forks, sshd asking mwictl at every login), and a user
// at its bound leaves as many to the others.
const (
	DefaultMax    = 1024
	DefaultPerUID = 512
)

// Limits counts open connections by the user at the other end. The zero
// value uses the default bounds; a Limits may be shared by several
// listeners, which then share its bounds.
type Limits struct {
	// Max and PerUID bound the connections open at once, in all and for
	// one user. Zero means DefaultMax and DefaultPerUID.
	Max, PerUID int

	mu     sync.Mutex
	open   int
	perUID map[uint32]int
}

// Admit counts a new connection of user uid, or says which bound it would
// exceed. Every admitted connection must be given back with Leave.
func (l *Limits) Admit(uid uint32) error {
	max, perUID := l.Max, l.PerUID
	if max <= 0 {
		max = DefaultMax
	}
	if perUID <= 0 {
		perUID = DefaultPerUID
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open >= max {
		return fmt.Errorf("%d connections open, the most served at once", l.open)
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
// connections that Limits admits; it closes the others, and logs them at
// warning level, a few lines a second. The connections it returns are
// *Conn, and count until closed.
type Listener struct {
	net.Listener
	Limits *Limits
	// Log receives the refusals, with Name as the socket's name.
	Log  *slog.Logger
	Name string

	refusals logging.Limit
}

// Accept waits for the next connection within the limits.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		p, err := unixsock.PeerOf(c)
		if err == nil {
			err = l.Limits.Admit(p.UID)
		} else {
			err = fmt.Errorf("the caller's credentials are unknown: %w", err)
		}
		if err != nil {
			if l.Log != nil {
				l.refusals.Warn(l.Log, "connection refused", "socket", l.Name, "uid", p.UID, "pid", p.PID, "err", err)
			}
			c.Close()
			continue
		}
		return &Conn{Conn: c, release: sync.OnceFunc(func() { l.Limits.Leave(p.UID) })}, nil
	}
}

// Conn is a connection that a Listener admitted. Closing it gives its
// place back.
type Conn struct {
	net.Conn
	release func()
}

// Close closes the connection and gives its place back.
func (c *Conn) Close() error {
	defer c.release()
	return c.Conn.Close()
}

// Unwrap returns the underlying connection, for its peer credentials.
func (c *Conn) Unwrap() net.Conn { return c.Conn }
