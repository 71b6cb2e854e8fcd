// Package server runs mwi-issuer: the HTTPS API that daemons join and renew
// through, and the admin API on a local Unix socket and, to admin
// identities, on the HTTPS API; and, if Config.DiagAddr asks for it, the
// diagnostics listener with health and metrics (diag.go).
package server

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/mwi-project/mwi/internal/connlimit"
	"github.com/mwi-project/mwi/internal/diag"
	"github.com/mwi-project/mwi/internal/logging"
	"github.com/mwi-project/mwi/internal/sdnotify"
	"github.com/mwi-project/mwi/internal/unixsock"
	"github.com/mwi-project/mwi/internal/version"
	"github.com/mwi-project/mwi/internal/watch"
	"github.com/mwi-project/mwi/issuer/audit"
	"github.com/mwi-project/mwi/issuer/authority"
	"github.com/mwi-project/mwi/issuer/ca"
	"github.com/mwi-project/mwi/issuer/kuberbac"
	"github.com/mwi-project/mwi/issuer/metrics"
	"github.com/mwi-project/mwi/issuer/resource"
	"github.com/mwi-project/mwi/issuer/store"
)

// Config is the issuer's runtime configuration.
type Config struct {
	// StateDir holds the authorities (made by ca.Init) and, unless Store
	// names another, the store.
	StateDir string
	// Store is where the store is, as store.Open takes it: a bbolt file
	// (bolt://PATH or a path) or a PostgreSQL URL. Empty means the bbolt
	// file STATE/store.db.
	Store string
	// Listen is the HTTPS address, such as "127.0.0.1:7443".
	Listen string
	// ResourcesDir holds the role and bot resource files.
	ResourcesDir string
	// AdminSocket is the path of the admin Unix socket.
	AdminSocket string
	// AuditLog is the audit log file; empty means standard output.
	// ReopenAuditLog opens it again, as after logrotate renamed it.
	AuditLog string
	// ClusterName names the issuer's cluster in every audit record, and is
	// the audience that ID tokens must be issued for when their token
	// resource sets none; empty means authority.DefaultClusterName
	// ("mwi").
	ClusterName string
	// ResourceSettle is how long the resource directory must stay the
	// same after a change before the change is loaded; zero means
	// watch.DefaultSettle. See loadResources.
	ResourceSettle time.Duration
	// Limits bound connections and their time; zero fields mean the
	// defaults (DefaultLimits).
	Limits Limits
	// DiagAddr, if set, is the TCP address of the diagnostics listener:
	// /livez, /readyz and /metrics, without TLS or authentication. It
	// must be a loopback address unless DiagAllowRemote (CheckDiagAddr).
	DiagAddr        string
	DiagAllowRemote bool
}

// resourceRecheck is how far apart the two reads of the resource
// directory are that must agree for a set to load.
const resourceRecheck = 100 * time.Millisecond

// startupLoads bounds the attempts to load the resources at start while
// they keep changing.
const startupLoads = 5

// DefaultConfig returns the configuration used when only a state directory
// is given: everything lives inside it.
func DefaultConfig(stateDir string) Config {
	return Config{
		StateDir:     stateDir,
		Listen:       "127.0.0.1:7443",
		ResourcesDir: filepath.Join(stateDir, "resources"),
		AdminSocket:  filepath.Join(stateDir, "admin.sock"),
		AuditLog:     filepath.Join(stateDir, "audit.log"),
		ClusterName:  authority.DefaultClusterName,
	}
}

// Server is a running issuer.
type Server struct {
	cfg  Config
	log  *slog.Logger
	auth *authority.Authority

	// metrics are served on the diagnostics listener, if there is one.
	metrics *metrics.Metrics

	// reloadMu serializes the changes of the running resource set; see
	// swap.
	reloadMu sync.Mutex
	// dir is the resource directory as the running set was loaded from it.
	dir *resource.Dir
	// recheck tells the resource watcher that the resources were loaded
	// without it: at start, or on SIGHUP. See watch.Watcher.Recheck.
	recheck chan struct{}
	// loaded, if set, is called with each resource set that Reload
	// applies; tests observe reloads with it.
	loaded func(*resource.Set)
	// changes is the store's count of changes (store.Store.Changes) that
	// the running set and the authority's caches reflect. reloadMu
	// guards it.
	changes uint64
	// pollFailed is whether the last poll of the store failed, so that a
	// store that is down is logged once, not each second.
	pollFailed bool
	// ca is what the authorities in use were loaded from: the store's
	// rotation records. reloadMu guards it.
	ca caState
}

