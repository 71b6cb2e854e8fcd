// Package config reads mwid's configuration file.
//
// The file format (the file struct) is kept apart from the runtime Config:
// Parse decodes YAML strictly (package yamlfile: an unknown field, a key
// given twice or a value of the wrong kind is an error), validates it, and
// builds a Config in which every default is filled in and every value is
// checked; each block of outputs is parsed by its kind, in package output.
// Every error names the file and line, and Parse reports them all.
package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/output"
	"github.com/mwi-project/mwi/internal/diag"
	"github.com/mwi-project/mwi/internal/yamlfile"
)

// Config is mwid's validated runtime configuration.
type Config struct {
	// Path is the file it was read from, and Revision a short hash of that
	// file's bytes, so status can say which configuration is in use.
	Path     string
	Revision string

	Issuer         Issuer
	Onboarding     Onboarding
	CertificateTTL time.Duration
	// IdentityTTL is the lifetime asked for the bot identity, with which
	// mwid renews. It is at least CertificateTTL, so that mwid can renew
	// after an issuer outage that outlasted the certificates it serves.
	IdentityTTL     time.Duration
	RenewalInterval time.Duration // zero: renew at about two thirds of the lifetime
	// RenewMinInterval is how long the result of a renewal answers the
	// renewals asked for through the API (mwictl renew) instead of a new
	// one: such requests reach the issuer at most once per interval, so a
	// local caller cannot spend the issuer's quota for this host. Zero only
	// shares a renewal under way.
	RenewMinInterval time.Duration
	AgentSocket      Socket
	APISocket        Socket
	SSHLogins        []string
	// SSHHosts are the host patterns (ssh_config Host syntax) that the
	// generated ssh_config and known_hosts apply to.
	SSHHosts []string
	// Outputs are what mwid writes outside its memory, in the order of
	// the file: each kind of output parses its own block (package output).
	Outputs []output.Output
	Log     Log
	Agent   Agent
	// Oneshot is set by tbot's oneshot: true: mwid behaves as with
	// --oneshot, joining once, writing the outputs and exiting.
	Oneshot bool
	// Flags are what mwid's command line added to the file, kept so that
	// a reload, which reads the file again, adds them again.
	Flags Flags

	// Diag is the diagnostics listener, off when its address is empty.
	Diag Diag
}

// Diag configures mwid's diagnostics listener: /livez, /readyz and
// /metrics over plain HTTP on a TCP address, besides the API socket, for
// the machine's Prometheus and probes (tbot's diag_addr).
type Diag struct {
	// Addr is the listen address, HOST:PORT; a loopback address unless
	// AllowRemote.
	Addr        string
	AllowRemote bool
}

// Flags are the settings that mwid's command line adds to those of the
// configuration file.
type Flags struct {
	// CAPins are more pins of the issuer's CA (mwid --ca-pin), for a file
	// that names none, such as one of Teleport's guides.
	CAPins []string
}

// Agent configures the SSH agent.
type Agent struct {
	// AllowUnbound is whether the agent signs on a connection that no
	// session-bind@openssh.com reached, for any destination (unbound:
	// allow). OpenSSH before 8.9 and paramiko need it; the default
	// (unbound: refuse) signs only for destinations the issuer allows.
	AllowUnbound bool
}

// Issuer says where the issuer is and how to trust it.
type Issuer struct {
	// Address is the issuer's host:port, or empty when Addresses names
	// several replicas of it.
	Address string
	// Addresses are the host:port of issuer replicas that share one store
	// and one set of CAs, tried in order; see AddressList.
	Addresses []string
	CAPins    []string // "sha256:" base64 SPKI hashes
	CAFile    string
}

// AddressList returns the issuer addresses to try, in order: Address alone
// or Addresses. A host name among them stands for every address it
// resolves to.
func (i Issuer) AddressList() []string {
	if len(i.Addresses) > 0 {
		return i.Addresses
	}
	return []string{i.Address}
}

// Onboarding says how mwid joins. It holds only comparable values, so
// that a reload can tell whether it changed with ==.
type Onboarding struct {
	JoinMethod api.JoinMethod
	// TokenName names the issuer's token resource, for every join method
	// but token.
	TokenName string
	// Token is the one-time secret of join method token.
	Token SecretSource
	// IDToken is where the OIDC ID token comes from, for join methods
	// github, gitlab, kubernetes and oidc.
	IDToken IDTokenSource
	// Key is the bound key pair's private key, for join method
	// bound_keypair: File or Credential is set.
	Key SecretSource
}

