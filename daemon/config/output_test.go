package config

import (
	"reflect"
	"strings"
	"testing"

	"github.com/mwi-project/mwi/daemon/output"
)

// TestParseSSHHostOutputs: the ssh_host kind parses its own block, with
// paths relative to the file and errors at the file's lines.
func TestParseSSHHostOutputs(t *testing.T) {
	c, err := Parse("/etc/mwi/mwid.yaml", []byte(valid+"outputs:\n  - type: ssh_host\n    host_key: keys/host.pub\n    names: []\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := output.SSHHost{HostKey: "/etc/mwi/keys/host.pub", Certificate: "/etc/mwi/keys/host-cert.pub"}
	if len(c.Outputs) != 1 || !reflect.DeepEqual(c.Outputs[0], want) {
		t.Errorf("outputs = %#v, want %#v", c.Outputs, want)
	}
	for _, tc := range []struct{ outputs, want string }{
		{"  - type: ssh_host\n", "mwid.yaml:22: outputs.0.host_key: required"},
		{"  - type: ssh_host\n    host_key: /k.pub\n    certificate: /k.pub\n", "mwid.yaml:24: outputs.0.certificate: must differ from host_key"},
		{"  - type: ssh_host\n    host_key: /k.pub\n    name: [a]\n", `mwid.yaml:24: unknown field "name"`},
		{"  - type: ssh_host\n    host_key: /k.pub\n    names: a\n", `mwid.yaml:24: outputs.0.names must be a list, not the value "a"`},
		{"  - host_key: /k.pub\n", "mwid.yaml:22: outputs.0.type: required (ssh_host, kubernetes or identity)"},
		{"  - ssh_host\n", "mwid.yaml:22: outputs.0: want a mapping"},
	} {
		_, err := Parse("/etc/mwi/mwid.yaml", []byte(valid+"outputs:\n"+tc.outputs))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("outputs\n%s: Parse error = %v, want it to contain %q", tc.outputs, err, tc.want)
		}
	}
}
