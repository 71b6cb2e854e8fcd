package authority_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/issuer/audit"
	"github.com/mwi-project/mwi/issuer/ca"
	"github.com/mwi-project/mwi/issuer/resource"
)

// clusterCA is the PEM of a CA that the test clusters' API servers use.
var clusterCA = func() string {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "cluster CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		panic(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}()

func cluster(name, labels string) string {
	return "kind: kube_cluster\nversion: v1\nmetadata:\n  name: " + name + "\n  labels: " + labels +
		"\nspec:\n  server: https://" + name + ".example.com:6443\n  certificate_authority_data: " +
		base64.StdEncoding.EncodeToString([]byte(clusterCA)) + "\n---\n"
}

// kubeResourcesYAML defines clusters prod (env=prod), staging (env=staging)
// and secret (env=secret), and bots:
//
//	kadmin: every cluster, user alice, groups system:masters
//	kdev:   env prod or staging; groups dev and readers; no user (bot:kdev)
//	twousers: two roles giving prod two different users
func kubeResourcesYAML(extra string) string {
	return cluster("prod", "{env: prod}") + cluster("staging", "{env: staging}") + cluster("secret", "{env: secret}") + extra + `kind: role
version: v1
metadata: {name: kadmin}
spec:
  allow:
    logins: [root]
    kubernetes_labels: {'*': '*'}
    kubernetes_groups: [system:masters]
    kubernetes_users: [alice]
---
kind: role
version: v1
metadata: {name: kdev}
spec:
  allow:
    kubernetes_labels: {env: [prod, staging]}
    kubernetes_groups: [dev]
---
kind: role
version: v1
metadata: {name: kread}
spec:
  allow:
    kubernetes_labels: {env: prod}
    kubernetes_groups: [readers, dev]
---
kind: role
version: v1
metadata: {name: prod-user}
spec:
  allow:
    kubernetes_labels: {env: prod}
    kubernetes_users: [bob]
---
kind: bot
version: v1
metadata: {name: kadmin}
spec: {roles: [kadmin]}
---
kind: bot
version: v1
metadata: {name: kdev}
spec: {roles: [kdev, kread]}
---
kind: bot
version: v1
metadata: {name: twousers}
spec: {roles: [kadmin, prod-user]}
`
}

// kubeEnv is an env whose resources define Kubernetes clusters.
func kubeEnv(t *testing.T) *env {
	t.Helper()
	e := newEnv(t)
	e.auth.SetResources(loadResources(t, kubeResourcesYAML("")))
	return e
}

// kubeJoin joins bot with a Kubernetes request and returns the answer and
// the key the CSR was made with.
func (e *env) kubeJoin(t *testing.T, bot string, clusters []string, labels ...map[string]string) (api.Credentials, *ecdsa.PrivateKey, error) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := e.auth.Join(context.Background(), api.JoinRequest{
		JoinMethod: api.JoinMethodToken, Token: e.token(t, bot), Keys: newKeys(t).pub, TTLSeconds: 600,
		Kubernetes: &api.KubernetesRequest{CSR: csrPEM(t, key), Clusters: clusters, Labels: labels},
	}, nil, "192.0.2.1:1234")
	return creds, key, err
}

// kubeCert parses and verifies one Kubernetes credential.
func (e *env) kubeCert(t *testing.T, kc api.KubernetesCredential) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode([]byte(kc.ClientCertificate))
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("client_certificate of %s is not PEM: %q", kc.Cluster, kc.ClientCertificate)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(e.ca.KubeCA())
	if _, err := c.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: e.now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("certificate for %s does not verify against the Kubernetes CA: %v", kc.Cluster, err)
	}
	return c
}

func clusterNames(creds api.Credentials) []string {
	var names []string
	for _, kc := range creds.Kubernetes {
		names = append(names, kc.Cluster)
	}
	return names
}

