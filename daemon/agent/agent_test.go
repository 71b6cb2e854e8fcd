package agent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	sshagent "golang.org/x/crypto/ssh/agent"

	"github.com/mwi-project/mwi/internal/logtest"
	"github.com/mwi-project/mwi/internal/unixsock"
)

// t0 is the test clock's default time, in Unix seconds.
const t0 = 1_700_000_000

// staticSource is a Source whose identities the test can swap, the way
// the daemon does on renewal.
type staticSource struct {
	ids     atomic.Pointer[[]Identity]
	hostCAs atomic.Pointer[[]ssh.PublicKey]
}

func newSource(ids ...Identity) *staticSource {
	s := new(staticSource)
	s.set(ids...)
	return s
}

func (s *staticSource) set(ids ...Identity) { s.ids.Store(&ids) }

func (s *staticSource) Identities() []Identity { return *s.ids.Load() }

func (s *staticSource) setHostCAs(cas ...ssh.PublicKey) { s.hostCAs.Store(&cas) }

func (s *staticSource) HostCAs() []ssh.PublicKey {
	if p := s.hostCAs.Load(); p != nil {
		return *p
	}
	return nil
}

// newUnbound returns an Agent that signs on connections without a
// session bind, as agents without destination checks do: for the tests
// of signing itself, whose clients bind no session.
func newUnbound(src Source, now func() time.Time) *Agent {
	a := New(src, now)
	a.SetAllowUnbound(true)
	return a
}

// clock is a settable time source, so expiry is tested without sleeping.
type clock struct{ unix atomic.Int64 }

func newClock(unix int64) *clock {
	c := new(clock)
	c.unix.Store(unix)
	return c
}

func (c *clock) now() time.Time { return time.Unix(c.unix.Load(), 0) }

func newCA(t testing.TB) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

var serial atomic.Uint64

// newIdentity returns an ed25519 identity whose certificate, signed by ca,
// is valid over [after, before).
func newIdentity(t testing.TB, ca ssh.Signer, keyID string, after, before uint64) Identity {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return certify(t, ca, signer, keyID, after, before)
}

func certify(t testing.TB, ca, signer ssh.Signer, keyID string, after, before uint64) Identity {
	t.Helper()
	cert := &ssh.Certificate{
		Key:             signer.PublicKey(),
		Serial:          serial.Add(1),
		CertType:        ssh.UserCert,
		KeyId:           keyID,
		ValidPrincipals: []string{"deploy"},
		ValidAfter:      after,
		ValidBefore:     before,
		Permissions: ssh.Permissions{
			Extensions: map[string]string{"permit-pty": ""},
		},
	}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	return Identity{Cert: cert, Signer: signer}
}

// socketPath returns a path for a Unix socket in a fresh temporary
// directory, falling back to a shorter directory when the test's name
// would push the path past the kernel's limit of about 108 bytes.
func socketPath(t testing.TB) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "agent.sock")
	if len(p) < 100 {
		return p
	}
	dir, err := os.MkdirTemp("", "mwiag")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "agent.sock")
}

// serve starts srv on a fresh Unix socket and returns its path. The
// server is stopped, and Serve's result checked, when the test ends.
func serve(t testing.TB, srv *Server) string {
	t.Helper()
	path := socketPath(t)
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after cancel")
		}
	})
	return path
}

// quietLog discards the server's log so expected refusals stay out of
// the test output.
func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

func serveAgent(t testing.TB, a sshagent.Agent) string {
	t.Helper()
	return serve(t, &Server{Agent: a, Log: quietLog()})
}

func dial(t testing.TB, path string) sshagent.ExtendedAgent {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return sshagent.NewClient(c)
}

func listedIDs(t *testing.T, client sshagent.Agent) []string {
	t.Helper()
	keys, err := client.List()
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	var ids []string
	for _, k := range keys {
		ids = append(ids, k.Comment)
	}
	return ids
}

