package integration

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/client"
	"github.com/mwi-project/mwi/internal/safefs"
)

// loadCounts are the outcomes the load test counts, shared by its
// goroutines.
type loadCounts struct {
	// auditLog is the issuer's audit log; generations caches the
	// generation of each user certificate serial read from it.
	auditLog    string
	genMu       sync.Mutex
	generations map[string]uint64

	signs, lists        atomic.Int64 // successful agent requests of the clients
	agentFailures       atomic.Int64 // failed agent requests of the clients
	expiredSignatures   atomic.Int64 // signatures by a certificate expired when asked
	badSignatures       atomic.Int64 // signatures that do not verify
	probeSigns          atomic.Int64 // signatures the stale probes obtained
	probeRefusals       atomic.Int64 // refusals of the stale probes
	probeExpiryRefusals atomic.Int64 // of which the certificate had expired
	apiRequests         atomic.Int64
	apiFailures         atomic.Int64
	renewals            atomic.Int64
	renewFailures       atomic.Int64
	reloadsApplied      atomic.Int64 // 200, valid file
	reloadsRefused      atomic.Int64 // 422 reload_failed, invalid file
	reloadFailures      atomic.Int64 // anything else
	// maxGap is the longest time, in nanoseconds, from a client's list
	// to the agent's answer to its signature request: if two renewals
	// fit in it, the listed certificate is no longer held.
	maxGap atomic.Int64
	// seenGeneration is the highest generation seen in mwid's answers:
	// the credentials had been swapped to it by then.
	seenGeneration atomic.Uint64
	// superseded counts signature requests refused for a certificate two
	// generations older than one already seen when the request was sent.
	// mwid keeps only the current credentials and the ones they replaced,
	// so these refusals are by design: a client that takes longer from
	// list to sign than two renewals gets them. They are counted apart.
	superseded atomic.Int64

	mu     sync.Mutex
	errors []string // the first few failures, for the report
}

func (c *loadCounts) gap(d time.Duration) {
	for {
		old := c.maxGap.Load()
		if int64(d) <= old || c.maxGap.CompareAndSwap(old, int64(d)) {
			return
		}
	}
}

// seen records that mwid answered with generation g.
func (c *loadCounts) seen(g uint64) {
	for {
		old := c.seenGeneration.Load()
		if g <= old || c.seenGeneration.CompareAndSwap(old, g) {
			return
		}
	}
}

func (c *loadCounts) fail(counter *atomic.Int64, format string, args ...any) {
	counter.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.errors) < 20 {
		c.errors = append(c.errors, fmt.Sprintf(format, args...))
	}
}

