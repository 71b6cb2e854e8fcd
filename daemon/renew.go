package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/attest"
	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/daemon/identity"
	"github.com/mwi-project/mwi/daemon/renewal"
	"github.com/mwi-project/mwi/internal/httpjson"
	"github.com/mwi-project/mwi/internal/safefs"
)

// reloadCommandTimeout bounds an output's reload command, so a hung
// command cannot stall renewals.
const reloadCommandTimeout = 30 * time.Second

// identityClockSkew is how long the bot identity must still be valid for
// mwid to present it with a join: the issuer's clock may run ahead, and an
// identity it finds expired fails the TLS handshake instead of being
// ignored.
const identityClockSkew = time.Minute

// outputState is what the last write of an output did.
type outputState struct {
	lastWrite   *time.Time
	lastError   string
	lastErrorAt *time.Time
}

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
	hostOuts, hostReqs, hostKeys := s.hostKeyRequests(cfg.Outputs)
	kubeReq, err := kubernetesRequest(cfg.Outputs, keys)
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
	if held && cfg.Onboarding.JoinMethod == config.JoinToken {
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
	creds, err := identity.Assemble(keys, resp, s.now(), hostKeys...)
	if err != nil {
		return renewal.Result{}, err
	}
	s.pending = nil
	s.log.Info("credentials obtained", "bot", creds.Bot, "instance", creds.Instance,
		"generation", creds.Generation, "principals", creds.Principals(), "expires", creds.Expires())
	// Outputs are written before the credentials are published, so that
	// when status says ready, the files are there too.
	err = s.writeOutputs(ctx, hostOuts, creds)
	if kerr := s.writeKubeOutputs(cfg.Outputs, creds); err == nil {
		err = kerr
	}
	if ierr := s.writeIdentityOutputs(cfg, creds); err == nil {
		err = ierr
	}
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
	res, err := s.renew(ctx)
	var oe *outputError
	if errors.As(err, &oe) {
		return res, nil
	}
	return res, err
}

// hostKeyRequests reads the host public keys of the ssh_host outputs.
// They are read at every renewal so that a rotated host key is certified.
// An output whose key cannot be read is left out of this renewal and its
// failure recorded, so that it does not stop the renewal of everything
// else; it returns the outputs the requests are for.
func (s *Server) hostKeyRequests(outputs []config.Output) ([]config.Output, []api.HostKeyRequest, []ssh.PublicKey) {
	var outs []config.Output
	var reqs []api.HostKeyRequest
	var keys []ssh.PublicKey
	for _, o := range outputs {
		if o.Type != "ssh_host" {
			continue
		}
		key, err := readHostKey(o)
		if err != nil {
			s.recordOutput(o.Certificate, err)
			continue
		}
		outs = append(outs, o)
		reqs = append(reqs, api.HostKeyRequest{PublicKey: string(ssh.MarshalAuthorizedKey(key)), Names: o.Names})
		keys = append(keys, key)
	}
	return outs, reqs, keys
}

// readHostKey reads the host public key of the ssh_host output o. The
// issuer certifies it with the host's names, so it is read only if no one
// but root or mwid's user could have put it there.
func readHostKey(o config.Output) (ssh.PublicKey, error) {
	data, err := safefs.ReadFile(o.HostKey, maxHostKeyFile)
	var key ssh.PublicKey
	if err == nil {
		key, _, _, _, err = ssh.ParseAuthorizedKey(data)
	}
	if err != nil {
		return nil, fmt.Errorf("ssh_host output %s: host key %s: %w", o.Certificate, o.HostKey, err)
	}
	return key, nil
}

// maxHostKeyFile bounds a host's public key file; an RSA 16384 key is
// under 3 KiB.
const maxHostKeyFile = 16 << 10

// recordOutput records the outcome of writing the output at path, for
// Status, and logs a failure. Every kind of output reports here.
func (s *Server) recordOutput(path string, err error) {
	now := s.now()
	s.mu.Lock()
	st := s.outputs[path]
	if st == nil {
		st = &outputState{}
		s.outputs[path] = st
	}
	if err != nil {
		st.lastError, st.lastErrorAt = err.Error(), &now
	} else {
		st.lastWrite, st.lastError, st.lastErrorAt = &now, "", nil
	}
	s.mu.Unlock()
	if err != nil {
		s.log.Error("output failed", "path", path, "err", err)
	}
}

// writeOutputs writes each host certificate beside its key, atomically, and
// runs the output's reload command; outputs are the ssh_host outputs that
// c.HostCerts answer, in order. It returns the first failure.
func (s *Server) writeOutputs(ctx context.Context, outputs []config.Output, c *identity.Credentials) error {
	var first error
	for i, o := range outputs {
		err := safefs.WriteFile(o.Certificate, ssh.MarshalAuthorizedKey(c.HostCerts[i]), 0o644)
		if err == nil && len(o.ReloadCommand) > 0 {
			err = runReload(ctx, o.ReloadCommand)
		}
		if err != nil {
			err = fmt.Errorf("ssh_host output %s: %w", o.Certificate, err)
		}
		s.recordOutput(o.Certificate, err)
		if err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		s.log.Info("host certificate written", "path", o.Certificate, "names", c.HostCerts[i].ValidPrincipals)
	}
	return first
}

func runReload(ctx context.Context, argv []string) error {
	ctx, cancel := context.WithTimeout(ctx, reloadCommandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	// Only PATH: mwid's environment may hold its join token, credentials
	// directory and systemd's sockets, none of which a reload command needs.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("reload command %q: %v: %s", argv, err, out)
	}
	return nil
}

func renewFailed(err error) error {
	return httpjson.Errorf(http.StatusBadGateway, api.CodeRenewFailed, "%v", err)
}
