package daemon

import (
	"context"

	"github.com/mwi-project/mwi/internal/watch"
)

// watchConfig reloads the configuration when its file changes. It watches
// the file's directory, so editors' renames and Kubernetes ConfigMap
// updates are seen; Reload logs the outcome.
func (s *Server) watchConfig(ctx context.Context) {
	path := s.config().Path
	if err := watch.Run(ctx, path, s.log, func() { s.Reload() }); err != nil {
		s.log.Warn("not watching the configuration file; reload with SIGHUP or mwictl reload", "path", path, "err", err)
	}
}
