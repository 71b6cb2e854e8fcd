package issuerclient

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/mwi-project/mwi/api"
)

func TestPermanent(t *testing.T) {
	tests := []struct {
		status    int
		code      string
		permanent bool
	}{
		{http.StatusForbidden, api.CodeBotLocked, true},
		{http.StatusForbidden, api.CodeInstanceLocked, true},
		{http.StatusForbidden, api.CodeGenerationMismatch, true},
		{http.StatusUnauthorized, api.CodeTokenUsed, true},
		{http.StatusForbidden, api.CodeJoinDenied, true},
		// A rate limit clears by itself, whatever its code.
		{http.StatusTooManyRequests, api.CodeJoinDenied, false},
		{http.StatusServiceUnavailable, api.CodeAuditUnavailable, false},
		{http.StatusServiceUnavailable, api.CodeInternal, false},
		{http.StatusUnauthorized, api.CodeUnauthenticated, false},
		// A code this mwid does not know is retried as an outage.
		{http.StatusForbidden, "something_new", false},
	}
	for _, tt := range tests {
		e := &Error{Status: tt.status, Code: tt.code, Message: "m"}
		if got := e.Permanent(); got != tt.permanent {
			t.Errorf("%d %s: Permanent = %v, want %v", tt.status, tt.code, got, tt.permanent)
		}
		if (e.Action() != "") != tt.permanent {
			t.Errorf("%d %s: Action = %q", tt.status, tt.code, e.Action())
		}
		if got := IsPermanent(fmt.Errorf("renew: %w", e)); got != tt.permanent {
			t.Errorf("%d %s: IsPermanent of a wrapped error = %v", tt.status, tt.code, got)
		}
	}
	if IsPermanent(fmt.Errorf("issuer: connection refused")) {
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
