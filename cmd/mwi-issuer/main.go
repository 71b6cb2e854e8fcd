// Command mwi-issuer is MWI's authority: it verifies joining machines, applies
// roles and signs short-lived SSH and X.509 certificates.
//
// Usage:
//
//	mwi-issuer init  --state DIR [--host NAME]...
//	mwi-issuer serve --state DIR [--listen ADDR] [--resources DIR] [--admin-socket PATH] [--audit-log FILE] [--cluster-name NAME] [--resource-settle 2s]
//	mwi-issuer ca    --state DIR
//	mwi-issuer tls rotate --state DIR [--host NAME]...
//	mwi-issuer token create --bot NAME [--ttl 1h] [--state DIR | --admin-socket PATH]
//	mwi-issuer locks [--json] [--state DIR | --admin-socket PATH]
//	mwi-issuer instance lock ID --reason TEXT [--state DIR | --admin-socket PATH]
//	mwi-issuer instance unlock ID [--state DIR | --admin-socket PATH]
//	mwi-issuer bot lock NAME --reason TEXT [--state DIR | --admin-socket PATH]
//	mwi-issuer bot unlock NAME [--state DIR | --admin-socket PATH]
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
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

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/hygiene"
	"github.com/mwi-project/mwi/internal/logging"
	"github.com/mwi-project/mwi/internal/watch"
	"github.com/mwi-project/mwi/issuer/ca"
	"github.com/mwi-project/mwi/issuer/server"
)

const usage = `usage:
  mwi-issuer init  --state DIR [--host NAME]...
  mwi-issuer serve --state DIR [--listen ADDR] [--resources DIR] [--admin-socket PATH] [--audit-log FILE] [--cluster-name NAME] [--resource-settle 2s]
  mwi-issuer ca    --state DIR
  mwi-issuer tls rotate --state DIR [--host NAME]...
  mwi-issuer token create --bot NAME [--ttl DURATION] [--state DIR | --admin-socket PATH]
  mwi-issuer locks [--json] [--state DIR | --admin-socket PATH]
  mwi-issuer instance lock ID --reason TEXT [--state DIR | --admin-socket PATH]
  mwi-issuer instance unlock ID [--state DIR | --admin-socket PATH]
  mwi-issuer bot lock NAME --reason TEXT [--state DIR | --admin-socket PATH]
  mwi-issuer bot unlock NAME [--state DIR | --admin-socket PATH]
`

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "mwi-issuer:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return errors.New("missing command")
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "init":
		return runInit(rest)
	case "serve":
		return runServe(rest)
	case "ca":
		return runCA(rest)
	case "tls":
		if len(rest) == 0 || rest[0] != "rotate" {
			return errors.New("usage: mwi-issuer tls rotate --state DIR [--host NAME]...")
		}
		return runTLSRotate(rest[1:])
	case "token":
		if len(rest) == 0 || rest[0] != "create" {
			return errors.New("usage: mwi-issuer token create --bot NAME [--ttl DURATION]")
		}
		return runTokenCreate(rest[1:])
	case "locks":
		return runLocks(rest)
	case "bot", "instance":
		if len(rest) < 2 || (rest[0] != "lock" && rest[0] != "unlock") || strings.HasPrefix(rest[1], "-") {
			what := map[string]string{"bot": "NAME", "instance": "ID"}[cmd]
			return fmt.Errorf("usage: mwi-issuer %s lock %s --reason TEXT, or mwi-issuer %s unlock %s", cmd, what, cmd, what)
		}
		return runLock(cmd, rest[0], rest[1], rest[2:])
	case "help", "-h", "--help":
		fmt.Print(usage)
		return nil
	default:
		return fmt.Errorf("unknown command %q\n%s", cmd, usage)
	}
}

// hostList is a repeatable string flag.
type hostList []string

func (h *hostList) String() string     { return strings.Join(*h, ",") }
func (h *hostList) Set(v string) error { *h = append(*h, v); return nil }

