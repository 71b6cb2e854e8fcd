package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/httpjson"
)

func TestMain(m *testing.M) {
	time.Local = time.UTC // the outputs show local times
	timeNow = func() time.Time { return now }
	os.Unsetenv("MWI_SOCKET")
	os.Exit(m.Run())
}

// fakeMWID serves routes ("METHOD /path" → handler) on a Unix socket in a
// temporary directory, as mwid does, and records the last request.
type fakeMWID struct {
	sock string
	mu   sync.Mutex
	last *http.Request
}

func serve(t *testing.T, routes map[string]http.Handler) *fakeMWID {
	t.Helper()
	f := &fakeMWID{sock: socketPath(t)}
	mux := http.NewServeMux()
	for pattern, h := range routes {
		mux.Handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			f.mu.Lock()
			f.last = r
			f.mu.Unlock()
			h.ServeHTTP(w, r)
		}))
	}
	l, err := net.Listen("unix", f.sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return f
}

func (f *fakeMWID) lastRequest() *http.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last
}

func socketPath(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if len(dir) > 90 {
		var err error
		if dir, err = os.MkdirTemp("/tmp", "mwictl"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
	}
	return filepath.Join(dir, "api.sock")
}

func answer(status int, v any) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { httpjson.Write(w, status, v) })
}

func text(s string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, s)
	})
}

func apiError(status int, code, msg string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpjson.Write(w, status, api.ErrorBody{Error: api.Error{Code: code, Message: msg}})
	})
}

// mwictl runs mwictl with args against sock and returns its exit code and
// outputs.
func mwictl(sock string, args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(append([]string{"--socket", sock}, args...), &o, &e)
	return code, o.String(), e.String()
}

// want checks an exit code, and that stdout contains every string of
// stdouts. A failure must say why on exactly one line of stderr, containing
// errLine; success must leave stderr empty.
func want(t *testing.T, code int, stdout, stderr string, wantCode int, errLine string, stdouts ...string) {
	t.Helper()
	if code != wantCode {
		t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, wantCode, stdout, stderr)
	}
	for _, s := range stdouts {
		if !strings.Contains(squeeze(stdout), squeeze(s)) {
			t.Errorf("stdout does not contain %q:\n%s", s, stdout)
		}
	}
	switch {
	case wantCode == 0 && stderr != "":
		t.Errorf("stderr not empty on success:\n%s", stderr)
	case wantCode == 1 && (strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "mwictl: ")):
		t.Errorf("stderr is not one line starting with mwictl:\n%s", stderr)
	}
	if errLine != "" && !strings.Contains(stderr, errLine) {
		t.Errorf("stderr does not contain %q:\n%s", errLine, stderr)
	}
}

// squeeze collapses runs of spaces, so that checks need not know how
// tabwriter aligned a table.
func squeeze(s string) string {
	for strings.Contains(s, "  ") {
		s = strings.ReplaceAll(s, "  ", " ")
	}
	return s
}

