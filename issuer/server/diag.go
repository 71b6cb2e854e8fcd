package server

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/mwi-project/mwi/internal/diag"
	"github.com/mwi-project/mwi/issuer/store"
)

// CheckDiagAddr refuses a diagnostics address that is not a loopback
// address unless allowRemote (see diag.CheckAddr).
func CheckDiagAddr(addr string, allowRemote bool) error {
	if err := diag.CheckAddr(addr, allowRemote, "--diag-allow-remote"); err != nil {
		return fmt.Errorf("diagnostics address %w", err)
	}
	return nil
}

// readyTimeout bounds each question /readyz asks.
const readyTimeout = 3 * time.Second

// check is one of the questions /readyz asks, with its answer.
type check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Reason string `json:"reason,omitempty"`
}

// readiness is the body of /readyz.
type readiness struct {
	Status string  `json:"status"` // ok or unavailable
	Checks []check `json:"checks"`
}

// ready asks whether the issuer can issue now: its store answers and
// takes writes, its authorities are loaded and its serving certificate is
// valid, it has a resource set, and its audit log can be written.
func (s *Server) ready(ctx context.Context) readiness {
	var checks []check
	add := func(name string, err error) {
		c := check{Name: name, OK: err == nil}
		if err != nil {
			c.Reason = err.Error()
		}
		checks = append(checks, c)
	}
	pctx, cancel := context.WithTimeout(ctx, readyTimeout)
	err := store.Probe(pctx, s.auth.Store)
	cancel()
	if errors.Is(err, store.ErrUnavailable) {
		// As the API's refusals say it (storeFault): the database's
		// address, user and name are for the log, not for whoever can
		// read this listener.
		err = fmt.Errorf("the issuer cannot reach its database (%s)", storeCause(err))
	}
	add("store", err)
	add("authorities", s.authoritiesReady(time.Now()))
	if s.auth.Resources() == nil {
		add("resources", fmt.Errorf("no resource set loaded"))
	} else {
		add("resources", nil)
	}
	add("audit", s.auth.Audit.Err())
	r := readiness{Status: "ok", Checks: checks}
	for _, c := range checks {
		if !c.OK {
			r.Status = "unavailable"
		}
	}
	return r
}

// authoritiesReady says why the authorities cannot serve at now: none
// loaded, or the serving certificate, the identity authority (which
// renewals present) or the TLS authority (which mwid pins) expired.
func (s *Server) authoritiesReady(now time.Time) error {
	a := s.auth.CAs()
	if a == nil {
		return fmt.Errorf("no authorities loaded")
	}
	if leaf := a.ServingLeaf(); leaf == nil {
		return fmt.Errorf("no serving certificate")
	} else if now.After(leaf.NotAfter) {
		return fmt.Errorf("the serving certificate expired at %s (mwi-issuer tls rotate)", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	for _, x := range []struct {
		name string
		cert *x509.Certificate
	}{{"identity", a.IdentityCA()}, {"tls", a.TLSCA()}} {
		if x.cert != nil && now.After(x.cert.NotAfter) {
			return fmt.Errorf("the %s authority expired at %s", x.name, x.cert.NotAfter.UTC().Format(time.RFC3339))
		}
	}
	return nil
}

// diagRoutes is the route table of the diagnostics listener, see
// diag.Handler: /readyz is 200 when the issuer can issue, with each check.
func (s *Server) diagRoutes() http.Handler {
	return diag.Handler(s.log, func(r *http.Request) (any, bool) {
		rd := s.ready(r.Context())
		return rd, rd.Status == "ok"
	}, s.metrics.Handler())
}
