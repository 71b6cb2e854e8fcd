package integration

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/kubeconfig"
	"github.com/mwi-project/mwi/integration/harness"
)

// rotationEnv is an issuer, a host whose sshd takes its host certificate
// and its TrustedUserCAKeys from the host's mwid, a client mwid that logs
// in to it through its agent, and, with Kubernetes, an mwid whose kubectl
// calls a real kube-apiserver that trusts the issuer's CA bundle.
type rotationEnv struct {
	iss       *harness.Issuer
	replica   *harness.Issuer // a second issuer on the same store, or nil
	host      *harness.Daemon
	client    *harness.Daemon
	kclient   *harness.Daemon // nil without Kubernetes
	kube      *harness.Kube
	sshd      *harness.SSHD
	plainSSHD *harness.SSHD
	accessDir string
	hostCert  string
	login     string
	work      string
	kubecfg   string // the kclient's kubeconfig (exec plugin)
}

// rotationTTL is the daemons' certificate lifetime: short, so that they
// catch up with each phase within seconds.
const rotationTTL = 10 * time.Second

func setupRotation(t *testing.T, withKube, replicas bool) *rotationEnv {
	t.Helper()
	harness.Require(t, "sshd", "apt-get install -y --no-install-recommends openssh-server")
	e := &rotationEnv{login: harness.CurrentUser(t), work: t.TempDir()}
	res := accessResources(e.login)
	if withKube {
		e.kube = harness.NewKube(t)
		res += "---\n" + kubeResources + "---\n" + e.kube.ClusterYAML("dev", map[string]string{"env": "dev", "team": "a"})
	}
	// With replicas, the host renews through the second issuer and the
	// client through the first, each failing over to the other.
	var hostAddrs, clientAddrs []string
	if replicas {
		e.iss, e.replica = startReplicas(t, res)
		hostAddrs, clientAddrs = []string{e.replica.Addr, e.iss.Addr}, []string{e.iss.Addr, e.replica.Addr}
	} else {
		e.iss = harness.StartIssuer(t, res)
	}
	if withKube {
		e.kube.Start(t, e.iss.KubeCAFile)
	}

	// The host is managed as mwictl ssh sshd-config says: its mwid keeps
	// the host certificate, TrustedUserCAKeys, the KRL and access.json,
	// and sshd asks mwictl ssh authorized-principals, running as nobody.
	hostKey := harness.NewHostKey(t)
	e.hostCert = hostKey + "-cert.pub"
	e.accessDir = harness.SharedDir(t)
	e.host = harness.StartDaemon(t, e.iss, harness.DaemonOptions{
		Token:       e.iss.CreateToken(t, "staging-01", time.Hour),
		TTL:         rotationTTL,
		IssuerAddrs: hostAddrs,
		APISocket:   "mode: \"0660\"\ngroup: nogroup\nallow:\n  users: [nobody]",
		Extra: fmt.Sprintf("outputs:\n  - type: ssh_host\n    host_key: %s.pub\n    names: [127.0.0.1]\n    labels: {env: staging}\n    access_dir: %s\n",
			hostKey, e.accessDir),
	})
	e.host.WaitState(t, "ready", 30*time.Second)
	harness.Eventually(t, 20*time.Second, "access.json and the KRL written", func() error {
		for _, f := range []string{"access.json", "revoked_keys.krl", "user_ca.pub"} {
			if _, err := os.Stat(filepath.Join(e.accessDir, f)); err != nil {
				return err
			}
		}
		return nil
	})
	ctl := harness.SafeExecutable(t, e.iss.Bins.Ctl)
	e.sshd = harness.StartSSHDWith(t, harness.SSHDOptions{
		UserCAFile: filepath.Join(e.accessDir, "user_ca.pub"), HostKey: hostKey, HostCert: e.hostCert,
		Extra: fmt.Sprintf("RevokedKeys %s\nAuthorizedPrincipalsCommand %s ssh authorized-principals --dir %s --socket %s %%u %%t %%k\nAuthorizedPrincipalsCommandUser nobody\n",
			filepath.Join(e.accessDir, "revoked_keys.krl"), ctl, e.accessDir, e.host.APISock),
	})
	// The same host key and files on an sshd that trusts the user CAs
	// and nothing more: certificates made by the test, without the
	// access rules the issuer signs in, are tried there.
	e.plainSSHD = harness.StartSSHDWith(t, harness.SSHDOptions{
		UserCAFile: filepath.Join(e.accessDir, "user_ca.pub"), HostKey: hostKey, HostCert: e.hostCert,
	})
	e.client = harness.StartDaemon(t, e.iss, harness.DaemonOptions{
		Token:       e.iss.CreateToken(t, "ci", time.Hour),
		TTL:         rotationTTL,
		Hosts:       []string{"127.0.0.1"},
		IssuerAddrs: clientAddrs,
	})
	e.client.WaitState(t, "ready", 30*time.Second)
	if withKube {
		e.kclient = harness.StartDaemon(t, e.iss, harness.DaemonOptions{
			Token: e.iss.CreateToken(t, "kadmin", time.Hour),
			TTL:   rotationTTL,
			Extra: kubeOutput("    clusters: [dev]\n"),
		})
		e.kclient.WaitState(t, "ready", 30*time.Second)
		out, err := e.kclient.Ctl("kubeconfig")
		if err != nil {
			t.Fatalf("mwictl kubeconfig: %v\n%s", err, out)
		}
		e.kubecfg = filepath.Join(e.work, "kubeconfig")
		write(t, e.kubecfg, out)
	}
	return e
}

