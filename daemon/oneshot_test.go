package daemon

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/attest"
	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/internal/logging"
	"github.com/mwi-project/mwi/internal/sshaccess"
)

// fakeIssuer plays mwi-issuer's join protocol over HTTPS: it signs what it
// is asked for, keeps the instance of a join made with a client
// certificate, refuses renewals of instances joined with an attestation
// (not_renewable), and records each request.
type fakeIssuer struct {
	srv     *httptest.Server
	caFile  string
	caKey   *ecdsa.PrivateKey
	ca      *x509.Certificate
	sshCA   ssh.Signer
	hostCA  ssh.Signer
	logins  []string // the SSH logins the "roles" allow; none: no user certificate
	boundTo ssh.PublicKey

	mu         sync.Mutex
	joins      []joinSeen
	renewals   int
	instances  int
	generation uint64
	challenge  string
	// challengeCerts has, for each challenge asked for, the identity
	// presented over mutual TLS, or nil.
	challengeCerts []*x509.Certificate
	// refuse, if set, is what joins and renewals are answered with.
	refuse *refusal
	// locks and krl are what GET /v1/locks and GET /v1/ssh/krl answer,
	// with ETags that change with them; down makes both answer 503.
	locks       []api.Lock
	krl         []byte
	down        bool
	lockPolls   int // GET /v1/locks answered, 304s included
	notModified int // of which 304
	sshRefusals []api.SSHRefusal
	// nodes is what GET /v1/nodes answers, to a caller with an identity.
	nodes api.ReachableNodes
}

// refusal is an error answer of the fake issuer.
type refusal struct {
	status        int
	code, message string
}

// joinSeen is one join the fake issuer answered.
type joinSeen struct {
	req        api.JoinRequest
	clientCert *x509.Certificate // the identity presented over mutual TLS, if any
	instance   string
}

func newFakeIssuer(t *testing.T) *fakeIssuer {
	t.Helper()
	f := &fakeIssuer{logins: []string{"deploy"}}
	f.caKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fake identity CA"}, IsCA: true,
		BasicConstraintsValid: true, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, f.caKey.Public(), f.caKey)
	f.ca, _ = x509.ParseCertificate(der)
	for _, s := range []*ssh.Signer{&f.sshCA, &f.hostCA} {
		_, k, _ := ed25519.GenerateKey(rand.Reader)
		*s, _ = ssh.NewSignerFromKey(k)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/join", f.join)
	mux.HandleFunc("POST /v1/join/challenge", f.challengeHandler)
	mux.HandleFunc("POST /v1/renew", f.renew)
	mux.HandleFunc("GET /v1/locks", f.locksHandler)
	mux.HandleFunc("GET /v1/ssh/krl", f.krlHandler)
	mux.HandleFunc("POST /v1/audit/ssh-refusal", f.refusalHandler)
	mux.HandleFunc("GET /v1/nodes", f.nodesHandler)
	f.srv = httptest.NewUnstartedServer(mux)
	f.srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	f.caFile = filepath.Join(t.TempDir(), "issuer-ca.pem")
	os.WriteFile(f.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw}), 0o644)
	return f
}

func (f *fakeIssuer) addr() string { return strings.TrimPrefix(f.srv.URL, "https://") }

func fail(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(api.ErrorBody{Error: api.Error{Code: code, Message: msg}})
}

// etag is a strong ETag of v's JSON encoding.
func etag(v any) string {
	b, _ := json.Marshal(v)
	return fmt.Sprintf(`"%x"`, sha256.Sum256(b))
}

func (f *fakeIssuer) locksHandler(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		fail(w, 503, api.CodeInternal, "down")
		return
	}
	if len(r.TLS.PeerCertificates) == 0 {
		fail(w, 401, api.CodeUnauthenticated, "no identity")
		return
	}
	f.lockPolls++
	tag := etag(f.locks)
	if r.Header.Get("If-None-Match") == tag {
		f.notModified++
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("ETag", tag)
	json.NewEncoder(w).Encode(api.LockList{Locks: f.locks, Now: time.Now()})
}

func (f *fakeIssuer) krlHandler(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		fail(w, 503, api.CodeInternal, "down")
		return
	}
	tag := etag(f.krl)
	if r.Header.Get("If-None-Match") == tag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("ETag", tag)
	w.Write(f.krl)
}

