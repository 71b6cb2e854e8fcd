// Package cli holds what MWI's programs share on the command line: one
// help style, the exit codes, --version, and how a cobra command tree's
// errors become them.
//
// A program builds its whole command tree in one place, passes it to
// Prepare, and returns the code of Execute from its run function:
//
//	0 (ExitOK)      success, and -h, --help, help and --version
//	1 (ExitFailure) the command failed; one line on standard error says why
//	2 (ExitUsage)   the command line is wrong; one line names the mistake and
//	                the --help that shows the right one
//
// Help goes to standard output, errors to standard error.
//
// Package man writes the manual pages of the same command trees.
package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/mwi-project/mwi/internal/version"
)

// The exit codes of every MWI program.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

// UsageError is a mistake in the command line.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Usagef returns a UsageError with a formatted message.
func Usagef(format string, args ...any) error {
	return &UsageError{fmt.Errorf(format, args...)}
}

// failure is an error returned by a command's RunE: the command ran and
// failed. Every other error from cobra is a mistake in the command line.
type failure struct{ err error }

func (f *failure) Error() string { return f.err.Error() }
func (f *failure) Unwrap() error { return f.err }

// NoArgs refuses positional arguments, for a command that takes only flags.
func NoArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return Usagef("unexpected argument %q", args[0])
	}
	return nil
}

// ExactArgs requires the positional arguments named by names, in order,
// and refuses more.
func ExactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) < len(names):
			return Usagef("missing %s", names[len(args)])
		case len(args) > len(names):
			return Usagef("unexpected argument %q", args[len(names)])
		}
		return nil
	}
}

// Prepare finishes the command tree under root before Execute runs it: it
// sets --version (from package version), the outputs, the shell completion
// command (unless root disables it), the help style, and makes a command
// that only groups others refuse to run without one of them.
func Prepare(root *cobra.Command, stdout, stderr io.Writer) {
	root.Version = version.Get().String()
	// --version alone: cobra would take -v too, which a program may want
	// for something else one day.
	root.Flags().Bool("version", false, "print the version and commit "+root.Name()+" was built from")
	// The commands in the order the program lists them.
	cobra.EnableCommandSorting = false
	root.SetVersionTemplate("{{.Name}} {{.Version}}\n")
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SilenceErrors = true
	root.SilenceUsage = true
	// Flag errors are usage errors, whichever command's flags they are.
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &UsageError{err} })
	// The defaults, made now rather than in Execute so that the loop below
	// applies to them too.
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	walk(root, func(c *cobra.Command) {
		c.Flags().SortFlags = false
		if c.SuggestionsMinimumDistance <= 0 {
			c.SuggestionsMinimumDistance = 2 // cobra's default, which it sets only for itself
		}
		// cobra's own commands start with a capital, MWI's do not
		// (unless with a name such as MWI).
		if len(c.Short) > 1 && unicode.IsUpper(rune(c.Short[0])) && unicode.IsLower(rune(c.Short[1])) {
			c.Short = strings.ToLower(c.Short[:1]) + c.Short[1:]
		}
		c.DisableFlagsInUseLine = c.HasSubCommands()
		switch {
		case c.Name() == "help" && c.Parent() == root:
			c.Args = helpArgs
		case c.HasSubCommands() && !c.Runnable():
			// cobra shows the help of a group, and exits 0, for a missing
			// or unknown command under it: both are usage errors.
			c.Args = cobra.ArbitraryArgs
			c.RunE = runGroup
		}
		if run := c.RunE; run != nil {
			c.RunE = func(c *cobra.Command, args []string) error {
				err := run(c, args)
				var ue *UsageError
				if err != nil && !errors.As(err, &ue) {
					return &failure{err}
				}
				return err
			}
		}
	})
	root.SetUsageTemplate(usageTemplate)
}

// usageTemplate is cobra's, except that a command that groups others shows
// only "COMMAND [command]" on its usage line, since it does nothing alone.
var usageTemplate = strings.Replace((&cobra.Command{}).UsageTemplate(),
	"{{if .Runnable}}", "{{if and .Runnable (not .HasAvailableSubCommands)}}", 1)

func walk(c *cobra.Command, f func(*cobra.Command)) {
	f(c)
	for _, sub := range c.Commands() {
		walk(sub, f)
	}
}

// runGroup runs a command that only groups others: it is reached only
// without one of them, or with an unknown one.
func runGroup(c *cobra.Command, args []string) error {
	if len(args) == 0 {
		return Usagef("missing command")
	}
	return unknownCommand(c, args[0])
}

func unknownCommand(c *cobra.Command, name string) error {
	if s := c.SuggestionsFor(name); len(s) > 0 {
		return Usagef("unknown command %q (did you mean %s?)", name, strings.Join(s, " or "))
	}
	return Usagef("unknown command %q", name)
}

// helpArgs refuses help for a command that does not exist, which cobra
// answers with the root's usage and exit code 0.
func helpArgs(c *cobra.Command, args []string) error {
	if _, rest, err := c.Root().Find(args); err != nil || len(rest) > 0 {
		return Usagef("no help for %q: unknown command", strings.Join(args, " "))
	}
	return nil
}

// Execute runs root with args and returns the exit code. advice turns the
// error of a failed command into the one line that is printed after the
// program's name; nil prints the error as it is.
func Execute(root *cobra.Command, args []string, advice func(error) string) int {
	if args == nil {
		args = []string{} // cobra reads os.Args when args are nil
	}
	root.SetArgs(args)
	c, err := root.ExecuteC()
	var f *failure
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &f):
		msg := f.err.Error()
		if advice != nil {
			msg = advice(f.err)
		}
		fmt.Fprintf(root.ErrOrStderr(), "%s: %s\n", root.Name(), msg)
		return ExitFailure
	}
	if c == nil {
		c = root
	}
	fmt.Fprintf(root.ErrOrStderr(), "%s: %s; see %s --help\n", root.Name(), oneLine(err.Error()), c.CommandPath())
	return ExitUsage
}

// oneLine joins the lines of a message, trimmed, with "; ".
func oneLine(s string) string {
	var lines []string
	for l := range strings.Lines(s) {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "; ")
}

// CheckDefaults returns an error naming every flag of root's commands
// whose value, before any parsing, is not its default. That happens when
// two commands bind flags with different defaults to one variable: the
// flag registered last sets the variable, and the other command then runs
// with a default its help does not show. Each program's tests call it.
func CheckDefaults(root *cobra.Command) error {
	var bad []string
	walk(root, func(c *cobra.Command) {
		c.LocalFlags().VisitAll(func(f *pflag.Flag) {
			if f.Value.String() != f.DefValue {
				bad = append(bad, fmt.Sprintf("%s --%s is %q before parsing, but its default is %q (is its variable shared with another command's flag?)",
					c.CommandPath(), f.Name, f.Value.String(), f.DefValue))
			}
		})
	})
	if len(bad) > 0 {
		return errors.New(strings.Join(bad, "\n"))
	}
	return nil
}