func TestList(t *testing.T) {
	ca := newCA(t)
	valid := func(id string) Identity { return newIdentity(t, ca, id, t0-60, t0+3600) }
	expired := func(id string) Identity { return newIdentity(t, ca, id, t0-7200, t0-3600) }
	future := func(id string) Identity { return newIdentity(t, ca, id, t0+60, t0+3600) }

	other := valid("wrong-key")
	mismatched := valid("mismatched")
	mismatched.Signer = other.Signer

	tests := []struct {
		name string
		ids  []Identity
		want string // KeyId of the one listed identity; "" for none
	}{
		{"empty", nil, ""},
		{"newest of two valid", []Identity{valid("new"), valid("old")}, "new"},
		{"newest not yet valid", []Identity{future("new"), valid("old")}, "old"},
		{"newest expired", []Identity{expired("new"), valid("old")}, "old"},
		{"all expired", []Identity{expired("new"), expired("old")}, ""},
		{"valid forever", []Identity{newIdentity(t, ca, "forever", 0, ssh.CertTimeInfinity)}, "forever"},
		{"expires this second", []Identity{newIdentity(t, ca, "edge", t0-60, t0)}, ""},
		{"valid from this second", []Identity{newIdentity(t, ca, "edge", t0, t0+1)}, "edge"},
		{"signer does not match cert", []Identity{mismatched, valid("good")}, "good"},
		{"missing signer", []Identity{{Cert: valid("nosigner").Cert}, valid("good")}, "good"},
		{"missing cert", []Identity{{Signer: other.Signer}, valid("good")}, "good"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := New(newSource(tt.ids...), newClock(t0).now)
			keys, err := dial(t, serveAgent(t, a)).List()
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			if tt.want == "" {
				if len(keys) != 0 {
					t.Fatalf("List = %v, want no keys", keys)
				}
				return
			}
			if len(keys) != 1 {
				t.Fatalf("List returned %d keys, want 1", len(keys))
			}
			k := keys[0]
			if k.Comment != tt.want {
				t.Errorf("listed %q, want %q", k.Comment, tt.want)
			}
			var cert *ssh.Certificate
			for _, id := range tt.ids {
				if id.Cert != nil && id.Cert.KeyId == tt.want {
					cert = id.Cert
				}
			}
			if k.Format != ssh.CertAlgoED25519v01 {
				t.Errorf("Format = %q, want %q", k.Format, ssh.CertAlgoED25519v01)
			}
			if !bytes.Equal(k.Blob, cert.Marshal()) {
				t.Error("listed blob is not the certificate")
			}
		})
	}
}

// signAndVerify asks client to sign with cert and checks the signature
// against the certificate's key, as sshd would.
func signAndVerify(t *testing.T, client sshagent.Agent, key ssh.PublicKey, cert *ssh.Certificate) {
	t.Helper()
	data := make([]byte, 64)
	rand.Read(data)
	sig, err := client.Sign(key, data)
	if err != nil {
		t.Fatalf("Sign(%q): %v", cert.KeyId, err)
	}
	if sig.Format != ssh.KeyAlgoED25519 {
		t.Errorf("signature format %q, want %q", sig.Format, ssh.KeyAlgoED25519)
	}
	if err := cert.Verify(data, sig); err != nil {
		t.Errorf("signature by %q does not verify: %v", cert.KeyId, err)
	}
	data[0] ^= 1
	if err := cert.Verify(data, sig); err == nil {
		t.Errorf("signature by %q verifies for other data", cert.KeyId)
	}
}

func TestSign(t *testing.T) {
	ca := newCA(t)
	newest := newIdentity(t, ca, "newest", t0-60, t0+3600)
	previous := newIdentity(t, ca, "previous", t0-3600, t0+60)
	client := dial(t, serveAgent(t, newUnbound(newSource(newest, previous), newClock(t0).now)))

	keys, err := client.List()
	if err != nil || len(keys) != 1 {
		t.Fatalf("List = %v, %v; want one key", keys, err)
	}
	// The listed key as the client sees it, parsed from the wire.
	listed, err := ssh.ParsePublicKey(keys[0].Blob)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := listed.(*ssh.Certificate); !ok {
		t.Fatalf("listed key is %T, want *ssh.Certificate", listed)
	}
	signAndVerify(t, client, keys[0], newest.Cert)

	// A client that listed the previous certificate just before a
	// renewal can still sign with it while it is valid.
	signAndVerify(t, client, previous.Cert, previous.Cert)
}

