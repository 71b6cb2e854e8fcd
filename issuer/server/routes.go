package server

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/httpjson"
	"github.com/mwi-project/mwi/internal/unixsock"
	"github.com/mwi-project/mwi/issuer/ca"
)

// joiner is what the public API needs from the authority.
type joiner interface {
	Join(ctx context.Context, req api.JoinRequest, client *ca.Identity, remote string) (api.Credentials, error)
	Challenge(ctx context.Context, req api.ChallengeRequest, client *ca.Identity, remote string) (api.ChallengeResponse, error)
	Renew(ctx context.Context, id ca.Identity, req api.RenewRequest, remote string) (api.Credentials, error)
}

// clientIdentity returns the bot identity that the caller presented over
// mutual TLS, or nil if it presented none. The TLS layer has verified it
// against the identity authority.
func clientIdentity(r *http.Request) (*ca.Identity, error) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		return nil, nil
	}
	id, err := ca.ParseIdentity(r.TLS.VerifiedChains[0][0])
	if err != nil {
		return nil, httpjson.Errorf(http.StatusUnauthorized, api.CodeUnauthenticated, "client certificate: %v", err)
	}
	return &id, nil
}

// publicRoutes is the route table of the issuer's HTTPS API.
func publicRoutes(j joiner, log *slog.Logger) http.Handler {
	r := chi.NewRouter()
	r.NotFound(httpjson.NotFound(log))
	r.MethodNotAllowed(httpjson.MethodNotAllowed(log))
	r.Get("/healthz", func(w http.ResponseWriter, r *http.Request) {
		httpjson.Write(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	// A join may come with the caller's current identity over mutual TLS:
	// a re-join with a fresh attestation then keeps the instance.
	r.Post("/v1/join", httpjson.Handler(log, func(w http.ResponseWriter, r *http.Request) error {
		client, err := clientIdentity(r)
		if err != nil {
			return err
		}
		var req api.JoinRequest
		if err := httpjson.Decode(r, &req); err != nil {
			return err
		}
		creds, err := j.Join(r.Context(), req, client, r.RemoteAddr)
		if err != nil {
			return err
		}
		httpjson.Write(w, http.StatusOK, creds)
		return nil
	}))
	// A challenge may come with the caller's identity too: a host renewing
	// with a bound key pair is then served apart from anonymous callers.
	r.Post("/v1/join/challenge", httpjson.Handler(log, func(w http.ResponseWriter, r *http.Request) error {
		client, err := clientIdentity(r)
		if err != nil {
			return err
		}
		var req api.ChallengeRequest
		if err := httpjson.Decode(r, &req); err != nil {
			return err
		}
		resp, err := j.Challenge(r.Context(), req, client, r.RemoteAddr)
		if err != nil {
			return err
		}
		httpjson.Write(w, http.StatusOK, resp)
		return nil
	}))
	r.Post("/v1/renew", httpjson.Handler(log, func(w http.ResponseWriter, r *http.Request) error {
		id, err := clientIdentity(r)
		if err != nil {
			return err
		}
		if id == nil {
			return httpjson.Errorf(http.StatusUnauthorized, api.CodeUnauthenticated, "renewal needs a bot identity certificate")
		}
		var req api.RenewRequest
		if err := httpjson.Decode(r, &req); err != nil {
			return err
		}
		creds, err := j.Renew(r.Context(), *id, req, r.RemoteAddr)
		if err != nil {
			return err
		}
		httpjson.Write(w, http.StatusOK, creds)
		return nil
	}))
	return r
}

// admin is what the admin API needs from the authority.
type admin interface {
	CreateToken(ctx context.Context, bot string, ttl time.Duration) (api.CreateTokenResponse, error)
	UnlockBot(ctx context.Context, bot string) error
}

// adminRoutes is the route table of the admin API on the Unix socket.
func adminRoutes(a admin, log *slog.Logger) http.Handler {
	r := chi.NewRouter()
	r.NotFound(httpjson.NotFound(log))
	r.MethodNotAllowed(httpjson.MethodNotAllowed(log))
	r.Use(sameUserOnly(log))
	r.Post("/admin/v1/tokens", httpjson.Handler(log, func(w http.ResponseWriter, r *http.Request) error {
		var req api.CreateTokenRequest
		if err := httpjson.Decode(r, &req); err != nil {
			return err
		}
		resp, err := a.CreateToken(r.Context(), req.Bot, time.Duration(req.TTLSeconds)*time.Second)
		if err != nil {
			return err
		}
		httpjson.Write(w, http.StatusCreated, resp)
		return nil
	}))
	r.Post("/admin/v1/bots/{bot}/unlock", httpjson.Handler(log, func(w http.ResponseWriter, r *http.Request) error {
		if err := a.UnlockBot(r.Context(), chi.URLParam(r, "bot")); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}))
	return r
}

// sameUserOnly admits callers running as the issuer's user or as root. The
// socket's mode already says so; checking the peer as well means a socket
// made reachable by mistake still refuses strangers.
func sameUserOnly(log *slog.Logger) func(http.Handler) http.Handler {
	self := uint32(os.Geteuid())
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p, ok := unixsock.PeerFromContext(r.Context())
			if !ok || (p.UID != self && p.UID != 0) {
				if ok {
					log.Warn("admin caller refused", "uid", p.UID, "pid", p.PID)
				} else {
					log.Warn("admin caller refused: peer unknown")
				}
				httpjson.WriteError(w, log, httpjson.Errorf(http.StatusForbidden, api.CodeAccessDenied,
					"the admin socket serves only uid %d and root", self))
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}
