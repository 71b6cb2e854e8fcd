// Package diag holds what mwid's and mwi-issuer's diagnostics listeners
// share: the check of the address they listen on, the listener, its
// routes and its server.
//
// A diagnostics listener serves /livez, /readyz and /metrics over plain
// HTTP without authentication, for the machine's own Prometheus and
// probes; it is off unless an address is given.
package diag

import (
	"fmt"
	"net"
	"sync"
)

// CheckAddr refuses a listen address that is not HOST:PORT, and one whose
// host is not a loopback address (an IP literal, or "localhost") unless
// allowRemote: what the listener tells (versions, credentials' expiry,
// refusals) is for the machine itself. allowFlag names how to allow
// another address, for the message.
func CheckAddr(addr string, allowRemote bool, allowFlag string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: want HOST:PORT, such as 127.0.0.1:9090: %v", addr, err)
	}
	if allowRemote || host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%q is not a loopback address: its metrics and health have no authentication; "+
		"use 127.0.0.1:PORT, or allow other addresses explicitly (%s)", addr, allowFlag)
}

// MaxConns bounds the connections a diagnostics listener serves at once:
// a Prometheus and a few probes need a handful, and anyone on the machine
// can connect.
const MaxConns = 32

// Listen listens on the TCP address addr and serves at most max
// connections at once: Accept waits while max are open.
//
// Unless allowRemote, the address the listener is bound to must be a
// loopback address, whatever addr's host resolved to: CheckAddr lets
// "localhost" through, which the system resolves, through /etc/hosts or,
// where the hosts file is not consulted, through DNS and its search
// domains, possibly to an address other machines reach.
func Listen(addr string, max int, allowRemote bool) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	if err := checkBound(addr, ln.Addr(), allowRemote); err != nil {
		ln.Close()
		return nil, err
	}
	return &limitListener{Listener: ln, sem: make(chan struct{}, max), done: make(chan struct{})}, nil
}

// checkBound refuses the address bound, for the address addr given, if
// it is not a loopback address, unless allowRemote.
func checkBound(addr string, bound net.Addr, allowRemote bool) error {
	if a, ok := bound.(*net.TCPAddr); allowRemote || ok && a.IP.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%q: the listener is bound to %s, not a loopback address: its metrics and health have no authentication", addr, bound)
}

type limitListener struct {
	net.Listener
	sem       chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// limitConn gives its place back once, when it is closed.
type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
