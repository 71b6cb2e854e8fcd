package loadgen

// The floor is what the issuers' CPU spends on a request that does none of
// a renewal's work: a bare TLS server with the issuer's serving
// certificate and identity authority, in a process of its own on the
// issuers' CPU, reads each request and answers it with a body of a
// renewal answer's size. The generator sends it the renewal's request on
// the renewal's kind of connection (new, with the bot's identity
// certificate), and on cheaper ones: resumed sessions without a client
// certificate (in TLS 1.3 the cheapest new connection: a key exchange and
// no signature), the same with X25519 or P-256 alone (without the
// post-quantum half of Go's default key exchange), and in TLS 1.2, whose
// resumption has no key exchange at all; and a kept-alive connection. The server
// also measures, with the issuer's own keys and code, the public-key work
// that any renewal must do whatever its protocol: check one signature of
// the caller's identity key, check the new key's CSR, sign the identity
// certificate (crypto/x509 checks the signature it made) and sign the SSH
// certificate. A resumed connection of each kind plus that work is a
// lower bound of a renewal's CPU time on this machine, printed beside the
// target.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/issuer/ca"
)

// Environment variables that make the program serve the floor instead of
// doing its usual job (ServeFloorIfAsked): the issuer state directory
// whose certificates to serve with, and the size of the answer.
const (
	floorStateEnv  = "MWI_LOADGEN_FLOOR_STATE"
	floorAnswerEnv = "MWI_LOADGEN_FLOOR_ANSWER"
)

// floorRequests bounds the requests of each kind sent to the floor.
const floorRequests = 3000

// workRuns is how many times each piece of Work is timed: a few seconds
// in all, enough to steady a figure of about 0.1 ms.
const workRuns = 2000

// Work is the CPU time of each piece of public-key work a renewal cannot
// do without, measured on the issuers' CPU with the issuer's keys.
type Work struct {
	// Caller is one P-256 signature check: the least proof that the
	// caller holds its identity key. A client certificate, as renewals
	// use, costs two: the certificate's signature and the handshake's.
	Caller time.Duration `json:"caller"`
	// CSR is parsing and checking a P-256 CSR: the new key's proof of
	// possession.
	CSR time.Duration `json:"csr"`
	// Identity is signing an identity certificate, with crypto/x509's
	// check of the signature it made.
	Identity time.Duration `json:"identity"`
	// SSH is signing an SSH user certificate.
	SSH time.Duration `json:"ssh"`
}

// Total returns the sum of the work.
func (w Work) Total() time.Duration { return w.Caller + w.CSR + w.Identity + w.SSH }

// Floor is what the floor measurement found.
type Floor struct {
	// Answer is the size of the floor's answers: a renewal answer's.
	Answer int
	// MTLS is the phase on new connections with a client certificate, as
	// renewals come; KeptAlive the one on kept-alive connections.
	MTLS, KeptAlive Phase
	// Resumed are the phases on resumed sessions without a client
	// certificate: in TLS 1.3 with Go's default key exchange, with X25519
	// alone and with P-256 alone, and in TLS 1.2, whose resumption has no
	// key exchange at all.
	Resumed []Resumed
	Work    Work
}

// Resumed is a phase on resumed sessions.
type Resumed struct {
	Phase
	// What names the kind of session in the report.
	What string
	// Count is how many of the phase's connections did resume.
	Count int
}

// LowerBound returns the least CPU time a renewal on a new connection can
// take on this machine: the cheapest new connection and the public-key
// work. p is the resumed phase to start from.
func (f *Floor) LowerBound(p Phase) time.Duration { return p.CPUPerOp() + f.Work.Total() }

