// Package issuerclient is mwid's client for the issuer's HTTPS API.
package issuerclient

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/internal/httpjson"
	"github.com/mwi-project/mwi/internal/tlspin"
	"github.com/mwi-project/mwi/internal/version"
)

// Error is an error answer from the issuer. The client returns it wrapped,
// as "issuer refused: MESSAGE (CODE)"; find it with errors.As.
type Error = httpjson.APIError

// Permanent reports whether retrying the request e refused cannot succeed
// without someone changing something: a used token, a locked bot. The
// refusals table decides, by code; a rate limit or a server error is never
// permanent, whatever its code.
func Permanent(e *Error) bool {
	if e.Status == http.StatusTooManyRequests || e.Status >= 500 {
		return false
	}
	return refusals[e.Code].permanent
}

// Action says what an operator must do before the permanent refusal e can
// be overcome; it is empty for the others.
func Action(e *Error) string {
	if !Permanent(e) {
		return ""
	}
	return refusals[e.Code].action
}

// refusal is how mwid treats one of the issuer's error codes.
type refusal struct {
	permanent bool
	action    string // for an operator, when permanent
	// reread is set when the fix reaches mwid through its join token
	// source, which it reads again at every join (an operator replaces
	// the token file): such a refusal is retried on the usual schedule.
	reread bool
}

// RetriedSoon reports whether the permanent refusal e is nonetheless
// retried on the usual schedule, because mwid reads what fixes it afresh
// at every attempt.
func RetriedSoon(e *Error) bool { return refusals[e.Code].reread }

// refusals decides, for every code the issuer answers with, whether
// retrying the same request can succeed. A code missing here is transient:
// mwid retries it as it would an outage.
var refusals = map[string]refusal{
	api.CodeBotLocked:           {true, "an operator must lift the bot's lock on the issuer (mwi-issuer locks lists it; mwi-issuer bot unlock BOT), then run mwictl renew", false},
	api.CodeInstanceLocked:      {true, "an operator must find out why this instance is locked (a copied identity?) before lifting the lock (mwi-issuer instance unlock INSTANCE), then run mwictl renew", false},
	api.CodeTokenLocked:         {true, "an operator must lift the lock of the token resource this instance joined with (mwi-issuer lock ls lists it; mwi-issuer lock rm --token NAME), then run mwictl renew", false},
	api.CodeGenerationMismatch:  {true, "the issuer saw an older copy of this identity and locked the instance: an operator must find the copy, then lift the lock (mwi-issuer instance unlock INSTANCE) and run mwictl renew", false},
	api.CodeTokenUsed:           {true, "issue a new join token (mwi-issuer token create BOT) and give it to mwid's onboarding token source; mwid reads it again at every join attempt", true},
	api.CodeTokenUnknown:        {true, "issue a new join token (mwi-issuer token create BOT) and give it to mwid's onboarding token source; mwid reads it again at every join attempt", true},
	api.CodeTokenExpired:        {true, "issue a new join token (mwi-issuer token create BOT) and give it to mwid's onboarding token source; mwid reads it again at every join attempt", true},
	api.CodeJoinDenied:          {true, "make the bot's join rules on the issuer and this host's attestation agree (the message names the failed check), then run mwictl renew", false},
	api.CodeNotRenewable:        {true, "the issuer does not renew this identity: make mwid's join method match the bot's on the issuer, then reload mwid", false},
	api.CodeBotUnknown:          {true, "the issuer has no such bot: create it in the issuer's resources, or onboard mwid to an existing bot, then run mwictl renew", false},
	api.CodeLoginNotAllowed:     {true, "make mwid's ssh_logins and the bot's roles on the issuer agree, then reload mwid or run mwictl renew", false},
	api.CodeHostNameNotAllowed:  {true, "make mwid's host names and the bot's roles on the issuer agree, then reload mwid or run mwictl renew", false},
	api.CodeHostLabelNotAllowed: {true, "make the labels of mwid's ssh_host outputs and the host_labels of the bot's roles on the issuer agree, then reload mwid or run mwictl renew", false},
	api.CodeBadRequest:          {true, "the issuer refused mwid's request as malformed: check mwid's configuration (TTLs, logins, outputs) against the issuer's limits, then reload mwid", false},
	api.CodeNotFound:            {true, "the issuer does not serve this request: is it older than mwid? Upgrade it, then run mwictl renew", false},
	api.CodeAccessDenied:        {true, "the issuer refused the caller: check the issuer's access settings, then run mwictl renew", false},
	// An identity the issuer does not accept may be one the issuer's
	// clock does not yet find valid; an expired one mwid replaces by
	// joining again on its own.
	api.CodeUnauthenticated: {false, "", false},
	// The issuer's own trouble: it clears without anyone acting on mwid.
	api.CodeInternal:         {false, "", false},
	api.CodeAuditUnavailable: {false, "", false},
	api.CodeStoreUnavailable: {false, "", false},
	// The admin API's; mwid is never answered with them.
	api.CodeRotationPhase:    {false, "", false},
	api.CodeRotationConflict: {false, "", false},
	// mwid's local API codes; the issuer does not answer with them.
	api.CodeNotJoined:    {false, "", false},
	api.CodeRenewFailed:  {false, "", false},
	api.CodeReloadFailed: {false, "", false},
	api.CodeIssuerFailed: {false, "", false},
}

