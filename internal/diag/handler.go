package diag

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/mwi-project/mwi/internal/httpjson"
)

// Handler is the route table of a diagnostics listener:
//
//	GET /livez    200 while the program serves requests
//	GET /readyz   200 when ready reports so, 503 otherwise, with ready's body
//	GET /metrics  metrics, the Prometheus metrics
//
// It serves no credential and takes no command: its callers are not
// checked.
func Handler(log *slog.Logger, ready func(*http.Request) (body any, ok bool), metrics http.Handler) http.Handler {
	r := chi.NewRouter()
	r.NotFound(httpjson.NotFound(log))
	r.MethodNotAllowed(httpjson.MethodNotAllowed(r))
	r.Get("/livez", func(w http.ResponseWriter, r *http.Request) {
		httpjson.Write(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	r.Get("/readyz", func(w http.ResponseWriter, r *http.Request) {
		body, ok := ready(r)
		status := http.StatusOK
		if !ok {
			status = http.StatusServiceUnavailable
		}
		httpjson.Write(w, status, body)
	})
	r.Method(http.MethodGet, "/metrics", metrics)
	return r
}

// NewServer returns the server of a diagnostics listener serving h. It
// serves short requests from the machine's own Prometheus and probes, so
// its timeouts and header limit are tight.
func NewServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}
