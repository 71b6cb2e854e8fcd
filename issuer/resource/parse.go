package resource

import (
	"errors"
	"regexp"
	"strings"
	"time"
	"unicode"

	"go.yaml.in/yaml/v3"

	"github.com/mwi-project/mwi/internal/yamlfile"
)

var (
	// nameRE matches a valid metadata.name.
	nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

	// traitNameRE matches a valid trait name.
	traitNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

	// traitRefRE matches a login template naming a trait.
	traitRefRE = regexp.MustCompile(`^\{\{internal\.([A-Za-z_][A-Za-z0-9_]*)\}\}$`)
)

// traitRef reports whether login is of the form "{{internal.NAME}}", and
// returns NAME.
func traitRef(login string) (string, bool) {
	m := traitRefRE.FindStringSubmatch(login)
	if m == nil {
		return "", false
	}
	return m[1], true
}

// checkLogin reports why s is not a valid login. Templates of the form
// "{{internal.NAME}}" are accepted only if template is true.
func checkLogin(s string, template bool) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	if strings.Contains(s, "{{") || strings.Contains(s, "}}") {
		if !template {
			return errors.New("templates are not allowed here")
		}
		if _, ok := traitRef(s); !ok {
			return errors.New("unsupported template (want a plain login or {{internal.NAME}})")
		}
		return nil
	}
	for _, r := range s {
		switch {
		case r == ',':
			return errors.New("must not contain a comma")
		case unicode.IsSpace(r) || unicode.IsControl(r) || unicode.Is(unicode.Cf, r):
			return errors.New("must not contain whitespace or control characters")
		}
	}
	return nil
}

// checkHostName checks a name for an SSH host certificate. Wildcards are
// refused: a host certificate names the hosts it is for, and a pattern
// would let one host pass as many.
func checkHostName(s string) error {
	if err := checkLogin(s, false); err != nil {
		return err
	}
	if strings.ContainsAny(s, "*?!/@[]") {
		return errors.New("must be a plain host name or IP address, without patterns")
	}
	return nil
}

// A fileParser decodes the documents of one file for a loader, recording
// the problems it finds in the file.
type fileParser struct {
	*yamlfile.File
	l   *loader
	idx int // index of the file in l.files
	// teleport is set while a document in one of Teleport's formats is
	// decoded, whose label values may be patterns that MWI refuses.
	teleport bool
}

// parseFile decodes the documents in data, records the problems found in
// l, registers the named resources, and returns the decoded documents.
func (l *loader) parseFile(file string, data []byte) []*decoded {
	p := &fileParser{File: yamlfile.New(file, data), l: l, idx: len(l.files)}
	l.files = append(l.files, p.File)
	var docs []*decoded
	for _, root := range p.Documents() {
		if d := p.document(root); d != nil {
			l.register(d)
			docs = append(docs, d)
		}
	}
	return docs
}