// sshLogin logs in through the client's agent, checking the host against
// the known_hosts lines mwictl known-hosts prints now.
func (e *rotationEnv) sshLogin(t *testing.T, extra ...string) (string, error) {
	return e.sshLoginTo(t, e.sshd, extra...)
}

// sshLoginTo logs in to sshd as sshLogin does.
func (e *rotationEnv) sshLoginTo(t *testing.T, sshd *harness.SSHD, extra ...string) (string, error) {
	known, err := e.client.Ctl("known-hosts")
	if err != nil {
		return known, fmt.Errorf("mwictl known-hosts: %w", err)
	}
	f, err := os.CreateTemp(e.work, "known_hosts")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	f.WriteString(known + "\n")
	f.Close()
	args := []string{harness.Require(t, "ssh", "apt-get install -y openssh-client"), "-F", "/dev/null",
		"-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
		"-o", "UserKnownHostsFile=" + f.Name(), "-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "ConnectTimeout=10"}
	if len(extra) == 0 {
		args = append(args, "-o", "IdentityFile=none", "-o", "IdentityAgent="+e.client.AgentSock)
	}
	args = append(append(args, extra...), "-p", fmt.Sprint(sshd.Port), "-l", e.login, "127.0.0.1", "echo", "logged-in")
	out, err := harness.Run(context.Background(), 30*time.Second, []string{"SSH_AUTH_SOCK=" + e.client.AgentSock}, args...)
	if err == nil && !strings.Contains(out, "logged-in") {
		err = fmt.Errorf("no output from the login")
	}
	return out, err
}

// status returns mwi-issuer ca rotate status.
func (e *rotationEnv) status(t *testing.T) api.CARotations {
	t.Helper()
	return rotationStatus(t, e.iss)
}

// rotationStatus returns mwi-issuer ca rotate status of iss.
func rotationStatus(t *testing.T, iss *harness.Issuer) api.CARotations {
	t.Helper()
	out, err := harness.Run(context.Background(), 30*time.Second, nil, iss.Bins.Issuer, "ca", "rotate", "status",
		"--format", "json", "--admin-socket", iss.AdminSock)
	var st api.CARotations
	if err != nil || json.Unmarshal([]byte(out), &st) != nil {
		t.Fatalf("mwi-issuer ca rotate status: %v\n%s", err, out)
	}
	return st
}

// rotate moves every authority to phase, then waits until every instance
// has caught up with it, as an operator would before the next phase.
func (e *rotationEnv) rotate(t *testing.T, phase string) {
	t.Helper()
	out, err := harness.Run(context.Background(), 30*time.Second, nil, e.iss.Bins.Issuer, "ca", "rotate",
		"--type", "all", "--phase", phase, "--admin-socket", e.iss.AdminSock)
	if err != nil {
		t.Fatalf("mwi-issuer ca rotate --type all --phase %s: %v\n%s", phase, err, out)
	}
	if e.kube != nil {
		e.kube.UpdateClientCA(t, e.iss.KubeCAFile)
	}
	issuers := []*harness.Issuer{e.iss}
	if e.replica != nil {
		issuers = append(issuers, e.replica)
	}
	harness.Eventually(t, 60*time.Second, "every issuer and instance caught up with "+phase, func() error {
		for _, iss := range issuers {
			for _, r := range rotationStatus(t, iss).Rotations {
				if r.Phase != phase || r.Loaded != phase || r.NotCaughtUpTotal > 0 || r.LoadError != "" {
					return fmt.Errorf("issuer %s: %s: phase %s, loaded %s, %d not caught up %s", iss.Addr, r.Type, r.Phase, r.Loaded, r.NotCaughtUpTotal, r.LoadError)
				}
			}
		}
		return nil
	})
}

// load runs renewals, ssh logins through the agent and kubectl calls in
// loops until stop, and counts their failures by phase.
type load struct {
	mu       sync.Mutex
	phase    string
	ok       map[string]int // "kind phase" → successes
	failures []string
	wg       sync.WaitGroup
	stop     chan struct{}
}

func (l *load) setPhase(p string) {
	l.mu.Lock()
	l.phase = p
	l.mu.Unlock()
}

func (l *load) run(kind string, f func() (string, error)) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			select {
			case <-l.stop:
				return
			default:
			}
			l.mu.Lock()
			phase := l.phase
			l.mu.Unlock()
			out, err := f()
			l.mu.Lock()
			if err != nil {
				l.failures = append(l.failures, fmt.Sprintf("%s during %s: %v\n%s", kind, phase, err, out))
			} else {
				l.ok[kind+" "+phase]++
			}
			l.mu.Unlock()
		}
	}()
}

