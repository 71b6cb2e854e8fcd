package authority_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/fault"
	"github.com/mwi-project/mwi/internal/httpjson"
	"github.com/mwi-project/mwi/issuer/audit"
	"github.com/mwi-project/mwi/issuer/authority"
	"github.com/mwi-project/mwi/issuer/ca"
	"github.com/mwi-project/mwi/issuer/resource"
	"github.com/mwi-project/mwi/issuer/store"
)

// resourcesYAML defines:
//
//	ci:   roles deploy (1h) and viewer (2h); logins alice, deploy, viewer
//	web:  role viewer; login viewer; max TTL 2h
//	mute: role nologin; no logins at all
const resourcesYAML = `kind: role
version: v1
metadata:
  name: deploy
spec:
  allow:
    logins: [deploy, "{{internal.logins}}"]
  options:
    max_ttl: 1h
---
kind: role
version: v1
metadata:
  name: viewer
spec:
  allow:
    logins: [viewer]
  options:
    max_ttl: 2h
---
kind: role
version: v1
metadata:
  name: nologin
---
kind: bot
version: v1
metadata:
  name: ci
spec:
  roles: [deploy, viewer]
  traits:
    logins: [alice]
---
kind: bot
version: v1
metadata:
  name: web
spec:
  roles: [viewer]
---
kind: bot
version: v1
metadata:
  name: mute
spec:
  roles: [nologin]
`