func TestSignRefused(t *testing.T) {
	ca := newCA(t)
	held := newIdentity(t, ca, "held", t0-60, t0+3600)
	expired := newIdentity(t, ca, "expired", t0-7200, t0-1)
	future := newIdentity(t, ca, "future", t0+1, t0+3600)
	stranger := newIdentity(t, ca, "stranger", t0-60, t0+3600)
	a := New(newSource(held, expired, future), newClock(t0).now)
	client := dial(t, serveAgent(t, a))

	tests := []struct {
		name    string
		key     ssh.PublicKey
		wantErr string // from Agent itself; the client only sees a failure
	}{
		{"unknown certificate", stranger.Cert, "no certificate held"},
		{"plain key of held certificate", held.Cert.Key, "no certificate held"},
		{"expired", expired.Cert, "expired"},
		{"not yet valid", future.Cert, "not valid until"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if sig, err := client.Sign(tt.key, []byte("data")); err == nil {
				t.Fatalf("Sign over socket = %v, want error", sig)
			}
			_, err := a.Sign(tt.key, []byte("data"))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Sign error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestExpiry(t *testing.T) {
	ca := newCA(t)
	id := newIdentity(t, ca, "short", t0, t0+300)
	clk := newClock(t0 - 1)
	client := dial(t, serveAgent(t, newUnbound(newSource(id), clk.now)))
	data := []byte("challenge")

	steps := []struct {
		unix  int64
		valid bool
	}{
		{t0 - 1, false},
		{t0, true},
		{t0 + 299, true},
		{t0 + 300, false},
		{t0 + 86400, false},
	}
	for _, s := range steps {
		clk.unix.Store(s.unix)
		ids := listedIDs(t, client)
		_, err := client.Sign(id.Cert, data)
		if s.valid {
			if len(ids) != 1 || err != nil {
				t.Errorf("at %+d s: listed %v, Sign error %v; want listed and signed", s.unix-t0, ids, err)
			}
		} else if len(ids) != 0 || err == nil {
			t.Errorf("at %+d s: listed %v, Sign error %v; want neither", s.unix-t0, ids, err)
		}
	}
}

// TestRenewal swaps the source's identities under a connected client, as
// the daemon does on renewal.
func TestRenewal(t *testing.T) {
	ca := newCA(t)
	first := newIdentity(t, ca, "first", t0-60, t0+3600)
	second := newIdentity(t, ca, "second", t0-60, t0+7200)
	src := newSource(first)
	client := dial(t, serveAgent(t, newUnbound(src, newClock(t0).now)))

	if got := listedIDs(t, client); len(got) != 1 || got[0] != "first" {
		t.Fatalf("before renewal listed %v, want [first]", got)
	}
	src.set(second, first)
	if got := listedIDs(t, client); len(got) != 1 || got[0] != "second" {
		t.Fatalf("after renewal listed %v, want [second]", got)
	}
	signAndVerify(t, client, first.Cert, first.Cert)
	signAndVerify(t, client, second.Cert, second.Cert)

	src.set(second)
	if _, err := client.Sign(first.Cert, []byte("x")); err == nil {
		t.Error("Sign with a dropped identity succeeded")
	}
}

func TestSignWithFlags(t *testing.T) {
	ca := newCA(t)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaSigner, err := ssh.NewSignerFromKey(rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	rsaID := certify(t, ca, rsaSigner, "rsa", t0-60, t0+3600)
	edID := newIdentity(t, ca, "ed25519", t0-60, t0+3600)
	client := dial(t, serveAgent(t, newUnbound(newSource(rsaID, edID), newClock(t0).now)))

	tests := []struct {
		id    Identity
		flags sshagent.SignatureFlags
		want  string
	}{
		{rsaID, 0, ssh.KeyAlgoRSA},
		{rsaID, sshagent.SignatureFlagRsaSha256, ssh.KeyAlgoRSASHA256},
		{rsaID, sshagent.SignatureFlagRsaSha512, ssh.KeyAlgoRSASHA512},
		{rsaID, sshagent.SignatureFlagRsaSha256 | sshagent.SignatureFlagRsaSha512, ssh.KeyAlgoRSASHA256},
		{edID, 0, ssh.KeyAlgoED25519},
		{edID, sshagent.SignatureFlagRsaSha512, ssh.KeyAlgoED25519},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%d", tt.id.Cert.KeyId, tt.flags), func(t *testing.T) {
			data := []byte("session data")
			sig, err := client.SignWithFlags(tt.id.Cert, data, tt.flags)
			if err != nil {
				t.Fatal(err)
			}
			if sig.Format != tt.want {
				t.Errorf("Format = %q, want %q", sig.Format, tt.want)
			}
			if err := tt.id.Cert.Verify(data, sig); err != nil {
				t.Errorf("signature does not verify: %v", err)
			}
		})
	}
}

func TestSigners(t *testing.T) {
	ca := newCA(t)
	newest := newIdentity(t, ca, "newest", t0-60, t0+3600)
	expired := newIdentity(t, ca, "expired", t0-7200, t0-3600)
	previous := newIdentity(t, ca, "previous", t0-3600, t0+60)
	a := New(newSource(newest, expired, previous), newClock(t0).now)

	signers, err := a.Signers()
	if err != nil {
		t.Fatal(err)
	}
	want := []Identity{newest, previous}
	if len(signers) != len(want) {
		t.Fatalf("Signers returned %d signers, want %d", len(signers), len(want))
	}
	for i, s := range signers {
		if !bytes.Equal(s.PublicKey().Marshal(), want[i].Cert.Marshal()) {
			t.Errorf("signer %d is not certificate %q", i, want[i].Cert.KeyId)
		}
		data := []byte("data")
		sig, err := s.Sign(rand.Reader, data)
		if err != nil {
			t.Fatal(err)
		}
		if err := want[i].Cert.Verify(data, sig); err != nil {
			t.Errorf("signer %d: %v", i, err)
		}
	}
}

func TestReadOnly(t *testing.T) {
	ca := newCA(t)
	id := newIdentity(t, ca, "held", t0-60, t0+3600)
	a := newUnbound(newSource(id), newClock(t0).now)
	client := dial(t, serveAgent(t, a))

	_, extra, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ops := []struct {
		name string
		op   func(sshagent.Agent) error
	}{
		{"Add", func(ag sshagent.Agent) error { return ag.Add(sshagent.AddedKey{PrivateKey: extra}) }},
		{"Remove", func(ag sshagent.Agent) error { return ag.Remove(id.Cert) }},
		{"RemoveAll", func(ag sshagent.Agent) error { return ag.RemoveAll() }},
		{"Lock", func(ag sshagent.Agent) error { return ag.Lock([]byte("secret")) }},
		{"Unlock", func(ag sshagent.Agent) error { return ag.Unlock([]byte("secret")) }},
	}
	for _, tt := range ops {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.op(client); err == nil {
				t.Error("request over socket succeeded, want failure")
			}
			err := tt.op(a)
			if !errors.Is(err, ErrReadOnly) {
				t.Errorf("error = %v, want ErrReadOnly", err)
			}
			if msg := err.Error(); !strings.Contains(msg, "read-only") || !strings.Contains(msg, "mwid") {
				t.Errorf("error %q does not say the agent is read-only and managed by mwid", msg)
			}
		})
	}
	// Nothing changed and the agent is not locked.
	if got := listedIDs(t, client); len(got) != 1 || got[0] != "held" {
		t.Errorf("after refused requests listed %v, want [held]", got)
	}
	signAndVerify(t, client, id.Cert, id.Cert)
}

