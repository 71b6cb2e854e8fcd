// Package resource loads the issuer's resource directory: the roles, bots
// and Kubernetes clusters that decide which certificates a bot may obtain,
// and the tokens that say how a bot joins without a secret.
//
// Resources are YAML documents in the style of Teleport resources. A file
// may hold several documents separated by "---":
//
//	kind: role
//	version: v1
//	metadata:
//	  name: deploy
//	  description: optional free text
//	spec:
//	  allow:
//	    logins: [deploy, "{{internal.logins}}"]
//	    host_names: [build-01, build-01.example.com]
//	    kubernetes_labels: {env: prod}   # '*': '*' for every cluster
//	    kubernetes_groups: [deployers]
//	    kubernetes_users: [deploy-bot]   # at most one per cluster; default bot:NAME
//	  options:
//	    max_ttl: 1h
//	---
//	kind: bot
//	version: v1
//	metadata:
//	  name: ci
//	spec:
//	  roles: [deploy]
//	  traits:
//	    logins: [alice]
//	---
//	kind: kube_cluster
//	version: v1
//	metadata:
//	  name: prod
//	  labels: {env: prod}
//	spec:
//	  server: https://10.0.0.1:6443
//	  certificate_authority_data: LS0tLS1CRUdJTi...   # base64 PEM, as in a kubeconfig
//	  # or certificate_authority_file: prod-ca.pem  (relative to this file)
//	---
//	kind: token
//	version: v1
//	metadata:
//	  name: github-ci
//	  expires: 2027-01-01T00:00:00Z   # optional
//	spec:
//	  join_method: github             # github, gitlab, kubernetes, oidc or bound_keypair
//	  bot_name: ci
//	  github:
//	    allow:
//	      - repository: org/repo
//	        ref: refs/heads/main
//
// See [Token] for the blocks of each join method. Each join method is one
// [JoinSpec] type in a file of its own (join_github.go, ...): it decodes
// its block and judges attestations by its allow rules.
//
// A value of kubernetes_labels may also be a list of values, any of which
// matches, and "*" matches any value of the label.
//
// Decoding is strict: unknown fields, repeated fields and values of the wrong
// type are errors, because a setting that is silently ignored is worse than
// one that is refused. Every error names the file and line it refers to, in
// the form "FILE:LINE: message".
package resource

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"
)

// DefaultMaxTTL is the maximum certificate lifetime of a role that sets no
// spec.options.max_ttl.
const DefaultMaxTTL = 12 * time.Hour

// MaxTTLLimit is the largest spec.options.max_ttl a role may set.
const MaxTTLLimit = 720 * time.Hour

// ErrUnknownBot is returned, wrapped, by [Set.Grant] for a bot that the set
// does not define.
var ErrUnknownBot = errors.New("unknown bot")

// Location is a position in a resource file.
type Location struct {
	File string // path of the file, as given to LoadDir or Parse
	Line int    // 1-based line number
}

// String returns the location in the form "file:line".
func (l Location) String() string {
	return l.File + ":" + strconv.Itoa(l.Line)
}

// A Resource is a decoded resource document: a [Role], a [Bot], a
// [KubeCluster] or a [Token].
type Resource interface {
	isResource()
}

// A Role grants the SSH logins a bot may use and bounds the lifetime of the
// certificates it is issued.
type Role struct {
	Name        string
	Description string

	// Logins are the SSH principals the role allows, as written in the
	// resource. An entry of the form "{{internal.NAME}}" stands for the
	// values of the bot's trait NAME; see Set.Grant.
	Logins []string

	// HostNames are the names a host holding the role may have on its SSH
	// host certificate. The issuer decides them, never the host.
	HostNames []string

	// KubernetesLabels select the Kubernetes clusters the role allows: a
	// cluster is allowed when it has each label with one of the values
	// listed. The value "*" matches any value, and the key "*" with the
	// value "*" matches every cluster. Empty allows none.
	KubernetesLabels map[string][]string
	// KubernetesGroups and KubernetesUsers are the Kubernetes groups and
	// users of the certificates for the clusters the role allows; an entry
	// of the form "{{internal.NAME}}" stands for the bot's trait NAME.
	KubernetesGroups []string
	KubernetesUsers  []string

	// MaxTTL is the longest certificate lifetime the role allows.
	// It is DefaultMaxTTL if the resource sets none.
	MaxTTL time.Duration

	Source Location // where the resource document starts
}

func (Role) isResource() {}