// SecretSource names where a secret comes from. Exactly one field is set.
type SecretSource struct {
	Env        string // an environment variable
	File       string // a file
	Credential string // a systemd credential in $CREDENTIALS_DIRECTORY
	// Value is the secret itself, written in the configuration file, as
	// tbot's onboarding.token allows.
	Value string
}

// Read returns the secret, without surrounding white space.
func (s SecretSource) Read() (string, error) {
	var v string
	switch {
	case s.Value != "":
		v = s.Value
	case s.Env != "":
		var ok bool
		if v, ok = os.LookupEnv(s.Env); !ok {
			return "", fmt.Errorf("environment variable %s is not set", s.Env)
		}
	case s.File != "":
		b, err := os.ReadFile(s.File)
		if err != nil {
			return "", err
		}
		v = string(b)
	case s.Credential != "":
		dir := os.Getenv("CREDENTIALS_DIRECTORY")
		if dir == "" {
			return "", fmt.Errorf("credential %s: $CREDENTIALS_DIRECTORY is not set (is mwid running under systemd with LoadCredential=?)", s.Credential)
		}
		b, err := os.ReadFile(filepath.Join(dir, s.Credential))
		if err != nil {
			return "", fmt.Errorf("credential %s: %w", s.Credential, err)
		}
		v = string(b)
	}
	v = strings.TrimSpace(v)
	if v == "" {
		return "", fmt.Errorf("%s is empty", s)
	}
	return v, nil
}

// String names where the secret comes from, for messages: "environment
// variable MWI_TOKEN", "file /etc/mwi/token" or "credential join-token".
func (s SecretSource) String() string {
	switch {
	case s.Env != "":
		return "environment variable " + s.Env
	case s.File != "":
		return "file " + s.File
	case s.Credential != "":
		return "credential " + s.Credential
	case s.Value != "":
		return "the token in the configuration file"
	}
	return "the secret"
}

// Socket is a Unix socket mwid listens on.
type Socket struct {
	Path string
	Mode os.FileMode
	// Group, if not -1, owns the socket, so that its group bits admit it.
	Group int
	// AllowUIDs and AllowGIDs admit callers by user or by group (primary or
	// supplementary), in addition to what the mode and group let connect.
	// Root and mwid's own user are always admitted.
	AllowUIDs []uint32
	AllowGIDs []uint32
}

// Log configures logging.
type Log struct {
	Level  string
	Format string
}

// Defaults.
const (
	DefaultCertificateTTL = time.Hour
	DefaultIdentityTTL    = time.Hour
	// DefaultRenewMinInterval keeps mwictl renew useful after a change on
	// the issuer while capping what a caller looping on it can cost.
	DefaultRenewMinInterval = 10 * time.Second
	DefaultAgentSocket      = "/run/mwi/agent.sock"
	DefaultAPISocket        = "/run/mwi/api.sock"
	defaultSocketMode       = 0o600
	minCertificateTTL       = 10 * time.Second
)

// file is the YAML form of the configuration.
type file struct {
	Version          string      `yaml:"version"`
	Issuer           fileIssuer  `yaml:"issuer"`
	Onboarding       fileOnboard `yaml:"onboarding"`
	CertificateTTL   string      `yaml:"certificate_ttl"`
	IdentityTTL      string      `yaml:"identity_ttl"`
	RenewalInterval  string      `yaml:"renewal_interval"`
	RenewMinInterval string      `yaml:"renew_min_interval"`
	Sockets          fileSockets `yaml:"sockets"`
	SSH              fileSSH     `yaml:"ssh"`
	Outputs          []yaml.Node `yaml:"outputs"`
	Log              fileLog     `yaml:"log"`
	Agent            fileAgent   `yaml:"agent"`
	DiagAddr         string      `yaml:"diag_addr"`
	DiagAllowRemote  bool        `yaml:"diag_allow_remote"`
}

type fileIssuer struct {
	Address   string   `yaml:"address"`
	Addresses []string `yaml:"addresses"`
	CAPins    []string `yaml:"ca_pins"`
	CAFile    string   `yaml:"ca_file"`
}

type fileOnboard struct {
	JoinMethod api.JoinMethod `yaml:"join_method"`
	TokenName  string         `yaml:"token_name"`
	Token      *fileSecret    `yaml:"token"`
	IDToken    *fileIDToken   `yaml:"id_token"`
	Key        *fileKey       `yaml:"key"`
}

type fileSecret struct {
	Env        string `yaml:"env"`
	File       string `yaml:"file"`
	Credential string `yaml:"credential"`
}

