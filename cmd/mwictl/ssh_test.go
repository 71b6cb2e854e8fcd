package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/hostaccess"
	"github.com/mwi-project/mwi/internal/sshaccess"
)

func sshSigner(t *testing.T) ssh.Signer {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func signCert(t *testing.T, ca ssh.Signer, c *ssh.Certificate) string {
	t.Helper()
	c.Key = sshSigner(t).PublicKey()
	c.ValidAfter, c.ValidBefore = uint64(now.Add(-time.Minute).Unix()), uint64(now.Add(time.Hour).Unix())
	if err := c.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(c.Marshal())
}

// accessHost writes an access directory for a host labelled env=prod that
// trusts userCA, with locks, and returns it.
func accessHost(t *testing.T, userCA ssh.Signer, locks ...api.Lock) string {
	t.Helper()
	host := &ssh.Certificate{CertType: ssh.HostCert, ValidPrincipals: []string{"db-1"},
		Permissions: ssh.Permissions{Extensions: map[string]string{sshaccess.LabelsExtension: `{"env":"prod"}`}}}
	hostB64 := signCert(t, sshSigner(t), host)
	f := hostaccess.File{Written: now.Add(-time.Second), Locks: locks,
		HostCertificate: host.Type() + " " + hostB64,
		UserCAs:         []string{string(ssh.MarshalAuthorizedKey(userCA.PublicKey()))}}
	data, _ := f.Marshal()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, hostaccess.AccessFile), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestAuthorizedPrincipals runs the command as sshd does. It prints only
// the login asked for when it is allowed; never another login of the
// certificate, which sshd would then accept for the login asked for.
func TestAuthorizedPrincipals(t *testing.T) {
	userCA := sshSigner(t)
	ext, _ := (&sshaccess.Access{Bot: "ops", Instance: "i-9", Allow: []sshaccess.Rule{
		{Role: "dba", Logins: []string{"postgres"}, NodeLabels: map[string][]string{"env": {"prod"}}},
		{Role: "staging", Logins: []string{"ubuntu"}, NodeLabels: map[string][]string{"env": {"staging"}}},
	}}).Marshal()
	user := &ssh.Certificate{CertType: ssh.UserCert, KeyId: "bot=ops instance=i-9", Serial: 7, ValidPrincipals: []string{"postgres", "ubuntu"},
		Permissions: ssh.Permissions{Extensions: map[string]string{sshaccess.AccessExtension: ext}}}
	key := signCert(t, userCA, user)
	typ := user.Type()

	var mu sync.Mutex
	var reported []api.SSHRefusal
	f := serve(t, map[string]http.Handler{"POST /v1/ssh/refusals": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ref api.SSHRefusal
		json.NewDecoder(r.Body).Decode(&ref)
		mu.Lock()
		reported = append(reported, ref)
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})})
	var logged []string
	logRefusal = func(line string) { logged = append(logged, line) }
	t.Cleanup(func() { logRefusal = syslogRefusal })

	for _, tc := range []struct {
		name   string
		dir    string
		args   []string
		allow  bool
		reason string
	}{
		{"allowed", accessHost(t, userCA), []string{"postgres", typ, key}, true, ""},
		{"login of another host", accessHost(t, userCA), []string{"ubuntu", typ, key}, false, "no role of bot ops allows login ubuntu on a host labelled env=prod"},
		{"login not in the certificate", accessHost(t, userCA), []string{"root", typ, key}, false, `principal "root" not in the set`},
		{"bot locked", accessHost(t, userCA, api.Lock{Bot: "ops", Reason: "offboarded"}), []string{"postgres", typ, key}, false, "bot ops is locked: offboarded"},
		{"other CA", accessHost(t, sshSigner(t)), []string{"postgres", typ, key}, false, "not signed by the issuer's user CA"},
		{"no access directory", filepath.Join(t.TempDir(), "none"), []string{"postgres", typ, key}, false, "access.json does not exist"},
		{"garbage", accessHost(t, userCA), []string{"postgres", typ, "AAAA"}, false, "cannot be parsed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			reported = nil
			mu.Unlock()
			logged = nil
			code, out, errs := mwictl(f.sock, append([]string{"ssh", "authorized-principals", "--dir", tc.dir}, tc.args...)...)
			if code != 0 {
				t.Fatalf("exit %d, want 0 (sshd reads only the output); stderr %q", code, errs)
			}
			if tc.allow {
				if out != tc.args[0]+"\n" || errs != "" || len(logged) > 0 {
					t.Errorf("stdout %q, stderr %q, logged %q; want the login alone", out, errs, logged)
				}
				return
			}
			if out != "" {
				t.Errorf("refused, yet stdout is %q; want nothing", out)
			}
			if len(logged) != 1 || !strings.Contains(logged[0], tc.reason) || !strings.Contains(logged[0], "login "+tc.args[0]) {
				t.Errorf("logged %q; want one line with the login and %q", logged, tc.reason)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(reported) != 1 || reported[0].Login != tc.args[0] || !strings.Contains(reported[0].Reason, tc.reason) {
				t.Errorf("mwid got %+v", reported)
			}
		})
	}

	// Without mwid, refusals are logged just the same, and the answer
	// does not wait for it.
	code, out, _ := mwictl(filepath.Join(t.TempDir(), "gone.sock"), "ssh", "authorized-principals", "--dir", accessHost(t, userCA), "ubuntu", typ, key)
	if code != 0 || out != "" {
		t.Errorf("without mwid: exit %d, stdout %q", code, out)
	}
	code, out, _ = mwictl(filepath.Join(t.TempDir(), "gone.sock"), "ssh", "authorized-principals", "--dir", accessHost(t, userCA), "postgres", typ, key)
	if code != 0 || out != "postgres\n" {
		t.Errorf("allowed without mwid: exit %d, stdout %q", code, out)
	}

	// A stale file refuses, and says what to do.
	dir := accessHost(t, userCA)
	logged = nil
	timeNow = func() time.Time { return now.Add(14 * time.Minute) }
	defer func() { timeNow = func() time.Time { return now } }()
	code, out, _ = mwictl(f.sock, "ssh", "authorized-principals", "--dir", dir, "--max-stale", "10m", "postgres", typ, key)
	if code != 0 || out != "" || len(logged) != 1 || !strings.Contains(logged[0], "mwid has not refreshed "+dir+"/access.json for 14m1s; is mwid running? (bound: --max-stale 10m0s)") {
		t.Errorf("stale: exit %d, stdout %q, logged %q", code, out, logged)
	}
}

