package server

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/httpjson"
	"github.com/mwi-project/mwi/internal/logging"
	"github.com/mwi-project/mwi/internal/unixsock"
	"github.com/mwi-project/mwi/issuer/audit"
	"github.com/mwi-project/mwi/issuer/authority"
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

// publicRoutes is the route table of the issuer's HTTPS API. Requests
// refused here, before the authority decides, are audited in al.
func publicRoutes(j joiner, al *audit.Log, log *slog.Logger) http.Handler {
	r := chi.NewRouter()
	r.NotFound(httpjson.NotFound(log))
	r.MethodNotAllowed(httpjson.MethodNotAllowed(log, r))
	// Health fails while the audit log cannot be written, because the
	// issuer then refuses every issuance.
	r.Get("/healthz", httpjson.Handler(log, func(w http.ResponseWriter, r *http.Request) error {
		if err := al.Err(); err != nil {
			return httpjson.Errorf(http.StatusServiceUnavailable, api.CodeAuditUnavailable,
				"the audit log cannot be written (%s): nothing is issued until it can", cause(err))
		}
		httpjson.Write(w, http.StatusOK, map[string]string{"status": "ok"})
		return nil
	}))
	// A join may come with the caller's current identity over mutual TLS:
	// a re-join with a fresh attestation then keeps the instance.
	r.Post("/v1/join", httpjson.Handler(log, func(w http.ResponseWriter, r *http.Request) error {
		client, err := clientIdentity(r)
		if err != nil {
			return refused(r, al, err)
		}
		var req api.JoinRequest
		if err := httpjson.Decode(r, &req, credentialLimits); err != nil {
			return refused(r, al, err)
		}
		creds, err := j.Join(authority.WithUserAgent(r.Context(), r.UserAgent()), req, client, r.RemoteAddr)
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
			return refused(r, al, err)
		}
		var req api.ChallengeRequest
		if err := httpjson.Decode(r, &req, smallLimits); err != nil {
			return refused(r, al, err)
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
			return refused(r, al, err)
		}
		if id == nil {
			return refused(r, al, httpjson.Errorf(http.StatusUnauthorized, api.CodeUnauthenticated, "renewal needs a bot identity certificate"))
		}
		var req api.RenewRequest
		if err := httpjson.Decode(r, &req, credentialLimits); err != nil {
			return refused(r, al, err)
		}
		creds, err := j.Renew(authority.WithUserAgent(r.Context(), r.UserAgent()), *id, req, r.RemoteAddr)
		if err != nil {
			return err
		}
		httpjson.Write(w, http.StatusOK, creds)
		return nil
	}))
	return r
}

// refused audits a request refused before the authority saw it, and
// returns err for the renderer. Such records are rate-limited by the
// audit log, since the caller decides how many there are.
func refused(r *http.Request, al *audit.Log, err error) error {
	reason := err.Error()
	var e *httpjson.Error
	if errors.As(err, &e) {
		reason = e.Message
	}
	attrs := []slog.Attr{slog.String("remote", r.RemoteAddr), slog.String("path", r.URL.Path), slog.String("reason", reason)}
	if p, ok := unixsock.PeerFromContext(r.Context()); ok {
		attrs = append(attrs, slog.Uint64("uid", uint64(p.UID)), slog.Int("pid", int(p.PID)))
	}
	al.Record(r.Context(), audit.EventRequest, audit.Denied, attrs...)
	return err
}

// nameParam returns the URL parameter key, a bot name or an instance ID,
// refusing (and auditing) one longer than any name the issuer makes.
func nameParam(r *http.Request, al *audit.Log, key string) (string, error) {
	v := chi.URLParam(r, key)
	what := map[string]string{"bot": "bot name", "id": "instance ID"}[key]
	if len(v) > maxName {
		return "", refused(r, al, httpjson.Errorf(http.StatusBadRequest, api.CodeBadRequest, "%s is %d bytes long; at most %d", what, len(v), maxName))
	}
	return v, nil
}

// cause is what health shows of an audit write failure: the system's
// reason, without the file's path.
func cause(err error) string {
	var pe *fs.PathError
	var errno syscall.Errno
	switch {
	case errors.As(err, &pe):
		return pe.Err.Error()
	case errors.As(err, &errno):
		return errno.Error()
	case errors.Is(err, audit.ErrShortWrite):
		return "short write"
	}
	return "write failed"
}

// admin is what the admin API needs from the authority.
type admin interface {
	CreateToken(ctx context.Context, bot string, ttl time.Duration) (api.CreateTokenResponse, error)
	LockBot(ctx context.Context, bot, reason string) (api.Lock, error)
	UnlockBot(ctx context.Context, bot string) error
	LockInstance(ctx context.Context, id, reason string) (api.Lock, error)
	UnlockInstance(ctx context.Context, id string) (api.Lock, error)
	Locks(ctx context.Context) ([]api.Lock, error)
	Nodes(ctx context.Context) ([]api.Node, error)
}

