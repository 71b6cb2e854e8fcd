package server

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/fault"
	"github.com/mwi-project/mwi/internal/httpjson"
	"github.com/mwi-project/mwi/internal/logging"
	"github.com/mwi-project/mwi/internal/unixsock"
	"github.com/mwi-project/mwi/issuer/audit"
	"github.com/mwi-project/mwi/issuer/authority"
	"github.com/mwi-project/mwi/issuer/ca"
	"github.com/mwi-project/mwi/issuer/store"
)

// joiner is what the public API needs from the authority: joins and
// renewals, and what hosts need to enforce locks.
type joiner interface {
	Join(ctx context.Context, req api.JoinRequest, client *ca.Identity, remote string) (api.Credentials, error)
	Challenge(ctx context.Context, req api.ChallengeRequest, client *ca.Identity, remote string) (api.ChallengeResponse, error)
	Renew(ctx context.Context, id ca.Identity, req api.RenewRequest, remote string) (api.Credentials, error)
	LockList(ctx context.Context) (api.LockList, string, error)
	KRL(ctx context.Context) ([]byte, string, error)
	SSHRefusal(ctx context.Context, reporter ca.Identity, r api.SSHRefusal, remote string) error
	ReachableNodes(ctx context.Context, id ca.Identity, remote string) (api.ReachableNodes, error)
	StoreHealth(ctx context.Context) error
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
		return nil, fault.Unauthenticated(api.CodeUnauthenticated, "client certificate: %v", err)
	}
	return &id, nil
}