// env is an authority over a real CA, store and resource set, with a clock
// the test moves by hand.
type env struct {
	auth  *authority.Authority
	ca    *ca.Authority
	store store.Store
	audit *bytes.Buffer
	now   time.Time
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	stateDir := filepath.Join(dir, "state")
	if err := ca.Init(stateDir, []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	authorities, err := ca.Load(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(dir, "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &env{
		ca:    authorities,
		store: st,
		audit: &bytes.Buffer{},
		// Whole seconds, so that SSH validity (in seconds) compares exactly.
		now: time.Now().Truncate(time.Second),
	}
	e.auth = &authority.Authority{
		CA:    authorities,
		Store: st,
		Audit: audit.New(e.audit),
		Now:   func() time.Time { return e.now },
	}
	e.auth.SetResources(loadResources(t, resourcesYAML))
	return e
}

func loadResources(t *testing.T, yaml string) *resource.Set {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "resources.yaml"), []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	set, err := resource.LoadDir(dir)
	if err != nil {
		t.Fatalf("LoadDir: %v", err)
	}
	return set
}

// token creates a join token for bot valid for an hour.
func (e *env) token(t *testing.T, bot string) string {
	t.Helper()
	resp, err := e.auth.CreateToken(context.Background(), bot, time.Hour)
	if err != nil {
		t.Fatalf("CreateToken(%s): %v", bot, err)
	}
	return resp.Token
}

// auditLines returns the audit lines written since offset, decoded.
func (e *env) auditLines(t *testing.T, offset int) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(e.audit.String()[offset:]), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("audit line is not JSON: %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// expectDenied checks that err is a *fault.Error with code and status,
// and that exactly the audit lines since offset include a denial of event
// with a reason.
func (e *env) expectDenied(t *testing.T, err error, offset int, event, code string, status int) {
	t.Helper()
	var herr *fault.Error
	if !errors.As(err, &herr) {
		t.Fatalf("error = %v (%T), want a *fault.Error with code %s", err, err, code)
	}
	if herr.Code != code || httpjson.Status(herr.Kind) != status {
		t.Errorf("error = %d %s (%s), want %d %s", httpjson.Status(herr.Kind), herr.Code, herr.Message, status, code)
	}
	if herr.Message == "" {
		t.Error("error has no message")
	}
	var denials int
	for _, l := range e.auditLines(t, offset) {
		if l["outcome"] == audit.Denied {
			denials++
			if l["event"] != event {
				t.Errorf("denial audited as event %v, want %s", l["event"], event)
			}
			if r, _ := l["reason"].(string); r == "" {
				t.Errorf("denial audited without a reason: %v", l)
			}
		}
		if l["outcome"] == audit.Allowed && l["identity_serial"] != nil {
			t.Errorf("a denied request issued a certificate: %v", l)
		}
	}
	if denials != 1 {
		t.Errorf("%d denied audit lines, want 1:\n%s", denials, e.audit.String()[offset:])
	}
}

type keyPair struct {
	pub     api.PublicKeys
	idKey   crypto.Signer
	sshPub  ssh.PublicKey
	sshPriv ed25519.PrivateKey
}

// newKeys makes what mwid sends: an identity CSR and an SSH public key.
func newKeys(t *testing.T) keyPair {
	t.Helper()
	idKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sshPubRaw, sshPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(sshPubRaw)
	if err != nil {
		t.Fatal(err)
	}
	return keyPair{
		pub:     api.PublicKeys{IdentityCSR: csrPEM(t, idKey), SSH: string(ssh.MarshalAuthorizedKey(sshPub))},
		idKey:   idKey,
		sshPub:  sshPub,
		sshPriv: sshPriv,
	}
}

func csrPEM(t *testing.T, key crypto.Signer) string {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "mwid"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func parseCreds(t *testing.T, e *env, creds api.Credentials) (*x509.Certificate, ca.Identity, *ssh.Certificate) {
	t.Helper()
	block, _ := pem.Decode([]byte(creds.IdentityCertificate))
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("identity certificate is not PEM: %q", creds.IdentityCertificate)
	}
	idCert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := idCert.Verify(x509.VerifyOptions{
		Roots:       e.ca.IdentityPool(),
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		CurrentTime: e.now,
	}); err != nil {
		t.Errorf("identity certificate does not verify: %v", err)
	}
	id, err := ca.ParseIdentity(idCert)
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(creds.SSHCertificate))
	if err != nil {
		t.Fatal(err)
	}
	cert, ok := pub.(*ssh.Certificate)
	if !ok {
		t.Fatalf("SSH certificate is a %T", pub)
	}
	return idCert, id, cert
}

func (e *env) join(t *testing.T, tok string, logins ...string) api.Credentials {
	t.Helper()
	creds, err := e.auth.Join(context.Background(), api.JoinRequest{
		JoinMethod: api.JoinMethodToken, Token: tok, Keys: newKeys(t).pub, SSHLogins: logins, TTLSeconds: 600,
	}, nil, "192.0.2.1:1234")
	if err != nil {
		t.Fatalf("Join: %v", err)
	}
	return creds
}

func (e *env) renew(t *testing.T, id ca.Identity) (api.Credentials, error) {
	t.Helper()
	return e.auth.Renew(context.Background(), id, api.RenewRequest{Keys: newKeys(t).pub, TTLSeconds: 600}, "192.0.2.1:1234")
}

func TestJoin(t *testing.T) {
	for _, tc := range []struct {
		name       string
		bot        string
		logins     []string
		ttlSeconds int64
		wantLogins []string
		wantTTL    time.Duration
	}{
		{"every login, TTL capped by the strictest role", "ci", nil, 86400, []string{"alice", "deploy", "viewer"}, time.Hour},
		{"chosen logins, sorted and deduplicated", "ci", []string{"viewer", "alice", "viewer"}, 600, []string{"alice", "viewer"}, 10 * time.Minute},
		{"TTL below the minimum", "ci", []string{"deploy"}, 1, []string{"deploy"}, authority.MinTTL},
		{"TTL exactly the cap", "ci", nil, 3600, []string{"alice", "deploy", "viewer"}, time.Hour},
		{"one year is the longest asked TTL", "web", nil, 365 * 24 * 3600, []string{"viewer"}, 2 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			tok := e.token(t, tc.bot)
			keys := newKeys(t)
			offset := e.audit.Len()
			creds, err := e.auth.Join(context.Background(), api.JoinRequest{
				JoinMethod: api.JoinMethodToken,
				Token:      tok,
				Keys:       keys.pub,
				SSHLogins:  tc.logins,
				TTLSeconds: tc.ttlSeconds,
			}, nil, "192.0.2.1:1234")
			if err != nil {
				t.Fatalf("Join: %v", err)
			}
			if creds.Bot != tc.bot || creds.Generation != 1 || creds.Instance == "" {
				t.Errorf("credentials = bot %q instance %q generation %d", creds.Bot, creds.Instance, creds.Generation)
			}
			if want := e.now.Add(tc.wantTTL); !creds.Expires.Equal(want) {
				t.Errorf("Expires = %v, want %v", creds.Expires, want)
			}

			idCert, id, sshCert := parseCreds(t, e, creds)
			if want := (ca.Identity{Bot: tc.bot, Instance: creds.Instance, Generation: 1}); id != want {
				t.Errorf("identity = %+v, want %+v", id, want)
			}
			if pub, ok := idCert.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(keys.idKey.Public()) {
				t.Error("identity certificate is not for the requested key")
			}
			if !idCert.NotAfter.Equal(e.now.Add(tc.wantTTL)) {
				t.Errorf("identity NotAfter = %v, want %v", idCert.NotAfter, e.now.Add(tc.wantTTL))
			}
			if !idCert.NotBefore.Before(e.now) {
				t.Errorf("identity NotBefore = %v is not backdated from %v", idCert.NotBefore, e.now)
			}

			if !slices.Equal(sshCert.ValidPrincipals, tc.wantLogins) {
				t.Errorf("principals = %q, want %q", sshCert.ValidPrincipals, tc.wantLogins)
			}
			if want := fmt.Sprintf("bot=%s instance=%s", tc.bot, creds.Instance); sshCert.KeyId != want {
				t.Errorf("KeyId = %q, want %q", sshCert.KeyId, want)
			}
			if !bytes.Equal(sshCert.Key.Marshal(), keys.sshPub.Marshal()) {
				t.Error("SSH certificate is not for the requested key")
			}
			if got, want := time.Duration(sshCert.ValidBefore-uint64(e.now.Unix()))*time.Second, tc.wantTTL; got != want {
				t.Errorf("SSH certificate lasts %v from now, want %v", got, want)
			}
			if sshCert.ValidAfter >= uint64(e.now.Unix()) {
				t.Errorf("SSH ValidAfter = %d is not backdated from %d", sshCert.ValidAfter, e.now.Unix())
			}
			checker := &ssh.CertChecker{
				IsUserAuthority: func(k ssh.PublicKey) bool { return bytes.Equal(k.Marshal(), e.ca.SSHUserCA().Marshal()) },
				Clock:           func() time.Time { return e.now },
			}
			if err := checker.CheckCert(tc.wantLogins[0], sshCert); err != nil {
				t.Errorf("SSH certificate does not verify: %v", err)
			}

			in, err := e.store.Instance(context.Background(), creds.Instance)
			if err != nil {
				t.Fatal(err)
			}
			if in.Bot != tc.bot || in.Generation != 1 {
				t.Errorf("stored instance = %+v", in)
			}

			// Audit: one allowed join naming the two certificates issued,
			// none denied.
			var joins int
			for _, l := range e.auditLines(t, offset) {
				switch {
				case l["outcome"] != audit.Allowed:
					t.Errorf("audit line not allowed: %v", l)
				case l["event"] == audit.EventJoin:
					joins++
					if l["bot"] != tc.bot || l["instance"] != creds.Instance || l["remote"] != "192.0.2.1:1234" ||
						l["identity_serial"] == nil || l["ssh_serial"] == nil || l["code"] != "MWI1001I" {
						t.Errorf("join audit line = %v", l)
					}
				default:
					t.Errorf("audit line other than the join: %v", l)
				}
			}
			if joins != 1 {
				t.Errorf("audit: %d joins, want 1", joins)
			}
			if strings.Contains(e.audit.String(), tok) {
				t.Error("the audit log holds the token secret")
			}
		})
	}
}

