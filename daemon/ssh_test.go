package daemon

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/fault"
)

// TestSSHNodes passes on the issuer's node list with the bot identity,
// keeping of each node's logins those the SSH user certificate holds, and
// leaving out the nodes without one.
func TestSSHNodes(t *testing.T) {
	f := newFakeIssuer(t)
	f.logins = []string{"deploy", "ops"}
	t.Setenv("MWI_TEST_JOIN", "s3cret")
	s, _ := newTestServer(t, f, "  join_method: token\n  token: {env: MWI_TEST_JOIN}", "  []\n")
	ctx := context.Background()
	if _, err := s.ssh.SSHNodes(ctx); !isCode(err, api.CodeNotJoined) {
		t.Errorf("SSHNodes before joining = %v, want not_joined", err)
	}
	if _, err := s.renew(ctx); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.nodes = api.ReachableNodes{Truncated: true, Nodes: []api.ReachableNode{
		{Name: "web-1", Names: []string{"web-1"}, Labels: map[string]string{"env": "staging"}, Logins: []string{"deploy", "root"}},
		{Name: "web-2", Names: []string{"web-2"}, Labels: map[string]string{}, Logins: []string{"root"}},
	}}
	f.mu.Unlock()
	got, err := s.ssh.SSHNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := api.SSHNodes{Bot: got.Bot, Agent: s.config().AgentSocket.Path, Truncated: true, Nodes: []api.ReachableNode{
		{Name: "web-1", Names: []string{"web-1"}, Labels: map[string]string{"env": "staging"}, Logins: []string{"deploy"}},
	}}
	if got.Bot == "" || !reflect.DeepEqual(got, want) {
		t.Errorf("SSHNodes = %+v\nwant %+v", got, want)
	}

	f.mu.Lock()
	f.down = true
	f.mu.Unlock()
	_, err = s.ssh.SSHNodes(ctx)
	if e, ok := fault.As(err); !ok || e.Code != api.CodeIssuerFailed || e.Kind != fault.KindUpstream || !strings.Contains(e.Message, "down") {
		t.Errorf("SSHNodes with the issuer down = %v, want issuer_failed with its reason", err)
	}
}

// TestSSHNodesWithoutCertificate refuses a bot whose roles allow no
// logins: no node is reachable without a user certificate.
func TestSSHNodesWithoutCertificate(t *testing.T) {
	f := newFakeIssuer(t)
	f.logins = nil
	t.Setenv("MWI_TEST_JOIN", "s3cret")
	s, _ := newTestServer(t, f, "  join_method: token\n  token: {env: MWI_TEST_JOIN}", "  []\n")
	if _, err := s.renew(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ssh.SSHNodes(context.Background()); !isCode(err, api.CodeNotFound) {
		t.Errorf("SSHNodes without a user certificate = %v, want not_found", err)
	}
}

// TestReportSSHRefusal: a refusal reported to mwid reaches the issuer,
// with the host named by mwid's host certificate.
func TestReportSSHRefusal(t *testing.T) {
	f := newFakeIssuer(t)
	s, _ := accessServer(t, f, t.TempDir())
	s.now = time.Now
	if _, err := s.renew(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.ssh.ReportSSHRefusal(api.SSHRefusal{Login: "root", Bot: "ci", Reason: "bot ci is locked: stolen", Host: "forged"})
	deadline := time.Now().Add(time.Minute)
	for {
		f.mu.Lock()
		got := append([]api.SSHRefusal(nil), f.sshRefusals...)
		f.mu.Unlock()
		if len(got) > 0 {
			if got[0].Login != "root" || got[0].Host != "web-1.example.com" {
				t.Errorf("the issuer got %+v", got[0])
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the refusal did not reach the issuer in a minute")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func isCode(err error, code string) bool {
	e, ok := fault.As(err)
	return ok && e.Code == code
}