// New loads the authorities, the store and the resources named by cfg.
// Call Close when done, even if Run was never called.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if cfg.DiagAddr != "" {
		if err := CheckDiagAddr(cfg.DiagAddr, cfg.DiagAllowRemote); err != nil {
			return nil, err
		}
	}
	// An issuer stopped in the middle of a rotation's file moves left
	// pairs that Load refuses.
	repaired, err := ca.Repair(cfg.StateDir)
	for _, r := range repaired {
		log.Info("finished the file moves of a rotation stopped half way", "repaired", r)
	}
	if err != nil {
		return nil, fmt.Errorf("finish the file moves of a rotation in %s: %w", cfg.StateDir, err)
	}
	authorities, err := ca.Load(cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("load authorities from %s (run mwi-issuer init first?): %w", cfg.StateDir, err)
	}
	for _, f := range authorities.Created() {
		log.Info("created an authority that this state directory predates", "file", f)
	}
	al := audit.New(os.Stdout)
	if cfg.AuditLog != "" {
		if al, err = audit.Open(cfg.AuditLog); err != nil {
			return nil, err
		}
	}
	al.Logger = log
	al.Cluster = cmp.Or(cfg.ClusterName, authority.DefaultClusterName)
	location := cfg.Store
	if location == "" {
		location = filepath.Join(cfg.StateDir, "store.db")
	}
	st, err := store.Open(location)
	if err != nil {
		al.Close()
		return nil, err
	}
	log.Info("store opened", "store", store.Redact(location))
	m := metrics.New(version.Get())
	st = m.InstrumentStore(st)
	s := &Server{
		cfg: cfg,
		log: log,
		auth: &authority.Authority{
			CA:          authorities,
			Store:       st,
			Audit:       al,
			ClusterName: cfg.ClusterName,
			Log:         log,
			Observer:    m,
			// syncStore calls LocksChanged when the store counts
			// a change.
			CacheLocks: true,
		},
	}
	s.metrics = m
	m.Watch(s.auth.CAs, st, time.Now)
	// The authorities follow the rotations in the store; an issuer that
	// cannot find one a rotation names does not start rather than sign
	// with another.
	s.reloadMu.Lock()
	s.tidyAtStart(context.Background())
	err = s.loadCAs(context.Background())
	s.reloadMu.Unlock()
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("load the authorities of the store's CA rotations: %w", err)
	}
	dir, err := loadResources(cfg, log)
	if err == nil {
		// The count is read before the documents, so that a change made
		// between the two reads is loaded again by the first poll.
		s.changes, err = st.Changes(context.Background())
	}
	if err == nil {
		var set *resource.Set
		if set, err = s.loadAll(context.Background(), dir); err == nil {
			s.reloadMu.Lock()
			s.swap(dir, set, "start")
			s.reloadMu.Unlock()
		}
	}
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("load resources: %w", err)
	}
	// The watcher starts after this load, and must not take what it
	// first sees for what was loaded.
	s.recheck = make(chan struct{}, 1)
	s.recheckResources()
	return s, nil
}

// Close releases the store and the audit log, after writing the counts of
// denials the audit log left out.
func (s *Server) Close() error {
	return errors.Join(s.auth.Audit.Flush(context.Background()), s.auth.Store.Close(), s.auth.Audit.Close())
}

// ReopenAuditLog opens the audit log file again by its name, as SIGHUP
// asks: after logrotate renames the file, the records that follow go to a
// new one, and none is lost. If the file cannot be opened, the issuer
// keeps writing to the one it has, and logs why.
func (s *Server) ReopenAuditLog() error {
	if err := s.auth.Audit.Reopen(); err != nil {
		s.log.Error("cannot reopen the audit log; still writing to the file it had", "file", s.cfg.AuditLog, "err", err)
		return err
	}
	return nil
}

