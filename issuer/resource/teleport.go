package resource

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mwi-project/mwi/internal/yamlfile"
)

// Teleport's resources are read as written, into the same Role, Bot and
// Token as MWI's own v1 format: roles of version v5, v6 and v7, bots of
// version v1 (whose traits are a list of {name, values}), and tokens of
// version v2 with roles [Bot].
//
// A field that Teleport defines and MWI cannot honour is refused, with
// what MWI does instead (teleportRefused); a field that changes nothing
// in MWI, by Teleport's own semantics (with the value Teleport writes by
// default, for some), is accepted and ignored only if teleportIgnored
// lists it with the reason. Any other field is unknown, as in MWI's
// format.

// TeleportDefaultMaxTTL is the MaxTTL of a Teleport role that sets no
// spec.options.max_session_ttl: Teleport's own default.
const TeleportDefaultMaxTTL = 30 * time.Hour

// teleportVersions returns the versions of Teleport's kind that are read,
// for the error about an unsupported version ("" if none).
func teleportVersions(kind string) string {
	switch kind {
	case "role":
		return "; Teleport's roles of version v5, v6 and v7 are read too"
	case kindToken:
		return "; Teleport's tokens of version v2 are read too"
	}
	return ""
}

// isTeleportVersion reports whether version of kind is Teleport's format.
func isTeleportVersion(kind, version string) bool {
	switch kind {
	case "role":
		return version == "v5" || version == "v6" || version == "v7"
	case kindToken:
		return version == "v2"
	}
	return false
}

// A teleportField is a field of Teleport's resources at Path (dotted, from
// the document's root) in documents of Kind ("" for any kind).
type teleportField struct {
	Kind, Path string
	// Value, if not empty, is the only value with which an ignored field
	// changes nothing; another value is refused.
	Value string
	Why   string
}

// teleportIgnored lists the fields of Teleport's resources that MWI
// accepts and ignores, with why ignoring them changes nothing.
var teleportIgnored = []teleportField{
	{Path: "metadata.revision", Why: "Teleport's storage revision; MWI keeps none"},
	{Path: "metadata.id", Why: "Teleport's storage id; MWI keeps none"},
	{Path: "metadata.namespace", Value: "default", Why: "Teleport has the one namespace default"},
	{Kind: "role", Path: "metadata.labels", Why: "labels of a role select nothing"},
	{Kind: "bot", Path: "metadata.labels", Why: "labels of a bot select nothing"},
	{Kind: kindToken, Path: "metadata.labels", Why: "labels of a token select nothing"},
	{Kind: "role", Path: "spec.options.cert_format", Value: "standard", Why: "MWI issues standard OpenSSH certificates only"},
	{Kind: "role", Path: "spec.options.pin_source_ip", Value: "false", Why: "MWI certificates are not pinned to a source address"},
	// What tctl get writes for a role's options that it leaves unset,
	// where MWI does the same.
	{Kind: "role", Path: "spec.options.port_forwarding", Value: "true", Why: "MWI certificates permit port forwarding too"},
	{Kind: "role", Path: "spec.options.permit_x11_forwarding", Value: "false", Why: "MWI certificates do not permit X11 forwarding either"},
	{Kind: "role", Path: "spec.options.ssh_file_copy", Value: "true", Why: "MWI certificates do not restrict file copying either"},
	{Kind: "role", Path: "spec.options.disconnect_expired_cert", Value: "false", Why: "MWI does not end sessions when certificates expire either"},
	{Kind: "role", Path: "spec.options.require_session_mfa", Value: "false", Why: "MWI asks bots for no second factor either"},
	{Kind: "role", Path: "spec.options.create_host_user", Value: "false", Why: "MWI does not create users on hosts either"},
	{Kind: "role", Path: "spec.options.create_db_user", Value: "false", Why: "MWI does not create database users either"},
	{Kind: "role", Path: "spec.options.create_desktop_user", Value: "false", Why: "MWI does not create desktop users either"},
	{Kind: "role", Path: "spec.options.desktop_clipboard", Value: "true", Why: "MWI issues no desktop access for it to apply to"},
	{Kind: "role", Path: "spec.options.desktop_directory_sharing", Value: "true", Why: "MWI issues no desktop access for it to apply to"},
}