type fileSockets struct {
	Agent fileSocket `yaml:"agent"`
	API   fileSocket `yaml:"api"`
}

type fileSocket struct {
	Path  string    `yaml:"path"`
	Mode  string    `yaml:"mode"`
	Group string    `yaml:"group"`
	Allow fileAllow `yaml:"allow"`
}

type fileAllow struct {
	Users  []string `yaml:"users"`
	Groups []string `yaml:"groups"`
}

type fileSSH struct {
	Logins []string `yaml:"logins"`
	Hosts  []string `yaml:"hosts"`
}

type fileAgent struct {
	Unbound string `yaml:"unbound"`
}

type fileLog struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Load reads and parses the configuration file at path. A missing file's
// error says how to name another, since the path is often mwid's default
// rather than one the user gave.
func Load(path string) (*Config, error) {
	return LoadFlags(path, Flags{})
}

// LoadFlags is Load with the settings of mwid's command line added.
func LoadFlags(path string, fl Flags) (*Config, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w (name the configuration file with mwid -c FILE; the README's \"mwid configuration\" describes it, and examples/github holds some)", err)
	}
	if err != nil {
		return nil, err
	}
	return ParseFlags(path, data, fl)
}

// Parse parses a configuration; name is used in error messages. Relative
// paths in the file are taken relative to name's directory.
func Parse(name string, data []byte) (*Config, error) {
	return ParseFlags(name, data, Flags{})
}

// ParseFlags is Parse with the settings of mwid's command line added. A
// file whose version is v2 is tbot's format (see tbot.go), read into the
// same Config.
func ParseFlags(name string, data []byte, fl Flags) (*Config, error) {
	yf := yamlfile.New(name, data)
	// mwid has always read merge keys (<<), which yaml.v3 resolves, so
	// that blocks such as outputs can share settings.
	yf.Merge = true
	docs := yf.Documents()
	if err := yf.Err(); err != nil {
		return nil, err
	}
	if len(docs) == 0 {
		yf.Errorf(0, "the file is empty; want a mwid configuration with version: v1")
		return nil, yf.Err()
	}
	for _, d := range docs[1:] {
		yf.Errorf(d.Line, "a second YAML document: a mwid configuration is one document")
	}
	for _, p := range fl.CAPins {
		if !isPin(p) {
			return nil, fmt.Errorf("--ca-pin %q is not a pin of the form sha256:<base64 SPKI hash> (mwi-issuer ca prints it)", p)
		}
	}
	v := validator{f: yf, root: docs[0], dir: filepath.Dir(name), flags: fl}
	var c *Config
	if version(docs[0]) == "v2" {
		if c = v.buildTBot(); c == nil {
			return nil, yf.Err()
		}
	} else {
		var f file
		yf.Decode(docs[0], "", &f)
		if err := yf.Err(); err != nil {
			// Validating what could not be decoded would only add "required"
			// to the errors that say why.
			return nil, err
		}
		c = v.build(&f)
	}
	if err := yf.Err(); err != nil {
		return nil, err
	}
	c.Flags = fl
	sum := sha256.Sum256(data)
	c.Path, c.Revision = name, hex.EncodeToString(sum[:6])
	return c, nil
}

// resourceNameRE matches a name as the issuer's resources allow it.
var resourceNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// A validator builds a Config from the file's decoded form, recording
// each problem at the line of the value it is about.
type validator struct {
	f     *yamlfile.File
	root  *yaml.Node
	dir   string
	flags Flags
}

// errorf records an error about the value at path (dotted keys from the
// root), at its line: "FILE:LINE: PATH: message".
func (v *validator) errorf(path, format string, args ...any) {
	v.f.Errorf(yamlfile.Line(v.root, path), "%s: %s", path, fmt.Sprintf(format, args...))
}