func runInit(args []string) error {
	fs := flag.NewFlagSet("init", flag.ContinueOnError)
	state := fs.String("state", "", "state `directory` to create")
	var hosts hostList
	fs.Var(&hosts, "host", "`name` or IP address for the serving certificate (repeatable; default: localhost, 127.0.0.1, ::1 and the hostname)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *state == "" {
		return errors.New("init: --state is required")
	}
	if len(hosts) == 0 {
		hosts = hostList{"localhost", "127.0.0.1", "::1"}
		if h, err := os.Hostname(); err == nil && h != "localhost" {
			hosts = append(hosts, h)
		}
	}
	if err := ca.Init(*state, hosts); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(*state, "resources"), 0o700); err != nil {
		return err
	}
	a, err := ca.Load(*state)
	if err != nil {
		return err
	}
	fmt.Printf("initialised issuer in %s\n", *state)
	printCA(a)
	return nil
}

func runCA(args []string) error {
	fs := flag.NewFlagSet("ca", flag.ContinueOnError)
	state := fs.String("state", "", "issuer state `directory`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *state == "" {
		return errors.New("ca: --state is required")
	}
	a, err := ca.Load(*state)
	if err != nil {
		return err
	}
	printCA(a)
	return nil
}

// runTLSRotate replaces the serving certificate with one from the same TLS
// authority, so daemons pinning the authority keep trusting the issuer.
func runTLSRotate(args []string) error {
	fs := flag.NewFlagSet("tls rotate", flag.ContinueOnError)
	state := fs.String("state", "", "issuer state `directory`")
	var hosts hostList
	fs.Var(&hosts, "host", "`name` or IP address for the new serving certificate (repeatable; default: the names of the current one)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *state == "" {
		return errors.New("tls rotate: --state is required")
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("tls rotate: unexpected argument %q", fs.Arg(0))
	}
	if err := ca.RotateServing(*state, hosts); err != nil {
		return err
	}
	a, err := ca.Load(*state)
	if err != nil {
		return err
	}
	leaf := a.ServingCertificate().Leaf
	names := append(append([]string(nil), leaf.DNSNames...), ipStrings(leaf.IPAddresses)...)
	fmt.Printf("rotated the serving certificate in %s: %s, valid until %s\n", *state,
		strings.Join(names, ", "), leaf.NotAfter.Format(time.RFC3339))
	fmt.Printf("the authorities are unchanged (ca_pin: %s); mwi-issuer serve uses the new certificate when it starts\n", a.Pin())
	return nil
}

func ipStrings(ips []net.IP) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	return out
}

func printCA(a *ca.Authority) {
	fmt.Printf("ca_pin: %s\n", a.Pin())
	fmt.Printf("ssh_user_ca: %s", ssh.MarshalAuthorizedKey(a.SSHUserCA()))
	fmt.Printf("ssh_host_ca: %s", ssh.MarshalAuthorizedKey(a.SSHHostCA()))
	// The file for kube-apiserver's --client-ca-file.
	fmt.Printf("kube_client_ca_file: %s\n", a.KubeCAFile())
	for _, f := range a.Created() {
		fmt.Fprintf(os.Stderr, "mwi-issuer: created %s: this state directory predates the Kubernetes client CA\n", f)
	}
}