var (
	now      = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	expires  = now.Add(8 * time.Hour)
	loadedAt = now.Add(-time.Hour)
	failedAt = now.Add(-time.Minute)

	readyStatus = api.Status{
		Joined: true, State: "ready", Bot: "web", Instance: "i-1", Generation: 3,
		Issuer: "https://issuer.example:8443",
		Credentials: []api.Credential{
			{Kind: "identity", ValidAfter: now, Expires: expires},
			{Kind: "ssh", Principals: []string{"deploy", "root"}, ValidAfter: now, Expires: expires},
		},
		Outputs: []api.Output{
			{Type: "ssh_host", Path: "/etc/ssh/ssh_host_ed25519_key-cert.pub", LastWrite: &now},
			{Type: "ssh_host", Path: "/etc/ssh/ssh_host_rsa_key-cert.pub", LastError: "open: permission denied", LastErrorAt: &failedAt},
		},
		Config: api.ConfigStatus{
			Path: "/etc/mwi/mwid.yaml", Revision: "3f2a9c1", LoadedAt: loadedAt,
			LastReloadError: "/etc/mwi/mwid.yaml:12: unknown field \"ttl\"\n/etc/mwi/mwid.yaml:14: bad login", LastReloadAt: &failedAt,
		},
	}
	joiningStatus = api.Status{
		State: "joining", Issuer: "https://issuer.example:8443",
		LastError: "join refused: token_used", LastErrorAt: &failedAt,
		Config: api.ConfigStatus{Path: "/etc/mwi/mwid.yaml", Revision: "3f2a9c1", LoadedAt: loadedAt},
	}
	refusedStatus = api.Status{
		Joined: true, State: "refused", Bot: "web", Instance: "i-1", Generation: 3,
		Issuer:    "https://issuer.example:8443",
		LastError: "renew: issuer refused: bot web is locked: decommissioned (bot_locked)", LastErrorAt: &failedAt,
		Refusal: &api.Refusal{Code: api.CodeBotLocked, Message: "bot web is locked: decommissioned",
			Action: "an operator must lift the bot's lock on the issuer, then run mwictl renew"},
		Config: api.ConfigStatus{Path: "/etc/mwi/mwid.yaml", Revision: "3f2a9c1", LoadedAt: loadedAt},
	}
	theIdentity = api.Identity{
		Bot: "web", Instance: "i-1", Certificate: "ssh-ed25519-cert-v01@openssh.com AAAAC3Nz web@i-1",
		KeyID: "web/i-1/3", Serial: 42, Principals: []string{"deploy", "root"}, ValidAfter: now, ValidBefore: expires,
	}
)

func TestUsage(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		code     int
		stdout   string
		stderr   string
		noStdout bool
	}{
		// The help goes to standard output and exits 0, however asked for;
		// a wrong command line names the mistake and the --help to read.
		{"NoArgs", nil, 2, "", "mwictl: missing command; see mwictl --help", true},
		{"Help", []string{"help"}, 0, "Usage:\n  mwictl [command]", "", false},
		{"DashH", []string{"-h"}, 0, "Usage:\n  mwictl [command]", "", false},
		{"Unknown", []string{"frobnicate"}, 2, "", `unknown command "frobnicate"`, true},
		{"BadGlobalFlag", []string{"--nope", "status"}, 2, "", "mwictl: unknown flag: --nope; see mwictl --help", true},
		{"BadFlag", []string{"status", "--yaml"}, 2, "", "mwictl: unknown flag: --yaml; see mwictl status --help", true},
		{"ExtraArg", []string{"known-hosts", "github.com"}, 2, "", `unexpected argument "github.com"`, true},
		{"JSONAndText", []string{"identity", "--json", "--text"}, 2, "", "--json and --text exclude each other", true},
		{"CommandHelp", []string{"ssh-config", "-h"}, 0, "-o, --output FILE", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var o, e bytes.Buffer
			code := run(tt.args, &o, &e)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tt.code, e.String())
			}
			if !strings.Contains(o.String(), tt.stdout) || (tt.noStdout && o.Len() > 0) {
				t.Errorf("stdout:\n%s\nwant it to contain %q", o.String(), tt.stdout)
			}
			if !strings.Contains(e.String(), tt.stderr) {
				t.Errorf("stderr:\n%s\nwant it to contain %q", e.String(), tt.stderr)
			}
		})
	}
	// Every command is in the usage.
	var o bytes.Buffer
	run([]string{"help"}, &o, io.Discard)
	for _, c := range commands {
		if !strings.Contains(o.String(), "  "+c.name) {
			t.Errorf("usage does not list %s:\n%s", c.name, o.String())
		}
	}
}

