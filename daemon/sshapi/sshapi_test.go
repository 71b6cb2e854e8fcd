package sshapi

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/daemon/identity"
	"github.com/mwi-project/mwi/internal/fault"
)

// fakeIssuer records the refusals reported to it, each held until release
// is closed.
type fakeIssuer struct {
	release chan struct{}
	mu      sync.Mutex
	got     []api.SSHRefusal
}

func (f *fakeIssuer) Nodes(ctx context.Context, id *tls.Certificate) (api.ReachableNodes, error) {
	return api.ReachableNodes{}, nil
}

func (f *fakeIssuer) ReportSSHRefusal(ctx context.Context, id *tls.Certificate, r api.SSHRefusal) error {
	f.mu.Lock()
	f.got = append(f.got, r)
	f.mu.Unlock()
	<-f.release
	return nil
}

func newService(f *fakeIssuer, c *identity.Credentials) *Service {
	return New(Deps{
		Log:         slog.New(slog.NewTextHandler(io.Discard, nil)),
		Credentials: func() *identity.Credentials { return c },
		Config:      func() *config.Config { return &config.Config{} },
		Issuer:      func() Issuer { return f },
		Mwictl:      func() string { return "mwictl" },
	})
}

// TestNotJoined: every route that needs credentials refuses with
// not_joined until mwid holds some, and a refusal is not forwarded.
func TestNotJoined(t *testing.T) {
	f := &fakeIssuer{release: make(chan struct{})}
	s := newService(f, nil)
	_, e1 := s.Identity()
	_, e2 := s.KnownHosts(nil)
	_, e3 := s.SSHNodes(context.Background())
	_, e4 := s.SSHConfig("")
	for i, err := range []error{e1, e2, e3, e4} {
		if e, ok := fault.As(err); !ok || e.Code != api.CodeNotJoined {
			t.Errorf("route %d before joining = %v, want not_joined", i, err)
		}
	}
	s.ReportSSHRefusal(api.SSHRefusal{Login: "root"})
	if len(f.got) != 0 {
		t.Errorf("refusals forwarded before joining: %+v", f.got)
	}
}

// TestReportSSHRefusalBounded: refusals are forwarded named by the host
// certificate's first principal, at most maxReports at once; the others
// are only logged.
func TestReportSSHRefusalBounded(t *testing.T) {
	f := &fakeIssuer{release: make(chan struct{})}
	c := &identity.Credentials{Bot: "web", TLS: &tls.Certificate{},
		HostCerts: []*ssh.Certificate{{ValidPrincipals: []string{"web-1.example.com"}}}}
	s := newService(f, c)
	for range maxReports + 2 {
		s.ReportSSHRefusal(api.SSHRefusal{Login: "root", Host: "forged"})
	}
	// The reports under way hold every slot until released, so none of
	// the last two was taken up.
	close(f.release)
	for range maxReports {
		s.reports <- struct{}{} // each slot frees as its report ends
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.got) != maxReports {
		t.Errorf("%d refusals forwarded, want %d", len(f.got), maxReports)
	}
	for _, r := range f.got {
		if r.Host != "web-1.example.com" {
			t.Errorf("refusal forwarded for host %q, want the host certificate's", r.Host)
		}
	}
}
