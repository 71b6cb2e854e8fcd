package join

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/mwi-project/mwi/issuer/resource"
)

// DefaultCacheTTL is how long a Verifier keeps what it discovered about an
// issuer before discovering it again.
const DefaultCacheTTL = time.Hour

// DefaultFailureTTL is how long a Verifier remembers that discovering an
// issuer failed: until then, joins against it fail at once, without a
// request.
const DefaultFailureTTL = 10 * time.Second

const (
	// maxTokenSize bounds an ID token; real ones are a few kilobytes.
	maxTokenSize = 16 << 10
	// maxDocument bounds a discovery document or key set fetched.
	maxDocument = 1 << 20
	// httpTimeout bounds one discovery or key set request.
	httpTimeout = 10 * time.Second
	// minKeyRefresh is the least time between two fetches of an issuer's
	// keys for an unknown key ID, so that tokens naming made-up key IDs
	// cannot make the issuer hammer the provider.
	minKeyRefresh = 10 * time.Second
)

// Verifier verifies ID tokens for token resources. Set its fields before
// its first use; its methods are safe for concurrent use. The zero
// Verifier verifies against github.com's issuer, trusting the system's
// certificate authorities.
type Verifier struct {
	// GitHubIssuer is the issuer of GitHub Actions' ID tokens, which an
	// enterprise_slug extends; empty means DefaultGitHubIssuer. Tests
	// point it at a local provider.
	GitHubIssuer string
	// RootCAs are the authorities trusted for discovery when the token
	// resource has no ca_data; nil means the system's (SSL_CERT_FILE).
	RootCAs *x509.CertPool
	// CacheTTL is how long discovered keys are kept; zero means
	// DefaultCacheTTL. Keys are fetched again sooner for an unknown key ID.
	CacheTTL time.Duration
	// FailureTTL is how long a failed discovery is remembered; zero means
	// DefaultFailureTTL. Meanwhile, ID tokens of that issuer are verified
	// with the keys discovered before, if any, or fail with ErrUnavailable.
	FailureTTL time.Duration
	// Now returns the current time; nil means time.Now.
	Now func() time.Time

	// One discovery of an issuer runs at a time, whatever the number of
	// joins waiting for it. Maps are by issuer URL and CA.
	mu        sync.Mutex
	providers map[string]*provider
	failures  map[string]failure
	inflight  map[string]*flight[*provider]
}

// failure is a failed discovery, remembered until a time.
type failure struct {
	err   error
	until time.Time
}

// A flight is a fetch in progress that any number of callers wait for.
type flight[T any] struct {
	done chan struct{}
	val  T
	err  error
}

// fly runs fetch in its own goroutine and returns its flight. The fetch
// is not cancelled with any one caller's context: others may be waiting.
func fly[T any](fetch func() (T, error), landed func(T, error)) *flight[T] {
	f := &flight[T]{done: make(chan struct{})}
	go func() {
		f.val, f.err = fetch()
		landed(f.val, f.err)
		close(f.done)
	}()
	return f
}

// wait returns the flight's result, or gives up when ctx is done.
func (f *flight[T]) wait(ctx context.Context, what string) (T, error) {
	select {
	case <-f.done:
		return f.val, f.err
	case <-ctx.Done():
		var zero T
		return zero, fmt.Errorf("%w: %s: %v", ErrUnavailable, what, ctx.Err())
	}
}

func (v *Verifier) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}

// Issuer returns the issuer URL that ID tokens for tok must name (see the
// Issuer method of tok's join block): for github, GitHubIssuer (or
// DefaultGitHubIssuer) is the base.
func (v *Verifier) Issuer(tok resource.Token) (string, error) {
	_, src, err := v.source(tok)
	return src.URL, err
}

// source returns tok's join block and the issuer of its ID tokens.
func (v *Verifier) source(tok resource.Token) (resource.IDTokenJoin, resource.IDTokenIssuer, error) {
	spec, ok := tok.Join.(resource.IDTokenJoin)
	if !ok {
		return nil, resource.IDTokenIssuer{}, fmt.Errorf("join: token %q: join method %q takes no ID token", tok.Name, tok.JoinMethod)
	}
	base := v.GitHubIssuer
	if strings.TrimSuffix(base, "/") == "" {
		base = DefaultGitHubIssuer
	}
	return spec, spec.Issuer(base), nil
}

