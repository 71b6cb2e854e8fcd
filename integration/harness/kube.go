package harness

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/mwi-project/mwi/daemon/kubeconfig"
)

// Install hints for the Kubernetes tools.
const (
	installEtcd          = "apt-get install -y --no-install-recommends etcd-server"
	installKubeAPIServer = "make kube-apiserver (builds k8s.io/kubernetes v1.32.2 into .cache/kube/bin; make test sets MWI_KUBE_APISERVER)"
	installKubectl       = "make kubectl (builds it into .cache/kube/bin; make test sets MWI_KUBECTL), or install kubectl"
)

// Kube is a real kube-apiserver and its etcd on 127.0.0.1, with RBAC on.
//
// The harness makes its own CA, which signs the API server's serving
// certificate and an administrator's client certificate (O=system:masters)
// for setting the cluster up with kubectl. The API server's --client-ca-file
// holds that CA and the issuer's Kubernetes client CA, so it accepts the
// certificates mwid obtains.
type Kube struct {
	Dir     string
	Port    int
	Server  string // https://127.0.0.1:PORT
	CAPEM   []byte // the harness CA, which the serving certificate chains to
	Kubectl string // the kubectl binary
	// Home is the HOME of every kubectl the harness runs, so that
	// kubectl's cache stays in the test's directories.
	Home string
	// AdminKubeconfig is a kubeconfig with the administrator's
	// certificate and key inline.
	AdminKubeconfig string

	apiserver, etcd string
	ca              *x509.Certificate
	caKey           *ecdsa.PrivateKey
	admin           tls.Certificate

	APIServer, Etcd *Proc
}

// NewKube finds etcd, kube-apiserver and kubectl, or skips the test saying
// how to install them (fails with MWI_REQUIRE_INTEGRATION=1), picks a port
// and makes the certificates. Start starts the servers: the issuer's
// Kubernetes CA is needed for that, and the cluster's address and CA for
// the issuer's kube_cluster resources, so the two steps are apart.
func NewKube(t testing.TB) *Kube {
	t.Helper()
	k := &Kube{
		etcd:      Require(t, "etcd", installEtcd),
		apiserver: requireFile(t, "MWI_KUBE_APISERVER", "kube-apiserver", installKubeAPIServer),
		Kubectl:   requireFile(t, "MWI_KUBECTL", "kubectl", installKubectl),
		Dir:       t.TempDir(),
		Home:      t.TempDir(),
		Port:      FreePort(t),
	}
	k.Server = fmt.Sprintf("https://127.0.0.1:%d", k.Port)
	var err error
	if k.ca, k.caKey, err = newTestCA("mwi harness kube CA"); err != nil {
		t.Fatal(err)
	}
	k.CAPEM = pemCert(k.ca)
	admin, adminKey, err := k.sign(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "mwi-harness-admin", Organization: []string{"system:masters"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		t.Fatal(err)
	}
	k.admin = tls.Certificate{Certificate: [][]byte{admin.Raw}, PrivateKey: adminKey}
	adminKeyPEM, err := pemKey(adminKey)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := kubeconfig.Render([]kubeconfig.Cluster{{
		Name: "harness", Server: k.Server, CAData: k.CAPEM, CertPEM: pemCert(admin), KeyPEM: adminKeyPEM,
	}}, kubeconfig.Options{Embed: true})
	if err != nil {
		t.Fatal(err)
	}
	k.AdminKubeconfig = filepath.Join(k.Dir, "admin.kubeconfig")
	write(t, k.AdminKubeconfig, string(cfg))
	return k
}

// requireFile returns the program that the environment variable env names,
// or tool from PATH; if neither exists it skips the test with the install
// hint, or fails it with MWI_REQUIRE_INTEGRATION=1.
func requireFile(t testing.TB, env, tool, install string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
		msg := fmt.Sprintf("%s=%s is not an executable file; build it with: %s", env, p, install)
		if os.Getenv("MWI_REQUIRE_INTEGRATION") == "1" {
			t.Fatal(msg + " (MWI_REQUIRE_INTEGRATION=1)")
		}
		t.Skip(msg)
	}
	return Require(t, tool, install)
}

// ClusterYAML returns a kube_cluster resource for this API server.
func (k *Kube) ClusterYAML(name string, labels map[string]string) string {
	var ls []string
	for key, v := range labels {
		ls = append(ls, fmt.Sprintf("%q: %q", key, v))
	}
	sort.Strings(ls)
	return fmt.Sprintf(`kind: kube_cluster
version: v1
metadata:
  name: %s
  labels: {%s}
spec:
  server: %s
  certificate_authority_data: %s
`, name, strings.Join(ls, ", "), k.Server, base64.StdEncoding.EncodeToString(k.CAPEM))
}