// sessionBindPayload builds a session-bind@openssh.com request as ssh
// sends it: the host key signs the session identifier.
func sessionBindPayload(t testing.TB, host ssh.Signer, sid []byte, forwarding bool) []byte {
	t.Helper()
	sig, err := host.Sign(rand.Reader, sid)
	if err != nil {
		t.Fatal(err)
	}
	return ssh.Marshal(sessionBind{
		HostKey:      host.PublicKey().Marshal(),
		SessionID:    sid,
		Signature:    ssh.Marshal(sig),
		IsForwarding: forwarding,
	})
}

func TestExtension(t *testing.T) {
	ca := newCA(t)
	a := New(newSource(newIdentity(t, ca, "held", t0-60, t0+3600)), newClock(t0).now)
	path := serveAgent(t, a)

	host := newCA(t) // any ed25519 signer will do as a host key
	sid := make([]byte, 32)
	rand.Read(sid)
	good := sessionBindPayload(t, host, sid, false)

	otherSID := bytes.Clone(sid)
	otherSID[0] ^= 1
	wrongSID := ssh.Marshal(sessionBind{
		HostKey:   host.PublicKey().Marshal(),
		SessionID: otherSID,
		Signature: mustUnmarshalBind(t, good).Signature,
	})
	wrongHost := ssh.Marshal(sessionBind{
		HostKey:   newCA(t).PublicKey().Marshal(),
		SessionID: sid,
		Signature: mustUnmarshalBind(t, good).Signature,
	})
	longSID := sessionBindPayload(t, host, make([]byte, maxSessionIDLen+1), false)

	const (
		ok         = iota
		failure    // SSH_AGENT_FAILURE: extension unsupported
		extFailure // SSH_AGENT_EXTENSION_FAILURE: request refused
	)
	const agentSuccess = 6
	tests := []struct {
		name     string
		ext      string
		contents []byte
		want     int
	}{
		{"session-bind", SessionBindExtension, good, ok},
		{"session-bind forwarding", SessionBindExtension, sessionBindPayload(t, host, sid, true), ok},
		{"session-bind empty", SessionBindExtension, nil, extFailure},
		{"session-bind truncated", SessionBindExtension, good[:len(good)-1], extFailure},
		{"session-bind trailing bytes", SessionBindExtension, append(bytes.Clone(good), 0), extFailure},
		{"session-bind garbage", SessionBindExtension, []byte("\x00\x00\x00\x05hello"), extFailure},
		{"session-bind bad host key", SessionBindExtension, ssh.Marshal(sessionBind{HostKey: []byte("junk"), SessionID: sid, Signature: []byte("x")}), extFailure},
		{"session-bind wrong session id", SessionBindExtension, wrongSID, extFailure},
		{"session-bind wrong host key", SessionBindExtension, wrongHost, extFailure},
		{"session-bind session id too long", SessionBindExtension, longSID, extFailure},
		{"unknown extension", "query", nil, failure},
		{"unknown vendor extension", "frobnicate@example.com", good, failure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A connection of its own: a connection bound for
			// authentication takes no further bind.
			res, err := dial(t, path).Extension(tt.ext, tt.contents)
			switch tt.want {
			case ok:
				if err != nil {
					t.Fatalf("Extension: %v", err)
				}
				// The whole reply must be a bare SSH_AGENT_SUCCESS.
				if !bytes.Equal(res, []byte{agentSuccess}) {
					t.Errorf("reply = %x, want SSH_AGENT_SUCCESS", res)
				}
			case failure:
				if !errors.Is(err, sshagent.ErrExtensionUnsupported) {
					t.Errorf("Extension = %x, %v; want ErrExtensionUnsupported", res, err)
				}
			case extFailure:
				if err == nil || errors.Is(err, sshagent.ErrExtensionUnsupported) {
					t.Errorf("Extension = %x, %v; want extension failure", res, err)
				}
			}
		})
	}
}

