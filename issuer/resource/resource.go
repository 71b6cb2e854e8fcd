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
//	    node_labels: {env: [staging, prod]}   # the hosts where the logins apply; '*': '*' for every host
//	    host_names: [build-01, build-01.example.com]
//	    host_labels: {env: prod, team: '*'}   # labels a host holding the role may claim
//	    kubernetes_labels: {env: prod}   # '*': '*' for every cluster
//	    kubernetes_groups: [deployers]
//	    kubernetes_users: [deploy-bot]   # at most one per cluster; default bot:NAME
//	    kubernetes_resources:            # as in Teleport's v7; enforced by Kubernetes RBAC
//	      - {kind: pod, namespace: default, name: '*', verbs: [get, list]}   # no verbs: every verb
//	  deny:                              # wins over allow, of any role
//	    logins: [root]
//	    node_labels: {env: prod}
//	  options:
//	    max_ttl: 1h
//	    forward_agent: false             # true lets the agent sign through a forwarded connection
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
// A value of node_labels, host_labels or kubernetes_labels may also be a
// list of values, any of which matches, and "*" matches any value of the
// label. A role without node_labels allows its logins on no host that
// checks labels (see package internal/sshaccess); they stay among the
// certificate's principals for hosts that only trust the user CA.
//
// Teleport's own resources are read too, as written, into the same
// [Role], [Bot] and [Token]: roles of version v5, v6 and v7, bots of
// version v1 (traits as a list of {name, values}) and tokens of version v2
// with roles [Bot]. Their meaning is Teleport's: a role's
// options.max_session_ttl is its MaxTTL (TeleportDefaultMaxTTL if unset),
// and deny rules are greedy (deny.logins denies those logins on every
// host, deny.node_labels every login on the hosts it selects). A field
// that Teleport defines and MWI cannot honour is refused with what MWI
// does instead; see teleport.go.
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

	"github.com/mwi-project/mwi/internal/sshaccess"
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

	// NodeLabels select the SSH hosts on which the role allows its Logins,
	// by the labels of their host certificates, as KubernetesLabels select
	// clusters. Empty allows the logins on no host that checks labels;
	// they stay among the certificate's principals, so an sshd that only
	// trusts the user CA still accepts them.
	NodeLabels map[string][]string
	// HostLabels say which labels a host holding the role may claim on its
	// SSH host certificate: a label k=v is allowed when HostLabels selects
	// the host {k: v}. Empty allows none.
	HostLabels map[string][]string
	// DenyLogins are the logins the role denies on the hosts that
	// DenyNodeLabels select, whatever other roles allow; templates as in
	// Logins. A role sets both or neither.
	DenyLogins     []string
	DenyNodeLabels map[string][]string
	// DenyHosts select the SSH hosts on which the role denies every login,
	// whatever other roles allow: Teleport's deny.node_labels, which
	// denies access to the hosts it selects, whatever the login.
	DenyHosts map[string][]string
	// ForwardAgent allows the bot's agent to sign through a forwarded
	// connection (Teleport's options.forward_agent).
	ForwardAgent bool

	// KubernetesLabels select the Kubernetes clusters the role allows: a
	// cluster is allowed when it has each label with one of the values
	// listed. The value "*" matches any value, and the key "*" with the
	// value "*" matches every cluster. Empty allows none.
	KubernetesLabels map[string][]string
	// DenyKubernetesLabels select the Kubernetes clusters the role denies,
	// whatever other roles allow (Teleport's deny.kubernetes_labels).
	DenyKubernetesLabels map[string][]string
	// KubernetesGroups and KubernetesUsers are the Kubernetes groups and
	// users of the certificates for the clusters the role allows; an entry
	// of the form "{{internal.NAME}}" stands for the bot's trait NAME.
	KubernetesGroups []string
	KubernetesUsers  []string
	// KubernetesResources are the Kubernetes objects the role's
	// certificates may act on (Teleport's kubernetes_resources). With no
	// proxy in the way, Kubernetes enforces them itself: mwi-issuer kube
	// rbac turns them into RBAC objects bound to the group
	// RoleGroup(role), which the role's certificates carry. Empty means
	// the role adds no such restriction.
	KubernetesResources []KubernetesResource

	// MaxTTL is the longest certificate lifetime the role allows.
	// It is DefaultMaxTTL if the resource sets none.
	MaxTTL time.Duration

	Source Location // where the resource document starts
}

func (Role) isResource() {}

// A KubernetesResource is one entry of a role's kubernetes_resources:
// objects of Kind (singular and lower case, as Teleport writes it: "pod",
// "deployment", "namespace", or "*") named Name in Namespace, on which the
// role allows Verbs ("get", "list", ... or "*"). Name and Namespace may be
// "*"; Namespace is empty for kinds that have none.
type KubernetesResource struct {
	Kind      string
	Namespace string
	Name      string
	Verbs     []string
}

// RoleGroup is the Kubernetes group that certificates carry for a role
// with kubernetes_resources, and that the RBAC objects of mwi-issuer kube
// rbac are bound to.
func RoleGroup(role string) string { return "mwi:role:" + role }

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

	// Allow holds one rule per role, in the order of Roles: the role's
	// logins, templates expanded, on the hosts its node_labels select.
	Allow []sshaccess.Rule
	// Deny holds one rule per role that denies logins.
	Deny []sshaccess.Rule
	// ForwardAgent is whether any role allows agent forwarding.
	ForwardAgent bool
	// HostLabels are the host_labels selectors of the roles that set one.
	HostLabels []map[string][]string
}

