// Command mwictl is the command-line client of mwid's local API.
//
// Usage:
//
//	mwictl [--socket PATH] status [--json]
//	mwictl [--socket PATH] identity [--json | --text]
//	mwictl [--socket PATH] known-hosts [--host NAME]...
//	mwictl [--socket PATH] ssh-config [--nodes] [-o FILE]
//	mwictl [--socket PATH] renew [--json]
//	mwictl [--socket PATH] reload [--json]
//	mwictl [--socket PATH] ready [--json]
//	mwictl [--socket PATH] kubeconfig [--cluster NAME] [-o FILE] [--embed] [--context-template T]
//	mwictl [--socket PATH] kube-credential --cluster NAME
//	mwictl [--socket PATH] kube-clusters [--json]
//	mwictl [--socket PATH] version
//	mwictl [--socket PATH] ssh authorized-principals [--dir DIR] [--max-stale DURATION] USER KEYTYPE BASE64KEY
//	mwictl [--socket PATH] ssh sshd-config [--check FILE] [--user USER]
//	mwictl completion bash|zsh|fish
//	mwictl --version
//
// It exits 0 on success, 1 when the command failed, with one line on
// standard error that says what to do, and 2 when the command line is wrong,
// with one line that names the mistake. -h, --help and help print the help
// on standard output and exit 0.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/client"
	"github.com/mwi-project/mwi/daemon/sshconfig"
	"github.com/mwi-project/mwi/internal/cli"
	"github.com/mwi-project/mwi/internal/safefs"
	"github.com/mwi-project/mwi/internal/version"
)

// command is one mwictl command.
type command struct {
	name  string
	help  string
	flags func(fs *pflag.FlagSet, o *options) // nil: it takes none
	run   func(e *env) error
}

// options holds the flags of every command; each binds those it takes.
type options struct {
	json, text, embed, nodes         bool
	output, cluster, contextTemplate string
	hosts                            []string
}

// commands lists every command, in the order the help shows them.
var commands = []command{
	{"status", "show whether mwid has joined, its credentials, outputs and configuration",
		jsonFlag("print the status as JSON, and exit 0 whatever the state"), status},
	{"identity", "print the SSH certificate in authorized_keys form", func(fs *pflag.FlagSet, o *options) {
		fs.BoolVar(&o.json, "json", false, "print the identity as JSON")
		fs.BoolVar(&o.text, "text", false, "print a readable summary of the certificate")
	}, identity},
	{"known-hosts", "print known_hosts lines trusting the issuer's host CAs (for KnownHostsCommand)", func(fs *pflag.FlagSet, o *options) {
		fs.StringArrayVar(&o.hosts, "host", nil, "trust the host CAs for host `NAME` (repeatable) instead of mwid's ssh.hosts patterns")
	}, knownHosts},
	{"ssh-config", "print, or write to FILE, an ssh_config block that uses mwid", func(fs *pflag.FlagSet, o *options) {
		fs.StringVarP(&o.output, "output", "o", "", "write the block to `FILE`, replacing it atomically, instead of printing it")
		fs.BoolVar(&o.nodes, "nodes", false, "add a Host block for each host the issuer lists as one the bot's roles let it log in to")
	}, sshConfig},
	{"renew", "renew the credentials now", jsonFlag("print mwid's status after the renewal as JSON"), renew},
	{"reload", "reload mwid's configuration file", jsonFlag("print the result as JSON"), reload},
	{"ready", "exit 0 if mwid holds valid credentials, 1 if not", jsonFlag("print the readiness as JSON"), ready},
	{"kubeconfig", "print, or write to FILE, a kubeconfig whose users get credentials from mwictl", func(fs *pflag.FlagSet, o *options) {
		fs.StringVar(&o.cluster, "cluster", "", "only the cluster `NAME` (default: every cluster mwid holds a certificate for)")
		fs.StringVarP(&o.output, "output", "o", "", "write the kubeconfig to `FILE`, replacing it atomically with mode 0600, instead of printing it")
		fs.BoolVar(&o.embed, "embed", false, "put the client certificates and private keys inline instead of the exec plugin (the keys are then on disk)")
		fs.StringVar(&o.contextTemplate, "context-template", "", "name the contexts with `TEMPLATE`, in which {{.Cluster}} and {{.Bot}} are replaced (default {{.Cluster}})")
	}, kubeconfig},
	{"kube-credential", "print the ExecCredential for a cluster (kubectl's exec plugin)", func(fs *pflag.FlagSet, o *options) {
		fs.StringVar(&o.cluster, "cluster", "", "the Kubernetes cluster `NAME` (required)")
	}, kubeCredential},
	{"kube-clusters", "list the Kubernetes clusters mwid holds certificates for", jsonFlag("print the clusters as JSON"), kubeClusters},
	{"version", "print the versions of mwictl and of the mwid it talks to", nil, printVersion},
}

