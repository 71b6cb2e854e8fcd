// Package sshapi answers the local API's SSH routes: for a client, its SSH
// user certificate, known_hosts lines, an ssh_config block and the hosts it
// may log in to; for a host, its ssh_host outputs and the refusals that
// mwictl ssh authorized-principals reports, which it forwards to the
// issuer. The daemon assembles its localapi.Backend from a Service and its
// own methods.
package sshapi

import (
	"context"
	"crypto/tls"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/daemon/identity"
	"github.com/mwi-project/mwi/daemon/localapi"
	"github.com/mwi-project/mwi/daemon/output"
	"github.com/mwi-project/mwi/daemon/sshconfig"
	"github.com/mwi-project/mwi/internal/fault"
)

// Issuer is what a Service asks of the issuer; *issuerclient.Client
// implements it.
type Issuer interface {
	Nodes(ctx context.Context, identity *tls.Certificate) (api.ReachableNodes, error)
	ReportSSHRefusal(ctx context.Context, identity *tls.Certificate, r api.SSHRefusal) error
}

// Deps is what a Service reads from the daemon. The functions are called
// at each request, so that a renewal or a reload applies at the next.
type Deps struct {
	Log *slog.Logger
	// Credentials returns the credentials in use, or nil until mwid has
	// joined.
	Credentials func() *identity.Credentials
	// Config returns the configuration in use.
	Config func() *config.Config
	// Issuer returns the issuer to ask.
	Issuer func() Issuer
	// Mwictl returns the path of the mwictl that an ssh_config block runs
	// when the caller names none.
	Mwictl func() string
	// Context, if set, returns the context that refusal reports are sent
	// in, which ends when mwid stops; it may return nil.
	Context func() context.Context
}

// Service answers the SSH routes of the local API.
type Service struct {
	d Deps
	// reports bounds the refusal reports forwarded to the issuer at once.
	reports chan struct{}
}

// New returns a Service that reads from the daemon what d says.
func New(d Deps) *Service {
	return &Service{d: d, reports: make(chan struct{}, maxReports)}
}

// Identity returns the SSH user certificate the agent serves.
func (s *Service) Identity() (api.Identity, error) {
	c := s.d.Credentials()
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
func (s *Service) KnownHosts(hosts []string) (string, error) {
	c := s.d.Credentials()
	if c == nil {
		return "", localapi.NotJoined()
	}
	if len(hosts) == 0 {
		hosts = sshconfig.Patterns(s.d.Config().SSHHosts)
	}
	return sshconfig.KnownHosts(hosts, c.HostCAs), nil
}

// nodesTimeout bounds the issuer's answer to GET /v1/nodes.
const nodesTimeout = 30 * time.Second

// SSHNodes asks the issuer for the hosts the bot's roles let it log in to,
// and keeps, of each host's logins, those that the SSH user certificate on
// the agent holds: the agent can sign for no other. A host left with none
// is left out.
func (s *Service) SSHNodes(ctx context.Context) (api.SSHNodes, error) {
	c := s.d.Credentials()
	if c == nil {
		return api.SSHNodes{}, localapi.NotJoined()
	}
	if c.SSHCert == nil {
		return api.SSHNodes{}, fault.NotFound(api.CodeNotFound, "bot %s has no SSH user certificate: its roles allow no logins", c.Bot)
	}
	ctx, cancel := context.WithTimeout(ctx, nodesTimeout)
	defer cancel()
	list, err := s.d.Issuer().Nodes(ctx, c.TLS)
	if err != nil {
		return api.SSHNodes{}, fault.Upstream(api.CodeIssuerFailed, "the issuer did not list the nodes: %v", err)
	}
	out := api.SSHNodes{Bot: c.Bot, Agent: s.d.Config().AgentSocket.Path, Nodes: []api.ReachableNode{}, Truncated: list.Truncated}
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
func (s *Service) SSHConfig(mwictl string) (string, error) {
	c := s.d.Credentials()
	if c == nil {
		return "", localapi.NotJoined()
	}
	if mwictl == "" {
		mwictl = s.d.Mwictl()
	}
	cfg := s.d.Config()
	return sshconfig.Config{
		Bot:       c.Bot,
		Revision:  cfg.Revision,
		Patterns:  sshconfig.Patterns(cfg.SSHHosts),
		Agent:     cfg.AgentSocket.Path,
		Mwictl:    mwictl,
		APISocket: cfg.APISocket.Path,
	}.String(), nil
}

// SSHHostOutputs lists the ssh_host outputs of the configuration, for
// mwictl ssh sshd-config.
func (s *Service) SSHHostOutputs() []api.SSHHostOutput {
	out := []api.SSHHostOutput{}
	for _, o := range s.d.Config().Outputs {
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
func (s *Service) ReportSSHRefusal(r api.SSHRefusal) {
	c := s.d.Credentials()
	if c != nil {
		for _, hc := range c.HostCerts {
			if len(hc.ValidPrincipals) > 0 {
				r.Host = hc.ValidPrincipals[0]
				break
			}
		}
	}
	s.d.Log.Warn("ssh login refused", "login", r.Login, "bot", r.Bot, "instance", r.Instance,
		"key_id", r.KeyID, "serial", r.Serial, "reason", r.Reason, "host", r.Host)
	if c == nil {
		return
	}
	select {
	case s.reports <- struct{}{}:
	default:
		s.d.Log.Warn("ssh refusal not reported to the issuer: too many reports under way", "login", r.Login, "bot", r.Bot)
		return
	}
	var ctx context.Context
	if s.d.Context != nil {
		ctx = s.d.Context()
	}
	if ctx == nil {
		ctx = context.Background()
	}
	ic := s.d.Issuer()
	go func() {
		defer func() { <-s.reports }()
		ctx, cancel := context.WithTimeout(ctx, reportTimeout)
		defer cancel()
		if err := ic.ReportSSHRefusal(ctx, c.TLS, r); err != nil {
			s.d.Log.Warn("cannot report an ssh refusal to the issuer", "login", r.Login, "bot", r.Bot, "err", err)
		}
	}()
}

func certTime(t uint64) time.Time { return time.Unix(int64(t), 0).UTC() }
