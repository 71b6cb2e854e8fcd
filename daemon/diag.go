package daemon

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/mwi-project/mwi/internal/diag"
	"github.com/mwi-project/mwi/internal/httpjson"
)

// diagRoutes is the route table of the diagnostics listener (diag_addr):
//
//	GET /livez    200 while mwid serves requests
//	GET /readyz   200 while mwid holds valid credentials, 503 otherwise (as /readyz on the API socket)
//	GET /metrics  the Prometheus metrics
//
// It serves no credential and takes no command: its callers are not
// checked, as the API socket's are.
func (s *Server) diagRoutes() http.Handler {
	r := chi.NewRouter()
	r.NotFound(httpjson.NotFound(s.log))
	r.MethodNotAllowed(httpjson.MethodNotAllowed(r))
	r.Get("/livez", func(w http.ResponseWriter, r *http.Request) {
		httpjson.Write(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	r.Get("/readyz", func(w http.ResponseWriter, r *http.Request) {
		rd := s.Readiness()
		status := http.StatusOK
		if !rd.Ready {
			status = http.StatusServiceUnavailable
		}
		httpjson.Write(w, status, rd)
	})
	r.Method(http.MethodGet, "/metrics", s.metrics.Handler())
	return r
}

// listenDiag opens the diagnostics listener at addr and serves it, at
// most diag.MaxConns connections at once, until the returned server is
// shut down.
func (s *Server) listenDiag(addr string, allowRemote bool) (*http.Server, error) {
	ln, err := diag.Listen(addr, diag.MaxConns, allowRemote)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{
		Handler:           s.diagRoutes(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.log.Info("diagnostics listener serving /livez, /readyz and /metrics", "diag_addr", ln.Addr().String())
	s.tasks.Add(1)
	go func() {
		defer s.tasks.Done()
		srv.Serve(ln) // returns when shut down
	}()
	return srv, nil
}
