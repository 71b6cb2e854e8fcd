package integration

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/kubeconfig"
	"github.com/mwi-project/mwi/integration/harness"
)

// kubeResources are the roles and bots of the Kubernetes tests. Both
// clusters are the one API server; the issuer tells them apart by name and
// labels:
//
//	dev     env=dev, team=a
//	secret  env=prod
//	kadmin  role kube-admin: env=dev, user mwi-admin, group system:masters
//	kteam   role kube-team:  team=a, group team-a, no user (bot:kteam)
const kubeResources = `kind: role
version: v1
metadata: {name: kube-admin}
spec:
  allow:
    kubernetes_labels: {env: dev}
    kubernetes_groups: [system:masters]
    kubernetes_users: [mwi-admin]
---
kind: role
version: v1
metadata: {name: kube-team}
spec:
  allow:
    kubernetes_labels: {team: a}
    kubernetes_groups: [team-a]
---
kind: bot
version: v1
metadata: {name: kadmin}
spec: {roles: [kube-admin]}
---
kind: bot
version: v1
metadata: {name: kteam}
spec: {roles: [kube-team]}
`

// kubeOutput is the outputs section of a daemon with one kubernetes output.
func kubeOutput(selector string) string {
	return "outputs:\n  - type: kubernetes\n" + selector
}

// keyRing collects the private keys the tests have seen, to look for them
// on disk at the end.
type keyRing struct {
	mu   sync.Mutex
	keys map[string][]byte // PEM → DER
}

func (r *keyRing) add(t *testing.T, keyPEM string) {
	t.Helper()
	block, _ := pem.Decode([]byte(keyPEM))
	if block == nil || !strings.HasSuffix(block.Type, "PRIVATE KEY") {
		t.Fatalf("clientKeyData is not a PEM private key: %.40q", keyPEM)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.keys == nil {
		r.keys = map[string][]byte{}
	}
	r.keys[keyPEM] = block.Bytes
}

// needles returns every form in which a key could land in a file: its PEM,
// the PEM's body on one line, the PEM in base64 (a kubeconfig's
// client-key-data), and its DER.
func (r *keyRing) needles() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out [][]byte
	for p, der := range r.keys {
		body := strings.Join(strings.Split(strings.TrimSpace(p), "\n")[1:len(strings.Split(strings.TrimSpace(p), "\n"))-1], "")
		out = append(out, []byte(p), []byte(body), []byte(base64.StdEncoding.EncodeToString([]byte(p))), der)
	}
	return out
}

// kubeEnv is the shared setup of TestKubernetes.
type kubeEnv struct {
	kube *harness.Kube
	iss  *harness.Issuer
	keys keyRing
	work string // the test's own files
}

// execCredential runs mwictl kube-credential as kubectl would and returns
// the credential, recording its key.
func (e *kubeEnv) execCredential(t *testing.T, d *harness.Daemon, cluster string) api.ExecCredential {
	t.Helper()
	out, err := d.Ctl("kube-credential", "--cluster", cluster)
	if err != nil {
		t.Fatalf("mwictl kube-credential --cluster %s: %v\n%s", cluster, err, out)
	}
	var cred api.ExecCredential
	if err := json.Unmarshal([]byte(out), &cred); err != nil {
		t.Fatalf("mwictl kube-credential printed no ExecCredential: %v\n%s", err, out)
	}
	if cred.APIVersion != "client.authentication.k8s.io/v1" || cred.Kind != "ExecCredential" || cred.Status.ClientCertificateData == "" {
		t.Fatalf("ExecCredential = %+v", cred)
	}
	e.keys.add(t, cred.Status.ClientKeyData)
	return cred
}

// kubectl runs kubectl with an exec kubeconfig from mwictl through a
// process substitution, as a person would type it, so that not even the
// kubeconfig touches the disk.
func (e *kubeEnv) kubectl(d *harness.Daemon, args ...string) (string, error) {
	var b strings.Builder
	b.WriteString(`exec "$KUBECTL" --kubeconfig <("$MWICTL" --socket "$SOCK" kubeconfig)`)
	for _, a := range args {
		b.WriteString(" " + strconv.Quote(a))
	}
	return harness.Run(context.Background(), 60*time.Second,
		[]string{"HOME=" + e.kube.Home, "KUBECONFIG=", "KUBECTL=" + e.kube.Kubectl, "MWICTL=" + e.iss.Bins.Ctl, "SOCK=" + d.APISock},
		"bash", "-c", b.String())
}