// document decodes the document whose root node is root. It returns nil
// for one whose kind cannot be determined.
func (p *fileParser) document(root *yaml.Node) *decoded {
	root = yamlfile.Resolve(root)
	if root.Kind != yaml.MappingNode {
		p.Errorf(root.Line, "resource must be a mapping, not %s", yamlfile.Describe(root))
		return nil
	}
	top, _ := p.Fields(root, "", "kind", "version", "metadata", "spec")

	kind := ""
	if n := top["kind"]; n == nil {
		p.Errorf(root.Line, "missing kind (want %s)", wantKinds)
	} else if s, ok := p.Scalar(n, "kind"); ok {
		switch s {
		case "":
			p.Errorf(n.Line, "missing kind (want %s)", wantKinds)
		case "role", "bot", kindKubeCluster, kindToken:
			kind = s
		default:
			p.Errorf(n.Line, "unknown kind %q (want %s)", s, wantKinds)
		}
	}

	version := ""
	if n := top["version"]; n == nil {
		p.Errorf(root.Line, "missing version (want v1)")
	} else if s, ok := p.Scalar(n, "version"); ok {
		switch {
		case s == "":
			p.Errorf(n.Line, "missing version (want v1)")
		case s == "v1" || isTeleportVersion(kind, s):
			version = s
		default:
			p.Errorf(n.Line, "unsupported version %q (want v1)%s", s, teleportVersions(kind))
		}
	}

	if kind == "" {
		// Without a kind, the schema of metadata and spec is unknown.
		return nil
	}

	d := &decoded{kind: kind, file: p.idx}
	// A Teleport bot is MWI's bot of version v1 and more: bots take both.
	teleport := isTeleportVersion(kind, version) || kind == "bot"
	p.teleport = isTeleportVersion(kind, version)
	defer func() { p.teleport = false }()
	source := Location{File: p.Name, Line: root.Line}
	var description string
	var labels map[string]string
	var expires time.Time
	if meta := top["metadata"]; meta == nil {
		p.Errorf(root.Line, "missing metadata.name")
	} else {
		known := []string{"name"}
		switch kind {
		case "role":
			known = append(known, "description")
		case kindKubeCluster:
			known = append(known, "description", "labels")
		case kindToken:
			known = append(known, "description", "expires")
		}
		var m map[string]*yaml.Node
		var ok bool
		if teleport {
			m, ok = p.teleportFields(kind, meta, "metadata", known...)
		} else {
			m, ok = p.Fields(meta, "metadata", known...)
		}
		if ok {
			if n := m["name"]; n == nil {
				p.Errorf(yamlfile.Resolve(meta).Line, "missing metadata.name")
			} else if s, ok := p.Scalar(n, "metadata.name"); ok {
				switch {
				case s == "":
					p.Errorf(n.Line, "missing metadata.name")
				case !nameRE.MatchString(s):
					p.Errorf(n.Line, "invalid metadata.name %q: must match %s", s, nameRE)
				default:
					d.name = s
					d.nameLoc = Location{File: p.Name, Line: n.Line}
				}
			}
			if n := m["description"]; n != nil {
				description, _ = p.Scalar(n, "metadata.description")
			}
			if n := m["labels"]; n != nil {
				labels = p.clusterLabels(n)
			}
			if n := m["expires"]; n != nil {
				expires = p.tokenExpires(n)
			}
		}
	}

	spec := top["spec"]
	specLine := root.Line
	if spec != nil {
		specLine = yamlfile.Resolve(spec).Line
	}
	switch kind {
	case "role":
		var r Role
		if p.teleport {
			r = p.teleportRoleSpec(spec, version)
		} else {
			r = p.roleSpec(spec)
		}
		r.Name = d.name
		r.Description = description
		r.Source = source
		d.res = r
	case "bot":
		b := p.botSpec(spec, specLine, d)
		b.Name = d.name
		b.Source = source
		d.res = b
		p.l.botDocs = append(p.l.botDocs, d)
	case kindKubeCluster:
		c := p.kubeClusterSpec(spec, specLine)
		c.Name = d.name
		c.Description = description
		c.Labels = labels
		c.Source = source
		d.res = c
	case kindToken:
		var t Token
		if p.teleport {
			t = p.teleportTokenSpec(spec, specLine, d)
		} else {
			t = p.tokenSpec(spec, specLine, d)
		}
		t.Name = d.name
		t.Description = description
		t.Expires = expires
		t.Source = source
		d.res = t
		p.l.tokenDocs = append(p.l.tokenDocs, d)
	}
	return d
}

