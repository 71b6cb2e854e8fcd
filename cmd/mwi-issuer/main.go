// Command mwi-issuer is MWI's authority: it verifies joining machines, applies
// roles and signs short-lived SSH and X.509 certificates.
//
// Usage:
//
//	mwi-issuer init  --state DIR [--host NAME]... [--if-missing]
//	mwi-issuer serve --state DIR [--store URL] [--listen ADDR] [--resources DIR] [--admin-socket PATH] [--audit-log FILE] [--cluster-name NAME] [--resource-settle 2s] [--diag-addr 127.0.0.1:PORT]
//	mwi-issuer store migrate (--store URL | --state DIR)
//	mwi-issuer ca    --state DIR
//	mwi-issuer ca rotate --type TYPE --phase PHASE [--force] [--format text|json|yaml] [ADMIN]
//	mwi-issuer ca rotate status [--format text|json|yaml] [ADMIN]
//	mwi-issuer tls rotate --state DIR [--host NAME]...
//	mwi-issuer token create --bot NAME [--ttl 1h] [--json] [ADMIN]
//	mwi-issuer lock add (--bot NAME | --instance ID | --token NAME) [--ttl 1h] [--message TEXT] [ADMIN]
//	mwi-issuer lock ls [--format text|json|yaml] [ADMIN]
//	mwi-issuer lock rm (--bot NAME | --instance ID | --token NAME) [ADMIN]
//	mwi-issuer locks [--json] [ADMIN]
//	mwi-issuer instance lock ID --reason TEXT [ADMIN]
//	mwi-issuer instance unlock ID [ADMIN]
//	mwi-issuer bot lock NAME --reason TEXT [ADMIN]
//	mwi-issuer bot unlock NAME [ADMIN]
//	mwi-issuer nodes ls [--format text|json|yaml] [ADMIN]
//	mwi-issuer create -f FILE [--force] [ADMIN]
//	mwi-issuer get KIND[/NAME] [--format yaml|json] [ADMIN]
//	mwi-issuer rm KIND/NAME [ADMIN]
//	mwi-issuer bots ls [--format text|json|yaml] [ADMIN]
//	mwi-issuer bots add NAME --roles A,B [--logins X,Y] [ADMIN]
//	mwi-issuer bots update NAME (--add-roles A,B | --set-roles A,B) [--add-logins X,Y] [ADMIN]
//	mwi-issuer bots rm NAME [ADMIN]
//	mwi-issuer bots instances ls [BOT] [--format text|json|yaml] [ADMIN]
//	mwi-issuer bots instances show ID [--format yaml|json] [ADMIN]
//	mwi-issuer tokens ls [--format text|json|yaml] [ADMIN]
//	mwi-issuer tokens add --bot NAME [--ttl 1h] [--format text|json|yaml] [ADMIN]
//	mwi-issuer tokens rm NAME|ID|SECRET [ADMIN]
//	mwi-issuer kube ls [--format text|json|yaml] [ADMIN]
//	mwi-issuer kube rbac --cluster NAME [--apply --kubeconfig FILE] [ADMIN]
//	mwi-issuer admin issue --out DIR [--name NAME] [--ttl 8h] [--state DIR | --admin-socket PATH]
//	mwi-issuer audit search (--state DIR | --audit-log FILE) [--since 1h] [--event NAME] [--outcome denied] [--code CODE] [--bot NAME] [--instance ID] [--format text|json]
//	mwi-issuer completion bash|zsh|fish
//	mwi-issuer --version
//
// ADMIN says where the issuer's admin API is: on the issuer's machine,
// --state DIR or --admin-socket PATH (default $MWI_ADMIN_SOCKET); from
// anywhere, --issuer HOST:PORT --identity DIR (default $MWI_ISSUER and
// $MWI_IDENTITY), with an admin identity that admin issue wrote to DIR.
//
// Flags may come before or after a command's arguments. It exits 0 on
// success, 1 when the command failed, with the reason on standard error, and
// 2 when the command line is wrong, with one line that names the mistake.
// -h, --help and help print the help on standard output and exit 0.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/cli"
	"github.com/mwi-project/mwi/internal/httpjson"
	"github.com/mwi-project/mwi/internal/hygiene"
	"github.com/mwi-project/mwi/internal/logging"
	"github.com/mwi-project/mwi/internal/safefs"
	"github.com/mwi-project/mwi/internal/watch"
	"github.com/mwi-project/mwi/issuer/ca"
	"github.com/mwi-project/mwi/issuer/server"
	"github.com/mwi-project/mwi/issuer/store"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	return cli.Execute(newRoot(&env{stdout: stdout, stderr: stderr}), args, nil)
}

