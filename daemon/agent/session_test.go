package agent

import (
	"cmp"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	sshagent "golang.org/x/crypto/ssh/agent"

	"github.com/mwi-project/mwi/internal/agentload"
	"github.com/mwi-project/mwi/internal/logtest"
	"github.com/mwi-project/mwi/internal/sshaccess"
	"github.com/mwi-project/mwi/internal/unixsock"
)

// stagingAccess lets bot ci log in as deploy on hosts labelled
// env=staging.
func stagingAccess(forward bool) *sshaccess.Access {
	return &sshaccess.Access{
		Bot:      "ci",
		Instance: "i-1",
		Allow: []sshaccess.Rule{{
			Role:       "staging",
			Logins:     []string{"deploy"},
			NodeLabels: map[string][]string{"env": {"staging"}},
		}},
		ForwardAgent: forward,
	}
}

// withAccess returns a copy of the identity id (from newIdentity, signed
// by ca) whose certificate carries access.
func withAccess(t testing.TB, ca ssh.Signer, id Identity, access *sshaccess.Access) Identity {
	t.Helper()
	v, err := access.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	cert := *id.Cert
	cert.Permissions.Extensions = map[string]string{"permit-pty": "", sshaccess.AccessExtension: v}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	return Identity{Cert: &cert, Signer: id.Signer}
}

