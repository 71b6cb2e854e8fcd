package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMain runs mwid's main instead of the tests when MWID_TEST_MAIN=1, so
// that a test can run this binary as mwid.
func TestMain(m *testing.M) {
	if os.Getenv("MWID_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// mwid runs this test binary as mwid with args and returns its exit code
// and standard error.
func mwid(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "MWID_TEST_MAIN=1",
		// As if not in GitHub Actions, even when the tests run there.
		"ACTIONS_ID_TOKEN_REQUEST_URL=", "ACTIONS_ID_TOKEN_REQUEST_TOKEN=")
	cmd.Env = append(cmd.Env, env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stderr.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), stderr.String()
	}
	t.Fatal(err)
	return 0, ""
}

// lastLine returns the last line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

const githubConfig = `version: v1
issuer:
  address: 127.0.0.1:1
  ca_pins: ["sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]
onboarding:
  join_method: github
  token_name: github-ci
  id_token: {github_actions: {audience: mwi}}
outputs:
  - type: identity
    directory: out
`

func TestOneshotFailureExitCode(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "mwid.yaml")
	os.WriteFile(cfg, []byte(githubConfig), 0o600)
	// A tbot file with oneshot: true runs as mwid --oneshot does, with the
	// pin of mwid --ca-pin.
	tbot := filepath.Join(dir, "tbot.yaml")
	os.WriteFile(tbot, []byte("version: v2\nproxy_server: 127.0.0.1:1\noneshot: true\nonboarding: {join_method: github, token: github-ci}\n"+
		"outputs:\n  - type: identity\n    destination: {type: directory, path: "+filepath.Join(dir, "out")+"}\n"), 0o600)
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("version: v1\nonboarding: {join_method: magic}\n"), 0o600)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"not in GitHub Actions", []string{"--oneshot", "-c", cfg},
			"mwid: join: ID token from GitHub Actions: $ACTIONS_ID_TOKEN_REQUEST_URL and $ACTIONS_ID_TOKEN_REQUEST_TOKEN not set: not running in GitHub Actions with id-token: write permission?"},
		{"oneshot: true", []string{"-c", tbot, "--ca-pin", "sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="},
			"mwid: join: ID token from GitHub Actions: $ACTIONS_ID_TOKEN_REQUEST_URL and $ACTIONS_ID_TOKEN_REQUEST_TOKEN not set"},
		{"bad --ca-pin", []string{"-c", tbot, "--ca-pin", "sha256:x"}, `--ca-pin "sha256:x" is not a pin`},
		{"bad configuration", []string{"--oneshot", "-c", bad}, `bad.yaml:2: onboarding.join_method: unknown join method "magic"`},
		{"no configuration", []string{"--oneshot", "-c", filepath.Join(dir, "none.yaml")}, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stderr := mwid(t, nil, tc.args...)
			if code != 1 || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit code %d, stderr:\n%s\nwant 1 and %q", code, stderr, tc.want)
			}
			if tc.name == "not in GitHub Actions" && lastLine(stderr) != tc.want {
				t.Errorf("last line of stderr %q, want the reason alone", lastLine(stderr))
			}
			if _, err := os.Stat(filepath.Join(dir, "out")); err == nil {
				t.Error("a failed one-shot wrote outputs")
			}
		})
	}
}
