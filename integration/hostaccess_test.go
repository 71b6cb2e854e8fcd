package integration

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/integration/harness"
	"github.com/mwi-project/mwi/internal/hostaccess"
	"github.com/mwi-project/mwi/internal/sshaccess"
)

// TestSSHAuthorizedPrincipals runs a real sshd whose
// AuthorizedPrincipalsCommand is the built mwictl, as an unprivileged user,
// over a hand-written access directory of a host labelled env=prod: a
// certificate whose role selects env=prod logs in, one whose role selects
// only env=staging is refused, and so is the first once its bot is locked.
func TestSSHAuthorizedPrincipals(t *testing.T) {
	t.Parallel()
	bins := harness.Build(t)
	login := harness.CurrentUser(t)
	// sshd runs the command only if it and every directory above it are
	// root's and writable by no one else, which rules out /tmp; the
	// command's user (nobody) must be able to read the access directory.
	root, err := os.MkdirTemp("/run", "mwi-principals-")
	if err != nil {
		t.Skipf("no directory for the principals command outside /tmp: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	os.Chmod(root, 0o755)
	ctl, err := os.ReadFile(bins.Ctl)
	if err != nil {
		t.Fatal(err)
	}
	mwictl := filepath.Join(root, "mwictl")
	if err := os.WriteFile(mwictl, ctl, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "access")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}

	userCA, hostCA := newCA(t), newCA(t)
	hostKey := harness.NewHostKey(t)
	hostPubText, _ := os.ReadFile(hostKey + ".pub")
	hostPub, _, _, _, _ := ssh.ParseAuthorizedKey(hostPubText)
	hostCert := &ssh.Certificate{Key: hostPub, CertType: ssh.HostCert, KeyId: "db-1", ValidPrincipals: []string{"127.0.0.1"},
		ValidBefore: ssh.CertTimeInfinity, Permissions: ssh.Permissions{Extensions: map[string]string{sshaccess.LabelsExtension: `{"env":"prod"}`}}}
	hostCert.SignCert(rand.Reader, hostCA)
	hostCertFile := hostKey + "-cert.pub"
	os.WriteFile(hostCertFile, ssh.MarshalAuthorizedKey(hostCert), 0o644)
	writeAccess := func(locks ...api.Lock) {
		data, _ := hostaccess.File{Written: time.Now(), LocksUpdated: time.Now(), Locks: locks,
			HostCertificate: string(ssh.MarshalAuthorizedKey(hostCert)),
			UserCAs:         []string{string(ssh.MarshalAuthorizedKey(userCA.PublicKey()))}}.Marshal()
		if err := os.WriteFile(filepath.Join(dir, hostaccess.AccessFile), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeAccess()

	sshd := harness.StartSSHDWith(t, harness.SSHDOptions{
		UserCA: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(userCA.PublicKey()))), HostKey: hostKey, HostCert: hostCertFile,
		Extra: fmt.Sprintf("AuthorizedPrincipalsCommand %s --socket %s ssh authorized-principals --dir %s %%u %%t %%k\nAuthorizedPrincipalsCommandUser nobody\n",
			mwictl, filepath.Join(root, "no-mwid.sock"), dir),
	})
	prod := agentWith(t, userCA, "prod", login, map[string][]string{"env": {"prod"}})
	staging := agentWith(t, userCA, "staging", login, map[string][]string{"env": {"staging"}})

	if out, err := sshd.SSH(t, prod, login, "echo", "in"); err != nil || !strings.Contains(out, "in") {
		t.Fatalf("a role selecting env=prod: %v\n%s\nsshd:\n%s", err, out, sshd.Proc.Output())
	}
	if out, err := sshd.SSH(t, staging, login, "echo", "in"); err == nil || !strings.Contains(out, "Permission denied") {
		t.Errorf("a role selecting only env=staging: %v\n%s", err, out)
	}
	writeAccess(api.Lock{Bot: "prod", Reason: "stolen"})
	if out, err := sshd.SSH(t, prod, login, "echo", "in"); err == nil || !strings.Contains(out, "Permission denied") {
		t.Errorf("a locked bot: %v\n%s", err, out)
	}
	writeAccess()
	if out, err := sshd.SSH(t, prod, login, "echo", "in"); err != nil || !strings.Contains(out, "in") {
		t.Errorf("unlocked: %v\n%s", err, out)
	}
	// A stale file, as a stopped mwid leaves it, refuses everyone.
	old := time.Now().Add(-time.Hour)
	data, _ := hostaccess.File{Written: old, HostCertificate: string(ssh.MarshalAuthorizedKey(hostCert)),
		UserCAs: []string{string(ssh.MarshalAuthorizedKey(userCA.PublicKey()))}}.Marshal()
	os.WriteFile(filepath.Join(dir, hostaccess.AccessFile), data, 0o644)
	if out, err := sshd.SSH(t, prod, login, "echo", "in"); err == nil || !strings.Contains(out, "Permission denied") {
		t.Errorf("a stale access.json: %v\n%s", err, out)
	}
}

func newCA(t *testing.T) ssh.Signer {
	t.Helper()
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	s, err := ssh.NewSignerFromKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// agentWith serves, on a new socket, an agent holding a certificate of
// userCA for bot with login, whose one role selects nodeLabels.
func agentWith(t *testing.T, userCA ssh.Signer, bot, login string, nodeLabels map[string][]string) string {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := ssh.NewSignerFromKey(priv)
	ext, _ := (&sshaccess.Access{Bot: bot, Instance: bot + "-1", Allow: []sshaccess.Rule{{Role: bot, Logins: []string{login}, NodeLabels: nodeLabels}}}).Marshal()
	cert := &ssh.Certificate{Key: signer.PublicKey(), CertType: ssh.UserCert, KeyId: "bot=" + bot + " instance=" + bot + "-1",
		ValidPrincipals: []string{login}, ValidAfter: uint64(time.Now().Add(-time.Minute).Unix()), ValidBefore: uint64(time.Now().Add(time.Hour).Unix()),
		Permissions: ssh.Permissions{Extensions: map[string]string{sshaccess.AccessExtension: ext, "permit-pty": ""}}}
	if err := cert.SignCert(rand.Reader, userCA); err != nil {
		t.Fatal(err)
	}
	kr := agent.NewKeyring()
	if err := kr.Add(agent.AddedKey{PrivateKey: priv, Certificate: cert}); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				agent.ServeAgent(kr, c)
			}()
		}
	}()
	return sock
}

