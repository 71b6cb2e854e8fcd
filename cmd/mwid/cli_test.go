package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mwi-project/mwi/internal/cli"
	"github.com/mwi-project/mwi/internal/cli/man"
	"github.com/mwi-project/mwi/internal/version"
)

// TestCommandLine: mwid's help and version go to standard output and exit
// 0; a wrong command line exits 2 with one line naming the mistake, before
// any configuration is read.
func TestCommandLine(t *testing.T) {
	tests := []struct {
		args   []string
		code   int
		stdout string // a substring
		stderr string // all of it
	}{
		{[]string{"-h"}, 0, "Usage:\n  mwid [flags]\n", ""},
		{[]string{"--help"}, 0, "-c, --config FILE", ""},
		{[]string{"--version"}, 0, "mwid " + version.Get().String() + "\n", ""},
		{[]string{"--nope"}, 2, "", "mwid: unknown flag: --nope; see mwid --help\n"},
		{[]string{"-oneshot"}, 2, "", "mwid: unknown shorthand flag: 'o' in -oneshot; see mwid --help\n"},
		{[]string{"-c"}, 2, "", "mwid: flag needs an argument: 'c' in -c; see mwid --help\n"},
		{[]string{"-c", "/nonexistent/mwid.yaml", "start"}, 2, "", `mwid: unexpected argument "start"; see mwid --help` + "\n"},
		{[]string{"completion", "bash"}, 2, "", `mwid: unexpected argument "completion"; see mwid --help` + "\n"},
		{[]string{"help"}, 2, "", `mwid: unexpected argument "help"; see mwid --help` + "\n"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var o, e bytes.Buffer
			code := run(tt.args, &o, &e)
			if code != tt.code || !strings.Contains(o.String(), tt.stdout) || e.String() != tt.stderr || (tt.stdout == "" && o.Len() > 0) {
				t.Errorf("exit %d, stdout:\n%s\nstderr: %q\nwant exit %d, stdout containing %q, stderr %q", code, o.String(), e.String(), tt.code, tt.stdout, tt.stderr)
			}
		})
	}
}

// TestMan writes mwid's manual page; make man runs it with MWI_MAN_DIR
// set.
func TestMan(t *testing.T) {
	dir := man.Dir(t.TempDir())
	var o, e bytes.Buffer
	if err := man.Generate(newRoot(&o, &e), dir); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "mwid.1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{`.TH "MWID" "1"`, `\fB--oneshot\fP`, `\fB--config\fP`} {
		if !bytes.Contains(data, []byte(s)) {
			t.Errorf("mwid.1 does not contain %q:\n%s", s, data)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "mwid-completion.1")); err == nil {
		t.Error("a page for a completion command mwid does not have")
	}
}

// TestFlagDefaults: no two commands share a flag variable with different
// defaults.
func TestFlagDefaults(t *testing.T) {
	var o, e bytes.Buffer
	if err := cli.CheckDefaults(newRoot(&o, &e)); err != nil {
		t.Error(err)
	}
}