func TestStatus(t *testing.T) {
	ready := serve(t, map[string]http.Handler{"GET /v1/status": answer(200, readyStatus)})
	joining := serve(t, map[string]http.Handler{"GET /v1/status": answer(200, joiningStatus)})

	t.Run("Ready", func(t *testing.T) {
		code, out, errs := mwictl(ready.sock, "status")
		want(t, code, out, errs, 0, "",
			"state:         ready\n",
			"bot:           web (instance i-1, generation 3)\n",
			"ssh:           principals deploy, root; expires "+expires.Format(time.RFC3339)+" (in 8h0m0s)\n",
			"output ssh_host:  ", // tabwriter aligns on the longest label
			"/etc/ssh/ssh_host_ed25519_key-cert.pub, written "+now.Format(time.RFC3339),
			"/etc/ssh/ssh_host_rsa_key-cert.pub, not written yet\n",
			"error at "+failedAt.Format(time.RFC3339)+" (1m0s ago): open: permission denied\n",
			"config:           /etc/mwi/mwid.yaml, revision 3f2a9c1, loaded "+loadedAt.Format(time.RFC3339)+" (1h0m0s ago)\n",
			"reload error: at "+failedAt.Format(time.RFC3339)+` (1m0s ago): /etc/mwi/mwid.yaml:12: unknown field "ttl"; /etc/mwi/mwid.yaml:14: bad login; still using revision 3f2a9c1`+"\n",
		)
	})
	t.Run("Joining", func(t *testing.T) {
		code, out, errs := mwictl(joining.sock, "status")
		want(t, code, out, errs, 1, "mwictl: mwid is joining: join refused: token_used\n",
			"state: joining\n", "last error: at "+failedAt.Format(time.RFC3339)+" (1m0s ago): join refused: token_used\n")
		if strings.Contains(out, "bot:") {
			t.Errorf("status of a daemon that has not joined shows a bot:\n%s", out)
		}
	})
	t.Run("Refused", func(t *testing.T) {
		refused := serve(t, map[string]http.Handler{"GET /v1/status": answer(200, refusedStatus)})
		code, out, errs := mwictl(refused.sock, "status")
		want(t, code, out, errs, 1,
			"mwictl: mwid is refused by the issuer (bot_locked): an operator must lift the bot's lock on the issuer, then run mwictl renew\n",
			"state:         refused\n",
			"refused:       bot_locked: bot web is locked: decommissioned\n",
			"to do:         an operator must lift the bot's lock on the issuer, then run mwictl renew\n")
	})
	t.Run("JSON", func(t *testing.T) {
		// --json exits 0 whatever the state: scripts read the state.
		code, out, errs := mwictl(joining.sock, "status", "--json")
		want(t, code, out, errs, 0, "")
		var s api.Status
		if err := json.Unmarshal([]byte(out), &s); err != nil || s.State != "joining" || s.Config.Revision != "3f2a9c1" {
			t.Errorf("status --json: %v, %+v", err, s)
		}
	})
}

func TestIdentity(t *testing.T) {
	f := serve(t, map[string]http.Handler{"GET /v1/identity": answer(200, theIdentity)})
	t.Run("Certificate", func(t *testing.T) {
		code, out, errs := mwictl(f.sock, "identity")
		want(t, code, out, errs, 0, "")
		if out != theIdentity.Certificate+"\n" {
			t.Errorf("stdout %q, want only the certificate line", out)
		}
	})
	t.Run("Text", func(t *testing.T) {
		code, out, errs := mwictl(f.sock, "identity", "--text")
		want(t, code, out, errs, 0, "",
			"bot:           web (instance i-1)\n",
			"principals:    deploy, root\n",
			"key id:        web/i-1/3\n",
			"serial:        42\n",
			"valid after:   "+now.Format(time.RFC3339),
			"valid before:  "+expires.Format(time.RFC3339)+" (in 8h0m0s)\n")
	})
	t.Run("JSON", func(t *testing.T) {
		code, out, errs := mwictl(f.sock, "identity", "--json")
		want(t, code, out, errs, 0, "")
		var id api.Identity
		if err := json.Unmarshal([]byte(out), &id); err != nil || id.Serial != 42 || id.Certificate != theIdentity.Certificate {
			t.Errorf("identity --json: %v, %+v", err, id)
		}
	})
	t.Run("NotJoined", func(t *testing.T) {
		nj := serve(t, map[string]http.Handler{"GET /v1/identity": apiError(503, api.CodeNotJoined, "mwid has not joined the issuer yet")})
		code, out, errs := mwictl(nj.sock, "identity")
		want(t, code, out, errs, 1, "mwictl: mwid has not joined the issuer yet; mwictl status shows why\n")
		if out != "" {
			t.Errorf("stdout %q, want nothing", out)
		}
	})
}