// newHost returns a host key signer certified by ca with labels over
// [after, before): its PublicKey is the certificate, as ssh binds it.
func newHost(t testing.TB, ca ssh.Signer, labels map[string]string, after, before uint64) ssh.Signer {
	t.Helper()
	key := newCA(t)
	cert := &ssh.Certificate{
		Key:             key.PublicKey(),
		Serial:          serial.Add(1),
		CertType:        ssh.HostCert,
		KeyId:           "host-" + sshaccess.FormatLabels(labels),
		ValidPrincipals: []string{"host.example", "127.0.0.1"},
		ValidAfter:      after,
		ValidBefore:     before,
		Permissions: ssh.Permissions{
			Extensions: map[string]string{sshaccess.LabelsExtension: sshaccess.MarshalLabels(labels)},
		},
	}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewCertSigner(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// userauthData is what ssh asks the agent to sign to log in as user in
// session sid with the certificate key: with host set, in OpenSSH's
// publickey-hostbound-v00 form naming that host key.
func userauthData(sid []byte, user string, key ssh.PublicKey, host ssh.PublicKey) []byte {
	method := methodPublickey
	if host != nil {
		method = methodHostbound
	}
	b := ssh.Marshal(struct {
		SessionID []byte
		Msg       byte
		User      string
		Service   string
		Method    string
		Sign      bool
		Algo      string
		Key       []byte
	}{sid, 50, user, "ssh-connection", method, true, key.Type(), key.Marshal()})
	if host != nil {
		b = append(b, ssh.Marshal(struct{ K []byte }{host.Marshal()})...)
	}
	return b
}

func newSID() []byte {
	sid := make([]byte, 32)
	rand.Read(sid)
	return sid
}

// TestSessionSign drives the destination checks through a real agent
// client on a Unix socket, one connection per case.
func TestSessionSign(t *testing.T) {
	userCA, hostCA, otherCA := newCA(t), newCA(t), newCA(t)
	plain := newIdentity(t, userCA, "old-issuer", t0-60, t0+3600)
	allowed := withAccess(t, userCA, newIdentity(t, userCA, "bot=ci instance=i-1", t0-60, t0+3600), stagingAccess(false))
	forwarder := withAccess(t, userCA, newIdentity(t, userCA, "bot=fwd instance=i-2", t0-60, t0+3600), stagingAccess(true))

	staging := newHost(t, hostCA, map[string]string{"env": "staging"}, t0-60, t0+3600)
	prod := newHost(t, hostCA, map[string]string{"env": "prod"}, t0-60, t0+3600)
	foreign := newHost(t, otherCA, map[string]string{"env": "staging"}, t0-60, t0+3600)
	expired := newHost(t, hostCA, map[string]string{"env": "staging"}, t0-7200, t0-1)
	plainHost := newCA(t)
	jump := newHost(t, hostCA, map[string]string{"env": "jump"}, t0-60, t0+3600)

	type bindReq struct {
		host    ssh.Signer
		sid     []byte
		forward bool
		refused bool // the bind itself is refused
	}
	sid1, sid2 := newSID(), newSID()
	tests := []struct {
		name    string
		id      Identity
		binds   []bindReq
		data    func(key ssh.PublicKey) []byte // nil: userauth as deploy in sid1
		unbound bool
		want    string // "": signed; else part of the logged reason
	}{
		{name: "allowed", id: allowed, binds: []bindReq{{host: staging, sid: sid1}}},
		{name: "allowed hostbound", id: allowed, binds: []bindReq{{host: staging, sid: sid1}},
			data: func(k ssh.PublicKey) []byte { return userauthData(sid1, "deploy", k, staging.PublicKey()) }},
		{name: "hostbound names another host", id: allowed, binds: []bindReq{{host: staging, sid: sid1}},
			data: func(k ssh.PublicKey) []byte { return userauthData(sid1, "deploy", k, prod.PublicKey()) },
			want: "names another host key"},
		{name: "host key not a certificate", id: allowed, binds: []bindReq{{host: plainHost, sid: sid1}},
			want: "not a host certificate"},
		{name: "host certificate from another CA", id: allowed, binds: []bindReq{{host: foreign, sid: sid1}},
			want: "not by the issuer's host CA"},
		{name: "host certificate expired", id: allowed, binds: []bindReq{{host: expired, sid: sid1}},
			want: "not now"},
		{name: "login not allowed", id: allowed, binds: []bindReq{{host: staging, sid: sid1}},
			data: func(k ssh.PublicKey) []byte { return userauthData(sid1, "root", k, nil) },
			want: "allows login root"},
		{name: "host labels not selected", id: allowed, binds: []bindReq{{host: prod, sid: sid1}},
			want: "selects a host labelled env=prod"},
		{name: "forwarded", id: allowed, binds: []bindReq{{host: jump, sid: sid2, forward: true}, {host: staging, sid: sid1}},
			want: "forward_agent"},
		{name: "forwarded with forward_agent", id: forwarder, binds: []bindReq{{host: jump, sid: sid2, forward: true}, {host: staging, sid: sid1}}},
		{name: "session id not the last bound", id: allowed, binds: []bindReq{{host: staging, sid: sid1}},
			data: func(k ssh.PublicKey) []byte { return userauthData(sid2, "deploy", k, nil) },
			want: "another session"},
		{name: "userauth for another key", id: allowed, binds: []bindReq{{host: staging, sid: sid1}},
			data: func(ssh.PublicKey) []byte { return userauthData(sid1, "deploy", forwarder.Cert, nil) },
			want: "another key"},
		{name: "no bind refused", id: allowed, want: "no session-bind"},
		{name: "no bind allowed", id: allowed, unbound: true,
			data: func(ssh.PublicKey) []byte { return []byte("anything") }},
		{name: "no bind, old issuer, allowed", id: plain, unbound: true},
		{name: "bound, old issuer", id: plain, binds: []bindReq{{host: staging, sid: sid1}}, unbound: true,
			want: "issuer is too old"},
		{name: "not userauth data", id: allowed, binds: []bindReq{{host: staging, sid: sid1}}, unbound: true,
			data: func(ssh.PublicKey) []byte { return []byte("ssh-keygen -Y sign data") },
			want: "not an SSH userauth request"},
		{name: "bind after authentication bind", id: allowed,
			binds: []bindReq{{host: staging, sid: sid1}, {host: staging, sid: sid2, refused: true}},
			data:  func(k ssh.PublicKey) []byte { return userauthData(sid1, "deploy", k, nil) }},
		{name: "same bind twice after forwarding", id: forwarder,
			binds: []bindReq{{host: jump, sid: sid2, forward: true}, {host: jump, sid: sid2, forward: true}, {host: staging, sid: sid1}}},
		{name: "session id bound to another host", id: forwarder,
			binds: []bindReq{{host: jump, sid: sid2, forward: true}, {host: staging, sid: sid2, forward: true, refused: true}},
			want:  "another session"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newSource(tt.id)
			src.setHostCAs(hostCA.PublicKey())
			a := New(src, newClock(t0).now)
			a.SetAllowUnbound(tt.unbound)
			var log logtest.Buffer
			a.Log = slog.New(slog.NewTextHandler(&log, nil))
			client := dial(t, serveAgent(t, a))

			for i, b := range tt.binds {
				_, err := client.Extension(SessionBindExtension, sessionBindPayload(t, b.host, b.sid, b.forward))
				if b.refused != (err != nil) {
					t.Fatalf("bind %d: error %v, want refused %v", i, err, b.refused)
				}
			}
			data := userauthData(sid1, "deploy", tt.id.Cert, nil)
			if tt.data != nil {
				data = tt.data(tt.id.Cert)
			}
			sig, err := client.Sign(tt.id.Cert, data)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Sign: %v; log:\n%s", err, log.String())
				}
				if err := tt.id.Cert.Verify(data, sig); err != nil {
					t.Errorf("signature does not verify: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Sign succeeded, want refusal")
			}
			line := log.String()
			for _, want := range []string{"level=WARN", tt.want, fmt.Sprintf("pid=%d", os.Getpid()), "host=", "login="} {
				if !strings.Contains(line, want) {
					t.Errorf("log does not contain %q:\n%s", want, line)
				}
			}
		})
	}
}

