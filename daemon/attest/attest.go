// Package attest obtains what mwid proves itself with when it joins the
// issuer: a one-time join token, an OIDC ID token (from the GitHub Actions
// token endpoint, an environment variable or a file), or a bound key
// pair's signature over a fresh challenge from the issuer.
//
// Every attestation is obtained afresh for one join: ID tokens are
// short-lived, projected tokens rotate, and challenges are single-use.
// Nothing here logs a token or a key, and error messages name where a
// secret came from, never the secret.
package attest

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/config"
)

// Challenger asks the issuer for a bound key pair challenge, presenting
// identity over mutual TLS if it is not nil. *issuerclient.Client is one.
type Challenger interface {
	Challenge(ctx context.Context, identity *tls.Certificate, tokenName string) (api.ChallengeResponse, error)
}

// Attest obtains an attestation for the onboarding ob and returns a join
// request carrying the join method, the token name and the proof. The
// caller adds the public keys and what it asks for. identity, if not nil,
// is the bot identity the daemon holds and will join with: a bound key
// pair's challenge is asked for with it too.
func Attest(ctx context.Context, ob config.Onboarding, ch Challenger, identity *tls.Certificate) (api.JoinRequest, error) {
	req := api.JoinRequest{JoinMethod: ob.JoinMethod, TokenName: ob.TokenName}
	var err error
	switch {
	case ob.JoinMethod == config.JoinToken:
		if req.Token, err = ob.Token.Read(); err != nil {
			return api.JoinRequest{}, fmt.Errorf("join token: %w", err)
		}
	case ob.UsesIDToken():
		if req.IDToken, err = IDToken(ctx, ob.IDToken); err != nil {
			return api.JoinRequest{}, err
		}
	case ob.JoinMethod == config.JoinBoundKeypair:
		if req.Challenge, req.Signature, err = BoundKeypair(ctx, ob, ch, identity); err != nil {
			return api.JoinRequest{}, err
		}
	default:
		return api.JoinRequest{}, fmt.Errorf("unknown join method %q", ob.JoinMethod)
	}
	return req, nil
}

// IDToken fetches or reads an OIDC ID token from src.
func IDToken(ctx context.Context, src config.IDTokenSource) (string, error) {
	var (
		tok, from string
		err       error
	)
	switch {
	case src.GitHubActions:
		from = "GitHub Actions"
		tok, err = GitHubActionsToken(ctx, http.DefaultClient, src.Audience)
	case src.Env != "":
		from = "$" + src.Env
		v, ok := os.LookupEnv(src.Env)
		if !ok {
			err = fmt.Errorf("environment variable %s is not set (in GitLab CI, declare it under id_tokens: in .gitlab-ci.yml)", src.Env)
		}
		tok = strings.TrimSpace(v)
	case src.File != "":
		from = src.File
		var b []byte
		b, err = os.ReadFile(src.File)
		tok = strings.TrimSpace(string(b))
	default:
		return "", errors.New("ID token: no source configured")
	}
	if err == nil {
		err = checkJWT(tok)
	}
	if err != nil {
		return "", fmt.Errorf("ID token from %s: %w", from, err)
	}
	return tok, nil
}

// checkJWT refuses what cannot be a JWS in compact form, so that a wrong
// file or variable is named here rather than refused by the issuer.
func checkJWT(tok string) error {
	if tok == "" {
		return errors.New("it is empty")
	}
	if strings.Count(tok, ".") != 2 || strings.ContainsFunc(tok, func(r rune) bool { return r <= ' ' || r > '~' }) {
		return errors.New("it is not a JWT (three base64url parts separated by dots)")
	}
	return nil
}

// The GitHub Actions runner gives a job with permission id-token: write
// these two variables: the endpoint that issues the job's ID tokens, and
// the bearer token that authorizes asking it.
const (
	GitHubRequestURLEnv   = "ACTIONS_ID_TOKEN_REQUEST_URL"
	GitHubRequestTokenEnv = "ACTIONS_ID_TOKEN_REQUEST_TOKEN"
)

// githubTimeout bounds a request to the GitHub Actions token endpoint.
const githubTimeout = 30 * time.Second

