package config

import (
	"strings"
	"testing"
)

// TestDiag checks diag_addr and diag_allow_remote: off by default, a
// loopback HOST:PORT unless other addresses are allowed explicitly.
func TestDiag(t *testing.T) {
	for _, tt := range []struct {
		yaml    string
		want    Diag
		wantErr string
	}{
		{"", Diag{}, ""},
		{"diag_addr: 127.0.0.1:3001\n", Diag{Addr: "127.0.0.1:3001"}, ""},
		{"diag_addr: '[::1]:3001'\n", Diag{Addr: "[::1]:3001"}, ""},
		{"diag_addr: localhost:3001\n", Diag{Addr: "localhost:3001"}, ""},
		{"diag_addr: 0.0.0.0:3001\ndiag_allow_remote: true\n", Diag{Addr: "0.0.0.0:3001", AllowRemote: true}, ""},
		{"diag_addr: 0.0.0.0:3001\n", Diag{}, `mwid.yaml:21: diag_addr: "0.0.0.0:3001" is not a loopback address`},
		{"diag_addr: :3001\n", Diag{}, "is not a loopback address"},
		{"diag_addr: 3001\n", Diag{}, `diag_addr: "3001": want HOST:PORT`},
		{"diag_allow_remote: true\n", Diag{}, "diag_allow_remote: set without diag_addr"},
	} {
		c, err := Parse("mwid.yaml", []byte(valid+tt.yaml))
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q: error %v, want %q", tt.yaml, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", tt.yaml, err)
		}
		if c.Diag != tt.want {
			t.Errorf("%q: Diag = %+v, want %+v", tt.yaml, c.Diag, tt.want)
		}
	}
}