// env is what a command runs with: its outputs and the flags of every
// command, each command binding those it takes.
type env struct {
	stdout, stderr io.Writer

	state       string
	hosts       []string
	ifMissing   bool // init --if-missing
	listen      string
	resources   string
	adminSocket string
	issuer      string // host:port of the HTTPS API, for remote administration
	identity    string // admin identity directory, for remote administration
	auditLog    string
	store       string // the store's location, as store.Open takes it
	clusterName string
	settle      time.Duration
	logFormat   string
	logLevel    string
	bot         string
	ttl         time.Duration // token create --ttl
	lockTTL     time.Duration // lock add --ttl: another default
	json        bool
	reason      string
	target      api.LockTarget
	format      string
	nodesFormat string
	res         resourceFlags

	// diagAddr and diagAllowRemote are serve's diagnostics listener.
	diagAddr        string
	diagAllowRemote bool
}

// newRoot returns mwi-issuer's command tree, every command running with e.
func newRoot(e *env) *cobra.Command {
	root := &cobra.Command{
		Use:   "mwi-issuer",
		Short: "MWI's authority: verifies machines and signs their certificates",
		Long: "mwi-issuer is MWI's authority: it verifies joining machines, applies roles and\n" +
			"signs short-lived SSH and X.509 certificates.",
	}
	root.AddCommand(
		command("init", "", "create the authorities and a serving certificate in a new state directory", e.runInit, func(fs *pflag.FlagSet) {
			fs.StringVar(&e.state, "state", "", "state `DIR` to create (required)")
			fs.StringArrayVar(&e.hosts, "host", nil, "`NAME` or IP address for the serving certificate (repeatable; default: localhost, 127.0.0.1, ::1 and the hostname)")
			fs.BoolVar(&e.ifMissing, "if-missing", false, "do nothing, successfully, if the directory already holds an issuer (as mwi-issuer.service runs it before each start)")
		}),
		command("serve", "", "serve the issuer's API and its admin socket", e.runServe, func(fs *pflag.FlagSet) {
			fs.StringVar(&e.state, "state", "", "issuer state `DIR`, made by init (required)")
			fs.StringVar(&e.listen, "listen", "", "HTTPS listen `ADDR` (default 127.0.0.1:7443)")
			fs.StringVar(&e.resources, "resources", "", "resource `DIR` (default STATE/resources)")
			fs.StringVar(&e.adminSocket, "admin-socket", "", "admin socket `PATH` (default STATE/admin.sock)")
			fs.StringVar(&e.auditLog, "audit-log", "", "audit log `FILE` (default STATE/audit.log; - for standard output)")
			fs.StringVar(&e.store, "store", "", "store `URL`: bolt://PATH or postgres://USER:PASSWORD@HOST/DB (default bolt://STATE/store.db)")
			fs.StringVar(&e.clusterName, "cluster-name", "mwi", "cluster `NAME`: in every audit record, and the audience ID tokens must have when their token resource sets none")
			fs.DurationVar(&e.settle, "resource-settle", watch.DefaultSettle, "`DURATION` the resource directory must stay unchanged after an edit before it is loaded")
			fs.StringVar(&e.diagAddr, "diag-addr", "", "diagnostics listen `ADDR` for /livez, /readyz and /metrics, such as 127.0.0.1:9443 (default off; loopback only)")
			fs.BoolVar(&e.diagAllowRemote, "diag-allow-remote", false, "allow --diag-addr on an address other than loopback (it has no authentication)")
			fs.StringVar(&e.logFormat, "log-format", "text", "log `FORMAT`: text or json")
			fs.StringVar(&e.logLevel, "log-level", "info", "log `LEVEL`: debug, info, warn, error")
		}),
		e.caCommand(),
		group("tls", "manage the issuer's serving certificate",
			command("rotate", "", "replace the serving certificate with one from the same authority (pins stay valid)", e.runTLSRotate, func(fs *pflag.FlagSet) {
				fs.StringVar(&e.state, "state", "", "issuer state `DIR` (required)")
				fs.StringArrayVar(&e.hosts, "host", nil, "`NAME` or IP address for the new serving certificate (repeatable; default: the names of the current one)")
			}),
		),
		group("token", "manage join tokens",
			command("create", "", "create a one-time join token for a bot", e.runTokenCreate, func(fs *pflag.FlagSet) {
				fs.StringVar(&e.bot, "bot", "", "bot `NAME` the token joins as (required)")
				fs.DurationVar(&e.ttl, "ttl", time.Hour, "`DURATION` the token can be used for")
				fs.BoolVar(&e.json, "json", false, "print JSON")
				e.adminSocketFlags(fs)
			}),
		),
		group("lock", "lock bots, instances or tokens out, as tctl lock does",
			command("add", "", "refuse a bot, an instance or the instances of a token until the lock ends or is removed", e.runLockAdd, func(fs *pflag.FlagSet) {
				e.lockTargetFlags(fs)
				fs.DurationVar(&e.lockTTL, "ttl", 0, "`DURATION` after which the lock lifts by itself (default: until lock rm)")
				fs.StringVar(&e.reason, "message", "", "`TEXT` saying why, shown to the daemons and hosts refused and in the audit log")
				e.adminSocketFlags(fs)
			}),
			command("ls", "", "list the locks in force, their reasons and how to lift them", e.runLocks, func(fs *pflag.FlagSet) {
				fs.StringVar(&e.format, "format", "text", "output `FORMAT`: text, json or yaml")
				e.adminSocketFlags(fs)
			}),
			command("rm", "", "remove the lock of a bot, an instance or a token", e.runLockRm, func(fs *pflag.FlagSet) {
				e.lockTargetFlags(fs)
				e.adminSocketFlags(fs)
			}),
		),
		command("locks", "", "list every lock, its reason and how to lift it (as lock ls)", e.runLocks, func(fs *pflag.FlagSet) {
			fs.BoolVar(&e.json, "json", false, "print JSON")
			e.adminSocketFlags(fs)
		}),
		group("instance", "lock or unlock one instance of a bot",
			e.lockCommand("instance", "lock", "ID"),
			e.lockCommand("instance", "unlock", "ID"),
		),
		group("bot", "lock or unlock a bot and all its instances",
			e.lockCommand("bot", "lock", "NAME"),
			e.lockCommand("bot", "unlock", "NAME"),
		),
		e.nodesCommand(),
		e.adminCommand(),
		e.auditCommand(),
		group("store", "manage the issuer's store",
			command("migrate", "", "bring the store's schema up to date, as serve does at start", e.runStoreMigrate, func(fs *pflag.FlagSet) {
				fs.StringVar(&e.store, "store", "", "store `URL`: bolt://PATH or postgres://USER:PASSWORD@HOST/DB")
				fs.StringVar(&e.state, "state", "", "issuer state `DIR`, for its bbolt store (used without --store)")
			}),
		),
	)
	root.AddCommand(e.resourceCommands()...)
	cli.Prepare(root, e.stdout, e.stderr)
	return root
}

