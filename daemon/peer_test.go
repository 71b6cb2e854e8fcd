package daemon

import (
	"os"
	"testing"

	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/internal/unixsock"
)

func TestAllowed(t *testing.T) {
	self := uint32(os.Geteuid())
	tests := []struct {
		name string
		sock config.Socket
		peer unixsock.Peer
		ok   bool
	}{
		{"root", config.Socket{Group: -1}, unixsock.Peer{UID: 0, GID: 0}, true},
		{"mwid's own user", config.Socket{Group: -1}, unixsock.Peer{UID: self, GID: 12345}, true},
		{"a stranger", config.Socket{Group: -1}, unixsock.Peer{UID: 4242, GID: 4242}, false},
		{"the socket's group alone is not enough", config.Socket{Group: 4242}, unixsock.Peer{UID: 4242, GID: 4242}, false},
		{"allowed user", config.Socket{Group: -1, AllowUIDs: []uint32{4242}}, unixsock.Peer{UID: 4242, GID: 1}, true},
		{"allowed primary group", config.Socket{Group: -1, AllowGIDs: []uint32{777}}, unixsock.Peer{UID: 4242, GID: 777}, true},
		{"other group", config.Socket{Group: -1, AllowGIDs: []uint32{777}}, unixsock.Peer{UID: 4242, GID: 778}, false},
	}
	for _, tt := range tests {
		if tt.peer.UID == self && self == 0 && tt.name != "root" {
			continue // running as root, mwid's user is root
		}
		err := allowed(tt.sock, tt.peer)
		if (err == nil) != tt.ok {
			t.Errorf("%s: allowed = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}
