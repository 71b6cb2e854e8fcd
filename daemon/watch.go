package daemon

import (
	"context"

	"github.com/mwi-project/mwi/internal/watch"
)

// watchConfig reloads the configuration when its file changes. It watches
// the file's directory, so editors' renames and Kubernetes ConfigMap
// updates are seen; reload logs the outcome.
func (s *Server) watchConfig(ctx context.Context) {
	path := s.config().Path
	w := &watch.Watcher{
		Target:  path,
		Log:     s.log,
		Recheck: s.recheck,
		Changed: func() error { s.reload(); return nil },
	}
	if err := w.Run(ctx); err != nil {
		s.log.Warn("not watching the configuration file; reload with SIGHUP or mwictl reload", "path", path, "err", err)
	}
}

// recheckConfig tells the watcher that the configuration was loaded
// without it: a file that it caught half-written, and that then became
// what the watcher last saw, is loaded again once it settles.
func (s *Server) recheckConfig() {
	select {
	case s.recheck <- struct{}{}:
	default: // one is pending already
	}
}