func (f *fakeIssuer) refusalHandler(w http.ResponseWriter, r *http.Request) {
	var ref api.SSHRefusal
	json.NewDecoder(r.Body).Decode(&ref)
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(r.TLS.PeerCertificates) == 0 {
		fail(w, 401, api.CodeUnauthenticated, "no identity")
		return
	}
	f.sshRefusals = append(f.sshRefusals, ref)
	w.WriteHeader(http.StatusNoContent)
}

func (f *fakeIssuer) nodesHandler(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case len(r.TLS.PeerCertificates) == 0:
		fail(w, 401, api.CodeUnauthenticated, "no identity")
	case f.down:
		fail(w, 503, api.CodeInternal, "down")
	default:
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(f.nodes)
	}
}

func (f *fakeIssuer) challengeHandler(w http.ResponseWriter, r *http.Request) {
	var req api.ChallengeRequest
	json.NewDecoder(r.Body).Decode(&req)
	b := make([]byte, 32)
	rand.Read(b)
	f.mu.Lock()
	var cert *x509.Certificate
	if len(r.TLS.PeerCertificates) > 0 {
		cert = r.TLS.PeerCertificates[0]
	}
	f.challengeCerts = append(f.challengeCerts, cert)
	f.challenge = base64.StdEncoding.EncodeToString(b)
	resp := api.ChallengeResponse{Challenge: f.challenge, Expires: time.Now().Add(time.Minute)}
	f.mu.Unlock()
	json.NewEncoder(w).Encode(resp)
}

func (f *fakeIssuer) join(w http.ResponseWriter, r *http.Request) {
	var req api.JoinRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		fail(w, 400, api.CodeBadRequest, err.Error())
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if r := f.refuse; r != nil {
		fail(w, r.status, r.code, r.message)
		return
	}
	seen := joinSeen{req: req}
	if len(r.TLS.PeerCertificates) > 0 {
		seen.clientCert = r.TLS.PeerCertificates[0]
	}
	switch req.JoinMethod {
	case api.JoinMethodToken:
		if req.Token != "s3cret" {
			fail(w, 403, api.CodeTokenUnknown, "unknown token")
			return
		}
	case api.JoinMethodBoundKeypair:
		wire, _ := base64.StdEncoding.DecodeString(req.Signature)
		var sig ssh.Signature
		if req.Challenge == "" || req.Challenge != f.challenge || ssh.Unmarshal(wire, &sig) != nil || f.boundTo.Verify(api.BoundKeypairSignedData(req.Challenge), &sig) != nil {
			fail(w, 403, api.CodeJoinDenied, "signature does not verify")
			return
		}
		f.challenge = ""
	default:
		if req.IDToken == "" || req.TokenName == "" {
			fail(w, 403, api.CodeJoinDenied, "no ID token")
			return
		}
	}
	if seen.clientCert != nil && seen.clientCert.Subject.SerialNumber != "" {
		seen.instance = seen.clientCert.Subject.SerialNumber // the instance the identity names
	} else {
		f.instances++
		seen.instance = fmt.Sprintf("i%d", f.instances)
	}
	f.joins = append(f.joins, seen)
	f.answer(w, seen.instance, req.Keys, req.HostKeys, req.Kubernetes, time.Duration(req.TTLSeconds)*time.Second)
}

func (f *fakeIssuer) renew(w http.ResponseWriter, r *http.Request) {
	var req api.RenewRequest
	json.NewDecoder(r.Body).Decode(&req)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.renewals++
	if r := f.refuse; r != nil {
		fail(w, r.status, r.code, r.message)
		return
	}
	if len(r.TLS.PeerCertificates) == 0 {
		fail(w, 401, api.CodeUnauthenticated, "no identity")
		return
	}
	if f.joins[len(f.joins)-1].req.JoinMethod != api.JoinMethodToken {
		fail(w, 409, api.CodeNotRenewable, "join again with a fresh attestation")
		return
	}
	f.answer(w, r.TLS.PeerCertificates[0].Subject.SerialNumber, req.Keys, req.HostKeys, req.Kubernetes, time.Duration(req.TTLSeconds)*time.Second)
}