func TestJoinTokenRefusals(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()

	used := e.token(t, "ci")
	e.join(t, used)

	shortLived, err := e.auth.CreateToken(ctx, "ci", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	exact, err := e.auth.CreateToken(ctx, "ci", 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	usedThenExpired := e.token(t, "ci")
	e.join(t, usedThenExpired)
	e.now = e.now.Add(2 * time.Minute)
	_ = exact // expires exactly at the new now

	for _, tc := range []struct {
		name  string
		token string
		code  string
	}{
		{"unknown", "0000000000000000000000000000000000000000000000000000000000000000", api.CodeTokenUnknown},
		{"the hash instead of the secret", authority.HashToken(e.token(t, "ci")), api.CodeTokenUnknown},
		{"used", used, api.CodeTokenUsed},
		{"expired", shortLived.Token, api.CodeTokenExpired},
		{"expiring now", exact.Token, api.CodeTokenExpired},
		{"used and since expired", usedThenExpired, api.CodeTokenUsed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			offset := e.audit.Len()
			_, err := e.auth.Join(ctx, api.JoinRequest{
				JoinMethod: api.JoinMethodToken, Token: tc.token, Keys: newKeys(t).pub, TTLSeconds: 600,
			}, nil, "192.0.2.1:1234")
			e.expectDenied(t, err, offset, audit.EventJoin, tc.code, http.StatusForbidden)
		})
	}
}

func TestJoinBadRequest(t *testing.T) {
	e := newEnv(t)
	tok := e.token(t, "ci")
	good := newKeys(t).pub

	rsaKey, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	weakSSH, err := ssh.NewPublicKey(&rsaKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	// An SSH certificate in place of a key.
	sshCert, err := e.ca.SignSSHUser(ca.SSHUserRequest{Key: newKeys(t).sshPub, KeyID: "x", Principals: []string{"deploy"}, NotBefore: e.now, NotAfter: e.now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	// A CSR whose signature does not verify.
	badSig := func() string {
		block, _ := pem.Decode([]byte(good.IdentityCSR))
		der := slices.Clone(block.Bytes)
		der[len(der)-1] ^= 0xff
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	}()
	certInsteadOfCSR := func() string {
		block, _ := pem.Decode([]byte(good.IdentityCSR))
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: block.Bytes}))
	}()

	for _, tc := range []struct {
		name string
		req  func(r *api.JoinRequest)
	}{
		{"unsupported join method", func(r *api.JoinRequest) { r.JoinMethod = "aws" }},
		{"missing join method", func(r *api.JoinRequest) { r.JoinMethod = "" }},
		{"empty token", func(r *api.JoinRequest) { r.Token = "" }},
		{"missing CSR", func(r *api.JoinRequest) { r.Keys.IdentityCSR = "" }},
		{"CSR not PEM", func(r *api.JoinRequest) { r.Keys.IdentityCSR = "hello" }},
		{"CSR in a CERTIFICATE block", func(r *api.JoinRequest) { r.Keys.IdentityCSR = certInsteadOfCSR }},
		{"CSR garbage DER", func(r *api.JoinRequest) {
			r.Keys.IdentityCSR = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte("junk")}))
		}},
		{"CSR signature does not verify", func(r *api.JoinRequest) { r.Keys.IdentityCSR = badSig }},
		{"CSR with a weak RSA key", func(r *api.JoinRequest) { r.Keys.IdentityCSR = csrPEM(t, rsaKey) }},
		{"missing SSH key", func(r *api.JoinRequest) { r.Keys.SSH = "" }},
		{"SSH key garbage", func(r *api.JoinRequest) { r.Keys.SSH = "ssh-ed25519 AAAA!!!" }},
		{"SSH certificate instead of key", func(r *api.JoinRequest) { r.Keys.SSH = string(ssh.MarshalAuthorizedKey(sshCert)) }},
		{"SSH key weak RSA", func(r *api.JoinRequest) { r.Keys.SSH = string(ssh.MarshalAuthorizedKey(weakSSH)) }},
		{"ttl_seconds zero", func(r *api.JoinRequest) { r.TTLSeconds = 0 }},
		{"ttl_seconds negative", func(r *api.JoinRequest) { r.TTLSeconds = -1 }},
		{"ttl_seconds over a year", func(r *api.JoinRequest) { r.TTLSeconds = 365*24*3600 + 1 }},
		{"ttl_seconds overflowing a Duration", func(r *api.JoinRequest) { r.TTLSeconds = 1 << 62 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := api.JoinRequest{JoinMethod: api.JoinMethodToken, Token: tok, Keys: good, TTLSeconds: 600}
			tc.req(&req)
			offset := e.audit.Len()
			_, err := e.auth.Join(context.Background(), req, nil, "192.0.2.1:1234")
			e.expectDenied(t, err, offset, audit.EventJoin, api.CodeBadRequest, http.StatusBadRequest)
		})
	}

	// None of these consumed the token.
	e.join(t, tok)
}

func TestJoinLoginNotAllowedKeepsToken(t *testing.T) {
	e := newEnv(t)
	tok := e.token(t, "ci")
	for _, logins := range [][]string{{"root"}, {"deploy", "root"}, {"{{internal.logins}}"}, {""}} {
		t.Run(strings.Join(logins, ","), func(t *testing.T) {
			offset := e.audit.Len()
			_, err := e.auth.Join(context.Background(), api.JoinRequest{
				JoinMethod: api.JoinMethodToken, Token: tok, Keys: newKeys(t).pub, SSHLogins: logins, TTLSeconds: 600,
			}, nil, "192.0.2.1:1234")
			e.expectDenied(t, err, offset, audit.EventJoin, api.CodeLoginNotAllowed, http.StatusForbidden)
		})
	}
	// The token is still usable.
	creds := e.join(t, tok, "deploy")
	_, _, cert := parseCreds(t, e, creds)
	if !slices.Equal(cert.ValidPrincipals, []string{"deploy"}) {
		t.Errorf("principals = %q", cert.ValidPrincipals)
	}
	// And now it is used.
	offset := e.audit.Len()
	_, err := e.auth.Join(context.Background(), api.JoinRequest{
		JoinMethod: api.JoinMethodToken, Token: tok, Keys: newKeys(t).pub, TTLSeconds: 600,
	}, nil, "192.0.2.1:1234")
	e.expectDenied(t, err, offset, audit.EventJoin, api.CodeTokenUsed, http.StatusForbidden)
}

// TestJoinBotWithoutLogins checks that a bot whose roles allow no logins,
// such as an SSH server that needs only a host certificate, joins and gets
// no user certificate, and that asking it for a login is still refused.
func TestJoinBotWithoutLogins(t *testing.T) {
	e := newEnv(t)
	creds := e.join(t, e.token(t, "mute"))
	if creds.SSHCertificate != "" || creds.IdentityCertificate == "" {
		t.Fatalf("credentials = %+v; want an identity and no SSH user certificate", creds)
	}
	offset := e.audit.Len()
	_, err := e.auth.Join(context.Background(), api.JoinRequest{
		JoinMethod: api.JoinMethodToken, Token: e.token(t, "mute"), Keys: newKeys(t).pub, SSHLogins: []string{"root"}, TTLSeconds: 600,
	}, nil, "192.0.2.1:1234")
	e.expectDenied(t, err, offset, audit.EventJoin, api.CodeLoginNotAllowed, http.StatusForbidden)
}

func TestJoinBotRefusals(t *testing.T) {
	t.Run("bot removed from the resources after the token was made", func(t *testing.T) {
		e := newEnv(t)
		tok := e.token(t, "web")
		e.auth.SetResources(loadResources(t, strings.SplitN(resourcesYAML, "---\nkind: bot\nversion: v1\nmetadata:\n  name: web", 2)[0]))
		if _, ok := e.auth.Resources().Bot("web"); ok {
			t.Fatal("test resources still define web")
		}
		offset := e.audit.Len()
		_, err := e.auth.Join(context.Background(), api.JoinRequest{
			JoinMethod: api.JoinMethodToken, Token: tok, Keys: newKeys(t).pub, TTLSeconds: 600,
		}, nil, "192.0.2.1:1234")
		e.expectDenied(t, err, offset, audit.EventJoin, api.CodeBotUnknown, http.StatusForbidden)
	})
}

