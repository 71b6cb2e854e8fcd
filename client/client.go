// Package client is a Go client for mwid's local API.
//
// The zero Client talks to the default socket. Errors from the daemon come
// back as *Error; IsNotRunning, IsAccessDenied and IsNotJoined tell the
// common cases apart.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/mwi-project/mwi/api"
)

// DefaultSocket is where mwid's API socket is unless configured otherwise.
const DefaultSocket = "/run/mwi/api.sock"

// Client talks to mwid over its API socket.
type Client struct {
	// Socket is the API socket's path; empty means DefaultSocket.
	Socket string

	once sync.Once
	hc   *http.Client
}

// Error is an error answer from mwid.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Message }

// NotRunningError says mwid could not be reached on its socket.
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
func IsNotJoined(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == api.CodeNotJoined
}

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
	err := c.do(ctx, http.MethodGet, "/v1/status", &s)
	return s, err
}

func (c *Client) do(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://mwid"+path, nil)
	if err != nil {
		return err
	}
	res, err := c.http().Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			if errors.Is(err, syscall.EACCES) {
				return fmt.Errorf("access to %s denied by its file mode: %w", c.socket(), syscall.EACCES)
			}
			return &NotRunningError{Socket: c.socket(), Err: op.Err}
		}
		return err
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 8<<20))
	if err != nil {
		return err
	}
	if res.StatusCode/100 != 2 {
		var e api.ErrorBody
		if json.Unmarshal(data, &e) != nil || e.Error.Code == "" {
			return &Error{Status: res.StatusCode, Code: api.CodeInternal, Message: "mwid answered " + res.Status}
		}
		return &Error{Status: res.StatusCode, Code: e.Error.Code, Message: e.Error.Message}
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(data, out)
}
