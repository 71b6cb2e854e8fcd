// Package localapi serves mwid's HTTP API on its Unix socket.
//
// Routes holds the whole route table. Handlers depend on the narrow Backend
// interface, return errors, and httpjson renders every error in the one
// JSON shape. openapi.yaml at the repository root documents every route;
// a contract test keeps the two in step.
package localapi

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/sshconfig"
	"github.com/mwi-project/mwi/internal/fault"
	"github.com/mwi-project/mwi/internal/httpjson"
	"github.com/mwi-project/mwi/internal/version"
)

// Backend is what the API needs from the daemon.
//
// Its methods refuse with a *fault.Error, whose code the API answers with
// and whose kind picks the status; any other error is answered as an
// internal error, without its text. Every method that needs credentials
// refuses with code not_joined (fault.KindUnavailable, as NotJoined does)
// until mwid holds some.
type Backend interface {
	// Status returns the daemon's state.
	Status() api.Status
	// Readiness says whether the daemon holds valid credentials.
	Readiness() api.Readiness
	// Identity returns the SSH user certificate; a bot whose roles allow
	// no logins has none, and is refused with code not_found
	// (fault.KindNotFound).
	Identity() (api.Identity, error)
	// KnownHosts returns known_hosts lines trusting the issuer's host CAs
	// for hosts, names that sshconfig.CheckName accepts, or for the
	// configured host patterns if there are none.
	KnownHosts(hosts []string) (string, error)
	// SSHConfig returns an ssh_config block; mwictl is the path of the
	// mwictl that its KnownHostsCommand runs.
	SSHConfig(mwictl string) (string, error)
	// Renew renews now and returns the status after it. A failed renewal
	// is refused with code renew_failed (fault.KindUpstream), saying why.
	Renew(ctx context.Context) (api.Status, error)
	// Reload reloads the configuration file. A file that does not load is
	// refused with code reload_failed (fault.KindFailedPrecondition), and
	// the running configuration stays.
	Reload() (api.ReloadResult, error)
	// KubeClusters lists the Kubernetes clusters mwid holds certificates
	// for. Credentials that have expired are refused as not_joined.
	KubeClusters() ([]api.KubernetesCluster, error)
	// Kubeconfig renders a kubeconfig. Besides KubeClusters' refusals, an
	// unknown cluster, or none at all, is refused with code not_found
	// (fault.KindNotFound), and a request that cannot be rendered (such
	// as a context template giving two clusters one name) with code
	// bad_request (fault.KindInvalid).
	Kubeconfig(r KubeconfigRequest) (string, error)
	// KubeCredential returns the ExecCredential for one cluster, with
	// KubeClusters' refusals; an unknown cluster is refused with code
	// not_found (fault.KindNotFound).
	KubeCredential(cluster string) (api.ExecCredential, error)
	// SSHNodes asks the issuer for the hosts the bot's roles let it log in
	// to, keeping the logins its SSH user certificate holds. A bot without
	// one is refused with code not_found (fault.KindNotFound), and a
	// failure to ask with code issuer_failed (fault.KindUpstream).
	SSHNodes(ctx context.Context) (api.SSHNodes, error)
	// SSHHostOutputs lists the configured ssh_host outputs.
	SSHHostOutputs() []api.SSHHostOutput
	// ReportSSHRefusal logs a login this host's sshd refused and passes
	// it on to the issuer's audit log, best effort.
	ReportSSHRefusal(r api.SSHRefusal)
}