func TestKnownHosts(t *testing.T) {
	const lines = "@cert-authority * ssh-ed25519 AAAAhostca1\n@cert-authority * ssh-ed25519 AAAAhostca2"
	f := serve(t, map[string]http.Handler{"GET /v1/ssh/known_hosts": text(lines)})
	code, out, errs := mwictl(f.sock, "known-hosts")
	want(t, code, out, errs, 0, "")
	if out != lines+"\n" {
		t.Errorf("stdout %q, want exactly the known_hosts lines", out)
	}
}

func TestSSHConfig(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if self, err = filepath.EvalSymlinks(self); err != nil {
		t.Fatal(err)
	}
	f := serve(t, map[string]http.Handler{"GET /v1/ssh/config": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "Host *.example.com\n  KnownHostsCommand "+r.URL.Query().Get("mwictl")+" known-hosts\n")
	})})
	block := "Host *.example.com\n  KnownHostsCommand " + self + " known-hosts\n"

	t.Run("Print", func(t *testing.T) {
		code, out, errs := mwictl(f.sock, "ssh-config")
		want(t, code, out, errs, 0, "")
		if out != block {
			t.Errorf("stdout %q, want %q", out, block)
		}
		if got := f.lastRequest().URL.Query()["mwictl"]; len(got) != 1 || got[0] != self || !filepath.IsAbs(got[0]) {
			t.Errorf("mwictl parameter %q, want [%q]", got, self)
		}
	})
	t.Run("File", func(t *testing.T) {
		dir := t.TempDir()
		name := filepath.Join(dir, "mwi.conf")
		if err := os.WriteFile(name, []byte("old"), 0o600); err != nil {
			t.Fatal(err)
		}
		code, out, errs := mwictl(f.sock, "ssh-config", "-o", name)
		want(t, code, out, errs, 0, "", "wrote "+name+"\n")
		data, err := os.ReadFile(name)
		if err != nil || string(data) != block {
			t.Errorf("file holds %q (%v), want %q", data, err, block)
		}
		if fi, err := os.Stat(name); err != nil || fi.Mode().Perm() != 0o644 {
			t.Errorf("file mode %v (%v), want 0644", fi.Mode(), err)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 1 {
			t.Errorf("directory holds %d files, want only %s", len(ents), name)
		}
	})
	t.Run("FileInMissingDir", func(t *testing.T) {
		name := filepath.Join(t.TempDir(), "missing", "mwi.conf")
		code, out, errs := mwictl(f.sock, "ssh-config", "-o", name)
		want(t, code, out, errs, 1, "mwictl: cannot write "+name+": no such file or directory\n")
	})
	t.Run("FileThroughLink", func(t *testing.T) {
		// A link in any component of -o's path is refused, not followed.
		dir := t.TempDir()
		target := filepath.Join(dir, "elsewhere")
		os.Mkdir(target, 0o700)
		link := filepath.Join(dir, "ssh")
		os.Symlink(target, link)
		name := filepath.Join(link, "mwi.conf")
		code, out, errs := mwictl(f.sock, "ssh-config", "-o", name)
		want(t, code, out, errs, 1, "mwictl: cannot write "+name+": refusing "+link+": it is a symbolic link")
		if ents, _ := os.ReadDir(target); len(ents) != 0 {
			t.Errorf("written through the link: %v", ents)
		}
	})
}

func TestKnownHostsForHosts(t *testing.T) {
	f := serve(t, map[string]http.Handler{"GET /v1/ssh/known_hosts": text("@cert-authority web-01,[web-01]:* ssh-ed25519 AAAAhostca1")})
	code, out, errs := mwictl(f.sock, "known-hosts", "--host", "web-01", "--host", "web-01.example.com")
	want(t, code, out, errs, 0, "")
	if got := f.lastRequest().URL.Query()["host"]; len(got) != 2 || got[0] != "web-01" || got[1] != "web-01.example.com" {
		t.Errorf("host parameters %q, want both names in order", got)
	}
}