// command returns a command named name that takes the positional arguments
// named in args (space-separated; none if empty) and the flags that flags
// adds, and runs run with the arguments.
func command(name, args, short string, run func(args []string) error, flags func(*pflag.FlagSet)) *cobra.Command {
	c := &cobra.Command{
		Use:   strings.TrimSpace(name + " " + args),
		Short: short,
		Args:  cli.NoArgs,
		RunE:  func(_ *cobra.Command, a []string) error { return run(a) },
	}
	if args != "" {
		c.Args = cli.ExactArgs(strings.Fields(args)...)
	}
	if flags != nil {
		flags(c.Flags())
	}
	return c
}

// group returns a command that only groups subs.
func group(name, short string, subs ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{Use: name, Short: short}
	c.AddCommand(subs...)
	return c
}

// lockCommand returns "bot lock", "bot unlock", "instance lock" or
// "instance unlock", whose argument, named arg, is the bot or instance.
func (e *env) lockCommand(kind, verb, arg string) *cobra.Command {
	short := map[string]string{
		"bot lock":        "refuse the bot's joins and renewals until it is unlocked",
		"bot unlock":      "lift the lock of a bot (its instances' own locks stay)",
		"instance lock":   "refuse the renewals of one instance until it is unlocked",
		"instance unlock": "lift the lock of one instance",
	}[kind+" "+verb]
	return command(verb, arg, short, func(args []string) error { return e.runLock(kind, verb, args[0]) }, func(fs *pflag.FlagSet) {
		if verb == "lock" {
			fs.StringVar(&e.reason, "reason", "", "why, shown to the daemons refused and in the audit log (required)")
		}
		e.adminSocketFlags(fs)
	})
}

