package daemon

import (
	"context"
	"errors"
	"fmt"

	"github.com/mwi-project/mwi/daemon/output"
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
	if err := checkOutputs(cfg.Outputs); err != nil {
		return err
	}
	if _, err := s.renew(ctx); err != nil {
		return err
	}
	// Once, for the locks and the KRL; the files go stale once this mwid
	// exits, as mwictl ssh authorized-principals then says.
	s.access.Poll(ctx)
	if c := s.creds.Current(); c != nil {
		s.log.Info("one-shot done", "bot", c.Bot, "expires", c.Expires())
	}
	return nil
}

// oneshotOutputs refuses a configuration whose credentials would all be
// lost when a one-shot mwid exits: one with no output written to a file.
func oneshotOutputs(path string, outs []output.Output) error {
	var errs []error
	for i, o := range outs {
		if o.Path() == "" {
			errs = append(errs, fmt.Errorf("%s: outputs.%d: a %s output without directory keeps its credentials in memory, which mwid --oneshot discards when it exits; set directory", path, i, o.Type()))
		}
	}
	if len(outs) == 0 {
		errs = append(errs, fmt.Errorf("%s: no outputs: mwid --oneshot writes its credentials only to outputs (identity, kubernetes with a directory, ssh_host)", path))
	}
	return errors.Join(errs...)
}

// checkOutputs checks every output before mwid --oneshot joins, so that
// one that could not be written (a directory that safefs refuses, a host
// key that cannot be read) stops it: a one-time token or an ID token is
// not spent on credentials that could not be written, and the one-shot
// does not succeed without an output that a renewal left out.
func checkOutputs(outs []output.Output) error {
	var errs []error
	for _, o := range outs {
		errs = append(errs, o.Check())
	}
	return errors.Join(errs...)
}