func jsonFlag(usage string) func(*pflag.FlagSet, *options) {
	return func(fs *pflag.FlagSet, o *options) { fs.BoolVar(&o.json, "json", false, usage) }
}

// timeNow is the clock; tests stop it.
var timeNow = time.Now

// env is what a command runs with.
type env struct {
	ctx    context.Context
	client *client.Client
	stdout io.Writer
	stderr io.Writer
	opts   options
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	e := &env{ctx: context.Background(), client: &client.Client{}, stdout: stdout, stderr: stderr}
	return cli.Execute(newRoot(e), args, advice)
}

// newRoot returns mwictl's command tree, every command running with e.
func newRoot(e *env) *cobra.Command {
	root := &cobra.Command{
		Use:   "mwictl",
		Short: "the command-line client of mwid, MWI's machine daemon",
		Long: "mwictl is the command-line client of mwid, MWI's machine daemon, through its local API.\n\n" +
			"The socket defaults to $MWI_SOCKET, then " + client.DefaultSocket + ".",
	}
	root.PersistentFlags().StringVar(&e.client.Socket, "socket", os.Getenv("MWI_SOCKET"), "mwid's API socket `PATH` (default $MWI_SOCKET, then "+client.DefaultSocket+")")
	for _, c := range commands {
		cmd := &cobra.Command{
			Use:   c.name,
			Short: c.help,
			Args:  cli.NoArgs,
			RunE:  func(*cobra.Command, []string) error { return c.run(e) },
		}
		if c.flags != nil {
			c.flags(cmd.Flags(), &e.opts)
		}
		root.AddCommand(cmd)
	}
	root.AddCommand(newSSHCommand(e))
	cli.Prepare(root, e.stdout, e.stderr)
	return root
}