// TestLoadDuringRenewalsAndReloads runs 256 agent clients signing and 32
// API clients polling while mwid goes through 100 renewals and 50 reloads,
// half of them of an invalid file. Every agent and API request must
// succeed, no signature may come from a certificate that had expired, the
// 25 invalid reloads must each be refused with 422, and mwid must be ready
// at the end.
//
// Each agent client keeps its connection and, as ssh does, lists the keys
// and then signs with the one listed; a renewal may swap certificates in
// between, which mwid allows by keeping the previous credentials for
// signing until they expire. It keeps only those: a refusal for a
// certificate two generations older than one mwid had already answered
// with before the request was sent is by design, and counted apart; any
// other refusal is a failure. The renewals are paced, with one pause longer
// than the certificate lifetime, in which a certificate held as the
// previous one expires: eight more "stale" clients keep signing with the
// certificate they listed first until refused, to check that the agent
// refuses it once expired. Their refusals are expected and counted apart.
func TestLoadDuringRenewalsAndReloads(t *testing.T) {
	t.Parallel()
	const (
		agentClients = 256
		staleProbes  = 8
		apiClients   = 32
		renewals     = 100
		reloads      = 50
		ttl          = 10 * time.Second // the shortest mwid allows
		renewEvery   = 250 * time.Millisecond
		reloadEvery  = 600 * time.Millisecond
		// pause, after half the renewals, outlasts ttl: the daemon's own
		// timer renews at about two thirds of it, and the certificate it
		// replaced expires while still held.
		pause    = 12 * time.Second
		hardStop = 150 * time.Second // bounds the whole run if mwid hangs
	)
	iss, d := setup(t, ttl, everyRenewal, allowUnbound)
	ctx, cancel := context.WithTimeout(context.Background(), hardStop)
	defer cancel()

	good, err := os.ReadFile(d.Config)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(good), "\n  level: debug\n") {
		t.Fatalf("test config has no log level line to toggle:\n%s", good)
	}
	levels := []string{"info", "debug"}
	validConfig := func(i int) []byte {
		return []byte(strings.Replace(string(good), "\n  level: debug\n", "\n  level: "+levels[i%2]+"\n", 1))
	}
	invalidConfig := append([]byte(string(good)), "bogus_field: 1\n"...)

	start, err := d.Status(t)
	if err != nil {
		t.Fatal(err)
	}
	n := loadCounts{auditLog: iss.AuditLog}
	stop := make(chan struct{})
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}

	// Connect every agent client first, so that all of them are there
	// through every renewal and reload.
	conns := make([]net.Conn, agentClients+staleProbes)
	for i := range conns {
		c, err := net.Dial("unix", d.AgentSock)
		if err != nil {
			t.Fatalf("agent client %d: %v", i, err)
		}
		c.SetDeadline(time.Now().Add(hardStop + 30*time.Second))
		conns[i] = c
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()

	var clients sync.WaitGroup
	for i := 0; i < agentClients; i++ {
		ag := agent.NewClient(conns[i])
		clients.Go(func() { signLoop(ag, &n, stopped) })
	}
	for i := 0; i < staleProbes; i++ {
		ag := agent.NewClient(conns[agentClients+i])
		clients.Go(func() { staleLoop(ag, &n, stopped) })
	}
	for i := 0; i < apiClients; i++ {
		hc := apiClient(d.APISock)
		clients.Go(func() { pollLoop(hc, &n, stopped) })
	}

	began := time.Now()
	var drivers sync.WaitGroup
	drivers.Go(func() {
		// Each driver has its own client, and so its own connections.
		c := &client.Client{Socket: d.APISock}
		for i := 0; i < renewals && ctx.Err() == nil; i++ {
			if i == renewals/2 {
				time.Sleep(pause)
			}
			if st, err := c.Renew(ctx); err != nil {
				n.fail(&n.renewFailures, "renewal %d: %v", i, err)
			} else {
				n.renewals.Add(1)
				n.seen(st.Generation)
			}
			time.Sleep(renewEvery)
		}
	})
	drivers.Go(func() {
		c := &client.Client{Socket: d.APISock}
		for i := 0; i < reloads && ctx.Err() == nil; i++ {
			valid := i%2 == 0
			data := invalidConfig
			if valid {
				data = validConfig(i / 2)
			}
			// Written as editors do, so the daemon's watcher, if any,
			// never reads half a file.
			if err := safefs.WriteFile(d.Config, data, 0o600); err != nil {
				n.fail(&n.reloadFailures, "reload %d: write config: %v", i, err)
				continue
			}
			_, err := c.Reload(ctx)
			var ce *client.Error
			switch {
			case valid && err == nil:
				n.reloadsApplied.Add(1)
			case !valid && errors.As(err, &ce) && ce.Status == http.StatusUnprocessableEntity && ce.Code == api.CodeReloadFailed:
				n.reloadsRefused.Add(1)
			default:
				n.fail(&n.reloadFailures, "reload %d of a valid=%v file: %v", i, valid, err)
			}
			time.Sleep(reloadEvery)
		}
		// Leave a valid file behind.
		safefs.WriteFile(d.Config, good, 0o600)
	})
	drivers.Wait()
	close(stop)
	clients.Wait()
	elapsed := time.Since(began)

	end, err := d.Status(t)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %d renewals (generation %d to %d), %d reloads applied, %d refused", elapsed.Round(time.Millisecond),
		n.renewals.Load(), start.Generation, end.Generation, n.reloadsApplied.Load(), n.reloadsRefused.Load())
	t.Logf("agent clients: %d lists, %d signatures, %d failed; %d signatures by an expired certificate, %d that do not verify",
		n.lists.Load(), n.signs.Load(), n.agentFailures.Load(), n.expiredSignatures.Load(), n.badSignatures.Load())
	t.Logf("longest list to signature: %s (renewals at least %s apart); %d signatures refused for a certificate renewed twice since",
		time.Duration(n.maxGap.Load()).Round(time.Millisecond), renewEvery, n.superseded.Load())
	t.Logf("stale probes: %d signatures, %d refusals, %d of them of an expired certificate",
		n.probeSigns.Load(), n.probeRefusals.Load(), n.probeExpiryRefusals.Load())
	t.Logf("API clients: %d requests, %d failed", n.apiRequests.Load(), n.apiFailures.Load())
	for _, e := range n.errors {
		t.Log(e)
	}

	if ctx.Err() != nil {
		t.Errorf("the run did not finish within %s", hardStop)
	}
	if got := n.agentFailures.Load(); got != 0 {
		t.Errorf("%d agent requests failed; want none", got)
	}
	if got := n.expiredSignatures.Load(); got != 0 {
		t.Errorf("%d signatures by an expired certificate; want none", got)
	}
	if got := n.badSignatures.Load(); got != 0 {
		t.Errorf("%d signatures do not verify; want none", got)
	}
	if got := n.apiFailures.Load(); got != 0 {
		t.Errorf("%d API requests failed; want none", got)
	}
	if got := n.renewFailures.Load(); got != 0 || n.renewals.Load() != renewals {
		t.Errorf("%d of %d renewals succeeded, %d failed; want all", n.renewals.Load(), renewals, got)
	}
	if got := end.Generation - start.Generation; got < renewals {
		t.Errorf("generation moved by %d; want at least %d renewals", got, renewals)
	}
	if n.reloadsApplied.Load() != reloads/2 || n.reloadsRefused.Load() != reloads/2 || n.reloadFailures.Load() != 0 {
		t.Errorf("reloads: %d applied, %d refused with 422, %d otherwise; want %d, %d and 0",
			n.reloadsApplied.Load(), n.reloadsRefused.Load(), n.reloadFailures.Load(), reloads/2, reloads/2)
	}
	if n.signs.Load() == 0 || n.apiRequests.Load() == 0 {
		t.Error("the clients made no requests")
	}
	if code, rd, err := readiness(apiClient(d.APISock)); err != nil || code != http.StatusOK || !rd.Ready || end.State != "ready" {
		t.Errorf("at the end: /readyz %d %+v %v, state %s; want ready", code, rd, err, end.State)
	}
	if d.Proc.Exited() {
		t.Error("mwid exited")
	}
	if strings.Contains(d.Proc.Output(), "panic") {
		t.Error("mwid logged a panic")
	}
}

