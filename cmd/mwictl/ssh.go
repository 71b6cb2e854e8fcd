package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/syslog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/cli"
	"github.com/mwi-project/mwi/internal/hostaccess"
	"github.com/mwi-project/mwi/internal/safefs"
)

// sshOptions are the flags of the ssh commands.
type sshOptions struct {
	dir      string
	maxStale time.Duration
	check    string
	user     string
}

// newSSHCommand returns "mwictl ssh", the commands for a host's sshd.
func newSSHCommand(e *env) *cobra.Command {
	var o sshOptions
	group := &cobra.Command{
		Use:   "ssh",
		Short: "commands for this host's sshd: the principals it may accept, and its sshd_config lines",
	}
	principals := &cobra.Command{
		Use:   "authorized-principals [--dir DIR] [--max-stale DURATION] USER KEYTYPE BASE64KEY",
		Short: "print USER if the certificate may log in as USER on this host (sshd's AuthorizedPrincipalsCommand)",
		Long: "authorized-principals is sshd's AuthorizedPrincipalsCommand, run with %u %t %k:\n\n" +
			"  AuthorizedPrincipalsCommand /usr/bin/mwictl ssh authorized-principals --dir DIR %u %t %k\n" +
			"  AuthorizedPrincipalsCommandUser nobody\n\n" +
			"It prints USER, and nothing else, if the certificate is a valid user certificate of the issuer's user CA " +
			"for USER whose roles' node_labels select this host's labels with USER among their logins, and no lock refuses it. " +
			"It decides from DIR/access.json alone, which mwid's ssh_host output with access_dir keeps current; " +
			"if mwid has not rewritten it for longer than --max-stale, it refuses every login. " +
			"A refusal prints nothing, exits 0, and is logged to syslog (auth) and reported to mwid, which logs it " +
			"and tells the issuer's audit log.",
		Args: cli.ExactArgs("USER", "KEYTYPE", "BASE64KEY"),
		RunE: func(_ *cobra.Command, args []string) error {
			return authorizedPrincipals(e, o, hostaccess.Request{Login: args[0], KeyType: args[1], Key: args[2]})
		},
	}
	principals.Flags().StringVar(&o.dir, "dir", hostaccess.DefaultDir, "the access directory `DIR` of mwid's ssh_host output (access_dir)")
	principals.Flags().DurationVar(&o.maxStale, "max-stale", hostaccess.DefaultMaxStale, "refuse every login when mwid has not rewritten DIR/access.json for this `DURATION`")
	sshdConfig := &cobra.Command{
		Use:   "sshd-config [--check FILE] [--user USER]",
		Short: "print the sshd_config lines for mwid's ssh_host outputs, or check FILE for them",
		Args:  cli.NoArgs,
		RunE:  func(*cobra.Command, []string) error { return sshdConfig(e, o) },
	}
	sshdConfig.Flags().StringVar(&o.check, "check", "", "report which of the lines `FILE` lacks or sets otherwise, and fail if any")
	sshdConfig.Flags().StringVar(&o.user, "user", "nobody", "the unprivileged `USER` that runs the principals command (AuthorizedPrincipalsCommandUser)")
	group.AddCommand(principals, sshdConfig)
	return group
}

// reportTimeout bounds the report of a refusal to mwid: sshd waits for
// the principals command, and the login is refused whether or not mwid
// hears of it.
const reportTimeout = 500 * time.Millisecond

// logRefusal writes a refusal to the host's log; tests replace it.
var logRefusal = syslogRefusal

// authorizedPrincipals prints r.Login if hostaccess.Authorize allows it,
// and otherwise logs and reports the refusal and prints nothing.
func authorizedPrincipals(e *env, o sshOptions, r hostaccess.Request) error {
	ref := hostaccess.Authorize(o.dir, o.maxStale, r, timeNow())
	if ref == nil {
		_, err := fmt.Fprintln(e.stdout, r.Login)
		return err
	}
	line := refusalLine(*ref)
	logRefusal(line)
	// sshd discards the command's standard error unless it runs with
	// debug logging, where this helps.
	fmt.Fprintf(e.stderr, "mwictl: %s\n", line)
	ctx, cancel := context.WithTimeout(e.ctx, reportTimeout)
	defer cancel()
	// Best effort: the host's log has the refusal already.
	if err := e.client.ReportSSHRefusal(ctx, *ref); err != nil {
		fmt.Fprintf(e.stderr, "mwictl: the refusal was not reported to mwid: %v\n", err)
	}
	return nil
}

// refusalLine describes a refusal on one line, for the host's log.
func refusalLine(r api.SSHRefusal) string {
	var b strings.Builder
	fmt.Fprintf(&b, "ssh login refused: login %s", r.Login)
	if r.Bot != "" {
		fmt.Fprintf(&b, ", bot %s, instance %s", r.Bot, r.Instance)
	}
	if r.KeyID != "" {
		fmt.Fprintf(&b, ", key id %q, serial %s", r.KeyID, r.Serial)
	}
	return b.String() + ": " + oneLine(r.Reason)
}