func mustUnmarshalBind(t *testing.T, b []byte) sessionBind {
	t.Helper()
	var sb sessionBind
	if err := ssh.Unmarshal(b, &sb); err != nil {
		t.Fatal(err)
	}
	return sb
}

// frame prefixes msg with its length, as the agent protocol does.
func frame(msg []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(msg))), msg...)
}

func TestMalformedClients(t *testing.T) {
	ca := newCA(t)
	a := New(newSource(newIdentity(t, ca, "held", t0-60, t0+3600)), newClock(t0).now)
	path := serveAgent(t, a)

	failure := frame([]byte{5}) // SSH_AGENT_FAILURE
	tests := []struct {
		name  string
		send  []byte
		reply []byte // expected reply; nil if the server just hangs up
	}{
		{"garbage", []byte("GET / HTTP/1.1\r\nHost: agent\r\n\r\n"), nil},
		{"zero length", []byte{0, 0, 0, 0}, nil},
		{"huge length", []byte{0xff, 0xff, 0xff, 0xff, 1, 2, 3}, nil},
		{"truncated message", append(binary.BigEndian.AppendUint32(nil, 100), 11, 0, 0), nil},
		{"truncated length", []byte{0, 0}, nil},
		{"unknown opcode", frame([]byte{200}), failure},
		{"sign request without body", frame([]byte{13}), failure},
		{"sign request with bad key", frame([]byte("\x0d\x00\x00\x00\x04junk\x00\x00\x00\x00\x00\x00\x00\x00")), failure},
		{"sign request with trailing bytes", frame([]byte("\x0d\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff")), failure},
		{"add with bad key", frame([]byte("\x11\x00\x00\x00\x04junk")), failure},
		{"extension without body", frame([]byte{27}), failure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write(tt.send); err != nil {
				t.Fatal(err)
			}
			if tt.reply != nil {
				got := make([]byte, len(tt.reply))
				if _, err := io.ReadFull(c, got); err != nil {
					t.Fatalf("reading reply: %v", err)
				}
				if !bytes.Equal(got, tt.reply) {
					t.Errorf("reply = %x, want %x", got, tt.reply)
				}
			} else {
				// Half-close so the server sees end of input after a
				// partial message, then expect it to hang up.
				c.(*net.UnixConn).CloseWrite()
				// Linux reports ECONNRESET rather than EOF when the
				// server hangs up on input it has not read.
				if n, err := io.Copy(io.Discard, c); (err != nil && !errors.Is(err, syscall.ECONNRESET)) || n != 0 {
					t.Errorf("after malformed input read %d bytes, %v; want hang-up", n, err)
				}
			}
			// The server is still there for the next client.
			if got := listedIDs(t, dial(t, path)); len(got) != 1 {
				t.Errorf("next client listed %v, want one key", got)
			}
		})
	}
}

