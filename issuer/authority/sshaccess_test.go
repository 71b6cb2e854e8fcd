package authority_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/fault"
	"github.com/mwi-project/mwi/internal/sshaccess"
	"github.com/mwi-project/mwi/issuer/audit"
	"github.com/mwi-project/mwi/issuer/authority"
	"github.com/mwi-project/mwi/issuer/ca"
)

// sshAccessYAML defines:
//
//	labelled: may claim env=staging|prod and any team
//	anyhost:  may claim any label
//	plain:    may claim no label
//	dev:      logins deploy (staging), ops (every host, agent forwarding),
//	          legacy (no node_labels); deploy and root denied on prod
//	locked:   logins but no forward_agent
const sshAccessYAML = `kind: role
version: v1
metadata: {name: host}
spec:
  allow:
    host_names: [h1]
---
kind: role
version: v1
metadata: {name: labels}
spec:
  allow:
    host_labels:
      env: [staging, prod]
      team: '*'
---
kind: role
version: v1
metadata: {name: any-label}
spec:
  allow:
    host_labels: {'*': '*'}
---
kind: role
version: v1
metadata: {name: staging}
spec:
  allow:
    logins: [deploy, "{{internal.logins}}"]
    node_labels: {env: staging}
---
kind: role
version: v1
metadata: {name: ops}
spec:
  allow:
    logins: [ops]
    node_labels: {'*': '*'}
  deny:
    logins: [deploy, root]
    node_labels: {env: prod}
  options:
    forward_agent: true
---
kind: role
version: v1
metadata: {name: legacy}
spec:
  allow:
    logins: [legacy]
---
kind: bot
version: v1
metadata: {name: labelled}
spec:
  roles: [host, labels]
---
kind: bot
version: v1
metadata: {name: anyhost}
spec:
  roles: [host, any-label]
---
kind: bot
version: v1
metadata: {name: plain}
spec:
  roles: [host]
---
kind: bot
version: v1
metadata: {name: dev}
spec:
  roles: [staging, ops, legacy]
  traits:
    logins: [alice]
---
kind: bot
version: v1
metadata: {name: narrow}
spec:
  roles: [staging]
`

func hostKeyRequest(t *testing.T, labels map[string]string) api.HostKeyRequest {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return api.HostKeyRequest{PublicKey: string(ssh.MarshalAuthorizedKey(k)), Labels: labels}
}

