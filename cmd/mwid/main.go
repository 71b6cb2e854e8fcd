// Command mwid is MWI's machine daemon: it joins the issuer, keeps keys and
// certificates only in memory, renews them, and serves them on an SSH agent
// socket and a local HTTP API socket.
//
// Usage:
//
//	mwid [-c /etc/mwi/mwid.yaml]
//	mwid --oneshot -c FILE
//
// With --oneshot, mwid joins once, writes the configured outputs and exits:
// 0 when every output was written, 1 with the reason on standard error
// otherwise. It opens no socket.
package main

import (
	"context"
	"flag"
	"fmt"
	stdlog "log"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/mwi-project/mwi/daemon"
	"github.com/mwi-project/mwi/daemon/agent"
	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/internal/hygiene"
	"github.com/mwi-project/mwi/internal/logging"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "mwid:", err)
		os.Exit(1)
	}
}

func run() error {
	path := flag.String("c", "/etc/mwi/mwid.yaml", "configuration `file`")
	oneshot := flag.Bool("oneshot", false, "join once, write the outputs and exit, serving no socket (for CI jobs)")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	log, err := logging.New(os.Stderr, cfg.Log.Format, cfg.Log.Level)
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
	if *oneshot {
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
