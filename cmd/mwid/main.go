// Command mwid is MWI's machine daemon: it joins the issuer, keeps keys and
// certificates only in memory, renews them, and serves them on an SSH agent
// socket and a local HTTP API socket.
//
// Usage:
//
//	mwid [-c /etc/mwi/mwid.yaml]
//	mwid --oneshot -c FILE [--ca-pin PIN]...
//	mwid --version
//
// With --oneshot, or oneshot: true in a tbot (version: v2) configuration,
// mwid joins once, writes the configured outputs and exits: 0 when every
// output was written, 1 with the reason on standard error otherwise. It
// opens no socket. A wrong command line exits 2.
//
// --ca-pin adds a pin of the issuer's CA to those of the file, for a file
// that names none, such as one copied from Teleport's guides.
package main

import (
	"context"
	"io"
	stdlog "log"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/mwi-project/mwi/daemon"
	"github.com/mwi-project/mwi/daemon/agent"
	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/internal/cli"
	"github.com/mwi-project/mwi/internal/hygiene"
	"github.com/mwi-project/mwi/internal/logging"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	return cli.Execute(newRoot(stdout, stderr), args, nil)
}

// newRoot returns mwid's command: a daemon has no subcommands, only flags,
// but it shares the other programs' help, --version, exit codes and man
// page.
func newRoot(stdout, stderr io.Writer) *cobra.Command {
	var path string
	var oneshot bool
	var flags config.Flags
	root := &cobra.Command{
		Use:   "mwid",
		Short: "MWI's machine daemon",
		Long: "mwid is MWI's machine daemon: it joins the issuer, keeps keys and certificates only\n" +
			"in memory, renews them, and serves them on an SSH agent socket and a local HTTP API\n" +
			"socket, which mwictl talks to.",
		Args: cli.NoArgs,
		RunE: func(*cobra.Command, []string) error { return daemonMain(path, oneshot, flags, stderr) },
	}
	fs := root.Flags()
	fs.StringVarP(&path, "config", "c", "/etc/mwi/mwid.yaml", "configuration `FILE`")
	fs.BoolVar(&oneshot, "oneshot", false, "join once, write the outputs and exit, serving no socket (for CI jobs)")
	fs.StringArrayVar(&flags.CAPins, "ca-pin", nil, "trust the issuer's CA with this `PIN` (sha256:..., as mwi-issuer ca prints it), besides the file's ca_pins; repeatable")
	// A daemon started by systemd or a CI step: no shell completes it.
	root.CompletionOptions.DisableDefaultCmd = true
	cli.Prepare(root, stdout, stderr)
	return root
}

// daemonMain runs mwid with the configuration file at path, logging to
// stderr.
func daemonMain(path string, oneshot bool, flags config.Flags, stderr io.Writer) error {
	cfg, err := config.LoadFlags(path, flags)
	if err != nil {
		return err
	}
	log, err := logging.New(stderr, cfg.Log.Format, cfg.Log.Level)
	if err != nil {
		return err
	}
	// Route the standard log package (x/crypto's agent server writes to it)
	// through the same handler, a few lines a second: the agent's clients
	// decide how many it writes.
	slog.SetDefault(log.Logger)
	stdlog.SetOutput(agent.LogWriter(log.Logger))
	hardenProcess(log.Logger)
	srv, err := daemon.New(cfg, log)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if oneshot || cfg.Oneshot {
		return srv.Oneshot(ctx)
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			// Reload logs its own outcome.
			srv.Reload()
		}
	}()
	return srv.Run(ctx)
}

// hardenProcess keeps the keys in this process's memory out of core dumps,
// away from other processes of the same user (ptrace, /proc/PID/mem) and,
// where allowed, out of swap. It runs before the daemon holds any secret:
// the join token is read, and keys are made, only once the daemon runs.
func hardenProcess(log *slog.Logger) { hygiene.Harden(log) }
