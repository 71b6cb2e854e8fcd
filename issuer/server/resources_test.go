package server

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
)

// resourceServer returns a server over a real authority whose resource
// directory holds botsYAML (role deploy, bot ci), and a client of its
// admin socket.
func resourceServer(t *testing.T) (*Server, *http.Client, *lockedWriter) {
	t.Helper()
	auth, auditLog := testAuthority(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "base.yaml"), []byte(botsYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &Server{cfg: Config{ResourcesDir: dir}, log: discardLog(), auth: auth}
	d, err := loadResources(s.cfg, s.log)
	if err != nil {
		t.Fatal(err)
	}
	set, err := s.loadAll(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	s.swap(d, set, "start")
	return s, unixServer(t, adminRoutes(auth, s, auth.Audit, discardLog())), auditLog
}

// call sends v (none if nil) with method to the admin client c and
// decodes the answer into out, if not nil. path is a URL if it begins with
// https://, and a path on the admin socket otherwise.
func call(t *testing.T, c *http.Client, method, path string, v, out any) (int, string) {
	t.Helper()
	var body io.Reader
	if v != nil {
		data, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		body = strings.NewReader(string(data))
	}
	u := path
	if !strings.HasPrefix(u, "https://") {
		u = "http://mwi" + path
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	if out != nil && res.StatusCode/100 == 2 {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, data)
		}
	}
	return res.StatusCode, string(data)
}

const (
	opsRole = "# the ops role\nkind: role\nversion: v1\nmetadata:\n  name: ops\nspec:\n  allow:\n    logins: [ops]\n"
	opsBot  = "kind: bot\nversion: v1\nmetadata: {name: opsbot}\nspec:\n  roles: [ops, deploy]   # deploy is the directory's\n"
)

func TestResourceRoutes(t *testing.T) {
	s, c, auditLog := resourceServer(t)
	create := func(file, data string, force bool) (int, string) {
		return call(t, c, http.MethodPost, "/admin/v1/resources", api.CreateResourcesRequest{File: file, Data: data, Force: force}, nil)
	}

	// A role and a bot naming it and a role of the directory.
	if status, body := create("ops.yaml", opsRole+"---\n"+opsBot, false); status != http.StatusOK {
		t.Fatalf("create: %d %s", status, body)
	}
	if b, ok := s.auth.Resources().Bot("opsbot"); !ok || !slices.Equal(b.Roles, []string{"ops", "deploy"}) {
		t.Fatalf("running bot opsbot = %+v, %v", b, ok)
	}
	var got api.Resources
	if status, body := call(t, c, http.MethodGet, "/admin/v1/resources?kind=role&name=ops", nil, &got); status != http.StatusOK {
		t.Fatalf("get: %d %s", status, body)
	}
	if len(got.Resources) != 1 || got.Resources[0].Source != opsRole || got.Resources[0].Origin != api.OriginStore {
		t.Fatalf("get role/ops = %+v; want the document as written", got)
	}
	// Directory documents are listed too, with their file and line.
	call(t, c, http.MethodGet, "/admin/v1/resources?kind=role", nil, &got)
	if len(got.Resources) != 2 || got.Resources[0].Name != "deploy" ||
		got.Resources[0].Origin != filepath.Join(s.cfg.ResourcesDir, "base.yaml")+":1" || !strings.HasPrefix(got.Resources[0].Source, "kind: role\n") {
		t.Fatalf("get role = %+v", got)
	}

	before := s.auth.Resources()
	refusals := []struct {
		name, file, data string
		force            bool
		want             []string
	}{
		{"a name of the directory", "x.yaml", "kind: role\nversion: v1\nmetadata: {name: new}\nspec: {}\n---\n" +
			"kind: role\nversion: v1\nmetadata: {name: deploy}\nspec: {}\n", true,
			[]string{"x.yaml:6: role \"deploy\" is defined in " + filepath.Join(s.cfg.ResourcesDir, "base.yaml") + ":1", "edit that file"}},
		{"an existing name without force", "y.yaml", opsRole, false, []string{"y.yaml:1: role \"ops\" exists already; use --force"}},
		{"an unknown kind", "z.yaml", opsRole + "---\n\nkind: robot\n", true, []string{"z.yaml:11: unknown kind \"robot\""}},
		{"an unknown role", "b.yaml", "kind: bot\nversion: v1\nmetadata: {name: b}\nspec: {roles: [nope]}\n", false,
			[]string{"b.yaml:4: bot \"b\" references unknown role \"nope\""}},
		{"a name twice", "d.yaml", "kind: role\nversion: v1\nmetadata: {name: n}\nspec: {}\n---\nkind: role\nversion: v1\nmetadata: {name: n}\nspec: {}\n", false,
			[]string{"d.yaml:8: duplicate role \"n\""}},
		{"nothing", "e.yaml", "# empty\n", false, []string{"no resource documents"}},
		{"a CA file", "k.yaml", "kind: kube_cluster\nversion: v1\nmetadata: {name: k}\nspec:\n  server: https://127.0.0.1:6443\n" +
			"  certificate_authority_file: " + filepath.Join(s.cfg.ResourcesDir, "base.yaml") + "\n", false,
			[]string{"k.yaml:1: kube_cluster: spec.certificate_authority_file cannot be stored"}},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			status, body := create(tc.file, tc.data, tc.force)
			if status != http.StatusBadRequest {
				t.Fatalf("status %d, body %s; want 400", status, body)
			}
			for _, w := range tc.want {
				if !strings.Contains(body, strings.ReplaceAll(w, `"`, `\"`)) {
					t.Errorf("body %s does not contain %q", body, w)
				}
			}
			if s.auth.Resources() != before {
				t.Error("a refused create changed the running set")
			}
		})
	}
	if _, ok := s.auth.Resources().Role("new"); ok {
		t.Error("a refused create stored part of its file")
	}

	// Replacing with --force; get's output comes back unchanged.
	changed := strings.Replace(opsRole, "[ops]", "[ops, backup]", 1)
	if status, body := create("ops.yaml", changed, true); status != http.StatusOK {
		t.Fatalf("create --force: %d %s", status, body)
	}
	call(t, c, http.MethodGet, "/admin/v1/resources?kind=role&name=ops", nil, &got)
	if got.Resources[0].Source != changed {
		t.Fatalf("after --force, get = %q; want %q", got.Resources[0].Source, changed)
	}

	// bots add and update refuse the directory's bot and an existing name.
	if status, body := call(t, c, http.MethodPost, "/admin/v1/bots/ci/update", api.UpdateBotRequest{AddRoles: []string{"ops"}}, nil); status/100 != 4 ||
		!strings.Contains(body, "base.yaml:7, in the resource directory; edit that file") {
		t.Errorf("bots update of the directory's bot: %d %s", status, body)
	}
	if status, body := call(t, c, http.MethodPost, "/admin/v1/bots", api.AddBotRequest{Name: "opsbot", Roles: []string{"ops"}}, nil); status != http.StatusConflict ||
		!strings.Contains(body, "exists already") {
		t.Errorf("bots add of an existing bot: %d %s", status, body)
	}

	// Removal: refused while a bot names the role, or for the directory's.
	if status, body := call(t, c, http.MethodDelete, "/admin/v1/resources/role/ops", nil, nil); status != http.StatusBadRequest ||
		!strings.Contains(body, `store:bot/opsbot:5: bot \"opsbot\" references unknown role \"ops\"`) {
		t.Errorf("rm of a role a bot names: %d %s", status, body)
	}
	if status, body := call(t, c, http.MethodDelete, "/admin/v1/resources/role/deploy", nil, nil); status/100 != 4 || !strings.Contains(body, "edit that file") {
		t.Errorf("rm of a directory role: %d %s", status, body)
	}
	if status, body := call(t, c, http.MethodDelete, "/admin/v1/resources/role/ghost", nil, nil); status != http.StatusNotFound {
		t.Errorf("rm of an unknown role: %d %s", status, body)
	}
	if status, body := call(t, c, http.MethodDelete, "/admin/v1/bots/opsbot", nil, nil); status != http.StatusNoContent {
		t.Fatalf("bots rm: %d %s", status, body)
	}
	if status, body := call(t, c, http.MethodDelete, "/admin/v1/resources/role/ops", nil, nil); status != http.StatusNoContent {
		t.Fatalf("rm role/ops: %d %s", status, body)
	}
	if _, ok := s.auth.Resources().Role("ops"); ok {
		t.Error("role ops still runs after rm")
	}

	// A reload of the directory keeps the stored documents.
	if status, body := create("ops.yaml", opsRole, false); status != http.StatusOK {
		t.Fatalf("create: %d %s", status, body)
	}
	if err := s.reload(0); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.auth.Resources().Role("ops"); !ok {
		t.Error("a directory reload dropped the stored role")
	}
	// A directory file that now defines a stored name is refused, and
	// the running set kept.
	running := s.auth.Resources()
	if err := os.WriteFile(filepath.Join(s.cfg.ResourcesDir, "dup.yaml"), []byte(opsRole), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.reload(0); err == nil || !strings.Contains(err.Error(), "store:role/ops:5: duplicate role \"ops\"") {
		t.Errorf("reload with a directory file that defines a stored name: %v", err)
	}
	if s.auth.Resources() != running {
		t.Error("a refused reload changed the running set")
	}

	log := auditLog.String()
	for _, w := range []string{`"event":"resource.create"`, `"event":"resource.delete"`, `"kind":"role"`, `"name":"ops"`, `"uid":`} {
		if !strings.Contains(log, w) {
			t.Errorf("audit log lacks %s:\n%s", w, log)
		}
	}
	if !strings.Contains(log, `"outcome":"denied"`) {
		t.Errorf("refusals were not audited:\n%s", log)
	}
}

