package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mwi-project/mwi/integration/harness"
)

// TestOneshotRefusesUnsafeOutputDirectory runs root's mwid --oneshot with
// an identity output whose directory another user could redirect or
// control: its parent a symbolic link to a root-only directory, then a
// directory owned by nobody. mwid refuses each before it joins, naming the
// directory and why, and writes nothing there; the one-time token is not
// spent, and joins once the directory is safe.
func TestOneshotRefusesUnsafeOutputDirectory(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the attack is on root's mwid")
	}
	iss := harness.StartIssuer(t, resources(harness.CurrentUser(t)))
	base := t.TempDir()
	out := filepath.Join(base, "job", "out")
	d := harness.NewDaemon(t, iss, harness.DaemonOptions{
		Token: iss.CreateToken(t, "ci", time.Hour),
		Extra: fmt.Sprintf("outputs:\n  - type: identity\n    directory: %s\n", out),
	})
	refused := func(t *testing.T, why string) {
		t.Helper()
		res, err := d.Oneshot(context.Background(), time.Minute)
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 {
			t.Fatalf("mwid --oneshot: %v; want exit status 1\n%s", err, res)
		}
		if !strings.Contains(res, why) {
			t.Errorf("mwid --oneshot does not say %q:\n%s", why, res)
		}
		t.Logf("refused as expected:\n%s", res)
	}

	t.Run("parent is a link to a root-only directory", func(t *testing.T) {
		secret := filepath.Join(base, "secret")
		if err := os.MkdirAll(filepath.Join(secret, "out"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(secret, filepath.Join(base, "job")); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(filepath.Join(base, "job"))
		refused(t, "refusing "+filepath.Join(base, "job")+": it is a symbolic link")
		if entries, _ := os.ReadDir(filepath.Join(secret, "out")); len(entries) != 0 {
			t.Errorf("mwid wrote through the link: %v", entries)
		}
	})

	t.Run("directory owned by another user", func(t *testing.T) {
		nobody, err := user.Lookup("nobody")
		if err != nil {
			t.Skip("no user nobody")
		}
		if err := os.MkdirAll(out, 0o700); err != nil {
			t.Fatal(err)
		}
		var uid, gid int
		fmt.Sscan(nobody.Uid, &uid)
		fmt.Sscan(nobody.Gid, &gid)
		if err := os.Chown(out, uid, gid); err != nil {
			t.Fatal(err)
		}
		refused(t, "refusing "+out+": it is owned by uid "+nobody.Uid)
		if entries, _ := os.ReadDir(out); len(entries) != 0 {
			t.Errorf("mwid wrote into nobody's directory: %v", entries)
		}
		os.RemoveAll(filepath.Join(base, "job"))
	})

	t.Run("safe directory", func(t *testing.T) {
		res, err := d.Oneshot(context.Background(), time.Minute)
		if err != nil {
			t.Fatalf("mwid --oneshot with the token the refusals left unspent: %v\n%s", err, res)
		}
		checkModes(t, out, map[string]os.FileMode{
			"key": 0o600, "key.pub": 0o644, "key-cert.pub": 0o644, "known_hosts": 0o644, "ssh_config": 0o644,
		})
		for _, dir := range []string{filepath.Dir(out), out} {
			fi, err := os.Lstat(dir)
			if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 || fi.Sys().(*syscall.Stat_t).Uid != 0 {
				t.Errorf("%s: %v, %v; want a directory root made with mode 0700", dir, fi.Mode(), err)
			}
		}
	})
}

// TestSocketModeReload changes the agent socket's mode and group in mwid's
// configuration while it runs. mwid makes the socket again with them and
// puts it in place of the old one, rather than changing the mode and group
// through the path, which a link could have replaced: the path holds a new
// socket with the new mode and group, the agent serves on it, and nothing
// is left beside it.
func TestSocketModeReload(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root, to give the socket another group")
	}
	group, err := user.LookupGroupId("65534")
	if err != nil {
		t.Skip("no group 65534")
	}
	_, d := setup(t, time.Hour)
	ino := func() (uint64, os.FileMode, uint32) {
		fi, err := os.Lstat(d.AgentSock)
		if err != nil {
			return 0, 0, 0
		}
		st := fi.Sys().(*syscall.Stat_t)
		return st.Ino, fi.Mode(), st.Gid
	}
	before, _, _ := ino()
	edit(t, d, "path: "+d.AgentSock, "path: "+d.AgentSock+"\n    mode: \"0660\"\n    group: "+group.Name)
	if out, err := d.Ctl("reload"); err != nil {
		t.Fatalf("mwictl reload: %v\n%s", err, out)
	}
	harness.Eventually(t, 10*time.Second, "the agent socket with mode 0660 and group "+group.Name, func() error {
		if n, mode, gid := ino(); n == before || mode.Type() != os.ModeSocket || mode.Perm() != 0o660 || gid != 65534 {
			return fmt.Errorf("made again %v, mode %v, group %d", n != before, mode, gid)
		}
		return nil
	})
	if certs, err := tryListed(t, d.AgentSock); err != nil || len(certs) != 1 {
		t.Fatalf("agent on the socket made again: %d certificates, %v", len(certs), err)
	}
	entries, _ := os.ReadDir(d.Dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("%s left in the socket directory", e.Name())
		}
	}
}

// TestIssuerStateDirectoryLink starts mwi-issuer with its state directory
// behind a symbolic link, as systemd leaves it under DynamicUser= (a link
// from /var/lib/NAME into /var/lib/private): the admin socket, which is
// never made through a link, is made where the link leads, and the admin
// commands reach it through the state directory's path.
func TestIssuerStateDirectoryLink(t *testing.T) {
	t.Parallel()
	iss := harness.StartIssuer(t, resources(harness.CurrentUser(t)))
	iss.Stop(t)
	private := filepath.Join(iss.Dir, "private")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(iss.State, filepath.Join(private, "state")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(private, "state"), iss.State); err != nil {
		t.Fatal(err)
	}
	// A state directory from before the Kubernetes client CA and the admin
	// CA gets them at serve, written where the link leads.
	for _, f := range []string{"kube_ca.key", "kube_ca.crt", "admin_ca.key", "admin_ca.crt"} {
		if err := os.Remove(filepath.Join(private, "state", f)); err != nil {
			t.Fatal(err)
		}
	}
	iss.Start(t)
	if fi, err := os.Lstat(filepath.Join(private, "state", "admin.sock")); err != nil || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("admin socket in the linked directory: %v, %v", fi, err)
	}
	for _, f := range []string{"kube_ca.key", "kube_ca.crt", "admin_ca.key", "admin_ca.crt"} {
		if fi, err := os.Lstat(filepath.Join(private, "state", f)); err != nil || !fi.Mode().IsRegular() {
			t.Errorf("%s in the linked directory: %v, %v", f, fi, err)
		}
	}
	if tok := iss.CreateToken(t, "ci", time.Hour); tok == "" {
		t.Fatal("no token")
	}
}
