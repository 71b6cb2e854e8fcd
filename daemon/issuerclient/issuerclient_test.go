package issuerclient

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/internal/httpjson"
	"github.com/mwi-project/mwi/internal/tlspin"
	"github.com/mwi-project/mwi/internal/version"
)

func TestPermanent(t *testing.T) {
	tests := []struct {
		status    int
		code      string
		permanent bool
	}{
		{http.StatusForbidden, api.CodeBotLocked, true},
		{http.StatusForbidden, api.CodeInstanceLocked, true},
		{http.StatusForbidden, api.CodeTokenLocked, true},
		{http.StatusForbidden, api.CodeGenerationMismatch, true},
		{http.StatusUnauthorized, api.CodeTokenUsed, true},
		{http.StatusForbidden, api.CodeJoinDenied, true},
		// A rate limit clears by itself, whatever its code.
		{http.StatusTooManyRequests, api.CodeJoinDenied, false},
		{http.StatusServiceUnavailable, api.CodeAuditUnavailable, false},
		{http.StatusServiceUnavailable, api.CodeStoreUnavailable, false},
		{http.StatusServiceUnavailable, api.CodeInternal, false},
		{http.StatusUnauthorized, api.CodeUnauthenticated, false},
		// A code this mwid does not know is retried as an outage.
		{http.StatusForbidden, "something_new", false},
	}
	for _, tt := range tests {
		e := &Error{Status: tt.status, Code: tt.code, Message: "m"}
		if got := Permanent(e); got != tt.permanent {
			t.Errorf("%d %s: Permanent = %v, want %v", tt.status, tt.code, got, tt.permanent)
		}
		if (Action(e) != "") != tt.permanent {
			t.Errorf("%d %s: Action = %q", tt.status, tt.code, Action(e))
		}
		if got, ok := Refused(fmt.Errorf("renew: %w", e)); ok != tt.permanent || ok && got != e {
			t.Errorf("%d %s: Refused of a wrapped error = %v, %v", tt.status, tt.code, got, ok)
		}
	}
	if _, ok := Refused(fmt.Errorf("issuer: connection refused")); ok {
		t.Error("a network error is permanent")
	}
}

// TestEveryCodeDecided checks that every error code in package api is in
// the refusals table, so that a new code cannot be retried as an outage
// by omission.
func TestEveryCodeDecided(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "../../api/api.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if !strings.HasPrefix(name.Name, "Code") || i >= len(vs.Values) {
					continue
				}
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok {
					continue
				}
				code, _ := strconv.Unquote(lit.Value)
				n++
				r, ok := refusals[code]
				if !ok {
					t.Errorf("api.%s (%q) is not in the refusals table", name.Name, code)
				}
				if r.permanent && r.action == "" {
					t.Errorf("api.%s is permanent with no action for an operator", name.Name)
				}
			}
		}
	}
	if n < 10 {
		t.Fatalf("found %d codes in api.go; is the parse right?", n)
	}
}