// lockTargetFlags adds the flags that name a lock's target.
func (e *env) lockTargetFlags(fs *pflag.FlagSet) {
	fs.StringVar(&e.target.Bot, "bot", "", "lock the bot `NAME` and every instance of it")
	fs.StringVar(&e.target.Instance, "instance", "", "lock the bot instance `ID`")
	fs.StringVar(&e.target.Token, "token", "", "lock the instances that joined with the token resource `NAME`")
}

// lockTarget returns the target the flags name, or a usage error unless
// they name exactly one.
func (e *env) lockTarget() (api.LockTarget, error) {
	n := 0
	for _, v := range []string{e.target.Bot, e.target.Instance, e.target.Token} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		return api.LockTarget{}, cli.Usagef("name exactly one of --bot, --instance and --token")
	}
	return e.target, nil
}

// defaultLockMessage is the reason of a lock added without --message: the
// issuer wants a reason, and the audit log says who added it.
const defaultLockMessage = "locked by an operator with mwi-issuer lock add"

func (e *env) runLockAdd([]string) error {
	t, err := e.lockTarget()
	if err != nil {
		return err
	}
	if e.lockTTL < 0 {
		return cli.Usagef("--ttl must be positive")
	}
	if e.lockTTL > 0 && e.lockTTL < time.Second {
		// Sent in whole seconds, it would be zero: a lock without an end.
		return cli.Usagef("--ttl must be at least 1s")
	}
	reason := e.reason
	if reason == "" {
		reason = defaultLockMessage
	}
	return e.addLock(t, reason, e.lockTTL)
}

// addLock adds the lock of t, as lock add, bot lock and instance lock do.
func (e *env) addLock(t api.LockTarget, reason string, ttl time.Duration) error {
	var l api.Lock
	req := api.LockRequest{LockTarget: t, Reason: reason, TTLSeconds: int64(ttl / time.Second)}
	if err := e.admin(http.MethodPost, "/admin/v1/locks", req, &l); err != nil {
		return err
	}
	switch {
	case l.Reason != reason:
		fmt.Fprintf(e.stdout, "%s was already locked since %s: %s\n", t.String(), l.At.Format(time.RFC3339), l.Reason)
	case !l.Expires.IsZero():
		fmt.Fprintf(e.stdout, "%s locked until %s\n", t.String(), l.Expires.Format(time.RFC3339))
	default:
		fmt.Fprintf(e.stdout, "%s locked\n", t.String())
	}
	return nil
}

func (e *env) runLockRm([]string) error {
	t, err := e.lockTarget()
	if err != nil {
		return err
	}
	return e.removeLock(t)
}

// removeLock removes the lock of t, as lock rm and instance unlock do.
func (e *env) removeLock(t api.LockTarget) error {
	var l api.Lock
	if err := e.admin(http.MethodPost, "/admin/v1/locks/remove", t, &l); err != nil {
		return err
	}
	what := t.String()
	if t.Instance != "" {
		what += " of bot " + l.Bot
	}
	fmt.Fprintf(e.stdout, "%s unlocked; it was locked since %s: %s\n", what, l.At.Format(time.RFC3339), l.Reason)
	return nil
}

// required returns a usage error naming the first of the flags (name,
// value pairs) whose value is empty.
func required(flags ...string) error {
	for i := 0; i+1 < len(flags); i += 2 {
		if flags[i+1] == "" {
			return cli.Usagef("--%s is required", flags[i])
		}
	}
	return nil
}

