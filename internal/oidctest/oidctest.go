// Package oidctest runs a local OpenID Connect provider for tests: OIDC
// discovery and a JSON Web Key Set over HTTPS on 127.0.0.1, with its own
// certificate authority, and a minter of ID tokens shaped like those of
// GitHub Actions, GitLab CI and Kubernetes.
//
// A Provider serves
//
//	PREFIX/.well-known/openid-configuration   the discovery document
//	PREFIX/.well-known/jwks                   the key set: one RSA and one P-256 key
//	/_apis/actions/idtoken                    GitHub Actions' token request endpoint, once set up
//
// where PREFIX is empty unless [WithPathPrefix] is given; the issuer URL is
// https://127.0.0.1:PORT/PREFIX. A prefix of "/_services/token" makes the
// provider look like GitHub Enterprise Server at host 127.0.0.1:PORT, and a
// prefix of "/SLUG" like GitHub's issuer for an enterprise with that slug.
//
// Tokens are signed as given: [Provider.Mint] does not add claims. The
// claim helpers fill in the issuer, the audience and fresh times.
// [Respell] and [MalleateES256] make other spellings and signatures of a
// token, for replay tests.
//
// Programs started by a test trust the provider through SSL_CERT_FILE set
// to [Provider.CAFile]; code in the test process can use [Provider.Client]
// or [Provider.CAPEM].
package oidctest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Signing algorithms of the provider's keys.
const (
	RS256 = "RS256"
	ES256 = "ES256"
)

// ActionsTokenPath is the path of GitHub Actions' token request endpoint
// on the provider.
const ActionsTokenPath = "/_apis/actions/idtoken"

// Provider is a running OIDC provider. Its methods are safe for concurrent
// use.
type Provider struct {
	srv    *httptest.Server
	prefix string
	caPEM  []byte
	caFile string
	pool   *x509.CertPool

	rsaKey   *rsa.PrivateKey
	ecKey    *ecdsa.PrivateKey
	rsaKID   string
	ecKID    string
	wrongRSA *rsa.PrivateKey
	wrongEC  *ecdsa.PrivateKey
	jwks     []byte

	discoveryHits atomic.Int64
	jwksHits      atomic.Int64
	actionsHits   atomic.Int64

	mu      sync.Mutex
	actions *actionsEndpoint // nil until set up
}

// An Option configures New.
type Option func(*options)

type options struct {
	prefix string
}

// WithPathPrefix serves the provider under prefix, such as
// "/_services/token" (GitHub Enterprise Server) or "/my-enterprise" (an
// enterprise slug on GitHub). The issuer URL ends with the prefix.
func WithPathPrefix(prefix string) Option {
	return func(o *options) { o.prefix = "/" + strings.Trim(prefix, "/") }
}