func TestJoinRace(t *testing.T) {
	e := newEnv(t)
	tok := e.token(t, "ci")
	const n = 8
	reqs := make([]api.JoinRequest, n)
	for i := range reqs {
		reqs[i] = api.JoinRequest{JoinMethod: api.JoinMethodToken, Token: tok, Keys: newKeys(t).pub, TTLSeconds: 600}
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, errs[i] = e.auth.Join(context.Background(), reqs[i], nil, "192.0.2.1:1234")
		})
	}
	wg.Wait()
	var ok int
	for _, err := range errs {
		var herr *fault.Error
		switch {
		case err == nil:
			ok++
		case errors.As(err, &herr) && herr.Code == api.CodeTokenUsed:
		default:
			t.Errorf("Join: %v, want success or token_used", err)
		}
	}
	if ok != 1 {
		t.Errorf("%d joins succeeded with one token, want 1", ok)
	}
}

func TestRenew(t *testing.T) {
	e := newEnv(t)
	creds := e.join(t, e.token(t, "ci"))
	id := ca.Identity{Bot: "ci", Instance: creds.Instance, Generation: 1}

	for gen := uint64(2); gen <= 4; gen++ {
		e.now = e.now.Add(10 * time.Minute)
		offset := e.audit.Len()
		keys := newKeys(t)
		got, err := e.auth.Renew(context.Background(), id, api.RenewRequest{Keys: keys.pub, SSHLogins: []string{"viewer"}, TTLSeconds: 86400}, "192.0.2.1:1234")
		if err != nil {
			t.Fatalf("Renew generation %d: %v", id.Generation, err)
		}
		if got.Generation != gen || got.Instance != creds.Instance || got.Bot != "ci" {
			t.Errorf("renewed credentials = %s/%s/%d, want ci/%s/%d", got.Bot, got.Instance, got.Generation, creds.Instance, gen)
		}
		if want := e.now.Add(time.Hour); !got.Expires.Equal(want) {
			t.Errorf("Expires = %v, want %v (capped)", got.Expires, want)
		}
		idCert, newID, sshCert := parseCreds(t, e, got)
		if newID != (ca.Identity{Bot: "ci", Instance: creds.Instance, Generation: gen}) {
			t.Errorf("identity = %+v", newID)
		}
		if pub, ok := idCert.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(keys.idKey.Public()) {
			t.Error("renewed identity is not for the new key")
		}
		if want := fmt.Sprintf("bot=ci instance=%s", creds.Instance); sshCert.KeyId != want {
			t.Errorf("KeyId = %q, want %q", sshCert.KeyId, want)
		}
		if !slices.Equal(sshCert.ValidPrincipals, []string{"viewer"}) {
			t.Errorf("principals = %q", sshCert.ValidPrincipals)
		}
		in, err := e.store.Instance(context.Background(), creds.Instance)
		if err != nil {
			t.Fatal(err)
		}
		if in.Generation != gen || !in.Renewed.Equal(e.now) {
			t.Errorf("stored instance = %+v", in)
		}
		var renews int
		for _, l := range e.auditLines(t, offset) {
			if l["event"] == audit.EventRenew && l["outcome"] == audit.Allowed {
				renews++
				if l["generation"] != float64(gen) || l["identity_serial"] == nil || l["code"] != "MWI1003I" {
					t.Errorf("renew audit line = %v", l)
				}
			}
		}
		if renews != 1 {
			t.Errorf("%d allowed renew lines, want 1", renews)
		}
		id = newID
	}
}

// auditCount counts the audit lines after offset with the given event and
// outcome.
func (e *env) auditCount(t *testing.T, offset int, event, outcome string) int {
	t.Helper()
	var n int
	for _, l := range e.auditLines(t, offset) {
		if l["event"] == event && l["outcome"] == outcome {
			n++
		}
	}
	return n
}

