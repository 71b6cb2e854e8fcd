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
		{"0.0.0.0:9443", true, ""},
		{"9443", true, "want HOST:PORT"},
	} {
		err := CheckAddr(tc.addr, tc.allowRemote, "--allow")
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("CheckAddr(%q, %v) = %v, want %q", tc.addr, tc.allowRemote, err, tc.wantErr)
		}
	}
}

// TestListenBounds checks that a listener holding max connections
// accepts the next one only once one of them closes.
func TestListenBounds(t *testing.T) {
	ln, err := Listen("127.0.0.1:0", 2)
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