// TestSSHAccessDirWritten runs a host's mwid with an ssh_host output whose
// access_dir is set, against the real issuer: the directory gets the
// issuer's user CA and a fresh access.json with the host certificate, and
// mwictl ssh sshd-config names them.
func TestSSHAccessDirWritten(t *testing.T) {
	t.Parallel()
	iss := harness.StartIssuer(t, hostTrustResources(harness.CurrentUser(t)))
	hostKey := harness.NewHostKey(t)
	dir := filepath.Join(t.TempDir(), "access")
	d := harness.StartDaemon(t, iss, harness.DaemonOptions{
		Token: iss.CreateToken(t, "build-01", time.Hour),
		Extra: fmt.Sprintf("outputs:\n  - type: ssh_host\n    host_key: %s.pub\n    access_dir: %s\n", hostKey, dir),
	})
	d.WaitState(t, "ready", 20*time.Second)
	f, err := hostaccess.Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(f.Written) > time.Minute || len(f.UserCAs) == 0 || !strings.HasPrefix(f.HostCertificate, "ssh-ed25519-cert-v01@openssh.com ") {
		t.Errorf("access.json = %+v", f)
	}
	ca, err := os.ReadFile(filepath.Join(dir, hostaccess.UserCAFile))
	if err != nil || strings.TrimSpace(string(ca)) != strings.TrimSpace(f.UserCAs[0]) {
		t.Errorf("user_ca.pub = %q, %v; want access.json's user CA", ca, err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("access directory: %v, %v", fi, err)
	}
	out, err := d.Ctl("ssh", "sshd-config")
	for _, want := range []string{"HostCertificate " + hostKey + "-cert.pub", "TrustedUserCAKeys " + dir + "/user_ca.pub",
		"RevokedKeys " + dir + "/revoked_keys.krl", "ssh authorized-principals --dir " + dir + " %u %t %k"} {
		if err != nil || !strings.Contains(out, want) {
			t.Errorf("mwictl ssh sshd-config: %v; want %q in\n%s", err, want, out)
		}
	}
	st, err := d.Status(t)
	if err != nil || len(st.Outputs) != 1 || st.Outputs[0].AccessDir == nil || st.Outputs[0].AccessDir.Path != dir {
		t.Errorf("status: %+v, %v", st.Outputs, err)
	}
}
