package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRemoteAdminCommands issues an admin identity over the admin socket
// and administers the issuer with it over HTTPS, by flags and by the
// environment.
func TestRemoteAdminCommands(t *testing.T) {
	state, addr := runIssuerAt(t, cliDirYAML)
	id := filepath.Join(t.TempDir(), "alice")
	code, out, errs := mwiIssuer("admin", "issue", "--out", id, "--name", "alice", "--ttl", "1h", "--state", state)
	if code != 0 {
		t.Fatalf("admin issue: exit %d: %s", code, errs)
	}
	if !strings.Contains(out, "admin identity alice written to "+id) {
		t.Errorf("admin issue printed %q", out)
	}
	if fi, err := os.Stat(id); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("identity directory: %v, %v; want mode 700", fi, err)
	}
	for _, f := range []string{identityKeyFile, identityCertFile, identityCAFile} {
		if fi, err := os.Stat(filepath.Join(id, f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, %v; want mode 600", f, fi, err)
		}
	}

	role := filepath.Join(t.TempDir(), "role.yaml")
	if err := os.WriteFile(role, []byte("kind: role\nversion: v1\nmetadata: {name: remote}\nspec:\n  allow: {logins: [remote]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	remote := []string{"--issuer", addr, "--identity", id}
	if code, _, errs := mwiIssuer(append([]string{"create", "-f", role}, remote...)...); code != 0 {
		t.Fatalf("create -f over HTTPS: exit %d: %s", code, errs)
	}
	if code, out, errs := mwiIssuer(append([]string{"get", "role/remote"}, remote...)...); code != 0 || !strings.Contains(out, "name: remote") {
		t.Fatalf("get over HTTPS: exit %d: %s%s", code, out, errs)
	}
	t.Run("environment", func(t *testing.T) {
		t.Setenv("MWI_ISSUER", addr)
		t.Setenv("MWI_IDENTITY", id)
		if code, out, errs := mwiIssuer("get", "role/remote"); code != 0 || !strings.Contains(out, "name: remote") {
			t.Fatalf("get with MWI_ISSUER and MWI_IDENTITY: exit %d: %s%s", code, out, errs)
		}
		// A flag for the socket wins over the environment.
		if code, _, errs := mwiIssuer("get", "role/remote", "--state", state); code != 0 {
			t.Fatalf("get --state with MWI_ISSUER set: exit %d: %s", code, errs)
		}
	})
	t.Run("admin issue over HTTPS refused", func(t *testing.T) {
		// admin issue takes no --issuer; the route refuses callers over
		// HTTPS as well, which the server's tests show.
		if code, _, _ := mwiIssuer(append([]string{"admin", "issue", "--out", t.TempDir()}, remote...)...); code != 2 {
			t.Errorf("admin issue --issuer: exit %d, want 2", code)
		}
	})
	t.Run("no identity", func(t *testing.T) {
		empty := t.TempDir()
		code, _, errs := mwiIssuer("get", "role/remote", "--issuer", addr, "--identity", empty)
		if code != 1 || !strings.Contains(errs, "admin identity "+empty) {
			t.Errorf("get with an empty identity directory: exit %d: %s", code, errs)
		}
	})
	t.Run("out through a link", func(t *testing.T) {
		target := t.TempDir()
		link := filepath.Join(t.TempDir(), "link")
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		if code, _, _ := mwiIssuer("admin", "issue", "--out", filepath.Join(link, "id"), "--name", "alice", "--state", state); code != 1 {
			t.Errorf("admin issue through a link: exit %d, want 1", code)
		}
		if entries, _ := os.ReadDir(target); len(entries) != 0 {
			t.Errorf("admin issue wrote through a link: %v", entries)
		}
	})
}