// VerifyIDToken verifies raw, an ID token presented to join with tok, and
// matches it against tok's allow rules. The token must be issued for
// audience. A refusal is a *DeniedError; an error wrapping ErrUnavailable
// means the issuer's keys could not be fetched.
func (v *Verifier) VerifyIDToken(ctx context.Context, tok resource.Token, audience, raw string) (*Attestation, error) {
	return v.VerifyIDTokenAt(ctx, tok, audience, raw, v.now())
}

// VerifyIDTokenAt is VerifyIDToken with the token's times judged at now,
// such as the clock that decides validity for the caller, rather than at
// v.Now.
func (v *Verifier) VerifyIDTokenAt(ctx context.Context, tok resource.Token, audience, raw string, now time.Time) (*Attestation, error) {
	spec, src, err := v.source(tok)
	if err != nil {
		return nil, err
	}
	if audience == "" {
		return nil, errors.New("join: no audience to check ID tokens against")
	}
	hdr, segs, derr := parseCompact(raw)
	if derr != nil {
		return nil, derr
	}
	if !slices.Contains(SigningAlgs, hdr.Alg) {
		return nil, deny(CheckAlgorithm+" "+printable(hdr.Alg), "")
	}
	keys, err := v.keys(ctx, src, hdr.Kid)
	if err != nil {
		return nil, err
	}
	payload, derr := verifySignature(raw, hdr.Alg, keys)
	if derr != nil {
		return nil, derr
	}
	// The claims are authentic: what they say can be judged.
	claims, derr := decodeClaims(payload)
	if derr != nil {
		return nil, derr
	}
	exp, derr := checkClaims(claims, src.URL, audience, now)
	if derr != nil {
		return nil, derr
	}

	// go-oidc checks the token again and has the last word: a token it
	// refuses is refused whatever the checks above found. Its expiry check
	// has no leeway, so its clock runs Leeway behind (which loosens its
	// own not-before check, made above with Leeway).
	pubs := make([]crypto.PublicKey, 0, len(keys))
	for _, k := range keys {
		pubs = append(pubs, k.Key)
	}
	verifier := oidc.NewVerifier(src.URL, &oidc.StaticKeySet{PublicKeys: pubs}, &oidc.Config{
		ClientID:             audience,
		SupportedSigningAlgs: SigningAlgs,
		Now:                  func() time.Time { return now.Add(-Leeway) },
	})
	idt, err := verifier.Verify(ctx, raw)
	if err != nil {
		var expired *oidc.TokenExpiredError
		if errors.As(err, &expired) {
			return nil, deny(CheckExpired, err.Error())
		}
		return nil, deny(CheckSignature, "go-oidc: "+err.Error())
	}

	att := &Attestation{
		Issuer:   idt.Issuer,
		Subject:  idt.Subject,
		Audience: idt.Audience,
		Expiry:   exp,
		Claims:   claims,
	}
	if jti, ok := claims["jti"].(string); ok && jti != "" {
		sum := sha256.Sum256([]byte(idt.Issuer + "\x00" + jti))
		att.ReplayKey = "jti:" + hex.EncodeToString(sum[:])
	} else {
		att.ReplayKey = "token:" + tokenHash(idt.Issuer, segs[0], segs[1])
	}

	var ok bool
	att.Rule, ok = spec.Match(claims)
	if !ok {
		return nil, deny(CheckNoRule, fmt.Sprintf("sub %q", printable(idt.Subject)))
	}
	return att, nil
}

// header is the protected header of a compact JWS.
type header struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
}

// parseCompact decodes raw, which must be a compact JWS in canonical form:
// three segments separated by dots, each unpadded base64url with
// nothing else in it (no padding, whitespace, line breaks or characters of
// the standard alphabet) and no stray bits in its last character. Go's
// decoders, and go-jose, accept other spellings of the same bytes; a token
// must have one spelling only, so that it cannot pass for another token.
// It returns the header and the three segments decoded.
func parseCompact(raw string) (header, [3][]byte, *DeniedError) {
	var h header
	var segs [3][]byte
	if len(raw) > maxTokenSize {
		return h, segs, deny(CheckMalformed, fmt.Sprintf("larger than %d bytes", maxTokenSize))
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return h, segs, deny(CheckMalformed, "not a compact JWS (three base64url parts separated by dots)")
	}
	for i, part := range parts {
		b, err := decodeSegment(part)
		if err != nil {
			return h, segs, deny(CheckMalformed, fmt.Sprintf("%s: %v", segmentNames[i], err))
		}
		segs[i] = b
	}
	if err := json.Unmarshal(segs[0], &h); err != nil {
		return h, segs, deny(CheckMalformed, "header is not a JSON object")
	}
	return h, segs, nil
}