// TestSSHConfigNodes adds a Host block per reachable node after mwid's
// block, with the settings mwid reports, skipping with a warning the names
// and logins that ssh_config could not carry as they are.
func TestSSHConfigNodes(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if self, err = filepath.EvalSymlinks(self); err != nil {
		t.Fatal(err)
	}
	defer func(f func() string) { localUser = f }(localUser)
	localUser = func() string { return "alice" }
	nodes := api.SSHNodes{Bot: "ci", Agent: "/run/mwi/agent.sock", Nodes: []api.ReachableNode{
		{Name: "web-01", Names: []string{"web-01", "web-01.example.com"}, Labels: map[string]string{"env": "staging"}, Logins: []string{"deploy"}},
		{Name: "web-02", Names: []string{"web-02"}, Labels: map[string]string{}, Logins: []string{"alice", "deploy"}},
		{Name: "evil\n    ProxyCommand sh -c 'id'", Names: []string{"evil\n    ProxyCommand sh -c 'id'"}, Logins: []string{"deploy"}},
		{Name: "-oProxyCommand=sh", Names: []string{"-oProxyCommand=sh", "db-01"}, Logins: []string{"x\x1b[31m", "deploy"}},
	}}
	routes := map[string]http.Handler{
		"GET /v1/ssh/config": text("Host *.example.com\n    IdentityAgent /run/mwi/agent.sock\n"),
		"GET /v1/ssh/nodes":  answer(200, nodes),
	}
	f := serve(t, routes)
	code, out, errs := mwictl(f.sock, "ssh-config", "--nodes")
	if code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, errs)
	}
	wantOut := "Host *.example.com\n    IdentityAgent /run/mwi/agent.sock\n" +
		"\n# Hosts the roles of bot ci let it log in to, from the issuer's node inventory.\n" +
		"Host web-01 web-01.example.com\n    User deploy\n    IdentityAgent /run/mwi/agent.sock\n" +
		"    KnownHostsCommand " + self + " --socket " + f.sock + " known-hosts --host web-01 --host web-01.example.com\n" +
		"    UserKnownHostsFile /dev/null\n    GlobalKnownHostsFile /dev/null\n    StrictHostKeyChecking yes\n    UpdateHostKeys no\n" +
		"Host web-02\n    IdentityAgent /run/mwi/agent.sock\n" +
		"    KnownHostsCommand " + self + " --socket " + f.sock + " known-hosts --host web-02\n" +
		"    UserKnownHostsFile /dev/null\n    GlobalKnownHostsFile /dev/null\n    StrictHostKeyChecking yes\n    UpdateHostKeys no\n" +
		"Host db-01\n    User deploy\n    IdentityAgent /run/mwi/agent.sock\n" +
		"    KnownHostsCommand " + self + " --socket " + f.sock + " known-hosts --host db-01\n" +
		"    UserKnownHostsFile /dev/null\n    GlobalKnownHostsFile /dev/null\n    StrictHostKeyChecking yes\n    UpdateHostKeys no\n"
	if out != wantOut {
		t.Errorf("stdout:\n%s\nwant\n%s", out, wantOut)
	}
	lines := strings.Split(strings.TrimSuffix(errs, "\n"), "\n")
	if len(lines) != 4 {
		t.Errorf("stderr has %d lines, want 4 warnings:\n%s", len(lines), errs)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "mwictl: warning: node ") || strings.ContainsRune(l, 0x1b) {
			t.Errorf("stderr line %q, want a warning naming a node, with no control character", l)
		}
	}

	t.Run("IssuerFailed", func(t *testing.T) {
		routes := map[string]http.Handler{
			"GET /v1/ssh/config": text("Host *\n"),
			"GET /v1/ssh/nodes":  apiError(502, api.CodeIssuerFailed, "the issuer did not list the nodes: connection refused"),
		}
		f := serve(t, routes)
		name := filepath.Join(t.TempDir(), "mwi.conf")
		code, out, errs := mwictl(f.sock, "ssh-config", "--nodes", "-o", name)
		want(t, code, out, errs, 1, "the issuer did not list the nodes: connection refused")
		if _, err := os.Stat(name); err == nil {
			t.Error("a file was written although the nodes could not be listed")
		}
	})
	t.Run("None", func(t *testing.T) {
		f := serve(t, map[string]http.Handler{
			"GET /v1/ssh/config": text("Host *\n"),
			"GET /v1/ssh/nodes":  answer(200, api.SSHNodes{Bot: "ci", Agent: "/a", Nodes: []api.ReachableNode{}, Truncated: true}),
		})
		code, out, errs := mwictl(f.sock, "ssh-config", "--nodes")
		if code != 0 || out != "Host *\n" || !strings.Contains(errs, "no host") || !strings.Contains(errs, "at most") {
			t.Errorf("exit %d, stdout %q, stderr %q", code, out, errs)
		}
	})
}