// New starts a provider on 127.0.0.1 at a random port and stops it when
// the test ends.
func New(t testing.TB, opts ...Option) *Provider {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.prefix == "/" {
		o.prefix = ""
	}
	p := &Provider{prefix: o.prefix}
	var err error
	if p.rsaKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	if p.ecKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	if p.wrongRSA, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	if p.wrongEC, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	p.rsaKID = keyID(&p.rsaKey.PublicKey)
	p.ecKID = keyID(&p.ecKey.PublicKey)
	p.jwks, err = json.Marshal(map[string]any{"keys": []map[string]any{
		rsaJWK(&p.rsaKey.PublicKey, p.rsaKID),
		ecJWK(&p.ecKey.PublicKey, p.ecKID),
	}})
	if err != nil {
		t.Fatal(err)
	}

	serving, caPEM, err := newServingCert()
	if err != nil {
		t.Fatal(err)
	}
	p.caPEM = caPEM
	p.pool = x509.NewCertPool()
	p.pool.AppendCertsFromPEM(caPEM)
	p.caFile = filepath.Join(t.TempDir(), "oidctest-ca.pem")
	if err := os.WriteFile(p.caFile, caPEM, 0o644); err != nil {
		t.Fatal(err)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET "+p.prefix+"/.well-known/openid-configuration", p.serveDiscovery)
	mux.HandleFunc("GET "+p.prefix+"/.well-known/jwks", p.serveJWKS)
	mux.HandleFunc("GET "+ActionsTokenPath, p.serveActionsToken)
	p.srv = httptest.NewUnstartedServer(mux)
	p.srv.TLS = &tls.Config{Certificates: []tls.Certificate{serving}, MinVersion: tls.VersionTLS12}
	p.srv.StartTLS()
	t.Cleanup(p.srv.Close)
	return p
}

// URL returns the provider's base URL, https://127.0.0.1:PORT, without the
// path prefix.
func (p *Provider) URL() string { return p.srv.URL }

// Host returns the provider's host and port, 127.0.0.1:PORT: what a token
// resource names as github.enterprise_server_host when the provider was
// started WithPathPrefix("/_services/token").
func (p *Provider) Host() string { return strings.TrimPrefix(p.srv.URL, "https://") }

// Issuer returns the issuer URL: URL followed by the path prefix.
func (p *Provider) Issuer() string { return p.srv.URL + p.prefix }

// CAPEM returns the PEM certificate of the authority that signed the
// provider's serving certificate.
func (p *Provider) CAPEM() []byte { return append([]byte(nil), p.caPEM...) }

// CAFile returns the path of a file holding CAPEM, for SSL_CERT_FILE.
func (p *Provider) CAFile() string { return p.caFile }

// CertPool returns a pool holding the provider's authority.
func (p *Provider) CertPool() *x509.CertPool { return p.pool.Clone() }

// Client returns an HTTP client that trusts the provider.
func (p *Provider) Client() *http.Client {
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.CertPool()}},
	}
}

// JWKS returns the provider's key set as served: JSON with the RSA key
// (RS256) and the P-256 key (ES256), each with its key ID. It fits a token
// resource's static_jwks.
func (p *Provider) JWKS() []byte { return append([]byte(nil), p.jwks...) }

// KeyID returns the key ID of the key that signs with alg, RS256 or ES256.
func (p *Provider) KeyID(alg string) string {
	if alg == ES256 {
		return p.ecKID
	}
	return p.rsaKID
}

// DiscoveryRequests, JWKSRequests and ActionsTokenRequests count the
// requests served so far on each endpoint.
func (p *Provider) DiscoveryRequests() int    { return int(p.discoveryHits.Load()) }
func (p *Provider) JWKSRequests() int         { return int(p.jwksHits.Load()) }
func (p *Provider) ActionsTokenRequests() int { return int(p.actionsHits.Load()) }

func (p *Provider) serveDiscovery(w http.ResponseWriter, r *http.Request) {
	p.discoveryHits.Add(1)
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                p.Issuer(),
		"jwks_uri":                              p.Issuer() + "/.well-known/jwks",
		"response_types_supported":              []string{"id_token"},
		"subject_types_supported":               []string{"public", "pairwise"},
		"id_token_signing_alg_values_supported": []string{RS256, ES256},
		"claims_supported":                      []string{"sub", "aud", "exp", "iat", "iss", "jti", "nbf", "ref", "repository", "repository_owner"},
		"scopes_supported":                      []string{"openid"},
	})
}