func (e *rotationEnv) startLoad(t *testing.T) *load {
	l := &load{ok: map[string]int{}, stop: make(chan struct{}), phase: "standby"}
	l.run("renewal", func() (string, error) {
		time.Sleep(300 * time.Millisecond)
		return e.client.Ctl("renew")
	})
	l.run("host renewal", func() (string, error) {
		time.Sleep(300 * time.Millisecond)
		return e.host.Ctl("renew")
	})
	l.run("ssh login", func() (string, error) { return e.sshLogin(t) })
	if e.kube != nil {
		l.run("kubectl", func() (string, error) {
			return e.kube.Run(context.Background(), e.kubecfg, "auth", "whoami", "-o", "name")
		})
	}
	return l
}

// finish stops the load and fails the test on any failure, or on a loop
// that made no progress in one of the phases.
func (l *load) finish(t *testing.T, phases []string, kinds ...string) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	for i, f := range l.failures {
		if i == 10 {
			t.Errorf("... and %d more failures", len(l.failures)-10)
			break
		}
		t.Errorf("failure under load: %s", f)
	}
	for _, p := range phases {
		for _, k := range kinds {
			if l.ok[k+" "+p] == 0 {
				t.Errorf("no %s succeeded during %s", k, p)
			}
		}
	}
	t.Logf("successes under load: %v", l.ok)
}

// oldAuthorities are the files of the authorities before a rotation.
type oldAuthorities struct {
	userKey, hostPub, tlsCert []byte
	idCert, idKey             []byte
	kubeCert, kubeKey         []byte
}

