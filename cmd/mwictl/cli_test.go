package main

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/client"
	"github.com/mwi-project/mwi/internal/cli"
	"github.com/mwi-project/mwi/internal/cli/man"
	"github.com/mwi-project/mwi/internal/version"
)

// commandPaths returns every command of mwictl's tree, root first, as the
// arguments that name it, so that the tests below cover a command as soon
// as the table has it.
func commandPaths() [][]string {
	paths := [][]string{nil}
	for _, c := range commands {
		paths = append(paths, []string{c.name})
	}
	for _, shell := range []string{"bash", "zsh", "fish"} {
		paths = append(paths, []string{"completion", shell})
	}
	paths = append(paths, []string{"ssh"}, []string{"ssh", "authorized-principals"}, []string{"ssh", "sshd-config"})
	return append(paths, []string{"completion"}, []string{"help"})
}

// TestHelpEveryCommand: -h, --help and help COMMAND print the command's help
// on standard output and exit 0.
func TestHelpEveryCommand(t *testing.T) {
	for _, path := range commandPaths() {
		name := "mwictl " + strings.Join(path, " ")
		for _, args := range [][]string{
			append(append([]string(nil), path...), "-h"),
			append(append([]string(nil), path...), "--help"),
			append([]string{"help"}, path...),
		} {
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				var o, e bytes.Buffer
				code := run(args, &o, &e)
				if code != 0 || e.Len() > 0 {
					t.Errorf("exit %d, stderr %q; want 0 and nothing", code, e.String())
				}
				if want := "Usage:\n  " + strings.TrimSpace(name); !strings.Contains(o.String(), want) {
					t.Errorf("stdout does not contain %q:\n%s", want, o.String())
				}
			})
		}
	}
}