// advice turns the common errors into what to do about them, on one line.
func advice(err error) string {
	msg := oneLine(err.Error())
	switch {
	case client.IsNotRunning(err):
		return msg + "; start it (systemctl start mwid) or point --socket or MWI_SOCKET at its api socket"
	case client.IsAccessDenied(err):
		return msg + "; run as a user or group that mwid's config allows on its api socket"
	case client.IsNotJoined(err):
		return msg + "; mwictl status shows why"
	case client.IsNotFound(err):
		return msg
	case client.IsRenewFailed(err):
		return "renewal failed: " + msg + "; mwictl status and mwid's log (journalctl -u mwid) say more"
	case client.IsReloadFailed(err):
		return "reload failed: " + msg + "; fix the file and run mwictl reload again"
	}
	return msg
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func status(e *env) error {
	s, err := e.client.Status(e.ctx)
	if err != nil {
		return err
	}
	if e.opts.json {
		return writeJSON(e.stdout, s)
	}
	printStatus(e.stdout, s, timeNow())
	if s.State != "ready" {
		if r := s.Refusal; r != nil {
			return fmt.Errorf("mwid is refused by the issuer (%s): %s", r.Code, r.Action)
		}
		if s.LastError != "" {
			return fmt.Errorf("mwid is %s: %s", s.State, s.LastError)
		}
		return fmt.Errorf("mwid is %s", s.State)
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
	printCredentials(w, s.Credentials, now)
	if s.LastRenewal != nil {
		fmt.Fprintf(w, "last renewal:\t%s\n", when(*s.LastRenewal, now))
	}
	if s.NextRenewal != nil {
		fmt.Fprintf(w, "next renewal:\t%s\n", when(*s.NextRenewal, now))
	}
	if s.LastError != "" {
		fmt.Fprintf(w, "last error:\t%s\n", failure(s.LastError, s.LastErrorAt, now))
	}
	if r := s.Refusal; r != nil {
		fmt.Fprintf(w, "refused:\t%s: %s\n", r.Code, r.Message)
		fmt.Fprintf(w, "to do:\t%s\n", r.Action)
	}
	for _, o := range s.Outputs {
		line := o.Path + ", not written yet"
		if o.LastWrite != nil {
			line = o.Path + ", written " + when(*o.LastWrite, now)
		}
		fmt.Fprintf(w, "output %s:\t%s\n", o.Type, line)
		if o.LastError != "" {
			fmt.Fprintf(w, "\terror %s\n", failure(o.LastError, o.LastErrorAt, now))
		}
		if a := o.AccessDir; a != nil {
			printAccessDir(w, a, now)
		}
	}
	if c := s.Config; c.Path != "" || c.Revision != "" {
		fmt.Fprintf(w, "config:\t%s, revision %s, loaded %s\n", c.Path, c.Revision, when(c.LoadedAt, now))
		if c.LastReloadError != "" {
			fmt.Fprintf(w, "reload error:\t%s; still using revision %s\n", failure(c.LastReloadError, c.LastReloadAt, now), c.Revision)
		}
	}
	w.Flush()
}

// printAccessDir prints the state of an ssh_host output's access
// directory: when mwid last wrote it, and last heard the issuer's locks.
func printAccessDir(w io.Writer, a *api.AccessDirStatus, now time.Time) {
	line := a.Path + ", not written yet"
	if a.LastWrite != nil {
		line = a.Path + ", written " + when(*a.LastWrite, now)
	}
	fmt.Fprintf(w, "\taccess dir %s\n", line)
	locks := "never heard from the issuer"
	if a.LocksUpdated != nil {
		locks = "updated " + when(*a.LocksUpdated, now)
	}
	fmt.Fprintf(w, "\tlocks %d, %s\n", a.Locks, locks)
	if a.PollError != "" {
		fmt.Fprintf(w, "\tpoll error %s\n", oneLine(a.PollError))
	}
	if a.LastError != "" {
		fmt.Fprintf(w, "\taccess dir error %s\n", oneLine(a.LastError))
	}
}

func printCredentials(w io.Writer, creds []api.Credential, now time.Time) {
	for _, c := range creds {
		line := "expires " + when(c.Expires, now)
		if len(c.Principals) > 0 {
			line = "principals " + strings.Join(c.Principals, ", ") + "; " + line
		}
		kind := c.Kind
		if c.Cluster != "" {
			kind += " " + c.Cluster // kubernetes: principals are the user, then the groups
		}
		fmt.Fprintf(w, "%s:\t%s\n", kind, line)
	}
}

func identity(e *env) error {
	if e.opts.json && e.opts.text {
		return cli.Usagef("--json and --text exclude each other")
	}
	id, err := e.client.Identity(e.ctx)
	if err != nil {
		return err
	}
	switch {
	case e.opts.json:
		return writeJSON(e.stdout, id)
	case e.opts.text:
		printIdentity(e.stdout, id, timeNow())
	default:
		fmt.Fprintln(e.stdout, strings.TrimRight(id.Certificate, "\n"))
	}
	return nil
}

func printIdentity(out io.Writer, id api.Identity, now time.Time) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "bot:\t%s (instance %s)\n", id.Bot, id.Instance)
	fmt.Fprintf(w, "principals:\t%s\n", strings.Join(id.Principals, ", "))
	fmt.Fprintf(w, "key id:\t%s\n", id.KeyID)
	fmt.Fprintf(w, "serial:\t%d\n", id.Serial)
	fmt.Fprintf(w, "valid after:\t%s\n", when(id.ValidAfter, now))
	fmt.Fprintf(w, "valid before:\t%s\n", when(id.ValidBefore, now))
	w.Flush()
}

