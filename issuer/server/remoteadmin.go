package server

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/fault"
	"github.com/mwi-project/mwi/internal/httpjson"
	"github.com/mwi-project/mwi/internal/logging"
	"github.com/mwi-project/mwi/internal/unixsock"
	"github.com/mwi-project/mwi/issuer/audit"
	"github.com/mwi-project/mwi/issuer/ca"
)

// Remote administration. The HTTPS listener serves the admin API, the
// same route table as the admin socket, under /admin/, to callers that
// present an admin identity: a client certificate signed by the admin CA,
// which signs nothing else (see package ca). A bot identity, or no
// certificate, is refused and audited. An admin identity is issued only
// over the admin socket, so that holding one never lets its holder make
// another and outlive its short lifetime.

// DefaultAdminTTL is the lifetime of an admin identity unless the request
// names another.
const DefaultAdminTTL = 8 * time.Hour

// adminNamer returns the name of the admin identity at the head of a
// verified chain, or an error if the admin CA did not sign it: the
// authority's AdminName.
type adminNamer func(chain []*x509.Certificate) (string, error)

// remoteAdmin is what the HTTPS API needs to serve the admin API: its
// route table, and how to tell an admin identity.
type remoteAdmin struct {
	routes http.Handler // adminAPI
	name   adminNamer
}

type adminKey struct{}

// withAdmin returns ctx carrying the name of the admin identity that made
// the request, for the audit log.
func withAdmin(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, adminKey{}, name)
}

// adminFromContext returns the name of the admin identity that made the
// request, if it came over the HTTPS API.
func adminFromContext(ctx context.Context) (string, bool) {
	name, ok := ctx.Value(adminKey{}).(string)
	return name, ok
}

// auditActor names the admin caller (callerAttrs) in every audit record
// made for the request, whichever package writes it: the authority's
// token and lock records as well as the server's.
func auditActor(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r.WithContext(audit.WithActor(r.Context(), callerAttrs(r.Context())...)))
	})
}

// callerAttrs returns the audit attributes naming the admin caller: the
// admin identity's name over HTTPS, the peer's uid and pid over the
// admin socket.
func callerAttrs(ctx context.Context) []slog.Attr {
	if name, ok := adminFromContext(ctx); ok {
		return []slog.Attr{slog.String("admin", name)}
	}
	if p, ok := unixsock.PeerFromContext(ctx); ok {
		return []slog.Attr{slog.Uint64("uid", uint64(p.UID)), slog.Int("pid", int(p.PID))}
	}
	return nil
}

// adminCertOnly admits requests whose caller presented an admin identity,
// and refuses, with 401 without a certificate and 403 with a bot's, every
// other; each refusal is audited, and logged a few lines a second.
func adminCertOnly(name adminNamer, al *audit.Log, log *slog.Logger) func(http.Handler) http.Handler {
	var refusals logging.Limit
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var err error
			attrs := []slog.Attr{slog.String("remote", r.RemoteAddr), slog.String("method", r.Method), slog.String("path", r.URL.Path)}
			if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
				err = fault.Unauthenticated(api.CodeUnauthenticated,
					"the admin API needs an admin identity (mwi-issuer admin issue on the issuer's machine)")
			} else if admin, nerr := name(r.TLS.VerifiedChains[0]); nerr != nil {
				if id, perr := ca.ParseIdentity(r.TLS.VerifiedChains[0][0]); perr == nil {
					attrs = append(attrs, slog.String("bot", id.Bot), slog.String("instance", id.Instance))
				}
				err = fault.Denied(api.CodeAccessDenied, "the admin API serves admin identities only, not bot identities")
			} else {
				next.ServeHTTP(w, r.WithContext(withAdmin(r.Context(), admin)))
				return
			}
			e, _ := fault.As(err)
			refusals.Warn(log, "admin caller refused: "+e.Message, "remote", r.RemoteAddr)
			al.Record(r.Context(), audit.EventAdmin, audit.Denied, append(attrs, slog.String("reason", e.Message))...)
			httpjson.WriteError(w, log, err)
		})
	}
}

// detached returns h serving each request as a router of its own: the
// admin route table, mounted in the HTTPS API's, then matches the whole
// path as it does on the admin socket.
func detached(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), chi.RouteCtxKey, nil)))
	})
}

// IssueAdmin signs an admin identity for the key of req's CSR. It is
// served on the admin socket only.
func (s *Server) IssueAdmin(ctx context.Context, req api.IssueAdminRequest) (api.IssueAdminResponse, error) {
	attrs := []slog.Attr{slog.String("name", req.Name)}
	if _, remote := adminFromContext(ctx); remote {
		return api.IssueAdminResponse{}, s.refuse(ctx, audit.EventAdminIssue, fault.Denied(api.CodeAccessDenied,
			"admin identities are issued on the issuer's machine only, over the admin socket"), attrs...)
	}
	if err := ca.ValidAdminName(req.Name); err != nil {
		return api.IssueAdminResponse{}, s.refuse(ctx, audit.EventAdminIssue, fault.Invalid(api.CodeBadRequest, "%v", err), attrs...)
	}
	// The bound is checked in seconds, before a product that could
	// overflow.
	if maxSeconds := int64(ca.MaxAdminLifetime / time.Second); req.TTLSeconds < 0 || req.TTLSeconds > maxSeconds {
		return api.IssueAdminResponse{}, s.refuse(ctx, audit.EventAdminIssue, fault.Invalid(api.CodeBadRequest,
			"ttl_seconds: from 1 to %d (%s), or 0 for %s", maxSeconds, ca.MaxAdminLifetime, DefaultAdminTTL), attrs...)
	}
	ttl := DefaultAdminTTL
	if req.TTLSeconds != 0 {
		ttl = time.Duration(req.TTLSeconds) * time.Second
	}
	block, _ := pem.Decode([]byte(req.CSR))
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return api.IssueAdminResponse{}, s.refuse(ctx, audit.EventAdminIssue, fault.Invalid(api.CodeBadRequest, "csr: want a PEM CERTIFICATE REQUEST"), attrs...)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return api.IssueAdminResponse{}, s.refuse(ctx, audit.EventAdminIssue, fault.Invalid(api.CodeBadRequest, "csr: %v", err), attrs...)
	}
	now, err := s.auth.Clock(ctx)
	if err != nil {
		return api.IssueAdminResponse{}, err
	}
	cert, err := s.auth.CAs().SignAdmin(csr, req.Name, now.Add(-time.Minute), now.Add(ttl))
	if err != nil {
		return api.IssueAdminResponse{}, s.refuse(ctx, audit.EventAdminIssue, fault.Invalid(api.CodeBadRequest, "%v", err), attrs...)
	}
	// Nothing is handed out that the audit log does not hold.
	if err := s.record(ctx, audit.EventAdminIssue, audit.Allowed, append(attrs,
		slog.String("serial", cert.SerialNumber.Text(16)), slog.Time("expires", cert.NotAfter))...); err != nil {
		return api.IssueAdminResponse{}, fault.Unavailable(api.CodeAuditUnavailable, "the audit log cannot be written: no admin identity is issued until it can")
	}
	return api.IssueAdminResponse{
		Name:        req.Name,
		Certificate: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})),
		IssuerCA:    issuerCAs(s.auth.CAs()),
		Expires:     cert.NotAfter,
	}, nil
}

// issuerCAs returns the TLS authorities the issuer's serving certificate
// may come from, in PEM: two during a rotation.
func issuerCAs(a *ca.Authority) string {
	var out []byte
	for _, c := range a.TLSCAs() {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return string(out)
}
