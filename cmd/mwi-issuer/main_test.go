package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/cli"
	"github.com/mwi-project/mwi/internal/cli/man"
	"github.com/mwi-project/mwi/internal/httpjson"
	"github.com/mwi-project/mwi/internal/version"
)

func TestMain(m *testing.M) {
	os.Unsetenv("MWI_ADMIN_SOCKET")
	os.Unsetenv("MWI_ISSUER")
	os.Unsetenv("MWI_IDENTITY")
	os.Exit(m.Run())
}

func mwiIssuer(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

// commandPaths returns the arguments naming every command of the tree,
// root first, walked from the tree itself.
func commandPaths(t *testing.T) [][]string {
	t.Helper()
	var paths [][]string
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		paths = append(paths, path)
		for _, sub := range c.Commands() {
			if sub.IsAvailableCommand() {
				walk(sub, append(append([]string(nil), path...), sub.Name()))
			}
		}
	}
	var o, e bytes.Buffer
	walk(newRoot(&env{stdout: &o, stderr: &e}), nil)
	if len(paths) < 15 {
		t.Fatalf("only %d commands in the tree: %v", len(paths), paths)
	}
	return paths
}

// TestHelp: -h and --help print every command's help on standard output and
// exit 0; mwi-issuer serve -h printed "flag: help requested" and exited 1.
func TestHelp(t *testing.T) {
	for _, path := range commandPaths(t) {
		for _, h := range []string{"-h", "--help"} {
			args := append(append([]string(nil), path...), h)
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				code, out, errs := mwiIssuer(args...)
				want := "Usage:\n  " + strings.TrimSpace("mwi-issuer "+strings.Join(path, " "))
				if code != 0 || errs != "" || !strings.Contains(out, want) {
					t.Errorf("exit %d, stderr %q, stdout:\n%s\nwant 0, nothing, and %q", code, errs, out, want)
				}
			})
		}
	}
}

