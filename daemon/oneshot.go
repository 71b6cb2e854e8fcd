package daemon

import (
	"context"
	"errors"
	"fmt"

	"github.com/mwi-project/mwi/daemon/config"
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