var segmentNames = [3]string{"header", "payload", "signature"}

// decodeSegment decodes one segment of a compact JWS, which must be
// canonical unpadded base64url.
func decodeSegment(s string) ([]byte, error) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return nil, fmt.Errorf("not unpadded base64url: byte %q at %d", c, i)
		}
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, errors.New("not canonical base64url")
	}
	// Strict decoding refuses stray bits in the last character; encoding
	// again confirms there is nothing else to spell differently.
	if base64.RawURLEncoding.EncodeToString(b) != s {
		return nil, errors.New("not canonical base64url")
	}
	return b, nil
}

// tokenHash returns the replay key of a token without a jti: the hash of
// its issuer and its signed bytes, header and payload, decoded. The
// signature is left out: an ECDSA signature (r, s) has a twin (r, n-s)
// that anyone can compute and that verifies as well, so the same token
// would have two keys. Two tokens that an issuer signed with the same
// header and claims are then the same token, which is what they say.
func tokenHash(issuer string, header, payload []byte) string {
	h := sha256.New()
	for _, b := range [][]byte{[]byte(issuer), header, payload} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// printableRE matches what is safe to repeat from a token in a message.
var printableRE = regexp.MustCompile(`^[\x20-\x7e]{0,128}$`)

// printable returns s if it is short printable ASCII, and else a quoted,
// shortened form.
func printable(s string) string {
	if printableRE.MatchString(s) && !strings.ContainsAny(s, `"\`) {
		return s
	}
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return strconv.QuoteToASCII(s)
}

// verifySignature checks raw's signature by one of keys and returns its
// payload.
func verifySignature(raw, alg string, keys []jose.JSONWebKey) ([]byte, *DeniedError) {
	jws, err := jose.ParseSigned(raw, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(alg)})
	if err != nil {
		return nil, deny(CheckMalformed, err.Error())
	}
	if len(jws.Signatures) != 1 {
		return nil, deny(CheckMalformed, "want exactly one signature")
	}
	for i := range keys {
		if payload, err := jws.Verify(&keys[i]); err == nil {
			return payload, nil
		}
	}
	return nil, deny(CheckSignature, fmt.Sprintf("%s signature verifies with none of %d candidate keys", alg, len(keys)))
}

// decodeClaims decodes a token's payload, keeping numbers as json.Number.
func decodeClaims(payload []byte) (map[string]any, *DeniedError) {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var claims map[string]any
	if err := dec.Decode(&claims); err != nil || claims == nil {
		return nil, deny(CheckMalformed, "claims are not a JSON object")
	}
	return claims, nil
}

// checkClaims checks the issuer, the audience and the validity period of
// authentic claims, and returns the expiry.
func checkClaims(claims map[string]any, issuer, audience string, now time.Time) (time.Time, *DeniedError) {
	if iss, _ := claims["iss"].(string); iss != issuer {
		return time.Time{}, deny(CheckIssuer, fmt.Sprintf("token issuer %q, want %q", printable(iss), issuer))
	}
	var auds []string
	switch a := claims["aud"].(type) {
	case string:
		auds = []string{a}
	case []any:
		for _, x := range a {
			if s, ok := x.(string); ok {
				auds = append(auds, s)
			}
		}
	}
	if !slices.Contains(auds, audience) {
		return time.Time{}, deny(CheckAudience, fmt.Sprintf("token audience %q, want %q", auds, audience))
	}
	exp, ok, err := numericDate(claims, "exp")
	switch {
	case err != nil:
		return time.Time{}, deny(CheckMalformed, err.Error())
	case !ok:
		return time.Time{}, deny(CheckMalformed, "no exp claim")
	case now.After(exp.Add(Leeway)):
		return time.Time{}, deny(CheckExpired, fmt.Sprintf("expired at %s, now %s", exp.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339)))
	}
	for _, name := range []string{"nbf", "iat"} {
		t, ok, err := numericDate(claims, name)
		switch {
		case err != nil:
			return time.Time{}, deny(CheckMalformed, err.Error())
		case ok && t.After(now.Add(Leeway)):
			return time.Time{}, deny(CheckNotYetValid, fmt.Sprintf("%s %s, now %s", name, t.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339)))
		}
	}
	return exp, nil
}

// numericDate returns the JWT NumericDate claim name, and whether it is
// present.
func numericDate(claims map[string]any, name string) (time.Time, bool, error) {
	v, ok := claims[name]
	if !ok {
		return time.Time{}, false, nil
	}
	n, ok := v.(json.Number)
	if !ok {
		return time.Time{}, false, fmt.Errorf("claim %s is not a number", name)
	}
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f > 1e12 {
		return time.Time{}, false, fmt.Errorf("claim %s is not a time", name)
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true, nil
}

// keys returns the keys of src that may have signed a token with key ID
// kid: those with that ID, or all of them for a token without one.
func (v *Verifier) keys(ctx context.Context, src resource.IDTokenIssuer, kid string) ([]jose.JSONWebKey, error) {
	if src.StaticJWKS != nil {
		all, err := parseJWKS(src.StaticJWKS)
		if err != nil {
			return nil, fmt.Errorf("join: static_jwks: %w", err)
		}
		cands := candidates(all, kid)
		if len(cands) == 0 {
			return nil, deny(CheckUnknownKeyID, fmt.Sprintf("kid %s is not in the static key set", printable(kid)))
		}
		return cands, nil
	}
	p, err := v.provider(ctx, src)
	if err != nil {
		return nil, err
	}
	cands, err := p.candidates(ctx, kid, v.now())
	if err != nil {
		return nil, err
	}
	if len(cands) == 0 {
		return nil, deny(CheckUnknownKeyID, fmt.Sprintf("kid %s is not in the key set of %s", printable(kid), src.URL))
	}
	return cands, nil
}

func candidates(keys []jose.JSONWebKey, kid string) []jose.JSONWebKey {
	if kid == "" {
		return keys
	}
	var out []jose.JSONWebKey
	for _, k := range keys {
		if k.KeyID == kid {
			out = append(out, k)
		}
	}
	return out
}

// parseJWKS decodes a JSON Web Key Set, keeping the public halves of its
// signing keys and skipping keys of types it does not know, as go-oidc
// does.
func parseJWKS(data []byte) ([]jose.JSONWebKey, error) {
	var raw struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("not a JSON Web Key Set: %v", err)
	}
	var keys []jose.JSONWebKey
	for _, k := range raw.Keys {
		var key jose.JSONWebKey
		if err := key.UnmarshalJSON(k); err != nil {
			if errors.Is(err, jose.ErrUnsupportedKeyType) {
				continue
			}
			return nil, fmt.Errorf("not a JSON Web Key Set: %v", err)
		}
		if key.Use == "enc" {
			continue
		}
		keys = append(keys, key.Public())
	}
	return keys, nil
}

// A provider is what discovery found about one issuer: where its keys are,
// and the keys last fetched.
type provider struct {
	issuer  string
	jwksURL string
	client  *http.Client
	created time.Time

	mu    sync.Mutex
	keys  []jose.JSONWebKey
	tried time.Time                  // when the key set was last fetched, or tried
	err   error                      // the last fetch's error
	fetch *flight[[]jose.JSONWebKey] // the fetch in flight, or nil
}

// provider returns the discovered provider of src, discovering it if it is
// not cached or its cache entry is older than CacheTTL. Concurrent callers
// share one discovery; after a failed one, callers get the provider
// discovered before, if any, or the failure, until FailureTTL has passed.
func (v *Verifier) provider(ctx context.Context, src resource.IDTokenIssuer) (*provider, error) {
	ttl := v.CacheTTL
	if ttl <= 0 {
		ttl = DefaultCacheTTL
	}
	caSum := sha256.Sum256(src.CAData)
	key := src.URL + "\x00" + hex.EncodeToString(caSum[:])
	now := v.now()
	v.mu.Lock()
	old, ok := v.providers[key]
	if ok && now.Sub(old.created) < ttl {
		v.mu.Unlock()
		return old, nil
	}
	if f, failed := v.failures[key]; failed && now.Before(f.until) {
		v.mu.Unlock()
		if ok {
			// Keep verifying with what was discovered before.
			return old, nil
		}
		return nil, f.err
	}
	fl := v.inflight[key]
	if fl == nil {
		if v.inflight == nil {
			v.inflight = make(map[string]*flight[*provider])
		}
		fl = fly(func() (*provider, error) {
			return v.discover(context.WithoutCancel(ctx), src, now)
		}, func(p *provider, err error) {
			v.landed(key, p, err)
		})
		v.inflight[key] = fl
	}
	v.mu.Unlock()
	p, err := fl.wait(ctx, "discovery of "+src.URL)
	if err != nil && ok {
		return old, nil
	}
	return p, err
}

// landed records the outcome of the discovery of the provider key.
func (v *Verifier) landed(key string, p *provider, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.inflight, key)
	if err != nil {
		ttl := v.FailureTTL
		if ttl <= 0 {
			ttl = DefaultFailureTTL
		}
		if v.failures == nil {
			v.failures = make(map[string]failure)
		}
		v.failures[key] = failure{err: err, until: v.now().Add(ttl)}
		return
	}
	if v.providers == nil {
		v.providers = make(map[string]*provider)
	}
	v.providers[key] = p
	delete(v.failures, key)
}

// discover fetches the discovery document and the key set of src.
func (v *Verifier) discover(ctx context.Context, src resource.IDTokenIssuer, now time.Time) (*provider, error) {
	client, err := v.httpClient(src.CAData)
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, httpTimeout)
	defer cancel()
	op, err := oidc.NewProvider(oidc.ClientContext(dctx, client), src.URL)
	if err != nil {
		return nil, fmt.Errorf("%w: discovery of %s: %v", ErrUnavailable, src.URL, err)
	}
	var meta struct {
		JWKSURL string `json:"jwks_uri"`
	}
	if err := op.Claims(&meta); err != nil || meta.JWKSURL == "" {
		return nil, fmt.Errorf("%w: discovery of %s: no jwks_uri", ErrUnavailable, src.URL)
	}
	p := &provider{issuer: src.URL, jwksURL: meta.JWKSURL, client: client, created: now, tried: now}
	if p.keys, err = p.fetchKeys(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

// httpClient returns a client for discovery that trusts caData, or
// RootCAs, or the system's authorities.
func (v *Verifier) httpClient(caData []byte) (*http.Client, error) {
	roots := v.RootCAs
	if len(caData) > 0 {
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(caData) {
			return nil, errors.New("join: ca_data holds no PEM certificate")
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	return &http.Client{Timeout: httpTimeout, Transport: limitBody{tr}}, nil
}

// limitBody bounds the bodies of the responses of its transport.
type limitBody struct{ rt http.RoundTripper }

func (l limitBody) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := l.rt.RoundTrip(r)
	if err == nil {
		resp.Body = struct {
			io.Reader
			io.Closer
		}{io.LimitReader(resp.Body, maxDocument), resp.Body}
	}
	return resp, err
}

// candidates returns the provider's keys with key ID kid (all keys if kid
// is empty). If none has it, the issuer may have rotated its keys: the key
// set is fetched again, by one caller at a time for all, and not sooner
// than minKeyRefresh after the last attempt, whose error is returned
// meanwhile if it failed.
func (p *provider) candidates(ctx context.Context, kid string, now time.Time) ([]jose.JSONWebKey, error) {
	p.mu.Lock()
	if c := candidates(p.keys, kid); len(c) > 0 {
		p.mu.Unlock()
		return c, nil
	}
	fl := p.fetch
	if fl == nil {
		if now.Sub(p.tried) < minKeyRefresh {
			err := p.err
			p.mu.Unlock()
			return nil, err
		}
		p.tried = now
		fl = fly(func() ([]jose.JSONWebKey, error) {
			return p.fetchKeys(context.WithoutCancel(ctx))
		}, func(keys []jose.JSONWebKey, err error) {
			p.mu.Lock()
			defer p.mu.Unlock()
			if err == nil {
				p.keys = keys
			}
			p.err, p.fetch = err, nil
		})
		p.fetch = fl
	}
	p.mu.Unlock()
	keys, err := fl.wait(ctx, "keys of "+p.issuer)
	if err != nil {
		return nil, err
	}
	return candidates(keys, kid), nil
}

// fetchKeys fetches the provider's key set.
func (p *provider) fetchKeys(ctx context.Context) ([]jose.JSONWebKey, error) {
	ctx, cancel := context.WithTimeout(ctx, httpTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.jwksURL, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: keys of %s: %v", ErrUnavailable, p.issuer, err)
	}
	// kube-apiserver answers 406 to an Accept without its media type.
	req.Header.Set("Accept", "application/jwk-set+json, application/json, */*;q=0.5")
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: keys of %s: %v", ErrUnavailable, p.issuer, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%w: keys of %s: %v", ErrUnavailable, p.issuer, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: keys of %s: %s answered %s", ErrUnavailable, p.issuer, p.jwksURL, resp.Status)
	}
	keys, err := parseJWKS(body)
	if err != nil {
		return nil, fmt.Errorf("%w: keys of %s at %s: %v", ErrUnavailable, p.issuer, p.jwksURL, err)
	}
	return keys, nil
}
