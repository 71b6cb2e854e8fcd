package daemon

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/identity"
	"github.com/mwi-project/mwi/daemon/output"
	"github.com/mwi-project/mwi/daemon/renewal"
)

// Status returns the daemon's state for the local API.
func (s *Server) Status() api.Status {
	cfg := s.config()
	s.mu.Lock()
	st := s.status
	outputs := make([]api.Output, 0, len(cfg.Outputs))
	for _, o := range cfg.Outputs {
		path := o.Path()
		if path == "" {
			continue // a kubernetes output kept in memory writes nothing
		}
		out := api.Output{Type: o.Type(), Path: path}
		if os := s.outputs[path]; os != nil {
			out.LastWrite, out.LastError, out.LastErrorAt = os.lastWrite, os.lastError, os.lastErrorAt
		}
		if h, ok := o.(output.SSHHost); ok && h.AccessDir != "" {
			out.AccessDir = s.access.Status(h.AccessDir)
		}
		outputs = append(outputs, out)
	}
	s.mu.Unlock()
	out := api.Status{
		State:       "joining",
		Issuer:      cfg.Issuer.AddressList()[0],
		Credentials: []api.Credential{},
		Outputs:     outputs,
		LastRenewal: st.lastRenewal,
		NextRenewal: st.nextRenewal,
		LastError:   st.lastError,
		LastErrorAt: st.lastErrorAt,
		Refusal:     st.refusal,
		Config: api.ConfigStatus{
			Path:            cfg.Path,
			Revision:        cfg.Revision,
			LoadedAt:        st.loadedAt,
			LastReloadError: st.lastReloadError,
			LastReloadAt:    st.lastReloadAt,
		},
	}
	if ic := s.issuer.Load(); ic != nil {
		out.Issuer = ic.Current() // the replica in use
	}
	c := s.creds.Current()
	if st.refusal != nil {
		// Named above all else: nothing gets better until an operator
		// acts, whether or not mwid still holds valid credentials.
		out.State = "refused"
	}
	if c == nil {
		return out
	}
	out.Joined = true
	out.Bot, out.Instance, out.Generation = c.Bot, c.Instance, c.Generation
	out.Credentials = credentials(c)
	switch {
	case st.refusal != nil:
	case !c.ValidAt(s.now()):
		out.State = "expired"
	case st.lastError != "" || outputFailing(outputs):
		out.State = "degraded"
	default:
		out.State = "ready"
	}
	return out
}

// outputFailing reports whether an output's last write failed.
func outputFailing(outputs []api.Output) bool {
	for _, o := range outputs {
		if o.LastError != "" {
			return true
		}
	}
	return false
}

// credentials describes c's certificates, without their keys.
func credentials(c *identity.Credentials) []api.Credential {
	out := []api.Credential{{Kind: "identity", ValidAfter: c.Identity.NotBefore, Expires: c.Identity.NotAfter}}
	if c.SSHCert != nil {
		out = append(out, api.Credential{
			Kind:       "ssh",
			Principals: c.SSHCert.ValidPrincipals,
			ValidAfter: certTime(c.SSHCert.ValidAfter),
			Expires:    certTime(c.SSHCert.ValidBefore),
		})
	}
	for _, hc := range c.HostCerts {
		out = append(out, api.Credential{
			Kind:       "ssh_host",
			Principals: hc.ValidPrincipals,
			ValidAfter: certTime(hc.ValidAfter),
			Expires:    certTime(hc.ValidBefore),
		})
	}
	return append(out, kubeCredentials(c)...)
}

func certTime(t uint64) time.Time { return time.Unix(int64(t), 0).UTC() }

// Readiness says whether mwid holds valid credentials.
func (s *Server) Readiness() api.Readiness {
	st := s.Status()
	r := api.Readiness{State: st.State, Credentials: []api.CredentialRead{}}
	now := s.now()
	for _, c := range st.Credentials {
		r.Credentials = append(r.Credentials, api.CredentialRead{
			Kind:    c.Kind,
			Valid:   !now.Before(c.ValidAfter) && now.Before(c.Expires),
			Expires: c.Expires,
		})
	}
	// A refused daemon is ready while its credentials are valid: they go
	// on working until they expire, which the check below sees.
	r.Ready = st.Joined && st.State != "expired"
	for _, c := range r.Credentials {
		r.Ready = r.Ready && c.Valid
	}
	return r
}

// Renew renews at once, for the API, and returns the status after it. The
// requests share renewals (see renewal.Loop.Request): whoever loops on
// mwictl renew gets answers, and the issuer gets at most one renewal per
// renew_min_interval from them.
func (s *Server) Renew(ctx context.Context) (api.Status, error) {
	a, how, err := s.loop.Request(ctx)
	if err != nil {
		return api.Status{}, renewFailed(err)
	}
	out := &api.RenewOutcome{Shared: how != renewal.NotShared, CompletedAt: a.At, Message: "renewed"}
	switch how {
	case renewal.InFlight:
		out.Message = "answered by the renewal under way when the request arrived"
	case renewal.Recent:
		out.Message = fmt.Sprintf("answered by the renewal that completed %s ago: mwid asks the issuer at most once per renew_min_interval (%s) on request",
			s.now().Sub(a.At).Round(time.Second), s.config().RenewMinInterval)
	}
	if a.Err != nil {
		if out.Shared {
			return api.Status{}, renewFailed(fmt.Errorf("%w (%s)", a.Err, out.Message))
		}
		return api.Status{}, renewFailed(a.Err)
	}
	st := s.Status()
	st.Renewal = out
	return st, nil
}

// expiryName tells a credential apart from others of its kind in the
// expiry metric: a cluster, or a host certificate's principals.
func expiryName(c api.Credential) string {
	switch c.Kind {
	case "kubernetes":
		return c.Cluster
	case "ssh_host":
		return strings.Join(c.Principals, ",")
	}
	return ""
}
