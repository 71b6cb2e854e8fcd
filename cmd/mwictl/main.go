// Command mwictl is the command-line client of mwid's local API.
//
// Usage:
//
//	mwictl [--socket PATH] status [--json]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/client"
)

const usage = `usage: mwictl [--socket PATH] COMMAND [flags]

commands:
  status [--json]   show whether mwid has joined and its credentials

The socket defaults to $MWI_SOCKET, then ` + client.DefaultSocket + `.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mwictl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	sock := fs.String("socket", os.Getenv("MWI_SOCKET"), "mwid API socket `path`")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	c := &client.Client{Socket: *sock}
	ctx := context.Background()
	var err error
	switch cmd, rest := fs.Arg(0), fs.Args()[1:]; cmd {
	case "status":
		err = status(ctx, c, rest, stdout)
	case "help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "mwictl: unknown command %q\n%s", cmd, usage)
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, "mwictl:", advice(err))
		return 1
	}
	return 0
}

// advice turns the common errors into what to do about them.
func advice(err error) string {
	switch {
	case client.IsNotRunning(err):
		return err.Error() + "; start it (systemctl start mwid) or point --socket or MWI_SOCKET at its api socket"
	case client.IsAccessDenied(err):
		return err.Error() + "; run as a user or group that mwid's config allows on its api socket"
	}
	return err.Error()
}

func status(ctx context.Context, c *client.Client, args []string, w io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	s, err := c.Status(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(s)
	}
	printStatus(w, s, time.Now())
	if s.State != "ready" {
		return errors.New("mwid is " + s.State)
	}
	return nil
}

func printStatus(out io.Writer, s api.Status, now time.Time) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "state:\t%s\n", s.State)
	fmt.Fprintf(w, "issuer:\t%s\n", s.Issuer)
	if s.Joined {
		fmt.Fprintf(w, "bot:\t%s (instance %s, generation %d)\n", s.Bot, s.Instance, s.Generation)
	}
	for _, c := range s.Credentials {
		line := "expires " + when(c.Expires, now)
		if len(c.Principals) > 0 {
			line = "principals " + strings.Join(c.Principals, ", ") + "; " + line
		}
		fmt.Fprintf(w, "%s:\t%s\n", c.Kind, line)
	}
	if s.LastRenewal != nil {
		fmt.Fprintf(w, "last renewal:\t%s\n", when(*s.LastRenewal, now))
	}
	if s.NextRenewal != nil {
		fmt.Fprintf(w, "next renewal:\t%s\n", when(*s.NextRenewal, now))
	}
	if s.LastError != "" {
		fmt.Fprintf(w, "last error:\t%s\n", s.LastError)
	}
	w.Flush()
}

// when formats t with how far it is from now.
func when(t, now time.Time) string {
	d := t.Sub(now).Round(time.Second)
	rel := "in " + d.String()
	if d < 0 {
		rel = (-d).String() + " ago"
	}
	return t.Local().Format(time.RFC3339) + " (" + rel + ")"
}