// GitHubActionsToken asks the GitHub Actions token endpoint for an ID token
// for audience, with hc, as GitHub's own toolkit does: GET
// $ACTIONS_ID_TOKEN_REQUEST_URL&audience=AUDIENCE with the header
// "Authorization: bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN", answered with
// {"value": JWT}.
func GitHubActionsToken(ctx context.Context, hc *http.Client, audience string) (string, error) {
	rawURL, bearer := os.Getenv(GitHubRequestURLEnv), os.Getenv(GitHubRequestTokenEnv)
	var missing []string
	for _, kv := range [][2]string{{GitHubRequestURLEnv, rawURL}, {GitHubRequestTokenEnv, bearer}} {
		if kv[1] == "" {
			missing = append(missing, "$"+kv[0])
		}
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("%s not set: not running in GitHub Actions with id-token: write permission?", strings.Join(missing, " and "))
	}
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("$%s is not a URL", GitHubRequestURLEnv)
	}
	if u.Scheme != "https" && !(u.Scheme == "http" && loopback(u.Hostname())) {
		// The bearer token must not cross a network in clear.
		return "", fmt.Errorf("$%s is not an https URL", GitHubRequestURLEnv)
	}
	// The runner's URL has a query already (api-version=...); the audience
	// is appended to it as is, like GitHub's toolkit does.
	sep := "&"
	if u.RawQuery == "" {
		sep = "?"
		if strings.HasSuffix(rawURL, "?") {
			sep = ""
		}
	}
	ctx, cancel := context.WithTimeout(ctx, githubTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL+sep+"audience="+url.QueryEscape(audience), nil)
	if err != nil {
		return "", fmt.Errorf("$%s: %w", GitHubRequestURLEnv, err)
	}
	req.Header.Set("Authorization", "bearer "+bearer)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "mwid")
	res, err := hc.Do(req)
	if err != nil {
		// Name the host, not the whole URL of the job's endpoint.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return "", fmt.Errorf("token endpoint %s: %w", u.Host, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return "", fmt.Errorf("token endpoint %s: %w", u.Host, err)
	}
	if res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("token endpoint %s answered %s (does the job have permissions: id-token: write?)", u.Host, res.Status)
	}
	var out struct {
		Value string `json:"value"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return "", fmt.Errorf("token endpoint %s: the answer is not JSON with a value", u.Host)
	}
	if out.Value == "" {
		return "", fmt.Errorf("token endpoint %s: the answer has no token in value", u.Host)
	}
	return out.Value, nil
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// BoundKeypair proves possession of the bound key pair of ob: it reads the
// private key, asks the issuer for a challenge for ob's token (presenting
// identity, if not nil, as Attest says), and signs
// the fixed context api.BoundKeypairContext followed by the challenge
// string's bytes, as sent (api.BoundKeypairSignedData). It returns the
// challenge and the signature (ssh.Signature in wire form, base64). The
// key is read at every join, so a rotated credential is used from the next
// join, and it is not kept.
func BoundKeypair(ctx context.Context, ob config.Onboarding, ch Challenger, identity *tls.Certificate) (challenge, signature string, err error) {
	signer, err := readKey(ob.Key)
	if err != nil {
		return "", "", fmt.Errorf("bound key pair: %w", err)
	}
	resp, err := ch.Challenge(ctx, identity, ob.TokenName)
	if err != nil {
		return "", "", fmt.Errorf("bound key pair: challenge: %w", err)
	}
	if resp.Challenge == "" {
		return "", "", errors.New("bound key pair: the issuer's answer has no challenge")
	}
	sig, err := sign(signer, api.BoundKeypairSignedData(resp.Challenge))
	if err != nil {
		return "", "", fmt.Errorf("bound key pair: signing the challenge: %w", err)
	}
	return resp.Challenge, base64.StdEncoding.EncodeToString(ssh.Marshal(sig)), nil
}

// readKey reads and parses the OpenSSH private key src names.
func readKey(src config.SecretSource) (ssh.Signer, error) {
	where := src.File
	if src.Credential != "" {
		where = "credential " + src.Credential
	}
	pemText, err := src.Read()
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey([]byte(pemText))
	var pm *ssh.PassphraseMissingError
	switch {
	case errors.As(err, &pm):
		return nil, fmt.Errorf("private key %s is encrypted with a passphrase; mwid needs it without one (systemd's LoadCredentialEncrypted= protects it at rest)", where)
	case err != nil:
		return nil, fmt.Errorf("private key %s: %w", where, err)
	}
	return signer, nil
}

// sign signs data with s. An RSA key signs with SHA-512 rather than the
// SHA-1 of ssh-rsa.
func sign(s ssh.Signer, data []byte) (*ssh.Signature, error) {
	if as, ok := s.(ssh.AlgorithmSigner); ok && s.PublicKey().Type() == ssh.KeyAlgoRSA {
		return as.SignWithAlgorithm(rand.Reader, data, ssh.KeyAlgoRSASHA512)
	}
	return s.Sign(rand.Reader, data)
}