func TestRenew(t *testing.T) {
	renewed := readyStatus
	renewed.Generation = 4
	renewed.NextRenewal = &expires
	ok := serve(t, map[string]http.Handler{"POST /v1/renew": answer(200, renewed)})
	t.Run("OK", func(t *testing.T) {
		code, out, errs := mwictl(ok.sock, "renew")
		want(t, code, out, errs, 0, "",
			"renewed:       generation 4\n",
			"ssh:           principals deploy, root; expires "+expires.Format(time.RFC3339),
			"next renewal:  "+expires.Format(time.RFC3339))
		if r := ok.lastRequest(); r.Method != http.MethodPost {
			t.Errorf("renew sent %s, want POST", r.Method)
		}
	})
	t.Run("Shared", func(t *testing.T) {
		shared := renewed
		shared.Renewal = &api.RenewOutcome{Shared: true, CompletedAt: expires, Message: "answered by the renewal that completed 3s ago"}
		f := serve(t, map[string]http.Handler{"POST /v1/renew": answer(200, shared)})
		code, out, errs := mwictl(f.sock, "renew")
		want(t, code, out, errs, 0, "",
			"renewed:       generation 4\nshared:        answered by the renewal that completed 3s ago\n")
	})
	t.Run("JSON", func(t *testing.T) {
		code, out, errs := mwictl(ok.sock, "renew", "--json")
		want(t, code, out, errs, 0, "")
		var s api.Status
		if err := json.Unmarshal([]byte(out), &s); err != nil || s.Generation != 4 {
			t.Errorf("renew --json: %v, %+v", err, s)
		}
	})
	t.Run("Failed", func(t *testing.T) {
		f := serve(t, map[string]http.Handler{"POST /v1/renew": apiError(502, api.CodeRenewFailed, "issuer refused the renewal: bot_locked")})
		code, out, errs := mwictl(f.sock, "renew")
		want(t, code, out, errs, 1, "mwictl: renewal failed: issuer refused the renewal: bot_locked; ")
		if out != "" {
			t.Errorf("stdout %q, want nothing", out)
		}
	})
}

func TestReload(t *testing.T) {
	tests := []struct {
		name    string
		h       http.Handler
		args    []string
		code    int
		stdout  string
		errLine string
	}{
		{"Changed", answer(200, api.ReloadResult{Changed: true, Revision: "77aa01b"}), nil,
			0, "configuration reloaded (revision 77aa01b)\n", ""},
		{"Unchanged", answer(200, api.ReloadResult{Changed: false, Revision: "3f2a9c1"}), nil,
			0, "configuration unchanged\n", ""},
		{"JSON", answer(200, api.ReloadResult{Changed: true, Revision: "77aa01b"}), []string{"--json"},
			0, "{\n  \"changed\": true,\n  \"revision\": \"77aa01b\"\n}\n", ""},
		{"Failed", apiError(400, api.CodeReloadFailed, "/etc/mwi/mwid.yaml:12: unknown field \"ttl\""), nil,
			1, "", `mwictl: reload failed: /etc/mwi/mwid.yaml:12: unknown field "ttl"; fix the file`},
		{"FailedManyLines", apiError(400, api.CodeReloadFailed, "/etc/mwi/mwid.yaml:12: unknown field \"ttl\"\n/etc/mwi/mwid.yaml:14: bad login\n"), nil,
			1, "", `mwid.yaml:12: unknown field "ttl"; /etc/mwi/mwid.yaml:14: bad login; fix the file`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := serve(t, map[string]http.Handler{"POST /v1/reload": tt.h})
			code, out, errs := mwictl(f.sock, append([]string{"reload"}, tt.args...)...)
			want(t, code, out, errs, tt.code, tt.errLine)
			if out != tt.stdout {
				t.Errorf("stdout %q, want %q", out, tt.stdout)
			}
		})
	}
}

