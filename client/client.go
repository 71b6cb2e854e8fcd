// Package client is a Go client for mwid's local API.
//
// The zero Client talks to the default socket. Errors from the daemon come
// back as *Error; IsNotRunning, IsAccessDenied, IsNotJoined, IsRenewFailed
// and IsReloadFailed tell the common cases apart.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/httpjson"
)

// DefaultSocket is where mwid's API socket is unless configured otherwise.
const DefaultSocket = "/run/mwi/api.sock"

// maxAnswer bounds the bodies read from mwid; every answer is small.
const maxAnswer = 8 << 20

// Client talks to mwid over its API socket.
type Client struct {
	// Socket is the API socket's path; empty means DefaultSocket.
	Socket string

	once sync.Once
	hc   *http.Client
}

// Error is an error answer from mwid: its HTTP status, its stable code
// (empty when the answer was not an error body, for instance from
// something other than mwid listening on the socket) and its message,
// which is for people; match on the code. Its text is the message.
type Error = httpjson.APIError

// NotRunningError says mwid could not be reached on its socket: the socket
// does not exist or nothing listens on it.
type NotRunningError struct {
	Socket string
	Err    error
}

func (e *NotRunningError) Error() string {
	return fmt.Sprintf("cannot reach mwid at %s: is mwid running? (%v)", e.Socket, e.Err)
}

func (e *NotRunningError) Unwrap() error { return e.Err }

// IsNotRunning reports whether err means mwid is not listening on the socket.
func IsNotRunning(err error) bool {
	var e *NotRunningError
	return errors.As(err, &e)
}

// IsAccessDenied reports whether mwid, or the socket's mode, refused the caller.
func IsAccessDenied(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return e.Code == api.CodeAccessDenied
	}
	return errors.Is(err, syscall.EACCES)
}

// IsNotJoined reports whether mwid has no credentials yet.
func IsNotJoined(err error) bool { return hasCode(err, api.CodeNotJoined) }

// IsRenewFailed reports whether mwid tried to renew its credentials and the
// renewal failed.
func IsRenewFailed(err error) bool { return hasCode(err, api.CodeRenewFailed) }

// IsReloadFailed reports whether mwid refused to reload its configuration.
func IsReloadFailed(err error) bool { return hasCode(err, api.CodeReloadFailed) }

func hasCode(err error, code string) bool { return httpjson.IsCode(err, code) }

func (c *Client) socket() string {
	if c.Socket == "" {
		return DefaultSocket
	}
	return c.Socket
}

func (c *Client) http() *http.Client {
	c.once.Do(func() {
		sock := c.socket()
		c.hc = &http.Client{
			Timeout: 2 * time.Minute,
			Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", sock)
			}},
		}
	})
	return c.hc
}

// Status returns the daemon's status.
func (c *Client) Status(ctx context.Context) (api.Status, error) {
	var s api.Status
	err := c.do(ctx, request{method: http.MethodGet, path: "/v1/status", out: &s})
	return s, err
}

// Version returns the version and commit mwid was built from.
func (c *Client) Version(ctx context.Context) (api.Version, error) {
	var v api.Version
	err := c.do(ctx, request{method: http.MethodGet, path: "/v1/version", out: &v})
	return v, err
}

// Identity returns the SSH user certificate mwid serves on its agent socket.
func (c *Client) Identity(ctx context.Context) (api.Identity, error) {
	var id api.Identity
	err := c.do(ctx, request{method: http.MethodGet, path: "/v1/identity", out: &id})
	return id, err
}

// KnownHosts returns known_hosts lines that trust the issuer's SSH host
// certificate authorities for hosts, or, if there are none, for the host
// patterns of mwid's configuration.
func (c *Client) KnownHosts(ctx context.Context, hosts ...string) (string, error) {
	var q url.Values
	if len(hosts) > 0 {
		q = url.Values{"host": hosts}
	}
	var s string
	err := c.do(ctx, request{method: http.MethodGet, path: "/v1/ssh/known_hosts", query: q, out: &s})
	return s, err
}

// SSHNodes returns the hosts that the bot's roles let it log in to, as the
// issuer lists them, with the logins of mwid's certificate allowed there.
func (c *Client) SSHNodes(ctx context.Context) (api.SSHNodes, error) {
	var n api.SSHNodes
	err := c.do(ctx, request{method: http.MethodGet, path: "/v1/ssh/nodes", out: &n})
	return n, err
}

// SocketPath returns the path of the API socket the client dials.
func (c *Client) SocketPath() string { return c.socket() }

// SSHConfig returns an ssh_config block for the hosts mwid's certificates
// reach. mwictlPath is the mwictl that the block's KnownHostsCommand runs;
// empty leaves the choice to mwid.
func (c *Client) SSHConfig(ctx context.Context, mwictlPath string) (string, error) {
	var q url.Values
	if mwictlPath != "" {
		q = url.Values{"mwictl": {mwictlPath}}
	}
	var s string
	err := c.do(ctx, request{method: http.MethodGet, path: "/v1/ssh/config", query: q, out: &s})
	return s, err
}