func readOld(t *testing.T, state string) oldAuthorities {
	t.Helper()
	read := func(name string) []byte {
		data, err := os.ReadFile(filepath.Join(state, name))
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	return oldAuthorities{userKey: read("ssh_user_ca"), hostPub: read("ssh_host_ca.pub"), tlsCert: read("tls_ca.crt"),
		idCert: read("identity_ca.crt"), idKey: read("identity_ca.key"), kubeCert: read("kube_ca.crt"), kubeKey: read("kube_ca.key")}
}

// loginWithCertFrom logs in with a key whose certificate the SSH user CA
// key caKey signed, without the agent.
func (e *rotationEnv) loginWithCertFrom(t *testing.T, caKey []byte) (string, error) {
	t.Helper()
	signer, err := ssh.ParsePrivateKey(caKey)
	if err != nil {
		t.Fatal(err)
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	pub, _ := ssh.NewPublicKey(priv.Public())
	cert := &ssh.Certificate{Key: pub, CertType: ssh.UserCert, KeyId: "forged", ValidPrincipals: []string{e.login},
		ValidAfter: uint64(time.Now().Add(-time.Minute).Unix()), ValidBefore: uint64(time.Now().Add(time.Hour).Unix()),
		Permissions: ssh.Permissions{Extensions: map[string]string{}}}
	if err := cert.SignCert(rand.Reader, signer); err != nil {
		t.Fatal(err)
	}
	block, _ := ssh.MarshalPrivateKey(priv, "")
	keyFile := filepath.Join(t.TempDir(), "id_ed25519")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	write(t, keyFile+"-cert.pub", string(ssh.MarshalAuthorizedKey(cert)))
	return e.sshLoginTo(t, e.plainSSHD, "-o", "IdentityAgent=none", "-o", "IdentitiesOnly=yes", "-i", keyFile, "-o", "CertificateFile="+keyFile+"-cert.pub")
}

// signX509 signs tmpl for a new P-256 key with the authority in certPEM
// and keyPEM, and returns the certificate and key in PEM.
func signX509(t *testing.T, certPEM, keyPEM []byte, tmpl *x509.Certificate) ([]byte, []byte) {
	t.Helper()
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		t.Fatal("authority files are not PEM")
	}
	caCert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	caKey, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Minute), time.Now().Add(time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey.(crypto.Signer))
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

// issuerWithIdentityFrom asks the issuer for its locks with a bot
// identity that the identity authority in certPEM and keyPEM signed.
func (e *rotationEnv) issuerWithIdentityFrom(t *testing.T, certPEM, keyPEM []byte) error {
	t.Helper()
	st, err := e.client.Status(t)
	if err != nil {
		t.Fatal(err)
	}
	u := &url.URL{Scheme: "mwi", Host: "bot", Path: fmt.Sprintf("/ci/instance/%s/generation/1", st.Instance)}
	c, k := signX509(t, certPEM, keyPEM, &x509.Certificate{Subject: pkix.Name{CommonName: "ci", Organization: []string{"mwi bot"}}, URIs: []*url.URL{u}})
	pair, err := tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		Certificates: []tls.Certificate{pair}, InsecureSkipVerify: true}}}
	defer hc.CloseIdleConnections()
	res, err := hc.Get("https://" + e.iss.Addr + "/v1/locks")
	if err != nil {
		return err
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /v1/locks: %s", res.Status)
	}
	return nil
}

// kubectlWithCertFrom runs kubectl auth whoami as mwi-admin in
// system:masters with a certificate that the Kubernetes authority in
// certPEM and keyPEM signed.
func (e *rotationEnv) kubectlWithCertFrom(t *testing.T, certPEM, keyPEM []byte) (string, error) {
	t.Helper()
	c, k := signX509(t, certPEM, keyPEM, &x509.Certificate{Subject: pkix.Name{CommonName: "mwi-admin", Organization: []string{"system:masters"}}})
	cfg, err := kubeconfig.Render([]kubeconfig.Cluster{{Name: "probe", Server: e.kube.Server, CAData: e.kube.CAPEM, CertPEM: c, KeyPEM: k}},
		kubeconfig.Options{Embed: true})
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "probe.kubeconfig")
	write(t, f, string(cfg))
	return e.kube.Run(context.Background(), f, "auth", "whoami", "-o", "name")
}

// authorizedKeyBlob returns the base64 key of an authorized_keys line.
func authorizedKeyBlob(t *testing.T, line []byte) string {
	t.Helper()
	fields := strings.Fields(string(line))
	if len(fields) < 2 {
		t.Fatalf("not an authorized_keys line: %q", line)
	}
	return fields[1]
}

