package yamlfile

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Resolve returns the node that n stands for, following an alias.
func Resolve(n *yaml.Node) *yaml.Node {
	if n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		return n.Alias
	}
	return n
}

// IsNull reports whether n is a null scalar: "~", "null" or nothing.
func IsNull(n *yaml.Node) bool {
	n = Resolve(n)
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// Describe names the kind of node n, for error messages: "a mapping", "a
// list" or, for a scalar, "the value \"x\"".
func Describe(n *yaml.Node) string {
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

// name is path as the subject of a message: the document's root has no
// path.
func name(path string) string {
	if path == "" {
		return "the document"
	}
	return path
}

// A Pair is a key and value of a YAML mapping.
type Pair struct {
	Key   string
	Line  int // the line of the key
	Value *yaml.Node
}

// Mapping returns the entries of the mapping n, which path names in
// errors. A null n is an empty mapping. If n is not a mapping, Mapping
// records an error and returns ok == false. An entry whose key is not a
// string or repeats an earlier key is recorded as an error and left out.
// The entries of merge keys follow those of n, if f.Merge allows them.
func (f *File) Mapping(n *yaml.Node, path string) (pairs []Pair, ok bool) {
	n = Resolve(n)
	if IsNull(n) {
		return nil, true
	}
	if n.Kind != yaml.MappingNode {
		f.Errorf(n.Line, "%s must be a mapping, not %s", name(path), Describe(n))
		return nil, false
	}
	seen := make(map[string]int)
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := Resolve(n.Content[i])
		switch {
		case k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge":
			if !f.Merge {
				f.Errorf(k.Line, "merge keys (<<) are not supported in %s", name(path))
			} else {
				merges = append(merges, n.Content[i+1])
			}
			continue
		case k.Kind != yaml.ScalarNode:
			f.Errorf(k.Line, "keys of %s must be strings, not %s", name(path), Describe(k))
			continue
		}
		if first, dup := seen[k.Value]; dup {
			f.Errorf(k.Line, "duplicate field %q in %s (first at line %d)", k.Value, name(path), first)
			continue
		}
		seen[k.Value] = k.Line
		pairs = append(pairs, Pair{Key: k.Value, Line: k.Line, Value: n.Content[i+1]})
	}
	for _, m := range merges {
		pairs = f.merge(pairs, seen, m, path)
	}
	return pairs, true
}

// merge appends to pairs the entries of the value m of a merge key, a
// mapping or a list of mappings, whose keys are not in seen: as YAML 1.1
// says, the mapping's own keys and those of earlier merged mappings win.
func (f *File) merge(pairs []Pair, seen map[string]int, m *yaml.Node, path string) []Pair {
	m = Resolve(m)
	sources := []*yaml.Node{m}
	if m.Kind == yaml.SequenceNode {
		sources = m.Content
	}
	for _, s := range sources {
		s = Resolve(s)
		// Merged mappings may merge others in turn: bound the work as
		// Decode bounds aliases.
		f.decoded += 1 + len(s.Content)/2
		if f.decoded > f.maxDecoded() {
			f.Errorf(0, "the file names too many values through aliases (more than %d)", f.maxDecoded())
			return pairs
		}
		if s.Kind != yaml.MappingNode {
			f.Errorf(s.Line, "a merge key (<<) in %s must name a mapping or a list of mappings, not %s", name(path), Describe(s))
			continue
		}
		more, _ := f.Mapping(s, path)
		for _, p := range more {
			if _, ok := seen[p.Key]; !ok {
				seen[p.Key] = p.Line
				pairs = append(pairs, p)
			}
		}
	}
	return pairs
}

// Fields returns the values of the mapping n by key, as Mapping does, and
// records an error for each key not in known. It returns ok == false if n
// is not a mapping.
func (f *File) Fields(n *yaml.Node, path string, known ...string) (map[string]*yaml.Node, bool) {
	pairs, ok := f.Mapping(n, path)
	if !ok {
		return nil, false
	}
	m := make(map[string]*yaml.Node, len(pairs))
	for _, kv := range pairs {
		if !slices.Contains(known, kv.Key) {
			in := ""
			if path != "" {
				in = " in " + path
			}
			f.Errorf(kv.Line, "unknown field %q%s (want %s)", kv.Key, in, strings.Join(known, ", "))
			continue
		}
		m[kv.Key] = kv.Value
	}
	return m, true
}

// List returns the items of the sequence n, aliases resolved, which path
// names in errors. A null n is an empty list. If n is not a sequence, List
// records an error and returns ok == false.
func (f *File) List(n *yaml.Node, path string) (items []*yaml.Node, ok bool) {
	n = Resolve(n)
	if IsNull(n) {
		return nil, true
	}
	if n.Kind != yaml.SequenceNode {
		f.Errorf(n.Line, "%s must be a list, not %s", name(path), Describe(n))
		return nil, false
	}
	items = make([]*yaml.Node, len(n.Content))
	for i, c := range n.Content {
		items[i] = Resolve(c)
	}
	return items, true
}

// Scalar returns the text of the scalar n, which path names in errors: a
// string, or a number, boolean or time as written. A null is the empty
// string. If n is not such a scalar, Scalar records an error and returns
// ok == false.
func (f *File) Scalar(n *yaml.Node, path string) (s string, ok bool) {
	n = Resolve(n)
	if n.Kind != yaml.ScalarNode {
		f.Errorf(n.Line, "%s must be a string, not %s", name(path), Describe(n))
		return "", false
	}
	switch tag := n.ShortTag(); tag {
	case "!!null":
		return "", true
	case "!!str", "!!int", "!!float", "!!bool", "!!timestamp":
		return n.Value, true
	default:
		f.Errorf(n.Line, "%s has unsupported tag %s", name(path), tag)
		return "", false
	}
}

// Bool returns the boolean n, true or false, which path names in errors.
// A null is false. If n is not a boolean, Bool records an error and returns
// ok == false: "yes" and "on" are strings, as YAML 1.2 reads them.
func (f *File) Bool(n *yaml.Node, path string) (b, ok bool) {
	n = Resolve(n)
	if n.Kind == yaml.ScalarNode {
		switch n.ShortTag() {
		case "!!null":
			return false, true
		case "!!bool":
			if b, err := strconv.ParseBool(n.Value); err == nil {
				return b, true
			}
		}
	}
	f.Errorf(n.Line, "%s must be true or false, not %s", name(path), Describe(n))
	return false, false
}

// KeyLine returns the line of key in the mapping n, or n's line if n has
// no such key.
func KeyLine(n *yaml.Node, key string) int {
	n = Resolve(n)
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := Resolve(n.Content[i]); k.Value == key {
			return k.Line
		}
	}
	return n.Line
}

// Line returns the line of the value at path in n, dotted keys and list
// indexes from n, as Decode names paths ("outputs.0.directory"), or the
// line of the nearest parent that exists, so that an error about a missing
// field is reported where the field belongs.
func Line(n *yaml.Node, path string) int {
	n = Resolve(n)
	line := n.Line
	if path == "" {
		return line
	}
	for _, key := range strings.Split(path, ".") {
		if i, err := strconv.Atoi(key); err == nil && n.Kind == yaml.SequenceNode {
			if i < 0 || i >= len(n.Content) {
				break
			}
			line = n.Content[i].Line
			n = Resolve(n.Content[i])
			continue
		}
		if n.Kind != yaml.MappingNode {
			break
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if Resolve(n.Content[i]).Value == key {
				next = n.Content[i+1]
				break
			}
		}
		if next == nil {
			break
		}
		// An alias is reported where it is used, and followed.
		n, line = Resolve(next), next.Line
	}
	return line
}