// signOnce signs a fresh payload with cert and checks the signature. It
// returns whether the agent signed.
func signOnce(ag agent.Agent, cert *ssh.Certificate, n *loadCounts, probe bool) bool {
	data := make([]byte, 32)
	rand.Read(data)
	seen := n.seenGeneration.Load()
	asked := time.Now()
	sig, err := ag.Sign(cert, data)
	if err != nil {
		if g, ok := n.certGeneration(cert); !probe && ok && seen >= g+2 {
			n.superseded.Add(1)
			return false
		}
		if probe {
			n.probeRefusals.Add(1)
			if expiredAt(cert, asked) {
				n.probeExpiryRefusals.Add(1)
			}
		} else {
			n.fail(&n.agentFailures, "sign with %q (serial %d, valid until %s) asked at %s: %v", cert.KeyId, cert.Serial,
				time.Unix(int64(cert.ValidBefore), 0).Format(time.RFC3339), asked.Format(time.RFC3339Nano), err)
		}
		return false
	}
	if probe {
		n.probeSigns.Add(1)
	} else {
		n.signs.Add(1)
	}
	if expiredAt(cert, asked) {
		n.fail(&n.expiredSignatures, "signature by %q (serial %d), expired at %s, asked at %s", cert.KeyId, cert.Serial,
			time.Unix(int64(cert.ValidBefore), 0).Format(time.RFC3339), asked.Format(time.RFC3339Nano))
	}
	if err := cert.Key.Verify(data, sig); err != nil {
		n.fail(&n.badSignatures, "signature by %q does not verify: %v", cert.KeyId, err)
	}
	return true
}