// TestCARotation rotates every authority through every phase while
// renewals, ssh logins through mwid's agent to a real sshd and kubectl
// calls to a real kube-apiserver run: none may fail. After the last phase
// the old authorities are in no file mwid wrote nor in the API server's
// bundle, and certificates they sign are refused by sshd, the issuer and
// the API server.
func TestCARotation(t *testing.T) {
	t.Parallel()
	e := setupRotation(t, true, false)
	old := readOld(t, e.iss.State)
	oldUserPub, err := ssh.ParsePrivateKey(old.userKey)
	if err != nil {
		t.Fatal(err)
	}
	oldUserBlob := authorizedKeyBlob(t, ssh.MarshalAuthorizedKey(oldUserPub.PublicKey()))
	oldHostBlob := authorizedKeyBlob(t, old.hostPub)

	// Before: what the old authorities sign is accepted, so that the
	// refusals at the end are the rotation's doing.
	if out, err := e.loginWithCertFrom(t, old.userKey); err != nil {
		t.Fatalf("login with a certificate from the current user CA: %v\n%s", err, out)
	}
	if err := e.issuerWithIdentityFrom(t, old.idCert, old.idKey); err != nil {
		t.Fatalf("an identity from the current identity CA: %v", err)
	}
	if out, err := e.kubectlWithCertFrom(t, old.kubeCert, old.kubeKey); err != nil {
		t.Fatalf("kubectl with a certificate from the current Kubernetes CA: %v\n%s", err, out)
	}

	l := e.startLoad(t)
	phases := []string{"init", "update_clients", "update_servers", "standby"}
	for _, p := range phases {
		l.setPhase(p)
		e.rotate(t, p)
		if p == "init" {
			// The API server trusts the next Kubernetes CA before it signs.
			next := func(name string) []byte {
				data, err := os.ReadFile(filepath.Join(e.iss.State, name))
				if err != nil {
					t.Fatal(err)
				}
				return data
			}
			harness.Eventually(t, 90*time.Second, "kube-apiserver trusts the next CA", func() error {
				out, err := e.kubectlWithCertFrom(t, next("kube_ca.next.crt"), next("kube_ca.next.key"))
				if err != nil {
					return fmt.Errorf("%v: %s", err, out)
				}
				return nil
			})
		}
		// Let the load run for a while in each phase: two renewals.
		time.Sleep(2 * rotationTTL / 3)
	}
	// The API server drops the old CA once it has reloaded the bundle.
	harness.Eventually(t, 90*time.Second, "kube-apiserver refuses the old CA", func() error {
		if out, err := e.kubectlWithCertFrom(t, old.kubeCert, old.kubeKey); err == nil {
			return fmt.Errorf("accepted: %s", out)
		}
		return nil
	})
	l.setPhase("after")
	time.Sleep(2 * rotationTTL / 3)
	l.finish(t, append(phases, "after"), "renewal", "host renewal", "ssh login", "kubectl")

	for _, r := range e.status(t).Rotations {
		if r.Phase != "standby" || r.Next != "" {
			t.Errorf("%s after the rotation: %+v", r.Type, r)
		}
	}
	// The old authorities are in no file mwid wrote, nor in the bundle.
	known, err := e.client.Ctl("known-hosts")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(known, oldHostBlob) {
		t.Errorf("mwictl known-hosts still trusts the old host CA:\n%s", known)
	}
	files := []string{e.hostCert, e.iss.KubeCAFile, e.kube.ClientCAFile()}
	entries, _ := os.ReadDir(e.accessDir)
	for _, en := range entries {
		files = append(files, filepath.Join(e.accessDir, en.Name()))
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for what, needle := range map[string]string{"user CA": oldUserBlob, "host CA": oldHostBlob, "Kubernetes CA": string(old.kubeCert)} {
			if strings.Contains(string(data), needle) {
				t.Errorf("%s still holds the old %s", f, what)
			}
		}
	}
	if data, _ := os.ReadFile(filepath.Join(e.accessDir, "user_ca.pub")); len(data) == 0 {
		t.Error("the host's user_ca.pub is empty")
	}
	// What the old authorities sign is refused everywhere.
	if out, err := e.loginWithCertFrom(t, old.userKey); err == nil || !strings.Contains(out, "Permission denied") {
		t.Errorf("sshd accepted a certificate from the old user CA: %v\n%s", err, out)
	}
	if err := e.issuerWithIdentityFrom(t, old.idCert, old.idKey); err == nil {
		t.Error("the issuer accepted an identity from the old identity CA")
	}
	if out, err := e.kubectlWithCertFrom(t, old.kubeCert, old.kubeKey); err == nil || !strings.Contains(out, "Unauthorized") {
		t.Errorf("kube-apiserver accepted a certificate from the old CA: %v\n%s", err, out)
	}
	// The issuer serves from the new TLS authority.
	conn, err := tls.Dial("tcp", e.iss.Addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	chain := conn.ConnectionState().PeerCertificates
	conn.Close()
	oldTLS, _ := pem.Decode(old.tlsCert)
	if len(chain) < 2 || string(chain[len(chain)-1].Raw) == string(oldTLS.Bytes) || chain[0].CheckSignatureFrom(chain[len(chain)-1]) != nil {
		t.Error("the issuer still serves a certificate from the old TLS authority")
	}
	if ev := e.iss.FindAudit(t, map[string]any{"event": "ca.rotate", "type": "identity", "from": "update_servers", "to": "standby"}); ev == nil {
		t.Error("no audit line for the move of the identity rotation to standby")
	}
}

// TestCARotationRollback rolls a rotation of every authority back from
// update_servers under load: nothing fails, and afterwards the original
// authorities sign and are trusted alone, and the next ones are gone.
func TestCARotationRollback(t *testing.T) {
	t.Parallel()
	e := setupRotation(t, false, false)
	before := e.status(t)
	old := readOld(t, e.iss.State)
	l := e.startLoad(t)
	phases := []string{"init", "update_clients", "update_servers", "rollback", "standby"}
	var nextUserKey []byte
	for _, p := range phases {
		l.setPhase(p)
		if p == "rollback" {
			nextUserKey, _ = os.ReadFile(filepath.Join(e.iss.State, "ssh_user_ca.next"))
		}
		e.rotate(t, p)
		time.Sleep(2 * rotationTTL / 3)
	}
	l.setPhase("after")
	time.Sleep(2 * rotationTTL / 3)
	l.finish(t, append(phases, "after"), "renewal", "host renewal", "ssh login")

	after := e.status(t)
	for i, r := range after.Rotations {
		if r.Phase != "standby" || r.Current != before.Rotations[i].Current || r.Next != "" {
			t.Errorf("%s after the rollback: %+v; want standby with %s", r.Type, r, before.Rotations[i].Current)
		}
	}
	if names, _ := filepath.Glob(filepath.Join(e.iss.State, "*.next*")); len(names) > 0 {
		t.Errorf("next authority files left after the rollback: %v", names)
	}
	if len(nextUserKey) == 0 {
		t.Fatal("no next user CA was made")
	}
	if out, err := e.loginWithCertFrom(t, nextUserKey); err == nil || !strings.Contains(out, "Permission denied") {
		t.Errorf("sshd accepted a certificate from the abandoned user CA: %v\n%s", err, out)
	}
	if out, err := e.loginWithCertFrom(t, old.userKey); err != nil {
		t.Errorf("sshd refused a certificate from the original user CA: %v\n%s", err, out)
	}
}

// TestCARotationReplicas rotates every authority through every phase with
// two issuers on one PostgreSQL store, the phases moved through one of
// them, while the host renews through the other: the other loads each
// phase by itself, and no renewal or login fails.
func TestCARotationReplicas(t *testing.T) {
	t.Parallel()
	e := setupRotation(t, false, true)
	l := e.startLoad(t)
	phases := []string{"init", "update_clients", "update_servers", "standby"}
	for _, p := range phases {
		l.setPhase(p)
		e.rotate(t, p)
		time.Sleep(2 * rotationTTL / 3)
	}
	l.setPhase("after")
	time.Sleep(2 * rotationTTL / 3)
	l.finish(t, append(phases, "after"), "renewal", "host renewal", "ssh login")
	a, b := rotationStatus(t, e.iss), rotationStatus(t, e.replica)
	for i := range a.Rotations {
		if a.Rotations[i].Current != b.Rotations[i].Current || b.Rotations[i].Loaded != "standby" {
			t.Errorf("the replicas disagree on %s: %+v and %+v", a.Rotations[i].Type, a.Rotations[i], b.Rotations[i])
		}
	}
	// The host renewed through the replica, which signed with what the
	// first issuer's phases named.
	if ev := e.replica.FindAudit(t, map[string]any{"event": "renew", "outcome": "allowed", "bot": "staging-01"}); ev == nil || ev["host_certs"] == nil {
		t.Error("no host certificate was issued by the replica")
	}
}