// knownHosts prints only the known_hosts lines, since ssh reads them from
// the standard output of KnownHostsCommand.
func knownHosts(e *env) error {
	kh, err := e.client.KnownHosts(e.ctx, e.opts.hosts...)
	if err != nil {
		return err
	}
	_, err = io.WriteString(e.stdout, withNewline(kh))
	return err
}

// sshConfig prints or writes mwid's ssh_config block, and with --nodes a
// Host block after it for each host the issuer lists as reachable. With
// --nodes, a failure to list them fails the command, and nothing is
// written: a file that silently lost its hosts would be worse.
func sshConfig(e *env) error {
	self, err := executable()
	if err != nil {
		return fmt.Errorf("cannot find mwictl's own path for KnownHostsCommand: %w", err)
	}
	cfg, err := e.client.SSHConfig(e.ctx, self)
	if err != nil {
		return err
	}
	cfg = withNewline(cfg)
	if e.opts.nodes {
		blocks, err := e.nodeBlocks(self)
		if err != nil {
			return err
		}
		cfg += blocks
	}
	if e.opts.output == "" {
		_, err = io.WriteString(e.stdout, cfg)
		return err
	}
	return e.writeOutput(e.opts.output, []byte(cfg), 0o644)
}

// nodeBlocks returns the Host blocks of the hosts mwid's bot may reach,
// whose KnownHostsCommand runs mwictl at self. Names and logins that
// ssh_config could not carry as they are are skipped, with a warning.
func (e *env) nodeBlocks(self string) (string, error) {
	nodes, err := e.client.SSHNodes(e.ctx)
	if err != nil {
		return "", err
	}
	sock, err := filepath.Abs(e.client.SocketPath())
	if err != nil {
		return "", err
	}
	hosts, warnings := sshconfig.Hosts(nodes.Nodes, localUser())
	for _, w := range warnings {
		fmt.Fprintf(e.stderr, "mwictl: warning: %s\n", w)
	}
	if nodes.Truncated {
		fmt.Fprintf(e.stderr, "mwictl: warning: the bot may reach more hosts than the %d the issuer lists at most; the others have no Host block\n", api.MaxReachableNodes)
	}
	if len(hosts) == 0 {
		fmt.Fprintf(e.stderr, "mwictl: warning: the issuer lists no host that the roles of bot %s let it log in to\n", nodes.Bot)
	}
	return sshconfig.Config{Bot: nodes.Bot, Agent: nodes.Agent, Mwictl: self, APISocket: sock}.HostBlocks(hosts), nil
}

// localUser returns the login ssh uses when a Host block names none: that
// of the user running mwictl, or "" if it cannot be told.
var localUser = func() string {
	u, err := user.Current()
	if err != nil {
		return ""
	}
	return u.Username
}