// answer signs the keys for instance; f.mu is held.
func (f *fakeIssuer) answer(w http.ResponseWriter, instance string, keys api.PublicKeys, hostKeys []api.HostKeyRequest, kube *api.KubernetesRequest, ttl time.Duration) {
	f.generation++
	now := time.Now()
	sign := func(csrPEM string, subject pkix.Name) string {
		block, _ := pem.Decode([]byte(csrPEM))
		csr, err := x509.ParseCertificateRequest(block.Bytes)
		if err != nil {
			panic(err)
		}
		der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(int64(f.generation)), Subject: subject,
			NotBefore: now.Add(-time.Minute), NotAfter: now.Add(ttl), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
			f.ca, csr.PublicKey, f.caKey)
		if err != nil {
			panic(err)
		}
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	}
	resp := api.Credentials{
		Bot: "ci", Instance: instance, Generation: f.generation,
		IdentityCertificate: sign(keys.IdentityCSR, pkix.Name{CommonName: "ci", SerialNumber: instance}),
		SSHHostCAs:          []string{string(ssh.MarshalAuthorizedKey(f.hostCA.PublicKey()))},
		SSHUserCAs:          []string{string(ssh.MarshalAuthorizedKey(f.sshCA.PublicKey()))},
		Expires:             now.Add(ttl),
	}
	for _, hk := range hostKeys {
		pub, _, _, _, _ := ssh.ParseAuthorizedKey([]byte(hk.PublicKey))
		cert := &ssh.Certificate{Key: pub, CertType: ssh.HostCert, KeyId: "host:" + instance, ValidPrincipals: []string{"web-1.example.com"},
			ValidAfter: uint64(now.Add(-time.Minute).Unix()), ValidBefore: uint64(now.Add(ttl).Unix()),
			Permissions: ssh.Permissions{Extensions: map[string]string{sshaccess.LabelsExtension: sshaccess.MarshalLabels(hk.Labels)}}}
		cert.SignCert(rand.Reader, f.hostCA)
		resp.HostCertificates = append(resp.HostCertificates, string(ssh.MarshalAuthorizedKey(cert)))
	}
	if len(f.logins) > 0 {
		pub, _, _, _, _ := ssh.ParseAuthorizedKey([]byte(keys.SSH))
		cert := &ssh.Certificate{Key: pub, CertType: ssh.UserCert, KeyId: "bot:ci", ValidPrincipals: f.logins,
			ValidAfter: uint64(now.Add(-time.Minute).Unix()), ValidBefore: uint64(now.Add(ttl).Unix())}
		cert.SignCert(rand.Reader, f.sshCA)
		resp.SSHCertificate = string(ssh.MarshalAuthorizedKey(cert))
	}
	if kube != nil {
		resp.Kubernetes = []api.KubernetesCredential{{
			Cluster: "prod", Server: "https://prod.example.com:6443",
			CertificateAuthorityData: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.ca.Raw}),
			ClientCertificate:        sign(kube.CSR, pkix.Name{CommonName: "bot:ci", Organization: []string{"deployers"}}),
			Expires:                  now.Add(ttl),
		}}
	}
	json.NewEncoder(w).Encode(resp)
}

// newTestServer writes a configuration for the fake issuer with the given
// onboarding and outputs sections and returns a Server for it.
func newTestServer(t *testing.T, f *fakeIssuer, onboarding, outputs string) (*Server, string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "mwid.yaml")
	cfgText := fmt.Sprintf(`version: v1
issuer:
  address: %s
  ca_file: %s
onboarding:
%s
certificate_ttl: 10m
ssh:
  hosts: ["*.example.com"]
outputs:
%s`, f.addr(), f.caFile, onboarding, outputs)
	if err := os.WriteFile(path, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	log, err := logging.New(io.Discard, "text", "debug")
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	return s, dir
}

// fakeActions serves a GitHub Actions ID token endpoint and points the
// environment at it.
func fakeActions(t *testing.T, token string) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "bearer runner-token" || r.URL.Query().Get("audience") != "mwi" {
			http.Error(w, "no", http.StatusForbidden)
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"value": token})
	}))
	t.Cleanup(srv.Close)
	t.Setenv(attest.GitHubRequestURLEnv, srv.URL+"/idtoken?api-version=2.0")
	t.Setenv(attest.GitHubRequestTokenEnv, "runner-token")
}