// TestUsageErrors: an unknown flag, a stray argument, a missing argument or
// a missing required flag exits 2 with one line that names the mistake and
// the help to read, and runs nothing.
func TestUsageErrors(t *testing.T) {
	type usageCase struct {
		args []string
		want string
	}
	var tests []usageCase
	for _, path := range commandPaths(t) {
		tests = append(tests, usageCase{append(append([]string(nil), path...), "--foo"),
			"mwi-issuer: unknown flag: --foo; see " + strings.TrimSpace("mwi-issuer "+strings.Join(path, " ")) + " --help\n"})
	}
	dir := t.TempDir()
	tests = append(tests, []usageCase{
		{nil, "mwi-issuer: missing command; see mwi-issuer --help\n"},
		{[]string{"sevre"}, `mwi-issuer: unknown command "sevre" (did you mean serve or store?); see mwi-issuer --help` + "\n"},
		{[]string{"tls"}, "mwi-issuer: missing command; see mwi-issuer tls --help\n"},
		{[]string{"tls", "renew"}, `mwi-issuer: unknown command "renew"; see mwi-issuer tls --help` + "\n"},
		{[]string{"init"}, "mwi-issuer: --state is required; see mwi-issuer init --help\n"},
		{[]string{"ca", "--state", dir, "extra"}, `mwi-issuer: unexpected argument "extra"; see mwi-issuer ca --help` + "\n"},
		{[]string{"serve", "--state", dir, "--cluster-name", ""}, "mwi-issuer: --cluster-name is required; see mwi-issuer serve --help\n"},
		{[]string{"serve", "--state", dir, "--resource-settle", "0s"}, "mwi-issuer: --resource-settle must be positive; see mwi-issuer serve --help\n"},
		{[]string{"serve", "--state", dir, "--resource-settle", "soon"}, `mwi-issuer: invalid argument "soon" for "--resource-settle" flag: time: invalid duration "soon"; see mwi-issuer serve --help` + "\n"},
		{[]string{"serve", "--state", dir, "--diag-addr", "0.0.0.0:9443"}, `mwi-issuer: --diag-addr: diagnostics address "0.0.0.0:9443" is not a loopback address: its metrics and health have no authentication; use 127.0.0.1:PORT, or allow other addresses explicitly (--diag-allow-remote); see mwi-issuer serve --help` + "\n"},
		{[]string{"serve", "--state", dir, "--diag-addr", "9443"}, `mwi-issuer: --diag-addr: diagnostics address "9443": want HOST:PORT, such as 127.0.0.1:9090: address 9443: missing port in address; see mwi-issuer serve --help` + "\n"},
		{[]string{"token", "create", "--state", dir}, "mwi-issuer: --bot is required; see mwi-issuer token create --help\n"},
		{[]string{"token", "create", "--bot", "ci"}, "mwi-issuer: name the issuer: --state DIR or --admin-socket PATH on its machine, or --issuer ADDR --identity DIR remotely; see mwi-issuer token create --help\n"},
		{[]string{"get", "role", "--state", dir, "--issuer", "127.0.0.1:1", "--identity", dir}, "mwi-issuer: name the issuer one way: --state or --admin-socket on its machine, or --issuer and --identity remotely, not both; see mwi-issuer get --help\n"},
		{[]string{"nodes", "ls", "--issuer", "127.0.0.1:1"}, "mwi-issuer: --issuer needs --identity DIR, an admin identity made on the issuer's machine by mwi-issuer admin issue --out DIR; see mwi-issuer nodes ls --help\n"},
		{[]string{"bots", "ls", "--identity", dir}, "mwi-issuer: --identity needs --issuer ADDR, the issuer's host:port; see mwi-issuer bots ls --help\n"},
		{[]string{"admin", "issue", "--state", dir}, "mwi-issuer: --out is required; see mwi-issuer admin issue --help\n"},
		{[]string{"admin", "issue", "--out", dir, "--issuer", "127.0.0.1:1"}, "mwi-issuer: unknown flag: --issuer; see mwi-issuer admin issue --help\n"},
		{[]string{"admin", "issue", "--out", dir, "--ttl", "0s", "--state", dir}, "mwi-issuer: --ttl: want at least 1s, not 0s; see mwi-issuer admin issue --help\n"},
		{[]string{"admin", "issue", "--out", dir, "--ttl", "500ms", "--state", dir}, "mwi-issuer: --ttl: want at least 1s, not 500ms; see mwi-issuer admin issue --help\n"},
		{[]string{"bot", "lock", "ci", "--state", dir}, "mwi-issuer: --reason is required; see mwi-issuer bot lock --help\n"},
		{[]string{"bot", "unlock", "--state", dir}, "mwi-issuer: missing NAME; see mwi-issuer bot unlock --help\n"},
		{[]string{"bot", "unlock", "ci", "web", "--state", dir}, `mwi-issuer: unexpected argument "web"; see mwi-issuer bot unlock --help` + "\n"},
		{[]string{"instance", "unlock", "--state", dir}, "mwi-issuer: missing ID; see mwi-issuer instance unlock --help\n"},
		{[]string{"locks", "stray", "--state", dir}, `mwi-issuer: unexpected argument "stray"; see mwi-issuer locks --help` + "\n"},
		{[]string{"lock", "add", "--state", dir}, "mwi-issuer: name exactly one of --bot, --instance and --token; see mwi-issuer lock add --help\n"},
		{[]string{"lock", "add", "--bot", "ci", "--token", "gh", "--state", dir}, "mwi-issuer: name exactly one of --bot, --instance and --token; see mwi-issuer lock add --help\n"},
		{[]string{"lock", "add", "--bot", "ci", "--ttl", "-1h", "--state", dir}, "mwi-issuer: --ttl must be positive; see mwi-issuer lock add --help\n"},
		{[]string{"lock", "add", "--bot", "ci", "--ttl", "500ms", "--state", dir}, "mwi-issuer: --ttl must be at least 1s; see mwi-issuer lock add --help\n"},
		{[]string{"lock", "rm", "--state", dir}, "mwi-issuer: name exactly one of --bot, --instance and --token; see mwi-issuer lock rm --help\n"},
		{[]string{"lock", "ls", "--format", "xml", "--state", dir}, `mwi-issuer: --format: want text, json or yaml, not "xml"; see mwi-issuer lock ls --help` + "\n"},
		{[]string{"ca", "rotate", "--phase", "init", "--state", dir}, "mwi-issuer: --type is required; see mwi-issuer ca rotate --help\n"},
		{[]string{"ca", "rotate", "--type", "all", "--state", dir}, "mwi-issuer: --phase is required; see mwi-issuer ca rotate --help\n"},
		{[]string{"ca", "rotate", "--type", "admin", "--phase", "init", "--state", dir}, `mwi-issuer: --type: unknown authority type "admin" (want one of ssh_user, ssh_host, identity, kube, tls, or all); see mwi-issuer ca rotate --help` + "\n"},
		{[]string{"ca", "rotate", "status", "--format", "xml", "--state", dir}, `mwi-issuer: --format must be text, json, yaml, not "xml"; see mwi-issuer ca rotate status --help` + "\n"},
		{[]string{"store", "migrate"}, "mwi-issuer: name the store with --store URL, or the state directory with --state DIR; see mwi-issuer store migrate --help\n"},
	}...)
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out, errs := mwiIssuer(tt.args...)
			if code != 2 || errs != tt.want || out != "" {
				t.Errorf("exit %d, stdout %q, stderr %q; want 2, nothing and %q", code, out, errs, tt.want)
			}
		})
	}
	if entries, _ := os.ReadDir(dir); len(entries) > 0 {
		t.Errorf("a refused command line wrote into the state directory: %v", entries)
	}
}

