package daemon

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/daemon/identity"
	"github.com/mwi-project/mwi/daemon/renewal"
	"github.com/mwi-project/mwi/internal/atomicfile"
	"github.com/mwi-project/mwi/internal/httpjson"
)

// reloadCommandTimeout bounds an output's reload command, so a hung
// command cannot stall renewals.
const reloadCommandTimeout = 30 * time.Second

// outputState is what the last write of an output did.
type outputState struct {
	lastWrite   *time.Time
	lastError   string
	lastErrorAt *time.Time
}

// renew joins the first time, and renews with the current identity after.
// It is the loop's only way to obtain credentials; the configuration is
// read once per call, so a reload applies from the next renewal.
func (s *Server) renew(ctx context.Context) (renewal.Result, error) {
	cfg := s.config()
	keys, err := identity.NewKeys()
	if err != nil {
		return renewal.Result{}, err
	}
	pub, err := keys.Public()
	if err != nil {
		return renewal.Result{}, err
	}
	hostReqs, hostKeys, err := hostKeyRequests(cfg.Outputs)
	if err != nil {
		return renewal.Result{}, err
	}
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
	if cur != nil && !rejoin && cur.IdentityValidAt(s.now()) {
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
		// First join, new onboarding, or an identity that expired before a
		// renewal got through (an issuer outage longer than identity_ttl):
		// only a join admits this daemon, with the token read afresh.
		why := "join"
		if cur != nil && !rejoin {
			why = fmt.Sprintf("bot identity expired at %s; joining again", cur.Identity.NotAfter.Format(time.RFC3339))
		}
		token, err := cfg.Onboarding.Token.Read()
		if err != nil {
			return renewal.Result{}, fmt.Errorf("%s: join token: %w", why, err)
		}
		resp, err = issuer.Join(ctx, api.JoinRequest{
			JoinMethod:         cfg.Onboarding.JoinMethod,
			Token:              token,
			Keys:               pub,
			SSHLogins:          cfg.SSHLogins,
			TTLSeconds:         ttl,
			IdentityTTLSeconds: idTTL,
			HostKeys:           hostReqs,
			Kubernetes:         kubeReq,
		})
		if err != nil {
			return renewal.Result{}, fmt.Errorf("%s: %w", why, err)
		}
	}
	creds, err := identity.Assemble(keys, resp, s.now(), hostKeys...)
	if err != nil {
		return renewal.Result{}, err
	}
	s.log.Info("credentials obtained", "bot", creds.Bot, "instance", creds.Instance,
		"generation", creds.Generation, "principals", creds.Principals(), "expires", creds.Expires())
	// Outputs are written before the credentials are published, so that
	// when status says ready, the files are there too.
	err = s.writeOutputs(ctx, cfg.Outputs, creds)
	if kerr := s.writeKubeOutputs(cfg.Outputs, creds); err == nil {
		err = kerr
	}
	s.creds.Set(creds)
	if rejoin {
		s.rejoin.CompareAndSwap(true, false)
	}
	if err != nil {
		// The credentials in memory are good; the failed output is retried
		// with the next renewal, which comes sooner because this failed.
		return renewal.Result{}, err
	}
	return renewal.Result{Received: creds.Received, Expires: creds.Expires()}, nil
}

// hostKeyRequests reads the host public keys of the ssh_host outputs.
// They are read at every renewal so that a rotated host key is certified.
func hostKeyRequests(outputs []config.Output) ([]api.HostKeyRequest, []ssh.PublicKey, error) {
	var reqs []api.HostKeyRequest
	var keys []ssh.PublicKey
	for _, o := range outputs {
		if o.Type != "ssh_host" {
			continue
		}
		data, err := os.ReadFile(o.HostKey)
		if err != nil {
			return nil, nil, fmt.Errorf("ssh_host output: %w", err)
		}
		key, _, _, _, err := ssh.ParseAuthorizedKey(data)
		if err != nil {
			return nil, nil, fmt.Errorf("ssh_host output: %s: %w", o.HostKey, err)
		}
		reqs = append(reqs, api.HostKeyRequest{PublicKey: string(ssh.MarshalAuthorizedKey(key)), Names: o.Names})
		keys = append(keys, key)
	}
	return reqs, keys, nil
}

// writeOutputs writes each host certificate beside its key, atomically, and
// runs the output's reload command. It returns the first failure.
func (s *Server) writeOutputs(ctx context.Context, outputs []config.Output, c *identity.Credentials) error {
	var first error
	i := -1 // index in c.HostCerts, which answer the ssh_host outputs
	for _, o := range outputs {
		if o.Type != "ssh_host" {
			continue
		}
		i++
		err := atomicfile.Write(o.Certificate, ssh.MarshalAuthorizedKey(c.HostCerts[i]), 0o644)
		if err == nil && len(o.ReloadCommand) > 0 {
			err = runReload(ctx, o.ReloadCommand)
		}
		now := s.now()
		s.mu.Lock()
		st := s.outputs[o.Certificate]
		if st == nil {
			st = &outputState{}
			s.outputs[o.Certificate] = st
		}
		if err != nil {
			err = fmt.Errorf("ssh_host output %s: %w", o.Certificate, err)
			st.lastError, st.lastErrorAt = err.Error(), &now
		} else {
			st.lastWrite, st.lastError, st.lastErrorAt = &now, "", nil
		}
		s.mu.Unlock()
		if err != nil {
			s.log.Error("output failed", "path", o.Certificate, "err", err)
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
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("reload command %q: %v: %s", argv, err, out)
	}
	return nil
}

func renewFailed(err error) error {
	return httpjson.Errorf(http.StatusBadGateway, api.CodeRenewFailed, "%v", err)
}