// warnKubeRBAC logs what kuberbac.Warnings says of set: the
// kubernetes_resources that restrict nothing, or cannot be enforced.
func warnKubeRBAC(log *slog.Logger, set *resource.Set) {
	for _, w := range kuberbac.Warnings(set) {
		log.Warn(w)
	}
}

// loadResources reads the resource directory at start. Files that change
// while they are read (see Reload) are read again, settle apart, a few
// times.
func loadResources(cfg Config, log *slog.Logger) (*resource.Dir, error) {
	for i := 1; ; i++ {
		dir, err := resource.ReadDirStable(cfg.ResourcesDir, resourceRecheck)
		if !errors.Is(err, resource.ErrChanging) || i == startupLoads {
			return dir, err
		}
		log.Warn("resource files are being written; waiting for them to settle", "dir", cfg.ResourcesDir, "err", err)
		time.Sleep(cmp.Or(cfg.ResourceSettle, watch.DefaultSettle))
	}
}

// Reload loads the resource directory again, as SIGHUP asks. A set with
// any error is rejected whole and the previous set keeps serving.
//
// A file rewritten in place is read twice, Config.ResourceSettle apart,
// and a set is loaded only if both reads agree: a file caught half-written
// can be valid and say less than the whole file, such as a token rule
// without its ref line, which admits more. Then the watcher is told to
// look again once the directory settles, since it did not see this load:
// a file that a writer pausing longer than that goes on to complete is
// loaded whole, even if it ends as the watcher last saw it.
func (s *Server) Reload() error {
	err := s.reload(cmp.Or(s.cfg.ResourceSettle, watch.DefaultSettle))
	if err == nil {
		s.recheckResources()
	}
	return err
}

// recheckResources tells the watcher that the resources were loaded
// without it.
func (s *Server) recheckResources() {
	select {
	case s.recheck <- struct{}{}:
	default: // one is pending already
	}
}

// reload loads the resource directory, reading it twice, recheck apart.
// The watcher calls it once the directory has been unchanged for
// Config.ResourceSettle, and calls it again if the files changed while
// they were read.
func (s *Server) reload(recheck time.Duration) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	sdnotify.Reloading()
	defer sdnotify.Ready()
	dir, err := resource.ReadDirStable(s.cfg.ResourcesDir, recheck)
	var set *resource.Set
	if err == nil {
		set, err = s.loadAll(context.Background(), dir)
	}
	if errors.Is(err, resource.ErrChanging) {
		s.log.Warn("resource files changed while they were read; keeping the previous set until they settle", "dir", s.cfg.ResourcesDir, "err", err)
		return err
	}
	if err != nil {
		s.log.Error("resources rejected; keeping the previous set", "dir", s.cfg.ResourcesDir, "err", err)
		s.metrics.ResourcesLoaded(err, time.Now())
		sdnotify.Status("serving the previous resources; the new set was rejected: " + err.Error())
		return err
	}
	s.swap(dir, set, "directory")
	return nil
}

// watchResources reloads the resources when the directory changes, until
// ctx is done. Edits apply like SIGHUP, once the directory has settled: a
// set with an error is refused whole and the previous set keeps serving.
func (s *Server) watchResources(ctx context.Context) {
	w := &watch.Watcher{
		Target:  s.cfg.ResourcesDir,
		Log:     s.log,
		Settle:  s.cfg.ResourceSettle,
		Recheck: s.recheck,
		Changed: func() error {
			// Files that changed while they were read are read again once
			// they settle; a set that is wrong stays refused until the
			// next edit.
			if err := s.reload(resourceRecheck); errors.Is(err, resource.ErrChanging) {
				return err
			}
			return nil
		},
	}
	if err := w.Run(ctx); err != nil {
		s.log.Warn("not watching the resource directory; reload with SIGHUP", "dir", s.cfg.ResourcesDir, "err", err)
	}
}

// storePoll is how often an issuer asks the store whether the resources
// or the locks changed, through another issuer on the same database: a
// change made on one replica is live on all within about storePoll. A
// poll is one read of one row. (PostgreSQL's LISTEN/NOTIFY could tell
// the replicas sooner; the poll is simpler and also serves bbolt.)
const storePoll = time.Second