// syslogRefusal writes line to syslog, facility auth, as sshd logs, if
// the host has a syslog socket; without one the line goes to standard
// error only.
func syslogRefusal(line string) {
	if _, err := os.Stat("/dev/log"); err != nil {
		return
	}
	w, err := syslog.New(syslog.LOG_AUTH|syslog.LOG_WARNING, "mwictl")
	if err != nil {
		return
	}
	defer w.Close()
	w.Warning(line)
}

// sshdLine is one line of sshd_config.
type sshdLine struct{ keyword, value string }

func (l sshdLine) String() string { return l.keyword + " " + l.value }

// sshdLines returns the sshd_config lines for the ssh_host outputs outs:
// the certificate of each, and for the first with an access directory,
// the user CAs, the KRL and the principals command. mwictl is the path of
// this mwictl; socket, if not empty, is passed on for the reports.
func sshdLines(outs []api.SSHHostOutput, mwictl, socket, user string) []sshdLine {
	var lines []sshdLine
	for _, o := range outs {
		lines = append(lines, sshdLine{"HostCertificate", o.Certificate})
	}
	for _, o := range outs {
		if o.AccessDir == "" {
			continue
		}
		cmd := mwictl
		if socket != "" {
			cmd += " --socket " + socket
		}
		cmd += " ssh authorized-principals --dir " + o.AccessDir + " %u %t %k"
		lines = append(lines,
			sshdLine{"TrustedUserCAKeys", filepath.Join(o.AccessDir, hostaccess.UserCAFile)},
			sshdLine{"RevokedKeys", filepath.Join(o.AccessDir, hostaccess.KRLFile)},
			sshdLine{"AuthorizedPrincipalsCommand", cmd},
			sshdLine{"AuthorizedPrincipalsCommandUser", user})
		break
	}
	return lines
}

// maxSSHDConfig bounds the sshd_config that --check reads.
const maxSSHDConfig = 1 << 20

func sshdConfig(e *env, o sshOptions) error {
	outs, err := e.client.SSHHostOutputs(e.ctx)
	if err != nil {
		return err
	}
	if len(outs) == 0 {
		return fmt.Errorf("mwid has no ssh_host output; add one to its configuration")
	}
	self, err := executable()
	if err != nil {
		return fmt.Errorf("cannot find mwictl's own path for AuthorizedPrincipalsCommand: %w", err)
	}
	lines := sshdLines(outs, self, e.client.Socket, o.user)
	if o.check == "" {
		fmt.Fprintln(e.stdout, "# sshd_config lines for mwid's ssh_host outputs")
		if !slices.ContainsFunc(outs, func(o api.SSHHostOutput) bool { return o.AccessDir != "" }) {
			fmt.Fprintln(e.stdout, "# no ssh_host output has an access_dir: sshd then trusts the user CA only as TrustedUserCAKeys names it")
		}
		for _, l := range lines {
			fmt.Fprintln(e.stdout, l)
		}
		return nil
	}
	data, err := safefs.ReadFile(o.check, maxSSHDConfig)
	if err != nil {
		return fmt.Errorf("cannot read %s: %w", o.check, err)
	}
	bad := checkSSHDConfig(e.stdout, parseSSHDConfig(data), lines)
	if bad > 0 {
		return fmt.Errorf("%s lacks or sets otherwise %d of the %d lines mwid's ssh_host outputs need; mwictl ssh sshd-config prints them", o.check, bad, len(lines))
	}
	return nil
}

// parseSSHDConfig returns the lines of an sshd_config before its first
// Match block, which apply to every connection, with keywords in lower
// case. Include directives are not followed.
func parseSSHDConfig(data []byte) []sshdLine {
	var lines []sshdLine
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		kw, value, _ := strings.Cut(text, " ")
		if k, v, ok := strings.Cut(kw, "="); ok { // Keyword=value
			kw, value = k, v+" "+value
		}
		kw = strings.ToLower(kw)
		if kw == "match" {
			break
		}
		value = strings.Join(strings.Fields(strings.TrimLeft(strings.TrimSpace(value), "=")), " ")
		lines = append(lines, sshdLine{kw, value})
	}
	return lines
}

// checkSSHDConfig writes, for each wanted line, whether have has it, and
// returns how many it lacks or sets otherwise. sshd takes the first value
// of a keyword; HostCertificate may be given many times.
func checkSSHDConfig(w io.Writer, have, want []sshdLine) int {
	bad := 0
	for _, l := range want {
		var values []string
		for _, h := range have {
			if h.keyword == strings.ToLower(l.keyword) {
				values = append(values, h.value)
			}
		}
		switch {
		case len(values) == 0:
			fmt.Fprintf(w, "missing: %s\n", l)
			bad++
		case l.keyword == "HostCertificate" && slices.Contains(values, l.value),
			values[0] == l.value:
			fmt.Fprintf(w, "ok:      %s\n", l)
		case l.keyword == "AuthorizedPrincipalsCommandUser" && values[0] != "root":
			// Any unprivileged user that can read the access directory.
			fmt.Fprintf(w, "ok:      %s %s\n", l.keyword, values[0])
		default:
			fmt.Fprintf(w, "differs: %s %s; want %s\n", l.keyword, values[0], l)
			bad++
		}
	}
	return bad
}