// TestRenewGenerationMismatchLocksInstance presents a copied identity after
// its owner renewed: the instance is locked, and only it. The bot's other
// instances keep renewing and new joins work, so that whoever holds one
// stale identity cannot stop the whole bot.
func TestRenewGenerationMismatchLocksInstance(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	creds := e.join(t, e.token(t, "ci"))
	stale := ca.Identity{Bot: "ci", Instance: creds.Instance, Generation: 1}
	if _, err := e.renew(t, stale); err != nil {
		t.Fatal(err)
	}
	current := ca.Identity{Bot: "ci", Instance: creds.Instance, Generation: 2}
	// A second instance of the same bot, and a token made before the lock.
	other := e.join(t, e.token(t, "ci"))
	otherID := ca.Identity{Bot: "ci", Instance: other.Instance, Generation: 1}
	pending := e.token(t, "ci")

	// The copy presents the old identity.
	offset := e.audit.Len()
	_, err := e.renew(t, stale)
	e.expectDenied(t, err, offset, audit.EventRenew, api.CodeGenerationMismatch, http.StatusForbidden)
	if want := "mwi-issuer instance unlock " + creds.Instance; !strings.Contains(err.Error(), want) {
		t.Errorf("refusal %q does not say %q", err, want)
	}
	var locks int
	for _, l := range e.auditLines(t, offset) {
		switch l["event"] {
		case audit.EventInstanceLock:
			locks++
			if l["bot"] != "ci" || l["instance"] != creds.Instance || !strings.Contains(fmt.Sprint(l["reason"]), "generation mismatch") {
				t.Errorf("lock audit line = %v", l)
			}
		case audit.EventBotLock:
			t.Errorf("the bot was locked: %v", l)
		}
	}
	if locks != 1 {
		t.Errorf("%d instance.lock audit lines, want 1", locks)
	}
	lock, locked, err := e.store.InstanceLock(ctx, creds.Instance, e.now)
	if err != nil || !locked {
		t.Fatalf("InstanceLock = %v, %v, %v; want locked", lock, locked, err)
	}
	if lock.Bot != "ci" || lock.Instance != creds.Instance || !strings.Contains(lock.Reason, creds.Instance) {
		t.Errorf("lock = %+v; want one of ci's instance %s naming it", lock, creds.Instance)
	}
	if _, locked, _ := e.store.BotLock(ctx, "ci", e.now); locked {
		t.Error("the bot is locked")
	}
	// The mismatch did not move the counter.
	if in, err := e.store.Instance(ctx, creds.Instance); err != nil || in.Generation != 2 {
		t.Errorf("instance = %+v, %v; want generation 2", in, err)
	}

	// Everything presenting the locked instance is refused, with the lock's
	// reason and the way to lift it.
	for _, tc := range []struct {
		name string
		id   ca.Identity
	}{
		{"renew with the current generation", current},
		{"renew with the stale generation again", stale},
	} {
		t.Run(tc.name, func(t *testing.T) {
			offset := e.audit.Len()
			_, err := e.renew(t, tc.id)
			e.expectDenied(t, err, offset, audit.EventRenew, api.CodeInstanceLocked, http.StatusForbidden)
			want := fmt.Sprintf("instance %s is locked: %s; an operator can lift it with mwi-issuer instance unlock %s", creds.Instance, lock.Reason, creds.Instance)
			if !strings.Contains(err.Error(), want) {
				t.Errorf("refusal %q\nwant %q", err, want)
			}
		})
	}
	// So is a join with a fresh one-time token that presents it: a token
	// join makes a new instance, but the caller has shown it holds a
	// copied identity. The token stays usable.
	t.Run("token join presenting it", func(t *testing.T) {
		offset := e.audit.Len()
		tok := e.token(t, "ci")
		_, err := e.auth.Join(ctx, api.JoinRequest{JoinMethod: api.JoinMethodToken, Token: tok, Keys: newKeys(t).pub, TTLSeconds: 600}, &current, "192.0.2.1:1234")
		e.expectDenied(t, err, offset, audit.EventJoin, api.CodeInstanceLocked, http.StatusForbidden)
		e.join(t, tok)
	})
	// The first lock's reason is kept.
	if again, _, _ := e.store.InstanceLock(ctx, creds.Instance, e.now); again != lock {
		t.Errorf("lock changed from %+v to %+v", lock, again)
	}

	// The rest of the bot goes on: its other instance renews, and joins,
	// with a new token or one made before the lock, make new instances.
	if got, err := e.renew(t, otherID); err != nil || got.Generation != 2 {
		t.Errorf("renew of the other instance = %+v, %v", got, err)
	}
	if fresh := e.join(t, e.token(t, "ci")); fresh.Instance == creds.Instance {
		t.Error("a fresh join got the locked instance")
	}
	e.join(t, pending)

	locksNow, err := e.auth.Locks(ctx)
	if err != nil || len(locksNow) != 1 || locksNow[0].Instance != creds.Instance || locksNow[0].Reason != lock.Reason {
		t.Errorf("Locks = %+v, %v; want the instance's lock", locksNow, err)
	}

	// Unlocking lifts it: the current generation renews.
	offset = e.audit.Len()
	lifted, err := e.auth.UnlockInstance(ctx, creds.Instance)
	if err != nil || lifted.Instance != creds.Instance || lifted.Reason != lock.Reason {
		t.Fatalf("UnlockInstance = %+v, %v", lifted, err)
	}
	for _, l := range e.auditLines(t, offset) {
		if l["event"] != audit.EventInstanceUnlock || l["outcome"] != audit.Allowed || l["instance"] != creds.Instance || l["bot"] != "ci" {
			t.Errorf("unlock audit line = %v", l)
		}
	}
	if n := e.auditCount(t, offset, audit.EventInstanceUnlock, audit.Allowed); n != 1 {
		t.Errorf("%d instance.unlock audit lines, want 1", n)
	}
	got, err := e.renew(t, current)
	if err != nil {
		t.Fatalf("renew after unlock: %v", err)
	}
	if got.Generation != 3 {
		t.Errorf("generation after unlock = %d, want 3", got.Generation)
	}
	// Unlocking an instance that is not locked says so, and is audited.
	offset = e.audit.Len()
	_, err = e.auth.UnlockInstance(ctx, creds.Instance)
	e.expectDenied(t, err, offset, audit.EventInstanceUnlock, api.CodeNotFound, http.StatusNotFound)
}

// TestBotLock locks a whole bot, as an operator does: every instance of it
// and every join is refused until the lock is lifted; other bots go on.
func TestBotLock(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	creds := e.join(t, e.token(t, "ci"))
	current := ca.Identity{Bot: "ci", Instance: creds.Instance, Generation: 1}
	pending := e.token(t, "ci")

	offset := e.audit.Len()
	lock, err := e.auth.LockBot(ctx, "ci", "decommissioned")
	if err != nil || lock.Bot != "ci" || lock.Instance != "" || lock.Reason != "decommissioned" || !lock.At.Equal(e.now) {
		t.Fatalf("LockBot = %+v, %v", lock, err)
	}
	if n := e.auditCount(t, offset, audit.EventBotLock, audit.Allowed); n != 1 {
		t.Errorf("%d bot.lock audit lines, want 1", n)
	}
	// A second lock keeps the first.
	if again, err := e.auth.LockBot(ctx, "ci", "again"); err != nil || again != lock {
		t.Errorf("second LockBot = %+v, %v; want %+v", again, err, lock)
	}

	for _, tc := range []struct {
		name  string
		event string
		do    func(t *testing.T) error
	}{
		{"renew", audit.EventRenew, func(t *testing.T) error { _, err := e.renew(t, current); return err }},
		{"join with a new token", audit.EventJoin, func(t *testing.T) error {
			_, err := e.auth.Join(ctx, api.JoinRequest{JoinMethod: api.JoinMethodToken, Token: e.token(t, "ci"), Keys: newKeys(t).pub, TTLSeconds: 600}, nil, "192.0.2.1:1234")
			return err
		}},
		{"join with a token made before the lock", audit.EventJoin, func(t *testing.T) error {
			_, err := e.auth.Join(ctx, api.JoinRequest{JoinMethod: api.JoinMethodToken, Token: pending, Keys: newKeys(t).pub, TTLSeconds: 600}, nil, "192.0.2.1:1234")
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			offset := e.audit.Len()
			err := tc.do(t)
			e.expectDenied(t, err, offset, tc.event, api.CodeBotLocked, http.StatusForbidden)
			if want := "bot ci is locked: decommissioned; an operator can lift it with mwi-issuer bot unlock ci"; !strings.Contains(err.Error(), want) {
				t.Errorf("refusal %q does not say %q", err, want)
			}
		})
	}
	// Other bots are unaffected.
	e.join(t, e.token(t, "web"))

	offset = e.audit.Len()
	if err := e.auth.UnlockBot(ctx, "ci"); err != nil {
		t.Fatal(err)
	}
	if n := e.auditCount(t, offset, audit.EventBotUnlock, audit.Allowed); n != 1 {
		t.Errorf("%d bot.unlock audit lines, want 1", n)
	}
	if _, err := e.renew(t, current); err != nil {
		t.Errorf("renew after unlock: %v", err)
	}
	e.join(t, pending)
	// Unlocking a bot that is not locked is harmless.
	if err := e.auth.UnlockBot(ctx, "web"); err != nil {
		t.Errorf("UnlockBot(unlocked bot): %v", err)
	}
}