// Why MWI refuses some of Teleport's role conditions, in allow and deny.
const (
	whyNoApps      = "MWI issues no application access; remove it"
	whyNoDatabases = "MWI issues no database access; remove it"
	whyNoDesktops  = "MWI issues no Windows desktop access; remove it"
	whyNoCloud     = "MWI issues no cloud provider credentials; remove it"
	whyNoAPI       = "MWI bots have no access to the issuer's API: it is administered with mwi-issuer; remove it"
	whyNoExpr      = "MWI selects by label maps only, not by predicate expressions; write the labels instead"
	whyNoRequests  = "MWI has no access requests; a bot's roles are all it holds"
	whyNoSessions  = "MWI has no proxy and records no sessions, so it has no session joining or moderation; remove it"
	whyNoHostUsers = "MWI does not create users on hosts; remove it"
	whyNoWorkload  = "MWI issues no SPIFFE or workload identities; remove it"
)

// teleportConditions are the fields of Teleport's allow and deny
// conditions that MWI refuses in both.
var teleportConditions = map[string]string{
	"node_labels_expression":              whyNoExpr,
	"kubernetes_labels_expression":        whyNoExpr,
	"app_labels":                          whyNoApps,
	"app_labels_expression":               whyNoApps,
	"aws_role_arns":                       whyNoCloud,
	"azure_identities":                    whyNoCloud,
	"gcp_service_accounts":                whyNoCloud,
	"account_assignments":                 whyNoCloud,
	"cluster_labels":                      "MWI has no trusted clusters; remove it",
	"cluster_labels_expression":           "MWI has no trusted clusters; remove it",
	"db_labels":                           whyNoDatabases,
	"db_labels_expression":                whyNoDatabases,
	"db_service_labels":                   whyNoDatabases,
	"db_service_labels_expression":        whyNoDatabases,
	"db_names":                            whyNoDatabases,
	"db_users":                            whyNoDatabases,
	"db_roles":                            whyNoDatabases,
	"db_permissions":                      whyNoDatabases,
	"windows_desktop_labels":              whyNoDesktops,
	"windows_desktop_labels_expression":   whyNoDesktops,
	"windows_desktop_logins":              whyNoDesktops,
	"desktop_groups":                      whyNoDesktops,
	"rules":                               whyNoAPI,
	"impersonate":                         whyNoAPI,
	"review_requests":                     whyNoRequests,
	"request":                             whyNoRequests,
	"join_sessions":                       whyNoSessions,
	"require_session_join":                whyNoSessions,
	"host_groups":                         whyNoHostUsers,
	"host_sudoers":                        whyNoHostUsers,
	"group_labels":                        "MWI has no user groups to select; remove it",
	"spiffe":                              whyNoWorkload,
	"workload_identity_labels":            whyNoWorkload,
	"workload_identity_labels_expression": whyNoWorkload,
	"github_permissions":                  "MWI issues no GitHub access; remove it",
	"mcp":                                 "MWI issues no MCP access; remove it",
	"namespaces":                          "Teleport has the one namespace default; remove it",
}

