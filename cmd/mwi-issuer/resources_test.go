package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mwi-project/mwi/issuer/server"
)

// runIssuer initialises a state directory, writes dirYAML to its resource
// directory, and serves the issuer in this process until the test ends.
func runIssuer(t *testing.T, dirYAML string) string {
	t.Helper()
	state, _ := runIssuerAt(t, dirYAML)
	return state
}

// runIssuerAt is runIssuer, and returns the HTTPS API's address too.
func runIssuerAt(t *testing.T, dirYAML string) (state, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = ln.Addr().String()
	ln.Close()
	state, err = os.MkdirTemp("", "mwi-issuer") // short: a socket path
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	if code, _, errs := mwiIssuer("init", "--state", state, "--host", "127.0.0.1"); code != 0 {
		t.Fatalf("init: %s", errs)
	}
	if err := os.WriteFile(filepath.Join(state, "resources", "base.yaml"), []byte(dirYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := server.DefaultConfig(state)
	cfg.Listen = addr
	srv, err := server.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		srv.Close()
	})
	for i := 0; ; i++ {
		if code, _, _ := mwiIssuer("bots", "ls", "--state", state); code == 0 {
			return state, addr
		}
		if i == 200 {
			t.Fatal("the admin socket never answered")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

const (
	cliDirYAML = "kind: role\nversion: v1\nmetadata: {name: deploy}\nspec:\n  allow: {logins: [deploy]}\n"
	cliFile    = `# roles for the nightly jobs
kind: role
version: v1
metadata:
  name: backup
spec:
  allow:
    logins: [backup]
    node_labels: {'*': '*'}
---
kind: bot
version: v1
metadata: {name: nightly}
spec:
  roles: [backup, deploy]
`
)

func TestResourceCommands(t *testing.T) {
	state := runIssuer(t, cliDirYAML)
	file := filepath.Join(t.TempDir(), "nightly.yaml")
	if err := os.WriteFile(file, []byte(cliFile), 0o600); err != nil {
		t.Fatal(err)
	}
	must := func(args ...string) string {
		t.Helper()
		code, out, errs := mwiIssuer(append(args, "--state", state)...)
		if code != 0 {
			t.Fatalf("mwi-issuer %s: exit %d, %s", strings.Join(args, " "), code, errs)
		}
		return out
	}

	if out := must("create", "-f", file); out != "role \"backup\" created\nbot \"nightly\" created\n" {
		t.Errorf("create -f: %q", out)
	}
	// get prints the stored documents as written, and its output given
	// back to create -f --force changes nothing.
	got := must("get", "role/backup")
	if want := strings.SplitN(cliFile, "---\n", 2)[0]; got != want {
		t.Fatalf("get role/backup = %q; want the document as written, %q", got, want)
	}
	all := must("get", "all")
	again := filepath.Join(t.TempDir(), "again.yaml")
	if err := os.WriteFile(again, []byte(must("get", "bot")), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := must("create", "-f", again, "--force"); out != "bot \"nightly\" replaced\n" {
		t.Errorf("create -f --force of get's output: %q", out)
	}
	if after := must("get", "all"); after != all {
		t.Errorf("get changed after a round trip:\n%s\nwas\n%s", after, all)
	}
	// Directory documents are marked with their file and line.
	if want := "# defined in " + filepath.Join(state, "resources", "base.yaml") + ":1, in the resource directory: edit that file to change it\n" + cliDirYAML; !strings.Contains(all, "---\n"+want) {
		t.Errorf("get all = %q; want it to hold %q", all, want)
	}
	var docs []map[string]any
	if err := json.Unmarshal([]byte(must("get", "role/backup", "--format", "json")), &docs); err != nil || len(docs) != 1 ||
		docs[0]["metadata"].(map[string]any)["name"] != "backup" {
		t.Errorf("get --format json = %v, %v", docs, err)
	}

	// A bad file is refused whole, naming its file and lines.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("kind: role\nversion: v1\nmetadata: {name: fresh}\nspec: {}\n---\nkind: robot\n---\n"+cliDirYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errs := mwiIssuer("create", "-f", bad, "--state", state)
	if code != 1 || !strings.Contains(errs, bad+":6: unknown kind \"robot\"") {
		t.Errorf("create -f of a bad file: exit %d, %s", code, errs)
	}
	if code, _, _ := mwiIssuer("get", "role/fresh", "--state", state); code != 1 {
		t.Errorf("a refused file stored part of itself: get role/fresh exit %d", code)
	}

	// bots
	must("bots", "add", "web", "--roles", "deploy", "--logins", "www,web")
	must("bots", "update", "web", "--add-roles", "backup", "--add-logins", "ops")
	var bots struct {
		Bots []struct {
			Name   string
			Roles  []string
			Traits map[string][]string
		}
	}
	if err := json.Unmarshal([]byte(must("bots", "ls", "--format", "json")), &bots); err != nil || len(bots.Bots) != 2 ||
		bots.Bots[1].Name != "web" || strings.Join(bots.Bots[1].Roles, ",") != "deploy,backup" ||
		strings.Join(bots.Bots[1].Traits["logins"], ",") != "www,web,ops" {
		t.Errorf("bots ls = %+v, %v", bots, err)
	}
	if out := must("bots", "ls"); !strings.Contains(out, "web  ") || !strings.Contains(out, "logins=www,web,ops") {
		t.Errorf("bots ls text:\n%s", out)
	}
	must("bots", "update", "web", "--set-roles", "deploy")
	if code, _, errs := mwiIssuer("bots", "rm", "ghost", "--state", state); code != 1 || !strings.Contains(errs, "ghost") {
		t.Errorf("bots rm ghost: exit %d, %s", code, errs)
	}
	must("bots", "rm", "web")

	// tokens
	out := must("tokens", "add", "--bot", "nightly", "--format", "json")
	var tok struct{ Token string }
	if err := json.Unmarshal([]byte(out), &tok); err != nil || tok.Token == "" {
		t.Fatalf("tokens add: %q, %v", out, err)
	}
	if out := must("tokens", "ls"); strings.Contains(out, tok.Token) || !strings.Contains(out, "nightly") || !strings.Contains(out, "one-time") {
		t.Errorf("tokens ls shows the secret or not the token:\n%s", out)
	}
	must("tokens", "rm", tok.Token)
	if out := must("tokens", "ls", "--format", "json"); !strings.Contains(out, `"tokens": []`) {
		t.Errorf("after tokens rm, tokens ls = %s", out)
	}
	if out := must("kube", "ls"); !strings.HasPrefix(out, "Cluster") {
		t.Errorf("kube ls = %q", out)
	}
	if out := must("bots", "instances", "ls", "nightly", "--format", "yaml"); out != "instances: []\n" {
		t.Errorf("bots instances ls = %q", out)
	}
	if code, _, errs := mwiIssuer("bots", "instances", "show", "nope", "--state", state); code != 1 || !strings.Contains(errs, "nope") {
		t.Errorf("bots instances show nope: exit %d, %s", code, errs)
	}

	// rm: refused for a role a bot names and for the directory's.
	if code, _, errs := mwiIssuer("rm", "role/backup", "--state", state); code != 1 || !strings.Contains(errs, "store:bot/nightly:") {
		t.Errorf("rm of a role a bot names: exit %d, %s", code, errs)
	}
	if code, _, errs := mwiIssuer("rm", "role/deploy", "--state", state); code != 1 || !strings.Contains(errs, "edit that file") {
		t.Errorf("rm of a directory role: exit %d, %s", code, errs)
	}
	must("rm", "bot/nightly")
	must("rm", "role/backup")

	for _, args := range [][]string{
		{"get"}, {"rm", "role"}, {"create"}, {"bots", "update", "x"}, {"bots", "update", "x", "--add-roles", "a", "--set-roles", "b"},
		{"bots", "add", "x"}, {"get", "role", "--format", "text"}, {"bots", "instances", "ls", "a", "b"},
	} {
		if code, _, _ := mwiIssuer(append(args, "--state", state)...); code != 2 {
			t.Errorf("mwi-issuer %s: exit %d; want 2", strings.Join(args, " "), code)
		}
	}
}