func TestJoinKubernetes(t *testing.T) {
	e := kubeEnv(t)
	offset := e.audit.Len()
	creds, key, err := e.kubeJoin(t, "kadmin", []string{"prod"})
	if err != nil {
		t.Fatalf("Join: %v", err)
	}
	if got := clusterNames(creds); !slices.Equal(got, []string{"prod"}) {
		t.Fatalf("clusters = %v, want [prod]", got)
	}
	kc := creds.Kubernetes[0]
	if kc.Server != "https://prod.example.com:6443" || string(kc.CertificateAuthorityData) != clusterCA || kc.Labels["env"] != "prod" {
		t.Errorf("credential = %+v", kc)
	}
	c := e.kubeCert(t, kc)
	if c.Subject.CommonName != "alice" || !slices.Equal(c.Subject.Organization, []string{"system:masters"}) {
		t.Errorf("subject = %v, want CN=alice,O=system:masters", c.Subject)
	}
	if !c.PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) {
		t.Error("certificate is not for the CSR's key")
	}
	// The same validity as the other certificates: capped by the role.
	idCert, _, _ := parseCreds(t, e, creds)
	if !c.NotAfter.Equal(idCert.NotAfter) || !c.NotBefore.Equal(idCert.NotBefore) || !kc.Expires.Equal(c.NotAfter) || !c.NotAfter.Equal(e.now.Add(10*time.Minute)) {
		t.Errorf("validity %v to %v (expires %v), identity %v to %v", c.NotBefore, c.NotAfter, kc.Expires, idCert.NotBefore, idCert.NotAfter)
	}
	var issued []map[string]any
	for _, rec := range e.auditLines(t, offset) {
		if rec["outcome"] != audit.Allowed {
			continue
		}
		if rec["bot"] != "kadmin" || rec["expires"] == nil {
			t.Errorf("audit line = %v", rec)
		}
		certs, _ := rec["kube_certs"].([]any)
		for _, kc := range certs {
			issued = append(issued, kc.(map[string]any))
		}
	}
	if len(issued) != 1 {
		t.Fatalf("%d kubernetes certificates in the audit log, want 1: %s", len(issued), e.audit.String()[offset:])
	}
	l := issued[0]
	if l["kube_cluster"] != "prod" || l["user"] != "alice" ||
		l["serial"] != c.SerialNumber.Text(16) || !slices.Equal(anyStrings(l["groups"]), []string{"system:masters"}) {
		t.Errorf("audited certificate = %v", l)
	}
}

