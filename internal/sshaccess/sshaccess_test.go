package sshaccess

import (
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
)

func TestMatchLabels(t *testing.T) {
	prod := map[string]string{"env": "prod", "team": "db"}
	for _, tc := range []struct {
		name     string
		selector map[string][]string
		labels   map[string]string
		want     bool
	}{
		{"empty selects none", nil, prod, false},
		{"every host", map[string][]string{"*": {"*"}}, prod, true},
		{"every host without labels", map[string][]string{"*": {"*"}}, nil, true},
		{"value", map[string][]string{"env": {"prod"}}, prod, true},
		{"other value", map[string][]string{"env": {"staging"}}, prod, false},
		{"one of values", map[string][]string{"env": {"staging", "prod"}}, prod, true},
		{"any value", map[string][]string{"env": {"*"}}, prod, true},
		{"any value of a missing label", map[string][]string{"region": {"*"}}, prod, false},
		{"every label must match", map[string][]string{"env": {"prod"}, "team": {"web"}}, prod, false},
		{"all labels match", map[string][]string{"env": {"prod"}, "team": {"db"}}, prod, true},
	} {
		if got := MatchLabels(tc.selector, tc.labels); got != tc.want {
			t.Errorf("%s: MatchLabels(%v, %v) = %v, want %v", tc.name, tc.selector, tc.labels, got, tc.want)
		}
	}
}

func TestDecide(t *testing.T) {
	a := &Access{Bot: "ci", Instance: "i1",
		Allow: []Rule{
			{Role: "staging", Logins: []string{"ubuntu"}, NodeLabels: map[string][]string{"env": {"staging"}}},
			{Role: "root-everywhere", Logins: []string{"root"}, NodeLabels: map[string][]string{"*": {"*"}}},
			{Role: "unmanaged", Logins: []string{"deploy"}},
		},
		Deny: []Rule{{Role: "no-root-in-prod", Logins: []string{"root"}, NodeLabels: map[string][]string{"env": {"prod"}}}},
	}
	staging := map[string]string{"env": "staging"}
	prod := map[string]string{"env": "prod"}
	for _, tc := range []struct {
		login  string
		labels map[string]string
		want   string // "" allowed, else a substring of the reason
	}{
		{"ubuntu", staging, ""},
		{"root", staging, ""},
		{"ubuntu", prod, "no role of bot ci allows login ubuntu on a host labelled env=prod"},
		{"root", prod, "role no-root-in-prod of bot ci denies login root"},
		{"deploy", staging, "no role of bot ci allows login deploy"},
		{"nobody", nil, "no role of bot ci allows login nobody on a host labelled (none)"},
	} {
		err := a.Decide(tc.login, tc.labels)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("Decide(%s, %v) = %v, want allowed", tc.login, tc.labels, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("Decide(%s, %v) = %v, want %q", tc.login, tc.labels, err, tc.want)
		}
	}
	none := &Access{Bot: "ci", Allow: []Rule{{Role: "r", Logins: []string{"u"}, NodeLabels: map[string][]string{"env": {"dev"}}}}}
	if err := none.Decide("u", prod); err == nil || !strings.Contains(err.Error(), "selects a host") {
		t.Errorf("no selecting role: %v", err)
	}
	if got := a.Logins(staging); strings.Join(got, ",") != "root,ubuntu" {
		t.Errorf("Logins(staging) = %v", got)
	}
	if got := a.Logins(prod); len(got) != 0 {
		t.Errorf("Logins(prod) = %v, want none", got)
	}
}

func TestLockedBy(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	a := &Access{Bot: "ci", Instance: "i1", Token: "gh"}
	for _, tc := range []struct {
		name string
		lock api.Lock
		want bool
	}{
		{"bot", api.Lock{Bot: "ci"}, true},
		{"other bot", api.Lock{Bot: "web"}, false},
		{"instance", api.Lock{Bot: "ci", Instance: "i1"}, true},
		{"other instance of the bot", api.Lock{Bot: "ci", Instance: "i2"}, false},
		{"token", api.Lock{Token: "gh"}, true},
		{"other token", api.Lock{Token: "gl"}, false},
		{"expired", api.Lock{Bot: "ci", Expires: now}, false},
		{"not yet expired", api.Lock{Bot: "ci", Expires: now.Add(time.Second)}, true},
	} {
		if _, got := a.LockedBy([]api.Lock{tc.lock}, now); got != tc.want {
			t.Errorf("%s: LockedBy = %v, want %v", tc.name, got, tc.want)
		}
	}
	noToken := &Access{Bot: "ci", Instance: "i1"}
	if _, got := noToken.LockedBy([]api.Lock{{Token: "x"}}, now); got {
		t.Error("a token lock refuses an instance that joined with no token resource")
	}
}

func TestCertificateRoundTrip(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	key, _ := ssh.NewPublicKey(pub)
	a := &Access{Bot: "ci", Instance: "i1", Allow: []Rule{{Role: "r", Logins: []string{"u"}, NodeLabels: map[string][]string{"*": {"*"}}}}}
	v, err := a.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	user := &ssh.Certificate{Key: key, CertType: ssh.UserCert, Permissions: ssh.Permissions{Extensions: map[string]string{AccessExtension: v}}}
	got, err := FromCertificate(user)
	if err != nil || got.Bot != "ci" || got.Decide("u", nil) != nil {
		t.Fatalf("FromCertificate = %+v, %v", got, err)
	}
	for _, tc := range []struct {
		name string
		ext  map[string]string
		typ  uint32
		want string
	}{
		{"none", nil, ssh.UserCert, "carries no MWI access rules"},
		{"malformed", map[string]string{AccessExtension: "{"}, ssh.UserCert, "malformed"},
		{"version", map[string]string{AccessExtension: `{"v":2,"bot":"ci","instance":"i"}`}, ssh.UserCert, "version 2"},
		{"anonymous", map[string]string{AccessExtension: `{"v":1}`}, ssh.UserCert, "names no bot"},
		{"host", map[string]string{AccessExtension: v}, ssh.HostCert, "not a user certificate"},
		{"huge", map[string]string{AccessExtension: strings.Repeat(" ", maxExtension+1)}, ssh.UserCert, "at most"},
	} {
		c := &ssh.Certificate{Key: key, CertType: tc.typ, Permissions: ssh.Permissions{Extensions: tc.ext}}
		if _, err := FromCertificate(c); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: FromCertificate = %v, want %q", tc.name, err, tc.want)
		}
	}
	host := &ssh.Certificate{Key: key, CertType: ssh.HostCert, Permissions: ssh.Permissions{Extensions: map[string]string{LabelsExtension: MarshalLabels(map[string]string{"env": "prod"})}}}
	labels, err := HostLabels(host)
	if err != nil || FormatLabels(labels) != "env=prod" {
		t.Fatalf("HostLabels = %v, %v", labels, err)
	}
	host.Extensions = nil
	if labels, err := HostLabels(host); err != nil || len(labels) != 0 {
		t.Fatalf("HostLabels without the extension = %v, %v", labels, err)
	}
}

func TestKeyID(t *testing.T) {
	if got, want := KeyID("ci", "0f3a"), "bot=ci instance=0f3a"; got != want {
		t.Errorf("KeyID = %q, want %q", got, want)
	}
}