func (p *Provider) serveJWKS(w http.ResponseWriter, r *http.Request) {
	p.jwksHits.Add(1)
	w.Header().Set("Content-Type", "application/json")
	w.Write(p.jwks)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// A MintOption changes how Mint signs a token.
type MintOption func(*mintOptions)

type mintOptions struct {
	alg        string
	none       bool
	hs256      bool
	wrongKey   bool
	unknownKID bool
	kid        *string
}

// WithAlgorithm signs with the provider's key for alg: RS256 (the default)
// or ES256.
func WithAlgorithm(alg string) MintOption { return func(o *mintOptions) { o.alg = alg } }

// WithAlgNone makes an unsigned token: header alg "none" and an empty
// signature.
func WithAlgNone() MintOption { return func(o *mintOptions) { o.none = true } }

// WithHS256PublicKey signs with HMAC-SHA256 keyed with the PEM of the
// provider's RSA public key, and names the RSA key's ID: the algorithm
// confusion attack on verifiers that let the token choose the algorithm.
func WithHS256PublicKey() MintOption { return func(o *mintOptions) { o.hs256 = true } }

// WithWrongKey signs with a key that is not in the key set, under the key
// ID of the provider's key for the algorithm: the signature does not
// verify.
func WithWrongKey() MintOption { return func(o *mintOptions) { o.wrongKey = true } }

// WithUnknownKID signs with the provider's key but names a key ID that the
// key set does not hold.
func WithUnknownKID() MintOption { return func(o *mintOptions) { o.unknownKID = true } }

// WithKeyID sets the header's kid to kid; the empty string leaves it out.
func WithKeyID(kid string) MintOption { return func(o *mintOptions) { o.kid = &kid } }

// Mint returns a compact JWT with the given claims, signed with RS256 by
// the provider's RSA key unless opts say otherwise. Claims are encoded as
// given; times must be numbers of seconds (see [NumericDate]).
func (p *Provider) Mint(claims map[string]any, opts ...MintOption) string {
	o := mintOptions{alg: RS256}
	for _, opt := range opts {
		opt(&o)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		panic(fmt.Sprintf("oidctest: encode claims: %v", err))
	}
	header := map[string]any{"typ": "JWT", "alg": o.alg}
	kid := p.KeyID(o.alg)
	switch {
	case o.none:
		header["alg"] = "none"
		kid = ""
	case o.hs256:
		header["alg"] = "HS256"
		kid = p.rsaKID
	}
	if o.unknownKID {
		kid = "unknown-" + kid
	}
	if o.kid != nil {
		kid = *o.kid
	}
	if kid != "" {
		header["kid"] = kid
	}
	h, err := json.Marshal(header)
	if err != nil {
		panic(err)
	}
	signingInput := b64(h) + "." + b64(payload)
	if o.none {
		return signingInput + "."
	}
	digest := sha256.Sum256([]byte(signingInput))
	var sig []byte
	switch {
	case o.hs256:
		der, err := x509.MarshalPKIXPublicKey(&p.rsaKey.PublicKey)
		if err != nil {
			panic(err)
		}
		mac := hmac.New(sha256.New, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
		mac.Write([]byte(signingInput))
		sig = mac.Sum(nil)
	case o.alg == ES256:
		key := p.ecKey
		if o.wrongKey {
			key = p.wrongEC
		}
		r, s, err := ecdsa.Sign(rand.Reader, key, digest[:])
		if err != nil {
			panic(err)
		}
		sig = make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
	case o.alg == RS256:
		key := p.rsaKey
		if o.wrongKey {
			key = p.wrongRSA
		}
		sig, err = rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, digest[:])
		if err != nil {
			panic(err)
		}
	default:
		panic(fmt.Sprintf("oidctest: unsupported algorithm %q (want RS256 or ES256)", o.alg))
	}
	return signingInput + "." + b64(sig)
}

// NumericDate returns t as a JWT NumericDate: whole seconds since the epoch.
func NumericDate(t time.Time) int64 { return t.Unix() }

// newJTI returns a fresh random token ID.
func newJTI() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// times sets iat and nbf to now and exp to five minutes later, as GitHub
// does.
func times(c map[string]any) map[string]any {
	now := time.Now()
	c["iat"] = NumericDate(now)
	c["nbf"] = NumericDate(now)
	c["exp"] = NumericDate(now.Add(5 * time.Minute))
	return c
}

// GitHubClaims returns the claims of a GitHub Actions ID token issued by p
// to a push-triggered job of repository ("org/repo") on branch main, in
// environment "production", with audience aud and a fresh jti, valid from
// now for five minutes. The sub is "repo:ORG/REPO:ref:refs/heads/main".
// Change entries to shape other jobs; sub is not recomputed.
func (p *Provider) GitHubClaims(aud, repository string) map[string]any {
	return GitHubClaims(p.Issuer(), aud, repository)
}

// GitHubClaims is [Provider.GitHubClaims] with an explicit issuer, such as
// "https://token.actions.githubusercontent.com" for tests that verify with
// a static key set.
func GitHubClaims(issuer, aud, repository string) map[string]any {
	owner, _, _ := strings.Cut(repository, "/")
	return times(map[string]any{
		"iss":                   issuer,
		"aud":                   aud,
		"sub":                   "repo:" + repository + ":ref:refs/heads/main",
		"jti":                   newJTI(),
		"repository":            repository,
		"repository_owner":      owner,
		"repository_id":         "74215386",
		"repository_owner_id":   "65120837",
		"repository_visibility": "private",
		"workflow":              "deploy",
		"workflow_ref":          repository + "/.github/workflows/deploy.yml@refs/heads/main",
		"workflow_sha":          "7d865e959b2466918c9863afca942d0fb89d7c9a",
		"job_workflow_ref":      repository + "/.github/workflows/deploy.yml@refs/heads/main",
		"job_workflow_sha":      "7d865e959b2466918c9863afca942d0fb89d7c9a",
		"environment":           "production",
		"actor":                 "octocat",
		"actor_id":              "583231",
		"ref":                   "refs/heads/main",
		"ref_type":              "branch",
		"ref_protected":         "true",
		"head_ref":              "",
		"base_ref":              "",
		"run_id":                "9871234560",
		"run_number":            "42",
		"run_attempt":           "1",
		"runner_environment":    "github-hosted",
		"sha":                   "7d865e959b2466918c9863afca942d0fb89d7c9a",
		"event_name":            "push",
	})
}

// GitLabClaims returns the claims of a GitLab CI ID token issued by p to a
// push pipeline of project projectPath ("group/project") on protected
// branch main, in environment "production", run by user "gitlab-user",
// with audience aud and a fresh jti, valid from now for five minutes. The
// sub is "project_path:GROUP/PROJECT:ref_type:branch:ref:main".
func (p *Provider) GitLabClaims(aud, projectPath string) map[string]any {
	return GitLabClaims(p.Issuer(), aud, projectPath)
}

// GitLabClaims is [Provider.GitLabClaims] with an explicit issuer.
func GitLabClaims(issuer, aud, projectPath string) map[string]any {
	ns := projectPath
	if i := strings.LastIndex(projectPath, "/"); i >= 0 {
		ns = projectPath[:i]
	}
	host := strings.TrimPrefix(strings.TrimPrefix(issuer, "https://"), "http://")
	return times(map[string]any{
		"iss":                   issuer,
		"aud":                   aud,
		"sub":                   "project_path:" + projectPath + ":ref_type:branch:ref:main",
		"jti":                   newJTI(),
		"namespace_id":          "72",
		"namespace_path":        ns,
		"project_id":            "20",
		"project_path":          projectPath,
		"project_visibility":    "private",
		"user_id":               "1",
		"user_login":            "gitlab-user",
		"user_email":            "gitlab-user@example.com",
		"pipeline_id":           "574",
		"pipeline_source":       "push",
		"job_id":                "302",
		"ref":                   "main",
		"ref_type":              "branch",
		"ref_path":              "refs/heads/main",
		"ref_protected":         "true",
		"environment":           "production",
		"environment_protected": "true",
		"deployment_tier":       "production",
		"environment_action":    "start",
		"runner_id":             1,
		"runner_environment":    "gitlab-hosted",
		"sha":                   "714a629c0b401fdce83e847fc9589983fc6f46bc",
		"ci_config_ref_uri":     host + "/" + projectPath + "//.gitlab-ci.yml@refs/heads/main",
		"ci_config_sha":         "714a629c0b401fdce83e847fc9589983fc6f46bc",
	})
}

// KubernetesClaims returns the claims of a projected service account token
// issued by p for service account name in namespace, with audience aud and
// a fresh jti, valid from now for five minutes. The sub is
// "system:serviceaccount:NAMESPACE:NAME".
func (p *Provider) KubernetesClaims(aud, namespace, name string) map[string]any {
	return times(map[string]any{
		"iss": p.Issuer(),
		"aud": []string{aud},
		"sub": "system:serviceaccount:" + namespace + ":" + name,
		"jti": newJTI(),
		"kubernetes.io": map[string]any{
			"namespace":      namespace,
			"serviceaccount": map[string]any{"name": name, "uid": "b1ed2f4e-1f7b-4a25-9d3c-1f2e5d8c0a11"},
		},
	})
}

// actionsEndpoint is the state of GitHub Actions' token request endpoint.
type actionsEndpoint struct {
	requestToken string
	claims       map[string]any
	opts         []MintOption
}

// ActionsTokenEndpoint sets up GitHub Actions' token request endpoint and
// returns what a job finds in ACTIONS_ID_TOKEN_REQUEST_URL and
// ACTIONS_ID_TOKEN_REQUEST_TOKEN. As on GitHub, the URL already has a
// query (api-version=2.0), so a client appends "&audience=AUD".
//
// A GET with the header "Authorization: bearer REQUEST_TOKEN" is answered
// with {"count": 1, "value": JWT}: a token minted with opts from a copy of
// claims, with aud set to the audience parameter (if given), a fresh jti,
// and iat, nbf and exp set from now. A wrong or missing request token gets
// 401. Calling it again replaces the claims and the request token.
func (p *Provider) ActionsTokenEndpoint(claims map[string]any, opts ...MintOption) (requestURL, requestToken string) {
	tok := newJTI()
	c := make(map[string]any, len(claims))
	for k, v := range claims {
		c[k] = v
	}
	p.mu.Lock()
	p.actions = &actionsEndpoint{requestToken: tok, claims: c, opts: opts}
	p.mu.Unlock()
	return p.srv.URL + ActionsTokenPath + "?api-version=2.0", tok
}

// ActionsEnv returns the environment a GitHub Actions job with
// id-token: write permission would have for the endpoint set up by
// ActionsTokenEndpoint with claims and opts: ACTIONS_ID_TOKEN_REQUEST_URL
// and ACTIONS_ID_TOKEN_REQUEST_TOKEN, and SSL_CERT_FILE naming CAFile.
func (p *Provider) ActionsEnv(claims map[string]any, opts ...MintOption) []string {
	u, tok := p.ActionsTokenEndpoint(claims, opts...)
	return []string{
		"ACTIONS_ID_TOKEN_REQUEST_URL=" + u,
		"ACTIONS_ID_TOKEN_REQUEST_TOKEN=" + tok,
		"SSL_CERT_FILE=" + p.caFile,
	}
}

func (p *Provider) serveActionsToken(w http.ResponseWriter, r *http.Request) {
	p.actionsHits.Add(1)
	p.mu.Lock()
	a := p.actions
	p.mu.Unlock()
	if a == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "token request endpoint not set up"})
		return
	}
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "bearer") || !hmac.Equal([]byte(tok), []byte(a.requestToken)) {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"message": "bad request token"})
		return
	}
	c := make(map[string]any, len(a.claims))
	for k, v := range a.claims {
		c[k] = v
	}
	if aud := r.URL.Query().Get("audience"); aud != "" {
		c["aud"] = aud
	}
	c["jti"] = newJTI()
	times(c)
	writeJSON(w, http.StatusOK, map[string]any{"count": 1, "value": p.Mint(c, a.opts...)})
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// keyID returns a key ID for pub: a prefix of the hash of its encoding.
func keyID(pub crypto.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		panic(err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:8])
}

