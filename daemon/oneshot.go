package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/internal/safefs"
)

// Oneshot obtains credentials once, with a join, writes every output and
// returns: mwid --oneshot, for a CI job that joins with its own ID token
// and runs ssh or kubectl with the files. It opens no socket, watches no
// file and tells systemd nothing. Any failure, of the join or of an
// output, is returned.
func (s *Server) Oneshot(ctx context.Context) error {
	cfg := s.config()
	if err := oneshotOutputs(cfg.Path, cfg.Outputs); err != nil {
		return err
	}
	if err := checkOutputDirs(cfg.Outputs); err != nil {
		return err
	}
	if err := checkHostKeys(cfg.Outputs); err != nil {
		return err
	}
	if _, err := s.renew(ctx); err != nil {
		return err
	}
	if c := s.creds.Current(); c != nil {
		s.log.Info("one-shot done", "bot", c.Bot, "expires", c.Expires())
	}
	return nil
}

// oneshotOutputs refuses a configuration whose credentials would all be
// lost when a one-shot mwid exits: one with no output written to a file.
func oneshotOutputs(path string, outputs []config.Output) error {
	var errs []error
	for i, o := range outputs {
		if o.Kubernetes() && o.Directory == "" {
			errs = append(errs, fmt.Errorf("%s: outputs.%d: a kubernetes output without directory keeps its credentials in memory, which mwid --oneshot discards when it exits; set directory", path, i))
		}
	}
	if len(outputs) == 0 {
		errs = append(errs, fmt.Errorf("%s: no outputs: mwid --oneshot writes its credentials only to outputs (identity, kubernetes with a directory, ssh_host)", path))
	}
	return errors.Join(errs...)
}

// checkOutputDirs opens the directory of every output that writes files,
// so that a directory that safefs refuses (a symbolic link in its path,
// another user's, writable by others) stops mwid --oneshot before it
// joins: a one-time token or an ID token is not spent on credentials that
// could not be written. A directory that does not exist yet is made, and
// checked, when its files are written.
func checkOutputDirs(outputs []config.Output) error {
	var errs []error
	for _, o := range outputs {
		dir := o.Directory
		if !o.Identity() && !o.Kubernetes() {
			dir = filepath.Dir(o.Certificate)
		}
		if dir == "" {
			continue
		}
		d, err := safefs.OpenDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s output %s: %w", o.Type, dir, err))
			continue
		}
		d.Close()
	}
	return errors.Join(errs...)
}

// checkHostKeys reads the host key of every ssh_host output, so that one
// that cannot be read, or that safefs refuses, stops mwid --oneshot before
// it joins, as checkOutputDirs does: a renewal leaves such an output out,
// and the one-shot would otherwise succeed without writing it.
func checkHostKeys(outputs []config.Output) error {
	var errs []error
	for _, o := range outputs {
		if o.Type != "ssh_host" {
			continue
		}
		if _, err := readHostKey(o); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