// AllowsHostLabel reports whether a role of the grant allows a host to
// claim the label key=value on its host certificate: one of its
// host_labels has an entry for key with value or "*", or is {"*": "*"}.
// Each label is judged alone: host_labels {env: prod, team: "*"} allows
// env=prod without any team.
func (g Grant) AllowsHostLabel(key, value string) bool {
	for _, sel := range g.HostLabels {
		if isWildcard(sel) {
			return true
		}
		if values, ok := sel[key]; ok && sshaccess.MatchLabels(map[string][]string{key: values}, map[string]string{key: value}) {
			return true
		}
	}
	return false
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
// smallest MaxTTL of the bot's roles, so the strictest role wins. A login
// that a role denies on every host ('*': '*') is left out of Logins.
//
// Allow, Deny, ForwardAgent and HostLabels are the roles' SSH access
// rules, for the user certificate's access extension and for the labels
// of host certificates.
//
// If the set has no bot of that name, Grant returns an error wrapping
// [ErrUnknownBot].
func (s *Set) Grant(bot string) (Grant, error) {
	b, ok := s.bots[bot]
	if !ok {
		return Grant{}, fmt.Errorf("%w %q", ErrUnknownBot, bot)
	}
	g := Grant{Bot: b.Name, Roles: slices.Clone(b.Roles)}
	var denyHosts []Role // the roles that deny every login on some hosts
	for _, name := range b.Roles {
		r, ok := s.roles[name]
		if !ok {
			// LoadDir rejects such sets; this guards a zero or hand-made Set.
			return Grant{}, fmt.Errorf("bot %q: unknown role %q", bot, name)
		}
		logins := expand(r.Logins, b.Traits)
		g.Logins = append(g.Logins, logins...)
		g.Allow = append(g.Allow, sshaccess.Rule{Role: r.Name, Logins: logins, NodeLabels: cloneSelector(r.NodeLabels)})
		if deny := expand(r.DenyLogins, b.Traits); len(deny) > 0 {
			g.Deny = append(g.Deny, sshaccess.Rule{Role: r.Name, Logins: deny, NodeLabels: cloneSelector(r.DenyNodeLabels)})
		}
		if len(r.DenyHosts) > 0 {
			denyHosts = append(denyHosts, r)
		}
		if len(r.HostLabels) > 0 {
			g.HostLabels = append(g.HostLabels, cloneSelector(r.HostLabels))
		}
		g.ForwardAgent = g.ForwardAgent || r.ForwardAgent
		g.HostNames = append(g.HostNames, r.HostNames...)
		if g.MaxTTL == 0 || r.MaxTTL < g.MaxTTL {
			g.MaxTTL = r.MaxTTL
		}
	}
	slices.Sort(g.Logins)
	g.Logins = slices.Compact(g.Logins)
	// A login denied on every host is no principal of the certificate
	// either, so that an sshd which only trusts the user CA refuses it too.
	g.Logins = slices.DeleteFunc(g.Logins, func(l string) bool {
		for _, d := range g.Deny {
			if isWildcard(d.NodeLabels) && slices.Contains(d.Logins, l) {
				return true
			}
		}
		return false
	})
	// A role that denies every login on some hosts denies each login of
	// the certificate there: a login that is not among its principals is
	// refused by sshd anyway. On every host, it leaves no principal.
	for _, r := range denyHosts {
		if isWildcard(r.DenyHosts) {
			g.Logins = nil
		}
	}
	for _, r := range denyHosts {
		if len(g.Logins) > 0 {
			g.Deny = append(g.Deny, sshaccess.Rule{Role: r.Name, Logins: slices.Clone(g.Logins), NodeLabels: cloneSelector(r.DenyHosts)})
		}
	}
	slices.Sort(g.HostNames)
	g.HostNames = slices.Compact(g.HostNames)
	return g, nil
}

// expand returns logins with each template "{{internal.NAME}}" replaced
// by the values of the trait NAME, or by nothing if there is no such
// trait. It never returns nil, so that a rule always lists its logins.
func expand(logins []string, traits map[string][]string) []string {
	out := []string{}
	for _, login := range logins {
		if trait, ok := traitRef(login); ok {
			out = append(out, traits[trait]...)
		} else {
			out = append(out, login)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// isWildcard reports whether selector is {"*": ["*"]}, which selects everything.
func isWildcard(selector map[string][]string) bool {
	v, ok := selector[sshaccess.Wildcard]
	return ok && len(selector) == 1 && slices.Equal(v, []string{sshaccess.Wildcard})
}

func cloneSelector(sel map[string][]string) map[string][]string {
	if sel == nil {
		return nil
	}
	out := make(map[string][]string, len(sel))
	for k, v := range sel {
		out[k] = slices.Clone(v)
	}
	return out
}

func (r Role) clone() Role {
	r.Logins = slices.Clone(r.Logins)
	r.DenyLogins = slices.Clone(r.DenyLogins)
	r.NodeLabels = cloneSelector(r.NodeLabels)
	r.HostLabels = cloneSelector(r.HostLabels)
	r.DenyNodeLabels = cloneSelector(r.DenyNodeLabels)
	r.DenyHosts = cloneSelector(r.DenyHosts)
	r.DenyKubernetesLabels = cloneSelector(r.DenyKubernetesLabels)
	r.HostNames = slices.Clone(r.HostNames)
	r.KubernetesGroups = slices.Clone(r.KubernetesGroups)
	r.KubernetesUsers = slices.Clone(r.KubernetesUsers)
	r.KubernetesLabels = cloneSelector(r.KubernetesLabels)
	r.KubernetesResources = slices.Clone(r.KubernetesResources)
	for i := range r.KubernetesResources {
		r.KubernetesResources[i].Verbs = slices.Clone(r.KubernetesResources[i].Verbs)
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
