package agent

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/binary"
	"io"
	"log"
	"testing"

	"golang.org/x/crypto/ssh"
	sshagent "golang.org/x/crypto/ssh/agent"

	"github.com/mwi-project/mwi/internal/unixsock"
)

// Agent protocol message numbers (PROTOCOL.agent) used by the fuzz tests.
const (
	msgV1IdentitiesAnswer = 2
	msgFailure            = 5
	msgSuccess            = 6
	msgRequestIdentities  = 11
	msgIdentitiesAnswer   = 12
	msgSignRequest        = 13
	msgSignResponse       = 14
	msgAddIdentity        = 17
	msgRemoveIdentity     = 18
	msgRemoveAll          = 19
	msgLock               = 22
	msgUnlock             = 23
	msgAddConstrained     = 25
	msgExtension          = 27
	msgExtensionFailure   = 28
)

// fuzzHostKeys are host keys of each type ssh sends in session-bind.
func fuzzHostKeys(f *testing.F) []ssh.Signer {
	f.Helper()
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		f.Fatal(err)
	}
	var signers []ssh.Signer
	for _, k := range []any{edKey, ecKey, rsaKey} {
		s, err := ssh.NewSignerFromKey(k)
		if err != nil {
			f.Fatal(err)
		}
		signers = append(signers, s)
	}
	return signers
}

// bindPayload is sessionBindPayload for a fuzz seed.
func bindPayload(f *testing.F, host ssh.Signer, sid []byte, forwarding bool) []byte {
	f.Helper()
	sig, err := host.Sign(rand.Reader, sid)
	if err != nil {
		f.Fatal(err)
	}
	return ssh.Marshal(sessionBind{
		HostKey:      host.PublicKey().Marshal(),
		SessionID:    sid,
		Signature:    ssh.Marshal(sig),
		IsForwarding: forwarding,
	})
}

// FuzzSessionBind checks that the session-bind@openssh.com parser never
// panics and accepts only a well-formed request whose host key signed its
// session identifier.
func FuzzSessionBind(f *testing.F) {
	sid := make([]byte, 32)
	rand.Read(sid)
	hosts := fuzzHostKeys(f)
	for i, host := range hosts {
		good := bindPayload(f, host, sid, i == 1)
		f.Add(good)
		f.Add(good[:len(good)-1])
		f.Add(append(bytes.Clone(good), 0))
		bad := bytes.Clone(good)
		bad[len(bad)-2] ^= 0x80 // inside the signature
		f.Add(bad)
	}
	f.Add(bindPayload(f, hosts[0], make([]byte, maxSessionIDLen+1), false))
	f.Add([]byte{})
	f.Add([]byte("\x00\x00\x00\x05hello"))
	f.Fuzz(func(t *testing.T, contents []byte) {
		if _, err := checkSessionBind(contents); err != nil {
			return
		}
		var req sessionBind
		if err := ssh.Unmarshal(contents, &req); err != nil {
			t.Fatalf("accepted a request that does not parse: %v", err)
		}
		if n := len(req.SessionID); n == 0 || n > maxSessionIDLen {
			t.Fatalf("accepted a session identifier of %d bytes", n)
		}
		key, err := ssh.ParsePublicKey(req.HostKey)
		if err != nil {
			t.Fatalf("accepted a bad host key: %v", err)
		}
		var sig ssh.Signature
		if err := ssh.Unmarshal(req.Signature, &sig); err != nil {
			t.Fatalf("accepted a malformed signature: %v", err)
		}
		if err := key.Verify(req.SessionID, &sig); err != nil {
			t.Fatalf("accepted a signature that does not verify: %v", err)
		}
	})
}

