package daemon

import "testing"

func TestQuote(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/run/mwi/agent.sock", "/run/mwi/agent.sock"},
		{"/run/mwi 1/agent.sock", `"/run/mwi 1/agent.sock"`},
		{"/run/100%d/agent.sock", `"/run/100%%d/agent.sock"`}, // not ssh's %d token
		{"/x\nHost *", `"/x\nHost *"`},                        // no new line of config
	}
	for _, tt := range tests {
		if got := quote(tt.in); got != tt.want {
			t.Errorf("quote(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}