// watchStore applies the changes of the store made by other issuers, as
// syncStore does, every storePoll until ctx is done.
func (s *Server) watchStore(ctx context.Context) {
	t := time.NewTicker(storePoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.syncStore(ctx)
	}
}

// syncStore loads the running set again, through swap, if the store
// counts changes of resources or locks since it was loaded, and tells the
// authority that the locks may have changed. A set that does not load is
// refused and logged, and the running set keeps serving, as with a bad
// edit of the directory; it is tried again at the next change. Changes
// made by this issuer are loaded again too, which is harmless.
func (s *Server) syncStore(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 10*storePoll)
	defer cancel()
	n, err := s.auth.Store.Changes(ctx)
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	if err != nil {
		if ctx.Err() == nil && !s.pollFailed {
			s.log.Warn("cannot ask the store for changes made by other issuers; will retry", "err", err)
			s.pollFailed = true
		}
		return
	}
	if s.pollFailed {
		s.log.Info("the store answers again")
		s.pollFailed = false
	}
	if n == s.changes {
		if s.ca.loadErr != nil {
			s.loadCAs(ctx) // a key another issuer made may have arrived
		}
		return
	}
	s.auth.LocksChanged()
	// A CA rotation that moved counts as a change too.
	s.loadCAs(ctx)
	set, err := s.loadAll(ctx, s.dir)
	if err != nil {
		if ctx.Err() != nil {
			return // stopping, or the store is slow: the next poll tries again
		}
		s.changes = n
		s.log.Error("resources changed in the store were rejected; keeping the previous set", "err", err)
		s.metrics.ResourcesLoaded(err, time.Now())
		sdnotify.Status("serving the previous resources; the stored set was rejected: " + err.Error())
		return
	}
	s.changes = n
	s.swap(s.dir, set, "store")
}

// pruneEvery is about how often an issuer removes from the store the
// records of no further use (see store.Store.Prune). Each wait is drawn
// between half and one and a half times it, so that replicas started
// together do not prune together; if they do, no harm is done, since
// removing is idempotent.
const pruneEvery = 10 * time.Minute

// pruneTimeout bounds one round of pruning; what it leaves, the next
// round removes.
const pruneTimeout = 5 * time.Minute

// pruneStore prunes the store about every period until ctx is done.
func (s *Server) pruneStore(ctx context.Context, every time.Duration) {
	for {
		t := time.NewTimer(every/2 + rand.N(every))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		s.prune(ctx)
	}
}

// prune removes the records of no further use from the store, for at most
// pruneTimeout, and logs what it removed if anything. What one round
// leaves, being stopped or failing, the next removes.
func (s *Server) prune(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, pruneTimeout)
	defer cancel()
	// What has expired is decided by the store's clock only: a round
	// when the store cannot tell its time prunes nothing.
	now, err := s.auth.Clock(pctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("cannot prune the store; will retry", "err", err)
		}
		return
	}
	st, err := s.auth.Store.Prune(pctx, now)
	attrs := []any{"tokens", st.Tokens, "challenges", st.Challenges, "replay_records", st.Used,
		"locks", st.Locks, "nodes", st.Nodes}
	switch {
	case err != nil && ctx.Err() == nil:
		s.log.Warn("cannot prune the store; will retry", append(attrs, "err", err)...)
	case st.Total() > 0:
		s.log.Info("pruned the store", attrs...)
	}
}

// notifyStatus tells systemd what the issuer serves, in one line.
func (s *Server) notifyStatus() {
	set := s.auth.Resources()
	sdnotify.Status(fmt.Sprintf("serving %s: %d roles, %d bots, %d tokens", s.cfg.Listen, len(set.Roles()), len(set.Bots()), len(set.Tokens())))
}

// alive reports whether the store still answers, for systemd's watchdog.
func (s *Server) alive() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _, err := s.auth.Store.BotLock(ctx, "", time.Now())
	return err == nil
}