// roleSpec decodes the spec of a role; spec may be nil.
func (p *fileParser) roleSpec(spec *yaml.Node) Role {
	r := Role{MaxTTL: DefaultMaxTTL}
	if spec == nil {
		return r
	}
	m, _ := p.Fields(spec, "spec", "allow", "deny", "options")
	if allow := m["allow"]; allow != nil {
		a, _ := p.Fields(allow, "spec.allow", "logins", "host_names", "node_labels", "host_labels",
			"kubernetes_labels", "kubernetes_groups", "kubernetes_users", "kubernetes_resources")
		p.roleKubernetes(a, &r)
		if n := a["kubernetes_resources"]; n != nil {
			r.KubernetesResources = p.kubernetesResources(n, "spec.allow.kubernetes_resources", "v1")
		}
		p.roleSSHAllow(a, &r)
		if n := a["host_names"]; n != nil {
			items, _ := p.List(n, "spec.allow.host_names")
			for _, item := range items {
				s, ok := p.Scalar(item, "spec.allow.host_names entry")
				if !ok {
					continue
				}
				if err := checkHostName(s); err != nil {
					p.Errorf(item.Line, "invalid host name %q in spec.allow.host_names: %v", s, err)
					continue
				}
				r.HostNames = append(r.HostNames, s)
			}
		}
		if n := a["logins"]; n != nil {
			items, _ := p.List(n, "spec.allow.logins")
			for _, item := range items {
				s, ok := p.Scalar(item, "spec.allow.logins entry")
				if !ok {
					continue
				}
				if err := checkLogin(s, true); err != nil {
					p.Errorf(item.Line, "invalid login %q in spec.allow.logins: %v", s, err)
					continue
				}
				r.Logins = append(r.Logins, s)
			}
		}
	}
	if deny := m["deny"]; deny != nil {
		p.roleDeny(deny, &r)
	}
	if options := m["options"]; options != nil {
		o, _ := p.Fields(options, "spec.options", "max_ttl", "forward_agent")
		if n := o["forward_agent"]; n != nil {
			r.ForwardAgent, _ = p.Bool(n, "spec.options.forward_agent")
		}
		if n := o["max_ttl"]; n != nil {
			if s, ok := p.Scalar(n, "spec.options.max_ttl"); ok {
				ttl, err := time.ParseDuration(s)
				switch {
				case err != nil:
					p.Errorf(n.Line, "invalid spec.options.max_ttl %q: not a duration such as 1h or 30m", s)
				case ttl <= 0:
					p.Errorf(n.Line, "invalid spec.options.max_ttl %q: must be positive", s)
				case ttl > MaxTTLLimit:
					p.Errorf(n.Line, "invalid spec.options.max_ttl %q: must be at most 720h", s)
				default:
					r.MaxTTL = ttl
				}
			}
		}
	}
	return r
}

// botSpec decodes the spec of a bot, recording the roles it names in d;
// spec may be nil, and specLine is where it is, or would be.
func (p *fileParser) botSpec(spec *yaml.Node, specLine int, d *decoded) Bot {
	var b Bot
	var m map[string]*yaml.Node
	specOK := true
	if spec != nil {
		m, specOK = p.teleportFields("bot", spec, "spec", "roles", "traits")
	}

	n := m["roles"]
	rolesLine := specLine
	var items []*yaml.Node
	ok := specOK
	if n != nil {
		rolesLine = yamlfile.Resolve(n).Line
		items, ok = p.List(n, "spec.roles")
	}
	seen := make(map[string]int)
	for _, item := range items {
		s, ok := p.Scalar(item, "spec.roles entry")
		if !ok {
			continue
		}
		if first, dup := seen[s]; dup {
			p.Errorf(item.Line, "role %q listed twice in spec.roles (first at line %d)", s, first)
			continue
		}
		seen[s] = item.Line
		b.Roles = append(b.Roles, s)
		d.refs = append(d.refs, ref{name: s, line: item.Line})
	}
	if ok && len(items) == 0 {
		if d.name != "" {
			p.Errorf(rolesLine, "bot %q has no roles (set spec.roles)", d.name)
		} else {
			p.Errorf(rolesLine, "bot has no roles (set spec.roles)")
		}
	}

	if n := m["traits"]; n != nil && yamlfile.Resolve(n).Kind == yaml.SequenceNode {
		// Teleport's form: a list of {name, values}.
		p.teleportBotTraits(n, &b)
	} else if n != nil {
		pairs, _ := p.Mapping(n, "spec.traits")
		for _, kv := range pairs {
			if !traitNameRE.MatchString(kv.Key) {
				p.Errorf(kv.Line, "invalid trait name %q: must match %s", kv.Key, traitNameRE)
				continue
			}
			vals := p.traitValues(kv.Value, "spec.traits."+kv.Key, kv.Key)
			if b.Traits == nil {
				b.Traits = make(map[string][]string)
			}
			b.Traits[kv.Key] = vals
		}
	}
	return b
}

// traitValues decodes the values of the trait name, a list at path. MWI's
// bots write them under the trait's key, Teleport's under values; both
// hold logins and the like, so each is checked as a login is, without
// templates.
func (p *fileParser) traitValues(n *yaml.Node, path, name string) []string {
	items, _ := p.List(n, path)
	var vals []string
	for _, item := range items {
		s, ok := p.Scalar(item, path+" entry")
		if !ok {
			continue
		}
		if err := checkLogin(s, false); err != nil {
			p.Errorf(item.Line, "invalid value %q for trait %q: %v", s, name, err)
			continue
		}
		vals = append(vals, s)
	}
	return vals
}
