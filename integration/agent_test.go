package integration

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/mwi-project/mwi/integration/harness"
)

// TestAgentProtocol drives mwid's agent socket with the x/crypto agent
// client, as a Go program using SSH_AUTH_SOCK would.
func TestAgentProtocol(t *testing.T) {
	t.Parallel()
	iss, d := setup(t, time.Hour, allowUnbound)
	conn, err := net.Dial("unix", d.AgentSock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ag := agent.NewClient(conn)

	keys, err := ag.List()
	if err != nil || len(keys) != 1 {
		t.Fatalf("List = %d keys, %v; want one certificate", len(keys), err)
	}
	pub, err := ssh.ParsePublicKey(keys[0].Blob)
	if err != nil {
		t.Fatal(err)
	}
	cert, ok := pub.(*ssh.Certificate)
	if !ok {
		t.Fatalf("listed key is a %s, want a certificate", pub.Type())
	}
	// The certificate is signed by the issuer's user CA.
	ca, _, _, _, err := ssh.ParseAuthorizedKey([]byte(iss.UserCA))
	if err != nil {
		t.Fatal(err)
	}
	checker := ssh.CertChecker{IsUserAuthority: func(k ssh.PublicKey) bool {
		return string(k.Marshal()) == string(ca.Marshal())
	}}
	if err := checker.CheckCert(cert.ValidPrincipals[0], cert); err != nil {
		t.Fatalf("certificate does not check against the user CA: %v", err)
	}

	data := []byte("session data to sign")
	sig, err := ag.Sign(pub, data)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if err := cert.Key.Verify(data, sig); err != nil {
		t.Fatalf("signature does not verify with the certificate's key: %v", err)
	}

	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	if err := ag.Add(agent.AddedKey{PrivateKey: priv}); err == nil {
		t.Error("Add succeeded; the agent must refuse keys from clients")
	}
	if err := ag.RemoveAll(); err == nil {
		t.Error("RemoveAll succeeded; the agent must refuse it")
	}
	if err := ag.Lock([]byte("pw")); err == nil {
		t.Error("Lock succeeded; the agent must refuse it")
	}
	// Refusals leave the agent serving.
	if keys, err := ag.List(); err != nil || len(keys) != 1 {
		t.Fatalf("List after refusals = %d keys, %v", len(keys), err)
	}
	if _, err := ag.Extension("no-such-extension@example.com", nil); err == nil {
		t.Error("unknown extension succeeded")
	}
	// A signature request for a key the agent does not hold is refused.
	other, _ := ssh.NewPublicKey(priv.Public())
	if _, err := ag.Sign(other, data); err == nil {
		t.Error("Sign with a key the agent does not hold succeeded")
	}
}

// TestAgentUnbound checks mwid's agent.unbound switch: by default the
// agent refuses to sign on a connection that bound no session, and says
// why in mwid's log with the caller's pid; after a reload that sets
// unbound: allow, the same connection gets its signature.
func TestAgentUnbound(t *testing.T) {
	t.Parallel()
	_, d := setup(t, time.Hour)
	conn, err := net.Dial("unix", d.AgentSock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ag := agent.NewClient(conn)
	keys, err := ag.List()
	if err != nil || len(keys) != 1 {
		t.Fatalf("List = %d keys, %v; want one certificate", len(keys), err)
	}
	data := []byte("not a userauth request")
	if _, err := ag.Sign(keys[0], data); err == nil {
		t.Fatal("Sign on an unbound connection succeeded with the default agent.unbound")
	}
	harness.Eventually(t, 10*time.Second, "the refusal in mwid's log", func() error {
		out := d.Proc.Output()
		for _, want := range []string{"agent: request refused", "no session-bind", fmt.Sprintf("pid=%d", os.Getpid())} {
			if !strings.Contains(out, want) {
				return fmt.Errorf("no %q in mwid's log", want)
			}
		}
		return nil
	})

	cfg, err := os.ReadFile(d.Config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(d.Config, append(cfg, allowUnbound...), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := d.Ctl("reload"); err != nil {
		t.Fatalf("mwictl reload: %v\n%s", err, out)
	}
	sig, err := ag.Sign(keys[0], data)
	if err != nil {
		t.Fatalf("Sign after unbound: allow: %v", err)
	}
	pub, err := ssh.ParsePublicKey(keys[0].Blob)
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.(*ssh.Certificate).Key.Verify(data, sig); err != nil {
		t.Errorf("signature does not verify: %v", err)
	}
}

// TestAgentMemoryBounded announces 16 MiB requests on eight agent
// connections, as the attack on mwid's locked memory did (its RSS went from
// 16 to 149 MB): each connection is closed at its length, before its body
// is sent, and mwid's resident memory does not grow by the requests' size.
func TestAgentMemoryBounded(t *testing.T) {
	t.Parallel()
	_, d := setup(t, time.Hour)
	pid := d.Proc.Cmd.Process.Pid
	before := residentKiB(t, pid)
	for i := range 8 {
		c, err := net.Dial("unix", d.AgentSock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second)) // only against a hang
		if _, err := c.Write(binary.BigEndian.AppendUint32(nil, 16<<20)); err != nil {
			t.Fatal(err)
		}
		if n, err := c.Read(make([]byte, 1)); n != 0 || !(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
			t.Fatalf("connection %d after announcing 16 MiB: read %d bytes, %v; want mwid to hang up", i, n, err)
		}
	}
	after := residentKiB(t, pid)
	t.Logf("mwid's resident memory: %d KiB before, %d KiB after", before, after)
	if after-before > 16<<10 {
		t.Errorf("mwid's resident memory grew by %d KiB; want far less than one 16 MiB request", after-before)
	}
	if !bytes.Contains([]byte(d.Proc.Output()), []byte("request larger than 262144 bytes")) {
		t.Error("mwid did not log the refusals")
	}
}

// residentKiB returns the resident set size of process pid.
func residentKiB(t *testing.T, pid int) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range bytes.Split(data, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			kib, err := strconv.ParseInt(string(bytes.Fields(v)[0]), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kib
		}
	}
	t.Fatal("no VmRSS in /proc/PID/status")
	return 0
}