func runServe(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	state := fs.String("state", "", "issuer state `directory` (made by init)")
	listen := fs.String("listen", "", "HTTPS listen `address` (default 127.0.0.1:7443)")
	resources := fs.String("resources", "", "resource `directory` (default STATE/resources)")
	adminSock := fs.String("admin-socket", "", "admin socket `path` (default STATE/admin.sock)")
	auditLog := fs.String("audit-log", "", "audit log `file` (default STATE/audit.log; - for standard output)")
	clusterName := fs.String("cluster-name", "mwi", "cluster `name`: the audience ID tokens must have when their token resource sets none")
	settle := fs.Duration("resource-settle", watch.DefaultSettle, "how long the resource directory must stay unchanged after an edit before it is loaded")
	logFormat := fs.String("log-format", "text", "log `format`: text or json")
	logLevel := fs.String("log-level", "info", "log `level`: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *state == "" {
		return errors.New("serve: --state is required")
	}
	log, err := logging.New(os.Stderr, *logFormat, *logLevel)
	if err != nil {
		return err
	}
	// The issuer holds every CA key in memory.
	hygiene.Harden(log.Logger)
	cfg := server.DefaultConfig(*state)
	if *adminSock == "" {
		// The admin socket is made only in a directory reached through no
		// symbolic link (unixsock refuses one). The state directory is the
		// administrator's choice, and under DynamicUser= systemd makes it
		// a link into /var/lib/private: the socket goes where it leads.
		dir, err := filepath.EvalSymlinks(*state)
		if err != nil {
			return fmt.Errorf("serve: state directory: %w", err)
		}
		cfg.AdminSocket = filepath.Join(dir, "admin.sock")
	}
	for dst, v := range map[*string]string{&cfg.Listen: *listen, &cfg.ResourcesDir: *resources, &cfg.AdminSocket: *adminSock, &cfg.AuditLog: *auditLog} {
		if v != "" {
			*dst = v
		}
	}
	if cfg.AuditLog == "-" {
		cfg.AuditLog = ""
	}
	if *clusterName == "" {
		return errors.New("serve: --cluster-name must not be empty")
	}
	cfg.ClusterName = *clusterName
	if *settle <= 0 {
		return errors.New("serve: --resource-settle must be positive")
	}
	cfg.ResourceSettle = *settle
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
			srv.Reload()
		}
	}()
	return srv.Run(ctx)
}

// adminSocketFlags adds the flags that locate the admin socket.
func adminSocketFlags(fs *flag.FlagSet) func() (string, error) {
	state := fs.String("state", "", "issuer state `directory`; the socket is STATE/admin.sock")
	sock := fs.String("admin-socket", os.Getenv("MWI_ADMIN_SOCKET"), "admin socket `path` (env MWI_ADMIN_SOCKET)")
	return func() (string, error) {
		switch {
		case *sock != "":
			return *sock, nil
		case *state != "":
			return filepath.Join(*state, "admin.sock"), nil
		default:
			return "", errors.New("name the admin socket with --admin-socket or --state")
		}
	}
}

func runTokenCreate(args []string) error {
	fs := flag.NewFlagSet("token create", flag.ContinueOnError)
	bot := fs.String("bot", "", "bot `name` the token joins as")
	ttl := fs.Duration("ttl", time.Hour, "how long the token can be used")
	jsonOut := fs.Bool("json", false, "print JSON")
	socket := adminSocketFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *bot == "" {
		return errors.New("token create: --bot is required")
	}
	path, err := socket()
	if err != nil {
		return err
	}
	var resp api.CreateTokenResponse
	req := api.CreateTokenRequest{Bot: *bot, TTLSeconds: int64(ttl.Seconds())}
	if err := adminCall(path, http.MethodPost, "/admin/v1/tokens", req, &resp); err != nil {
		return err
	}
	if *jsonOut {
		return json.NewEncoder(os.Stdout).Encode(resp)
	}
	// The secret alone on standard output, so scripts can capture it; the
	// rest goes to standard error.
	fmt.Fprintf(os.Stderr, "join token for bot %s, usable once until %s; it is not shown again:\n", resp.Bot, resp.Expires.Format(time.RFC3339))
	fmt.Println(resp.Token)
	return nil
}