// ServeFloorIfAsked serves the floor and exits if the environment asks for
// it; otherwise it returns at once. Programs that Run the floor, with
// Config.Self naming them, call it first thing in main.
func ServeFloorIfAsked() {
	dir := os.Getenv(floorStateEnv)
	if dir == "" {
		return
	}
	answer, err := strconv.Atoi(os.Getenv(floorAnswerEnv))
	if err == nil {
		err = serveFloor(dir, answer, os.Stdin, os.Stdout)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "mwi-loadgen: floor server: %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// floorHello is the floor server's first and only line on its standard
// output.
type floorHello struct {
	Addr string `json:"addr"`
	Work Work   `json:"work"`
}

// serveFloor measures the work, serves the floor on a loopback port and
// writes both to out, then serves until stop ends: the generator closes
// the floor's standard input, or dies.
func serveFloor(dir string, answerBytes int, stop io.Reader, out io.Writer) error {
	cas, err := ca.Load(dir)
	if err != nil {
		return err
	}
	work, err := measureWork(cas)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	answer := bytes.Repeat([]byte{' '}, max(answerBytes, 1))
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, err := io.Copy(io.Discard, io.LimitReader(r.Body, 64<<10)); err != nil {
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", strconv.Itoa(len(answer)))
			w.Write(answer)
		}),
		Protocols:         &protocols,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		// As the issuer's: its serving certificate, client certificates
		// verified against its identity authority if given, Go's default
		// key exchanges and session tickets.
		TLSConfig: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{*cas.ServingCertificate()},
			ClientAuth:   tls.VerifyClientCertIfGiven,
			ClientCAs:    cas.IdentityPool(),
		},
	}
	if err := json.NewEncoder(out).Encode(floorHello{Addr: ln.Addr().String(), Work: work}); err != nil {
		ln.Close()
		return err
	}
	go func() {
		io.Copy(io.Discard, stop)
		srv.Close()
	}()
	if err := srv.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// measureWork times each piece of Work with the keys of cas, on the
// process's CPU clock, so that the garbage it leaves counts too.
func measureWork(cas *ca.Authority) (Work, error) {
	ks, err := newKeySet("load-0")
	if err != nil {
		return Work{}, err
	}
	key, csrDER := ks.key, ks.csrDER
	digest := sha256.Sum256([]byte("mwi-loadgen floor"))
	sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		return Work{}, err
	}
	req, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return Work{}, err
	}
	csr, err := ca.CheckCSR(req)
	if err != nil {
		return Work{}, err
	}
	now := time.Now()
	id := ca.Identity{Bot: "load-0", Instance: "00000000-0000-4000-8000-000000000000", Generation: 2}
	var w Work
	for _, m := range []struct {
		d  *time.Duration
		op func() error
	}{
		{&w.Caller, func() error {
			if !ecdsa.VerifyASN1(&key.PublicKey, digest[:], sig) {
				return errors.New("caller's signature does not verify")
			}
			return nil
		}},
		{&w.CSR, func() error {
			req, err := x509.ParseCertificateRequest(csrDER)
			if err == nil {
				_, err = ca.CheckCSR(req)
			}
			return err
		}},
		{&w.Identity, func() error {
			_, err := cas.SignIdentityDER(csr, id, now.Add(-time.Minute), now.Add(20*time.Minute))
			return err
		}},
		{&w.SSH, func() error {
			_, err := cas.SignSSHUser(ca.SSHUserRequest{Key: ks.sshPub, KeyID: "bot=load-0 instance=" + id.Instance,
				Principals: []string{"load"}, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(20 * time.Minute)})
			return err
		}},
	} {
		d, err := cpuPerOp(workRuns, m.op)
		if err != nil {
			return Work{}, err
		}
		*m.d = d
	}
	return w, nil
}

// cpuPerOp runs op n times and returns the process's CPU time per run.
func cpuPerOp(n int, op func() error) (time.Duration, error) {
	runtime.GC()
	start, err := processCPU()
	if err != nil {
		return 0, err
	}
	for range n {
		if err := op(); err != nil {
			return 0, err
		}
	}
	end, err := processCPU()
	if err != nil {
		return 0, err
	}
	return (end - start) / time.Duration(n), nil
}

func processCPU() (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_PROCESS_CPUTIME_ID, &ts); err != nil {
		return 0, err
	}
	return time.Duration(ts.Nano()), nil
}

// floorServer is a running floor server.
type floorServer struct {
	cmd   *exec.Cmd
	stdin io.Closer
	hello floorHello
}

// startFloor starts c.Self as the floor server of the issuer state
// directory dir, on the issuers' CPU if c.Pin, answering with bodies of
// answerBytes.
func startFloor(c Config, dir string, answerBytes int) (*floorServer, error) {
	args := []string{c.Self}
	if c.Pin {
		args = append([]string{"taskset", "-c", "0"}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), floorStateEnv+"="+dir, floorAnswerEnv+"="+strconv.Itoa(answerBytes))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	f := &floorServer{cmd: cmd, stdin: stdin}
	line, err := bufio.NewReader(stdout).ReadBytes('\n')
	if err == nil {
		err = json.Unmarshal(line, &f.hello)
	}
	if err != nil {
		f.close()
		return nil, fmt.Errorf("floor server %s: no address: %v", c.Self, err)
	}
	return f, nil
}