// teleportRefused lists the fields of Teleport's resources that MWI
// refuses, with what MWI does instead; see also teleportConditions.
var teleportRefused = func() []teleportField {
	out := []teleportField{
		{Kind: "role", Path: "metadata.expires", Why: "MWI roles do not expire; remove the role when it should end"},
		{Kind: "bot", Path: "metadata.expires", Why: "MWI bots do not expire; remove the bot when it should end, or give its tokens metadata.expires"},
		{Kind: "bot", Path: "spec.max_session_ttl", Why: "MWI bounds a bot's certificates by its roles: set spec.options.max_session_ttl in a role"},

		{Kind: "role", Path: "spec.deny.kubernetes_groups", Why: "MWI cannot take a group back from a certificate that another role gives it; leave the group out of the allowing roles"},
		{Kind: "role", Path: "spec.deny.kubernetes_users", Why: "MWI cannot take a user back from a certificate that another role gives it; leave the user out of the allowing roles"},
		{Kind: "role", Path: "spec.deny.kubernetes_resources", Why: "MWI turns kubernetes_resources into Kubernetes RBAC, which only grants; list what the role allows in spec.allow.kubernetes_resources instead"},
		{Kind: "role", Path: "spec.allow.host_names", Why: "an MWI field: write the role in MWI's version v1 to use it"},
		{Kind: "role", Path: "spec.allow.host_labels", Why: "an MWI field: write the role in MWI's version v1 to use it"},

		{Kind: "role", Path: "spec.options.max_ttl", Why: "the MWI name of the option: Teleport roles set spec.options.max_session_ttl"},
		{Kind: "role", Path: "spec.options.port_forwarding", Why: "MWI certificates always permit port forwarding (true, or leave it out)"},
		{Kind: "role", Path: "spec.options.ssh_port_forwarding", Why: "MWI certificates always permit port forwarding; remove it"},
		{Kind: "role", Path: "spec.options.permit_x11_forwarding", Why: "MWI certificates never permit X11 forwarding (false, or leave it out)"},
		{Kind: "role", Path: "spec.options.ssh_file_copy", Why: "MWI certificates do not restrict file copying (true, or leave it out)"},
		{Kind: "role", Path: "spec.options.client_idle_timeout", Why: "MWI has no proxy to end idle sessions; remove it"},
		{Kind: "role", Path: "spec.options.disconnect_expired_cert", Why: "MWI has no proxy to end sessions when certificates expire; remove it"},
		{Kind: "role", Path: "spec.options.max_connections", Why: "MWI has no proxy to count connections; remove it"},
		{Kind: "role", Path: "spec.options.max_sessions", Why: "MWI has no proxy to count sessions; remove it"},
		{Kind: "role", Path: "spec.options.max_kubernetes_connections", Why: "MWI has no proxy to count connections; remove it"},
		{Kind: "role", Path: "spec.options.record_session", Why: "MWI has no proxy and records no sessions; remove it"},
		{Kind: "role", Path: "spec.options.enhanced_recording", Why: "MWI has no proxy and records no sessions; remove it"},
		{Kind: "role", Path: "spec.options.bpf", Why: "MWI has no proxy and records no sessions; remove it"},
		{Kind: "role", Path: "spec.options.require_session_mfa", Why: "bots have no second factor; remove it"},
		{Kind: "role", Path: "spec.options.mfa_verification_interval", Why: "bots have no second factor; remove it"},
		{Kind: "role", Path: "spec.options.device_trust_mode", Why: "MWI has no device trust; remove it"},
		{Kind: "role", Path: "spec.options.lock", Why: "MWI locks are set with mwi-issuer lock; remove it"},
		{Kind: "role", Path: "spec.options.request_access", Why: whyNoRequests},
		{Kind: "role", Path: "spec.options.request_prompt", Why: whyNoRequests},
		{Kind: "role", Path: "spec.options.cert_extensions", Why: "MWI decides the extensions of its certificates; remove it"},
		{Kind: "role", Path: "spec.options.create_host_user", Why: whyNoHostUsers},
		{Kind: "role", Path: "spec.options.create_host_user_mode", Why: whyNoHostUsers},
		{Kind: "role", Path: "spec.options.create_host_user_default_shell", Why: whyNoHostUsers},
		{Kind: "role", Path: "spec.options.desktop_clipboard", Why: whyNoDesktops},
		{Kind: "role", Path: "spec.options.desktop_directory_sharing", Why: whyNoDesktops},
		{Kind: "role", Path: "spec.options.create_desktop_user", Why: whyNoDesktops},
		{Kind: "role", Path: "spec.options.record_desktop_session", Why: whyNoDesktops},
		{Kind: "role", Path: "spec.options.create_db_user", Why: whyNoDatabases},
		{Kind: "role", Path: "spec.options.create_db_user_mode", Why: whyNoDatabases},
		{Kind: "role", Path: "spec.options.idp", Why: "MWI is no identity provider; remove it"},

		{Kind: kindToken, Path: "spec.allow", Why: "rules of Teleport's AWS join methods; MWI has no AWS join method"},
		{Kind: kindToken, Path: "spec.aws_iid_ttl", Why: "MWI has no AWS join method; remove it"},
		{Kind: kindToken, Path: "spec.suggested_labels", Why: "MWI tokens join bots, not Teleport services; remove it"},
		{Kind: kindToken, Path: "spec.suggested_agent_matcher_labels", Why: "MWI tokens join bots, not Teleport services; remove it"},
		{Kind: kindToken, Path: "spec.integration", Why: "MWI has no integrations; remove it"},
		{Kind: kindToken, Path: "spec.audience", Why: "an MWI field: write the token in MWI's version v1 to use it"},
		{Kind: kindToken, Path: "spec.oidc", Why: "an MWI join method: write the token in MWI's version v1 to use it"},

		{Kind: kindToken, Path: "spec.kubernetes.static_jwks", Why: "MWI checks the issuer of every token: set type: oidc with oidc.issuer, or write the token in MWI's version v1 with issuer_url and static_jwks"},
		{Kind: kindToken, Path: "spec.bound_keypair.onboarding.registration_secret", Why: "MWI binds the key registered ahead: set onboarding.initial_public_key (the key from the bot's host) instead"},
		{Kind: kindToken, Path: "spec.bound_keypair.onboarding.must_register_before", Why: "MWI has no registration window: the key is registered ahead; metadata.expires ends the token entirely"},
		{Kind: kindToken, Path: "spec.bound_keypair.recovery", Why: "MWI counts no recoveries: the holder of the key may join any number of times; remove it, and remove the token (or the key) to stop it"},
		{Kind: kindToken, Path: "spec.bound_keypair.rotate_after", Why: "MWI does not rotate bound keys; register a new key in the token to replace it"},
	}
	for _, m := range []string{"circleci", "gcp", "azure", "azure_devops", "spacelift", "tpm", "terraform_cloud", "bitbucket", "oracle", "env0"} {
		out = append(out, teleportField{Kind: kindToken, Path: "spec." + m,
			Why: "MWI has no " + m + " join method (it has github, gitlab, kubernetes and bound_keypair); remove it"})
	}
	for k, why := range teleportConditions {
		out = append(out,
			teleportField{Kind: "role", Path: "spec.allow." + k, Why: why},
			teleportField{Kind: "role", Path: "spec.deny." + k, Why: why})
	}
	return out
}()

