package loadgen

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"os"
	"strings"
	"testing"
	"time"
)

func TestProcStat(t *testing.T) {
	// Spend a little CPU so that the count is not zero.
	deadline := time.Now().Add(30 * time.Millisecond)
	for time.Now().Before(deadline) {
	}
	u, ppid, err := procStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if ppid != os.Getppid() {
		t.Errorf("parent = %d, want %d", ppid, os.Getppid())
	}
	if u.cpu <= 0 || u.minorFaults == 0 {
		t.Errorf("usage %+v: want CPU time and minor faults", u)
	}
	if _, _, err := procStat(-1); err == nil {
		t.Error("procStat(-1) succeeded")
	}
}

func TestPercentiles(t *testing.T) {
	var ds []time.Duration
	for i := range 100 {
		ds = append(ds, time.Duration(100-i)*time.Millisecond)
	}
	p50, p99 := percentiles(ds)
	if p50 != 51*time.Millisecond || p99 != 100*time.Millisecond {
		t.Errorf("p50, p99 = %v, %v; want 51ms, 100ms", p50, p99)
	}
	if p50, p99 := percentiles(nil); p50 != 0 || p99 != 0 {
		t.Errorf("of nothing: %v, %v", p50, p99)
	}
}

// TestJWKToken checks the step-ca token: an ES256 JWT that verifies
// with the provisioner's key, with the claims step-ca's JWK provisioner
// reads.
func TestJWKToken(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	kid := jwkThumbprint(&key.PublicKey)
	tok, err := jwkToken(key, kid, "loadgen", "load-1", "https://127.0.0.1:9/1.0/ssh/sign", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		t.Fatalf("signature: %d bytes, %v", len(sig), err)
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if !ecdsa.Verify(&key.PublicKey, sum[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		t.Error("the token's signature does not verify")
	}
	var header map[string]string
	var claims struct {
		Iss, Sub, Aud, Jti string
		Step               struct {
			SSH struct {
				CertType   string   `json:"certType"`
				KeyID      string   `json:"keyID"`
				Principals []string `json:"principals"`
			} `json:"ssh"`
		} `json:"step"`
	}
	for i, v := range []any{&header, &claims} {
		data, _ := base64.RawURLEncoding.DecodeString(parts[i])
		if err := json.Unmarshal(data, v); err != nil {
			t.Fatal(err)
		}
	}
	if header["alg"] != "ES256" || header["kid"] != kid {
		t.Errorf("header %v", header)
	}
	if claims.Iss != "loadgen" || claims.Sub != "load-1" || claims.Jti == "" || claims.Step.SSH.KeyID != "load-1" || claims.Step.SSH.CertType != "user" {
		t.Errorf("claims %+v", claims)
	}
}

// TestPrintFloor checks the floor's part of the report: each floor, the
// work, and each lower bound's verdict against the CPU target.
func TestPrintFloor(t *testing.T) {
	phase := func(name string, cpu time.Duration) Phase {
		return Phase{Name: name, OK: 100, Issuer: usage{cpu: 100 * cpu}}
	}
	renew := phase("renew", 2*time.Millisecond)
	r := &Report{
		Renew: &renew,
		Floor: &Floor{
			Answer:    2016,
			MTLS:      phase("floor mTLS", time.Millisecond),
			KeptAlive: phase("floor kept-alive", 80*time.Microsecond),
			Resumed: []Resumed{
				{Phase: phase("floor resumed, a", 600*time.Microsecond), What: "a", Count: 100},
				{Phase: phase("floor resumed, b", 450*time.Microsecond), What: "b", Count: 100},
				{Phase: phase("floor resumed, c", 300*time.Microsecond), What: "c", Count: 100},
				{Phase: phase("floor resumed, d", 300*time.Microsecond), What: "d", Count: 98},
			},
			Work: Work{Caller: 100 * time.Microsecond, CSR: 100 * time.Microsecond, Identity: 250 * time.Microsecond, SSH: 50 * time.Microsecond},
		},
	}
	var b strings.Builder
	r.Print(&b)
	// Columns are padded: compare with runs of spaces made one.
	out := strings.Join(strings.Fields(b.String()), " ")
	for _, w := range []string{
		"2016-byte answers",
		"floor CPU/request, new connection, client certificate (as renewals) (ms) 1.000",
		"floor CPU/request, resumed, no client certificate, a (ms) 0.600 (100 of 100 resumed)",
		"floor CPU/request, resumed, no client certificate, d (ms) 0.300 (98 of 100 resumed)",
		"floor CPU/request, kept-alive connection (ms) 0.080",
		"renewal's public-key work, issuer's keys (ms) 0.500",
		"renewal lower bound, resumed, a (ms) 1.100 <= 0.900 1.22 NOT reachable",
		"renewal lower bound, resumed, b (ms) 0.950 <= 0.900 1.06 NOT reachable",
		"renewal lower bound, resumed, c (ms) 0.800 <= 0.900 0.89 not ruled out",
		"renewal lower bound, resumed, d (ms) 0.800 <= 0.900 0.89 no verdict: phase incomplete",
		"renewal CPU above its floor (ms) 1.000",
		"caller's signature 0.100 + CSR 0.100 + identity certificate 0.250 + SSH certificate 0.050",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("report lacks %q:\n%s", w, b.String())
		}
	}
}