// panicAgent panics on List, standing in for a bug reached by a
// malformed request.
type panicAgent struct{ sshagent.Agent }

func (panicAgent) List() ([]*sshagent.Key, error) { panic("boom") }

func TestPanicEndsOnlyConnection(t *testing.T) {
	var logBuf logtest.Buffer
	ca := newCA(t)
	a := newUnbound(newSource(newIdentity(t, ca, "held", t0-60, t0+3600)), newClock(t0).now)
	panicky := serve(t, &Server{Agent: panicAgent{a}, Log: slog.New(slog.NewTextHandler(&logBuf, nil))})

	if _, err := dial(t, panicky).List(); err == nil {
		t.Fatal("List on panicking agent succeeded")
	}
	// Signing goes through the embedded Agent and still works on a new
	// connection to the same server.
	signAndVerify(t, dial(t, panicky), a.src.Identities()[0].Cert, a.src.Identities()[0].Cert)
	if !strings.Contains(logBuf.String(), "boom") {
		t.Errorf("panic not logged; log:\n%s", logBuf.String())
	}
}

func TestCheck(t *testing.T) {
	ca := newCA(t)
	a := New(newSource(newIdentity(t, ca, "held", t0-60, t0+3600)), newClock(t0).now)

	var logBuf logtest.Buffer
	var checked atomic.Int32
	var refuse atomic.Bool
	refuse.Store(true)
	srv := &Server{
		Agent: a,
		Check: func(p unixsock.Peer) (func() error, error) {
			checked.Add(1)
			if refuse.Load() {
				return nil, errors.New("peer uid 1234 not allowed")
			}
			return nil, nil
		},
		Log: slog.New(slog.NewTextHandler(&logBuf, nil)),
	}
	path := serve(t, srv)

	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := sshagent.NewClient(c).List(); err == nil {
		t.Error("List on refused connection succeeded")
	}
	if !strings.Contains(logBuf.String(), "peer uid 1234 not allowed") {
		t.Errorf("refusal not logged; log:\n%s", logBuf.String())
	}

	refuse.Store(false)
	if got := listedIDs(t, dial(t, path)); len(got) != 1 {
		t.Errorf("accepted connection listed %v, want one key", got)
	}
	if n := checked.Load(); n != 2 {
		t.Errorf("Check called %d times, want 2", n)
	}
}