// Start starts etcd and kube-apiserver, trusting the client certificates of
// the Kubernetes CA in issuerCAFile (mwi-issuer's kube_ca.crt) and of the
// harness's own CA, and waits until the API server is ready. Both are
// stopped, through their own processes, when the test ends.
func (k *Kube) Start(t testing.TB, issuerCAFile string) {
	t.Helper()
	k.UpdateClientCA(t, issuerCAFile)
	clientCA := k.ClientCAFile()

	serving, servingKey, err := k.sign(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(10, 96, 0, 1)},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
	})
	if err != nil {
		t.Fatal(err)
	}
	servingKeyPEM, err := pemKey(servingKey)
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(k.Dir, "serving.crt"), string(pemCert(serving)))
	write(t, filepath.Join(k.Dir, "serving.key"), string(servingKeyPEM))
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	saKeyPEM, err := pemKey(saKey)
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(k.Dir, "sa.key"), string(saKeyPEM))

	etcdClient, etcdPeer := FreePort(t), FreePort(t)
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdClient)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPeer)
	k.Etcd = Start(t, k.Dir, "etcd", nil, k.etcd,
		"--name", "mwi-test",
		"--data-dir", filepath.Join(k.Dir, "etcd-data"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "mwi-test="+peerURL,
		"--logger=zap", "--log-level=warn")
	Eventually(t, 30*time.Second, "etcd healthy", func() error {
		if k.Etcd.Exited() {
			t.Fatalf("etcd exited:\n%s", k.Etcd.Output())
		}
		res, err := http.Get(etcdURL + "/health")
		if err != nil {
			return err
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("etcd /health: %s", res.Status)
		}
		return nil
	})

	k.APIServer = Start(t, k.Dir, "kube-apiserver", nil, k.apiserver,
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", k.Port),
		"--cert-dir="+filepath.Join(k.Dir, "certs"),
		"--tls-cert-file="+filepath.Join(k.Dir, "serving.crt"),
		"--tls-private-key-file="+filepath.Join(k.Dir, "serving.key"),
		"--client-ca-file="+clientCA,
		"--authorization-mode=RBAC",
		"--service-account-issuer="+k.Server,
		"--service-account-key-file="+filepath.Join(k.Dir, "sa.key"),
		"--service-account-signing-key-file="+filepath.Join(k.Dir, "sa.key"),
		"--service-cluster-ip-range=10.96.0.0/24",
		"--endpoint-reconciler-type=none",
		"--profiling=false")
	pool := x509.NewCertPool()
	pool.AddCert(k.ca)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{k.admin}},
	}}
	defer hc.CloseIdleConnections()
	Eventually(t, 90*time.Second, "kube-apiserver ready", func() error {
		if k.APIServer.Exited() {
			t.Fatalf("kube-apiserver exited:\n%s", tail([]byte(k.APIServer.Output()), 40))
		}
		res, err := hc.Get(k.Server + "/readyz")
		if err != nil {
			return err
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz: %s", res.Status)
		}
		return nil
	})
	// RBAC's default roles (view, edit, admin) are made by a post-start
	// hook that /readyz waits for; the default namespace by a controller
	// that it does not.
	Eventually(t, 30*time.Second, "namespace default", func() error {
		_, err := k.Run(context.Background(), k.AdminKubeconfig, "get", "namespace", "default")
		return err
	})
}

// ClientCAFile is the API server's --client-ca-file: the issuer's
// Kubernetes CA bundle and the harness CA.
func (k *Kube) ClientCAFile() string { return filepath.Join(k.Dir, "client-ca.pem") }

// UpdateClientCA writes ClientCAFile again from the issuer's bundle in
// issuerCAFile, replacing it whole by a rename, as an operator's
// deployment follows the issuer's bundle; the API server reloads it by
// itself.
func (k *Kube) UpdateClientCA(t testing.TB, issuerCAFile string) {
	t.Helper()
	issuerCA, err := os.ReadFile(issuerCAFile)
	if err != nil {
		t.Fatalf("the issuer's Kubernetes CA: %v", err)
	}
	tmp := k.ClientCAFile() + ".tmp"
	write(t, tmp, string(issuerCA)+string(k.CAPEM))
	if err := os.Rename(tmp, k.ClientCAFile()); err != nil {
		t.Fatal(err)
	}
}

// Run runs kubectl with the given kubeconfig and HOME=k.Home, and returns
// its combined output.
func (k *Kube) Run(ctx context.Context, kubeconfig string, args ...string) (string, error) {
	return Run(ctx, 60*time.Second, []string{"HOME=" + k.Home, "KUBECONFIG="},
		append([]string{k.Kubectl, "--kubeconfig", kubeconfig}, args...)...)
}

// Admin runs kubectl as the cluster's administrator and fails the test if
// it fails.
func (k *Kube) Admin(t testing.TB, args ...string) string {
	t.Helper()
	out, err := k.Run(context.Background(), k.AdminKubeconfig, args...)
	if err != nil {
		t.Fatalf("kubectl %s (as admin): %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// Command returns a kubectl command with HOME=k.Home, for callers that
// need its process, such as kubectl proxy.
func (k *Kube) Command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, k.Kubectl, args...)
	cmd.Env = append(os.Environ(), "HOME="+k.Home, "KUBECONFIG=")
	return cmd
}

// sign signs tmpl with the harness CA for a new ECDSA key.
func (k *Kube) sign(tmpl *x509.Certificate) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, k.ca, key.Public(), k.caKey)
	if err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	return c, key, err
}

func newTestCA(name string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	return c, key, err
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func pemKey(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}