// TestSessionRefusalLog checks what a refusal's log line names: the host
// certificate's key ID and principals, the login and the caller.
func TestSessionRefusalLog(t *testing.T) {
	userCA, hostCA := newCA(t), newCA(t)
	id := withAccess(t, userCA, newIdentity(t, userCA, "bot=ci instance=i-1", t0-60, t0+3600), stagingAccess(false))
	prod := newHost(t, hostCA, map[string]string{"env": "prod"}, t0-60, t0+3600)
	src := newSource(id)
	src.setHostCAs(hostCA.PublicKey())
	a := New(src, newClock(t0).now)
	var log logtest.Buffer
	a.Log = slog.New(slog.NewTextHandler(&log, nil))
	client := dial(t, serveAgent(t, a))

	sid := newSID()
	if _, err := client.Extension(SessionBindExtension, sessionBindPayload(t, prod, sid, false)); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Sign(id.Cert, userauthData(sid, "deploy", id.Cert, nil)); err == nil {
		t.Fatal("Sign for a prod host succeeded")
	}
	for _, want := range []string{`host-env=prod`, "host.example", "login=deploy", "uid=", "no role of bot ci selects"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("log does not contain %q:\n%s", want, log.String())
		}
	}
}

// TestAgentItselfUnbound checks that the Agent, which serves no
// connection, follows the unbound switch.
func TestAgentItselfUnbound(t *testing.T) {
	ca := newCA(t)
	id := newIdentity(t, ca, "held", t0-60, t0+3600)
	a := New(newSource(id), newClock(t0).now)
	if _, err := a.Sign(id.Cert, []byte("data")); err == nil || !strings.Contains(err.Error(), "unbound") {
		t.Errorf("Sign on the Agent = %v, want the unbound refusal", err)
	}
	a.SetAllowUnbound(true)
	if _, err := a.Sign(id.Cert, []byte("data")); err != nil {
		t.Errorf("Sign with unbound allowed: %v", err)
	}
}

func TestParseUserauth(t *testing.T) {
	key := newCA(t).PublicKey()
	sid := newSID()
	good := userauthData(sid, "deploy", key, nil)
	tests := []struct {
		name string
		data []byte
		ok   bool
	}{
		{"publickey", good, true},
		{"hostbound", userauthData(sid, "deploy", key, key), true},
		{"empty", nil, false},
		{"truncated", good[:len(good)-1], false},
		{"trailing", append(good[:len(good):len(good)], 0), false},
		{"other message", append(ssh.Marshal(struct{ S []byte }{sid}), 51), false},
		{"not publickey", ssh.Marshal(struct {
			S      []byte
			M      byte
			U, Svc string
			Method string
		}{sid, 50, "deploy", "ssh-connection", "password"}), false},
		{"huge length", []byte{0xff, 0xff, 0xff, 0xff}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := parseUserauth(tt.data)
			if tt.ok != (err == nil) {
				t.Fatalf("parseUserauth: %v, want ok %v", err, tt.ok)
			}
			if tt.ok && u.user != "deploy" {
				t.Errorf("user %q, want deploy", u.user)
			}
		})
	}
}