// Run serves the HTTPS API and the admin socket until ctx is done.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return err
	}
	adminLn, err := unixsock.Listen(s.cfg.AdminSocket, 0o600)
	if err != nil {
		ln.Close()
		return fmt.Errorf("admin socket: %w", err)
	}
	lim := s.cfg.Limits.withDefaults()
	publicLn := newGate(ln, s.servingConfig(), lim, auditRefused(s.auth.Audit), s.auth.CA.AdminName, s.log)
	// The HTTPS API serves the admin socket's route table to admin
	// identities; see remoteAdmin.
	remote := &remoteAdmin{routes: adminAPI(s.auth, s, s.auth.Audit, s.log), name: s.auth.CA.AdminName}
	public := newPublicServer(publicRoutes(s.auth, remote, s.auth.Audit, s.log), publicLn, lim, s.log)
	admin := newAdminServer(adminRoutes(s.auth, s, s.auth.Audit, s.log), lim)
	adminCapped := adminListener(adminLn, lim, s.auth.Audit, s.log)
	s.log.Info("issuer serving", "listen", ln.Addr().String(), "admin_socket", s.cfg.AdminSocket,
		"pin", s.auth.CAs().Pin(), "resources", s.cfg.ResourcesDir, "cluster_name", s.auth.ClusterName,
		"max_connections", lim.MaxConns, "max_anonymous", lim.MaxAnonymous, "max_handshakes", lim.MaxHandshakes,
		"max_per_bot", lim.MaxPerBot, "max_per_instance", lim.MaxPerInstance)

	servers := []*http.Server{public, admin}
	errc := make(chan error, 3)
	if s.cfg.DiagAddr != "" {
		diagLn, err := diag.Listen(s.cfg.DiagAddr, diag.MaxConns, s.cfg.DiagAllowRemote)
		if err != nil {
			ln.Close()
			adminLn.Close()
			return fmt.Errorf("diagnostics listener: %w", err)
		}
		diagSrv := diag.NewServer(s.diagRoutes(), s.log)
		servers = append(servers, diagSrv)
		s.log.Info("diagnostics listener serving /livez, /readyz and /metrics", "diag_addr", diagLn.Addr().String())
		go func() { errc <- diagSrv.Serve(diagLn) }()
	}
	go func() { errc <- public.Serve(publicLn) }()
	go func() { errc <- admin.Serve(adminCapped) }()
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go s.watchResources(watchCtx)
	go s.watchStore(watchCtx)
	go s.pruneStore(watchCtx, pruneEvery)
	sdnotify.Ready()
	s.notifyStatus()
	go sdnotify.Watchdog(watchCtx, s.alive)
	select {
	case <-ctx.Done():
		err = nil
	case err = <-errc:
	}
	sdnotify.Stopping()
	shutdown(lim.ShutdownTimeout, s.log, servers...)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// tlsNow is the time at which the HTTPS API verifies client
// certificates: the store's clock, or, when the store cannot tell it, the
// local clock. The request is refused then anyway, as the authority
// decides nothing without the store's clock.
func (s *Server) tlsNow() time.Time {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if t, err := s.auth.Clock(ctx); err == nil {
		return t
	}
	return time.Now()
}

// maxHeaderBytes bounds a request's headers, and so its path: requests
// to the issuer carry a few short ones.
const maxHeaderBytes = 64 << 10

// tlsConfig is the TLS configuration of the HTTPS API of a, which
// verifies client certificates at now.
func tlsConfig(a *ca.Authority, now func() time.Time) *tls.Config {
	return &tls.Config{
		// Client certificates are verified at the time that decides
		// validity, the store's (see Authority.Clock), which signed them:
		// on a replica whose clock is an hour behind the database's, an
		// identity expired an hour ago would otherwise be taken.
		Time:         now,
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{*a.ServingCertificate()},
		// A first join has no client certificate; renewal, and a re-join
		// that keeps its instance, check for a verified one in their
		// handlers, as the admin API checks for an admin identity. One
		// that does not verify, such as an expired one, fails the
		// handshake, and the gate reports it to be audited.
		ClientAuth: tls.VerifyClientCertIfGiven,
		ClientCAs:  a.ClientPool(),
		// HTTP/1.1 only: over HTTP/2 one connection carries many requests
		// at once, each holding its body in memory, and the gate's caps,
		// which count connections, would not bound them. mwid makes one
		// request per connection.
		NextProtos: []string{"http/1.1"},
		// Every connection carries one short exchange, so none lives long
		// enough for the small first records of dynamic record sizing to
		// pay off: they cut a few kilobytes of answer into several
		// records, each sealed and written to the socket apart.
		DynamicRecordSizingDisabled: true,
	}
}

