package integration

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/integration/harness"
	"github.com/mwi-project/mwi/internal/sshaccess"
	"github.com/mwi-project/mwi/issuer/ca"
)

// TestLockPublishedAsKRL locks a bot with mwi-issuer lock add and checks
// what hosts see: GET /v1/locks (with the bot's identity) lists the lock,
// and the KRL that anyone may fetch from GET /v1/ssh/krl revokes, as
// ssh-keygen -Q reads it, a user certificate of the issuer's CA with the
// key ID of the bot's instance, until lock rm lifts it. Lock and unlock
// are audited, and so is a refusal a host reports.
func TestLockPublishedAsKRL(t *testing.T) {
	t.Parallel()
	keygen := harness.Require(t, "ssh-keygen", "apt-get install -y --no-install-recommends openssh-client")
	iss := harness.StartIssuer(t, resources(harness.CurrentUser(t)))
	_, creds := joinDirect(t, iss, iss.CreateToken(t, "ci", time.Hour))
	authorities, err := ca.Load(iss.State)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(authorities.TLSCA())
	client := func(certs ...tls.Certificate) *http.Client {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: certs}}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 10 * time.Second}
	}
	anonymous, host := client(), client(*creds.TLS)
	fetch := func(c *http.Client, path, etag string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "https://"+iss.Addr+path, nil)
		if etag != "" {
			req.Header.Set("If-None-Match", etag)
		}
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res, body
	}

	// A certificate with the key ID the issuer gives the instance's user
	// certificates, signed by the issuer's user CA.
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	pub, _ := ssh.NewPublicKey(priv.Public())
	now := time.Now()
	cert, err := authorities.SignSSHUser(ca.SSHUserRequest{Key: pub, KeyID: sshaccess.KeyID("ci", creds.Instance),
		Principals: []string{"deploy"}, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certPath, krlPath := filepath.Join(dir, "cert.pub"), filepath.Join(dir, "revoked_keys.krl")
	if err := os.WriteFile(certPath, ssh.MarshalAuthorizedKey(cert), 0o600); err != nil {
		t.Fatal(err)
	}
	revoked := func(krl []byte) bool {
		t.Helper()
		if err := os.WriteFile(krlPath, krl, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(keygen, "-Q", "-f", krlPath, certPath).CombinedOutput()
		if err != nil && !bytes.Contains(out, []byte("REVOKED")) {
			t.Fatalf("ssh-keygen -Q: %v\n%s", err, out)
		}
		return err != nil
	}
	admin := func(args ...string) string {
		t.Helper()
		out, err := harness.Run(context.Background(), 10*time.Second, nil, append([]string{iss.Bins.Issuer}, append(args, "--admin-socket", iss.AdminSock)...)...)
		if err != nil {
			t.Fatalf("mwi-issuer %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}

	res, krl := fetch(anonymous, "/v1/ssh/krl", "")
	if res.StatusCode != http.StatusOK || revoked(krl) {
		t.Fatalf("KRL before any lock: %d, revoked %v", res.StatusCode, revoked(krl))
	}
	krlTag := res.Header.Get("ETag")
	if res, _ := fetch(anonymous, "/v1/locks", ""); res.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /v1/locks without an identity: %d, want 401", res.StatusCode)
	}

	if out := admin("lock", "add", "--bot", "ci", "--ttl", "1h", "--message", "compromised runner"); !strings.Contains(out, "bot ci locked until") {
		t.Errorf("lock add: %s", out)
	}
	res, body := fetch(host, "/v1/locks", "")
	var list api.LockList
	if res.StatusCode != http.StatusOK || json.Unmarshal(body, &list) != nil || len(list.Locks) != 1 || list.Locks[0].Bot != "ci" || list.Locks[0].Expires.IsZero() {
		t.Errorf("GET /v1/locks: %d %s", res.StatusCode, body)
	}
	if res, _ := fetch(host, "/v1/locks", res.Header.Get("ETag")); res.StatusCode != http.StatusNotModified {
		t.Errorf("GET /v1/locks with its ETag: %d, want 304", res.StatusCode)
	}
	res, krl = fetch(anonymous, "/v1/ssh/krl", krlTag)
	if res.StatusCode != http.StatusOK || !revoked(krl) {
		t.Errorf("KRL after lock add: %d, revoked %v; want the certificate revoked", res.StatusCode, revoked(krl))
	}
	if out, err := exec.Command(keygen, "-Q", "-l", "-f", krlPath).CombinedOutput(); err != nil || !strings.Contains(string(out), sshaccess.KeyID("ci", creds.Instance)) {
		t.Errorf("ssh-keygen -Q -l: %v\n%s", err, out)
	}
	if out := admin("lock", "ls", "--format", "yaml"); !strings.Contains(out, "compromised runner") || !strings.Contains(out, "expires:") {
		t.Errorf("lock ls --format yaml:\n%s", out)
	}

	// A host reports a refusal to the audit log.
	data, _ := json.Marshal(api.SSHRefusal{Login: "deploy", Bot: "ci", Instance: creds.Instance, Reason: "bot ci is locked", Host: "db-1"})
	if res, err := host.Post("https://"+iss.Addr+"/v1/audit/ssh-refusal", "application/json", bytes.NewReader(data)); err != nil || res.StatusCode != http.StatusNoContent {
		t.Errorf("POST /v1/audit/ssh-refusal: %v %v", res, err)
	} else {
		res.Body.Close()
	}

	if out := admin("lock", "rm", "--bot", "ci"); !strings.Contains(out, "bot ci unlocked") {
		t.Errorf("lock rm: %s", out)
	}
	if _, krl = fetch(anonymous, "/v1/ssh/krl", ""); revoked(krl) {
		t.Error("the KRL still revokes the certificate after lock rm")
	}

	logged, err := os.ReadFile(iss.AuditLog)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"event":"bot.lock","outcome":"allowed"`, `"event":"bot.unlock","outcome":"allowed"`,
		`"event":"ssh_refused","outcome":"denied"`, `"reporter_instance":"` + creds.Instance + `"`} {
		if !bytes.Contains(logged, []byte(want)) {
			t.Errorf("the audit log has no %s", want)
		}
	}
}