// TestLockInstanceByOperator locks one instance by hand: it is refused,
// the bot's other instances are not.
func TestLockInstanceByOperator(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a := e.join(t, e.token(t, "ci"))
	b := e.join(t, e.token(t, "ci"))
	offset := e.audit.Len()
	lock, err := e.auth.LockInstance(ctx, a.Instance, "machine stolen")
	if err != nil || lock.Bot != "ci" || lock.Instance != a.Instance || lock.Reason != "machine stolen" {
		t.Fatalf("LockInstance = %+v, %v", lock, err)
	}
	if n := e.auditCount(t, offset, audit.EventInstanceLock, audit.Allowed); n != 1 {
		t.Errorf("%d instance.lock audit lines, want 1", n)
	}
	offset = e.audit.Len()
	_, err = e.renew(t, ca.Identity{Bot: "ci", Instance: a.Instance, Generation: 1})
	e.expectDenied(t, err, offset, audit.EventRenew, api.CodeInstanceLocked, http.StatusForbidden)
	if _, err := e.renew(t, ca.Identity{Bot: "ci", Instance: b.Instance, Generation: 1}); err != nil {
		t.Errorf("renew of the other instance: %v", err)
	}
}

func TestLockRefusals(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	creds := e.join(t, e.token(t, "ci"))
	for _, tc := range []struct {
		name   string
		event  string
		do     func() error
		code   string
		status int
	}{
		{"bot lock of an unknown bot", audit.EventBotLock, func() error { _, err := e.auth.LockBot(ctx, "ghost", "r"); return err }, api.CodeBotUnknown, http.StatusNotFound},
		{"bot lock without a reason", audit.EventBotLock, func() error { _, err := e.auth.LockBot(ctx, "ci", " "); return err }, api.CodeBadRequest, http.StatusBadRequest},
		{"bot lock with a long reason", audit.EventBotLock, func() error {
			_, err := e.auth.LockBot(ctx, "ci", strings.Repeat("x", 2000))
			return err
		}, api.CodeBadRequest, http.StatusBadRequest},
		{"instance lock of an unknown instance", audit.EventInstanceLock, func() error { _, err := e.auth.LockInstance(ctx, "feedface", "r"); return err }, api.CodeNotFound, http.StatusNotFound},
		{"instance lock without a reason", audit.EventInstanceLock, func() error { _, err := e.auth.LockInstance(ctx, creds.Instance, ""); return err }, api.CodeBadRequest, http.StatusBadRequest},
		{"unlock of an instance that is not locked", audit.EventInstanceUnlock, func() error { _, err := e.auth.UnlockInstance(ctx, creds.Instance); return err }, api.CodeNotFound, http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			offset := e.audit.Len()
			e.expectDenied(t, tc.do(), offset, tc.event, tc.code, tc.status)
		})
	}
	if locks, err := e.auth.Locks(ctx); err != nil || len(locks) != 0 {
		t.Errorf("Locks = %+v, %v; want none", locks, err)
	}
}

func TestRenewRefusals(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	creds := e.join(t, e.token(t, "ci"))
	id := ca.Identity{Bot: "ci", Instance: creds.Instance, Generation: 1}
	good := newKeys(t).pub

	for _, tc := range []struct {
		name   string
		id     ca.Identity
		req    api.RenewRequest
		code   string
		status int
	}{
		{"bad CSR", id, api.RenewRequest{Keys: api.PublicKeys{IdentityCSR: "x", SSH: good.SSH}, TTLSeconds: 600}, api.CodeBadRequest, http.StatusBadRequest},
		{"bad SSH key", id, api.RenewRequest{Keys: api.PublicKeys{IdentityCSR: good.IdentityCSR, SSH: "x"}, TTLSeconds: 600}, api.CodeBadRequest, http.StatusBadRequest},
		{"ttl_seconds zero", id, api.RenewRequest{Keys: good, TTLSeconds: 0}, api.CodeBadRequest, http.StatusBadRequest},
		{"login not allowed", id, api.RenewRequest{Keys: good, SSHLogins: []string{"root"}, TTLSeconds: 600}, api.CodeLoginNotAllowed, http.StatusForbidden},
		{"unknown bot", ca.Identity{Bot: "ghost", Instance: creds.Instance, Generation: 1}, api.RenewRequest{Keys: good, TTLSeconds: 600}, api.CodeBotUnknown, http.StatusForbidden},
		{"unknown instance", ca.Identity{Bot: "ci", Instance: "feedface", Generation: 1}, api.RenewRequest{Keys: good, TTLSeconds: 600}, api.CodeUnauthenticated, http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			offset := e.audit.Len()
			_, err := e.auth.Renew(ctx, tc.id, tc.req, "192.0.2.1:1234")
			e.expectDenied(t, err, offset, audit.EventRenew, tc.code, tc.status)
			// A refused renewal neither advances the counter nor locks.
			if in, err := e.store.Instance(ctx, creds.Instance); err != nil || in.Generation != 1 {
				t.Errorf("instance = %+v, %v; want generation 1", in, err)
			}
			if _, locked, _ := e.store.BotLock(ctx, "ci", e.now); locked {
				t.Error("bot locked")
			}
			if _, locked, _ := e.store.InstanceLock(ctx, creds.Instance, e.now); locked {
				t.Error("instance locked")
			}
		})
	}
	// The genuine holder still renews.
	if _, err := e.renew(t, id); err != nil {
		t.Errorf("renew after refusals: %v", err)
	}
}

