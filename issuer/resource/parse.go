package resource

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/mwi-project/mwi/internal/yamlline"
)

var (
	// nameRE matches a valid metadata.name.
	nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

	// traitNameRE matches a valid trait name.
	traitNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

	// traitRefRE matches a login template naming a trait.
	traitRefRE = regexp.MustCompile(`^\{\{internal\.([A-Za-z_][A-Za-z0-9_]*)\}\}$`)

	// yamlLineRE matches a yaml.v3 error that carries a line number.
	yamlLineRE = regexp.MustCompile(`(?s)^yaml: line (\d+): (.*)$`)
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

// A fileParser decodes the documents of one file for a loader.
type fileParser struct {
	l    *loader
	idx  int // index of the file in l.files
	file string
}

func (p *fileParser) errorf(line int, format string, args ...any) {
	p.l.errorf(p.idx, line, format, args...)
}

// parseFile decodes the documents in data, records the problems found in
// l, registers the named resources, and returns the decoded documents.
func (l *loader) parseFile(file string, data []byte) []*decoded {
	l.files = append(l.files, file)
	p := &fileParser{l: l, idx: len(l.files) - 1, file: file}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []*decoded
	for {
		var doc yaml.Node
		err := decode(dec, &doc)
		if err == io.EOF {
			break
		}
		if err != nil {
			p.syntaxError(data, err)
			break
		}
		if d := p.document(&doc); d != nil {
			l.register(d)
			docs = append(docs, d)
		}
	}
	return docs
}

// decode is dec.Decode, with a panic in the YAML decoder turned into an
// error so that a malformed file cannot bring the issuer down.
func decode(dec *yaml.Decoder, n *yaml.Node) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml: internal error: %v", r)
		}
	}()
	return dec.Decode(n)
}

// syntaxError records err, returned by the YAML decoder for data.
func (p *fileParser) syntaxError(data []byte, err error) {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		if line, err := strconv.Atoi(m[1]); err == nil && line > 0 {
			p.errorf(yamlline.Correct(data, line, m[2]), "invalid YAML: %s", m[2])
			return
		}
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	p.errorf(guessLine(data, msg), "invalid YAML: %s", msg)
}

// guessLine returns the line of data that a YAML error without a line
// number refers to. The decoder omits the line for errors on the first line
// and for errors found while reading the input, such as control characters
// and invalid UTF-8; guessLine looks for the offending text.
func guessLine(data []byte, msg string) int {
	off := -1
	switch {
	case strings.Contains(msg, "control characters"):
		off = bytes.IndexFunc(data, func(r rune) bool {
			return r != '\t' && r != '\n' && r != '\r' && r != 0x85 &&
				(r < 0x20 || r >= 0x7f && r < 0xa0 || r == 0xfffe || r == 0xffff)
		})
	case strings.Contains(msg, "UTF-8"):
		for i := 0; i < len(data); {
			r, n := utf8.DecodeRune(data[i:])
			if r == utf8.RuneError && n <= 1 {
				off = i
				break
			}
			i += n
		}
	case strings.HasPrefix(msg, "unknown anchor '"):
		name, _, _ := strings.Cut(strings.TrimPrefix(msg, "unknown anchor '"), "'")
		off = bytes.Index(data, []byte("*"+name))
	}
	if off < 0 {
		return 1
	}
	return 1 + bytes.Count(data[:off], []byte("\n"))
}

// resolve returns the node that n stands for, following an alias.
func resolve(n *yaml.Node) *yaml.Node {
	if n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		return n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names the kind of node n, for error messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("the value %q", n.Value)
	}
	return "an unexpected node"
}

// A pair is a key and value of a YAML mapping.
type pair struct {
	key   string
	line  int // line of the key
	value *yaml.Node
}

// mapping returns the entries of the mapping n, which is described by path
// in error messages. A null n is an empty mapping. If n is not a mapping,
// mapping records an error and returns ok == false. Entries whose key is
// not a string or repeats an earlier key are reported and left out.
func (p *fileParser) mapping(n *yaml.Node, path string) (pairs []pair, ok bool) {
	n = resolve(n)
	if isNull(n) {
		return nil, true
	}
	if n.Kind != yaml.MappingNode {
		p.errorf(n.Line, "%s must be a mapping, not %s", path, describe(n))
		return nil, false
	}
	seen := make(map[string]int)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := resolve(n.Content[i])
		switch {
		case k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge":
			p.errorf(k.Line, "merge keys (<<) are not supported in %s", path)
			continue
		case k.Kind != yaml.ScalarNode:
			p.errorf(k.Line, "keys of %s must be strings, not %s", path, describe(k))
			continue
		}
		if first, dup := seen[k.Value]; dup {
			p.errorf(k.Line, "duplicate field %q in %s (first at line %d)", k.Value, path, first)
			continue
		}
		seen[k.Value] = k.Line
		pairs = append(pairs, pair{key: k.Value, line: k.Line, value: n.Content[i+1]})
	}
	return pairs, true
}