// fakeAdmin serves the admin API on STATE/admin.sock and records the
// requests.
type fakeAdmin struct {
	mu       sync.Mutex
	requests []string
}

func serveAdmin(t *testing.T, state string) *fakeAdmin {
	t.Helper()
	f := &fakeAdmin{}
	l, err := net.Listen("unix", filepath.Join(state, "admin.sock"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.requests = append(f.requests, r.Method+" "+r.URL.Path)
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/admin/v1/locks" {
			json.NewEncoder(w).Encode(api.Locks{Locks: []api.Lock{}})
			return
		}
		w.Write([]byte("{}"))
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return f
}

// TestFlagsAnywhere: flags may come before or after a command's argument;
// bot unlock --state DIR ci took --state as the bot name.
func TestFlagsAnywhere(t *testing.T) {
	state, err := os.MkdirTemp("", "mwi-issuer") // short: a socket path
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	f := serveAdmin(t, state)
	for _, args := range [][]string{
		{"bot", "unlock", "--state", state, "ci"},
		{"bot", "unlock", "ci", "--state", state},
	} {
		code, out, errs := mwiIssuer(args...)
		if code != 0 || errs != "" || out != "bot ci was not locked\n" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, out, errs)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.requests {
		if r != "GET /admin/v1/locks" && r != "POST /admin/v1/bots/ci/unlock" {
			t.Errorf("request %s, want only the locks and the unlock of bot ci", r)
		}
	}
}

func TestVersion(t *testing.T) {
	code, out, errs := mwiIssuer("--version")
	if want := "mwi-issuer " + version.Get().String() + "\n"; code != 0 || out != want || errs != "" {
		t.Errorf("exit %d, stdout %q, stderr %q; want 0 and %q", code, out, errs, want)
	}
}

func TestCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		code, out, errs := mwiIssuer("completion", shell)
		if code != 0 || errs != "" || !strings.Contains(out, "mwi-issuer") || !strings.Contains(out, "__complete") {
			t.Errorf("completion %s: exit %d, stderr %q, stdout:\n%.300s", shell, code, errs, out)
		}
	}
	// What the scripts call: bot's commands, from the tree.
	code, out, _ := mwiIssuer("__complete", "bot", "")
	if code != 0 || !strings.Contains(out, "lock\t") || !strings.Contains(out, "unlock\t") {
		t.Errorf("completing bot: exit %d:\n%s", code, out)
	}
}

// TestMan writes a manual page for every command; make man runs it with
// MWI_MAN_DIR set.
func TestMan(t *testing.T) {
	dir := man.Dir(t.TempDir())
	var o, e bytes.Buffer
	if err := man.Generate(newRoot(&env{stdout: &o, stderr: &e}), dir); err != nil {
		t.Fatal(err)
	}
	for _, path := range commandPaths(t) {
		name := strings.Join(append([]string{"mwi-issuer"}, path...), "-") + ".1"
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Error(err)
		} else if !bytes.Contains(data, []byte(".TH ")) {
			t.Errorf("%s is not a manual page", name)
		}
	}
}

