// Command mwid is MWI's machine daemon: it joins the issuer, keeps keys and
// certificates only in memory, renews them, and serves them on an SSH agent
// socket and a local HTTP API socket.
//
// Usage:
//
//	mwid [-c /etc/mwi/mwid.yaml]
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/mwi-project/mwi/daemon"
	"github.com/mwi-project/mwi/daemon/config"
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
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	hardenProcess()
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	level := new(slog.LevelVar)
	if err := logging.SetLevel(level, cfg.Log.Level); err != nil {
		return err
	}
	log, err := logging.NewWithLevel(os.Stderr, cfg.Log.Format, level)
	if err != nil {
		return err
	}
	// Route the standard log package (x/crypto's agent server writes to it)
	// through the same handler.
	slog.SetDefault(log)
	srv, err := daemon.New(cfg, log, level)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
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

// hardenProcess keeps the keys in this process's memory out of core dumps
// and away from other processes of the same user (ptrace, /proc/PID/mem).
func hardenProcess() {
	unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{Cur: 0, Max: 0})
}
