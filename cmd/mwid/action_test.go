package main

// The tests here keep the repository's GitHub Action (action.yml) and the
// example workflows in examples/github working: they parse them as YAML,
// run the action's steps with bash as the runner would, and load the
// examples' mwid configurations, so that a change to the configuration
// format or to mwid's flags that breaks them fails here.

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/daemon/output"
)

const (
	actionPath  = "../../action.yml"
	examplesDir = "../../examples/github"
)

type action struct {
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	Inputs      map[string]struct {
		Description string `yaml:"description"`
		Required    bool   `yaml:"required"`
		Default     string `yaml:"default"`
	} `yaml:"inputs"`
	Runs struct {
		Using string       `yaml:"using"`
		Steps []actionStep `yaml:"steps"`
	} `yaml:"runs"`
}

type actionStep struct {
	Name  string            `yaml:"name"`
	Shell string            `yaml:"shell"`
	Env   map[string]string `yaml:"env"`
	Run   string            `yaml:"run"`
}

func loadAction(t *testing.T) action {
	t.Helper()
	data, err := os.ReadFile(actionPath)
	if err != nil {
		t.Fatal(err)
	}
	var a action
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	if err := dec.Decode(&a); err != nil {
		t.Fatalf("%s: %v", actionPath, err)
	}
	return a
}

func TestActionDefinition(t *testing.T) {
	a := loadAction(t)
	if a.Name == "" || !strings.Contains(a.Description, "id-token: write") {
		t.Errorf("name %q, description %q: want a name and the permission the job needs", a.Name, a.Description)
	}
	for name, required := range map[string]bool{"mwid-path": true, "config": true, "output-dir": false} {
		in, ok := a.Inputs[name]
		if !ok || in.Required != required || in.Description == "" {
			t.Errorf("input %s = %+v, present %v; want required=%v and a description", name, in, ok, required)
		}
	}
	if len(a.Inputs) != 3 {
		t.Errorf("inputs %v; want mwid-path, config and output-dir", a.Inputs)
	}
	if a.Runs.Using != "composite" || len(a.Runs.Steps) == 0 {
		t.Fatalf("runs = %+v, want composite steps", a.Runs)
	}
	for _, s := range a.Runs.Steps {
		if s.Shell != "bash" {
			t.Errorf("step %q: shell %q, want bash", s.Name, s.Shell)
		}
		// Inputs reach scripts through env, never by expansion into the
		// script's text, where a crafted value would run as code.
		if strings.Contains(s.Run, "${{") {
			t.Errorf("step %q expands an expression in its script", s.Name)
		}
	}
}

var inputExpr = regexp.MustCompile(`^\$\{\{\s*inputs\.([a-z-]+)\s*\}\}$`)

// runAction runs the action's steps as a runner would, in order, stopping
// at the first that fails, and returns that step's output and error.
func runAction(t *testing.T, runnerTemp string, inputs map[string]string, env ...string) (string, error) {
	t.Helper()
	for i, s := range loadAction(t).Runs.Steps {
		script := filepath.Join(t.TempDir(), "step.sh")
		os.WriteFile(script, []byte(s.Run), 0o600)
		cmd := exec.Command("bash", "--noprofile", "--norc", "-eo", "pipefail", script)
		cmd.Env = append(os.Environ(), "RUNNER_TEMP="+runnerTemp, "GITHUB_PATH="+filepath.Join(runnerTemp, "github_path"))
		for k, v := range s.Env {
			m := inputExpr.FindStringSubmatch(v)
			if m == nil {
				t.Fatalf("step %d: env %s = %q is not an input", i, k, v)
			}
			cmd.Env = append(cmd.Env, k+"="+inputs[m[1]])
		}
		cmd.Env = append(cmd.Env, env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return string(out), err
		}
	}
	return "", nil
}

