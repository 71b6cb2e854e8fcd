package server

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/issuer/ca"
	"github.com/mwi-project/mwi/issuer/store"
)

// TestStoreUnavailable checks that a store that cannot be reached is
// answered 503 store_unavailable with the reason on every route that
// needs it, and in /healthz, instead of an internal error; and that
// /healthz recovers with the store.
func TestStoreUnavailable(t *testing.T) {
	a := testCA(t)
	idCert := identityCert(t, a, ca.Identity{Bot: "ci", Instance: "i1", Generation: 4})
	// What the PostgreSQL store returns when the database refuses
	// connections.
	down := fmt.Errorf("store: instance %q: %w", "i1",
		fmt.Errorf("%w: dial tcp 127.0.0.1:5432: %w", store.ErrUnavailable, syscall.ECONNREFUSED))
	f := &fakeJoiner{err: down, storeErr: down}
	h := publicRoutes(f, nil, discardAudit(), discardLog())
	for _, tc := range []struct {
		method, path, body string
	}{
		{http.MethodPost, "/v1/join", `{"join_method":"token","token":"t","keys":{}}`},
		{http.MethodPost, "/v1/renew", `{"ttl_seconds":600}`},
		{http.MethodPost, "/v1/join/challenge", `{"token_name":"t"}`},
		{http.MethodGet, "/v1/locks", ""},
		{http.MethodGet, "/v1/ssh/krl", ""},
		{http.MethodGet, "/healthz", ""},
	} {
		t.Run(tc.path, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
			req.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{idCert.Leaf}}}
			res, body := serve(t, h, req)
			e := errorBody(t, res, body, http.StatusServiceUnavailable, api.CodeStoreUnavailable)
			if !strings.Contains(e.Message, "connection refused") {
				t.Errorf("message %q does not say why", e.Message)
			}
			if strings.Contains(e.Message, "5432") {
				t.Errorf("message %q shows the database's address", e.Message)
			}
		})
	}

	// Any other store failure stays an internal error, whose text is not
	// shown.
	f.err = fmt.Errorf("store: instance %q: decode: bad JSON", "i1")
	req := httptest.NewRequest(http.MethodPost, "/v1/renew", strings.NewReader(`{"ttl_seconds":600}`))
	req.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{idCert.Leaf}}}
	res, body := serve(t, h, req)
	errorBody(t, res, body, http.StatusInternalServerError, api.CodeInternal)

	f.storeErr = nil
	res, body = serve(t, h, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if res.StatusCode != http.StatusOK {
		t.Errorf("healthz = %d %s with the store back", res.StatusCode, body)
	}
}