// teleportFields returns the fields of the mapping n at path, of a
// Teleport document of kind, as Fields does for the known ones. Fields
// that teleportRefused lists are refused with their reason, those that
// teleportIgnored lists are left out, and any other field is unknown.
func (p *fileParser) teleportFields(kind string, n *yaml.Node, path string, known ...string) (map[string]*yaml.Node, bool) {
	pairs, ok := p.Mapping(n, path)
	if !ok {
		return nil, false
	}
	m := make(map[string]*yaml.Node, len(pairs))
	for _, kv := range pairs {
		full := path + "." + kv.Key
		if slices.Contains(known, kv.Key) {
			m[kv.Key] = kv.Value
			continue
		}
		refused, isRefused := lookupField(teleportRefused, kind, full)
		if f, ok := lookupField(teleportIgnored, kind, full); ok {
			v := yamlfile.Resolve(kv.Value)
			switch {
			case f.Value == "" || v.Kind == yaml.ScalarNode && v.Value == f.Value:
			case isRefused:
				p.Errorf(kv.Line, "%s: %s", full, refused.Why)
			default:
				p.Errorf(kv.Line, "%s: %s (want %s, or leave it out)", full, f.Why, f.Value)
			}
			continue
		}
		if isRefused {
			p.Errorf(kv.Line, "%s: %s", full, refused.Why)
			continue
		}
		p.Errorf(kv.Line, "unknown field %q in %s (want %s)", kv.Key, path, strings.Join(known, ", "))
	}
	return m, true
}