// A Bot is a machine identity. It holds the roles named in Roles and the
// traits that their login templates expand to.
type Bot struct {
	Name   string
	Roles  []string
	Traits map[string][]string // nil if the resource sets none
	Source Location            // where the resource document starts
}

func (Bot) isResource() {}

// A Grant is what a bot is allowed: the union of its roles.
type Grant struct {
	Bot       string
	Roles     []string      // the bot's roles, in the order the bot lists them
	Logins    []string      // sorted, without duplicates, templates expanded
	HostNames []string      // sorted, without duplicates
	MaxTTL    time.Duration // the smallest MaxTTL of the roles
}

// A Set is a validated collection of roles and bots, as returned by
// [LoadDir]. A Set is not modified after it is returned, so it is safe for
// concurrent use.
type Set struct {
	roles    map[string]Role
	bots     map[string]Bot
	clusters map[string]KubeCluster
	tokens   map[string]Token
	files    []string
}

// Role returns the role with the given name and reports whether it exists.
func (s *Set) Role(name string) (Role, bool) {
	r, ok := s.roles[name]
	if !ok {
		return Role{}, false
	}
	return r.clone(), true
}

// Bot returns the bot with the given name and reports whether it exists.
func (s *Set) Bot(name string) (Bot, bool) {
	b, ok := s.bots[name]
	if !ok {
		return Bot{}, false
	}
	return b.clone(), true
}

// Roles returns all roles, sorted by name.
func (s *Set) Roles() []Role {
	out := make([]Role, 0, len(s.roles))
	for _, name := range slices.Sorted(maps.Keys(s.roles)) {
		out = append(out, s.roles[name].clone())
	}
	return out
}

// Bots returns all bots, sorted by name.
func (s *Set) Bots() []Bot {
	out := make([]Bot, 0, len(s.bots))
	for _, name := range slices.Sorted(maps.Keys(s.bots)) {
		out = append(out, s.bots[name].clone())
	}
	return out
}

// Files returns the paths of the files the set was loaded from, in the
// order they were read.
func (s *Set) Files() []string {
	return slices.Clone(s.files)
}

// Grant returns what the named bot is allowed. The logins are the union of
// the logins of the bot's roles, sorted and without duplicates; a login of
// the exact form "{{internal.NAME}}" is replaced by the values of the bot's
// trait NAME, or by nothing if the bot has no such trait. MaxTTL is the
// smallest MaxTTL of the bot's roles, so the strictest role wins.
//
// If the set has no bot of that name, Grant returns an error wrapping
// [ErrUnknownBot].
func (s *Set) Grant(bot string) (Grant, error) {
	b, ok := s.bots[bot]
	if !ok {
		return Grant{}, fmt.Errorf("%w %q", ErrUnknownBot, bot)
	}
	g := Grant{Bot: b.Name, Roles: slices.Clone(b.Roles)}
	for _, name := range b.Roles {
		r, ok := s.roles[name]
		if !ok {
			// LoadDir rejects such sets; this guards a zero or hand-made Set.
			return Grant{}, fmt.Errorf("bot %q: unknown role %q", bot, name)
		}
		for _, login := range r.Logins {
			if trait, ok := traitRef(login); ok {
				g.Logins = append(g.Logins, b.Traits[trait]...)
			} else {
				g.Logins = append(g.Logins, login)
			}
		}
		g.HostNames = append(g.HostNames, r.HostNames...)
		if g.MaxTTL == 0 || r.MaxTTL < g.MaxTTL {
			g.MaxTTL = r.MaxTTL
		}
	}
	slices.Sort(g.Logins)
	g.Logins = slices.Compact(g.Logins)
	slices.Sort(g.HostNames)
	g.HostNames = slices.Compact(g.HostNames)
	return g, nil
}

func (r Role) clone() Role {
	r.Logins = slices.Clone(r.Logins)
	r.HostNames = slices.Clone(r.HostNames)
	r.KubernetesGroups = slices.Clone(r.KubernetesGroups)
	r.KubernetesUsers = slices.Clone(r.KubernetesUsers)
	if r.KubernetesLabels != nil {
		l := make(map[string][]string, len(r.KubernetesLabels))
		for k, v := range r.KubernetesLabels {
			l[k] = slices.Clone(v)
		}
		r.KubernetesLabels = l
	}
	return r
}

func (b Bot) clone() Bot {
	b.Roles = slices.Clone(b.Roles)
	if b.Traits != nil {
		t := make(map[string][]string, len(b.Traits))
		for k, v := range b.Traits {
			t[k] = slices.Clone(v)
		}
		b.Traits = t
	}
	return b
}