func anyStrings(v any) []string {
	var out []string
	list, _ := v.([]any)
	for _, x := range list {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

func TestKubernetesSelectors(t *testing.T) {
	e := kubeEnv(t)
	for _, tc := range []struct {
		name     string
		bot      string
		clusters []string
		labels   []map[string]string
		want     []string
	}{
		{"all allowed by wildcard", "kadmin", nil, []map[string]string{{"*": "*"}}, []string{"prod", "secret", "staging"}},
		{"labels filter the allowed", "kdev", nil, []map[string]string{{"*": "*"}}, []string{"prod", "staging"}},
		{"a selector matching a cluster not allowed picks nothing", "kdev", nil, []map[string]string{{"env": "secret"}}, nil},
		{"any selector", "kadmin", nil, []map[string]string{{"env": "secret"}, {"env": "staging"}}, []string{"secret", "staging"}},
		{"every label of a selector", "kadmin", nil, []map[string]string{{"env": "prod", "team": "a"}}, nil},
		{"names and labels together", "kdev", []string{"staging"}, []map[string]string{{"env": "prod"}}, []string{"prod", "staging"}},
		{"a name twice", "kdev", []string{"prod", "prod"}, nil, []string{"prod"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			creds, _, err := e.kubeJoin(t, tc.bot, tc.clusters, tc.labels...)
			if err != nil {
				t.Fatalf("Join: %v", err)
			}
			if got := clusterNames(creds); !slices.Equal(got, tc.want) {
				t.Errorf("clusters = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestKubernetesUserAndGroups(t *testing.T) {
	e := kubeEnv(t)
	creds, _, err := e.kubeJoin(t, "kdev", []string{"prod", "staging"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cluster string
		user    string
		groups  []string
	}{
		// Both kdev and kread allow prod: the union of their groups.
		{"prod", "bot:kdev", []string{"dev", "readers"}},
		{"staging", "bot:kdev", []string{"dev"}},
	} {
		i := slices.IndexFunc(creds.Kubernetes, func(kc api.KubernetesCredential) bool { return kc.Cluster == tc.cluster })
		if i < 0 {
			t.Fatalf("no credential for %s", tc.cluster)
		}
		c := e.kubeCert(t, creds.Kubernetes[i])
		if c.Subject.CommonName != tc.user || !slices.Equal(slices.Sorted(slices.Values(c.Subject.Organization)), tc.groups) {
			t.Errorf("%s: subject %v, want CN=%s O=%v", tc.cluster, c.Subject, tc.user, tc.groups)
		}
	}
}

func TestKubernetesRefusals(t *testing.T) {
	e := kubeEnv(t)
	goodKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	good := csrPEM(t, goodKey)
	for _, tc := range []struct {
		name   string
		bot    string
		req    api.KubernetesRequest
		code   string
		status int
		msg    string
	}{
		{"unknown cluster", "kadmin", api.KubernetesRequest{CSR: good, Clusters: []string{"nope"}},
			api.CodeKubernetesClusterNotAllowed, http.StatusForbidden, `no Kubernetes cluster named "nope"`},
		{"cluster not allowed", "kdev", api.KubernetesRequest{CSR: good, Clusters: []string{"prod", "secret"}},
			api.CodeKubernetesClusterNotAllowed, http.StatusForbidden, "the roles of bot kdev do not allow Kubernetes cluster secret"},
		{"two users", "twousers", api.KubernetesRequest{CSR: good, Clusters: []string{"prod"}},
			api.CodeKubernetesClusterNotAllowed, http.StatusForbidden, "give Kubernetes cluster prod several users (alice, bob)"},
		{"two users through a selector", "twousers", api.KubernetesRequest{CSR: good, Labels: []map[string]string{{"*": "*"}}},
			api.CodeKubernetesClusterNotAllowed, http.StatusForbidden, "several users"},
		{"bad CSR", "kadmin", api.KubernetesRequest{CSR: "junk", Clusters: []string{"prod"}},
			api.CodeBadRequest, http.StatusBadRequest, "kubernetes.csr"},
		{"nothing asked", "kadmin", api.KubernetesRequest{CSR: good},
			api.CodeBadRequest, http.StatusBadRequest, "name clusters or give label selectors"},
		{"empty selector", "kadmin", api.KubernetesRequest{CSR: good, Labels: []map[string]string{{}}},
			api.CodeBadRequest, http.StatusBadRequest, "kubernetes.labels[0] is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := e.token(t, tc.bot)
			offset := e.audit.Len()
			req := tc.req
			_, err := e.auth.Join(context.Background(), api.JoinRequest{
				JoinMethod: api.JoinMethodToken, Token: tok, Keys: newKeys(t).pub, TTLSeconds: 600, Kubernetes: &req,
			}, nil, "192.0.2.1:1234")
			e.expectDenied(t, err, offset, audit.EventJoin, tc.code, tc.status)
			if err != nil && !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error = %v, want it to say %q", err, tc.msg)
			}
			if reason := e.auditLines(t, offset)[0]["reason"]; !strings.Contains(reason.(string), tc.msg) {
				t.Errorf("audited reason %q, want it to say %q", reason, tc.msg)
			}
			// A refused join leaves the token usable.
			if _, err := e.auth.Join(context.Background(), api.JoinRequest{
				JoinMethod: api.JoinMethodToken, Token: tok, Keys: newKeys(t).pub, TTLSeconds: 600,
			}, nil, "192.0.2.1:1234"); err != nil {
				t.Errorf("join after the refusal: %v", err)
			}
		})
	}
}

// TestRenewKubernetes checks that renewal resolves the selectors again, so
// that a cluster labelled since appears, and that a refused renewal does
// not move the generation.
func TestRenewKubernetes(t *testing.T) {
	e := kubeEnv(t)
	ctx := context.Background()
	creds, _, err := e.kubeJoin(t, "kdev", nil, map[string]string{"*": "*"})
	if err != nil {
		t.Fatal(err)
	}
	if got := clusterNames(creds); !slices.Equal(got, []string{"prod", "staging"}) {
		t.Fatalf("clusters at join = %v", got)
	}
	id := ca.Identity{Bot: "kdev", Instance: creds.Instance, Generation: 1}
	e.auth.SetResources(loadResources(t, kubeResourcesYAML(cluster("canary", "{env: staging, tier: canary}"))))
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	req := api.RenewRequest{Keys: newKeys(t).pub, TTLSeconds: 600,
		Kubernetes: &api.KubernetesRequest{CSR: csrPEM(t, key), Labels: []map[string]string{{"*": "*"}}}}
	got, err := e.auth.Renew(ctx, id, req, "192.0.2.1:1234")
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if names := clusterNames(got); !slices.Equal(names, []string{"canary", "prod", "staging"}) {
		t.Errorf("clusters at renewal = %v, want the new canary too", names)
	}
	id.Generation = 2

	offset := e.audit.Len()
	req.Kubernetes = &api.KubernetesRequest{CSR: csrPEM(t, key), Clusters: []string{"secret"}}
	_, err = e.auth.Renew(ctx, id, req, "192.0.2.1:1234")
	e.expectDenied(t, err, offset, audit.EventRenew, api.CodeKubernetesClusterNotAllowed, http.StatusForbidden)
	if in, err := e.store.Instance(ctx, creds.Instance); err != nil || in.Generation != 2 {
		t.Errorf("instance after a refused renewal = %+v, %v; want generation 2", in, err)
	}
}

// withKubeResources returns set with role's kubernetes_resources set to res.
func withKubeResources(t *testing.T, set *resource.Set, role string, res ...resource.KubernetesResource) *resource.Set {
	t.Helper()
	var all []resource.Resource
	for _, r := range set.Roles() {
		if r.Name == role {
			r.KubernetesResources = res
		}
		all = append(all, r)
	}
	for _, b := range set.Bots() {
		all = append(all, b)
	}
	for _, c := range set.KubeClusters() {
		all = append(all, c)
	}
	for _, tok := range set.Tokens() {
		all = append(all, tok)
	}
	out, err := resource.NewSet(all...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestKubernetesRoleGroups checks that a certificate carries the group of
// each role with kubernetes_resources that allows its cluster, which the
// RBAC objects of mwi-issuer kube rbac are bound to, and no other role's.
func TestKubernetesRoleGroups(t *testing.T) {
	e := newEnv(t)
	pods := resource.KubernetesResource{Kind: "pod", Namespace: "default", Name: "*", Verbs: []string{"get", "list"}}
	e.auth.SetResources(withKubeResources(t, loadResources(t, kubeResourcesYAML("")), "kread", pods))
	creds, _, err := e.kubeJoin(t, "kdev", []string{"prod", "staging"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cluster string
		groups  []string
	}{
		// kread, with kubernetes_resources, allows prod only; kdev has none.
		{"prod", []string{"dev", "mwi:role:kread", "readers"}},
		{"staging", []string{"dev"}},
	} {
		i := slices.IndexFunc(creds.Kubernetes, func(kc api.KubernetesCredential) bool { return kc.Cluster == tc.cluster })
		if i < 0 {
			t.Fatalf("no credential for %s", tc.cluster)
		}
		c := e.kubeCert(t, creds.Kubernetes[i])
		if got := slices.Sorted(slices.Values(c.Subject.Organization)); !slices.Equal(got, tc.groups) {
			t.Errorf("%s: groups %v, want %v", tc.cluster, got, tc.groups)
		}
	}
}