// lookupField returns the entry of table for the field at path in a
// document of kind.
func lookupField(table []teleportField, kind, path string) (teleportField, bool) {
	for _, f := range table {
		if f.Path == path && (f.Kind == "" || f.Kind == kind) {
			return f, true
		}
	}
	return teleportField{}, false
}

// teleportRoleSpec decodes the spec of a Teleport role of the given
// version (v5, v6 or v7); spec may be nil.
func (p *fileParser) teleportRoleSpec(spec *yaml.Node, version string) Role {
	r := Role{MaxTTL: TeleportDefaultMaxTTL}
	if spec == nil {
		return r
	}
	m, _ := p.teleportFields("role", spec, "spec", "allow", "deny", "options")
	if allow := m["allow"]; allow != nil {
		a, _ := p.teleportFields("role", allow, "spec.allow", "logins", "node_labels",
			"kubernetes_labels", "kubernetes_groups", "kubernetes_users", "kubernetes_resources")
		p.roleKubernetes(a, &r)
		if n := a["node_labels"]; n != nil {
			r.NodeLabels = p.labelSelector(n, "spec.allow.node_labels", "host")
		}
		if n := a["logins"]; n != nil {
			r.Logins = p.logins(n, "spec.allow.logins")
		}
		if n := a["kubernetes_resources"]; n != nil {
			r.KubernetesResources = p.kubernetesResources(n, "spec.allow.kubernetes_resources", version)
		}
		if version == "v6" && len(r.KubernetesLabels) > 0 {
			r.KubernetesResources = teleportV6Resources(r.KubernetesResources)
		}
	}
	if deny := m["deny"]; deny != nil {
		p.teleportRoleDeny(deny, &r)
	}
	if options := m["options"]; options != nil {
		o, _ := p.teleportFields("role", options, "spec.options", "max_session_ttl", "forward_agent")
		if n := o["forward_agent"]; n != nil {
			r.ForwardAgent, _ = p.Bool(n, "spec.options.forward_agent")
		}
		if n := o["max_session_ttl"]; n != nil {
			if s, ok := p.Scalar(n, "spec.options.max_session_ttl"); ok {
				ttl, err := time.ParseDuration(s)
				switch {
				case err != nil:
					p.Errorf(n.Line, "invalid spec.options.max_session_ttl %q: not a duration such as 8h or 30m", s)
				case ttl <= 0:
					p.Errorf(n.Line, "invalid spec.options.max_session_ttl %q: must be positive", s)
				case ttl > MaxTTLLimit:
					p.Errorf(n.Line, "spec.options.max_session_ttl: %q is above MWI's limit on certificate lifetimes, %s; set at most %s", s, fmtDuration(MaxTTLLimit), fmtDuration(MaxTTLLimit))
				default:
					r.MaxTTL = ttl
				}
			}
		}
	}
	return r
}

// fmtDuration formats d in whole hours if it is a whole number of them:
// 720h rather than 720h0m0s.
func fmtDuration(d time.Duration) string {
	if d%time.Hour == 0 {
		return fmt.Sprintf("%dh", d/time.Hour)
	}
	return d.String()
}