// maxAnswer bounds an issuer's answer: certificates and CA bundles for
// every output of one renewal.
const maxAnswer = 8 << 20

// Client talks to an issuer, or to the replicas of one. It is safe for
// concurrent use.
type Client struct {
	addrs  []string     // host:port as configured, tried in order
	verify verifyFunc   // checks the issuer's chain for a server name
	lookup lookupFunc   // resolves a host name at each attempt
	log    *slog.Logger // failovers; nil logs nothing

	// learns is whether the client adopts the pins the issuer sends
	// (IssuerCAPins): only when it pins the issuer itself.
	learns bool

	mu         sync.Mutex
	learned    []string  // the pins the issuer last sent, if learns
	configured []string  // the pins of the configuration
	current    string    // the target that last answered, by label
	logged     time.Time // the last failover logged
	quiet      int       // failovers not logged since
}

type verifyFunc func(certs []*x509.Certificate, host string) error

type lookupFunc func(ctx context.Context, host string) ([]string, error)

// New returns a client for the issuer cfg describes. It verifies the
// issuer's certificate with cfg's CA file or pins, or, with neither, with
// the system's trust store; there is no way to turn verification off.
// log, if not nil, receives a line each time requests move to another
// issuer address.
func New(cfg config.Issuer, log *slog.Logger) (*Client, error) {
	addrs := cfg.AddressList()
	for _, a := range addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, err
		}
	}
	var roots *x509.CertPool
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("issuer CA file: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("issuer CA file %s holds no PEM certificate", cfg.CAFile)
		}
	}
	c := &Client{addrs: addrs, lookup: net.DefaultResolver.LookupHost, log: log}
	pins := cfg.CAPins
	c.learns = len(pins) > 0 && roots == nil
	c.configured = pins
	c.verify = func(certs []*x509.Certificate, host string) error {
		return tlspin.Verify(certs, host, roots, c.pins(pins))
	}
	if roots == nil && len(pins) == 0 {
		// Neither pins nor a CA file (a tbot configuration copied from a
		// guide): the system's trust store, as tbot trusts a proxy.
		system, err := x509.SystemCertPool()
		if err != nil {
			return nil, fmt.Errorf("the system trust store: %w", err)
		}
		c.verify = func(certs []*x509.Certificate, host string) error {
			if err := tlspin.Verify(certs, host, system, nil); err != nil {
				return fmt.Errorf("%w: the system trust store does not vouch for the issuer; set ca_pins in the configuration, run mwid --ca-pin PIN (mwi-issuer ca prints the pin), or add the issuer's CA to the system trust store", err)
			}
			return nil
		}
	}
	return c, nil
}

// pins returns the pins the issuer is checked with: those it last sent,
// once it has sent any, and configured until then.
//
// The issuer sends the pins of every TLS authority it trusts
// (api.Credentials.IssuerCAPins), two while it rotates the authority of
// its serving certificate, so that the daemon goes on trusting it when
// the serving certificate changes authority, and stops trusting the old
// one once it is retired. They are taken only from answers that came
// over a connection verified with the pins already held, so a first join
// trusts only what is configured; a client that checks the issuer with a
// CA file or the system's trust store learns nothing.
func (c *Client) pins(configured []string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.learned) > 0 {
		return c.learned
	}
	return configured
}

// maxLearnedPins bounds the pins taken from one answer: an issuer trusts
// two TLS authorities at most, while it rotates one.
const maxLearnedPins = 4

// learn adopts the pins of an answer that came over a connection whose
// issuer presented peer, if the client learns pins. The list must hold a
// pin that verified that connection: an issuer that answers with none of
// them, or with malformed or too many pins, is not followed, so that an
// answer can never leave the client trusting nothing the issuer it talks
// to serves with. An empty list keeps the pins held.
func (c *Client) learn(pins []string, peer []*x509.Certificate) {
	if !c.learns || len(pins) == 0 {
		return
	}
	if err := c.adopt(pins, peer); err != nil && c.log != nil {
		c.log.Warn("issuer CA pins from the issuer not adopted", "err", err.Error())
	}
}