// publicRoutes is the route table of the issuer's HTTPS API. Requests
// refused here, before the authority decides, are audited in al. If ra is
// not nil, the admin API is served under /admin/ to admin identities.
func publicRoutes(j joiner, ra *remoteAdmin, al *audit.Log, log *slog.Logger) http.Handler {
	r := chi.NewRouter()
	r.NotFound(httpjson.NotFound(log))
	r.MethodNotAllowed(httpjson.MethodNotAllowed(r))
	if ra != nil {
		r.Handle("/admin/*", adminCertOnly(ra.name, al, log)(detached(ra.routes)))
	}
	// Health fails while the audit log cannot be written or the store
	// cannot be reached, because the issuer then refuses every issuance.
	r.Get("/healthz", handler(log, func(w http.ResponseWriter, r *http.Request) error {
		if err := al.Err(); err != nil {
			return fault.Unavailable(api.CodeAuditUnavailable,
				"the audit log cannot be written (%s): nothing is issued until it can", cause(err))
		}
		ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
		defer cancel()
		if err := j.StoreHealth(ctx); err != nil {
			return err
		}
		httpjson.Write(w, http.StatusOK, map[string]string{"status": "ok"})
		return nil
	}))
	// A join may come with the caller's current identity over mutual TLS:
	// a re-join with a fresh attestation then keeps the instance.
	r.Post("/v1/join", handler(log, func(w http.ResponseWriter, r *http.Request) error {
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
	r.Post("/v1/join/challenge", handler(log, func(w http.ResponseWriter, r *http.Request) error {
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
	r.Post("/v1/renew", handler(log, func(w http.ResponseWriter, r *http.Request) error {
		id, err := clientIdentity(r)
		if err != nil {
			return refused(r, al, err)
		}
		if id == nil {
			return refused(r, al, fault.Unauthenticated(api.CodeUnauthenticated, "renewal needs a bot identity certificate"))
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
	// Hosts poll the locks every few seconds; the ETag makes an unchanged
	// answer a 304 without a body.
	r.Get("/v1/locks", handler(log, func(w http.ResponseWriter, r *http.Request) error {
		if _, err := botIdentity(r, al, "the lock list"); err != nil {
			return err
		}
		list, tag, err := j.LockList(r.Context())
		if err != nil {
			return err
		}
		if notModified(w, r, tag) {
			return nil
		}
		httpjson.Write(w, http.StatusOK, list)
		return nil
	}))
	// A bot lists the hosts its roles let it log in to, for mwictl
	// ssh-config --nodes.
	r.Get("/v1/nodes", handler(log, func(w http.ResponseWriter, r *http.Request) error {
		id, err := botIdentity(r, al, "the node list")
		if err != nil {
			return err
		}
		nodes, err := j.ReachableNodes(r.Context(), *id, r.RemoteAddr)
		if err != nil {
			return err
		}
		httpjson.Write(w, http.StatusOK, nodes)
		return nil
	}))
	// The KRL is public, as the user CA's key is: hosts that run only
	// sshd fetch it without an identity. Anonymous callers are bounded by
	// the gate's limits on anonymous connections, and the authority
	// rebuilds the KRL only when the locks change.
	r.Get("/v1/ssh/krl", handler(log, func(w http.ResponseWriter, r *http.Request) error {
		data, tag, err := j.KRL(r.Context())
		if err != nil {
			return err
		}
		if notModified(w, r, tag) {
			return nil
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.WriteHeader(http.StatusOK)
		w.Write(data)
		return nil
	}))
	r.Post("/v1/audit/ssh-refusal", handler(log, func(w http.ResponseWriter, r *http.Request) error {
		id, err := botIdentity(r, al, "reporting an SSH refusal")
		if err != nil {
			return err
		}
		var req api.SSHRefusal
		if err := httpjson.Decode(r, &req, refusalLimits); err != nil {
			return refused(r, al, err)
		}
		if err := j.SSHRefusal(r.Context(), *id, req, r.RemoteAddr); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}))
	return r
}

// botIdentity returns the caller's bot identity, refusing (and auditing)
// a caller without one; what names what needs it.
func botIdentity(r *http.Request, al *audit.Log, what string) (*ca.Identity, error) {
	id, err := clientIdentity(r)
	if err != nil {
		return nil, refused(r, al, err)
	}
	if id == nil {
		return nil, refused(r, al, fault.Unauthenticated(api.CodeUnauthenticated, "%s needs a bot identity certificate", what))
	}
	return id, nil
}

// notModified sets the ETag header to tag and, if the request's
// If-None-Match names it, answers 304 Not Modified and reports true.
func notModified(w http.ResponseWriter, r *http.Request, tag string) bool {
	w.Header().Set("ETag", tag)
	w.Header().Set("Cache-Control", "no-cache")
	for _, v := range strings.Split(r.Header.Get("If-None-Match"), ",") {
		// If-None-Match compares weakly (RFC 9110, 13.1.2).
		if v = strings.TrimPrefix(strings.TrimSpace(v), "W/"); v == tag || v == "*" {
			w.WriteHeader(http.StatusNotModified)
			return true
		}
	}
	return false
}

// refused audits a request refused before the authority saw it, and
// returns err for the renderer. Such records are rate-limited by the
// audit log, since the caller decides how many there are.
func refused(r *http.Request, al *audit.Log, err error) error {
	reason := err.Error()
	if e, ok := fault.As(err); ok {
		reason = e.Message
	}
	attrs := []slog.Attr{slog.String("remote", r.RemoteAddr), slog.String("path", r.URL.Path), slog.String("reason", reason)}
	al.Record(r.Context(), audit.EventRequest, audit.Denied, attrs...)
	return err
}

// nameParam returns the URL parameter key, a bot name or an instance ID,
// refusing (and auditing) one longer than any name the issuer makes.
func nameParam(r *http.Request, al *audit.Log, key string) (string, error) {
	v := chi.URLParam(r, key)
	what := map[string]string{"bot": "bot name", "id": "instance ID"}[key]
	if len(v) > maxName {
		return "", refused(r, al, fault.Invalid(api.CodeBadRequest, "%s is %d bytes long; at most %d", what, len(v), maxName))
	}
	return v, nil
}

// healthTimeout bounds the question /healthz asks the store.
const healthTimeout = 3 * time.Second

// handler adapts h as httpjson.Handler does, and is where a store that
// cannot be reached (store.ErrUnavailable, in any route) becomes a
// refusal: 503 store_unavailable with the reason, which the caller may
// retry, rather than an internal error. It is not audited, as no decision
// was made; syncStore logs the outage once.
func handler(log *slog.Logger, h httpjson.HandlerFunc) http.HandlerFunc {
	return httpjson.Handler(log, func(w http.ResponseWriter, r *http.Request) error {
		return storeFault(h(w, r))
	})
}

// storeFault returns err, or the refusal that says the store cannot be
// reached if err is store.ErrUnavailable.
func storeFault(err error) error {
	if !errors.Is(err, store.ErrUnavailable) {
		return err
	}
	return fault.Unavailable(api.CodeStoreUnavailable,
		"the issuer cannot reach its database (%s): nothing is issued until it can; try again later", storeCause(err))
}

// storeCause is what a refusal shows of a store that cannot be reached:
// the system's reason, without addresses or names.
func storeCause(err error) string {
	var errno syscall.Errno
	switch {
	case errors.As(err, &errno):
		return errno.Error()
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "no answer in time"
	}
	return "connection failed or lost"
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
	AddLock(ctx context.Context, t api.LockTarget, reason string, ttl time.Duration) (api.Lock, error)
	RemoveLock(ctx context.Context, t api.LockTarget) (api.Lock, error)
	Locks(ctx context.Context) ([]api.Lock, error)
	Nodes(ctx context.Context) ([]api.Node, error)
	KubeRBAC(ctx context.Context, cluster string) (api.KubeRBAC, error)
}

// resources is what the admin API needs to administer the resources: the
// server, which owns the running resource set.
type resources interface {
	CreateResources(ctx context.Context, req api.CreateResourcesRequest) (api.CreateResourcesResponse, error)
	GetResources(ctx context.Context, kind, name string) (api.Resources, error)
	DeleteResource(ctx context.Context, kind, name string) error
	Bots(ctx context.Context) (api.Bots, error)
	AddBot(ctx context.Context, req api.AddBotRequest) error
	UpdateBot(ctx context.Context, name string, req api.UpdateBotRequest) error
	Instances(ctx context.Context, bot string) (api.Instances, error)
	Instance(ctx context.Context, id string) (api.InstanceInfo, error)
	Tokens(ctx context.Context) (api.Tokens, error)
	DeleteToken(ctx context.Context, id string) error
	KubeClusters(ctx context.Context) (api.KubeClusters, error)
	IssueAdmin(ctx context.Context, req api.IssueAdminRequest) (api.IssueAdminResponse, error)
}

// adminIssueLimits bound a request for an admin identity.
var adminIssueLimits = httpjson.Limits{Body: 16 << 10, String: maxName, Items: maxItems,
	Strings: map[string]int{"csr": 8 << 10}}

// createLimits bound a create: a file of resource documents.
var createLimits = httpjson.Limits{Body: 2 << 20, String: maxName, Items: maxItems,
	Strings: map[string]int{"data": 1 << 20, "file": 4096}}

// adminRoutes is the admin API on the Unix socket: adminAPI, for root and
// the issuer's own user only.
func adminRoutes(a admin, res resources, al *audit.Log, log *slog.Logger) http.Handler {
	return sameUserOnly(al, log)(adminAPI(a, res, al, log))
}

// adminAPI is the route table of the admin API, which the admin socket
// and, to admin identities, the HTTPS API serve. Refusals are audited in
// al. The resource routes are served only if res is not nil.
func adminAPI(a admin, res resources, al *audit.Log, log *slog.Logger) http.Handler {
	r := chi.NewRouter()
	r.Use(auditActor)
	r.NotFound(httpjson.NotFound(log))
	r.MethodNotAllowed(httpjson.MethodNotAllowed(r))
	if res != nil {
		resourceRoutes(r, res, al, log)
	}
	if ro, ok := res.(rotator); ok {
		rotationRoutes(r, ro, al, log)
	}
	r.Post("/admin/v1/tokens", handler(log, func(w http.ResponseWriter, r *http.Request) error {
		var req api.CreateTokenRequest
		if err := httpjson.Decode(r, &req, smallLimits); err != nil {
			return refused(r, al, err)
		}
		if req.TTLSeconds > maxTTLSeconds {
			return refused(r, al, fault.Invalid(api.CodeBadRequest, "ttl_seconds: at most %d", maxTTLSeconds))
		}
		resp, err := a.CreateToken(r.Context(), req.Bot, time.Duration(req.TTLSeconds)*time.Second)
		if err != nil {
			return err
		}
		httpjson.Write(w, http.StatusCreated, resp)
		return nil
	}))
	r.Get("/admin/v1/nodes", handler(log, func(w http.ResponseWriter, r *http.Request) error {
		nodes, err := a.Nodes(r.Context())
		if err != nil {
			return err
		}
		httpjson.Write(w, http.StatusOK, api.Nodes{Nodes: nodes})
		return nil
	}))
	// The RBAC objects of a cluster, for mwi-issuer kube rbac.
	r.Get("/admin/v1/kube/rbac", handler(log, func(w http.ResponseWriter, r *http.Request) error {
		cluster := r.URL.Query().Get("cluster")
		if cluster == "" || len(cluster) > maxName {
			return refused(r, al, fault.Invalid(api.CodeBadRequest, "name a cluster, of at most %d bytes, with ?cluster=NAME", maxName))
		}
		rbac, err := a.KubeRBAC(r.Context(), cluster)
		if err != nil {
			return err
		}
		httpjson.Write(w, http.StatusOK, rbac)
		return nil
	}))
	r.Get("/admin/v1/locks", handler(log, func(w http.ResponseWriter, r *http.Request) error {
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
	// Locks: one route pair names the target in the body, as mwi-issuer
	// lock add and lock rm do; the older routes name it in the path. All
	// go through the same two calls.
	r.Post("/admin/v1/locks", handler(log, func(w http.ResponseWriter, r *http.Request) error {
		return addLock(w, r, a, al, nil)
	}))
	r.Post("/admin/v1/locks/remove", handler(log, func(w http.ResponseWriter, r *http.Request) error {
		var t api.LockTarget
		if err := httpjson.Decode(r, &t, smallLimits); err != nil {
			return refused(r, al, err)
		}
		return removeLock(w, r, a, t)
	}))
	r.Post("/admin/v1/bots/{bot}/lock", handler(log, func(w http.ResponseWriter, r *http.Request) error {
		return addLock(w, r, a, al, func(v string) api.LockTarget { return api.LockTarget{Bot: v} })
	}))
	r.Post("/admin/v1/bots/{bot}/unlock", handler(log, func(w http.ResponseWriter, r *http.Request) error {
		bot, err := nameParam(r, al, "bot")
		if err != nil {
			return err
		}
		// Unlocking a bot that is not locked is harmless, as it always was
		// on this route.
		_, err = a.RemoveLock(r.Context(), api.LockTarget{Bot: bot})
		if e, ok := fault.As(err); ok && e.Code == api.CodeNotFound {
			err = nil
		}
		if err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}))
	r.Post("/admin/v1/instances/{id}/lock", handler(log, func(w http.ResponseWriter, r *http.Request) error {
		return addLock(w, r, a, al, func(v string) api.LockTarget { return api.LockTarget{Instance: v} })
	}))
	r.Post("/admin/v1/instances/{id}/unlock", handler(log, func(w http.ResponseWriter, r *http.Request) error {
		id, err := nameParam(r, al, "id")
		if err != nil {
			return err
		}
		return removeLock(w, r, a, api.LockTarget{Instance: id})
	}))
	return r
}

// resourceRoutes adds the routes of the resources to the admin API's r.
func resourceRoutes(r chi.Router, res resources, al *audit.Log, log *slog.Logger) {
	get := func(path string, f func(r *http.Request) (any, error)) {
		r.Get(path, handler(log, func(w http.ResponseWriter, r *http.Request) error {
			v, err := f(r)
			if err != nil {
				return err
			}
			httpjson.Write(w, http.StatusOK, v)
			return nil
		}))
	}
	r.Post("/admin/v1/resources", handler(log, func(w http.ResponseWriter, r *http.Request) error {
		var req api.CreateResourcesRequest
		if err := httpjson.Decode(r, &req, createLimits); err != nil {
			return refused(r, al, err)
		}
		resp, err := res.CreateResources(r.Context(), req)
		if err != nil {
			return err
		}
		httpjson.Write(w, http.StatusOK, resp)
		return nil
	}))
	get("/admin/v1/resources", func(r *http.Request) (any, error) {
		return res.GetResources(r.Context(), r.URL.Query().Get("kind"), r.URL.Query().Get("name"))
	})
	r.Delete("/admin/v1/resources/{kind}/{name}", handler(log, func(w http.ResponseWriter, r *http.Request) error {
		if err := res.DeleteResource(r.Context(), chi.URLParam(r, "kind"), chi.URLParam(r, "name")); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}))
	get("/admin/v1/bots", func(r *http.Request) (any, error) { return res.Bots(r.Context()) })
	r.Post("/admin/v1/bots", handler(log, func(w http.ResponseWriter, r *http.Request) error {
		var req api.AddBotRequest
		if err := httpjson.Decode(r, &req, smallLimits); err != nil {
			return refused(r, al, err)
		}
		if err := res.AddBot(r.Context(), req); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}))
	r.Post("/admin/v1/bots/{bot}/update", handler(log, func(w http.ResponseWriter, r *http.Request) error {
		bot, err := nameParam(r, al, "bot")
		if err != nil {
			return err
		}
		var req api.UpdateBotRequest
		if err := httpjson.Decode(r, &req, smallLimits); err != nil {
			return refused(r, al, err)
		}
		if err := res.UpdateBot(r.Context(), bot, req); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}))
	r.Delete("/admin/v1/bots/{bot}", handler(log, func(w http.ResponseWriter, r *http.Request) error {
		bot, err := nameParam(r, al, "bot")
		if err != nil {
			return err
		}
		if err := res.DeleteResource(r.Context(), "bot", bot); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}))
	get("/admin/v1/instances", func(r *http.Request) (any, error) {
		return res.Instances(r.Context(), r.URL.Query().Get("bot"))
	})
	get("/admin/v1/instances/{id}", func(r *http.Request) (any, error) {
		id, err := nameParam(r, al, "id")
		if err != nil {
			return nil, err
		}
		return res.Instance(r.Context(), id)
	})
	get("/admin/v1/tokens", func(r *http.Request) (any, error) { return res.Tokens(r.Context()) })
	r.Delete("/admin/v1/tokens/{id}", handler(log, func(w http.ResponseWriter, r *http.Request) error {
		id, err := nameParam(r, al, "id")
		if err != nil {
			return err
		}
		if err := res.DeleteToken(r.Context(), id); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}))
	get("/admin/v1/kube", func(r *http.Request) (any, error) { return res.KubeClusters(r.Context()) })
	// Admin identities, for mwi-issuer admin issue: served to the admin
	// socket's callers only (see Server.IssueAdmin).
	r.Post("/admin/v1/admins", handler(log, func(w http.ResponseWriter, r *http.Request) error {
		var req api.IssueAdminRequest
		if err := httpjson.Decode(r, &req, adminIssueLimits); err != nil {
			return refused(r, al, err)
		}
		resp, err := res.IssueAdmin(r.Context(), req)
		if err != nil {
			return err
		}
		httpjson.Write(w, http.StatusCreated, resp)
		return nil
	}))
}

// addLock serves a lock request. pathTarget, if not nil, makes the target
// from the path's bot or id parameter, and the body must then name none.
func addLock(w http.ResponseWriter, r *http.Request, a admin, al *audit.Log, pathTarget func(string) api.LockTarget) error {
	var req api.LockRequest
	if pathTarget != nil {
		key := "bot"
		if chi.URLParam(r, "id") != "" {
			key = "id"
		}
		v, err := nameParam(r, al, key)
		if err != nil {
			return err
		}
		if err := httpjson.Decode(r, &req, lockLimits); err != nil {
			return refused(r, al, err)
		}
		if req.LockTarget != (api.LockTarget{}) {
			return refused(r, al, fault.Invalid(api.CodeBadRequest, "this route names the lock's target in its path; the body names none"))
		}
		req.LockTarget = pathTarget(v)
	} else if err := httpjson.Decode(r, &req, lockLimits); err != nil {
		return refused(r, al, err)
	}
	if req.TTLSeconds < 0 || req.TTLSeconds > maxTTLSeconds {
		return refused(r, al, fault.Invalid(api.CodeBadRequest, "ttl_seconds: from 0 to %d", maxTTLSeconds))
	}
	l, err := a.AddLock(r.Context(), req.LockTarget, req.Reason, time.Duration(req.TTLSeconds)*time.Second)
	if err != nil {
		return err
	}
	httpjson.Write(w, http.StatusOK, l)
	return nil
}

// removeLock serves the removal of the lock of t.
func removeLock(w http.ResponseWriter, r *http.Request, a admin, t api.LockTarget) error {
	l, err := a.RemoveLock(r.Context(), t)
	if err != nil {
		return err
	}
	httpjson.Write(w, http.StatusOK, l)
	return nil
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
				httpjson.WriteError(w, log, fault.Denied(api.CodeAccessDenied,
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