// teleportRoleDeny decodes the spec.deny of a Teleport role. Teleport's
// deny rules are greedy: deny.logins denies those logins on every host,
// and deny.node_labels denies every login on the hosts it selects; each
// applies on its own, as does deny.kubernetes_labels to clusters.
func (p *fileParser) teleportRoleDeny(deny *yaml.Node, r *Role) {
	d, ok := p.teleportFields("role", deny, "spec.deny", "logins", "node_labels", "kubernetes_labels")
	if !ok {
		return
	}
	if n := d["logins"]; n != nil {
		if r.DenyLogins = p.logins(n, "spec.deny.logins"); len(r.DenyLogins) > 0 {
			r.DenyNodeLabels = map[string][]string{"*": {"*"}}
		}
	}
	if n := d["node_labels"]; n != nil {
		r.DenyHosts = p.labelSelector(n, "spec.deny.node_labels", "host")
	}
	if n := d["kubernetes_labels"]; n != nil {
		r.DenyKubernetesLabels = p.labelSelector(n, "spec.deny.kubernetes_labels", "cluster")
	}
}

// teleportBotTraits decodes the spec.traits of a Teleport bot: a list of
// {name, values}.
func (p *fileParser) teleportBotTraits(n *yaml.Node, b *Bot) {
	items, _ := p.List(n, "spec.traits")
	for i, item := range items {
		path := fmt.Sprintf("spec.traits[%d]", i)
		t, ok := p.Fields(item, path, "name", "values")
		if !ok {
			continue
		}
		var name string
		if v := t["name"]; v == nil {
			p.Errorf(item.Line, "missing %s.name", path)
			continue
		} else if name, ok = p.Scalar(v, path+".name"); !ok {
			continue
		} else if !traitNameRE.MatchString(name) {
			p.Errorf(v.Line, "invalid trait name %q: must match %s", name, traitNameRE)
			continue
		}
		if _, dup := b.Traits[name]; dup {
			p.Errorf(item.Line, "trait %q listed twice in spec.traits", name)
			continue
		}
		var vals []string
		if v := t["values"]; v != nil {
			vals = p.traitValues(v, path+".values", name)
		}
		if b.Traits == nil {
			b.Traits = make(map[string][]string)
		}
		b.Traits[name] = vals
	}
}

// teleportTokenSpec decodes the spec of a Teleport token of version v2,
// recording the bot it names in d; spec may be nil, and specLine is where
// it is, or would be. Its roles must be [Bot]: MWI tokens join bots only.
// The blocks github and gitlab are MWI's own, and Teleport's kubernetes
// and bound_keypair blocks are mapped onto MWI's.
func (p *fileParser) teleportTokenSpec(spec *yaml.Node, specLine int, d *decoded) Token {
	var t Token
	var m map[string]*yaml.Node
	if spec != nil {
		var ok bool
		m, ok = p.teleportFields(kindToken, spec, "spec", "roles", "join_method", "bot_name",
			"github", "gitlab", "kubernetes", "bound_keypair")
		if !ok {
			return t
		}
	}
	if n := m["roles"]; n == nil {
		p.Errorf(specLine, "missing spec.roles (want [Bot]: MWI tokens join bots)")
	} else if items, ok := p.List(n, "spec.roles"); ok {
		if len(items) != 1 {
			p.Errorf(yamlfile.Resolve(n).Line, "spec.roles must be [Bot]: MWI tokens join bots only, not Teleport services")
		}
		for _, item := range items {
			if s, ok := p.Scalar(item, "spec.roles entry"); ok && s != "Bot" {
				p.Errorf(item.Line, "spec.roles: %q is not a role MWI tokens can join as; MWI tokens join bots only (want [Bot])", s)
			}
		}
	}
	t.JoinMethod = p.tokenJoinMethod(m["join_method"], specLine)
	t.BotName = p.tokenBotName(m["bot_name"], specLine, d)
	parsers := map[string]func(n *yaml.Node, path string, line int) JoinSpec{
		"github":        func(n *yaml.Node, path string, line int) JoinSpec { return (*GitHubJoin)(nil).parse(p, n, path, line) },
		"gitlab":        func(n *yaml.Node, path string, line int) JoinSpec { return (*GitLabJoin)(nil).parse(p, n, path, line) },
		"kubernetes":    p.teleportKubernetesJoin,
		"bound_keypair": p.teleportBoundKeypairJoin,
	}
	for _, key := range []string{"github", "gitlab", "kubernetes", "bound_keypair"} {
		if j := p.joinBlock(spec, m, specLine, t.JoinMethod, key, parsers[key]); j != nil {
			t.Join = j
		}
	}
	return t
}

