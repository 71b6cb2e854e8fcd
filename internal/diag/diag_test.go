package diag

import (
	"net"
	"strings"
	"testing"
	"time"
)

func TestCheckAddr(t *testing.T) {
	for _, tc := range []struct {
		addr        string
		allowRemote bool
		wantErr     string
	}{
		{"127.0.0.1:9443", false, ""},
		{"[::1]:9443", false, ""},
		{"localhost:9443", false, ""},
		{"0.0.0.0:9443", false, "not a loopback address"},
		{"[::]:9443", false, "not a loopback address"},
		{":9443", false, "not a loopback address"},
		{"host.example:9443", false, "not a loopback address"},
		// Other spellings: only IP literals are parsed, so nothing the
		// resolver would read differently gets through.
		{"127.1:9443", false, "not a loopback address"},
		{"0:9443", false, "not a loopback address"},
		{"localhost.:9443", false, "not a loopback address"},
		{"127.0.0.1.nip.io:9443", false, "not a loopback address"},
		{"[::ffff:0.0.0.0]:9443", false, "not a loopback address"},
		{"[::ffff:10.0.0.1]:9443", false, "not a loopback address"},
		{"[fe80::1%lo]:9443", false, "not a loopback address"},
		{"[::ffff:127.0.0.1]:9443", false, ""},
		{"[0:0:0:0:0:0:0:1]:9443", false, ""},
		{"127.0.0.2:9443", false, ""},
		{"127.0.0.2:0", false, ""},
		{"192.0.2.10:9443", false, "not a loopback address"},
		{"0.0.0.0:9443", true, ""},
		{"9443", false, "want HOST:PORT"},
		{"9443", true, "want HOST:PORT"},
	} {
		err := CheckAddr(tc.addr, tc.allowRemote, "--allow")
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("CheckAddr(%q, %v) = %v, want %q", tc.addr, tc.allowRemote, err, tc.wantErr)
		}
	}
}

// TestListenLoopbackOnly checks that Listen refuses a listener bound to
// an address that is not loopback unless told to allow it, whatever the
// address given resolved to: CheckAddr lets "localhost" through, and the
// system may resolve it elsewhere. (The check of the bound address is
// tested alone, so that no test listens beyond loopback.)
func TestListenLoopbackOnly(t *testing.T) {
	for _, tc := range []struct {
		bound       net.IP
		allowRemote bool
		ok          bool
	}{
		{net.ParseIP("127.0.0.1"), false, true},
		{net.ParseIP("::1"), false, true},
		{net.ParseIP("::ffff:127.0.0.1"), false, true},
		{net.ParseIP("192.0.2.7"), false, false},
		{net.ParseIP("2001:db8::7"), false, false},
		{net.IPv4zero, false, false},
		{net.IPv6unspecified, false, false},
		{net.ParseIP("192.0.2.7"), true, true},
	} {
		err := checkBound("localhost:9443", &net.TCPAddr{IP: tc.bound, Port: 9443}, tc.allowRemote)
		if tc.ok != (err == nil) || err != nil && !strings.Contains(err.Error(), "not a loopback address") {
			t.Errorf("bound to %s, allowRemote %v: %v", tc.bound, tc.allowRemote, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:0", "localhost:0"} {
		ln, err := Listen(addr, 2, false)
		if err != nil {
			t.Errorf("Listen(%q): %v", addr, err)
			continue
		}
		ln.Close()
	}
}

// TestListenBounds checks that a listener holding max connections
// accepts the next one only once one of them closes.
func TestListenBounds(t *testing.T) {
	ln, err := Listen("127.0.0.1:0", 2, false)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 3)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	for range 3 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	first, second := <-accepted, <-accepted
	select {
	case <-accepted:
		t.Fatal("a third connection was accepted while two were open")
	case <-time.After(100 * time.Millisecond):
	}
	first.Close()
	first.Close() // a second Close gives back nothing more
	if c := <-accepted; c == nil {
		t.Fatal("the third connection was not accepted once one closed")
	}
	second.Close()
	ln.Close()
	for range accepted {
	}
}