func TestReady(t *testing.T) {
	tests := []struct {
		name    string
		h       http.Handler
		args    []string
		code    int
		stdout  []string
		errLine string
	}{
		{"Ready", answer(200, api.Readiness{Ready: true, State: "ready",
			Credentials: []api.CredentialRead{{Kind: "ssh", Valid: true, Expires: expires}}}), nil,
			0, []string{"state:  ready\n", "ssh:    valid, expires " + expires.Format(time.RFC3339)}, ""},
		{"NotReady", answer(503, api.Readiness{Ready: false, State: "expired",
			Credentials: []api.CredentialRead{{Kind: "ssh", Valid: false, Expires: failedAt}}}), nil,
			1, []string{"state:  expired\n", "ssh:    not valid, expires " + failedAt.Format(time.RFC3339) + " (1m0s ago)"},
			"mwictl: mwid is not ready (state expired); mwictl status says why\n"},
		{"NotReadyJSON", answer(503, api.Readiness{Ready: false, State: "joining"}), []string{"--json"},
			1, []string{`"ready": false`, `"state": "joining"`}, "mwid is not ready (state joining)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := serve(t, map[string]http.Handler{"GET /readyz": tt.h})
			code, out, errs := mwictl(f.sock, append([]string{"ready"}, tt.args...)...)
			want(t, code, out, errs, tt.code, tt.errLine, tt.stdout...)
		})
	}
}

// TestNotRunning runs every command against a socket nothing listens on.
func TestNotRunning(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	// The flags that commands require.
	required := map[string][]string{"kube-credential": {"--cluster", "prod"}}
	for _, c := range commands {
		t.Run(c.name, func(t *testing.T) {
			code, out, errs := mwictl(sock, append([]string{c.name}, required[c.name]...)...)
			if c.name == "version" {
				// mwictl's own version comes first, whether mwid runs or not.
				if !strings.HasPrefix(out, "mwictl ") || strings.Count(out, "\n") != 1 {
					t.Errorf("stdout %q, want mwictl's version alone", out)
				}
				out = ""
			}
			want(t, code, out, errs, 1, "mwictl: cannot reach mwid at "+sock+": is mwid running?")
			for _, s := range []string{"start it (systemctl start mwid)", "--socket", "MWI_SOCKET"} {
				if !strings.Contains(errs, s) {
					t.Errorf("advice does not mention %q: %s", s, errs)
				}
			}
			if out != "" {
				t.Errorf("stdout %q, want nothing", out)
			}
		})
	}
}

func TestSocketFromEnvironment(t *testing.T) {
	f := serve(t, map[string]http.Handler{"GET /readyz": answer(200, api.Readiness{Ready: true, State: "ready"})})
	t.Setenv("MWI_SOCKET", f.sock)
	var o, e bytes.Buffer
	if code := run([]string{"ready"}, &o, &e); code != 0 {
		t.Errorf("exit %d with MWI_SOCKET set; stderr: %s", code, e.String())
	}
	// --socket wins over the environment.
	missing := filepath.Join(t.TempDir(), "other.sock")
	code, _, errs := mwictl(missing, "ready")
	want(t, code, "", errs, 1, missing)
}

func TestAccessDenied(t *testing.T) {
	f := serve(t, map[string]http.Handler{"GET /v1/status": apiError(403, api.CodeAccessDenied, "uid 1000 may not use mwid's api socket")})
	code, out, errs := mwictl(f.sock, "status")
	want(t, code, out, errs, 1, "mwictl: uid 1000 may not use mwid's api socket; run as a user or group that mwid's config allows")
}

func TestSocketModeDenied(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root is not bound by the socket's mode")
	}
	f := serve(t, map[string]http.Handler{"GET /v1/status": answer(200, readyStatus)})
	if err := os.Chmod(f.sock, 0); err != nil {
		t.Fatal(err)
	}
	code, out, errs := mwictl(f.sock, "status")
	want(t, code, out, errs, 1, "denied by its file mode: permission denied; run as a user or group")
}

func TestOneLine(t *testing.T) {
	for in, want := range map[string]string{
		"":                    "",
		"one":                 "one",
		"a\nb\n":              "a; b",
		"  a\r\n\n   b  \n\n": "a; b",
	} {
		if got := oneLine(in); got != want {
			t.Errorf("oneLine(%q) = %q, want %q", in, got, want)
		}
	}
}