// list lists the agent's one certificate, counting a failure otherwise.
func list(ag agent.Agent, n *loadCounts) *ssh.Certificate {
	asked := time.Now()
	certs, err := listedCerts(ag)
	if err == nil && len(certs) != 1 {
		err = fmt.Errorf("%d certificates listed, want 1", len(certs))
	}
	if err != nil {
		n.fail(&n.agentFailures, "list at %s: %v", asked.Format(time.RFC3339Nano), err)
		return nil
	}
	n.lists.Add(1)
	if expiredAt(certs[0], asked) {
		n.fail(&n.expiredSignatures, "listed %q, expired at %s, at %s", certs[0].KeyId,
			time.Unix(int64(certs[0].ValidBefore), 0).Format(time.RFC3339), asked.Format(time.RFC3339Nano))
	}
	return certs[0]
}

// signLoop lists and signs with the listed certificate, as ssh does for
// each connection, until stopped.
func signLoop(ag agent.Agent, n *loadCounts, stopped func() bool) {
	for !stopped() {
		listed := time.Now()
		cert := list(ag, n)
		if cert == nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		signOnce(ag, cert, n, false)
		n.gap(time.Since(listed))
	}
}

// staleLoop holds on to the certificate it listed and signs with it every
// 50ms until the agent refuses, then lists again.
func staleLoop(ag agent.Agent, n *loadCounts, stopped func() bool) {
	for !stopped() {
		cert := list(ag, n)
		for cert != nil && !stopped() && signOnce(ag, cert, n, true) {
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pollLoop asks for /v1/status and /readyz in turn until stopped; every
// answer must be a 200 showing mwid ready.
func pollLoop(hc *http.Client, n *loadCounts, stopped func() bool) {
	for i := 0; !stopped(); i++ {
		n.apiRequests.Add(1)
		if i%2 == 0 {
			code, rd, err := readiness(hc)
			if err != nil || code != http.StatusOK || !rd.Ready {
				n.fail(&n.apiFailures, "/readyz: %d %+v %v", code, rd, err)
			}
		} else if err := pollStatus(hc, n); err != nil {
			n.fail(&n.apiFailures, "/v1/status: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func pollStatus(hc *http.Client, n *loadCounts) error {
	res, err := hc.Get("http://mwid/v1/status")
	if err != nil {
		return err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return err
	}
	var st api.Status
	if err := json.Unmarshal(body, &st); err != nil || res.StatusCode != http.StatusOK {
		return fmt.Errorf("%d %s (%v)", res.StatusCode, body, err)
	}
	n.seen(st.Generation)
	if st.State != "ready" {
		return fmt.Errorf("state %s, last error %q", st.State, st.LastError)
	}
	return nil
}

// certGeneration reads the generation of a user certificate from the
// issuer's audit record of its issuance, which names its serial: the key
// ID ("bot=NAME instance=ID") carries none, so that a KRL entry revokes
// every certificate of an instance.
func (n *loadCounts) certGeneration(c *ssh.Certificate) (uint64, bool) {
	serial := strconv.FormatUint(c.Serial, 10)
	n.genMu.Lock()
	defer n.genMu.Unlock()
	if g, ok := n.generations[serial]; ok {
		return g, true
	}
	data, err := os.ReadFile(n.auditLog)
	if err != nil {
		return 0, false
	}
	if n.generations == nil {
		n.generations = make(map[string]uint64)
	}
	for _, line := range strings.Split(string(data), "\n") {
		var rec struct {
			Serial     string `json:"ssh_serial"`
			Generation uint64 `json:"generation"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Serial != "" {
			n.generations[rec.Serial] = rec.Generation
		}
	}
	g, ok := n.generations[serial]
	return g, ok
}