func TestCreateToken(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()

	offset := e.audit.Len()
	resp, err := e.auth.CreateToken(ctx, "ci", 30*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Bot != "ci" || !resp.Expires.Equal(e.now.Add(30*time.Minute)) {
		t.Errorf("response = %+v", resp)
	}
	if b, err := hex.DecodeString(resp.Token); err != nil || len(b) != 32 {
		t.Errorf("token %q is not 32 random bytes in hex", resp.Token)
	}
	tok, err := e.store.Token(ctx, authority.HashToken(resp.Token), e.now)
	if err != nil {
		t.Fatalf("stored token: %v", err)
	}
	if tok.Bot != "ci" || !tok.Expires.Equal(resp.Expires) {
		t.Errorf("stored token = %+v", tok)
	}
	lines := e.auditLines(t, offset)
	if len(lines) != 1 || lines[0]["event"] != audit.EventTokenCreate || lines[0]["bot"] != "ci" {
		t.Errorf("audit = %v", lines)
	}
	if strings.Contains(e.audit.String(), resp.Token) {
		t.Error("the audit log holds the token secret")
	}
	if other, err := e.auth.CreateToken(ctx, "ci", time.Minute); err != nil || other.Token == resp.Token {
		t.Errorf("second token = %q, %v; want a new secret", other.Token, err)
	}

	for _, tc := range []struct {
		name   string
		bot    string
		ttl    time.Duration
		code   string
		status int
	}{
		{"unknown bot", "ghost", time.Hour, api.CodeBotUnknown, http.StatusNotFound},
		{"empty bot", "", time.Hour, api.CodeBotUnknown, http.StatusNotFound},
		{"zero lifetime", "ci", 0, api.CodeBadRequest, http.StatusBadRequest},
		{"negative lifetime", "ci", -time.Second, api.CodeBadRequest, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.auth.CreateToken(ctx, tc.bot, tc.ttl)
			var herr *fault.Error
			if !errors.As(err, &herr) || herr.Code != tc.code || httpjson.Status(herr.Kind) != tc.status {
				t.Errorf("CreateToken = %v, want %d %s", err, tc.status, tc.code)
			}
		})
	}
}