// BenchmarkSignChecked measures the agent's signing throughput with
// destination checks (a bound connection, a userauth request for an
// allowed host) against without them (no bind, unbound allowed, the
// agent as it was before destination checks), over a socket with a real
// client, one connection per goroutine.
func BenchmarkSignChecked(b *testing.B) {
	userCA, hostCA := newCA(b), newCA(b)
	id := withAccess(b, userCA, newIdentity(b, userCA, "bot=ci instance=i-1", t0-60, t0+3600), stagingAccess(false))
	host := newHost(b, hostCA, map[string]string{"env": "staging"}, t0-60, t0+3600)
	for _, checked := range []bool{false, true} {
		b.Run(fmt.Sprintf("checks=%v", checked), func(b *testing.B) {
			src := newSource(id)
			src.setHostCAs(hostCA.PublicKey())
			a := New(src, newClock(t0).now)
			a.SetAllowUnbound(!checked)
			path := serve(b, &Server{Agent: a, Log: quietLog()})
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				client := dial(b, path)
				sid := newSID()
				data := userauthData(sid, "deploy", id.Cert, nil)
				if checked {
					if _, err := client.Extension(SessionBindExtension, sessionBindPayload(b, host, sid, false)); err != nil {
						b.Error(err)
						return
					}
				}
				for pb.Next() {
					if _, err := client.Sign(id.Cert, data); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

var _ sshagent.ExtendedAgent = (*session)(nil)

// BenchmarkDestinationChecks compares the agent's signing throughput with
// destination checks against the same agent without them, under the same
// load generator (agentload), at 1, 8 and 64 clients, and prints a table
// with the ratio. make bench runs it once, next to the comparison with
// OpenSSH's ssh-agent:
//
//	go test -run '^$' -bench BenchmarkDestinationChecks -benchtime 1x ./daemon/agent/
//
// With checks, each client binds its connection to a certified host once
// (session-bind@openssh.com) and signs that session's userauth request;
// without, the agent allows unbound connections and the client signs the
// same request unbound, as every agent did before destination checks.
// Both agents serve in this process, which also runs the load generator.
// Each cell lasts MWI_BENCH_SECONDS (default 3s) after agentload's
// warm-up; the two take turns at each client count. The target is
// printed, never asserted.
func BenchmarkDestinationChecks(b *testing.B) {
	const targetRatio, targetClients = 0.9, 8
	d := 2 * time.Second
	if v := os.Getenv("MWI_BENCH_SECONDS"); v != "" {
		s, err := strconv.ParseFloat(v, 64)
		if err != nil || s <= 0 {
			b.Fatalf("MWI_BENCH_SECONDS=%q: want a positive number of seconds", v)
		}
		d = time.Duration(s * float64(time.Second))
	}
	userCA, hostCA := newCA(b), newCA(b)
	id := withAccess(b, userCA, newIdentity(b, userCA, "bot=ci instance=i-1", t0-60, t0+3600), stagingAccess(false))
	host := newHost(b, hostCA, map[string]string{"env": "staging"}, t0-60, t0+3600)
	newAgent := func(checked bool) string {
		src := newSource(id)
		src.setHostCAs(hostCA.PublicKey())
		a := New(src, newClock(t0).now)
		a.SetAllowUnbound(!checked)
		a.Log = quietLog()
		return serve(b, &Server{Agent: a, Log: quietLog()})
	}
	checkedSock, referenceSock := newAgent(true), newAgent(false)
	prepare := func(bind bool) agentload.Options {
		return agentload.Options{Prepare: func(c sshagent.ExtendedAgent, key *sshagent.Key) ([]byte, error) {
			sid := newSID()
			if bind {
				if _, err := c.Extension(SessionBindExtension, sessionBindPayload(b, host, sid, false)); err != nil {
					return nil, err
				}
			}
			return userauthData(sid, "deploy", id.Cert, nil), nil
		}}
	}

	type row struct {
		clients            int
		checked, reference agentload.Result
	}
	var rows []row
	b.ResetTimer()
	// Each side runs rounds times at each client count, the sides taking
	// turns and swapping who goes first, and the median round of each is
	// compared: other work on the machine then falls on both alike.
	const rounds = 3
	median := func(rs []agentload.Result) agentload.Result {
		slices.SortFunc(rs, func(a, b agentload.Result) int { return cmp.Compare(a.OpsPerSec, b.OpsPerSec) })
		return rs[len(rs)/2]
	}
	for _, n := range []int{1, targetClients, 64} {
		var checked, reference []agentload.Result
		for i := range rounds {
			sides := []func() error{
				func() error {
					res, err := agentload.RunWith(b.Context(), checkedSock, n, d, prepare(true))
					checked = append(checked, res)
					return err
				},
				func() error {
					res, err := agentload.RunWith(b.Context(), referenceSock, n, d, prepare(false))
					reference = append(reference, res)
					return err
				},
			}
			if i%2 == 1 {
				sides[0], sides[1] = sides[1], sides[0]
			}
			for _, run := range sides {
				if err := run(); err != nil {
					b.Fatalf("%d clients: %v", n, err)
				}
			}
		}
		r := row{clients: n, checked: median(checked), reference: median(reference)}
		for i := range rounds {
			if checked[i].Errors+reference[i].Errors != 0 {
				b.Errorf("%d clients: %d failed requests with checks, %d without", n, checked[i].Errors, reference[i].Errors)
			}
		}
		rows = append(rows, r)
	}
	b.StopTimer()

	ratio := func(r row) float64 {
		if r.reference.OpsPerSec == 0 {
			return 0
		}
		return r.checked.OpsPerSec / r.reference.OpsPerSec
	}
	us := func(d time.Duration) string { return d.Round(time.Microsecond).String() }
	fmt.Printf("\nSSH agent sign (ed25519) with destination checks against without, median of %d rounds of %v per cell after %v warm-up, same load generator, one process\n", rounds, d, agentload.Warmup)
	fmt.Printf("clients | checks ops/s  p50      p99      | no checks ops/s  p50      p99      | ratio\n")
	var target row
	for _, r := range rows {
		fmt.Printf("%7d | %12.0f  %-7s  %-7s  | %15.0f  %-7s  %-7s  | %5.2fx\n", r.clients,
			r.checked.OpsPerSec, us(r.checked.P50), us(r.checked.P99),
			r.reference.OpsPerSec, us(r.reference.P50), us(r.reference.P99), ratio(r))
		if r.clients == targetClients {
			target = r
		}
	}
	met := "NOT met"
	if ratio(target) >= targetRatio {
		met = "met"
	}
	fmt.Printf("target: >= %gx the agent without checks at %d clients: %s (ratio %.2fx)\n\n", targetRatio, targetClients, met, ratio(target))
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(target.checked.OpsPerSec, "checked-ops/s")
	b.ReportMetric(target.reference.OpsPerSec, "unchecked-ops/s")
	b.ReportMetric(ratio(target), "ratio@8")
}

// BenchmarkSignInProcess measures what destination checks add to one
// signature, without the socket: a session's SignWithFlags for a bound
// userauth request against the same request unbound.
func BenchmarkSignInProcess(b *testing.B) {
	userCA, hostCA := newCA(b), newCA(b)
	id := withAccess(b, userCA, newIdentity(b, userCA, "bot=ci instance=i-1", t0-60, t0+3600), stagingAccess(false))
	host := newHost(b, hostCA, map[string]string{"env": "staging"}, t0-60, t0+3600)
	for _, checked := range []bool{false, true} {
		b.Run(fmt.Sprintf("checks=%v", checked), func(b *testing.B) {
			src := newSource(id)
			src.setHostCAs(hostCA.PublicKey())
			a := New(src, newClock(t0).now)
			a.SetAllowUnbound(!checked)
			s := a.ForConn(unixsock.Peer{}).(sshagent.ExtendedAgent)
			sid := newSID()
			if checked {
				if _, err := s.Extension(SessionBindExtension, sessionBindPayload(b, host, sid, false)); err != nil {
					b.Fatal(err)
				}
			}
			data := userauthData(sid, "deploy", id.Cert, nil)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.SignWithFlags(id.Cert, data, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