const githubOnboarding = `  join_method: github
  token_name: github-ci
  id_token:
    github_actions: {audience: mwi}`

func TestOneshotGitHub(t *testing.T) {
	f := newFakeIssuer(t)
	const idToken = "eyJhbGciOiJSUzI1NiJ9.eyJyZXBvc2l0b3J5IjoibyJ9.c2ln"
	fakeActions(t, idToken)
	s, dir := newTestServer(t, f, githubOnboarding, `  - type: identity
    directory: out
  - type: kubernetes
    clusters: [prod]
    directory: out
`)
	if err := s.Oneshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(f.joins) != 1 || f.renewals != 0 {
		t.Fatalf("%d joins and %d renewals, want one join", len(f.joins), f.renewals)
	}
	j := f.joins[0]
	if j.req.JoinMethod != "github" || j.req.TokenName != "github-ci" || j.req.IDToken != idToken || j.req.Token != "" || j.clientCert != nil {
		t.Errorf("join request %+v, client certificate %v", j.req, j.clientCert != nil)
	}

	out := filepath.Join(dir, "out")
	for name, mode := range map[string]os.FileMode{
		"key": 0o600, "key.pub": 0o644, "key-cert.pub": 0o644, "known_hosts": 0o644, "ssh_config": 0o644, "kubeconfig.yaml": 0o600,
	} {
		fi, err := os.Stat(filepath.Join(out, name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s mode %o, want %o", name, fi.Mode().Perm(), mode)
		}
	}
	read := func(name string) []byte {
		b, _ := os.ReadFile(filepath.Join(out, name))
		return b
	}
	signer, err := ssh.ParsePrivateKey(read("key"))
	if err != nil {
		t.Fatalf("key: %v", err)
	}
	certKey, _, _, _, err := ssh.ParseAuthorizedKey(read("key-cert.pub"))
	if err != nil {
		t.Fatalf("key-cert.pub: %v", err)
	}
	cert, ok := certKey.(*ssh.Certificate)
	if !ok || !bytes.Equal(cert.Key.Marshal(), signer.PublicKey().Marshal()) || cert.ValidPrincipals[0] != "deploy" {
		t.Errorf("key-cert.pub is not the certificate for key")
	}
	if pub, _, _, _, err := ssh.ParseAuthorizedKey(read("key.pub")); err != nil || !bytes.Equal(pub.Marshal(), signer.PublicKey().Marshal()) {
		t.Errorf("key.pub is not key's public key: %v", err)
	}
	wantKnownHosts := "@cert-authority *.example.com,[*.example.com]:* " + string(ssh.MarshalAuthorizedKey(f.hostCA.PublicKey()))
	if got := string(read("known_hosts")); got != wantKnownHosts {
		t.Errorf("known_hosts =\n%s\nwant\n%s", got, wantKnownHosts)
	}
	wantConfig := fmt.Sprintf(`# ssh_config from mwid for bot ci (configuration %s).
Host *.example.com
    IdentityFile %[2]s/key
    CertificateFile %[2]s/key-cert.pub
    IdentitiesOnly yes
    IdentityAgent none
    UserKnownHostsFile %[2]s/known_hosts
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    UpdateHostKeys no
`, s.config().Revision, out)
	if got := string(read("ssh_config")); got != wantConfig {
		t.Errorf("ssh_config =\n%s\nwant\n%s", got, wantConfig)
	}
	if kc := string(read("kubeconfig.yaml")); !strings.Contains(kc, "https://prod.example.com:6443") || !strings.Contains(kc, "client-key-data") {
		t.Errorf("kubeconfig.yaml =\n%s", kc)
	}

	checkWithOpenSSH(t, out)

	st := s.Status()
	var paths []string
	for _, o := range st.Outputs {
		paths = append(paths, o.Type+" "+o.Path)
		if o.LastWrite == nil || o.LastError != "" {
			t.Errorf("output %+v: want a write and no error", o)
		}
	}
	if want := "identity " + out + ", kubernetes " + filepath.Join(out, "kubeconfig.yaml"); strings.Join(paths, ", ") != want {
		t.Errorf("status outputs %q, want %q", paths, want)
	}
}

// checkWithOpenSSH has OpenSSH's own tools read an identity output: the key
// and its public half, and the ssh_config as ssh resolves it for a host.
func checkWithOpenSSH(t *testing.T, out string) {
	t.Helper()
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Log("no OpenSSH client; not checking the files with it")
		return
	}
	pub, err := exec.Command("ssh-keygen", "-y", "-f", filepath.Join(out, "key")).Output()
	if err != nil {
		t.Fatalf("ssh-keygen -y: %v", err)
	}
	want, _ := os.ReadFile(filepath.Join(out, "key.pub"))
	if strings.Fields(string(pub))[1] != strings.Fields(string(want))[1] {
		t.Errorf("ssh-keygen -y on key gives %s, key.pub is %s", pub, want)
	}
	if err := exec.Command("ssh-keygen", "-L", "-f", filepath.Join(out, "key-cert.pub")).Run(); err != nil {
		t.Errorf("ssh-keygen -L on key-cert.pub: %v", err)
	}
	resolved, err := exec.Command("ssh", "-G", "-F", filepath.Join(out, "ssh_config"), "deploy@web.example.com").CombinedOutput()
	if err != nil {
		t.Fatalf("ssh -G: %v: %s", err, resolved)
	}
	for _, line := range []string{
		"identityfile " + filepath.Join(out, "key"),
		"certificatefile " + filepath.Join(out, "key-cert.pub"),
		"userknownhostsfile " + filepath.Join(out, "known_hosts"),
		"globalknownhostsfile /dev/null",
		"stricthostkeychecking true",
		"identitiesonly yes",
		"identityagent none",
	} {
		if !strings.Contains(string(resolved), "\n"+line+"\n") {
			t.Errorf("ssh -G has no line %q", line)
		}
	}
}