// fields returns the values of the mapping n by key, reporting any key not
// in known as an unknown field. It returns ok == false if n is not a mapping.
func (p *fileParser) fields(n *yaml.Node, path string, known ...string) (map[string]*yaml.Node, bool) {
	pairs, ok := p.mapping(n, path)
	if !ok {
		return nil, false
	}
	m := make(map[string]*yaml.Node, len(pairs))
	for _, kv := range pairs {
		if !slices.Contains(known, kv.key) {
			in := ""
			if path != "" {
				in = " in " + path
			}
			p.errorf(kv.line, "unknown field %q%s (want %s)", kv.key, in, strings.Join(known, ", "))
			continue
		}
		m[kv.key] = kv.value
	}
	return m, true
}

// list returns the items of the sequence n, which is described by path in
// error messages. A null n is an empty list. If n is not a sequence, list
// records an error and returns ok == false.
func (p *fileParser) list(n *yaml.Node, path string) (items []*yaml.Node, ok bool) {
	n = resolve(n)
	if isNull(n) {
		return nil, true
	}
	if n.Kind != yaml.SequenceNode {
		p.errorf(n.Line, "%s must be a list, not %s", path, describe(n))
		return nil, false
	}
	items = make([]*yaml.Node, len(n.Content))
	for i, c := range n.Content {
		items[i] = resolve(c)
	}
	return items, true
}

// scalar returns the string form of the scalar n, which is described by
// path in error messages. A null is the empty string. If n is not a plain
// scalar, scalar records an error and returns ok == false.
func (p *fileParser) scalar(n *yaml.Node, path string) (s string, ok bool) {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode {
		p.errorf(n.Line, "%s must be a string, not %s", path, describe(n))
		return "", false
	}
	switch tag := n.ShortTag(); tag {
	case "!!null":
		return "", true
	case "!!str", "!!int", "!!float", "!!bool", "!!timestamp":
		return n.Value, true
	default:
		p.errorf(n.Line, "%s has unsupported tag %s", path, tag)
		return "", false
	}
}

