// Package localapi serves mwid's HTTP API on its Unix socket.
package localapi

import (
	"log/slog"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/httpjson"
)

// Backend is what the API needs from the daemon.
type Backend interface {
	Status() api.Status
}

// Routes returns the route table of the local API.
func Routes(b Backend, log *slog.Logger) http.Handler {
	r := chi.NewRouter()
	r.NotFound(httpjson.NotFound(log))
	r.MethodNotAllowed(httpjson.MethodNotAllowed(log))
	r.Get("/healthz", func(w http.ResponseWriter, r *http.Request) {
		httpjson.Write(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	r.Get("/v1/status", func(w http.ResponseWriter, r *http.Request) {
		httpjson.Write(w, http.StatusOK, b.Status())
	})
	return r
}