func TestServeCancel(t *testing.T) {
	ca := newCA(t)
	a := New(newSource(newIdentity(t, ca, "held", t0-60, t0+3600)), newClock(t0).now)
	path := socketPath(t)
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- (&Server{Agent: a, Log: quietLog()}).Serve(ctx, ln) }()

	// An active client and an idle raw connection, both open at cancel.
	client := dial(t, path)
	if got := listedIDs(t, client); len(got) != 1 {
		t.Fatalf("listed %v, want one key", got)
	}
	raw, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	// A round trip proves the server has accepted and is serving raw.
	if _, err := raw.Write(frame([]byte{11})); err != nil {
		t.Fatal(err)
	}
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	hdr := make([]byte, 4)
	if _, err := io.ReadFull(raw, hdr); err != nil {
		t.Fatal(err)
	}
	io.CopyN(io.Discard, raw, int64(binary.BigEndian.Uint32(hdr)))

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}

	if n, err := raw.Read(hdr); err != io.EOF {
		t.Errorf("raw connection after cancel: read %d, %v; want EOF", n, err)
	}
	if _, err := client.List(); err == nil {
		t.Error("client List after cancel succeeded")
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		t.Error("dial after cancel succeeded")
	}
}

// TestServeListenerClosed checks that losing the listener, rather than
// cancellation, is reported and still ends every connection.
func TestServeListenerClosed(t *testing.T) {
	ca := newCA(t)
	a := New(newSource(newIdentity(t, ca, "held", t0-60, t0+3600)), newClock(t0).now)
	path := socketPath(t)
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- (&Server{Agent: a, Log: quietLog()}).Serve(context.Background(), ln) }()
	client := dial(t, path)
	if got := listedIDs(t, client); len(got) != 1 {
		t.Fatalf("listed %v, want one key", got)
	}

	ln.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Error("Serve = nil after its listener was closed, want error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its listener was closed")
	}
	if _, err := client.List(); err == nil {
		t.Error("client List after Serve returned succeeded")
	}
}

func TestServeNilAgent(t *testing.T) {
	ln, err := net.Listen("unix", socketPath(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := new(Server).Serve(context.Background(), ln); err == nil {
		t.Error("Serve with nil Agent succeeded")
	}
}

// TestConcurrentSign drives many clients at once while identities are
// swapped, for the race detector.
func TestConcurrentSign(t *testing.T) {
	ca := newCA(t)
	ids := []Identity{
		newIdentity(t, ca, "a", t0-60, t0+3600),
		newIdentity(t, ca, "b", t0-60, t0+3600),
	}
	src := newSource(ids...)
	path := serveAgent(t, newUnbound(src, newClock(t0).now))

	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		client := dial(t, path)
		wg.Go(func() {
			for j := range 50 {
				if i == 0 && j%10 == 0 {
					src.set(ids[(j/10)%2], ids[(j/10+1)%2])
				}
				keys, err := client.List()
				if err != nil || len(keys) != 1 {
					errs <- fmt.Errorf("List = %d keys, %v", len(keys), err)
					return
				}
				if _, err := client.Sign(keys[0], []byte("data")); err != nil {
					errs <- fmt.Errorf("Sign: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func BenchmarkSign(b *testing.B) {
	// RunParallel starts parallelism × GOMAXPROCS goroutines, each with
	// its own connection: one per CPU, and the 64 clients of make bench
	// on the project's 2-CPU machines.
	procs := runtime.GOMAXPROCS(0)
	for _, parallelism := range []int{1, max(1, 64/procs)} {
		b.Run(fmt.Sprintf("clients=%d", parallelism*procs), func(b *testing.B) {
			ca := newCA(b)
			now := uint64(time.Now().Unix())
			src := newSource(
				newIdentity(b, ca, "newest", now-60, now+3600),
				newIdentity(b, ca, "previous", now-3600, now+60),
			)
			path := serve(b, &Server{Agent: newUnbound(src, nil), Log: quietLog()})
			data := make([]byte, 32)
			rand.Read(data)

			b.SetParallelism(parallelism)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				c, err := net.Dial("unix", path)
				if err != nil {
					b.Error(err)
					return
				}
				defer c.Close()
				client := sshagent.NewClient(c)
				keys, err := client.List()
				if err != nil || len(keys) == 0 {
					b.Errorf("List = %v, %v", keys, err)
					return
				}
				for pb.Next() {
					if _, err := client.Sign(keys[0], data); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
