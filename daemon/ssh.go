package daemon

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/localapi"
	"github.com/mwi-project/mwi/daemon/output"
	"github.com/mwi-project/mwi/daemon/sshconfig"
	"github.com/mwi-project/mwi/internal/fault"
)

// Identity returns the SSH user certificate the agent serves.
func (s *Server) Identity() (api.Identity, error) {
	c := s.creds.Current()
	if c == nil {
		return api.Identity{}, localapi.NotJoined()
	}
	if c.SSHCert == nil {
		return api.Identity{}, fault.NotFound(api.CodeNotFound, "bot %s has no SSH user certificate: its roles allow no logins", c.Bot)
	}
	return api.Identity{
		Bot:         c.Bot,
		Instance:    c.Instance,
		Certificate: strings.TrimSpace(c.SSHCertText),
		KeyID:       c.SSHCert.KeyId,
		Serial:      c.SSHCert.Serial,
		Principals:  c.SSHCert.ValidPrincipals,
		ValidAfter:  certTime(c.SSHCert.ValidAfter),
		ValidBefore: certTime(c.SSHCert.ValidBefore),
	}, nil
}

// KnownHosts returns @cert-authority lines that trust the issuer's host CAs
// for hosts, or, if there are none, for the configured host patterns, and
// nothing else. The local API has checked hosts with sshconfig.CheckName.
func (s *Server) KnownHosts(hosts []string) (string, error) {
	c := s.creds.Current()
	if c == nil {
		return "", localapi.NotJoined()
	}
	if len(hosts) == 0 {
		hosts = sshconfig.Patterns(s.config().SSHHosts)
	}
	return sshconfig.KnownHosts(hosts, c.HostCAs), nil
}

// nodesTimeout bounds the issuer's answer to GET /v1/nodes.
const nodesTimeout = 30 * time.Second

// SSHNodes asks the issuer for the hosts the bot's roles let it log in to,
// and keeps, of each host's logins, those that the SSH user certificate on
// the agent holds: the agent can sign for no other. A host left with none
// is left out.
func (s *Server) SSHNodes(ctx context.Context) (api.SSHNodes, error) {
	c := s.creds.Current()
	if c == nil {
		return api.SSHNodes{}, localapi.NotJoined()
	}
	if c.SSHCert == nil {
		return api.SSHNodes{}, fault.NotFound(api.CodeNotFound, "bot %s has no SSH user certificate: its roles allow no logins", c.Bot)
	}
	ctx, cancel := context.WithTimeout(ctx, nodesTimeout)
	defer cancel()
	list, err := s.issuer.Load().Nodes(ctx, c.TLS)
	if err != nil {
		return api.SSHNodes{}, fault.Upstream(api.CodeIssuerFailed, "the issuer did not list the nodes: %v", err)
	}
	out := api.SSHNodes{Bot: c.Bot, Agent: s.config().AgentSocket.Path, Nodes: []api.ReachableNode{}, Truncated: list.Truncated}
	for _, n := range list.Nodes {
		n.Logins = slices.DeleteFunc(n.Logins, func(l string) bool { return !slices.Contains(c.SSHCert.ValidPrincipals, l) })
		if len(n.Logins) > 0 {
			out.Nodes = append(out.Nodes, n)
		}
	}
	return out, nil
}

// SSHConfig returns an ssh_config block for the configured host patterns:
// the agent socket for authentication, and host keys checked strictly
// against the issuer's host CAs through mwictl, with no known_hosts file
// that trust-on-first-use could add to.
func (s *Server) SSHConfig(mwictl string) (string, error) {
	c := s.creds.Current()
	if c == nil {
		return "", localapi.NotJoined()
	}
	if mwictl == "" {
		mwictl = defaultMwictl()
	}
	cfg := s.config()
	return sshconfig.Config{
		Bot:       c.Bot,
		Revision:  cfg.Revision,
		Patterns:  sshconfig.Patterns(cfg.SSHHosts),
		Agent:     cfg.AgentSocket.Path,
		Mwictl:    mwictl,
		APISocket: cfg.APISocket.Path,
	}.String(), nil
}

// defaultMwictl is the mwictl installed beside mwid, or "mwictl" from PATH.
func defaultMwictl() string {
	exe, err := os.Executable()
	if err == nil {
		p := filepath.Join(filepath.Dir(exe), "mwictl")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "mwictl"
}

// SSHHostOutputs lists the ssh_host outputs of the configuration, for
// mwictl ssh sshd-config.
func (s *Server) SSHHostOutputs() []api.SSHHostOutput {
	out := []api.SSHHostOutput{}
	for _, o := range s.config().Outputs {
		if h, ok := o.(output.SSHHost); ok {
			out = append(out, api.SSHHostOutput{HostKey: h.HostKey, Certificate: h.Certificate, AccessDir: h.AccessDir, Labels: h.Labels})
		}
	}
	return out
}

// maxReports bounds the refusal reports on their way to the issuer at
// once; more are logged here only.
const maxReports = 4

// reportTimeout bounds one refusal report to the issuer.
const reportTimeout = 10 * time.Second

// ReportSSHRefusal logs a login that this host's sshd refused, as mwictl
// ssh authorized-principals reports it, and forwards it to the issuer's
// audit log, in the background and best effort: the login is refused
// whether or not the issuer hears of it.
func (s *Server) ReportSSHRefusal(r api.SSHRefusal) {
	c := s.creds.Current()
	if c != nil {
		for _, hc := range c.HostCerts {
			if len(hc.ValidPrincipals) > 0 {
				r.Host = hc.ValidPrincipals[0]
				break
			}
		}
	}
	s.log.Warn("ssh login refused", "login", r.Login, "bot", r.Bot, "instance", r.Instance,
		"key_id", r.KeyID, "serial", r.Serial, "reason", r.Reason, "host", r.Host)
	if c == nil {
		return
	}
	select {
	case s.reports <- struct{}{}:
	default:
		s.log.Warn("ssh refusal not reported to the issuer: too many reports under way", "login", r.Login, "bot", r.Bot)
		return
	}
	ctx := s.runCtx
	if ctx == nil {
		ctx = context.Background()
	}
	ic := s.issuer.Load()
	go func() {
		defer func() { <-s.reports }()
		ctx, cancel := context.WithTimeout(ctx, reportTimeout)
		defer cancel()
		if err := ic.ReportSSHRefusal(ctx, c.TLS, r); err != nil {
			s.log.Warn("cannot report an ssh refusal to the issuer", "login", r.Login, "bot", r.Bot, "err", err)
		}
	}()
}