func TestHashToken(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		{"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
	} {
		if got := authority.HashToken(tc.in); got != tc.want {
			t.Errorf("HashToken(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

// brokenStore is the real store with some reads failing, as they would on
// an I/O error.
type brokenStore struct {
	store.Store
	tokenErr, lockErr, instanceLockErr, advanceErr error
}

func (s brokenStore) InstanceLock(ctx context.Context, id string, now time.Time) (store.Lock, bool, error) {
	if s.instanceLockErr != nil {
		return store.Lock{}, false, s.instanceLockErr
	}
	return s.Store.InstanceLock(ctx, id, now)
}

func (s brokenStore) Token(ctx context.Context, hash string, now time.Time) (store.Token, error) {
	if s.tokenErr != nil {
		return store.Token{}, s.tokenErr
	}
	return s.Store.Token(ctx, hash, now)
}

func (s brokenStore) AdvanceGeneration(ctx context.Context, id string, presented uint64, key string, now time.Time) (store.Instance, error) {
	if s.advanceErr != nil {
		in, _ := s.Store.Instance(ctx, id)
		return in, s.advanceErr
	}
	return s.Store.AdvanceGeneration(ctx, id, presented, key, now)
}

// Renew fails as AdvanceGeneration does: a renewal moves the generation
// through it.
func (s brokenStore) Renew(ctx context.Context, w store.RenewWrite) (store.Instance, error) {
	if s.advanceErr != nil {
		in, _ := s.Store.Instance(ctx, w.ID)
		return in, s.advanceErr
	}
	return s.Store.Renew(ctx, w)
}

func (s brokenStore) BotLock(ctx context.Context, bot string, now time.Time) (store.Lock, bool, error) {
	if s.lockErr != nil {
		return store.Lock{}, false, s.lockErr
	}
	return s.Store.BotLock(ctx, bot, now)
}

func TestStoreFailuresAreInternal(t *testing.T) {
	ioErr := errors.New("store: read /var/lib/mwi/store.db: input/output error")
	for _, tc := range []struct {
		name  string
		store brokenStore
	}{
		{"token lookup fails", brokenStore{tokenErr: ioErr}},
		{"lock lookup fails", brokenStore{lockErr: ioErr}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			tok := e.token(t, "ci")
			orig := e.auth.Store
			tc.store.Store = orig
			e.auth.Store = tc.store
			_, err := e.auth.Join(context.Background(), api.JoinRequest{
				JoinMethod: api.JoinMethodToken, Token: tok, Keys: newKeys(t).pub, TTLSeconds: 600,
			}, nil, "192.0.2.1:1234")
			if err == nil {
				t.Fatal("Join succeeded with a failing store")
			}
			// However the authority reports it, the caller sees only an
			// internal error.
			rec := httptest.NewRecorder()
			httpjson.WriteError(rec, slog.New(slog.NewTextHandler(io.Discard, nil)), err)
			if rec.Code != http.StatusInternalServerError || !strings.Contains(rec.Body.String(), `"code": "internal"`) {
				t.Errorf("rendered as %d %s", rec.Code, rec.Body.String())
			}
			if strings.Contains(rec.Body.String(), "/var/lib/mwi") {
				t.Errorf("the answer leaks the store error: %s", rec.Body.String())
			}
			// The token was not consumed.
			e.auth.Store = orig
			e.join(t, tok)
		})
	}
}

// TestRenewAdvanceRefusals checks what a renewal whose generation cannot
// advance answers: an instance locked when the store checked it, and
// unlocked by the time its lock is read, is a conflict (409, not the 403 of
// a lock in place) that is audited as a denial; a failing store is an
// internal error, which is not.
func TestRenewAdvanceRefusals(t *testing.T) {
	e := newEnv(t)
	creds := e.join(t, e.token(t, "ci"))
	id := ca.Identity{Bot: "ci", Instance: creds.Instance, Generation: 1}

	e.auth.Store = brokenStore{Store: e.store, advanceErr: store.ErrInstanceLocked}
	offset := e.audit.Len()
	_, err := e.renew(t, id)
	e.expectDenied(t, err, offset, audit.EventRenew, api.CodeInstanceLocked, http.StatusConflict)

	e.auth.Store = brokenStore{Store: e.store, advanceErr: errors.New("store: write /var/lib/mwi/store.db: no space left on device")}
	offset = e.audit.Len()
	_, err = e.renew(t, id)
	if err == nil {
		t.Fatal("renew succeeded with a failing store")
	}
	if fe, ok := fault.As(err); ok {
		t.Errorf("renew = %v (%v); want the store's error, which the renderer hides", fe, fe.Kind)
	}
	for _, l := range e.auditLines(t, offset) {
		if l["outcome"] == audit.Denied {
			t.Errorf("a store failure was audited as a denial: %v", l)
		}
	}
}

// TestInstanceLockLookupFailure checks that a renewal whose instance lock
// cannot be read is refused as an internal error, without moving the
// counter.
func TestInstanceLockLookupFailure(t *testing.T) {
	e := newEnv(t)
	creds := e.join(t, e.token(t, "ci"))
	e.auth.Store = brokenStore{Store: e.store, instanceLockErr: errors.New("store: read /var/lib/mwi/store.db: input/output error")}
	_, err := e.renew(t, ca.Identity{Bot: "ci", Instance: creds.Instance, Generation: 1})
	var herr *fault.Error
	if !errors.As(err, &herr) || httpjson.Status(herr.Kind) != http.StatusInternalServerError || strings.Contains(herr.Message, "/var/lib/mwi") {
		t.Errorf("renew = %v; want an internal error that does not leak the store's", err)
	}
	if in, _ := e.store.Instance(context.Background(), creds.Instance); in.Generation != 1 {
		t.Errorf("generation moved to %d", in.Generation)
	}
}

// TestRenewOtherBotsInstance checks that an identity naming one bot with
// another bot's instance moves no counter, so it cannot get that bot locked.
func TestRenewOtherBotsInstanceLocksNothing(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	creds := e.join(t, e.token(t, "ci"))
	forged := ca.Identity{Bot: "web", Instance: creds.Instance, Generation: creds.Generation}
	if _, err := e.renew(t, forged); err == nil {
		t.Fatal("renewal with another bot's instance succeeded")
	}
	in, err := e.auth.Store.Instance(ctx, creds.Instance)
	if err != nil || in.Generation != creds.Generation {
		t.Fatalf("instance generation = %d, %v; want it unchanged at %d", in.Generation, err, creds.Generation)
	}
}

// TestRenewRetryAfterLostAnswer retries a renewal whose answer was lost:
// the same identity presents the same generation again with the same
// proposed keys, and gets the same generation again instead of locking the
// instance. A stale generation with other keys still locks it.
func TestRenewRetryAfterLostAnswer(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	creds := e.join(t, e.token(t, "ci"))
	_, id, _ := parseCreds(t, e, creds)
	proposed := newKeys(t).pub
	req := api.RenewRequest{Keys: proposed, TTLSeconds: 600}
	first, err := e.auth.Renew(ctx, id, req, "192.0.2.1:1")
	if err != nil {
		t.Fatal(err)
	}
	// The answer is lost; the daemon still holds id and retries.
	retry, err := e.auth.Renew(ctx, id, req, "192.0.2.1:1")
	if err != nil {
		t.Fatalf("retry with the same keys: %v", err)
	}
	if retry.Generation != first.Generation || retry.Instance != first.Instance {
		t.Fatalf("retry got generation %d, want %d again", retry.Generation, first.Generation)
	}
	if _, locked, _ := e.auth.Store.InstanceLock(ctx, id.Instance, e.now); locked {
		t.Fatal("the retry locked the instance")
	}
	// A copy of id, proposing its own keys, is caught.
	if _, err := e.renew(t, id); err == nil {
		t.Fatal("a stale identity with other keys renewed")
	}
	if _, locked, _ := e.auth.Store.InstanceLock(ctx, id.Instance, e.now); !locked {
		t.Fatal("the stale identity did not lock the instance")
	}
	// Once locked, even the retry of the renewal that issued the current
	// generation is refused.
	if _, err := e.auth.Renew(ctx, id, req, "192.0.2.1:1"); err == nil {
		t.Fatal("the retry renewed a locked instance")
	}
}

// lockRaceStore is the real store whose first InstanceLock answers "not
// locked", as a lookup made just before the lock was set would.
type lockRaceStore struct {
	store.Store
	asked bool
}

func (s *lockRaceStore) InstanceLock(ctx context.Context, id string, now time.Time) (store.Lock, bool, error) {
	if !s.asked {
		s.asked = true
		return store.Lock{}, false, nil
	}
	return s.Store.InstanceLock(ctx, id, now)
}

// TestInstanceLockCheckedWithTheCounter locks an instance between the
// authority's early lock check and the move of its counter: the store's
// check, made in the same transaction as the move, still refuses it.
func TestInstanceLockCheckedWithTheCounter(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	creds := e.join(t, e.token(t, "ci"))
	if _, err := e.auth.LockInstance(ctx, creds.Instance, "copied"); err != nil {
		t.Fatal(err)
	}
	e.auth.Store = &lockRaceStore{Store: e.store}
	offset := e.audit.Len()
	_, err := e.renew(t, ca.Identity{Bot: "ci", Instance: creds.Instance, Generation: 1})
	e.expectDenied(t, err, offset, audit.EventRenew, api.CodeInstanceLocked, http.StatusForbidden)
	if !strings.Contains(err.Error(), "is locked: copied;") {
		t.Errorf("refusal %q does not give the lock's reason", err)
	}
	if in, _ := e.store.Instance(ctx, creds.Instance); in.Generation != 1 {
		t.Errorf("the locked instance moved to generation %d", in.Generation)
	}
}

// TestStoreUnavailableReachesTheEdge checks that a store that cannot be
// reached, wherever the authority meets it in a join or a renewal, comes
// out as store.ErrUnavailable, which the server answers as 503
// store_unavailable, and not as an internal error that hides it.
func TestStoreUnavailableReachesTheEdge(t *testing.T) {
	down := fmt.Errorf("store: %w: dial tcp 127.0.0.1:5432: connect: connection refused", store.ErrUnavailable)
	for _, tc := range []struct {
		name  string
		store brokenStore
		renew bool
	}{
		{"join: token lookup", brokenStore{tokenErr: down}, false},
		{"join: bot lock lookup", brokenStore{lockErr: down}, false},
		{"renew: bot lock lookup", brokenStore{lockErr: down}, true},
		{"renew: instance lock lookup", brokenStore{instanceLockErr: down}, true},
		{"renew: advance", brokenStore{advanceErr: down}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			creds := e.join(t, e.token(t, "ci"))
			tok := e.token(t, "ci")
			tc.store.Store = e.store
			e.auth.Store = tc.store
			var err error
			if tc.renew {
				_, err = e.renew(t, ca.Identity{Bot: "ci", Instance: creds.Instance, Generation: 1})
			} else {
				_, err = e.auth.Join(context.Background(), api.JoinRequest{
					JoinMethod: api.JoinMethodToken, Token: tok, Keys: newKeys(t).pub, TTLSeconds: 600,
				}, nil, "192.0.2.1:1234")
			}
			if !errors.Is(err, store.ErrUnavailable) {
				t.Errorf("err = %v; want store.ErrUnavailable", err)
			}
			if _, ok := fault.As(err); ok {
				t.Errorf("err = %v is a refusal of its own; want the store's, for the server to answer", err)
			}
		})
	}
}
