package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/attest"
	"github.com/mwi-project/mwi/daemon/identity"
	"github.com/mwi-project/mwi/daemon/issuerclient"
	"github.com/mwi-project/mwi/daemon/output"
	"github.com/mwi-project/mwi/daemon/renewal"
	"github.com/mwi-project/mwi/internal/fault"
)

// identityClockSkew is how long the bot identity must still be valid for
// mwid to present it with a join: the issuer's clock may run ahead, and an
// identity it finds expired fails the TLS handshake instead of being
// ignored.
const identityClockSkew = time.Minute

// renew joins the first time, and renews with the current identity after.
// With a join method other than token, every renewal is a join with a
// fresh attestation, made over mutual TLS with the current identity so
// that the issuer keeps the bot instance. It is the loop's only way to
// obtain credentials; the configuration is read once per call, so a reload
// applies from the next renewal.
func (s *Server) renew(ctx context.Context) (renewal.Result, error) {
	cfg := s.config()
	// The keys proposed are kept until an attempt succeeds: if an answer
	// was lost after the issuer moved the generation on, the retry proposes
	// the same identity key, which the issuer recognises as the same
	// request rather than a copied identity. They never leave memory.
	if s.pending == nil {
		keys, err := identity.NewKeys()
		if err != nil {
			return renewal.Result{}, err
		}
		s.pending = keys
	}
	keys := s.pending
	pub, err := keys.Public()
	if err != nil {
		return renewal.Result{}, err
	}
	outs := cfg.Outputs
	var outReq output.Request
	writes := s.requestOutputs(outs, &outReq)
	hostReqs := outReq.HostKeys()
	kubeReq, err := outReq.Kubernetes(keys)
	if err != nil {
		return renewal.Result{}, err
	}
	ttl := int64(cfg.CertificateTTL / time.Second)
	idTTL := int64(cfg.IdentityTTL / time.Second)
	var resp api.Credentials
	cur := s.creds.Current()
	issuer := s.issuer.Load()
	rejoin := s.rejoin.Load()
	now := s.now()
	held := cur != nil && !rejoin && cur.IdentityValidAt(now)
	if held && cfg.Onboarding.JoinMethod == api.JoinMethodToken {
		resp, err = issuer.Renew(ctx, cur.TLS, api.RenewRequest{
			Keys:               pub,
			SSHLogins:          cfg.SSHLogins,
			TTLSeconds:         ttl,
			IdentityTTLSeconds: idTTL,
			HostKeys:           hostReqs,
			Kubernetes:         kubeReq,
		})
		if err != nil {
			return renewal.Result{}, fmt.Errorf("renew: %w", err)
		}
	} else {
		// First join, new onboarding, an identity that expired before a
		// renewal got through (an issuer outage longer than identity_ttl),
		// or a join method other than token, whose identities the issuer
		// does not renew: only a join admits this daemon, with a fresh
		// attestation (token, ID token or key pair signature). A join made
		// over mutual TLS with a still-valid identity keeps the instance; a
		// bound key pair's challenge is asked for with that identity too,
		// which the issuer serves apart from anonymous callers.
		why := "join"
		var ident *tls.Certificate
		switch {
		case held:
			why = "renewal (a join with a fresh attestation)"
			if cur.IdentityValidAt(now.Add(identityClockSkew)) {
				ident = cur.TLS
			}
		case cur != nil && !rejoin:
			why = fmt.Sprintf("bot identity expired at %s; joining again", cur.Identity.NotAfter.Format(time.RFC3339))
		}
		req, err := attest.Attest(ctx, cfg.Onboarding, issuer, ident)
		if err != nil {
			return renewal.Result{}, fmt.Errorf("%s: %w", why, err)
		}
		req.Keys = pub
		req.SSHLogins = cfg.SSHLogins
		req.TTLSeconds = ttl
		req.IdentityTTLSeconds = idTTL
		req.HostKeys = hostReqs
		req.Kubernetes = kubeReq
		resp, err = issuer.Join(ctx, ident, req)
		if err != nil {
			return renewal.Result{}, fmt.Errorf("%s: %w", why, err)
		}
	}
	creds, err := identity.Assemble(keys, resp, s.now(), outReq.HostPublicKeys()...)
	if err != nil {
		return renewal.Result{}, err
	}
	s.pending = nil
	s.log.Info("credentials obtained", "bot", creds.Bot, "instance", creds.Instance,
		"generation", creds.Generation, "principals", creds.Principals(), "expires", creds.Expires())
	// Outputs are written before the credentials are published, so that
	// when status says ready, the files are there too.
	err = s.writeOutputs(ctx, writes, creds, s.outputEnv(cfg))
	s.creds.Set(creds)
	if rejoin {
		s.rejoin.CompareAndSwap(true, false)
	}
	res := renewal.Result{Received: creds.Received, Expires: creds.Expires()}
	if err != nil {
		// The credentials obtained are good and held; only an output
		// failed. The caller decides: the loop keeps its schedule (the
		// output is written again at the next renewal, and status shows
		// the failure), --oneshot fails.
		return res, &outputError{err}
	}
	return res, nil
}

// outputError is an output's failure after credentials were obtained.
type outputError struct{ error }

func (e *outputError) Unwrap() error { return e.error }

// renewForLoop is renew for the renewal loop, for which a failed output
// is not a failed renewal: renewing again sooner would not fix a broken
// reload command or path, and each renewal moves the generation on.
func (s *Server) renewForLoop(ctx context.Context) (renewal.Result, error) {
	start := time.Now()
	res, err := s.renew(ctx)
	var oe *outputError
	if errors.As(err, &oe) {
		err = nil
	}
	s.metrics.RenewalDuration(time.Since(start), err)
	return res, err
}

// classify tells the renewal loop which failures retrying cannot overcome:
// the issuer's permanent refusals (see issuerclient.Permanent), less those
// whose fix mwid reads at every attempt (a new join token in its file).
func classify(err error) renewal.Class {
	if e, ok := issuerclient.Refused(err); ok && !issuerclient.RetriedSoon(e) {
		return renewal.Permanent
	}
	return renewal.Transient
}

func renewFailed(err error) error {
	return fault.Upstream(api.CodeRenewFailed, "%v", err)
}