// TestRefusalDecoded checks that an issuer's error answer keeps its words
// and is found with errors.As, as the one API error type, and that an
// answer without the error shape names the status.
func TestRefusalDecoded(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/join" {
			http.Error(w, "bad gateway", http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		json.NewEncoder(w).Encode(api.ErrorBody{Error: api.Error{Code: api.CodeBotLocked, Message: "bot ci is locked"}})
	}))
	defer srv.Close()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644)
	c, err := New(config.Issuer{Address: strings.TrimPrefix(srv.URL, "https://"), CAFile: caFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Renew(context.Background(), nil, api.RenewRequest{})
	var e *httpjson.APIError
	if err == nil || err.Error() != "issuer refused: bot ci is locked (bot_locked)" || !errors.As(err, &e) ||
		e.Status != http.StatusForbidden || e.Code != api.CodeBotLocked || !isRefused(err) {
		t.Errorf("refusal = %v; want the issuer's words, a permanent bot_locked", err)
	}
	_, err = c.Join(context.Background(), nil, api.JoinRequest{})
	if err == nil || !strings.Contains(err.Error(), "502 Bad Gateway") || httpjson.ErrorCode(err) != "" || isRefused(err) {
		t.Errorf("answer without the error shape = %v", err)
	}
}

// isRefused reports whether Refused finds a permanent refusal in err.
func isRefused(err error) bool {
	_, ok := Refused(err)
	return ok
}

// newTestClient returns a client of srv, trusting its certificate.
func newTestClient(t *testing.T, srv *httptest.Server) *Client {
	t.Helper()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644)
	c, err := New(config.Issuer{Address: strings.TrimPrefix(srv.URL, "https://"), CAFile: caFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestLocksAndKRL checks the ETag exchange of GET /v1/locks and GET
// /v1/ssh/krl: a list the caller holds is not sent again.
func TestLocksAndKRL(t *testing.T) {
	var reported []api.SSHRefusal
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method + " " + r.URL.Path {
		case "GET /v1/locks":
			if r.Header.Get("If-None-Match") == `"l1"` {
				w.WriteHeader(http.StatusNotModified)
				return
			}
			w.Header().Set("ETag", `"l1"`)
			json.NewEncoder(w).Encode(api.LockList{Locks: []api.Lock{{Bot: "ci", Reason: "r"}}})
		case "GET /v1/ssh/krl":
			if r.Header.Get("If-None-Match") == `"k1"` {
				w.WriteHeader(http.StatusNotModified)
				return
			}
			w.Header().Set("ETag", `"k1"`)
			w.Write([]byte("SSHKRL\n\x00"))
		case "GET /v1/nodes":
			json.NewEncoder(w).Encode(api.ReachableNodes{Nodes: []api.ReachableNode{{Name: "web-1", Names: []string{"web-1"}, Logins: []string{"deploy"}}}})
		case "POST /v1/audit/ssh-refusal":
			var ref api.SSHRefusal
			json.NewDecoder(r.Body).Decode(&ref)
			reported = append(reported, ref)
			w.WriteHeader(http.StatusNoContent)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	c := newTestClient(t, srv)
	ctx := context.Background()
	list, etag, modified, err := c.Locks(ctx, nil, "")
	if err != nil || !modified || etag != `"l1"` || len(list.Locks) != 1 || list.Locks[0].Bot != "ci" {
		t.Errorf("Locks = %+v, %q, %v, %v", list, etag, modified, err)
	}
	list, etag, modified, err = c.Locks(ctx, nil, `"l1"`)
	if err != nil || modified || etag != `"l1"` || list.Locks != nil {
		t.Errorf("Locks with the current ETag = %+v, %q, %v, %v", list, etag, modified, err)
	}
	krl, etag, modified, err := c.KRL(ctx, `"old"`)
	if err != nil || !modified || etag != `"k1"` || string(krl) != "SSHKRL\n\x00" {
		t.Errorf("KRL = %q, %q, %v, %v", krl, etag, modified, err)
	}
	krl, _, modified, err = c.KRL(ctx, `"k1"`)
	if err != nil || modified || krl != nil {
		t.Errorf("KRL with the current ETag = %q, %v, %v", krl, modified, err)
	}
	nodes, err := c.Nodes(ctx, nil)
	if err != nil || len(nodes.Nodes) != 1 || nodes.Nodes[0].Name != "web-1" || nodes.Nodes[0].Logins[0] != "deploy" {
		t.Errorf("Nodes = %+v, %v", nodes, err)
	}
	ref := api.SSHRefusal{Login: "root", Bot: "ci", Reason: "locked", Host: "web-1"}
	if err := c.ReportSSHRefusal(ctx, nil, ref); err != nil || len(reported) != 1 || reported[0] != ref {
		t.Errorf("ReportSSHRefusal = %v; issuer got %+v", err, reported)
	}
}

// TestLocksNotServed: an issuer older than the locks API answers 404,
// which is an error, not an empty list of locks.
func TestLocksNotServed(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	c := newTestClient(t, srv)
	if _, _, modified, err := c.Locks(context.Background(), nil, ""); err == nil || modified {
		t.Errorf("Locks from an issuer without them = %v, %v", modified, err)
	}
	if _, _, _, err := c.KRL(context.Background(), ""); err == nil {
		t.Error("KRL from an issuer without one: no error")
	}
	if _, err := c.Nodes(context.Background(), nil); err == nil {
		t.Error("Nodes from an issuer without them: no error")
	}
}

// TestUserAgent checks that mwid names itself and its version to the
// issuer, which shows the version in its node inventory.
func TestUserAgent(t *testing.T) {
	got := make(chan string, 4)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.UserAgent()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(api.Credentials{})
	}))
	defer srv.Close()
	c := newTestClient(t, srv)
	c.Join(context.Background(), nil, api.JoinRequest{})
	c.Renew(context.Background(), nil, api.RenewRequest{})
	c.Locks(context.Background(), nil, "")
	c.Nodes(context.Background(), nil)
	want := "mwid/" + version.Get().Version
	for _, what := range []string{"join", "renew", "locks", "nodes"} {
		if ua := <-got; ua != want || UserAgent() != want {
			t.Errorf("%s: User-Agent %q, want %q", what, ua, want)
		}
	}
}

// TestSystemTrust: without pins or a CA file (a tbot configuration from a
// guide), the issuer is verified with the system's trust store, which does
// not know a test server's certificate: the error says which trust to set.
// With the pin of that certificate the same server is trusted.
func TestSystemTrust(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte("{}"))
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "https://")
	c, err := New(config.Issuer{Address: addr}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Join(context.Background(), nil, api.JoinRequest{})
	for _, s := range []string{"system trust store does not vouch for the issuer", "ca_pins", "--ca-pin"} {
		if err == nil || !strings.Contains(err.Error(), s) {
			t.Errorf("join with the system trust store = %v; want it to name %q", err, s)
		}
	}
	c, err = New(config.Issuer{Address: addr, CAPins: []string{tlspin.Of(srv.Certificate())}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Join(context.Background(), nil, api.JoinRequest{}); err != nil {
		t.Errorf("join with the pin of the server's certificate: %v", err)
	}
}