// teleportKubernetesJoin decodes Teleport's kubernetes block of a token:
// of its types, MWI honours oidc, whose issuer it checks as MWI's own
// kubernetes block does. in_cluster asks Teleport's own cluster to review
// the tokens, and static_jwks skips the issuer check; MWI does neither.
func (p *fileParser) teleportKubernetesJoin(n *yaml.Node, path string, line int) JoinSpec {
	m, ok := p.teleportFields(kindToken, n, path, "type", "allow", "oidc")
	if !ok {
		return nil
	}
	k := &KubernetesJoin{}
	typ := ""
	if v := m["type"]; v != nil {
		typ, _ = p.Scalar(v, path+".type")
	}
	switch typ {
	case "oidc":
	case "", "in_cluster":
		p.Errorf(yamlfile.KeyLine(n, "type"), "%s.type %s: MWI's issuer runs outside the cluster and cannot ask it to review tokens; set type: oidc with oidc.issuer (the cluster's service account issuer)", path, orDefault(typ, "in_cluster (the default)"))
	case "static_jwks":
		p.Errorf(yamlfile.KeyLine(n, "type"), "%s.type static_jwks: MWI checks the issuer of every token; set type: oidc with oidc.issuer, or write the token in MWI's version v1 with issuer_url and static_jwks", path)
	default:
		p.Errorf(yamlfile.KeyLine(n, "type"), "unknown %s.type %q (want oidc)", path, typ)
	}
	if v := m["oidc"]; v != nil {
		o, _ := p.teleportFields(kindToken, v, path+".oidc", "issuer", "insecure_allow_http_issuer")
		if b := o["insecure_allow_http_issuer"]; b != nil {
			if on, ok := p.Bool(b, path+".oidc.insecure_allow_http_issuer"); ok && on {
				p.Errorf(b.Line, "%s.oidc.insecure_allow_http_issuer: MWI fetches an issuer's keys over https only; remove it", path)
			}
		}
		if iv := o["issuer"]; iv == nil {
			p.Errorf(yamlfile.Resolve(v).Line, "missing %s.oidc.issuer (the cluster's service account issuer)", path)
		} else if s, ok := p.Scalar(iv, path+".oidc.issuer"); ok {
			if err := checkIssuerURL(s); err != nil {
				p.Errorf(iv.Line, "invalid %s.oidc.issuer %q: %v", path, s, err)
			} else {
				k.IssuerURL = s
			}
		}
	} else if typ == "oidc" {
		p.Errorf(line, "missing %s.oidc.issuer (type is oidc)", path)
	}
	k.Allow = p.kubernetesAllow(m["allow"], path, line)
	return k
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// teleportBoundKeypairJoin decodes Teleport's bound_keypair block of a
// token: MWI honours a key registered ahead, onboarding.initial_public_key.
func (p *fileParser) teleportBoundKeypairJoin(n *yaml.Node, path string, line int) JoinSpec {
	m, ok := p.teleportFields(kindToken, n, path, "onboarding")
	if !ok {
		return nil
	}
	b := &BoundKeypairJoin{}
	on := m["onboarding"]
	if on == nil {
		p.Errorf(line, "missing %s.onboarding.initial_public_key (the key in authorized_keys form)", path)
		return b
	}
	o, _ := p.teleportFields(kindToken, on, path+".onboarding", "initial_public_key")
	if v := o["initial_public_key"]; v == nil {
		p.Errorf(yamlfile.Resolve(on).Line, "missing %s.onboarding.initial_public_key (the key in authorized_keys form)", path)
	} else {
		p.boundKey(v, path+".onboarding.initial_public_key", b)
	}
	return b
}