func (e *env) runInit([]string) error {
	if err := required("state", e.state); err != nil {
		return err
	}
	var missing error // with --if-missing, what Load found missing
	if e.ifMissing {
		// An issuer that loads is left alone. Any other error than a
		// missing file is reported, not papered over with new
		// authorities; a part of an issuer is refused by Init below.
		a, err := ca.Load(e.state)
		if err == nil {
			fmt.Fprintf(e.stdout, "%s already holds an issuer (ca_pin: %s); nothing to do\n", e.state, a.Pin())
			return nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		missing = err
	}
	hosts := e.hosts
	if len(hosts) == 0 {
		hosts = []string{"localhost", "127.0.0.1", "::1"}
		if h, err := os.Hostname(); err == nil && h != "localhost" {
			hosts = append(hosts, h)
		}
	}
	if err := ca.Init(e.state, hosts); err != nil {
		var exists *ca.ExistsError
		if missing != nil && errors.As(err, &exists) {
			// Say which file is missing, not only which one is there:
			// the administrator restores that one from a backup.
			return fmt.Errorf("%w; but it is only part of one, which init does not complete (new authorities would not match the rest): %v", err, missing)
		}
		return err
	}
	res, err := safefs.MkdirAll(filepath.Join(e.state, "resources"), 0o700)
	if err != nil {
		return err
	}
	res.Close()
	a, err := ca.Load(e.state)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "initialised issuer in %s\n", e.state)
	e.printCA(a)
	return nil
}

func (e *env) runCA([]string) error {
	if err := required("state", e.state); err != nil {
		return err
	}
	a, err := ca.Load(e.state)
	if err != nil {
		return err
	}
	e.printCA(a)
	return nil
}

// runTLSRotate replaces the serving certificate with one from the same TLS
// authority, so daemons pinning the authority keep trusting the issuer.
func (e *env) runTLSRotate([]string) error {
	if err := required("state", e.state); err != nil {
		return err
	}
	if err := ca.RotateServing(e.state, e.hosts); err != nil {
		return err
	}
	a, err := ca.Load(e.state)
	if err != nil {
		return err
	}
	leaf := a.ServingCertificate().Leaf
	names := append(append([]string(nil), leaf.DNSNames...), ipStrings(leaf.IPAddresses)...)
	fmt.Fprintf(e.stdout, "rotated the serving certificate in %s: %s, valid until %s\n", e.state,
		strings.Join(names, ", "), leaf.NotAfter.Format(time.RFC3339))
	fmt.Fprintf(e.stdout, "the authorities are unchanged (ca_pin: %s); mwi-issuer serve uses the new certificate when it starts\n", a.Pin())
	return nil
}

func ipStrings(ips []net.IP) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	return out
}

func (e *env) printCA(a *ca.Authority) {
	fmt.Fprintf(e.stdout, "ca_pin: %s\n", a.Pin())
	fmt.Fprintf(e.stdout, "ssh_user_ca: %s", ssh.MarshalAuthorizedKey(a.SSHUserCA()))
	fmt.Fprintf(e.stdout, "ssh_host_ca: %s", ssh.MarshalAuthorizedKey(a.SSHHostCA()))
	// The file for kube-apiserver's --client-ca-file.
	fmt.Fprintf(e.stdout, "kube_client_ca_file: %s\n", a.KubeCAFile())
	for _, f := range a.Created() {
		fmt.Fprintf(e.stderr, "mwi-issuer: created %s: this state directory predates it\n", f)
	}
}