// document decodes one YAML document. It returns nil for an empty
// document, and for one whose kind cannot be determined.
func (p *fileParser) document(doc *yaml.Node) *decoded {
	if len(doc.Content) == 0 {
		return nil
	}
	root := resolve(doc.Content[0])
	if isNull(root) {
		return nil
	}
	if root.Kind != yaml.MappingNode {
		p.errorf(root.Line, "resource must be a mapping, not %s", describe(root))
		return nil
	}
	top, _ := p.fields(root, "", "kind", "version", "metadata", "spec")

	kind := ""
	if n := top["kind"]; n == nil {
		p.errorf(root.Line, "missing kind (want %s)", wantKinds)
	} else if s, ok := p.scalar(n, "kind"); ok {
		switch s {
		case "":
			p.errorf(n.Line, "missing kind (want %s)", wantKinds)
		case "role", "bot", kindKubeCluster, kindToken:
			kind = s
		default:
			p.errorf(n.Line, "unknown kind %q (want %s)", s, wantKinds)
		}
	}

	if n := top["version"]; n == nil {
		p.errorf(root.Line, "missing version (want v1)")
	} else if s, ok := p.scalar(n, "version"); ok {
		switch s {
		case "":
			p.errorf(n.Line, "missing version (want v1)")
		case "v1":
		default:
			p.errorf(n.Line, "unsupported version %q (want v1)", s)
		}
	}

	if kind == "" {
		// Without a kind, the schema of metadata and spec is unknown.
		return nil
	}

	d := &decoded{kind: kind, file: p.idx}
	source := Location{File: p.file, Line: root.Line}
	var description string
	var labels map[string]string
	var expires time.Time
	if meta := top["metadata"]; meta == nil {
		p.errorf(root.Line, "missing metadata.name")
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
		if m, ok := p.fields(meta, "metadata", known...); ok {
			if n := m["name"]; n == nil {
				p.errorf(resolve(meta).Line, "missing metadata.name")
			} else if s, ok := p.scalar(n, "metadata.name"); ok {
				switch {
				case s == "":
					p.errorf(n.Line, "missing metadata.name")
				case !nameRE.MatchString(s):
					p.errorf(n.Line, "invalid metadata.name %q: must match %s", s, nameRE)
				default:
					d.name = s
					d.nameLoc = Location{File: p.file, Line: n.Line}
				}
			}
			if n := m["description"]; n != nil {
				description, _ = p.scalar(n, "metadata.description")
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
		specLine = resolve(spec).Line
	}
	switch kind {
	case "role":
		r := p.roleSpec(spec)
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
		t := p.tokenSpec(spec, specLine, d)
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
	m, _ := p.fields(spec, "spec", "allow", "deny", "options")
	if allow := m["allow"]; allow != nil {
		a, _ := p.fields(allow, "spec.allow", "logins", "host_names", "node_labels", "host_labels",
			"kubernetes_labels", "kubernetes_groups", "kubernetes_users")
		p.roleKubernetes(a, &r)
		p.roleSSHAllow(a, &r)
		if n := a["host_names"]; n != nil {
			items, _ := p.list(n, "spec.allow.host_names")
			for _, item := range items {
				s, ok := p.scalar(item, "spec.allow.host_names entry")
				if !ok {
					continue
				}
				if err := checkHostName(s); err != nil {
					p.errorf(item.Line, "invalid host name %q in spec.allow.host_names: %v", s, err)
					continue
				}
				r.HostNames = append(r.HostNames, s)
			}
		}
		if n := a["logins"]; n != nil {
			items, _ := p.list(n, "spec.allow.logins")
			for _, item := range items {
				s, ok := p.scalar(item, "spec.allow.logins entry")
				if !ok {
					continue
				}
				if err := checkLogin(s, true); err != nil {
					p.errorf(item.Line, "invalid login %q in spec.allow.logins: %v", s, err)
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
		o, _ := p.fields(options, "spec.options", "max_ttl", "forward_agent")
		if n := o["forward_agent"]; n != nil {
			r.ForwardAgent, _ = p.boolean(n, "spec.options.forward_agent")
		}
		if n := o["max_ttl"]; n != nil {
			if s, ok := p.scalar(n, "spec.options.max_ttl"); ok {
				ttl, err := time.ParseDuration(s)
				switch {
				case err != nil:
					p.errorf(n.Line, "invalid spec.options.max_ttl %q: not a duration such as 1h or 30m", s)
				case ttl <= 0:
					p.errorf(n.Line, "invalid spec.options.max_ttl %q: must be positive", s)
				case ttl > MaxTTLLimit:
					p.errorf(n.Line, "invalid spec.options.max_ttl %q: must be at most 720h", s)
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
		m, specOK = p.fields(spec, "spec", "roles", "traits")
	}

	n := m["roles"]
	rolesLine := specLine
	var items []*yaml.Node
	ok := specOK
	if n != nil {
		rolesLine = resolve(n).Line
		items, ok = p.list(n, "spec.roles")
	}
	seen := make(map[string]int)
	for _, item := range items {
		s, ok := p.scalar(item, "spec.roles entry")
		if !ok {
			continue
		}
		if first, dup := seen[s]; dup {
			p.errorf(item.Line, "role %q listed twice in spec.roles (first at line %d)", s, first)
			continue
		}
		seen[s] = item.Line
		b.Roles = append(b.Roles, s)
		d.refs = append(d.refs, ref{name: s, line: item.Line})
	}
	if ok && len(items) == 0 {
		if d.name != "" {
			p.errorf(rolesLine, "bot %q has no roles (set spec.roles)", d.name)
		} else {
			p.errorf(rolesLine, "bot has no roles (set spec.roles)")
		}
	}

	if n := m["traits"]; n != nil {
		pairs, _ := p.mapping(n, "spec.traits")
		for _, kv := range pairs {
			if !traitNameRE.MatchString(kv.key) {
				p.errorf(kv.line, "invalid trait name %q: must match %s", kv.key, traitNameRE)
				continue
			}
			values, _ := p.list(kv.value, "spec.traits."+kv.key)
			var vals []string
			for _, item := range values {
				s, ok := p.scalar(item, "spec.traits."+kv.key+" entry")
				if !ok {
					continue
				}
				if err := checkLogin(s, false); err != nil {
					p.errorf(item.Line, "invalid value %q for trait %q: %v", s, kv.key, err)
					continue
				}
				vals = append(vals, s)
			}
			if b.Traits == nil {
				b.Traits = make(map[string][]string)
			}
			b.Traits[kv.key] = vals
		}
	}
	return b
}