// whoami returns the user and groups the API server sees.
func (e *kubeEnv) whoami(t *testing.T, d *harness.Daemon) (string, []string) {
	t.Helper()
	out, err := e.kubectl(d, "auth", "whoami", "-o", "json")
	if err != nil {
		t.Fatalf("kubectl auth whoami: %v\n%s", err, out)
	}
	var review struct {
		Status struct {
			UserInfo struct {
				Username string   `json:"username"`
				Groups   []string `json:"groups"`
			} `json:"userInfo"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &review); err != nil {
		t.Fatalf("kubectl auth whoami -o json: %v\n%s", err, out)
	}
	return review.Status.UserInfo.Username, review.Status.UserInfo.Groups
}

// TestKubernetes runs kubectl against a real kube-apiserver and etcd with
// RBAC, through kubeconfigs from mwictl whose users are mwictl's exec
// plugin, with the certificates of a real mwi-issuer held by real mwids.
func TestKubernetes(t *testing.T) {
	t.Parallel()
	kube := harness.NewKube(t)
	e := &kubeEnv{kube: kube, work: t.TempDir()}
	e.iss = harness.StartIssuer(t, kubeResources+"---\n"+
		kube.ClusterYAML("dev", map[string]string{"env": "dev", "team": "a"})+"---\n"+
		kube.ClusterYAML("secret", map[string]string{"env": "prod"}))
	if e.iss.KubeCAFile == "" {
		t.Fatal("mwi-issuer init printed no kube_client_ca_file")
	}
	kube.Start(t, e.iss.KubeCAFile)
	kube.Admin(t, "create", "namespace", "team-a")
	kube.Admin(t, "create", "namespace", "team-b")
	// No controller manager runs to fill in aggregated roles such as edit,
	// so the namespace gets a role of its own.
	kube.Admin(t, "-n", "team-a", "create", "role", "configmaps", "--verb=get,list,watch,create,delete", "--resource=configmaps")
	kube.Admin(t, "-n", "team-a", "create", "rolebinding", "team-a-configmaps", "--role=configmaps", "--group=team-a")

	// The daemons live for the whole test, so that the last step can look
	// through their directories.
	admin := harness.StartDaemon(t, e.iss, harness.DaemonOptions{
		Token: e.iss.CreateToken(t, "kadmin", time.Hour),
		Extra: kubeOutput(`    labels: [{"*": "*"}]` + "\n"),
	})
	team := harness.StartDaemon(t, e.iss, harness.DaemonOptions{
		Token: e.iss.CreateToken(t, "kteam", time.Hour),
		Extra: kubeOutput("    clusters: [dev]\n"),
	})
	renewing := harness.StartDaemon(t, e.iss, harness.DaemonOptions{
		Token: e.iss.CreateToken(t, "kteam", time.Hour),
		TTL:   10 * time.Second,
		Extra: kubeOutput("    clusters: [dev]\n"),
	})
	withDir := harness.StartDaemon(t, e.iss, harness.DaemonOptions{
		Token: e.iss.CreateToken(t, "kadmin", time.Hour),
		Extra: kubeOutput("    clusters: [dev]\n    directory: kube-out\n"),
	})
	daemons := []*harness.Daemon{admin, team, renewing, withDir}
	for _, d := range daemons {
		d.WaitState(t, "ready", 30*time.Second)
	}
	var allowed []string // files that hold a key because a test asked for it

	t.Run("SystemMasters", func(t *testing.T) {
		out, err := e.kubectl(admin, "get", "namespaces", "-o", "name")
		if err != nil {
			t.Fatalf("kubectl --kubeconfig <(mwictl kubeconfig) get namespaces: %v\n%s", err, out)
		}
		for _, ns := range []string{"namespace/default", "namespace/kube-system", "namespace/team-a", "namespace/team-b"} {
			if !strings.Contains(out, ns) {
				t.Errorf("kubectl get namespaces does not list %s:\n%s", ns, out)
			}
		}
		user, groups := e.whoami(t, admin)
		if user != "mwi-admin" || !slices.Contains(groups, "system:masters") || !slices.Contains(groups, "system:authenticated") {
			t.Errorf("kubectl auth whoami: user %q, groups %v; want mwi-admin in system:masters", user, groups)
		}
		e.execCredential(t, admin, "dev")
		// Issued certificates are audited with their user and groups.
		// (in the record of the join or renewal that issued them).
		var kc map[string]any
		for _, ev := range e.iss.Audit(t) {
			certs, _ := ev["kube_certs"].([]any)
			for _, c := range certs {
				if c := c.(map[string]any); ev["bot"] == "kadmin" && ev["expires"] != nil && c["kube_cluster"] == "dev" && c["user"] == "mwi-admin" {
					kc = c
				}
			}
		}
		if kc == nil {
			t.Error("no audit line for the Kubernetes certificate of kadmin")
		} else if fmt.Sprint(kc["groups"]) != "[system:masters]" || kc["serial"] == "" {
			t.Errorf("audited certificate = %v", kc)
		}
	})

	t.Run("RoleBinding", func(t *testing.T) {
		user, groups := e.whoami(t, team)
		if user != "bot:kteam" || !slices.Contains(groups, "team-a") || slices.Contains(groups, "system:masters") {
			t.Errorf("kubectl auth whoami: user %q, groups %v; want bot:kteam in team-a", user, groups)
		}
		if out, err := e.kubectl(team, "-n", "team-a", "create", "configmap", "from-mwi", "--from-literal=k=v"); err != nil {
			t.Fatalf("create a configmap in team-a, where team-a may edit: %v\n%s", err, out)
		}
		if out, err := e.kubectl(team, "-n", "team-a", "get", "configmaps", "-o", "name"); err != nil || !strings.Contains(out, "configmap/from-mwi") {
			t.Errorf("list configmaps in team-a: %v\n%s", err, out)
		}
		out, err := e.kubectl(team, "-n", "team-b", "get", "configmaps")
		if err == nil || !strings.Contains(out, "Forbidden") || !strings.Contains(out, `User "bot:kteam" cannot list resource "configmaps"`) {
			t.Errorf("list configmaps in team-b: err %v, want Forbidden for bot:kteam:\n%s", err, out)
		}
		if out, err := e.kubectl(team, "get", "namespaces"); err == nil || !strings.Contains(out, "Forbidden") {
			t.Errorf("list namespaces: err %v, want Forbidden:\n%s", err, out)
		}
		e.execCredential(t, team, "dev")
	})

	t.Run("ClusterNotAllowed", func(t *testing.T) {
		// kadmin asks for every cluster; its role matches dev, not secret.
		out, err := admin.Ctl("kube-clusters", "--json")
		if err != nil {
			t.Fatalf("mwictl kube-clusters: %v\n%s", err, out)
		}
		var clusters []api.KubernetesCluster
		if err := json.Unmarshal([]byte(out), &clusters); err != nil || len(clusters) != 1 || clusters[0].Name != "dev" {
			t.Fatalf("clusters = %s (%v), want dev alone", out, err)
		}
		if c := clusters[0]; c.Server != kube.Server || c.User != "mwi-admin" || c.Labels["team"] != "a" {
			t.Errorf("cluster = %+v", c)
		}
		cfg, err := admin.Ctl("kubeconfig")
		if err != nil {
			t.Fatalf("mwictl kubeconfig: %v\n%s", err, cfg)
		}
		if strings.Contains(cfg, "secret") {
			t.Errorf("the kubeconfig names the cluster the role does not match:\n%s", cfg)
		}
		out, err = admin.Ctl("kube-credential", "--cluster", "secret")
		if err == nil || !strings.Contains(out, `mwictl: mwid holds no credentials for Kubernetes cluster "secret"`) || strings.Contains(out, "PRIVATE KEY") {
			t.Errorf("mwictl kube-credential --cluster secret: err %v\n%s", err, out)
		}
		// kubectl shows the plugin's error when a kubeconfig names it.
		forged, err := kubeconfig.Render([]kubeconfig.Cluster{{Name: "secret", Server: kube.Server, CAData: kube.CAPEM}},
			kubeconfig.Options{Mwictl: e.iss.Bins.Ctl, Socket: admin.APISock})
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(e.work, "secret.kubeconfig")
		if err := os.WriteFile(path, forged, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err = kube.Run(context.Background(), path, "get", "namespaces")
		if err == nil || !strings.Contains(out, `no credentials for Kubernetes cluster "secret"`) {
			t.Errorf("kubectl with a plugin for secret: err %v, want mwictl's error:\n%s", err, out)
		}

		// The issuer refuses a daemon that names the cluster, and audits why.
		refused := harness.StartDaemon(t, e.iss, harness.DaemonOptions{
			Token: e.iss.CreateToken(t, "kadmin", time.Hour),
			Extra: kubeOutput("    clusters: [secret]\n"),
		})
		st := refused.WaitError(t, "do not allow Kubernetes cluster secret", 30*time.Second)
		if st.Joined {
			t.Errorf("the daemon joined: %+v", st)
		}
		ev := e.iss.FindAudit(t, map[string]any{"event": "join", "outcome": "denied", "bot": "kadmin"})
		if ev == nil || !strings.Contains(fmt.Sprint(ev["reason"]), "do not allow Kubernetes cluster secret") {
			t.Errorf("audit of the refused join = %v", ev)
		}
		daemons = append(daemons, refused)
	})

	t.Run("Renewal", func(t *testing.T) {
		// kubectl proxy is one kubectl process that keeps making requests:
		// it must run the plugin again after each expirationTimestamp.
		cfg, err := renewing.Ctl("kubeconfig", "--cluster", "dev")
		if err != nil {
			t.Fatalf("mwictl kubeconfig: %v\n%s", err, cfg)
		}
		path := filepath.Join(e.work, "renewing.kubeconfig")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		first := e.execCredential(t, renewing, "dev")
		port := harness.FreePort(t)
		proxy := harness.Start(t, e.work, "kubectl-proxy", []string{"HOME=" + kube.Home, "KUBECONFIG="},
			kube.Kubectl, "--kubeconfig", path, "proxy", "--address=127.0.0.1", fmt.Sprintf("--port=%d", port))
		url := fmt.Sprintf("http://127.0.0.1:%d/api/v1/namespaces/team-a/configmaps", port)
		harness.Eventually(t, 20*time.Second, "kubectl proxy serving", func() error {
			if proxy.Exited() {
				t.Fatalf("kubectl proxy exited:\n%s", proxy.Output())
			}
			res, err := http.Get(url)
			if err != nil {
				return err
			}
			res.Body.Close()
			return nil
		})
		before := credentialCalls(t, renewing)
		start := time.Now()
		requests, retried := 0, 0
		for time.Since(start) < 25*time.Second {
			// When the plugin hands kubectl a new certificate, client-go
			// closes its connections to the API server, and a request of
			// kubectl proxy's that was on one fails with a 500 ("use of
			// closed network connection"). That is kubectl's doing; the
			// request must succeed when tried again.
			var status string
			for try := 0; try < 2; try++ {
				res, err := http.Get(url)
				if err != nil {
					t.Fatalf("request through kubectl proxy after %s: %v", time.Since(start).Round(time.Second), err)
				}
				res.Body.Close()
				if status = res.Status; res.StatusCode == http.StatusOK {
					break
				}
				retried++
			}
			if status != "200 OK" {
				t.Fatalf("request through kubectl proxy after %s: %s, twice\n%s", time.Since(start).Round(time.Second), status, proxy.Output())
			}
			requests++
			time.Sleep(250 * time.Millisecond)
		}
		calls := credentialCalls(t, renewing) - before
		t.Logf("%d requests over 25s (%d tried twice); kubectl ran the plugin %d times", requests, retried, calls)
		if retried > calls {
			t.Errorf("%d requests failed once, more than the %d certificate changes explain", retried, calls)
		}
		if calls < 2 {
			t.Errorf("kubectl ran the exec plugin %d times in 25s with 10s certificates; want at least 2 (it must run it again after expirationTimestamp)", calls)
		}
		last := e.execCredential(t, renewing, "dev")
		if !last.Status.ExpirationTimestamp.After(first.Status.ExpirationTimestamp.Add(10*time.Second)) || last.Status.ClientKeyData == first.Status.ClientKeyData {
			t.Errorf("credentials were not renewed: first expires %v, last %v", first.Status.ExpirationTimestamp, last.Status.ExpirationTimestamp)
		}
		if !last.Status.ExpirationTimestamp.After(time.Now()) {
			t.Errorf("mwid serves a credential that expired at %v", last.Status.ExpirationTimestamp)
		}
		// Fresh kubectl processes work too, with the renewed certificate.
		if out, err := e.kubectl(renewing, "-n", "team-a", "get", "configmaps"); err != nil {
			t.Errorf("kubectl after renewals: %v\n%s", err, out)
		}
		st, _ := renewing.Status(t)
		if st.Generation < 3 {
			t.Errorf("generation %d after 25s of 10s certificates; want renewals", st.Generation)
		}
	})

	t.Run("EmbeddedOutputs", func(t *testing.T) {
		// The directory output writes a kubeconfig with the key inline, mode 0600.
		path := filepath.Join(withDir.Dir, "kube-out", "kubeconfig.yaml")
		harness.Eventually(t, 20*time.Second, "kubeconfig output written", func() error {
			_, err := os.Stat(path)
			return err
		})
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v (%v), want 0600", path, fi.Mode(), err)
		}
		allowed = append(allowed, path)
		e.keys.add(t, embeddedKey(t, path))
		if out, err := kube.Run(context.Background(), path, "get", "namespaces", "-o", "name"); err != nil || !strings.Contains(out, "namespace/team-a") {
			t.Errorf("kubectl with the directory output: %v\n%s", err, out)
		}
		st, _ := withDir.Status(t)
		if len(st.Outputs) != 1 || st.Outputs[0].Type != "kubernetes" || st.Outputs[0].Path != path || st.Outputs[0].LastWrite == nil {
			t.Errorf("status outputs = %+v", st.Outputs)
		}

		// mwictl kubeconfig --embed writes the key where it is told, and says so.
		embedded := filepath.Join(e.work, "embedded.kubeconfig")
		out, err := team.Ctl("kubeconfig", "--embed", "-o", embedded)
		if err != nil || !strings.Contains(out, "private key inline, which is now on disk ("+embedded+")") {
			t.Fatalf("mwictl kubeconfig --embed -o: %v\n%s", err, out)
		}
		allowed = append(allowed, embedded)
		e.keys.add(t, embeddedKey(t, embedded))
		if out, err := kube.Run(context.Background(), embedded, "-n", "team-a", "get", "configmaps"); err != nil {
			t.Errorf("kubectl with the embedded kubeconfig: %v\n%s", err, out)
		}
	})

	t.Run("NoKeyOnDisk", func(t *testing.T) {
		for _, d := range daemons {
			if st, _ := d.Status(t); st.Joined {
				e.execCredential(t, d, "dev")
			}
		}
		// Stop the programs, so that anything they would write at exit is
		// written, then look through every directory of the test.
		for _, d := range daemons {
			d.Proc.Stop(t)
		}
		e.iss.Stop(t)
		needles := e.keys.needles()
		if len(needles) == 0 {
			t.Fatal("no keys to look for")
		}
		dirs := []string{e.work, e.iss.Dir, kube.Dir, kube.Home}
		for _, d := range daemons {
			dirs = append(dirs, d.Dir)
		}
		found := map[string]bool{}
		var scanned int
		for _, dir := range dirs {
			err := filepath.WalkDir(dir, func(path string, de fs.DirEntry, err error) error {
				if err != nil || !de.Type().IsRegular() {
					return err
				}
				data, err := os.ReadFile(path)
				if err != nil {
					return err
				}
				scanned++
				for _, n := range needles {
					if bytes.Contains(data, n) {
						found[path] = true
						break
					}
				}
				return nil
			})
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				t.Fatal(err)
			}
		}
		for path := range found {
			if !slices.Contains(allowed, path) {
				t.Errorf("%s holds a private key that mwid handed out; only %v may", path, allowed)
			}
		}
		// The outputs that were asked to hold a key do, so the search works.
		for _, path := range allowed {
			if !found[path] {
				t.Errorf("%s should hold a key but none was found: the search is broken", path)
			}
		}
		t.Logf("looked for %d keys in %d files", len(needles)/4, scanned)
	})
}

// embeddedKey returns the first private key inline in a kubeconfig.
func embeddedKey(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cfg kubeconfig.Config
	if err := yaml.Unmarshal(data, &cfg); err != nil || len(cfg.Users) == 0 {
		t.Fatalf("%s: %v", path, err)
	}
	key, err := base64.StdEncoding.DecodeString(cfg.Users[0].User.ClientKeyData)
	if err != nil || len(key) == 0 {
		t.Fatalf("%s has no client-key-data: %v", path, err)
	}
	return string(key)
}

var credentialMetric = regexp.MustCompile(`(?m)^mwid_api_requests_total\{code="200",route="/v1/kubernetes/credential"\} (\d+)$`)

// credentialCalls returns how many ExecCredentials mwid has handed out.
func credentialCalls(t *testing.T, d *harness.Daemon) int {
	t.Helper()
	_, body := get(t, d, "/metrics")
	m := credentialMetric.FindStringSubmatch(body)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}
