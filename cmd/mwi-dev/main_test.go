package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/internal/safefs"
	"github.com/mwi-project/mwi/issuer/ca"
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

// newTestDev returns the dev that newDev makes for state, with empty
// files for programs.
func newTestDev(t *testing.T, state string) (*dev, error) {
	t.Helper()
	bin := t.TempDir()
	for _, p := range []string{"mwi-issuer", "mwid", "mwictl"} {
		if err := os.WriteFile(filepath.Join(bin, p), nil, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	return newDev(state, bin, "127.0.0.1:7443")
}

// TestWritesRefuseSymlinks plants a symbolic link at each file and
// directory that mwi-dev writes: each write is refused, and nothing is
// written where the link points.
func TestWritesRefuseSymlinks(t *testing.T) {
	for _, tc := range []struct {
		name  string
		link  string // relative to the state directory
		isDir bool
		write func(d *dev) error
	}{
		{"mwid.yaml", "mwid.yaml", false, func(d *dev) error {
			return d.writeDaemonConfig("sha256:" + strings.Repeat("A", 43) + "=")
		}},
		{"issuer log", "issuer.log", false, func(d *dev) error {
			p, err := startProc("true", d.issuerLog, nil, "/bin/true")
			if err == nil {
				<-p.done
			}
			return err
		}},
		{"lock", "lock", false, func(d *dev) error {
			f, err := lockState(d.state)
			if err == nil {
				f.Close()
			}
			return err
		}},
		{"resources directory", "issuer/resources", true, func(d *dev) error {
			if err := ca.Init(d.issuerState, []string{"127.0.0.1"}); err != nil {
				t.Fatal(err)
			}
			return d.prepareIssuer(context.Background())
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := newTestDev(t, filepath.Join(t.TempDir(), "state"))
			if err != nil {
				t.Fatal(err)
			}
			target := filepath.Join(t.TempDir(), "target")
			if tc.isDir {
				err = os.Mkdir(target, 0o700)
			} else {
				err = os.WriteFile(target, []byte("keep"), 0o600)
			}
			if err != nil {
				t.Fatal(err)
			}
			link := filepath.Join(d.state, tc.link)
			os.MkdirAll(filepath.Dir(link), 0o700)
			if err := os.Symlink(target, link); err != nil {
				t.Fatal(err)
			}
			err = tc.write(d)
			var ue *safefs.UnsafeError
			if !errors.As(err, &ue) || ue.Path != link {
				t.Fatalf("write with a link at %s = %v; want a refusal naming it", link, err)
			}
			if tc.isDir {
				if entries, _ := os.ReadDir(target); len(entries) != 0 {
					t.Errorf("%d entries written through the link", len(entries))
				}
			} else if data, _ := os.ReadFile(target); string(data) != "keep" {
				t.Errorf("written through the link: %q", data)
			}
		})
	}
}

// TestNewDevRefusesLinkedState reaches the state directory through a
// symbolic link: newDev refuses to make or use it.
func TestNewDevRefusesLinkedState(t *testing.T) {
	base := t.TempDir()
	real := filepath.Join(base, "real")
	if err := os.Mkdir(real, 0o700); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	for _, state := range []string{link, filepath.Join(link, "state")} {
		_, err := newTestDev(t, state)
		var ue *safefs.UnsafeError
		if !errors.As(err, &ue) || ue.Path != link {
			t.Errorf("newDev(%s) = %v; want a refusal naming %s", state, err, link)
		}
	}
	if entries, _ := os.ReadDir(real); len(entries) != 0 {
		t.Errorf("newDev made %d entries through the link", len(entries))
	}
}