func (e *env) runServe([]string) error {
	if err := required("state", e.state, "cluster-name", e.clusterName); err != nil {
		return err
	}
	if e.settle <= 0 {
		return cli.Usagef("--resource-settle must be positive")
	}
	if e.diagAddr != "" {
		if err := server.CheckDiagAddr(e.diagAddr, e.diagAllowRemote); err != nil {
			return cli.Usagef("--diag-addr: %v", err)
		}
	}
	log, err := logging.New(e.stderr, e.logFormat, e.logLevel)
	if err != nil {
		return err
	}
	// The issuer holds every CA key in memory.
	hygiene.Harden(log.Logger)
	cfg := server.DefaultConfig(e.state)
	if e.adminSocket == "" {
		// The admin socket is made only in a directory reached through no
		// symbolic link (unixsock refuses one). The state directory is the
		// administrator's choice, and under DynamicUser= systemd makes it
		// a link into /var/lib/private: the socket goes where it leads.
		dir, err := filepath.EvalSymlinks(e.state)
		if err != nil {
			return fmt.Errorf("serve: state directory: %w", err)
		}
		cfg.AdminSocket = filepath.Join(dir, "admin.sock")
	}
	for dst, v := range map[*string]string{&cfg.Listen: e.listen, &cfg.ResourcesDir: e.resources, &cfg.AdminSocket: e.adminSocket, &cfg.AuditLog: e.auditLog} {
		if v != "" {
			*dst = v
		}
	}
	if cfg.AuditLog == "-" {
		cfg.AuditLog = ""
	}
	cfg.ClusterName = e.clusterName
	cfg.ResourceSettle = e.settle
	cfg.Store = e.store
	cfg.DiagAddr, cfg.DiagAllowRemote = e.diagAddr, e.diagAllowRemote
	srv, err := server.New(cfg, log.Logger)
	if err != nil {
		return err
	}
	defer srv.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			// The audit log first: logrotate waits for nothing else.
			srv.ReopenAuditLog()
			srv.Reload()
		}
	}()
	return srv.Run(ctx)
}

// runStoreMigrate opens the store, which applies the migrations it has
// not had yet, and closes it.
func (e *env) runStoreMigrate([]string) error {
	location := e.store
	switch {
	case location == "" && e.state == "":
		return cli.Usagef("name the store with --store URL, or the state directory with --state DIR")
	case location == "":
		location = filepath.Join(e.state, "store.db")
	}
	st, err := store.Open(location)
	if err != nil {
		return err
	}
	if err := st.Close(); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "store %s is up to date\n", store.Redact(location))
	return nil
}

func (e *env) runTokenCreate([]string) error {
	if err := required("bot", e.bot); err != nil {
		return err
	}
	var resp api.CreateTokenResponse
	req := api.CreateTokenRequest{Bot: e.bot, TTLSeconds: int64(e.ttl.Seconds())}
	if err := e.admin(http.MethodPost, "/admin/v1/tokens", req, &resp); err != nil {
		return err
	}
	if e.json {
		return json.NewEncoder(e.stdout).Encode(resp)
	}
	// The secret alone on standard output, so scripts can capture it; the
	// rest goes to standard error.
	fmt.Fprintf(e.stderr, "join token for bot %s, usable once until %s; it is not shown again:\n", resp.Bot, resp.Expires.Format(time.RFC3339))
	fmt.Fprintln(e.stdout, resp.Token)
	return nil
}

// runLock runs "bot lock", "bot unlock", "instance lock" and "instance
// unlock" for the bot or instance named by target.
func (e *env) runLock(kind, verb, target string) error {
	if verb == "lock" {
		if err := required("reason", e.reason); err != nil {
			return err
		}
	}
	switch t := (api.LockTarget{Bot: target}); {
	case kind == "instance":
		t = api.LockTarget{Instance: target}
		if verb == "unlock" {
			return e.removeLock(t)
		}
		return e.addLock(t, e.reason, 0)
	case verb == "lock":
		return e.addLock(t, e.reason, 0)
	}
	path, err := e.socket()
	if err != nil {
		return err
	}
	route := "/admin/v1/bots/" + url.PathEscape(target) + "/unlock"
	// bot unlock: say whether the bot was locked, and which of its
	// instances stay locked, since those have their own locks.
	var before api.Locks
	if err := adminCall(path, http.MethodGet, "/admin/v1/locks", nil, &before); err != nil {
		return err
	}
	if err := adminCall(path, http.MethodPost, route, struct{}{}, nil); err != nil {
		return err
	}
	wasLocked := false
	var instances []api.Lock
	for _, l := range before.Locks {
		switch {
		case l.Bot != target:
		case l.Instance == "":
			wasLocked = true
		default:
			instances = append(instances, l)
		}
	}
	if wasLocked {
		fmt.Fprintf(e.stdout, "bot %s unlocked\n", target)
	} else {
		fmt.Fprintf(e.stdout, "bot %s was not locked\n", target)
	}
	if len(instances) > 0 {
		fmt.Fprintf(e.stdout, "these instances of bot %s stay locked; lift each with mwi-issuer instance unlock ID:\n", target)
		w := newTable(e.stdout)
		for _, l := range instances {
			fmt.Fprintf(w, "  %s\t%s\t%s\n", l.Instance, l.At.Format(time.RFC3339), l.Reason)
		}
		w.Flush()
	}
	return nil
}