func rsaJWK(pub *rsa.PublicKey, kid string) map[string]any {
	return map[string]any{
		"kty": "RSA", "use": "sig", "alg": RS256, "kid": kid,
		"n": b64(pub.N.Bytes()),
		"e": b64(big.NewInt(int64(pub.E)).Bytes()),
	}
}

func ecJWK(pub *ecdsa.PublicKey, kid string) map[string]any {
	// The uncompressed point is 0x04 || X || Y, each 32 bytes for P-256.
	raw, err := pub.Bytes()
	if err != nil {
		panic(err)
	}
	return map[string]any{
		"kty": "EC", "use": "sig", "alg": ES256, "kid": kid, "crv": "P-256",
		"x": b64(raw[1:33]),
		"y": b64(raw[33:65]),
	}
}

// newServingCert makes a certificate authority and a serving certificate
// for 127.0.0.1, ::1 and localhost signed by it.
func newServingCert() (tls.Certificate, []byte, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "oidctest CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:     []string{"localhost"},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	cert := tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: key}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), nil
}

// Respell returns other spellings of the compact JWS raw, by name: the
// same header, payload and signature bytes written so that lenient
// base64url decoders (Go's, go-jose's) read them as raw. A verifier must
// refuse each, or at least treat it as raw.
//
//	newline in the signature, CR in the payload, CRLF after the header,
//	a space or a tab inside a segment, whitespace around the token,
//	stray bits in the last character of a segment, '=' padding on a
//	segment, the standard alphabet ('+' and '/') in a segment
//
// Variants that raw cannot have (no segment whose length leaves spare
// bits, or no '-' or '_' to write otherwise) are left out.
func Respell(raw string) map[string]string {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		panic("oidctest: Respell: not a compact JWS")
	}
	names := [3]string{"header", "payload", "signature"}
	with := func(i int, seg string) string {
		p := [3]string{parts[0], parts[1], parts[2]}
		p[i] = seg
		return strings.Join(p[:], ".")
	}
	mid := func(s, insert string) string { return s[:len(s)/2] + insert + s[len(s)/2:] }
	out := map[string]string{
		"newline in the signature": with(2, mid(parts[2], "\n")),
		"CR in the payload":        with(1, mid(parts[1], "\r")),
		"CRLF after the header":    with(0, parts[0]+"\r\n"),
		"space in the payload":     with(1, mid(parts[1], " ")),
		"tab in the signature":     with(2, mid(parts[2], "\t")),
		"whitespace around":        " " + raw + "\n",
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for i, seg := range parts {
		if seg == "" {
			continue
		}
		if n := len(seg) % 4; n == 2 || n == 3 {
			// The last character has 4 (n == 2) or 2 (n == 3) bits that
			// encode nothing; set the lowest.
			last := strings.IndexByte(alphabet, seg[len(seg)-1])
			out["stray bits in the last character of the "+names[i]] = with(i, seg[:len(seg)-1]+string(alphabet[last^1]))
			out["padding on the "+names[i]] = with(i, seg+strings.Repeat("=", 4-n))
		}
		if strings.ContainsAny(seg, "-_") {
			std := strings.NewReplacer("-", "+", "_", "/").Replace(seg)
			out["standard alphabet in the "+names[i]] = with(i, std)
		}
	}
	return out
}

// MalleateES256 returns raw, an ES256 token, with its signature (r, s)
// replaced by (r, n-s), where n is the order of P-256: another signature
// of the same bytes, which anyone can compute and which verifies as well.
func MalleateES256(raw string) string {
	parts := strings.Split(raw, ".")
	sig, err := base64.RawURLEncoding.DecodeString(parts[len(parts)-1])
	if len(parts) != 3 || err != nil || len(sig) != 64 {
		panic("oidctest: MalleateES256: not an ES256 compact JWS")
	}
	s := new(big.Int).SetBytes(sig[32:])
	s.Sub(elliptic.P256().Params().N, s)
	s.FillBytes(sig[32:])
	return parts[0] + "." + parts[1] + "." + b64(sig)
}