// FuzzServeAgent sends one arbitrary request to the agent through the
// x/crypto server that mwid uses, with one valid and one expired
// certificate held. The server must answer exactly once without
// panicking; the agent must never sign for a key it does not hold or whose
// certificate has expired, never list the expired certificate, and never
// report success for a request that would change its keys or lock it.
func FuzzServeAgent(f *testing.F) {
	// The x/crypto server logs every refused request with the standard
	// logger.
	prev := log.Writer()
	log.SetOutput(io.Discard)
	f.Cleanup(func() { log.SetOutput(prev) })

	ca := newCA(f)
	valid := newIdentity(f, ca, "valid", t0-60, t0+3600)
	expired := newIdentity(f, ca, "expired", t0-3600, t0-1)
	a := newUnbound(newSource(valid, expired), newClock(t0).now)
	validBlob, expiredBlob := valid.Cert.Marshal(), expired.Cert.Marshal()

	sign := func(blob, data []byte, flags uint32) []byte {
		return ssh.Marshal(struct {
			Type  byte
			Blob  []byte
			Data  []byte
			Flags uint32
		}{msgSignRequest, blob, data, flags})
	}
	ext := func(name string, contents []byte) []byte {
		return append(ssh.Marshal(struct {
			Type byte
			Name string
		}{msgExtension, name}), contents...)
	}
	withBlob := func(typ byte, blob []byte) []byte {
		return ssh.Marshal(struct {
			Type byte
			Blob []byte
		}{typ, blob})
	}
	_, newKey, _ := ed25519.GenerateKey(rand.Reader)
	add := ssh.Marshal(struct {
		Type    byte
		KeyType string
		Pub     []byte
		Priv    []byte
		Comment string
	}{msgAddIdentity, ssh.KeyAlgoED25519, newKey.Public().(ed25519.PublicKey), newKey, "added"})
	sid := make([]byte, 32)
	rand.Read(sid)

	for _, seed := range [][]byte{
		{msgRequestIdentities},
		{1}, {9}, {200},
		sign(validBlob, []byte("session"), 0),
		sign(validBlob, []byte("session"), uint32(sshagent.SignatureFlagRsaSha512)),
		sign(expiredBlob, []byte("session"), 0),
		sign(valid.Cert.Key.Marshal(), []byte("session"), 0),
		sign([]byte("junk"), nil, 0),
		add,
		append(bytes.Clone(add[:len(add)-4]), msgAddConstrained),
		withBlob(msgRemoveIdentity, validBlob),
		{msgRemoveAll},
		withBlob(msgLock, []byte("pw")),
		withBlob(msgUnlock, []byte("pw")),
		ext(SessionBindExtension, bindPayload(f, newCA(f), sid, false)), // any ed25519 signer will do as a host key
		ext(SessionBindExtension, []byte("\x00")),
		ext("query", nil),
	} {
		f.Add(seed)
	}

	f.Fuzz(func(t *testing.T, msg []byte) {
		if len(msg) == 0 {
			return // ServeAgent hangs up on an empty frame before answering
		}
		var out bytes.Buffer
		req := append(binary.BigEndian.AppendUint32(nil, uint32(len(msg))), msg...)
		err := sshagent.ServeAgent(a, struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(req), &out})
		if err != io.EOF {
			t.Fatalf("ServeAgent ended with %v, want EOF after the one request", err)
		}
		reply := out.Bytes()
		if len(reply) < 5 || binary.BigEndian.Uint32(reply) != uint32(len(reply)-4) {
			t.Fatalf("reply %x is not one frame", reply)
		}
		reply = reply[4:]
		switch reply[0] {
		case msgFailure, msgExtensionFailure:
		case msgV1IdentitiesAnswer:
			// The server answers the obsolete SSH-1 request itself.
			if !bytes.Equal(reply, []byte{msgV1IdentitiesAnswer, 0, 0, 0, 0}) {
				t.Fatalf("SSH-1 identities answer %x lists keys", reply)
			}
		case msgSuccess:
			switch msg[0] {
			case msgAddIdentity, msgAddConstrained, msgRemoveIdentity, msgRemoveAll, msgLock, msgUnlock, 20, 21, 26:
				t.Fatalf("request %d changing the agent answered with success", msg[0])
			}
		case msgIdentitiesAnswer:
			keys := parseIdentities(t, reply)
			for _, k := range keys {
				if !bytes.Equal(k, validBlob) {
					t.Fatalf("listed a key other than the valid certificate: %x", k)
				}
			}
		case msgSignResponse:
			var req struct {
				Type  byte
				Blob  []byte
				Data  []byte
				Flags uint32
			}
			if msg[0] != msgSignRequest || ssh.Unmarshal(msg, &req) != nil {
				t.Fatalf("signature answering request %x", msg)
			}
			if !bytes.Equal(req.Blob, validBlob) {
				t.Fatalf("signed for key %x, which is not the valid certificate", req.Blob)
			}
			var resp struct {
				Type    byte
				SigBlob []byte
			}
			var sig ssh.Signature
			if err := ssh.Unmarshal(reply, &resp); err != nil {
				t.Fatal(err)
			}
			if err := ssh.Unmarshal(resp.SigBlob, &sig); err != nil {
				t.Fatal(err)
			}
			if err := valid.Cert.Key.Verify(req.Data, &sig); err != nil {
				t.Fatalf("signature does not verify: %v", err)
			}
		default:
			// A reply to an extension is sent verbatim; mwid's only
			// extension answers with success or a failure.
			t.Fatalf("unexpected reply type %d to request %d", reply[0], msg[0])
		}
	})
}

