package cli

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/mwi-project/mwi/internal/version"
)

// tree returns a small program: "prog run [--n N]", "prog get NAME" and
// "prog group sub".
func tree(stdout, stderr *bytes.Buffer) *cobra.Command {
	root := &cobra.Command{Use: "prog", Short: "a test program"}
	run := &cobra.Command{Use: "run", Short: "Run it", Args: NoArgs,
		RunE: func(*cobra.Command, []string) error { return errors.New("it failed") }}
	run.Flags().Int("n", 0, "a `N`")
	get := &cobra.Command{Use: "get NAME", Short: "get one", Args: ExactArgs("NAME"),
		RunE: func(c *cobra.Command, args []string) error {
			if args[0] == "bad" {
				return Usagef("bad is not a name")
			}
			c.Println("got", args[0])
			return nil
		}}
	group := &cobra.Command{Use: "group", Short: "a group"}
	group.AddCommand(&cobra.Command{Use: "sub", Short: "a sub", Args: NoArgs, RunE: func(*cobra.Command, []string) error { return nil }})
	root.AddCommand(run, get, group)
	Prepare(root, stdout, stderr)
	return root
}

func TestExecute(t *testing.T) {
	tests := []struct {
		args   []string
		code   int
		stdout string // a substring
		stderr string // all of it
	}{
		{nil, ExitUsage, "", "prog: missing command; see prog --help\n"},
		{[]string{"-h"}, ExitOK, "Usage:\n  prog [command]\n", ""},
		{[]string{"help", "group", "sub"}, ExitOK, "Usage:\n  prog group sub", ""},
		{[]string{"help", "nope"}, ExitUsage, "", `prog: no help for "nope": unknown command; see prog help --help` + "\n"},
		{[]string{"--version"}, ExitOK, "prog " + version.Get().String() + "\n", ""},
		{[]string{"get", "x"}, ExitOK, "got x\n", ""},
		{[]string{"get"}, ExitUsage, "", "prog: missing NAME; see prog get --help\n"},
		{[]string{"get", "x", "y"}, ExitUsage, "", `prog: unexpected argument "y"; see prog get --help` + "\n"},
		{[]string{"get", "bad"}, ExitUsage, "", "prog: bad is not a name; see prog get --help\n"},
		{[]string{"run"}, ExitFailure, "", "prog: it failed\n"},
		{[]string{"run", "--n", "x"}, ExitUsage, "", `prog: invalid argument "x" for "--n" flag: strconv.ParseInt: parsing "x": invalid syntax; see prog run --help` + "\n"},
		{[]string{"run", "extra"}, ExitUsage, "", `prog: unexpected argument "extra"; see prog run --help` + "\n"},
		{[]string{"rnu"}, ExitUsage, "", `prog: unknown command "rnu" (did you mean run?); see prog --help` + "\n"},
		{[]string{"group"}, ExitUsage, "", "prog: missing command; see prog group --help\n"},
		{[]string{"group", "nope"}, ExitUsage, "", `prog: unknown command "nope"; see prog group --help` + "\n"},
		{[]string{"group", "-h"}, ExitOK, "Usage:\n  prog group [command]\n", ""},
		{[]string{"completion", "bash"}, ExitOK, "bash completion", ""},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var o, e bytes.Buffer
			code := Execute(tree(&o, &e), tt.args, nil)
			if code != tt.code || !strings.Contains(o.String(), tt.stdout) || e.String() != tt.stderr {
				t.Errorf("exit %d, stdout:\n%s\nstderr: %q\nwant exit %d, stdout containing %q, stderr %q", code, o.String(), e.String(), tt.code, tt.stdout, tt.stderr)
			}
		})
	}
}

// TestHelpStyle: cobra's own commands are described as the program's are,
// starting in lower case.
func TestHelpStyle(t *testing.T) {
	var o, e bytes.Buffer
	Execute(tree(&o, &e), []string{"help"}, nil)
	for _, line := range []string{"  run         run it\n", "  completion  generate", "  help        help about"} {
		if !strings.Contains(o.String(), line) {
			t.Errorf("help does not contain %q:\n%s", line, o.String())
		}
	}
}

func TestAdvice(t *testing.T) {
	var o, e bytes.Buffer
	code := Execute(tree(&o, &e), []string{"run"}, func(err error) string { return err.Error() + "; try again" })
	if code != ExitFailure || e.String() != "prog: it failed; try again\n" {
		t.Errorf("exit %d, stderr %q", code, e.String())
	}
}