// TestBotUpdateTakesEffectOnRenewal adds a role to a bot through the admin
// API; the bot's next renewal, with no restart, carries the new login.
func TestBotUpdateTakesEffectOnRenewal(t *testing.T) {
	s, c, _ := resourceServer(t)
	srv := tlsServer(t, s.auth.CA, publicRoutes(s.auth, nil, s.auth.Audit, discardLog()))
	role := "kind: role\nversion: v1\nmetadata: {name: backup}\nspec:\n  allow: {logins: [backup]}\n"
	if status, body := call(t, c, http.MethodPost, "/admin/v1/resources", api.CreateResourcesRequest{File: "r.yaml", Data: role}, nil); status != http.StatusOK {
		t.Fatalf("create: %d %s", status, body)
	}
	if status, body := call(t, c, http.MethodPost, "/admin/v1/bots", api.AddBotRequest{Name: "nightly", Roles: []string{"deploy"}}, nil); status != http.StatusNoContent {
		t.Fatalf("bots add: %d %s", status, body)
	}
	var tok api.CreateTokenResponse
	if status, body := call(t, c, http.MethodPost, "/admin/v1/tokens", api.CreateTokenRequest{Bot: "nightly", TTLSeconds: 600}, &tok); status != http.StatusCreated {
		t.Fatalf("token: %d %s", status, body)
	}

	keys := func() (api.PublicKeys, crypto.Signer) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
		if err != nil {
			t.Fatal(err)
		}
		_, sshKey, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		sshPub, err := ssh.NewPublicKey(sshKey.Public())
		if err != nil {
			t.Fatal(err)
		}
		return api.PublicKeys{
			IdentityCSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})),
			SSH:         string(ssh.MarshalAuthorizedKey(sshPub)),
		}, key
	}
	logins := func(res *http.Response, body []byte, err error) (api.Credentials, []string) {
		t.Helper()
		if err != nil || res.StatusCode != http.StatusOK {
			t.Fatalf("status %v, body %s, %v", res.StatusCode, body, err)
		}
		var creds api.Credentials
		if err := json.Unmarshal(body, &creds); err != nil {
			t.Fatal(err)
		}
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(creds.SSHCertificate))
		if err != nil {
			t.Fatal(err)
		}
		return creds, pub.(*ssh.Certificate).ValidPrincipals
	}

	pub, key := keys()
	creds, got := logins(post(t, tlsClient(t, s.auth.CA), srv.URL+"/v1/join",
		api.JoinRequest{JoinMethod: api.JoinMethodToken, Token: tok.Token, Keys: pub, TTLSeconds: 600}))
	if !slices.Equal(got, []string{"deploy"}) {
		t.Fatalf("logins after join = %q; want [deploy]", got)
	}

	if status, body := call(t, c, http.MethodPost, "/admin/v1/bots/nightly/update", api.UpdateBotRequest{AddRoles: []string{"backup"}}, nil); status != http.StatusNoContent {
		t.Fatalf("bots update: %d %s", status, body)
	}
	block, _ := pem.Decode([]byte(creds.IdentityCertificate))
	cert := tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: key}
	pub2, _ := keys()
	_, got = logins(post(t, tlsClient(t, s.auth.CA, cert), srv.URL+"/v1/renew", api.RenewRequest{Keys: pub2, TTLSeconds: 600}))
	if !slices.Equal(got, []string{"backup", "deploy"}) {
		t.Fatalf("logins after bots update and renewal = %q; want [backup deploy]", got)
	}

	// The listings show the bot, its instance and its token.
	var bots api.Bots
	call(t, c, http.MethodGet, "/admin/v1/bots", nil, &bots)
	i := slices.IndexFunc(bots.Bots, func(b api.BotInfo) bool { return b.Name == "nightly" })
	if i < 0 || !slices.Equal(bots.Bots[i].Roles, []string{"deploy", "backup"}) || bots.Bots[i].Instances != 1 || bots.Bots[i].Origin != api.OriginStore {
		t.Errorf("bots = %+v", bots)
	}
	var ins api.Instances
	call(t, c, http.MethodGet, "/admin/v1/instances?bot=nightly", nil, &ins)
	if len(ins.Instances) != 1 || ins.Instances[0].Generation != 2 || ins.Instances[0].JoinMethod != api.JoinMethodToken || ins.Instances[0].Renewed.IsZero() {
		t.Errorf("instances = %+v", ins)
	}
	var one api.InstanceInfo
	if status, body := call(t, c, http.MethodGet, "/admin/v1/instances/"+creds.Instance, nil, &one); status != http.StatusOK || one.ID != creds.Instance {
		t.Errorf("instance show: %d %s", status, body)
	}
	var toks api.Tokens
	call(t, c, http.MethodGet, "/admin/v1/tokens", nil, &toks)
	if len(toks.Tokens) != 1 || !toks.Tokens[0].Used || toks.Tokens[0].Bot != "nightly" || strings.Contains(toks.Tokens[0].ID, tok.Token) {
		t.Errorf("tokens = %+v", toks)
	}
	if status, body := call(t, c, http.MethodDelete, "/admin/v1/tokens/"+toks.Tokens[0].ID, nil, nil); status != http.StatusNoContent {
		t.Errorf("tokens rm: %d %s", status, body)
	}
	// The update wrote the bot's document anew, in the v1 format.
	var docs api.Resources
	call(t, c, http.MethodGet, "/admin/v1/resources?kind=bot&name=nightly", nil, &docs)
	want := "kind: bot\nversion: v1\nmetadata:\n  name: nightly\nspec:\n  roles:\n    - deploy\n    - backup\n"
	if len(docs.Resources) != 1 || docs.Resources[0].Source != want {
		t.Errorf("bot document = %+v; want %q", docs, want)
	}
}