// writeOutput writes data to the file named by --output, atomically, and
// says so.
// safefs refuses a symbolic link in any component of the path and a
// directory that another user could change.
func (e *env) writeOutput(path string, data []byte, mode os.FileMode) error {
	if err := safefs.WriteFile(path, data, mode); err != nil {
		// The temporary file's name means nothing to the reader.
		var pe *os.PathError
		var le *os.LinkError
		switch {
		case errors.As(err, &pe):
			err = pe.Err
		case errors.As(err, &le):
			err = le.Err
		}
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	fmt.Fprintf(e.stdout, "wrote %s\n", path)
	return nil
}

// executable returns the absolute path of this mwictl, symbolic links
// resolved, so that the ssh_config block runs this same binary.
func executable() (string, error) {
	p, err := os.Executable()
	if err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(p)
}

func renew(e *env) error {
	s, err := e.client.Renew(e.ctx)
	if err != nil {
		return err
	}
	if e.opts.json {
		return writeJSON(e.stdout, s)
	}
	now := timeNow()
	w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "renewed:\tgeneration %d\n", s.Generation)
	if r := s.Renewal; r != nil && r.Shared {
		// Not a renewal of its own: say so, or a caller would believe
		// the issuer was just asked.
		fmt.Fprintf(w, "shared:\t%s\n", r.Message)
	}
	printCredentials(w, s.Credentials, now)
	if s.NextRenewal != nil {
		fmt.Fprintf(w, "next renewal:\t%s\n", when(*s.NextRenewal, now))
	}
	return w.Flush()
}

func reload(e *env) error {
	r, err := e.client.Reload(e.ctx)
	if err != nil {
		return err
	}
	switch {
	case e.opts.json:
		return writeJSON(e.stdout, r)
	case r.Changed:
		fmt.Fprintf(e.stdout, "configuration reloaded (revision %s)\n", r.Revision)
	default:
		fmt.Fprintln(e.stdout, "configuration unchanged")
	}
	return nil
}

func ready(e *env) error {
	r, err := e.client.Ready(e.ctx)
	if err != nil {
		return err
	}
	if e.opts.json {
		err = writeJSON(e.stdout, r)
	} else {
		now := timeNow()
		w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintf(w, "state:\t%s\n", r.State)
		for _, c := range r.Credentials {
			valid := "valid"
			if !c.Valid {
				valid = "not valid"
			}
			fmt.Fprintf(w, "%s:\t%s, expires %s\n", c.Kind, valid, when(c.Expires, now))
		}
		err = w.Flush()
	}
	if err != nil {
		return err
	}
	if !r.Ready {
		return fmt.Errorf("mwid is not ready (state %s); mwictl status says why", r.State)
	}
	return nil
}

// when formats t with how far it is from now.
func when(t, now time.Time) string {
	d := t.Sub(now).Round(time.Second)
	rel := "in " + d.String()
	switch {
	case d == 0:
		rel = "now"
	case d < 0:
		rel = (-d).String() + " ago"
	}
	return t.Local().Format(time.RFC3339) + " (" + rel + ")"
}

// failure formats an error message from mwid on one line, after the time
// it happened if known.
func failure(msg string, at *time.Time, now time.Time) string {
	if at == nil {
		return oneLine(msg)
	}
	return "at " + when(*at, now) + ": " + oneLine(msg)
}

// withNewline returns s ending in a newline, unless s is empty.
func withNewline(s string) string {
	if s == "" || strings.HasSuffix(s, "\n") {
		return s
	}
	return s + "\n"
}

// oneLine joins the lines of a message from mwid, which may name several
// problems, so that it fits on one line.
func oneLine(s string) string {
	var lines []string
	for l := range strings.Lines(s) {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "; ")
}

// printVersion prints mwictl's version, then that of the mwid it talks to,
// which the local API answers even before mwid has joined.
func printVersion(e *env) error {
	w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "mwictl\t%s\n", version.Get())
	v, err := e.client.Version(e.ctx)
	switch {
	case client.IsNotFound(err):
		// An mwid built before the route existed.
		fmt.Fprintf(w, "mwid\tunknown (older than this mwictl)\n")
	case err != nil:
		w.Flush()
		return err
	default:
		fmt.Fprintf(w, "mwid\t%s\n", version.Info{Version: v.Version, Commit: v.Commit})
	}
	return w.Flush()
}