// Renew makes mwid renew its credentials now and returns its status after
// the renewal. A failed renewal is an error for which IsRenewFailed is true.
func (c *Client) Renew(ctx context.Context) (api.Status, error) {
	var s api.Status
	err := c.do(ctx, request{method: http.MethodPost, path: "/v1/renew", out: &s})
	return s, err
}

// Reload makes mwid reload its configuration file. A refused configuration
// is an error for which IsReloadFailed is true; its message names the
// problem.
func (c *Client) Reload(ctx context.Context) (api.ReloadResult, error) {
	var r api.ReloadResult
	err := c.do(ctx, request{method: http.MethodPost, path: "/v1/reload", out: &r})
	return r, err
}

// Ready says whether mwid holds valid credentials. A daemon that is not
// ready is an answer, not an error: the error is for failing to ask.
func (c *Client) Ready(ctx context.Context) (api.Readiness, error) {
	var r api.Readiness
	err := c.do(ctx, request{
		method: http.MethodGet, path: "/readyz", out: &r,
		// /readyz answers 503 with the same body when mwid is not ready.
		answer: func(status int) bool { return status == http.StatusServiceUnavailable },
	})
	return r, err
}

// SSHHostOutputs lists the ssh_host outputs of mwid's configuration.
func (c *Client) SSHHostOutputs(ctx context.Context) ([]api.SSHHostOutput, error) {
	var out []api.SSHHostOutput
	err := c.do(ctx, request{method: http.MethodGet, path: "/v1/ssh/host_outputs", out: &out})
	return out, err
}

// ReportSSHRefusal tells mwid of a login that this host's sshd refused, for
// its log and the issuer's audit log.
func (c *Client) ReportSSHRefusal(ctx context.Context, r api.SSHRefusal) error {
	body, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return c.do(ctx, request{method: http.MethodPost, path: "/v1/ssh/refusals", in: body})
}

// request is one call of the API.
type request struct {
	method string
	path   string
	query  url.Values
	in     []byte // a JSON body, if not nil
	// out receives the answer: a *string takes a text body as it is, any
	// other pointer is decoded from JSON; nil discards the body.
	out any
	// answer reports whether a non-2xx status whose body is not an error
	// body still carries an answer for out.
	answer func(status int) bool
}

func (c *Client) do(ctx context.Context, r request) error {
	u := url.URL{Scheme: "http", Host: "mwid", Path: r.path, RawQuery: r.query.Encode()}
	var body io.Reader
	if r.in != nil {
		body = bytes.NewReader(r.in)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u.String(), body)
	if err != nil {
		return err
	}
	if r.in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if _, text := r.out.(*string); text {
		req.Header.Set("Accept", "text/plain")
	} else {
		req.Header.Set("Accept", "application/json")
	}
	res, err := c.http().Do(req)
	if err != nil {
		return c.dialError(err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("reading mwid's answer to %s %s: %w", r.method, r.path, err)
	}
	if res.StatusCode/100 != 2 {
		if e := httpjson.DecodeError(res.StatusCode, data); e != nil {
			return e
		}
		if r.answer == nil || !r.answer(res.StatusCode) {
			return &Error{Status: res.StatusCode, Message: unexpected(r, res.Status, data)}
		}
	}
	switch out := r.out.(type) {
	case nil:
		return nil
	case *string:
		*out = string(data)
		return nil
	default:
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("mwid's answer to %s %s is not the JSON expected: %w", r.method, r.path, err)
		}
		return nil
	}
}

// dialError turns a failure to reach the socket into an error that says
// which socket and why; other errors are returned as they are.
func (c *Client) dialError(err error) error {
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" {
		return err
	}
	switch {
	case errors.Is(err, syscall.EACCES):
		return fmt.Errorf("access to mwid's socket %s denied by its file mode: %w", c.socket(), syscall.EACCES)
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
		return &NotRunningError{Socket: c.socket(), Err: op.Err}
	}
	return fmt.Errorf("cannot reach mwid at %s: %w", c.socket(), op.Err)
}

// unexpected describes a non-2xx answer that is not an error body, quoting
// the start of the body so that whatever answered can be recognised.
func unexpected(r request, status string, body []byte) string {
	msg := fmt.Sprintf("mwid answered %s to %s %s without an error body", status, r.method, r.path)
	line, _, _ := strings.Cut(strings.TrimSpace(string(body)), "\n")
	if len(line) > 120 {
		line = line[:120] + "…"
	}
	if line != "" {
		msg += fmt.Sprintf(" (%q)", line)
	}
	return msg
}