func TestHostLabels(t *testing.T) {
	for _, tc := range []struct {
		name   string
		bot    string
		labels map[string]string
		code   string // "" for granted
		reason string // in the refusal's message
	}{
		{"no labels", "plain", nil, "", ""},
		{"listed value", "labelled", map[string]string{"env": "staging"}, "", ""},
		{"another listed value", "labelled", map[string]string{"env": "prod"}, "", ""},
		{"each label alone", "labelled", map[string]string{"env": "prod", "team": "db"}, "", ""},
		{"any value", "labelled", map[string]string{"team": "anything"}, "", ""},
		{"value not listed", "labelled", map[string]string{"env": "dev"}, api.CodeHostLabelNotAllowed, "env=dev"},
		{"one label of two refused", "labelled", map[string]string{"env": "prod", "owner": "me"}, api.CodeHostLabelNotAllowed, "owner=me"},
		{"wildcard role", "anyhost", map[string]string{"x": "y", "env": "prod"}, "", ""},
		{"no host_labels", "plain", map[string]string{"env": "prod"}, api.CodeHostLabelNotAllowed, "bot plain"},
		{"wildcard value asked", "anyhost", map[string]string{"env": "*"}, api.CodeBadRequest, "wildcard"},
		{"bad key", "anyhost", map[string]string{"a b": "x"}, api.CodeBadRequest, `invalid label key "a b"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.auth.SetResources(loadResources(t, sshAccessYAML))
			offset := e.audit.Len()
			creds, err := e.auth.Join(context.Background(), api.JoinRequest{
				JoinMethod: api.JoinMethodToken, Token: e.token(t, tc.bot), Keys: newKeys(t).pub, TTLSeconds: 600,
				HostKeys: []api.HostKeyRequest{hostKeyRequest(t, tc.labels)},
			}, nil, "192.0.2.1:1234")
			if tc.code != "" {
				status := http.StatusForbidden
				if tc.code == api.CodeBadRequest {
					status = http.StatusBadRequest
				}
				e.expectDenied(t, err, offset, audit.EventJoin, tc.code, status)
				if herr, ok := fault.As(err); ok && !strings.Contains(herr.Message, tc.reason) {
					t.Errorf("message %q does not name %q", herr.Message, tc.reason)
				}
				for _, l := range e.auditLines(t, offset) {
					if l["outcome"] == audit.Denied && !strings.Contains(l["reason"].(string), tc.reason) {
						t.Errorf("audited reason %q does not name %q", l["reason"], tc.reason)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Join: %v", err)
			}
			cert := hostCert(t, creds)
			got, err := sshaccess.HostLabels(cert)
			if err != nil {
				t.Fatal(err)
			}
			want := tc.labels
			if want == nil {
				want = map[string]string{}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("host certificate labels = %v, want %v", got, want)
			}
			if _, ok := cert.Extensions[sshaccess.LabelsExtension]; !ok {
				t.Error("host certificate without the labels extension")
			}
			var audited bool
			for _, l := range e.auditLines(t, offset) {
				hosts, _ := l["host_certs"].([]any)
				if l["outcome"] == audit.Allowed && len(hosts) == 1 {
					audited = true
					h := hosts[0].(map[string]any)
					gotLabels := map[string]string{}
					for k, v := range h["labels"].(map[string]any) {
						gotLabels[k] = v.(string)
					}
					if !reflect.DeepEqual(gotLabels, want) {
						t.Errorf("audited labels = %v, want %v", h["labels"], want)
					}
				}
			}
			if !audited {
				t.Error("no issue record for the host certificate")
			}
		})
	}
}

// TestHostLabelsRenewRefused shows that a renewal is held to the roles as
// they are now: a label the roles no longer allow is refused, and audited.
func TestHostLabelsRenewRefused(t *testing.T) {
	e := newEnv(t)
	e.auth.SetResources(loadResources(t, sshAccessYAML))
	h := hostKeyRequest(t, map[string]string{"env": "prod"})
	keys := newKeys(t)
	creds, err := e.auth.Join(context.Background(), api.JoinRequest{
		JoinMethod: api.JoinMethodToken, Token: e.token(t, "labelled"), Keys: keys.pub, TTLSeconds: 600,
		HostKeys: []api.HostKeyRequest{h},
	}, nil, "r")
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode([]byte(creds.IdentityCertificate))
	idCert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	id, err := ca.ParseIdentity(idCert)
	if err != nil {
		t.Fatal(err)
	}
	e.auth.SetResources(loadResources(t, strings.Replace(sshAccessYAML, "env: [staging, prod]", "env: [staging]", 1)))
	offset := e.audit.Len()
	_, err = e.auth.Renew(context.Background(), id, api.RenewRequest{Keys: newKeys(t).pub, TTLSeconds: 600, HostKeys: []api.HostKeyRequest{h}}, "r")
	e.expectDenied(t, err, offset, audit.EventRenew, api.CodeHostLabelNotAllowed, http.StatusForbidden)
}

func hostCert(t *testing.T, creds api.Credentials) *ssh.Certificate {
	t.Helper()
	if len(creds.HostCertificates) != 1 {
		t.Fatalf("%d host certificates, want 1", len(creds.HostCertificates))
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(creds.HostCertificates[0]))
	if err != nil {
		t.Fatal(err)
	}
	return pub.(*ssh.Certificate)
}

func TestUserCertificateAccess(t *testing.T) {
	for _, tc := range []struct {
		name    string
		bot     string
		logins  []string
		want    sshaccess.Access
		forward bool
	}{
		{
			name: "every login", bot: "dev",
			want: sshaccess.Access{
				Allow: []sshaccess.Rule{
					{Role: "staging", Logins: []string{"alice", "deploy"}, NodeLabels: map[string][]string{"env": {"staging"}}},
					{Role: "ops", Logins: []string{"ops"}, NodeLabels: map[string][]string{"*": {"*"}}},
					{Role: "legacy", Logins: []string{"legacy"}},
				},
				Deny:         []sshaccess.Rule{{Role: "ops", Logins: []string{"deploy", "root"}, NodeLabels: map[string][]string{"env": {"prod"}}}},
				ForwardAgent: true,
			},
			forward: true,
		},
		{
			// The rules name no login the certificate is not for.
			name: "chosen logins", bot: "dev", logins: []string{"deploy"},
			want: sshaccess.Access{
				Allow: []sshaccess.Rule{
					{Role: "staging", Logins: []string{"deploy"}, NodeLabels: map[string][]string{"env": {"staging"}}},
					{Role: "ops", Logins: []string{}, NodeLabels: map[string][]string{"*": {"*"}}},
					{Role: "legacy", Logins: []string{}},
				},
				Deny:         []sshaccess.Rule{{Role: "ops", Logins: []string{"deploy", "root"}, NodeLabels: map[string][]string{"env": {"prod"}}}},
				ForwardAgent: true,
			},
			forward: true,
		},
		{
			name: "no forwarding", bot: "narrow",
			want: sshaccess.Access{
				Allow: []sshaccess.Rule{{Role: "staging", Logins: []string{"deploy"}, NodeLabels: map[string][]string{"env": {"staging"}}}},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.auth.SetResources(loadResources(t, sshAccessYAML))
			offset := e.audit.Len()
			creds := e.join(t, e.token(t, tc.bot), tc.logins...)
			_, _, cert := parseCreds(t, e, creds)
			if want := "bot=" + tc.bot + " instance=" + creds.Instance; cert.KeyId != want {
				t.Errorf("KeyId = %q, want %q", cert.KeyId, want)
			}
			got, err := sshaccess.FromCertificate(cert)
			if err != nil {
				t.Fatal(err)
			}
			want := tc.want
			want.Version, want.Bot, want.Instance = sshaccess.Version, tc.bot, creds.Instance
			if !reflect.DeepEqual(*got, want) {
				t.Errorf("access = %+v\nwant     %+v", *got, want)
			}
			for _, ext := range []string{"permit-pty", "permit-port-forwarding"} {
				if _, ok := cert.Extensions[ext]; !ok {
					t.Errorf("extension %s missing", ext)
				}
			}
			if _, ok := cert.Extensions["permit-agent-forwarding"]; ok != tc.forward {
				t.Errorf("permit-agent-forwarding present %v, want %v", ok, tc.forward)
			}
			var audited bool
			for _, l := range e.auditLines(t, offset) {
				if l["outcome"] == audit.Allowed && l["ssh_serial"] == strconv.FormatUint(cert.Serial, 10) {
					audited = true
					// forward_agent is written only when it is allowed.
					if want := "bot=" + l["bot"].(string) + " instance=" + l["instance"].(string); cert.KeyId != want ||
						(l["forward_agent"] == true) != tc.forward || l["generation"] != float64(1) {
						t.Errorf("record = %v for key ID %q", l, cert.KeyId)
					}
				}
			}
			if !audited {
				t.Error("no issue record for the user certificate")
			}
		})
	}
}

// TestUserCertificateAccessToken shows that an instance that joined with
// a token resource carries its name, so that a lock of the token refuses
// its certificates on hosts.
func TestUserCertificateAccessToken(t *testing.T) {
	e := newAttestEnv(t)
	raw := e.p.Mint(e.p.GitHubClaims("mwi", "org/repo"))
	creds, err := e.auth.Join(context.Background(), joinReq(t, api.JoinMethodGitHub, "gh", raw), nil, "192.0.2.1:1234")
	if err != nil {
		t.Fatal(err)
	}
	_, _, cert := parseCreds(t, e.env, creds)
	a, err := sshaccess.FromCertificate(cert)
	if err != nil {
		t.Fatal(err)
	}
	if a.Token != "gh" || a.Bot != "ci" || a.Instance != creds.Instance {
		t.Errorf("access = %+v, want token gh, bot ci, instance %s", a, creds.Instance)
	}
	if cert.KeyId != "bot=ci instance="+creds.Instance {
		t.Errorf("KeyId = %q", cert.KeyId)
	}
	e2 := newEnv(t)
	creds = e2.join(t, e2.token(t, "ci"))
	_, _, cert = parseCreds(t, e2, creds)
	if a, err := sshaccess.FromCertificate(cert); err != nil || a.Token != "" {
		t.Errorf("one-time token join: access %+v, %v; want no token name", a, err)
	}
}

// TestNodesRecorded shows that joins and renewals with host keys keep the
// node inventory: names, labels, address without port, mwid's version.
func TestNodesRecorded(t *testing.T) {
	e := newEnv(t)
	e.auth.SetResources(loadResources(t, sshAccessYAML))
	ctx := authority.WithUserAgent(context.Background(), "mwid/v1.4.0 (linux)")
	creds, err := e.auth.Join(ctx, api.JoinRequest{
		JoinMethod: api.JoinMethodToken, Token: e.token(t, "labelled"), Keys: newKeys(t).pub, TTLSeconds: 600,
		HostKeys: []api.HostKeyRequest{hostKeyRequest(t, map[string]string{"env": "prod"}), hostKeyRequest(t, map[string]string{"team": "db"})},
	}, nil, "192.0.2.7:5555")
	if err != nil {
		t.Fatal(err)
	}
	// An instance without host keys is no node.
	e.join(t, e.token(t, "dev"))
	nodes, err := e.auth.Nodes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []api.Node{{Names: []string{"h1"}, Instance: creds.Instance, Bot: "labelled",
		Labels: map[string]string{"env": "prod", "team": "db"}, Address: "192.0.2.7", Version: "v1.4.0"}}
	if len(nodes) == 1 && nodes[0].Renewed.Equal(e.now) {
		want[0].Renewed = nodes[0].Renewed
	}
	if !reflect.DeepEqual(nodes, want) {
		t.Errorf("nodes = %+v\nwant %+v", nodes, want)
	}

	for _, ua := range []string{"", "curl/8.0", "mwid/", "mwid/\x01"} {
		e := newEnv(t)
		e.auth.SetResources(loadResources(t, sshAccessYAML))
		_, err := e.auth.Join(authority.WithUserAgent(context.Background(), ua), api.JoinRequest{
			JoinMethod: api.JoinMethodToken, Token: e.token(t, "plain"), Keys: newKeys(t).pub, TTLSeconds: 600,
			HostKeys: []api.HostKeyRequest{hostKeyRequest(t, nil)},
		}, nil, "[2001:db8::1]:22")
		if err != nil {
			t.Fatal(err)
		}
		nodes, err := e.auth.Nodes(context.Background())
		if err != nil || len(nodes) != 1 || nodes[0].Version != "" || nodes[0].Address != "2001:db8::1" || nodes[0].Labels == nil {
			t.Errorf("User-Agent %q: nodes = %+v, %v; want no version", ua, nodes, err)
		}
	}
}
