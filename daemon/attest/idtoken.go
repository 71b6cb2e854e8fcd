package attest

import (
	"context"
	"crypto/tls"
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

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/config"
)

// IDTokenSource is the Source of the join methods that join with an OIDC
// ID token (github, gitlab, kubernetes and oidc): the token is fetched or
// read from Src at every join.
type IDTokenSource struct {
	Src config.IDTokenSource
}

func idTokenSource(ob config.Onboarding) Source { return IDTokenSource{Src: ob.IDToken} }

// Attest sets req.IDToken to a token from s.Src.
func (s IDTokenSource) Attest(ctx context.Context, req *api.JoinRequest, _ Challenger, _ *tls.Certificate) error {
	tok, err := IDToken(ctx, s.Src)
	if err != nil {
		return err
	}
	req.IDToken = tok
	return nil
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
