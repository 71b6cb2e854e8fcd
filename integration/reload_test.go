package integration

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mwi-project/mwi/integration/harness"
)

// edit rewrites the daemon's configuration file by replacing old with new,
// the way an editor saves: a new file renamed over the old one.
func edit(t *testing.T, d *harness.Daemon, old, new string) {
	t.Helper()
	data, err := os.ReadFile(d.Config)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(data), old, new, 1)
	if s == string(data) {
		t.Fatalf("%q not found in the configuration", old)
	}
	tmp := d.Config + ".swp"
	if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, d.Config); err != nil {
		t.Fatal(err)
	}
}

// TestHotReload changes mwid's configuration file while it runs and checks
// each change applies without a restart, picked up by the file watcher
// alone: no signal, no API call.
func TestHotReload(t *testing.T) {
	t.Parallel()
	iss, d := setup(t, time.Hour)
	before, err := d.Status(t)
	if err != nil {
		t.Fatal(err)
	}
	pid := d.Proc.Cmd.Process.Pid

	// A new agent socket path: the new socket serves, the old is gone.
	moved := filepath.Join(d.Dir, "agent2.sock")
	edit(t, d, "path: "+d.AgentSock, "path: "+moved)
	harness.Eventually(t, 10*time.Second, "agent on the new socket", func() error {
		if certs, err := tryListed(t, moved); err != nil || len(certs) != 1 {
			return fmt.Errorf("%d certificates, %v", len(certs), err)
		}
		if _, err := os.Stat(d.AgentSock); err == nil {
			return errors.New("old socket still there")
		}
		return nil
	})

	// The log format switches to JSON.
	edit(t, d, "log:\n  level: debug", "log:\n  level: debug\n  format: json")
	harness.Eventually(t, 10*time.Second, "JSON log lines", func() error {
		if !strings.Contains(d.Proc.Output(), `"msg":"configuration reloaded"`) {
			return errors.New("no JSON line yet")
		}
		return nil
	})

	// New onboarding (a token from a file) makes mwid join again as a new
	// instance, while the old credentials keep serving until then.
	tokenFile := filepath.Join(d.Dir, "token")
	if err := os.WriteFile(tokenFile, []byte(iss.CreateToken(t, "ci", time.Hour)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	edit(t, d, "env: MWI_TOKEN", "file: "+tokenFile)
	harness.Eventually(t, 20*time.Second, "a new instance", func() error {
		if len(listed(t, moved)) != 1 {
			t.Fatal("the agent listed nothing during the re-join")
		}
		st, err := d.Status(t)
		if err != nil {
			return err
		}
		if st.Instance == before.Instance || st.State != "ready" {
			return errors.New("instance " + st.Instance + " state " + st.State + " error " + st.LastError)
		}
		return nil
	})

	// A broken edit is refused and the daemon keeps the last good config.
	st, _ := d.Status(t)
	edit(t, d, "log:", "bogus: 1\nlog:")
	harness.Eventually(t, 10*time.Second, "reload error in status", func() error {
		st2, err := d.Status(t)
		if err != nil {
			return err
		}
		if !strings.Contains(st2.Config.LastReloadError, `unknown field "bogus"`) || st2.Config.Revision != st.Config.Revision || st2.State != "ready" {
			return errors.New("reload error " + st2.Config.LastReloadError)
		}
		return nil
	})
	if d.Proc.Exited() || d.Proc.Cmd.Process.Pid != pid {
		t.Fatal("mwid restarted")
	}
}

// TestIssuerResourceReload edits the issuer's resource directory while it
// runs: a good edit applies at the next renewal, a broken one is refused
// whole and the previous set keeps serving.
func TestIssuerResourceReload(t *testing.T) {
	t.Parallel()
	// Each mwictl renew must reach the issuer, though the join was just
	// made.
	iss, d := setup(t, time.Hour, everyRenewal)
	user := harness.CurrentUser(t)
	iss.WriteResources(t, "test.yaml", strings.Replace(resources(user), "deploy]", "deploy, ops]", 1))
	// The issuer also loads its resources once more after it starts, so
	// its log does not tell this load apart: renewals do.
	harness.Eventually(t, 10*time.Second, "ops among the principals after the edit", func() error {
		if out, err := d.Ctl("renew"); err != nil {
			t.Fatalf("mwictl renew: %v\n%s", err, out)
		}
		if got := strings.Join(listed(t, d.AgentSock)[0].ValidPrincipals, ","); !strings.Contains(got, "ops") {
			return errors.New("principals " + got)
		}
		return nil
	})

	iss.WriteResources(t, "broken.yaml", "kind: role\nversion: v1\nmetadata: {name: x}\nspec: {allow: {logons: [a]}}\n")
	harness.Eventually(t, 10*time.Second, "issuer refused the broken file", func() error {
		if !strings.Contains(iss.Proc.Output(), "broken.yaml:4") {
			return errors.New("not yet")
		}
		return nil
	})
	if out, err := d.Ctl("renew"); err != nil {
		t.Fatalf("renewal with the previous resource set: %v\n%s", err, out)
	}
	if got := strings.Join(listed(t, d.AgentSock)[0].ValidPrincipals, ","); !strings.Contains(got, "ops") {
		t.Fatalf("principals after the broken edit = %s; the previous set should still serve", got)
	}
}

// TestSocketMoveAllOrNothing moves both sockets where one new path cannot
// be used: neither moves, and the running configuration stays.
func TestSocketMoveAllOrNothing(t *testing.T) {
	t.Parallel()
	_, d := setup(t, time.Hour)
	before, _ := d.Status(t)
	agent2 := filepath.Join(d.Dir, "agent2.sock")
	blocked := filepath.Join(d.Dir, "not-a-socket")
	if err := os.WriteFile(blocked, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(d.Config)
	moved := strings.Replace(strings.Replace(string(data), "path: "+d.AgentSock, "path: "+agent2, 1), "path: "+d.APISock, "path: "+blocked, 1)
	os.WriteFile(d.Config, []byte(moved), 0o600)
	out, err := d.Ctl("reload")
	if err == nil || !strings.Contains(out, "sockets.api") {
		t.Fatalf("reload moving the api socket onto a file: err %v\n%s", err, out)
	}
	if certs, err := tryListed(t, d.AgentSock); err != nil || len(certs) != 1 {
		t.Fatalf("the agent left its socket after a failed reload: %d certificates, %v", len(certs), err)
	}
	if _, err := os.Stat(agent2); err == nil {
		t.Error("the new agent socket was left behind")
	}
	if st, _ := d.Status(t); st.Config.Revision != before.Config.Revision {
		t.Errorf("revision %s after a failed reload, want %s", st.Config.Revision, before.Config.Revision)
	}
	// With the obstacle gone, the same file moves both.
	os.Remove(blocked)
	if out, err := d.Ctl("reload"); err != nil {
		t.Fatalf("reload: %v\n%s", err, out)
	}
	if certs, err := tryListed(t, agent2); err != nil || len(certs) != 1 {
		t.Fatalf("agent on the new socket: %d certificates, %v", len(certs), err)
	}
}

// TestReloadDuringRewrite sends mwid SIGHUP while its configuration file
// is rewritten in place, with the same content, its ssh.hosts line last:
// the reload may take the half without that line (mwid then trusts the
// host CA for every host). Once the file is whole again the whole
// configuration must be in use, although it is the content the file
// watcher last saw.
func TestReloadDuringRewrite(t *testing.T) {
	t.Parallel()
	iss := harness.StartIssuer(t, resources(harness.CurrentUser(t)))
	d := harness.StartDaemon(t, iss, harness.DaemonOptions{Token: iss.CreateToken(t, "ci", time.Hour), Hosts: []string{"build.example"}})
	d.WaitState(t, "ready", 20*time.Second)
	knownHosts := func() string {
		out, err := d.Ctl("known-hosts")
		if err != nil {
			t.Fatalf("mwictl known-hosts: %v\n%s", err, out)
		}
		return out
	}
	if !strings.Contains(knownHosts(), "@cert-authority build.example,") {
		t.Fatalf("known-hosts before the rewrite:\n%s", knownHosts())
	}
	data, err := os.ReadFile(d.Config)
	if err != nil {
		t.Fatal(err)
	}
	cut := strings.Index(string(data), "  hosts: ")
	if cut < 0 {
		t.Fatalf("no hosts line in:\n%s", data)
	}
	f, err := os.OpenFile(d.Config, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data[:cut]); err != nil {
		t.Fatal(err)
	}
	if err := d.Proc.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, "the half read", func() error {
		if strings.Contains(knownHosts(), "build.example") {
			return errors.New("not yet")
		}
		return nil
	})
	if _, err := f.Write(data[cut:]); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 15*time.Second, "the whole configuration in use", func() error {
		if !strings.Contains(knownHosts(), "@cert-authority build.example,") {
			return errors.New("known-hosts still trusts the host CA for every host:\n" + knownHosts())
		}
		return nil
	})
}
