package daemon

import (
	"net/http"

	"github.com/mwi-project/mwi/internal/diag"
)

// diagRoutes is the route table of the diagnostics listener (diag_addr),
// see diag.Handler: /readyz is 200 while mwid holds valid credentials, as
// /readyz on the API socket.
func (s *Server) diagRoutes() http.Handler {
	return diag.Handler(s.log, func(*http.Request) (any, bool) {
		rd := s.Readiness()
		return rd, rd.Ready
	}, s.metrics.Handler())
}

// listenDiag opens the diagnostics listener at addr and serves it, at
// most diag.MaxConns connections at once, until the returned server is
// shut down.
func (s *Server) listenDiag(addr string, allowRemote bool) (*http.Server, error) {
	ln, err := diag.Listen(addr, diag.MaxConns, allowRemote)
	if err != nil {
		return nil, err
	}
	srv := diag.NewServer(s.diagRoutes(), s.log)
	s.log.Info("diagnostics listener serving /livez, /readyz and /metrics", "diag_addr", ln.Addr().String())
	s.tasks.Add(1)
	go func() {
		defer s.tasks.Done()
		srv.Serve(ln) // returns when shut down
	}()
	return srv, nil
}