// runLock runs "bot lock", "bot unlock", "instance lock" and "instance
// unlock" for the bot or instance named by target.
func runLock(kind, verb, target string, args []string) error {
	fs := flag.NewFlagSet(kind+" "+verb, flag.ContinueOnError)
	reason := new(string)
	if verb == "lock" {
		reason = fs.String("reason", "", "why: shown to the daemons refused and in the audit log")
	}
	socket := adminSocketFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s %s: unexpected argument %q", kind, verb, fs.Arg(0))
	}
	if verb == "lock" && *reason == "" {
		return fmt.Errorf("%s lock: --reason is required", kind)
	}
	path, err := socket()
	if err != nil {
		return err
	}
	route := "/admin/v1/bots/" + url.PathEscape(target) + "/" + verb
	if kind == "instance" {
		route = "/admin/v1/instances/" + url.PathEscape(target) + "/" + verb
	}
	switch {
	case verb == "lock":
		var l api.Lock
		if err := adminCall(path, http.MethodPost, route, api.LockRequest{Reason: *reason}, &l); err != nil {
			return err
		}
		if l.Reason != *reason {
			fmt.Printf("%s %s was already locked since %s: %s\n", kind, target, l.At.Format(time.RFC3339), l.Reason)
		} else {
			fmt.Printf("%s %s locked\n", kind, target)
		}
		return nil
	case kind == "instance":
		var l api.Lock
		if err := adminCall(path, http.MethodPost, route, struct{}{}, &l); err != nil {
			return err
		}
		fmt.Printf("instance %s of bot %s unlocked; it was locked since %s: %s\n", l.Instance, l.Bot, l.At.Format(time.RFC3339), l.Reason)
		return nil
	}
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
		fmt.Printf("bot %s unlocked\n", target)
	} else {
		fmt.Printf("bot %s was not locked\n", target)
	}
	if len(instances) > 0 {
		fmt.Printf("these instances of bot %s stay locked; lift each with mwi-issuer instance unlock ID:\n", target)
		w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		for _, l := range instances {
			fmt.Fprintf(w, "  %s\t%s\t%s\n", l.Instance, l.At.Format(time.RFC3339), l.Reason)
		}
		w.Flush()
	}
	return nil
}

// runLocks lists the locks of bots and of instances.
func runLocks(args []string) error {
	fs := flag.NewFlagSet("locks", flag.ContinueOnError)
	jsonOut := fs.Bool("json", false, "print JSON")
	socket := adminSocketFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	path, err := socket()
	if err != nil {
		return err
	}
	var locks api.Locks
	if err := adminCall(path, http.MethodGet, "/admin/v1/locks", nil, &locks); err != nil {
		return err
	}
	if *jsonOut {
		return json.NewEncoder(os.Stdout).Encode(locks)
	}
	if len(locks.Locks) == 0 {
		fmt.Println("no locks")
		return nil
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "BOT\tINSTANCE\tSINCE\tREASON\tLIFT WITH")
	for _, l := range locks.Locks {
		inst, lift := "(all)", "mwi-issuer bot unlock "+l.Bot
		if l.Instance != "" {
			inst, lift = l.Instance, "mwi-issuer instance unlock "+l.Instance
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", l.Bot, inst, l.At.Format(time.RFC3339), l.Reason, lift)
	}
	return w.Flush()
}

// adminCall sends req (none if nil) to the admin socket with method and
// decodes the answer into resp.
func adminCall(socket, method, path string, req, resp any) error {
	c := &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", socket)
		}},
	}
	var body io.Reader
	if req != nil {
		data, err := json.Marshal(req)
		if err != nil {
			return err
		}
		body = bytes.NewReader(data)
	}
	hr, err := http.NewRequest(method, "http://issuer"+path, body)
	if err != nil {
		return err
	}
	if req != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	r, err := c.Do(hr)
	if err != nil {
		return fmt.Errorf("is mwi-issuer serve running? (admin socket %s): %w", socket, err)
	}
	defer r.Body.Close()
	data, err := io.ReadAll(r.Body)
	if err != nil {
		return err
	}
	if r.StatusCode/100 != 2 {
		var e api.ErrorBody
		if json.Unmarshal(data, &e) == nil && e.Error.Message != "" {
			return errors.New(e.Error.Message)
		}
		return fmt.Errorf("admin API: %s", r.Status)
	}
	if resp == nil {
		return nil
	}
	return json.Unmarshal(data, resp)
}
