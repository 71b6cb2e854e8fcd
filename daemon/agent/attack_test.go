package agent

import (
	"crypto/rand"
	"log/slog"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	sshagent "golang.org/x/crypto/ssh/agent"

	"github.com/mwi-project/mwi/internal/logtest"
	"github.com/mwi-project/mwi/internal/sshaccess"
)

// attackHost returns a host key signer whose certificate, signed by ca,
// edit has changed.
func attackHost(t *testing.T, ca ssh.Signer, edit func(*ssh.Certificate)) ssh.Signer {
	t.Helper()
	key := newCA(t)
	cert := &ssh.Certificate{
		Key: key.PublicKey(), Serial: serial.Add(1), CertType: ssh.HostCert, KeyId: "host",
		ValidPrincipals: []string{"host.example"}, ValidAfter: t0 - 60, ValidBefore: t0 + 3600,
		Permissions: ssh.Permissions{Extensions: map[string]string{sshaccess.LabelsExtension: `{"env":"staging"}`}},
	}
	edit(cert)
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewCertSigner(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestSessionAttacks tries, over a real agent connection, binds and sign
// requests that a process with the socket (a stolen or forwarded agent)
// might send to get a signature for a host or login the bot's roles do
// not allow. Each must be refused; the last case checks that the same
// connection still signs for the allowed host, so that the refusals are
// not an accident of setup.
func TestSessionAttacks(t *testing.T) {
	userCA, hostCA := newCA(t), newCA(t)
	id := withAccess(t, userCA, newIdentity(t, userCA, "bot=ci instance=i-1", t0-60, t0+3600), stagingAccess(false))
	staging := newHost(t, hostCA, map[string]string{"env": "staging"}, t0-60, t0+3600)
	sid := newSID()
	forged := func() []byte {
		// staging's key and certificate, but the session signed by another key.
		sig, _ := newCA(t).Sign(rand.Reader, sid)
		return ssh.Marshal(sessionBind{HostKey: staging.PublicKey().Marshal(), SessionID: sid, Signature: ssh.Marshal(sig)})
	}
	userauth := func(user, service, method string, extra ...byte) []byte {
		b := ssh.Marshal(struct {
			SessionID             []byte
			Msg                   byte
			User, Service, Method string
			Sign                  bool
			Algo                  string
			Key                   []byte
		}{sid, 50, user, service, method, true, id.Cert.Type(), id.Cert.Marshal()})
		return append(b, extra...)
	}
	type step struct {
		bind    []byte // a raw session-bind payload, or nil
		refused bool   // whether the bind is refused
	}
	tests := []struct {
		name  string
		binds []step
		data  []byte // nil: userauth as deploy in sid
		flags sshagent.SignatureFlags
		want  string // "": signed
	}{
		{name: "forged bind signature", binds: []step{{bind: forged(), refused: true}}, want: "no session-bind"},
		{name: "host certificate signed by the user CA",
			binds: []step{{bind: sessionBindPayload(t, attackHost(t, userCA, func(*ssh.Certificate) {}), sid, false)}}, want: "not by the issuer's host CA"},
		{name: "user certificate as host key",
			binds: []step{{bind: sessionBindPayload(t, attackHost(t, hostCA, func(c *ssh.Certificate) { c.CertType = ssh.UserCert }), sid, false)}}, want: "not a host certificate"},
		{name: "host certificate not yet valid",
			binds: []step{{bind: sessionBindPayload(t, attackHost(t, hostCA, func(c *ssh.Certificate) { c.ValidAfter = t0 + 60 }), sid, false)}}, want: "not now"},
		{name: "host certificate with critical options",
			binds: []step{{bind: sessionBindPayload(t, attackHost(t, hostCA, func(c *ssh.Certificate) { c.CriticalOptions = map[string]string{"force-command": "x"} }), sid, false)}}, want: "critical options"},
		{name: "host certificate with malformed labels",
			binds: []step{{bind: sessionBindPayload(t, attackHost(t, hostCA, func(c *ssh.Certificate) { c.Extensions[sshaccess.LabelsExtension] = `{"env":1}` }), sid, false)}}, want: "labels"},
		{name: "host certificate with huge labels",
			binds: []step{{bind: sessionBindPayload(t, attackHost(t, hostCA, func(c *ssh.Certificate) {
				c.Extensions[sshaccess.LabelsExtension] = `{"env":"staging","x":"` + strings.Repeat("x", 70<<10) + `"}`
			}), sid, false)}}, want: "bytes long"},
		{name: "empty session id", binds: []step{{bind: sessionBindPayload(t, staging, []byte{}, false), refused: true}}, want: "no session-bind"},
		{name: "session id too long", binds: []step{{bind: sessionBindPayload(t, staging, make([]byte, 129), false), refused: true}}, want: "no session-bind"},
		{name: "bind with trailing bytes", binds: []step{{bind: append(sessionBindPayload(t, staging, sid, false), 0), refused: true}}, want: "no session-bind"},
		{name: "more binds than the cap", binds: func() []step {
			var s []step
			for i := 0; i < maxBinds; i++ {
				s = append(s, step{bind: sessionBindPayload(t, staging, newSID(), true)})
			}
			return append(s, step{bind: sessionBindPayload(t, staging, sid, true), refused: true})
		}(), want: "another session"},
		{name: "method none", binds: []step{{bind: sessionBindPayload(t, staging, sid, false)}}, data: userauth("deploy", "ssh-connection", "none"), want: "not an SSH userauth request"},
		{name: "method hostbased", binds: []step{{bind: sessionBindPayload(t, staging, sid, false)}}, data: userauth("deploy", "ssh-connection", "hostbased"), want: "not an SSH userauth request"},
		{name: "other service", binds: []step{{bind: sessionBindPayload(t, staging, sid, false)}}, data: userauth("deploy", "ssh-userauth", "publickey"), want: "not an SSH userauth request"},
		{name: "trailing bytes", binds: []step{{bind: sessionBindPayload(t, staging, sid, false)}}, data: userauth("deploy", "ssh-connection", "publickey", 0), want: "not an SSH userauth request"},
		{name: "hostbound with an empty host key", binds: []step{{bind: sessionBindPayload(t, staging, sid, false)}},
			data: userauth("deploy", "ssh-connection", methodHostbound, 0, 0, 0, 0), want: "names another host key"},
		{name: "login with a NUL", binds: []step{{bind: sessionBindPayload(t, staging, sid, false)}}, data: userauth("deploy\x00", "ssh-connection", "publickey"), want: "allows login"},
		{name: "allowed, with flags", binds: []step{{bind: sessionBindPayload(t, staging, sid, false)}}, flags: sshagent.SignatureFlagRsaSha512},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newSource(id)
			src.setHostCAs(hostCA.PublicKey())
			a := New(src, newClock(t0).now)
			var log logtest.Buffer
			a.Log = slog.New(slog.NewTextHandler(&log, nil))
			client := dial(t, serveAgent(t, a))
			for i, b := range tt.binds {
				if _, err := client.Extension(SessionBindExtension, b.bind); b.refused != (err != nil) {
					t.Fatalf("bind %d: error %v, want refused %v", i, err, b.refused)
				}
			}
			data := tt.data
			if data == nil {
				data = userauthData(sid, "deploy", id.Cert, nil)
			}
			_, err := client.SignWithFlags(id.Cert, data, tt.flags)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v\n%s", err, log.String())
			case tt.want != "" && err == nil:
				t.Fatalf("signed; want refused with %q", tt.want)
			case tt.want != "" && !strings.Contains(log.String(), tt.want):
				t.Errorf("log does not name %q:\n%s", tt.want, log.String())
			}
		})
	}
}