// runLocks lists the locks in force, as lock ls and locks do.
func (e *env) runLocks([]string) error {
	format := e.format
	if e.json {
		format = "json"
	}
	switch format {
	case "", "text", "json", "yaml":
	default:
		return cli.Usagef("--format: want text, json or yaml, not %q", format)
	}
	var locks api.Locks
	if err := e.admin(http.MethodGet, "/admin/v1/locks", nil, &locks); err != nil {
		return err
	}
	switch format {
	case "json":
		return json.NewEncoder(e.stdout).Encode(locks)
	case "yaml":
		return writeYAML(e.stdout, locks)
	}
	if len(locks.Locks) == 0 {
		fmt.Fprintln(e.stdout, "no locks")
		return nil
	}
	w := newTable(e.stdout)
	fmt.Fprintln(w, "BOT\tINSTANCE\tTOKEN\tSINCE\tEXPIRES\tREASON\tLIFT WITH")
	for _, l := range locks.Locks {
		bot, inst, tok, lift := l.Bot, "(all)", "-", "mwi-issuer bot unlock "+l.Bot
		switch {
		case l.Instance != "":
			inst, lift = l.Instance, "mwi-issuer instance unlock "+l.Instance
		case l.Token != "":
			bot, inst, tok, lift = "-", "(all)", l.Token, "mwi-issuer lock rm --token "+l.Token
		}
		expires := "never"
		if !l.Expires.IsZero() {
			expires = l.Expires.Format(time.RFC3339)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", bot, inst, tok, l.At.Format(time.RFC3339), expires, l.Reason, lift)
	}
	return w.Flush()
}

// writeJSON writes v as JSON indented by two spaces, as the --format json
// of the listings and of get writes it.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// newTable returns the writer of a command's table: columns two spaces
// apart, so that every listing of mwi-issuer lines up the same way.
// Its Flush writes the table.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
}

// writeYAML writes v as YAML with the field names and omissions of its
// JSON encoding, so that both formats say the same.
func writeYAML(w io.Writer, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var generic any
	if err := json.Unmarshal(data, &generic); err != nil {
		return err
	}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(generic); err != nil {
		return err
	}
	return enc.Close()
}

// admin sends req to the admin API that the flags name (see socket) and
// decodes the answer into resp, as adminCall does.
func (e *env) admin(method, path string, req, resp any) error {
	conn, err := e.socket()
	if err != nil {
		return err
	}
	return adminCall(conn, method, path, req, resp)
}

// adminCall sends req (none if nil) with method to the admin API that
// conn names and decodes the answer into resp.
func adminCall(conn adminConn, method, path string, req, resp any) error {
	c := &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", conn.socket)
		}},
	}
	base := "http://issuer"
	if conn.issuer != "" {
		var err error
		if c, err = remoteClient(conn.identity, conn.issuer); err != nil {
			return err
		}
		base = "https://" + conn.issuer
	}
	var body io.Reader
	if req != nil {
		data, err := json.Marshal(req)
		if err != nil {
			return err
		}
		body = bytes.NewReader(data)
	}
	hr, err := http.NewRequest(method, base+path, body)
	if err != nil {
		return err
	}
	if req != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	r, err := c.Do(hr)
	if err != nil && conn.issuer != "" {
		return fmt.Errorf("cannot reach the issuer at %s with the admin identity in %s (is it the issuer the identity was issued by, and still valid?): %w", conn.issuer, conn.identity, err)
	}
	if err != nil {
		return fmt.Errorf("is mwi-issuer serve running? (admin socket %s): %w", conn.socket, err)
	}
	defer r.Body.Close()
	data, err := io.ReadAll(r.Body)
	if err != nil {
		return err
	}
	if r.StatusCode/100 != 2 {
		// The issuer's message is shown as it is, and the code stays
		// there for errors.As.
		if e := httpjson.DecodeError(r.StatusCode, data); e != nil && e.Message != "" {
			return e
		}
		return fmt.Errorf("admin API: %s", r.Status)
	}
	if resp == nil {
		return nil
	}
	return json.Unmarshal(data, resp)
}