func (f *floorServer) close() {
	f.stdin.Close()
	done := make(chan struct{})
	go func() { f.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		f.cmd.Process.Kill()
		<-done
	}
}

// floor measures the floor with the bots' identities, which it may renew
// (bots[0] is renewed once, to learn a renewal answer's size).
func (e *env) floor(ctx context.Context, bots []bot) (*Floor, error) {
	if e.c.Self == "" {
		return nil, errors.New("no program to serve it (Config.Self)")
	}
	if len(bots) == 0 || len(e.targets) == 0 {
		return nil, errors.New("no bot to measure it with")
	}
	ks, err := newKeySet("load-floor")
	if err != nil {
		return nil, err
	}
	req := api.RenewRequest{Keys: ks.publicKeys(), TTLSeconds: int64(e.c.TTL / time.Second)}
	var creds api.Credentials
	if err := post(ctx, e.targets[0], &bots[0].cert, "/v1/renew", req, &creds); err != nil {
		return nil, fmt.Errorf("a renewal to size the answer: %w", err)
	}
	if bots[0].cert, err = identity(creds, ks.key); err != nil {
		return nil, err
	}
	// The issuer's answer, as httpjson.Write encodes it.
	answer, err := json.MarshalIndent(creds, "", "  ")
	if err != nil {
		return nil, err
	}
	fs, err := startFloor(e.c, e.dir, len(answer)+1)
	if err != nil {
		return nil, err
	}
	defer fs.close()
	t := e.targets[0]
	t.addr = fs.hello.Addr
	fe := &env{c: e.c, log: e.log, pids: []int{fs.cmd.Process.Pid}}
	n := min(e.c.Renewals, floorRequests)
	f := &Floor{Answer: len(answer) + 1, Work: fs.hello.Work}
	e.log.Info("measuring the floor", "requests", 6*n, "answer_bytes", f.Answer)

	f.MTLS = fe.phase(ctx, "floor mTLS", n, func(ctx context.Context, i int) error {
		return post(ctx, t, &bots[i%len(bots)].cert, "/floor", req, nil)
	})
	for _, r := range []struct {
		what   string
		config func(*tls.Config)
	}{
		{"Go's default key exchange", func(*tls.Config) {}},
		{"X25519 only", func(c *tls.Config) { c.CurvePreferences = []tls.CurveID{tls.X25519} }},
		// Go makes a P-256 key from a table, an X25519 one by a full
		// multiplication: the cheaper TLS 1.3 key exchange here.
		{"P-256 only", func(c *tls.Config) { c.CurvePreferences = []tls.CurveID{tls.CurveP256} }},
		{"TLS 1.2, no key exchange", func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 }},
	} {
		cfg := t.tlsConfig()
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
		r.config(cfg)
		name := "floor resumed, " + r.what
		// A first connection leaves a ticket for the others.
		if _, err := postWith(ctx, t, cfg, "/floor", req, nil); err != nil {
			f.Resumed = append(f.Resumed, Resumed{Phase: Phase{Name: name, Failed: 1, FirstError: err.Error()}, What: r.what})
			continue
		}
		var resumed atomic.Int64
		p := fe.phase(ctx, name, n, func(ctx context.Context, i int) error {
			did, err := postWith(ctx, t, cfg, "/floor", req, nil)
			if did {
				resumed.Add(1)
			}
			return err
		})
		f.Resumed = append(f.Resumed, Resumed{Phase: p, What: r.what, Count: int(resumed.Load())})
	}

	tr := &http.Transport{TLSClientConfig: t.tlsConfig(), MaxIdleConnsPerHost: e.c.Concurrency, ForceAttemptHTTP2: false}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	data, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	f.KeptAlive = fe.phase(ctx, "floor kept-alive", n, func(ctx context.Context, i int) error {
		resp, err := hc.Post("https://"+t.addr+"/floor", "application/json", bytes.NewReader(data))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("floor: %s", resp.Status)
		}
		return nil
	})
	return f, nil
}

// describe returns what the floor's work is made of, for the report.
func (w Work) describe() string {
	parts := []string{
		"caller's signature " + ms(w.Caller),
		"CSR " + ms(w.CSR),
		"identity certificate " + ms(w.Identity),
		"SSH certificate " + ms(w.SSH),
	}
	return strings.Join(parts, " + ")
}