func TestActionRuns(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	dir := t.TempDir()
	argsFile := filepath.Join(dir, "args")
	fake := filepath.Join(dir, "mwid")
	os.WriteFile(fake, []byte("#!/bin/sh\necho \"$@\" > \""+argsFile+"\"\n"), 0o644)
	tarball := filepath.Join(dir, "mwid-linux-amd64.tar.gz")
	if out, err := exec.Command("tar", "-czf", tarball, "-C", dir, "mwid").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v: %s", err, out)
	}
	for _, artifact := range []string{fake, tarball} {
		t.Run(filepath.Base(artifact), func(t *testing.T) {
			runnerTemp := t.TempDir()
			os.Remove(argsFile)
			out, err := runAction(t, runnerTemp, map[string]string{"mwid-path": artifact, "config": "ci/mwid.yaml", "output-dir": "out"})
			if err != nil {
				t.Fatalf("action: %v\n%s", err, out)
			}
			installed := filepath.Join(runnerTemp, "mwi", "bin", "mwid")
			fi, err := os.Stat(installed)
			if err != nil || fi.Mode().Perm() != 0o755 {
				t.Fatalf("installed mwid: %v, mode %v; want 0755", err, fi)
			}
			args, _ := os.ReadFile(argsFile)
			if string(args) != "--oneshot -c ci/mwid.yaml\n" {
				t.Errorf("mwid ran with %q, want --oneshot -c ci/mwid.yaml", args)
			}
			path, _ := os.ReadFile(filepath.Join(runnerTemp, "github_path"))
			if string(path) != filepath.Dir(installed)+"\n" {
				t.Errorf("GITHUB_PATH got %q", path)
			}
		})
	}

	t.Run("no artifact", func(t *testing.T) {
		out, err := runAction(t, t.TempDir(), map[string]string{"mwid-path": filepath.Join(dir, "none"), "config": "c.yaml"})
		if err == nil || !strings.Contains(out, "::error::mwid-path: no file at") {
			t.Fatalf("action: %v\n%s", err, out)
		}
	})

	// With this test binary as mwid: a failed join fails the step, and the
	// reason is in the job's log.
	t.Run("join fails", func(t *testing.T) {
		cfg := filepath.Join(t.TempDir(), "mwid.yaml")
		os.WriteFile(cfg, []byte(githubConfig), 0o600)
		out, err := runAction(t, t.TempDir(), map[string]string{"mwid-path": os.Args[0], "config": cfg},
			"MWID_TEST_MAIN=1", "ACTIONS_ID_TOKEN_REQUEST_URL=", "ACTIONS_ID_TOKEN_REQUEST_TOKEN=")
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 1 || !strings.Contains(out, "not running in GitHub Actions with id-token: write permission?") {
			t.Fatalf("action: %v\n%s", err, out)
		}
	})
}

type workflow struct {
	Permissions map[string]string `yaml:"permissions"`
	Jobs        map[string]struct {
		Permissions map[string]string `yaml:"permissions"`
		Steps       []struct {
			Uses string            `yaml:"uses"`
			With map[string]string `yaml:"with"`
			Run  string            `yaml:"run"`
		} `yaml:"steps"`
	} `yaml:"jobs"`
}

// TestExamples checks that each example workflow asks for its ID token,
// runs this repository's action with an mwid configuration that loads,
// joins with the GitHub Actions token, and writes what the workflow's
// command then reads.
func TestExamples(t *testing.T) {
	for _, tc := range []struct {
		workflow, config, command, output string
	}{
		{"ssh.yml", "mwid-ssh.yaml", "ssh -F out/ssh_config ", "identity"},
		{"kubernetes.yml", "mwid-kubernetes.yaml", "kubectl --kubeconfig out/kubeconfig.yaml get pods", "kubernetes"},
	} {
		t.Run(tc.workflow, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(examplesDir, tc.workflow))
			if err != nil {
				t.Fatal(err)
			}
			var w workflow
			if err := yaml.Unmarshal(data, &w); err != nil {
				t.Fatalf("%s: %v", tc.workflow, err)
			}
			if len(w.Jobs) != 1 {
				t.Fatalf("%s: %d jobs, want 1", tc.workflow, len(w.Jobs))
			}
			for name, job := range w.Jobs {
				if w.Permissions["id-token"] != "write" && job.Permissions["id-token"] != "write" {
					t.Errorf("job %s: no permissions: id-token: write", name)
				}
				var usesAction, runs bool
				for _, s := range job.Steps {
					if strings.HasPrefix(s.Uses, "mwi-project/mwi@") {
						usesAction = true
						if s.With["config"] != tc.config || s.With["mwid-path"] == "" || s.With["output-dir"] != "out" {
							t.Errorf("the action's inputs %v; want config %s, mwid-path and output-dir out", s.With, tc.config)
						}
					}
					runs = runs || (usesAction && strings.Contains(s.Run, tc.command))
				}
				if !usesAction || !runs {
					t.Errorf("job %s: uses the action: %v, then runs %q: %v", name, usesAction, tc.command, runs)
				}
			}

			cfg, err := config.Load(filepath.Join(examplesDir, tc.config))
			if err != nil {
				t.Fatal(err)
			}
			ob := cfg.Onboarding
			if ob.JoinMethod != "github" || !ob.IDToken.GitHubActions || ob.TokenName == "" {
				t.Errorf("%s: onboarding %+v; want join_method github with a github_actions ID token", tc.config, ob)
			}
			wantDir, _ := filepath.Abs(filepath.Join(examplesDir, "out"))
			if !slices.ContainsFunc(cfg.Outputs, func(o output.Output) bool { return o.Type() == tc.output && outputDirectory(o) == wantDir }) {
				t.Errorf("%s: outputs %+v; want a %s output into out", tc.config, cfg.Outputs, tc.output)
			}
		})
	}
}

// outputDirectory returns the directory an output writes into.
func outputDirectory(o output.Output) string {
	switch o := o.(type) {
	case output.Kubernetes:
		return o.Directory
	case output.Identity:
		return o.Directory
	}
	return ""
}