// TestUsageErrors: a wrong command line exits 2 with one line on standard
// error that names the mistake and the help to read, and nothing on
// standard output.
func TestUsageErrors(t *testing.T) {
	type usageCase struct {
		args []string
		want string
	}
	var tests []usageCase
	for _, path := range commandPaths() {
		if len(path) > 0 && path[0] == "help" {
			continue
		}
		see := "; see " + strings.TrimSpace("mwictl "+strings.Join(path, " ")) + " --help\n"
		tests = append(tests, usageCase{append(append([]string(nil), path...), "--foo"), "mwictl: unknown flag: --foo" + see})
		if len(path) == 1 && path[0] != "completion" && path[0] != "ssh" || len(path) > 1 && path[1] == "sshd-config" {
			tests = append(tests, usageCase{append(append([]string(nil), path...), "stray"), `mwictl: unexpected argument "stray"` + see})
		}
	}
	tests = append(tests,
		usageCase{[]string{"completion"}, "mwictl: missing command; see mwictl completion --help\n"},
		usageCase{[]string{"ssh"}, "mwictl: missing command; see mwictl ssh --help\n"},
		usageCase{[]string{"ssh", "authorized-principals", "root", "ssh-ed25519"}, "mwictl: missing BASE64KEY; see mwictl ssh authorized-principals --help\n"},
		usageCase{[]string{"ssh", "authorized-principals", "--max-stale", "10", "root", "t", "k"}, `mwictl: invalid argument "10" for "--max-stale" flag: time: missing unit in duration "10"; see mwictl ssh authorized-principals --help` + "\n"},
		usageCase{[]string{"completion", "nushell"}, `mwictl: unknown command "nushell"; see mwictl completion --help` + "\n"},
		usageCase{[]string{"stauts"}, `mwictl: unknown command "stauts" (did you mean status?); see mwictl --help` + "\n"},
		usageCase{[]string{"help", "nope"}, `mwictl: no help for "nope": unknown command; see mwictl help --help` + "\n"},
		usageCase{[]string{"--socket"}, "mwictl: flag needs an argument: --socket; see mwictl --help\n"},
		// Flags may come after the command's arguments (POSIX and pflag).
		usageCase{[]string{"status", "--json", "--json=maybe"}, `mwictl: invalid argument "maybe" for "--json" flag: strconv.ParseBool: parsing "maybe": invalid syntax; see mwictl status --help` + "\n"},
		usageCase{[]string{"status", "-json"}, "mwictl: unknown shorthand flag: 'j' in -json; see mwictl status --help\n"},
	)
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var o, e bytes.Buffer
			code := run(tt.args, &o, &e)
			if code != 2 || e.String() != tt.want || o.Len() > 0 {
				t.Errorf("exit %d, stdout %q, stderr %q; want 2, nothing and %q", code, o.String(), e.String(), tt.want)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	var o, e bytes.Buffer
	if code := run([]string{"--version"}, &o, &e); code != 0 || e.Len() > 0 {
		t.Fatalf("--version: exit %d, stderr %q", code, e.String())
	}
	if want := "mwictl " + version.Get().String() + "\n"; o.String() != want {
		t.Errorf("--version printed %q, want %q", o.String(), want)
	}

	// mwictl version adds the version of mwid, from its API.
	f := serve(t, map[string]http.Handler{"GET /v1/version": answer(200, api.Version{Version: "v1.2.0", Commit: "3f2a9c1"})})
	code, out, errs := mwictl(f.sock, "version")
	want(t, code, out, errs, 0, "", "mwictl "+version.Get().String()+"\n", "mwid v1.2.0 (commit 3f2a9c1)\n")

	// An mwid older than the route.
	old := serve(t, map[string]http.Handler{"GET /v1/version": apiError(404, api.CodeNotFound, "no route GET /v1/version")})
	code, out, errs = mwictl(old.sock, "version")
	want(t, code, out, errs, 0, "", "mwid unknown (older than this mwictl)\n")
}

func TestCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		t.Run(shell, func(t *testing.T) {
			var o, e bytes.Buffer
			if code := run([]string{"completion", shell}, &o, &e); code != 0 || e.Len() > 0 {
				t.Fatalf("exit %d, stderr %q", code, e.String())
			}
			// The script completes mwictl's commands through mwictl itself.
			if !strings.Contains(o.String(), "mwictl") || !strings.Contains(o.String(), "__complete") {
				t.Errorf("the %s script does not call mwictl __complete:\n%.300s", shell, o.String())
			}
		})
	}
	// What the scripts call: the commands, completed from the table.
	var o, e bytes.Buffer
	if code := run([]string{"__complete", "kube-"}, &o, &e); code != 0 {
		t.Fatalf("__complete: exit %d, stderr %q", code, e.String())
	}
	for _, name := range []string{"kube-credential", "kube-clusters", "kubeconfig"} {
		if strings.HasPrefix(name, "kube-") && !strings.Contains(o.String(), name) {
			t.Errorf("completing kube- does not offer %s:\n%s", name, o.String())
		}
	}
}

// TestMan writes a manual page for every command of the table; make man
// runs it with MWI_MAN_DIR set.
func TestMan(t *testing.T) {
	dir := man.Dir(t.TempDir())
	var o, e bytes.Buffer
	if err := man.Generate(newRoot(&env{client: &client.Client{}, stdout: &o, stderr: &e}), dir); err != nil {
		t.Fatal(err)
	}
	for _, path := range commandPaths() {
		if len(path) > 0 && path[0] == "help" {
			continue
		}
		name := strings.Join(append([]string{"mwictl"}, path...), "-") + ".1"
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Error(err)
		} else if !bytes.Contains(data, []byte(".TH ")) {
			t.Errorf("%s is not a manual page", name)
		}
	}
}

// TestFlagDefaults: no two commands share a flag variable with different
// defaults.
func TestFlagDefaults(t *testing.T) {
	var o, e bytes.Buffer
	if err := cli.CheckDefaults(newRoot(&env{client: &client.Client{}, stdout: &o, stderr: &e})); err != nil {
		t.Error(err)
	}
}
