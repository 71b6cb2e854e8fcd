package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/integration/harness"
)

// adminFile is a file as a user writes it for mwi-issuer create -f: a
// role that lets the bot log in as login on every host, and the bot.
func adminFile(login string) string {
	return fmt.Sprintf(`# nightly jobs
kind: role
version: v1
metadata:
  name: nightly-ssh
spec:
  allow:
    logins: [%q]
    node_labels: {'*': '*'}
---
kind: role
version: v1
metadata:
  name: backup
spec:
  allow:
    logins: [backup]
    node_labels: {'*': '*'}
---
kind: bot
version: v1
metadata:
  name: nightly
spec:
  roles: [nightly-ssh]
`, login)
}

// TestAdminResources administers resources with the real mwi-issuer
// commands: a role and a bot created with create -f serve a mwid that logs
// in to sshd; bots update --add-roles takes effect on the next renewal
// without a restart; get's output comes back unchanged through
// create -f --force; a bad file is refused whole and the running set kept.
func TestAdminResources(t *testing.T) {
	t.Parallel()
	user := harness.CurrentUser(t)
	// The directory defines one role, which the admin API may not touch.
	iss := harness.StartIssuer(t, "kind: role\nversion: v1\nmetadata: {name: dir-role}\nspec: {}\n")
	admin := func(args ...string) (string, error) {
		argv := append([]string{iss.Bins.Issuer}, args...)
		return harness.Run(context.Background(), 30*time.Second, nil, append(argv, "--admin-socket", iss.AdminSock)...)
	}
	must := func(args ...string) string {
		t.Helper()
		out, err := admin(args...)
		if err != nil {
			t.Fatalf("mwi-issuer %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	file := filepath.Join(t.TempDir(), "nightly.yaml")
	if err := os.WriteFile(file, []byte(adminFile(user)), 0o600); err != nil {
		t.Fatal(err)
	}
	must("create", "-f", file)

	d := harness.StartDaemon(t, iss, harness.DaemonOptions{Token: iss.CreateToken(t, "nightly", time.Hour), Extra: everyRenewal})
	d.WaitState(t, "ready", 20*time.Second)
	sshd := iss.StartSSHD(t, nil)
	if out, err := sshd.SSH(t, d.AgentSock, user, "true"); err != nil {
		t.Fatalf("ssh as %s with the created role: %v\n%s", user, err, out)
	}

	// A host that admits the login "backup" only, which the bot does not
	// have yet.
	principals := filepath.Join(t.TempDir(), "principals")
	if err := os.WriteFile(principals, []byte("backup\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	backupHost := harness.StartSSHDWith(t, harness.SSHDOptions{UserCA: iss.UserCA, HostKey: harness.NewHostKey(t),
		HostCAKey: filepath.Join(iss.State, "ssh_host_ca"), Extra: "AuthorizedPrincipalsFile " + principals + "\n"})
	if out, err := backupHost.SSH(t, d.AgentSock, user, "true"); err == nil {
		t.Fatalf("ssh to the backup host before the update succeeded:\n%s", out)
	}
	must("bots", "update", "nightly", "--add-roles", "backup")
	if out, err := d.Ctl("renew"); err != nil {
		t.Fatalf("mwictl renew: %v\n%s", err, out)
	}
	harness.Eventually(t, 20*time.Second, "the renewed certificate carries backup", func() error {
		certs, err := tryListed(t, d.AgentSock)
		if err != nil {
			return err
		}
		if len(certs) != 1 || !slices.Contains(certs[0].ValidPrincipals, "backup") {
			return fmt.Errorf("agent lists %d certificates, principals %v", len(certs), principalsOf(certs))
		}
		return nil
	})
	if out, err := backupHost.SSH(t, d.AgentSock, user, "true"); err != nil {
		t.Fatalf("ssh to the backup host after bots update and renew: %v\n%s", err, out)
	}

	// get, then create -f --force of its output, leaves get unchanged.
	before := must("get", "role/nightly-ssh")
	if !strings.HasPrefix(before, "# nightly jobs\nkind: role\n") {
		t.Errorf("get role/nightly-ssh = %q; want the document as written", before)
	}
	again := filepath.Join(t.TempDir(), "again.yaml")
	if err := os.WriteFile(again, []byte(before), 0o600); err != nil {
		t.Fatal(err)
	}
	must("create", "-f", again, "--force")
	if after := must("get", "role/nightly-ssh"); after != before {
		t.Errorf("get after the round trip = %q; want %q", after, before)
	}

	// A bad file is refused whole, with its file and lines, and the
	// running set keeps serving.
	all := must("get", "all")
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	badText := "kind: role\nversion: v1\nmetadata: {name: fresh}\nspec: {}\n---\nkind: robot\n---\n" +
		"kind: role\nversion: v1\nmetadata: {name: dir-role}\nspec: {}\n"
	if err := os.WriteFile(bad, []byte(badText), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := admin("create", "-f", bad, "--force")
	if err == nil || !strings.Contains(out, bad+":6: unknown kind \"robot\"") {
		t.Errorf("create -f of a file with an unknown kind: %v\n%s", err, out)
	}
	if err := os.WriteFile(bad, []byte(strings.Replace(badText, "---\nkind: robot\n", "", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = admin("create", "-f", bad, "--force")
	if err == nil || !strings.Contains(out, bad+":6: role \"dir-role\" is defined in "+filepath.Join(iss.State, "resources", "test.yaml")+":1") ||
		!strings.Contains(out, "edit that file") {
		t.Errorf("create -f of a name the directory defines: %v\n%s", err, out)
	}
	if now := must("get", "all"); now != all {
		t.Errorf("a refused create changed the resources:\n%s\nwas\n%s", now, all)
	}
	if out, err := backupHost.SSH(t, d.AgentSock, user, "true"); err != nil {
		t.Fatalf("ssh after the refused creates: %v\n%s", err, out)
	}
	if iss.FindAudit(t, map[string]any{"event": "resource.create", "kind": "role", "name": "nightly-ssh"}) == nil {
		t.Error("no resource.create audit record for role nightly-ssh")
	}
}

// principalsOf returns the principals of each certificate, for messages.
func principalsOf(certs []*ssh.Certificate) [][]string {
	var out [][]string
	for _, c := range certs {
		out = append(out, c.ValidPrincipals)
	}
	return out
}