func TestOneshotFailures(t *testing.T) {
	f := newFakeIssuer(t)
	identityOut := "  - type: identity\n    directory: out\n"
	t.Run("not in GitHub Actions", func(t *testing.T) {
		t.Setenv(attest.GitHubRequestURLEnv, "")
		t.Setenv(attest.GitHubRequestTokenEnv, "")
		s, _ := newTestServer(t, f, githubOnboarding, identityOut)
		err := s.Oneshot(context.Background())
		if err == nil || !strings.Contains(err.Error(), "join: ID token from GitHub Actions:") || !strings.Contains(err.Error(), "not running in GitHub Actions with id-token: write permission?") {
			t.Fatalf("Oneshot = %v", err)
		}
	})
	t.Run("refused", func(t *testing.T) {
		s, _ := newTestServer(t, f, "  join_method: token\n  token: {env: MWI_TEST_JOIN}", identityOut)
		t.Setenv("MWI_TEST_JOIN", "wrong")
		if err := s.Oneshot(context.Background()); err == nil || !strings.Contains(err.Error(), "join: issuer refused: unknown token (token_unknown)") {
			t.Fatalf("Oneshot = %v", err)
		}
	})
	t.Run("no outputs", func(t *testing.T) {
		s, _ := newTestServer(t, f, "  join_method: token\n  token: {env: MWI_TEST_JOIN}", "  []\n")
		if err := s.Oneshot(context.Background()); err == nil || !strings.Contains(err.Error(), "no outputs") {
			t.Fatalf("Oneshot = %v", err)
		}
	})
	t.Run("kubernetes in memory", func(t *testing.T) {
		s, _ := newTestServer(t, f, "  join_method: token\n  token: {env: MWI_TEST_JOIN}", "  - type: kubernetes\n    clusters: [prod]\n")
		if err := s.Oneshot(context.Background()); err == nil || !strings.Contains(err.Error(), "outputs.0: a kubernetes output without directory") {
			t.Fatalf("Oneshot = %v", err)
		}
	})
	t.Run("no logins", func(t *testing.T) {
		f.logins = nil
		defer func() { f.logins = []string{"deploy"} }()
		t.Setenv("MWI_TEST_JOIN", "s3cret")
		s, dir := newTestServer(t, f, "  join_method: token\n  token: {env: MWI_TEST_JOIN}", identityOut)
		err := s.Oneshot(context.Background())
		if err == nil || !strings.Contains(err.Error(), "identity output "+filepath.Join(dir, "out")+": bot ci has no SSH user certificate") {
			t.Fatalf("Oneshot = %v", err)
		}
		if st := s.Status(); len(st.Outputs) != 1 || st.Outputs[0].LastError == "" {
			t.Errorf("status outputs %+v, want the error", st.Outputs)
		}
	})
	t.Run("symlinked key", func(t *testing.T) {
		t.Setenv("MWI_TEST_JOIN", "s3cret")
		s, dir := newTestServer(t, f, "  join_method: token\n  token: {env: MWI_TEST_JOIN}", identityOut)
		os.MkdirAll(filepath.Join(dir, "out"), 0o700)
		os.Symlink(filepath.Join(dir, "elsewhere"), filepath.Join(dir, "out", "key"))
		if err := s.Oneshot(context.Background()); err == nil || !strings.Contains(err.Error(), "symbolic link") {
			t.Fatalf("Oneshot = %v", err)
		}
		if _, err := os.Lstat(filepath.Join(dir, "elsewhere")); err == nil {
			t.Error("the key was written through the link")
		}
	})
	// An ssh_host output whose host key cannot be read, or may not be
	// trusted, would not be written: mwid --oneshot says so, before it
	// joins, rather than exit 0 without it.
	t.Run("host key refused", func(t *testing.T) {
		t.Setenv("MWI_TEST_JOIN", "s3cret")
		s, dir := newTestServer(t, f, "  join_method: token\n  token: {env: MWI_TEST_JOIN}",
			"  - type: ssh_host\n    host_key: keys/ssh_host_ed25519_key.pub\n")
		os.Mkdir(filepath.Join(dir, "keys"), 0o755)
		pub, _, _ := ed25519.GenerateKey(rand.Reader)
		key, _ := ssh.NewPublicKey(pub)
		os.WriteFile(filepath.Join(dir, "keys", "ssh_host_ed25519_key.pub"), ssh.MarshalAuthorizedKey(key), 0o666)
		os.Chmod(filepath.Join(dir, "keys", "ssh_host_ed25519_key.pub"), 0o666)
		joins := len(f.joins)
		err := s.Oneshot(context.Background())
		if err == nil || !strings.Contains(err.Error(), "host key") || !strings.Contains(err.Error(), "writable by users other than its owner") {
			t.Fatalf("Oneshot = %v; want the host key refused", err)
		}
		if len(f.joins) != joins {
			t.Error("mwid joined before refusing the host key")
		}
	})
	// An output directory that safefs refuses stops mwid --oneshot before
	// it joins: no token is spent, and nothing is written.
	unsafeDirs := []struct {
		name   string
		root   bool
		setup  func(t *testing.T, dir string) // the output directory is dir/link/out
		reason string
	}{
		{"symlinked parent", false, func(t *testing.T, dir string) {
			os.Mkdir(filepath.Join(dir, "secret"), 0o700)
			os.Symlink(filepath.Join(dir, "secret"), filepath.Join(dir, "link"))
		}, "symbolic link"},
		{"another user's directory", true, func(t *testing.T, dir string) {
			os.MkdirAll(filepath.Join(dir, "link", "out"), 0o700)
			os.Chown(filepath.Join(dir, "link", "out"), 65534, 65534)
		}, "owned by uid 65534"},
	}
	for _, tt := range unsafeDirs {
		t.Run(tt.name, func(t *testing.T) {
			if tt.root && os.Geteuid() != 0 {
				t.Skip("needs root, to give a directory to another user")
			}
			t.Setenv("MWI_TEST_JOIN", "s3cret")
			s, dir := newTestServer(t, f, "  join_method: token\n  token: {env: MWI_TEST_JOIN}",
				"  - type: identity\n    directory: link/out\n  - type: kubernetes\n    clusters: [prod]\n    directory: link/out\n")
			tt.setup(t, dir)
			joins := len(f.joins)
			err := s.Oneshot(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.reason) || !strings.Contains(err.Error(), filepath.Join(dir, "link")) {
				t.Fatalf("Oneshot = %v; want a refusal naming the directory and saying %q", err, tt.reason)
			}
			if len(f.joins) != joins {
				t.Error("mwid joined before refusing the output directory")
			}
			filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
				if err == nil && fi.Mode().IsRegular() && fi.Name() != "mwid.yaml" {
					t.Errorf("%s was written", p)
				}
				return nil
			})
		})
	}
}