func (c *Client) adopt(pins []string, peer []*x509.Certificate) error {
	if len(pins) > maxLearnedPins {
		return fmt.Errorf("%d pins, more than the %d an issuer sends", len(pins), maxLearnedPins)
	}
	for _, p := range pins {
		if !isPin(p) {
			return fmt.Errorf("%q is not a pin of the form sha256:<base64 SPKI hash>", p)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	held := c.learned
	if len(held) == 0 {
		held = c.configured
	}
	verified := false
	for _, cert := range peer {
		p := tlspin.Of(cert)
		if slices.Contains(held, p) && slices.Contains(pins, p) {
			verified = true
		}
	}
	if !verified {
		return fmt.Errorf("pins %s hold none that this connection to the issuer was verified with", strings.Join(pins, ","))
	}
	if !slices.Equal(c.learned, pins) && c.log != nil {
		c.log.Info("issuer CA pins from the issuer", "pins", strings.Join(pins, ","))
	}
	c.learned = slices.Clone(pins)
	return nil
}

// isPin reports whether p has the form of a pin: sha256: and the base64
// of 32 bytes.
func isPin(p string) bool {
	b64, ok := strings.CutPrefix(p, "sha256:")
	if !ok {
		return false
	}
	sum, err := base64.StdEncoding.DecodeString(b64)
	return err == nil && len(sum) == sha256.Size
}

// target is one address a request can go to: a configured host:port, and
// for a host name, one of the addresses it resolves to.
type target struct {
	addr  string // host:port as configured: the URL's host and the TLS server name
	dial  string // ip:port to connect to, or addr itself
	label string // for logs and status
}

// targets resolves the configured addresses, in order. A host name that
// resolves to several addresses stands for each of them, so that a replica
// behind a round-robin name that answers 503 is passed over like any
// other; the TLS server name stays the configured name. A name that does
// not resolve is kept as it is, for the dial to report.
func (c *Client) targets(ctx context.Context) []target {
	var out []target
	for _, a := range c.addrs {
		host, port, _ := net.SplitHostPort(a)
		if net.ParseIP(host) != nil {
			out = append(out, target{addr: a, dial: a, label: a})
			continue
		}
		ips, err := c.lookup(ctx, host)
		if err != nil || len(ips) < 2 {
			// One address: dial the name, as a single issuer always was.
			out = append(out, target{addr: a, dial: a, label: a})
			continue
		}
		for _, ip := range ips {
			d := net.JoinHostPort(ip, port)
			out = append(out, target{addr: a, dial: d, label: a + " (" + d + ")"})
		}
	}
	return out
}

// Current returns the issuer address that answered last, or the first one
// configured before any has answered.
func (c *Client) Current() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.current == "" {
		return c.addrs[0]
	}
	return c.current
}

// order returns ts starting from the one that answered last, so that
// requests stay on one replica until it fails.
func (c *Client) order(ts []target) []target {
	c.mu.Lock()
	cur := c.current
	c.mu.Unlock()
	for i, t := range ts {
		if t.label == cur {
			return append(ts[i:len(ts):len(ts)], ts[:i]...)
		}
	}
	return ts
}

// failoverLogEvery bounds the failover lines: replicas that flap would
// otherwise fill the log.
const failoverLogEvery = time.Minute

// answered records that t answered, logging the move if requests went
// elsewhere before. cause is why the targets before t were passed over.
func (c *Client) answered(t target, cause error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	prev := c.current
	c.current = t.label
	if prev == "" || prev == t.label || c.log == nil {
		return
	}
	if now := time.Now(); now.Sub(c.logged) >= failoverLogEvery {
		attrs := []any{"from", prev, "to", t.label}
		if cause != nil {
			attrs = append(attrs, "cause", cause.Error())
		}
		if c.quiet > 0 {
			attrs = append(attrs, "unlogged_failovers", c.quiet)
		}
		c.log.Warn("issuer failover", attrs...)
		c.logged, c.quiet = now, 0
	} else {
		c.quiet++
	}
}

// Join asks the issuer to admit this daemon. identity, if not nil, is the
// bot identity the daemon still holds: joining again with it over mutual
// TLS (as the join methods other than token do at every renewal) keeps the
// bot instance. Without it, a join makes a new instance.
func (c *Client) Join(ctx context.Context, identity *tls.Certificate, req api.JoinRequest) (api.Credentials, error) {
	var out api.Credentials
	peer, err := c.postFrom(ctx, "/v1/join", identity, req, &out)
	if err == nil {
		c.learn(out.IssuerCAPins, peer)
	}
	return out, err
}

// Challenge asks the issuer for a fresh challenge for a bound key pair
// join with the named token. identity, if not nil, is the bot identity the
// daemon still holds: presented over mutual TLS, it has the issuer serve
// this host's renewal apart from anonymous callers, whose challenges are
// limited by address and in total.
func (c *Client) Challenge(ctx context.Context, identity *tls.Certificate, tokenName string) (api.ChallengeResponse, error) {
	var out api.ChallengeResponse
	err := c.post(ctx, "/v1/join/challenge", identity, api.ChallengeRequest{TokenName: tokenName}, &out)
	return out, err
}

// Renew asks for fresh credentials, proving the current identity with
// mutual TLS.
func (c *Client) Renew(ctx context.Context, identity *tls.Certificate, req api.RenewRequest) (api.Credentials, error) {
	var out api.Credentials
	peer, err := c.postFrom(ctx, "/v1/renew", identity, req, &out)
	if err == nil {
		c.learn(out.IssuerCAPins, peer)
	}
	return out, err
}

// UserAgent is the User-Agent of mwid's requests to the issuer,
// "mwid/VERSION": the issuer's node inventory shows the version.
func UserAgent() string {
	return "mwid/" + version.Get().Version
}

func (c *Client) post(ctx context.Context, path string, identity *tls.Certificate, req, resp any) error {
	_, err := c.postFrom(ctx, path, identity, req, resp)
	return err
}

// postFrom is post, and returns the certificates of the issuer that
// answered, as its connection verified them.
func (c *Client) postFrom(ctx context.Context, path string, identity *tls.Certificate, req, resp any) ([]*x509.Certificate, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	var peer []*x509.Certificate
	_, err = c.do(ctx, call{method: http.MethodPost, path: path, identity: identity, body: body, peer: &peer}, func(data []byte) error {
		if resp == nil {
			return nil
		}
		return json.Unmarshal(data, resp)
	})
	return peer, err
}

// call is one request to the issuer.
type call struct {
	method, path string
	identity     *tls.Certificate     // presented over mutual TLS if not nil
	body         []byte               // JSON, for POST
	etag         string               // sent as If-None-Match if not empty
	peer         *[]*x509.Certificate // set to the answering issuer's certificates, if not nil
}

// errNotModified is do's answer to a call whose ETag is still current.
var errNotModified = errors.New("not modified")

// requestTimeout bounds one call, over every address it tries.
const requestTimeout = 30 * time.Second

// do makes the call c and hands a 2xx answer's body to decode. It returns
// the answer's ETag, and errNotModified for a 304.
//
// It tries the issuer's addresses in turn, from the one that answered
// last, until one answers or the call's deadline passes. An address that
// cannot be reached, or that answers with a server error, is passed over:
// another replica on the same store may serve the call. A refusal is the
// issuer's answer and is returned as it is. Trying the same call again
// elsewhere is safe even when the first replica acted on it before
// failing: a renewal retried with the same key gets the same generation.
func (c *Client) do(ctx context.Context, cl call, decode func([]byte) error) (etag string, err error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	ts := c.order(c.targets(ctx))
	var failed error // the last address passed over, and why
	for _, t := range ts {
		etag, next, err := c.try(ctx, t, cl, decode)
		if !next {
			c.answered(t, failed)
			return etag, err
		}
		failed = err
		if c.log != nil {
			c.log.Debug("issuer address passed over", "address", t.label, "error", err.Error())
		}
		if ctx.Err() != nil {
			break
		}
	}
	return "", failed
}

// try makes the call c to the target t. next reports whether t failed in a
// way another address may not: it could not be reached, or it answered
// with a server error.
func (c *Client) try(ctx context.Context, t target, cl call, decode func([]byte) error) (etag string, next bool, err error) {
	host, _, _ := net.SplitHostPort(t.addr)
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: host,
		// The standard verification cannot use pins; VerifyConnection
		// does all of it, and refuses anything it cannot verify.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return c.verify(cs.PeerCertificates, host)
		},
	}
	if cl.identity != nil {
		cfg.Certificates = []tls.Certificate{*cl.identity}
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	// A connection per request: a kept-alive connection would go on
	// presenting the identity it was opened with, and after a renewal that
	// identity carries a stale generation, which the issuer treats as a
	// copied identity. Requests are rare enough for this to cost nothing.
	hc := &http.Client{
		Transport: &http.Transport{
			TLSClientConfig:     cfg,
			DisableKeepAlives:   true,
			TLSHandshakeTimeout: 10 * time.Second,
			Proxy:               http.ProxyFromEnvironment,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				if addr == t.addr {
					addr = t.dial // the address resolved, not the name again
				}
				return dialer.DialContext(ctx, network, addr)
			},
		},
	}
	var body io.Reader
	if cl.body != nil {
		body = bytes.NewReader(cl.body)
	}
	base := "https://" + t.label
	r, err := http.NewRequestWithContext(ctx, cl.method, "https://"+t.addr+cl.path, body)
	if err != nil {
		return "", false, err
	}
	if cl.body != nil {
		r.Header.Set("Content-Type", "application/json")
	}
	if cl.etag != "" {
		r.Header.Set("If-None-Match", cl.etag)
	}
	r.Header.Set("User-Agent", UserAgent())
	res, err := hc.Do(r)
	if err != nil {
		return "", true, fmt.Errorf("issuer %s: %w", base, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, maxAnswer+1))
	if err != nil {
		return "", true, fmt.Errorf("issuer %s: %w", base, err)
	}
	if len(data) > maxAnswer {
		return "", false, fmt.Errorf("issuer %s: answer larger than %d bytes; too many clusters or CA bundles for one renewal?", base, maxAnswer)
	}
	switch {
	case res.StatusCode == http.StatusNotModified && cl.etag != "":
		return cl.etag, false, errNotModified
	case res.StatusCode/100 != 2:
		server := res.StatusCode >= 500
		e := httpjson.DecodeError(res.StatusCode, data)
		if e == nil {
			return "", server, fmt.Errorf("issuer %s: %s", base, res.Status)
		}
		return "", server, fmt.Errorf("issuer refused: %w (%s)", e, e.Code)
	}
	if err := decode(data); err != nil {
		return "", false, fmt.Errorf("issuer %s: answer to %s %s: %w", base, cl.method, cl.path, err)
	}
	if cl.peer != nil && res.TLS != nil {
		*cl.peer = res.TLS.PeerCertificates
	}
	return res.Header.Get("ETag"), false, nil
}

