package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/issuer/resource"
)

// TestResourcesTemplate checks that the default resources load in the
// issuer and give the bot dev the login they were rendered with.
func TestResourcesTemplate(t *testing.T) {
	for _, login := range []string{"alice", "root", "o'brien", `we"ird#:[x]`, "null", "123"} {
		t.Run(login, func(t *testing.T) {
			data, err := render("dev.yaml", resourcesTemplate, resourceData{Login: login})
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "dev.yaml"), data, 0o600); err != nil {
				t.Fatal(err)
			}
			set, err := resource.LoadDir(dir)
			if err != nil {
				t.Fatalf("rendered resources do not load: %v\n%s", err, data)
			}
			g, err := set.Grant("dev")
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(g.Logins, []string{login}) || g.MaxTTL != time.Hour {
				t.Errorf("grant of bot dev = logins %q, max TTL %s; want [%q], 1h", g.Logins, g.MaxTTL, login)
			}
		})
	}
}

// TestDaemonTemplate checks that the rendered mwid configuration parses and
// says what mwi-dev means.
func TestDaemonTemplate(t *testing.T) {
	dir := t.TempDir()
	want := daemonData{
		IssuerAddr:  "127.0.0.1:7443",
		CAPin:       "sha256:" + strings.Repeat("A", 43) + "=",
		AgentSocket: filepath.Join(dir, "a dir", "agent.sock"),
		APISocket:   filepath.Join(dir, "a dir", "api.sock"),
	}
	data, err := render("mwid.yaml", daemonTemplate, want)
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse(filepath.Join(dir, "mwid.yaml"), data)
	if err != nil {
		t.Fatalf("rendered configuration does not parse: %v\n%s", err, data)
	}
	if c.Issuer.Address != want.IssuerAddr || !slices.Equal(c.Issuer.CAPins, []string{want.CAPin}) {
		t.Errorf("issuer = %+v; want %s pinned to %s", c.Issuer, want.IssuerAddr, want.CAPin)
	}
	if c.AgentSocket.Path != want.AgentSocket || c.APISocket.Path != want.APISocket {
		t.Errorf("sockets = %s, %s; want %s, %s", c.AgentSocket.Path, c.APISocket.Path, want.AgentSocket, want.APISocket)
	}
	if c.Onboarding.JoinMethod != "token" || c.Onboarding.Token != (config.SecretSource{Env: "MWI_TOKEN"}) {
		t.Errorf("onboarding = %+v; want a token from $MWI_TOKEN", c.Onboarding)
	}
	if c.CertificateTTL != time.Hour {
		t.Errorf("certificate_ttl = %s; want 1h", c.CertificateTTL)
	}
}

func TestParseCA(t *testing.T) {
	out := "ca_pin: sha256:abc=\nssh_user_ca: ssh-ed25519 AAAAuser\nssh_host_ca: ssh-ed25519 AAAAhost\n"
	got, err := parseCA(out)
	if err != nil {
		t.Fatal(err)
	}
	if want := (caInfo{Pin: "sha256:abc=", UserCA: "ssh-ed25519 AAAAuser"}); got != want {
		t.Errorf("parseCA = %+v; want %+v", got, want)
	}
	if _, err := parseCA("initialised issuer in x\n"); err == nil {
		t.Error("parseCA of output without a pin succeeded")
	}
}

func TestCheckLogin(t *testing.T) {
	for login, ok := range map[string]bool{
		"alice": true, "o'brien": true, "": false, "a b": false, "a,b": false, "a\nb": false,
	} {
		if err := checkLogin(login); (err == nil) != ok {
			t.Errorf("checkLogin(%q) = %v; want ok %v", login, err, ok)
		}
	}
}

func TestTailLines(t *testing.T) {
	for _, tt := range []struct {
		in   string
		n    int
		want string
	}{
		{"", 3, ""},
		{"a\n", 3, "  a"},
		{"a\nb\nc\nd\n", 2, "  c\n  d"},
		{"a\nb", 5, "  a\n  b"},
	} {
		if got := tailLines([]byte(tt.in), tt.n); got != tt.want {
			t.Errorf("tailLines(%q, %d) = %q; want %q", tt.in, tt.n, got, tt.want)
		}
	}
}

func TestIsModule(t *testing.T) {
	if !isModule([]byte("// c\nmodule github.com/mwi-project/mwi\n\ngo 1.26\n"), modulePath) {
		t.Error("isModule did not find the module line")
	}
	if isModule([]byte("module github.com/mwi-project/mwi/sub\n"), modulePath) {
		t.Error("isModule matched another module")
	}
}

func TestCheckSocketPath(t *testing.T) {
	if err := checkSocketPath("/run/mwi/agent.sock"); err != nil {
		t.Error(err)
	}
	if err := checkSocketPath("/" + strings.Repeat("x", maxSocketPath)); err == nil {
		t.Error("checkSocketPath accepted a path longer than a Unix socket allows")
	}
}