// http1Only is the protocols the public server speaks; see tlsConfig.
func http1Only() *http.Protocols {
	var p http.Protocols
	p.SetHTTP1(true)
	return &p
}

// auditRefused returns the gate's report of a TLS handshake that failed
// on the client's certificate, such as one the identity authority did not
// sign: it audits the refusal.
func auditRefused(al *audit.Log) func(remote string, err error) {
	return func(remote string, err error) {
		al.Record(context.Background(), audit.EventTLS, audit.Denied,
			slog.String("remote", remote), slog.String("reason", "client certificate refused: "+err.Error()))
	}
}

// newPublicServer returns the HTTPS API's server for h, with lim's
// timeouts. It serves g, which makes the TLS handshakes and which it tells
// of each connection's state.
func newPublicServer(h http.Handler, g *gate, lim Limits, log *slog.Logger) *http.Server {
	lim = lim.withDefaults()
	return &http.Server{
		Handler:           h,
		ConnState:         g.connState,
		Protocols:         http1Only(),
		ReadHeaderTimeout: lim.ReadHeaderTimeout,
		ReadTimeout:       lim.ReadTimeout,
		WriteTimeout:      lim.WriteTimeout,
		IdleTimeout:       lim.IdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

// adminListener bounds the connections of the admin socket ln to
// lim.MaxAdminConns, as mwid bounds its sockets'. A caller other than root
// and the issuer's own user is closed when it connects, before it is
// counted, and audited in al (sameUserOnly checks each request too). Only
// those two users are ever counted, and connlimit keeps its reserved places
// for exactly them, so the only bound left between them is the one per
// user: each may hold half, so that neither (a runaway script of the
// issuer's user, say) shuts out the other. When the issuer runs as root
// they are one user, which may hold all.
func adminListener(ln net.Listener, lim Limits, al *audit.Log, log *slog.Logger) *connlimit.Listener {
	lim = lim.withDefaults()
	perUID := lim.MaxAdminConns
	if adminSelf != 0 {
		perUID = max(perUID/2, 1)
	}
	var refusals logging.Limit
	return &connlimit.Listener{
		Listener: ln,
		Limits:   &connlimit.Limits{Max: lim.MaxAdminConns, PerUID: perUID, Reserved: lim.MaxAdminConns},
		Check: func(p unixsock.Peer) error {
			err := adminCaller(p)
			if err != nil {
				refusals.Warn(log, "admin caller refused: "+err.Error(), "uid", p.UID, "pid", p.PID)
				al.Record(context.Background(), audit.EventAdmin, audit.Denied,
					slog.Uint64("uid", uint64(p.UID)), slog.Uint64("gid", uint64(p.GID)), slog.Int("pid", int(p.PID)),
					slog.String("reason", err.Error()))
			}
			return err
		},
		Log:  log,
		Name: "admin",
	}
}

// newAdminServer returns the admin socket's server for h, with lim's
// timeouts. It serves a connlimit.Listener.
func newAdminServer(h http.Handler, lim Limits) *http.Server {
	lim = lim.withDefaults()
	return &http.Server{
		Handler:           h,
		ConnContext:       unixsock.ConnContext,
		ReadHeaderTimeout: lim.ReadHeaderTimeout,
		ReadTimeout:       lim.ReadTimeout,
		WriteTimeout:      lim.WriteTimeout,
		IdleTimeout:       lim.IdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
	}
}

// shutdown stops servers: each may finish the requests in progress within
// timeout, and is then closed with whatever connections it has left.
func shutdown(timeout time.Duration, log *slog.Logger, servers ...*http.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, srv := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Shutdown(ctx); err != nil {
				log.Warn("requests still in progress at shutdown; closing their connections", "timeout", timeout, "err", err)
				srv.Close()
			}
		}()
	}
	wg.Wait()
}
