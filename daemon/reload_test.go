package daemon

import (
	"testing"

	"github.com/mwi-project/mwi/daemon/config"
)

// TestIssuerChanged checks that a change to the issuer's addresses is a
// move, which a renewal at the new addresses handles, and that new trust
// takes a new join.
func TestIssuerChanged(t *testing.T) {
	one := config.Issuer{Address: "a:1", CAPins: []string{"p"}}
	two := config.Issuer{Addresses: []string{"a:1", "b:1"}, CAPins: []string{"p"}}
	swapped := config.Issuer{Addresses: []string{"b:1", "a:1"}, CAPins: []string{"p"}}
	sameAsOne := config.Issuer{Addresses: []string{"a:1"}, CAPins: []string{"p"}}
	newTrust := config.Issuer{Addresses: []string{"a:1", "b:1"}, CAPins: []string{"q"}}
	tests := []struct {
		name          string
		old, next     config.Issuer
		moved, rejoin bool
	}{
		{"same", two, two, false, false},
		{"address to addresses", one, two, true, false},
		{"addresses reordered", two, swapped, true, false},
		{"one address either way", one, sameAsOne, false, false},
		{"new trust", two, newTrust, false, true},
	}
	for _, tt := range tests {
		moved, rejoin := issuerChanged(&config.Config{Issuer: tt.old}, &config.Config{Issuer: tt.next})
		if moved != tt.moved || rejoin != tt.rejoin {
			t.Errorf("%s: moved, rejoin = %v, %v; want %v, %v", tt.name, moved, rejoin, tt.moved, tt.rejoin)
		}
	}
}