// TestAdminCallErrors checks that an admin API refusal shows the issuer's
// message as it is, with its code for errors.As, and that an answer that
// is not the error shape names the status.
func TestAdminCallErrors(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "admin.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/admin/v1/proxy" {
			http.Error(w, "bad gateway", http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(api.ErrorBody{Error: api.Error{Code: api.CodeNotFound, Message: `instance "x" is not locked`}})
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	err = adminCall(adminConn{socket: sock}, http.MethodPost, "/admin/v1/instances/x/unlock", struct{}{}, nil)
	var e *httpjson.APIError
	if err == nil || err.Error() != `instance "x" is not locked` || !errors.As(err, &e) || e.Status != http.StatusNotFound || !httpjson.IsCode(err, api.CodeNotFound) {
		t.Errorf("refusal = %v (%#v); want the message, with status 404 and code %s", err, e, api.CodeNotFound)
	}
	err = adminCall(adminConn{socket: sock}, http.MethodGet, "/admin/v1/proxy", nil, nil)
	if err == nil || err.Error() != "admin API: 502 Bad Gateway" || httpjson.ErrorCode(err) != "" {
		t.Errorf("answer without the error shape = %v; want the status", err)
	}
}

// TestLockCommands runs lock add, lock ls and lock rm, and the older bot
// lock, instance lock and instance unlock, against a fake admin API: each
// sends the request of the one code path, and prints what it did.
func TestLockCommands(t *testing.T) {
	state, err := os.MkdirTemp("", "mwi-issuer") // short: a socket path
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	at := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	var got []string
	l, err := net.Listen("unix", filepath.Join(state, "admin.sock"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, r.Method+" "+r.URL.Path+" "+strings.TrimSpace(string(body)))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/admin/v1/locks":
			if r.Method == http.MethodGet {
				json.NewEncoder(w).Encode(api.Locks{Locks: []api.Lock{
					{Token: "gh", Reason: "leak", At: at, Expires: at.Add(time.Hour)},
					{Bot: "ci", Instance: "abc", Reason: "stolen", At: at},
				}})
				return
			}
			var req api.LockRequest
			json.Unmarshal(body, &req)
			l := api.Lock{Bot: req.Bot, Instance: req.Instance, Token: req.Token, Reason: req.Reason, At: at}
			if req.TTLSeconds > 0 {
				l.Expires = at.Add(time.Duration(req.TTLSeconds) * time.Second)
			}
			json.NewEncoder(w).Encode(l)
		case "/admin/v1/locks/remove":
			var t api.LockTarget
			json.Unmarshal(body, &t)
			json.NewEncoder(w).Encode(api.Lock{Bot: "ci", Instance: t.Instance, Token: t.Token, Reason: "stolen", At: at})
		}
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	for _, tc := range []struct {
		args    []string
		request string
		out     string
	}{
		{[]string{"lock", "add", "--token", "gh", "--ttl", "1h", "--message", "leak"},
			`POST /admin/v1/locks {"token":"gh","reason":"leak","ttl_seconds":3600}`, "token gh locked until 2026-11-30T10:00:00Z\n"},
		{[]string{"lock", "add", "--bot", "ci"},
			`POST /admin/v1/locks {"bot":"ci","reason":"locked by an operator with mwi-issuer lock add"}`, "bot ci locked\n"},
		{[]string{"bot", "lock", "ci", "--reason", "r"}, `POST /admin/v1/locks {"bot":"ci","reason":"r"}`, "bot ci locked\n"},
		{[]string{"instance", "lock", "abc", "--reason", "r"}, `POST /admin/v1/locks {"instance":"abc","reason":"r"}`, "instance abc locked\n"},
		{[]string{"lock", "rm", "--instance", "abc"}, `POST /admin/v1/locks/remove {"instance":"abc"}`,
			"instance abc of bot ci unlocked; it was locked since 2026-11-30T09:00:00Z: stolen\n"},
		{[]string{"instance", "unlock", "abc"}, `POST /admin/v1/locks/remove {"instance":"abc"}`,
			"instance abc of bot ci unlocked; it was locked since 2026-11-30T09:00:00Z: stolen\n"},
		{[]string{"lock", "rm", "--token", "gh"}, `POST /admin/v1/locks/remove {"token":"gh"}`,
			"token gh unlocked; it was locked since 2026-11-30T09:00:00Z: stolen\n"},
		{[]string{"lock", "ls", "--format", "yaml"}, "GET /admin/v1/locks ",
			"locks:\n  - at: \"2026-11-30T09:00:00Z\"\n    expires: \"2026-11-30T10:00:00Z\"\n    reason: leak\n    token: gh\n  - at: \"2026-11-30T09:00:00Z\"\n    bot: ci\n    instance: abc\n    reason: stolen\n"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			mu.Lock()
			got = nil
			mu.Unlock()
			code, out, errs := mwiIssuer(append(tc.args, "--state", state)...)
			if code != 0 || errs != "" || out != tc.out {
				t.Errorf("exit %d, stderr %q, stdout:\n%s\nwant:\n%s", code, errs, out, tc.out)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(got) != 1 || got[0] != tc.request {
				t.Errorf("requests %q, want %q", got, tc.request)
			}
		})
	}
	for _, args := range [][]string{{"lock", "ls"}, {"locks"}} {
		code, out, _ := mwiIssuer(append(args, "--state", state)...)
		for _, want := range []string{"mwi-issuer lock rm --token gh", "2026-11-30T10:00:00Z", "mwi-issuer instance unlock abc", "never"} {
			if code != 0 || !strings.Contains(out, want) {
				t.Errorf("%s: exit %d, output without %q:\n%s", args, code, want, out)
			}
		}
	}
	code, out, _ := mwiIssuer("lock", "ls", "--format", "json", "--state", state)
	var locks api.Locks
	if code != 0 || json.Unmarshal([]byte(out), &locks) != nil || len(locks.Locks) != 2 {
		t.Errorf("lock ls --format json: exit %d:\n%s", code, out)
	}
}

// TestFlagDefaults: no two commands share a flag variable with different
// defaults (lock add's --ttl once zeroed token create's).
func TestFlagDefaults(t *testing.T) {
	var o, e bytes.Buffer
	if err := cli.CheckDefaults(newRoot(&env{stdout: &o, stderr: &e})); err != nil {
		t.Error(err)
	}
}

// TestInitRefusesLinks checks that mwi-issuer init writes nothing through a
// symbolic link at the state directory or at its resources directory.
func TestInitRefusesLinks(t *testing.T) {
	for _, tc := range []struct {
		name string
		link func(state string) string // plants a link, returns its path
	}{
		{"state directory", func(state string) string { return state }},
		{"resources directory", func(state string) string {
			os.Mkdir(state, 0o700)
			return filepath.Join(state, "resources")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			state, target := filepath.Join(t.TempDir(), "state"), t.TempDir()
			link := tc.link(state)
			if err := os.Symlink(target, link); err != nil {
				t.Fatal(err)
			}
			code, _, stderr := mwiIssuer("init", "--state", state, "--host", "127.0.0.1")
			if code == 0 || !strings.Contains(stderr, "refusing "+link+": it is a symbolic link") {
				t.Errorf("init with a link at %s: exit %d, %s; want a refusal naming it", link, code, stderr)
			}
			if entries, _ := os.ReadDir(target); len(entries) != 0 {
				t.Errorf("init wrote %d entries through the link", len(entries))
			}
		})
	}
}

// TestStoreMigrate: store migrate makes or updates the store it is given,
// says which without the password, and refuses a location it cannot open.
func TestStoreMigrate(t *testing.T) {
	dir := t.TempDir()
	code, out, errs := mwiIssuer("store", "migrate", "--state", dir)
	if want := "store " + filepath.Join(dir, "store.db") + " is up to date\n"; code != 0 || out != want || errs != "" {
		t.Errorf("store migrate --state: exit %d, stdout %q, stderr %q; want 0 and %q", code, out, errs, want)
	}
	if _, err := os.Stat(filepath.Join(dir, "store.db")); err != nil {
		t.Errorf("store migrate --state made no store: %v", err)
	}
	path := filepath.Join(dir, "other.db")
	if code, out, errs := mwiIssuer("store", "migrate", "--store", "bolt://"+path); code != 0 || !strings.Contains(out, path) {
		t.Errorf("store migrate --store bolt://: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	for _, tc := range []struct{ store, want string }{
		{"ftp://example.com/x", "unknown kind of store"},
		// Nothing listens on port 1: the error names the database
		// without the password.
		{"postgres://mwi:s3cret@127.0.0.1:1/mwi?connect_timeout=5", "postgres://mwi:xxxxx@127.0.0.1:1/mwi"},
		{"postgres://mwi@127.0.0.1:1/mwi?password=s3cret&connect_timeout=5", "password=xxxxx"},
	} {
		code, out, errs := mwiIssuer("store", "migrate", "--store", tc.store)
		if code != 1 || out != "" || !strings.Contains(errs, tc.want) || strings.Contains(errs, "s3cret") {
			t.Errorf("store migrate --store %s: exit %d, stdout %q, stderr %q; want 1 and an error with %q, without the password",
				tc.store, code, out, errs, tc.want)
		}
	}
}

// TestInitIfMissing: init --if-missing, which mwi-issuer.service runs before
// each start, makes an issuer in an empty (or absent) directory, leaves an
// existing one as it is, and refuses a part of one rather than completing
// it with new authorities.
func TestInitIfMissing(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(state, 0o700); err != nil { // as StateDirectory= leaves it
		t.Fatal(err)
	}
	code, out, errs := mwiIssuer("init", "--if-missing", "--state", state, "--host", "127.0.0.1")
	if code != 0 || !strings.Contains(out, "initialised issuer in "+state) {
		t.Fatalf("first init --if-missing: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	key := filepath.Join(state, "identity_ca.key")
	before, err := os.ReadFile(key)
	if err != nil {
		t.Fatal(err)
	}
	code, out, errs = mwiIssuer("init", "--if-missing", "--state", state, "--host", "127.0.0.1")
	if code != 0 || !strings.Contains(out, state+" already holds an issuer (ca_pin: sha256:") || errs != "" {
		t.Errorf("second init --if-missing: exit %d, stdout %q, stderr %q; want 0 and nothing done", code, out, errs)
	}
	if after, _ := os.ReadFile(key); !bytes.Equal(before, after) {
		t.Error("second init --if-missing replaced the identity CA's key")
	}
	// Without --if-missing, init still refuses an existing issuer.
	if code, _, errs := mwiIssuer("init", "--state", state, "--host", "127.0.0.1"); code != 1 || !strings.Contains(errs, "already holds an issuer") {
		t.Errorf("init on an existing issuer: exit %d, stderr %q; want 1 and a refusal", code, errs)
	}

	// A part of an issuer: new authorities would not match the rest.
	if err := os.Remove(filepath.Join(state, "ssh_user_ca")); err != nil {
		t.Fatal(err)
	}
	code, _, errs = mwiIssuer("init", "--if-missing", "--state", state, "--host", "127.0.0.1")
	if code != 1 || !strings.Contains(errs, "already holds an issuer") || !strings.Contains(errs, "ssh_user_ca: no such file") {
		t.Errorf("init --if-missing on a part of an issuer: exit %d, stderr %q; want 1 and a refusal naming the missing file", code, errs)
	}
	if after, _ := os.ReadFile(key); !bytes.Equal(before, after) {
		t.Error("init --if-missing on a part of an issuer replaced the identity CA's key")
	}

	// A directory refused for another reason is not called a part of an
	// issuer.
	open := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	code, _, errs = mwiIssuer("init", "--if-missing", "--state", open, "--host", "127.0.0.1")
	if code != 1 || !strings.Contains(errs, "writable by users other than its owner") || strings.Contains(errs, "part of") {
		t.Errorf("init --if-missing on a world-writable directory: exit %d, stderr %q; want 1 and that reason alone", code, errs)
	}
}