func TestSSHDConfig(t *testing.T) {
	outs := []api.SSHHostOutput{
		{HostKey: "/etc/ssh/ssh_host_ed25519_key.pub", Certificate: "/etc/ssh/ssh_host_ed25519_key-cert.pub", AccessDir: "/var/lib/mwi/ssh"},
		{HostKey: "/etc/ssh/ssh_host_rsa_key.pub", Certificate: "/etc/ssh/ssh_host_rsa_key-cert.pub"},
	}
	f := serve(t, map[string]http.Handler{"GET /v1/ssh/host_outputs": answer(200, outs)})
	self, err := executable()
	if err != nil {
		t.Fatal(err)
	}
	principals := self + " --socket " + f.sock + " ssh authorized-principals --dir /var/lib/mwi/ssh %u %t %k"
	code, out, errs := mwictl(f.sock, "ssh", "sshd-config")
	want(t, code, out, errs, 0, "",
		"HostCertificate /etc/ssh/ssh_host_ed25519_key-cert.pub\nHostCertificate /etc/ssh/ssh_host_rsa_key-cert.pub\n"+
			"TrustedUserCAKeys /var/lib/mwi/ssh/user_ca.pub\nRevokedKeys /var/lib/mwi/ssh/revoked_keys.krl\n"+
			"AuthorizedPrincipalsCommand "+principals+"\nAuthorizedPrincipalsCommandUser nobody\n")

	file := filepath.Join(t.TempDir(), "sshd_config")
	os.WriteFile(file, []byte("# mine\nPort 22\nhostcertificate /etc/ssh/ssh_host_rsa_key-cert.pub\nHostCertificate /etc/ssh/ssh_host_ed25519_key-cert.pub\n"+
		"TrustedUserCAKeys=/etc/ssh/ca.pub\nAuthorizedPrincipalsCommand  "+principals+"\nAuthorizedPrincipalsCommandUser mwi-principals\n"+
		"Match User x\nRevokedKeys /var/lib/mwi/ssh/revoked_keys.krl\n"), 0o644)
	code, out, errs = mwictl(f.sock, "ssh", "sshd-config", "--check", file)
	want(t, code, out, errs, 1, "lacks or sets otherwise 2 of the 6 lines",
		"ok: HostCertificate /etc/ssh/ssh_host_ed25519_key-cert.pub\nok: HostCertificate /etc/ssh/ssh_host_rsa_key-cert.pub\n"+
			"differs: TrustedUserCAKeys /etc/ssh/ca.pub; want TrustedUserCAKeys /var/lib/mwi/ssh/user_ca.pub\n"+
			"missing: RevokedKeys /var/lib/mwi/ssh/revoked_keys.krl\n"+
			"ok: AuthorizedPrincipalsCommand "+principals+"\nok: AuthorizedPrincipalsCommandUser mwi-principals\n")

	none := serve(t, map[string]http.Handler{"GET /v1/ssh/host_outputs": answer(200, []api.SSHHostOutput{})})
	code, out, errs = mwictl(none.sock, "ssh", "sshd-config")
	want(t, code, out, errs, 1, "mwid has no ssh_host output")
}

func TestStatusAccessDir(t *testing.T) {
	st := readyStatus
	st.Outputs = []api.Output{{Type: "ssh_host", Path: "/etc/ssh/k-cert.pub", LastWrite: &now,
		AccessDir: &api.AccessDirStatus{Path: "/var/lib/mwi/ssh", LastWrite: &now, LocksUpdated: &failedAt, Locks: 2, PollError: "issuer: connection refused"}}}
	f := serve(t, map[string]http.Handler{"GET /v1/status": answer(200, st)})
	code, out, errs := mwictl(f.sock, "status")
	want(t, code, out, errs, 0, "", "access dir /var/lib/mwi/ssh, written", "locks 2, updated 2026-03-01T11:59:00Z (1m0s ago)", "poll error issuer: connection refused")
}