// TestRenewJoinsAgain checks that a daemon joined with an ID token renews
// by joining again with a fresh token over mutual TLS with its identity,
// keeping its instance, and never asks /v1/renew; and that a token-joined
// daemon still renews.
func TestRenewJoinsAgain(t *testing.T) {
	f := newFakeIssuer(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	s, _ := newTestServer(t, f, "  join_method: kubernetes\n  token_name: pods\n  id_token: {file: "+tokenFile+"}", "  []\n")
	for i, tok := range []string{"a.b.c1", "a.b.c2", "a.b.c3"} {
		os.WriteFile(tokenFile, []byte(tok), 0o600)
		if _, err := s.renew(context.Background()); err != nil {
			t.Fatalf("renewal %d: %v", i, err)
		}
		j := f.joins[i]
		if j.req.IDToken != tok {
			t.Errorf("join %d sent ID token %q, want the file's current %q", i, j.req.IDToken, tok)
		}
		if (j.clientCert != nil) != (i > 0) {
			t.Errorf("join %d presented an identity: %v; want one from the second join on", i, j.clientCert != nil)
		}
	}
	if f.renewals != 0 || f.instances != 1 || s.creds.Current().Instance != "i1" || s.creds.Current().Generation != 3 {
		t.Errorf("renewals %d, instances %d, current %s gen %d; want three joins of one instance", f.renewals, f.instances,
			s.creds.Current().Instance, s.creds.Current().Generation)
	}

	// A changed onboarding joins as a new instance, presenting nothing.
	s.rejoin.Store(true)
	if _, err := s.renew(context.Background()); err != nil {
		t.Fatal(err)
	}
	if last := f.joins[len(f.joins)-1]; last.clientCert != nil || last.instance != "i2" {
		t.Errorf("rejoin presented an identity (%v) or kept the instance (%s)", last.clientCert != nil, last.instance)
	}

	// Join method token: join once, then renew.
	t.Setenv("MWI_TEST_JOIN", "s3cret")
	s, _ = newTestServer(t, f, "  join_method: token\n  token: {env: MWI_TEST_JOIN}", "  []\n")
	joins := len(f.joins)
	for range 2 {
		if _, err := s.renew(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if len(f.joins) != joins+1 || f.renewals != 1 {
		t.Errorf("token method: %d joins, %d renewals; want one of each", len(f.joins)-joins, f.renewals)
	}
}

func TestRenewBoundKeypair(t *testing.T) {
	f := newFakeIssuer(t)
	dir := t.TempDir()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	block, _ := ssh.MarshalPrivateKey(key, "")
	os.WriteFile(filepath.Join(dir, "mwi-key"), pem.EncodeToMemory(block), 0o600)
	signer, _ := ssh.NewSignerFromKey(key)
	f.boundTo = signer.PublicKey()
	t.Setenv("CREDENTIALS_DIRECTORY", dir)
	s, _ := newTestServer(t, f, "  join_method: bound_keypair\n  token_name: build-01\n  key: {credential: mwi-key}", "  []\n")
	for i := range 2 {
		if _, err := s.renew(context.Background()); err != nil {
			t.Fatalf("join %d: %v", i, err)
		}
	}
	if len(f.joins) != 2 || f.joins[1].clientCert == nil || f.instances != 1 || f.joins[0].req.TokenName != "build-01" {
		t.Errorf("joins %+v", f.joins)
	}
	// The second challenge was asked for with the identity the first join
	// gave, the one the second join presents.
	if len(f.challengeCerts) != 2 || f.challengeCerts[0] != nil || f.challengeCerts[1] == nil ||
		f.joins[1].clientCert == nil || !f.challengeCerts[1].Equal(f.joins[1].clientCert) {
		t.Errorf("challenges asked with identities %v, want none then the one joined with", f.challengeCerts)
	}

	// Another key is refused.
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	block, _ = ssh.MarshalPrivateKey(other, "")
	os.WriteFile(filepath.Join(dir, "mwi-key"), pem.EncodeToMemory(block), 0o600)
	if _, err := s.renew(context.Background()); err == nil || !strings.Contains(err.Error(), "signature does not verify (join_denied)") {
		t.Errorf("join with another key: %v", err)
	}
}