// Locks returns the locks in force, from GET /v1/locks, asked for with
// the bot identity. etag is the ETag of the list the caller holds, or "":
// if the issuer's list is the same, Locks returns modified false and no
// list. The answer's ETag is returned for the next call.
func (c *Client) Locks(ctx context.Context, identity *tls.Certificate, etag string) (list api.LockList, newETag string, modified bool, err error) {
	newETag, err = c.do(ctx, call{method: http.MethodGet, path: "/v1/locks", identity: identity, etag: etag}, func(data []byte) error {
		return json.Unmarshal(data, &list)
	})
	if errors.Is(err, errNotModified) {
		return api.LockList{}, newETag, false, nil
	}
	return list, newETag, err == nil, err
}

// KRL returns the issuer's OpenSSH KRL of locked certificates, from GET
// /v1/ssh/krl, with its ETag as Locks does. It needs no identity.
func (c *Client) KRL(ctx context.Context, etag string) (krl []byte, newETag string, modified bool, err error) {
	newETag, err = c.do(ctx, call{method: http.MethodGet, path: "/v1/ssh/krl", etag: etag}, func(data []byte) error {
		krl = data
		if krl == nil {
			krl = []byte{}
		}
		return nil
	})
	if errors.Is(err, errNotModified) {
		return nil, newETag, false, nil
	}
	return krl, newETag, err == nil, err
}

// ReportSSHRefusal tells the issuer's audit log of a login that this host
// refused (POST /v1/audit/ssh-refusal), proving the host with its bot
// identity.
func (c *Client) ReportSSHRefusal(ctx context.Context, identity *tls.Certificate, r api.SSHRefusal) error {
	return c.post(ctx, "/v1/audit/ssh-refusal", identity, r, nil)
}

// Nodes returns the hosts that the bot's roles let it log in to, from GET
// /v1/nodes, asked for with the bot identity.
func (c *Client) Nodes(ctx context.Context, identity *tls.Certificate) (api.ReachableNodes, error) {
	var out api.ReachableNodes
	_, err := c.do(ctx, call{method: http.MethodGet, path: "/v1/nodes", identity: identity}, func(data []byte) error {
		return json.Unmarshal(data, &out)
	})
	return out, err
}

// Refused returns the issuer refusal in err's chain if it is permanent.
func Refused(err error) (*Error, bool) {
	var e *Error
	if errors.As(err, &e) && Permanent(e) {
		return e, true
	}
	return nil, false
}
