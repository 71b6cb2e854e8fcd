package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mwi-project/mwi/api"
)

// testCAPEM returns a self-signed CA certificate in PEM, for a
// kube_cluster's certificate_authority_data.
func testCAPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test kube CA"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// teleportFile returns a file of Teleport's guides, as saved verbatim in
// issuer/resource/testdata/teleport.
func teleportFile(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "issuer", "resource", "testdata", "teleport", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// everyKind returns a file with a document of every kind in every format:
// roles v1 and Teleport v7 (the guide's Kubernetes role, whose
// kubernetes_resources restrict nothing because it gives system:masters),
// bots, tokens v1 and Teleport v2 (the guide's), and a kube_cluster its
// role selects.
func everyKind(t *testing.T) string {
	return strings.Join([]string{
		`# written by hand
kind: role
version: v1
metadata: {name: ops}
spec:
  allow:
    logins: [ops]
    node_labels: {'*': '*'}
`,
		teleportFile(t, "github_bot_k8s_role.yaml"),
		"\n" + teleportFile(t, "github_bot.yaml"),
		"\n" + teleportFile(t, "github_bot_join_token.yaml"),
		`
kind: bot
version: v1
metadata: {name: ops}
spec: {roles: [ops]}
---
kind: token
version: v1
metadata: {name: ops-ci}
spec:
  join_method: github
  bot_name: ops
  github:
    allow:
      - repository: example-org/ops
        ref: refs/heads/main
---
kind: kube_cluster
version: v1
metadata:
  name: guide
  labels: {env: my-env-label}
spec:
  server: https://127.0.0.1:6443
  certificate_authority_data: ` + base64.StdEncoding.EncodeToString(testCAPEM(t)) + "\n",
	}, "\n---\n")
}

// TestGetRoundTripsEveryKind checks that get KIND/NAME, given back to
// create -f --force, leaves get's output unchanged, for every kind in
// each format it is written in, warnings included.
func TestGetRoundTripsEveryKind(t *testing.T) {
	state := runIssuer(t, "")
	must := func(args ...string) string {
		t.Helper()
		code, out, errs := mwiIssuer(append(args, "--state", state)...)
		if code != 0 {
			t.Fatalf("mwi-issuer %s: exit %d, %s", strings.Join(args, " "), code, errs)
		}
		return out
	}
	file := filepath.Join(t.TempDir(), "all.yaml")
	if err := os.WriteFile(file, []byte(everyKind(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	must("create", "-f", file)
	all := must("get", "all")
	for _, ref := range []string{"role/ops", "role/github-bot", "bot/github-bot", "bot/ops", "token/ops-ci", "token/github-bot", "kube_cluster/guide"} {
		t.Run(ref, func(t *testing.T) {
			before := must("get", ref)
			again := filepath.Join(t.TempDir(), "again.yaml")
			if err := os.WriteFile(again, []byte(before), 0o600); err != nil {
				t.Fatal(err)
			}
			kind, name, _ := strings.Cut(ref, "/")
			if out := must("create", "-f", again, "--force"); out != kind+" \""+name+"\" replaced\n" {
				t.Errorf("create -f --force: %q", out)
			}
			if after := must("get", ref); after != before {
				t.Errorf("get after the round trip:\n%s\nwas\n%s", after, before)
			}
		})
	}
	if after := must("get", "all"); after != all {
		t.Errorf("get all after the round trips:\n%s\nwas\n%s", after, all)
	}
	// All of get all's output, given back at once, changes nothing either.
	again := filepath.Join(t.TempDir(), "all-again.yaml")
	if err := os.WriteFile(again, []byte(all), 0o600); err != nil {
		t.Fatal(err)
	}
	must("create", "-f", again, "--force")
	if after := must("get", "all"); after != all {
		t.Errorf("get all after create -f --force of itself:\n%s\nwas\n%s", after, all)
	}
}

// TestGetWarnings checks that get says, before the documents concerned,
// that the guide's Kubernetes role's kubernetes_resources restrict nothing
// (it puts its certificates in system:masters), as YAML comments, and on
// standard error with --format json.
func TestGetWarnings(t *testing.T) {
	state := runIssuer(t, "")
	file := filepath.Join(t.TempDir(), "all.yaml")
	if err := os.WriteFile(file, []byte(everyKind(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := mwiIssuer("create", "-f", file, "--state", state); code != 0 {
		t.Fatalf("create -f: %s", errs)
	}
	const warning = "kubernetes_resources of role github-bot restrict nothing on cluster guide: its certificates are in system:masters, which Kubernetes never restricts"
	tests := []struct {
		ref  string
		warn bool
	}{
		{"role/github-bot", true},
		{"bot/github-bot", true},
		{"kube_cluster/guide", true},
		{"role/ops", false},
		{"bot/ops", false},
		{"token/github-bot", false},
	}
	for _, tt := range tests {
		code, out, errs := mwiIssuer("get", tt.ref, "--state", state)
		if code != 0 {
			t.Fatalf("get %s: %s", tt.ref, errs)
		}
		want := api.WarningComment + warning + "\nkind: "
		if got := strings.HasPrefix(out, want); got != tt.warn {
			t.Errorf("get %s = %q; starts with the warning %v, want %v", tt.ref, out, got, tt.warn)
		}
		code, out, errs = mwiIssuer("get", tt.ref, "--format", "json", "--state", state)
		var docs []map[string]any
		if code != 0 || json.Unmarshal([]byte(out), &docs) != nil || len(docs) != 1 {
			t.Fatalf("get %s --format json: exit %d, %q, %s", tt.ref, code, out, errs)
		}
		if got := strings.Contains(errs, "warning: "+tt.ref+": "+warning+"\n"); got != tt.warn {
			t.Errorf("get %s --format json: stderr %q; has the warning %v, want %v", tt.ref, errs, got, tt.warn)
		}
	}
	if code, out, _ := mwiIssuer("get", "all", "--state", state); code != 0 || strings.Count(out, api.WarningComment) != 3 {
		t.Errorf("get all: %d warnings, want 3 (role, bot, cluster):\n%s", strings.Count(out, api.WarningComment), out)
	}
}