// adminRoutes is the route table of the admin API on the Unix socket.
// Refusals are audited in al.
func adminRoutes(a admin, al *audit.Log, log *slog.Logger) http.Handler {
	r := chi.NewRouter()
	r.NotFound(httpjson.NotFound(log))
	r.MethodNotAllowed(httpjson.MethodNotAllowed(log, r))
	r.Use(sameUserOnly(al, log))
	r.Post("/admin/v1/tokens", httpjson.Handler(log, func(w http.ResponseWriter, r *http.Request) error {
		var req api.CreateTokenRequest
		if err := httpjson.Decode(r, &req, smallLimits); err != nil {
			return refused(r, al, err)
		}
		if req.TTLSeconds > maxTTLSeconds {
			return refused(r, al, httpjson.Errorf(http.StatusBadRequest, api.CodeBadRequest, "ttl_seconds: at most %d", maxTTLSeconds))
		}
		resp, err := a.CreateToken(r.Context(), req.Bot, time.Duration(req.TTLSeconds)*time.Second)
		if err != nil {
			return err
		}
		httpjson.Write(w, http.StatusCreated, resp)
		return nil
	}))
	r.Get("/admin/v1/nodes", httpjson.Handler(log, func(w http.ResponseWriter, r *http.Request) error {
		nodes, err := a.Nodes(r.Context())
		if err != nil {
			return err
		}
		httpjson.Write(w, http.StatusOK, api.Nodes{Nodes: nodes})
		return nil
	}))
	r.Get("/admin/v1/locks", httpjson.Handler(log, func(w http.ResponseWriter, r *http.Request) error {
		locks, err := a.Locks(r.Context())
		if err != nil {
			return err
		}
		if locks == nil {
			locks = []api.Lock{}
		}
		httpjson.Write(w, http.StatusOK, api.Locks{Locks: locks})
		return nil
	}))
	r.Post("/admin/v1/bots/{bot}/lock", httpjson.Handler(log, func(w http.ResponseWriter, r *http.Request) error {
		bot, err := nameParam(r, al, "bot")
		if err != nil {
			return err
		}
		var req api.LockRequest
		if err := httpjson.Decode(r, &req, lockLimits); err != nil {
			return refused(r, al, err)
		}
		l, err := a.LockBot(r.Context(), bot, req.Reason)
		if err != nil {
			return err
		}
		httpjson.Write(w, http.StatusOK, l)
		return nil
	}))
	r.Post("/admin/v1/bots/{bot}/unlock", httpjson.Handler(log, func(w http.ResponseWriter, r *http.Request) error {
		bot, err := nameParam(r, al, "bot")
		if err != nil {
			return err
		}
		if err := a.UnlockBot(r.Context(), bot); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}))
	r.Post("/admin/v1/instances/{id}/lock", httpjson.Handler(log, func(w http.ResponseWriter, r *http.Request) error {
		id, err := nameParam(r, al, "id")
		if err != nil {
			return err
		}
		var req api.LockRequest
		if err := httpjson.Decode(r, &req, lockLimits); err != nil {
			return refused(r, al, err)
		}
		l, err := a.LockInstance(r.Context(), id, req.Reason)
		if err != nil {
			return err
		}
		httpjson.Write(w, http.StatusOK, l)
		return nil
	}))
	r.Post("/admin/v1/instances/{id}/unlock", httpjson.Handler(log, func(w http.ResponseWriter, r *http.Request) error {
		id, err := nameParam(r, al, "id")
		if err != nil {
			return err
		}
		l, err := a.UnlockInstance(r.Context(), id)
		if err != nil {
			return err
		}
		httpjson.Write(w, http.StatusOK, l)
		return nil
	}))
	return r
}

// sameUserOnly admits callers running as the issuer's user or as root. The
// socket's mode already says so, and adminListener refuses the others when
// they connect; checking each request as well means a socket made
// reachable by mistake still refuses strangers, whatever serves it. Each
// refusal is audited, and logged a few lines a second: the stranger
// decides how many there are.
func sameUserOnly(al *audit.Log, log *slog.Logger) func(http.Handler) http.Handler {
	var refusals logging.Limit
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p, ok := unixsock.PeerFromContext(r.Context())
			var err error
			if !ok {
				err = errPeerUnknown
			} else {
				err = adminCaller(p)
			}
			if err != nil {
				attrs := []slog.Attr{slog.String("method", r.Method), slog.String("path", r.URL.Path)}
				if ok {
					attrs = append(attrs, slog.Uint64("uid", uint64(p.UID)), slog.Uint64("gid", uint64(p.GID)), slog.Int("pid", int(p.PID)))
				}
				refusals.Warn(log, "admin caller refused: "+err.Error(), "uid", p.UID, "pid", p.PID)
				al.Record(r.Context(), audit.EventAdmin, audit.Denied, append(attrs, slog.String("reason", err.Error()))...)
				httpjson.WriteError(w, log, httpjson.Errorf(http.StatusForbidden, api.CodeAccessDenied,
					"the admin socket serves only uid %d and root", adminSelf))
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// adminSelf is the issuer's own user, which may use the admin socket.
var adminSelf = uint32(os.Geteuid())

var (
	errPeerUnknown = errors.New("peer unknown")
	errNotAdmin    = errors.New("uid is neither the issuer's nor root")
)

// adminCaller reports whether p may use the admin socket: only root and
// the issuer's own user may.
func adminCaller(p unixsock.Peer) error {
	if p.UID != 0 && p.UID != adminSelf {
		return errNotAdmin
	}
	return nil
}