func parseIdentities(t *testing.T, reply []byte) [][]byte {
	t.Helper()
	if len(reply) < 5 {
		t.Fatalf("short identities answer %x", reply)
	}
	n := binary.BigEndian.Uint32(reply[1:])
	rest := reply[5:]
	var keys [][]byte
	for range n {
		var k struct {
			Blob    []byte
			Comment string
			Rest    []byte `ssh:"rest"`
		}
		if err := ssh.Unmarshal(rest, &k); err != nil {
			t.Fatalf("identities answer %x: %v", reply, err)
		}
		keys = append(keys, k.Blob)
		rest = k.Rest
	}
	if len(rest) != 0 {
		t.Fatalf("identities answer has %d trailing bytes", len(rest))
	}
	return keys
}

// FuzzSessionSign feeds arbitrary data to sign to a session bound to a
// certified host the access rules allow. The parser must not panic, and
// the session must sign only a well-formed userauth request of the bound
// session for the login deploy.
func FuzzSessionSign(f *testing.F) {
	userCA, hostCA := newCA(f), newCA(f)
	id := withAccess(f, userCA, newIdentity(f, userCA, "bot=ci instance=i-1", t0-60, t0+3600), stagingAccess(false))
	host := newHost(f, hostCA, map[string]string{"env": "staging"}, t0-60, t0+3600)
	sid := make([]byte, 32)
	good := userauthData(sid, "deploy", id.Cert, nil)
	f.Add(good)
	f.Add(userauthData(sid, "deploy", id.Cert, host.PublicKey()))
	f.Add(userauthData(sid, "root", id.Cert, nil))
	f.Add(good[:len(good)-3])
	f.Add([]byte{})
	src := newSource(id)
	src.setHostCAs(hostCA.PublicKey())
	a := New(src, newClock(t0).now)
	a.Log = quietLog()
	s := a.ForConn(unixsock.Peer{}).(sshagent.ExtendedAgent)
	if _, err := s.Extension(SessionBindExtension, bindPayload(f, host, sid, false)); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := s.Sign(id.Cert, data)
		if err != nil {
			return
		}
		u, perr := parseUserauth(data)
		if perr != nil {
			t.Fatalf("signed data that does not parse as userauth: %v", perr)
		}
		if !bytes.Equal(u.sessionID, sid) || u.user != "deploy" || !bytes.Equal(u.key, id.Cert.Marshal()) {
			t.Fatalf("signed userauth for session %x, user %q", u.sessionID, u.user)
		}
	})
}