func (v *validator) build(f *file) *Config {
	c := &Config{}
	if f.Version != "v1" {
		v.errorf("version", "got %q, want v1 (mwid's format) or v2 (tbot's)", f.Version)
	}

	c.Issuer.Address = f.Issuer.Address
	switch {
	case f.Issuer.Address != "" && f.Issuer.Addresses != nil:
		v.errorf("issuer.addresses", "set address or addresses, not both")
	case f.Issuer.Address != "":
		v.address("issuer.address", f.Issuer.Address)
	case f.Issuer.Addresses != nil:
		c.Issuer.Addresses = v.addresses("issuer.addresses", f.Issuer.Addresses)
	default:
		v.errorf("issuer.address", "required (host:port of mwi-issuer, or addresses: a list of its replicas)")
	}
	c.Issuer.CAPins = v.pins("issuer.ca_pins", f.Issuer.CAPins)
	c.Issuer.CAFile = v.path(f.Issuer.CAFile)
	if len(c.Issuer.CAPins) == 0 && f.Issuer.CAFile == "" {
		v.errorf("issuer", "set ca_pins or ca_file, or run mwid --ca-pin PIN: mwid never trusts the issuer blindly")
	}

	c.Onboarding = v.onboarding(f.Onboarding)

	c.CertificateTTL = v.duration("certificate_ttl", f.CertificateTTL, DefaultCertificateTTL)
	if c.CertificateTTL < minCertificateTTL {
		v.errorf("certificate_ttl", "%s is shorter than the minimum %s", c.CertificateTTL, minCertificateTTL)
	}
	c.IdentityTTL = v.duration("identity_ttl", f.IdentityTTL, max(DefaultIdentityTTL, c.CertificateTTL))
	if c.IdentityTTL < c.CertificateTTL {
		v.errorf("identity_ttl", "%s is shorter than certificate_ttl (%s)", c.IdentityTTL, c.CertificateTTL)
	}
	c.RenewalInterval = v.duration("renewal_interval", f.RenewalInterval, 0)
	if c.RenewalInterval < 0 || (c.RenewalInterval > 0 && c.RenewalInterval >= c.CertificateTTL) {
		v.errorf("renewal_interval", "%s must be positive and shorter than certificate_ttl (%s)", c.RenewalInterval, c.CertificateTTL)
	}
	c.RenewMinInterval = v.duration("renew_min_interval", f.RenewMinInterval, DefaultRenewMinInterval)
	if c.RenewMinInterval < 0 {
		v.errorf("renew_min_interval", "%s is negative", c.RenewMinInterval)
	}

	c.AgentSocket = v.socket("sockets.agent", f.Sockets.Agent, DefaultAgentSocket)
	c.APISocket = v.socket("sockets.api", f.Sockets.API, DefaultAPISocket)
	if c.AgentSocket.Path == c.APISocket.Path {
		v.errorf("sockets", "agent and api use the same path %s", c.AgentSocket.Path)
	}

	for _, l := range f.SSH.Logins {
		if l == "" || strings.ContainsAny(l, " \t\r\n,") {
			v.errorf("ssh.logins", "%q is not a valid login", l)
		}
	}
	c.SSHLogins = f.SSH.Logins
	for _, h := range f.SSH.Hosts {
		if h == "" || strings.ContainsAny(h, " \t\r\n,") {
			v.errorf("ssh.hosts", "%q is not a host pattern", h)
		}
	}
	c.SSHHosts = f.SSH.Hosts
	for i := range f.Outputs {
		o := output.Parse(&output.Block{
			Path:    fmt.Sprintf("outputs.%d", i),
			Node:    &f.Outputs[i],
			Earlier: c.Outputs,
			File:    v.f,
			Errorf:  v.errorf,
			Abs:     v.path,
		})
		if o != nil {
			c.Outputs = append(c.Outputs, o)
		}
	}

	c.Log = Log{Level: f.Log.Level, Format: f.Log.Format}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		v.errorf("log.level", "%q: want debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		v.errorf("log.format", "%q: want text or json", c.Log.Format)
	}
	switch f.Agent.Unbound {
	case "", "refuse":
	case "allow":
		c.Agent.AllowUnbound = true
	default:
		v.errorf("agent.unbound", "%q: want refuse or allow", f.Agent.Unbound)
	}
	c.Diag = v.diag("diag_addr", f.DiagAddr, f.DiagAllowRemote, "diag_allow_remote: true")
	return c
}

// diag checks the diagnostics listener's address (at path), which may be
// empty: no listener.
func (v *validator) diag(path, addr string, allowRemote bool, allowFlag string) Diag {
	if addr == "" {
		if allowRemote {
			v.errorf("diag_allow_remote", "set without diag_addr")
		}
		return Diag{}
	}
	if err := diag.CheckAddr(addr, allowRemote, allowFlag); err != nil {
		v.errorf(path, "%v", err)
	}
	return Diag{Addr: addr, AllowRemote: allowRemote}
}

// pins checks the pins of the file at path and returns them with those of
// mwid --ca-pin.
func (v *validator) pins(path string, pins []string) []string {
	for _, p := range pins {
		if !isPin(p) {
			v.errorf(path, "%q is not a pin of the form sha256:<base64 SPKI hash> (mwi-issuer ca prints it)", p)
		}
	}
	var all []string
	for _, p := range append(slices.Clone(pins), v.flags.CAPins...) {
		if !slices.Contains(all, p) {
			all = append(all, p)
		}
	}
	return all
}