// Routes returns the route table of the local API. Middlewares run first,
// in order, for every route.
func Routes(b Backend, metrics http.Handler, log *slog.Logger, middlewares ...func(http.Handler) http.Handler) http.Handler {
	r := chi.NewRouter()
	r.Use(middlewares...)
	r.NotFound(httpjson.NotFound(log))
	r.MethodNotAllowed(httpjson.MethodNotAllowed(r))
	h := func(f httpjson.HandlerFunc) http.HandlerFunc { return httpjson.Handler(log, f) }

	r.Get("/healthz", func(w http.ResponseWriter, r *http.Request) {
		httpjson.Write(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	r.Get("/readyz", func(w http.ResponseWriter, r *http.Request) {
		rd := b.Readiness()
		status := http.StatusOK
		if !rd.Ready {
			status = http.StatusServiceUnavailable
		}
		httpjson.Write(w, status, rd)
	})
	r.Method(http.MethodGet, "/metrics", metrics)
	r.Get("/v1/version", func(w http.ResponseWriter, r *http.Request) {
		v := version.Get()
		httpjson.Write(w, http.StatusOK, api.Version{Version: v.Version, Commit: v.Commit})
	})
	r.Get("/v1/status", func(w http.ResponseWriter, r *http.Request) {
		httpjson.Write(w, http.StatusOK, b.Status())
	})
	r.Get("/v1/identity", h(func(w http.ResponseWriter, r *http.Request) error {
		id, err := b.Identity()
		if err != nil {
			return err
		}
		httpjson.Write(w, http.StatusOK, id)
		return nil
	}))
	r.Get("/v1/ssh/known_hosts", h(func(w http.ResponseWriter, r *http.Request) error {
		hosts, err := hostParams(r)
		if err != nil {
			return err
		}
		kh, err := b.KnownHosts(hosts)
		if err != nil {
			return err
		}
		writeText(w, kh)
		return nil
	}))
	r.Get("/v1/ssh/config", h(func(w http.ResponseWriter, r *http.Request) error {
		cfg, err := b.SSHConfig(r.URL.Query().Get("mwictl"))
		if err != nil {
			return err
		}
		writeText(w, cfg)
		return nil
	}))
	r.Get("/v1/ssh/nodes", h(func(w http.ResponseWriter, r *http.Request) error {
		nodes, err := b.SSHNodes(r.Context())
		if err != nil {
			return err
		}
		httpjson.Write(w, http.StatusOK, nodes)
		return nil
	}))
	r.Get("/v1/ssh/host_outputs", func(w http.ResponseWriter, r *http.Request) {
		httpjson.Write(w, http.StatusOK, b.SSHHostOutputs())
	})
	r.Post("/v1/ssh/refusals", h(func(w http.ResponseWriter, r *http.Request) error {
		ref, err := sshRefusal(r)
		if err != nil {
			return err
		}
		b.ReportSSHRefusal(ref)
		w.WriteHeader(http.StatusNoContent)
		return nil
	}))
	r.Post("/v1/renew", h(func(w http.ResponseWriter, r *http.Request) error {
		st, err := b.Renew(r.Context())
		if err != nil {
			return err
		}
		httpjson.Write(w, http.StatusOK, st)
		return nil
	}))
	r.Post("/v1/reload", h(func(w http.ResponseWriter, r *http.Request) error {
		res, err := b.Reload()
		if err != nil {
			return err
		}
		httpjson.Write(w, http.StatusOK, res)
		return nil
	}))
	r.Get("/v1/kubernetes/clusters", h(func(w http.ResponseWriter, r *http.Request) error {
		clusters, err := b.KubeClusters()
		if err != nil {
			return err
		}
		httpjson.Write(w, http.StatusOK, clusters)
		return nil
	}))
	r.Get("/v1/kubernetes/kubeconfig", h(func(w http.ResponseWriter, r *http.Request) error {
		req, err := kubeconfigRequest(r)
		if err != nil {
			return err
		}
		cfg, err := b.Kubeconfig(req)
		if err != nil {
			return err
		}
		writeYAML(w, cfg)
		return nil
	}))
	r.Get("/v1/kubernetes/credential", h(func(w http.ResponseWriter, r *http.Request) error {
		cluster, err := clusterParam(r)
		if err != nil {
			return err
		}
		cred, err := b.KubeCredential(cluster)
		if err != nil {
			return err
		}
		httpjson.Write(w, http.StatusOK, cred)
		return nil
	}))
	return r
}

// maxHosts bounds the host parameters of GET /v1/ssh/known_hosts: the
// names of one node.
const maxHosts = 64

// hostParams returns the host parameters of GET /v1/ssh/known_hosts,
// refusing more than maxHosts and any that sshconfig.CheckName refuses:
// each becomes a known_hosts pattern.
func hostParams(r *http.Request) ([]string, error) {
	hosts := r.URL.Query()["host"]
	if len(hosts) > maxHosts {
		return nil, fault.Invalid(api.CodeBadRequest, "%d host parameters; at most %d", len(hosts), maxHosts)
	}
	for _, h := range hosts {
		if err := sshconfig.CheckName(h); err != nil {
			return nil, fault.Invalid(api.CodeBadRequest, "host: %v", err)
		}
	}
	return hosts, nil
}

// maxRefusal bounds the body of POST /v1/ssh/refusals.
const maxRefusal = 16 << 10

// sshRefusal decodes the body of POST /v1/ssh/refusals.
func sshRefusal(r *http.Request) (api.SSHRefusal, error) {
	var ref api.SSHRefusal
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxRefusal))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ref); err != nil {
		return ref, fault.Invalid(api.CodeBadRequest, "the body is not an SSH refusal: %v", err)
	}
	if ref.Login == "" || ref.Reason == "" {
		return ref, fault.Invalid(api.CodeBadRequest, "an SSH refusal needs a login and a reason")
	}
	// The host is mwid's to name, from its own certificate.
	ref.Host = ""
	return ref, nil
}

func writeText(w http.ResponseWriter, s string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	w.Write([]byte(s))
}

// NotJoined is the error for requests that need credentials mwid does not
// have yet.
func NotJoined() error {
	return fault.Unavailable(api.CodeNotJoined, "mwid has not joined the issuer yet")
}