// isPin reports whether p has the form of a pin: sha256: and a base64
// SHA-256 hash.
func isPin(p string) bool {
	return strings.HasPrefix(p, "sha256:") && len(p) == len("sha256:")+44
}

// version returns the version field of the document root, or "".
func version(root *yaml.Node) string {
	root = yamlfile.Resolve(root)
	if root.Kind != yaml.MappingNode {
		return ""
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		if k, val := yamlfile.Resolve(root.Content[i]), yamlfile.Resolve(root.Content[i+1]); k.Value == "version" && val.Kind == yaml.ScalarNode {
			return val.Value
		}
	}
	return ""
}

func (v *validator) duration(path, s string, def time.Duration) time.Duration {
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		v.errorf(path, "%q is not a duration such as 30s, 20m or 1h", s)
		return def
	}
	return d
}

func (v *validator) socket(path string, s fileSocket, defPath string) Socket {
	out := Socket{Path: v.path(s.Path), Mode: defaultSocketMode, Group: -1}
	if s.Group != "" {
		gid, err := lookupGroup(s.Group)
		if err != nil {
			v.errorf(path+".group", "%v", err)
		}
		out.Group = int(gid)
	}
	for _, u := range s.Allow.Users {
		uid, err := lookupUser(u)
		if err != nil {
			v.errorf(path+".allow.users", "%v", err)
			continue
		}
		out.AllowUIDs = append(out.AllowUIDs, uid)
	}
	for _, g := range s.Allow.Groups {
		gid, err := lookupGroup(g)
		if err != nil {
			v.errorf(path+".allow.groups", "%v", err)
			continue
		}
		out.AllowGIDs = append(out.AllowGIDs, gid)
	}
	if out.Path == "" {
		out.Path = defPath
	}
	if s.Mode != "" {
		m, err := strconv.ParseUint(s.Mode, 8, 32)
		if err != nil || m&^0o777 != 0 {
			v.errorf(path+".mode", "%q is not an octal permission mode such as \"0600\"", s.Mode)
		} else if m&0o007 != 0 {
			// The agent signs as the bot: other users must not reach it
			// through the mode; allow them by group instead.
			v.errorf(path+".mode", "%s gives access to every user; use a group (such as 0660) instead", s.Mode)
		} else {
			out.Mode = os.FileMode(m)
		}
	}
	return out
}

// path makes p absolute relative to the configuration file's directory.
func (v *validator) path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	abs, err := filepath.Abs(filepath.Join(v.dir, p))
	if err != nil {
		return filepath.Join(v.dir, p)
	}
	return abs
}

// lookupUser resolves a user name or numeric uid.
func lookupUser(name string) (uint32, error) {
	if id, err := strconv.ParseUint(name, 10, 32); err == nil {
		return uint32(id), nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return 0, fmt.Errorf("unknown user %q", name)
	}
	id, err := strconv.ParseUint(u.Uid, 10, 32)
	return uint32(id), err
}

// lookupGroup resolves a group name or numeric gid.
func lookupGroup(name string) (uint32, error) {
	if id, err := strconv.ParseUint(name, 10, 32); err == nil {
		return uint32(id), nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, fmt.Errorf("unknown group %q", name)
	}
	id, err := strconv.ParseUint(g.Gid, 10, 32)
	return uint32(id), err
}

// validPort reports whether port is a port number, 1 to 65535, as
// written: a service name or a port out of range would fail only when
// mwid dials.
// address checks that a is host:port.
func (v *validator) address(path, a string) {
	if _, port, err := net.SplitHostPort(a); err != nil || !validPort(port) {
		v.errorf(path, "%q is not host:port", a)
	}
}

// addresses checks a list of issuer replicas: host:port each, at least one,
// none twice.
func (v *validator) addresses(path string, list []string) []string {
	if len(list) == 0 {
		v.errorf(path, "empty; name at least one host:port of mwi-issuer")
		return nil
	}
	seen := map[string]bool{}
	for i, a := range list {
		p := fmt.Sprintf("%s.%d", path, i)
		v.address(p, a)
		if seen[a] {
			v.errorf(p, "%q is listed twice", a)
		}
		seen[a] = true
	}
	return slices.Clone(list)
}

func validPort(port string) bool {
	n, err := strconv.Atoi(port)
	return err == nil && n >= 1 && n <= 65535 && strconv.Itoa(n) == port
}
