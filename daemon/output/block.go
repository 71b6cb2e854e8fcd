package output

import (
	"fmt"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// A Block is one entry of the outputs list of mwid's configuration, which
// the kind its type names parses and validates. The configuration reader
// supplies the means to report errors at the file's lines, so that every
// kind's messages read alike: "FILE:LINE: outputs.N.FIELD: ...".
type Block struct {
	// Path is the block's dotted path in the file: outputs.N.
	Path string
	// Node is the block as read.
	Node *yaml.Node
	// Earlier are the outputs of the blocks before this one, so that a
	// kind can refuse two outputs that write one place.
	Earlier []Output
	// Errorf records an error about the value at path (dotted keys from
	// the file's root), at its line.
	Errorf func(path, format string, args ...any)
	// DecodeError records an error of yaml.v3 about the block, whose
	// message names its line.
	DecodeError func(error)
	// Abs makes a path in the block absolute, relative to the file's
	// directory.
	Abs func(string) string
}

// Parse returns the output of the block b, or nil after recording why
// there is none.
func Parse(b *Block) Output {
	n := b.Node
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind != yaml.MappingNode {
		b.Errorf(b.Path, "want a mapping with a type (%s)", typeList())
		return nil
	}
	b.Node = n
	var typ string
	if t := mappingValue(n, "type"); t != nil && t.Kind == yaml.ScalarNode {
		typ = t.Value
	}
	if typ == "" {
		b.Errorf(b.Path+".type", "required (%s)", typeList())
		return nil
	}
	i := slices.IndexFunc(kinds, func(k kind) bool { return k.typ == typ })
	if i < 0 {
		b.Errorf(b.Path+".type", "unknown output type %q (want %s)", typ, typeList())
		return nil
	}
	return kinds[i].parse(b)
}

// typeList lists the output types: "ssh_host, kubernetes or identity".
func typeList() string {
	types := make([]string, len(kinds))
	for i, k := range kinds {
		types[i] = k.typ
	}
	return strings.Join(types[:len(types)-1], ", ") + " or " + types[len(types)-1]
}

// mappingValue returns the value of key in the mapping n, or nil.
func mappingValue(n *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// decode decodes the block of an output of type typ into dst, a pointer
// to the kind's block struct. A field of other kinds is refused by
// misplaced(field, their types), or, if misplaced is nil, as "is for
// outputs of type OTHER, not TYP"; a field of no kind is unknown.
func (b *Block) decode(typ string, dst any, misplaced func(field string, types []string)) {
	if misplaced == nil {
		misplaced = func(field string, types []string) {
			b.Errorf(b.Path+"."+field, "is for outputs of type %s, not %s", strings.Join(types, " or "), typ)
		}
	}
	own := blockFields(dst)
	for i := 0; i+1 < len(b.Node.Content); i += 2 {
		key := b.Node.Content[i]
		if key.Value == "type" || key.Tag == "!!merge" || slices.Contains(own, key.Value) {
			continue // a merge key (<<) is yaml.v3's to resolve
		}
		types := slices.DeleteFunc(slices.Clone(fieldTypes[key.Value]), func(t string) bool { return t == typ })
		if len(types) == 0 {
			// As yaml.v3 says it of an unknown field, which the
			// configuration reader rewrites for people.
			b.DecodeError(&yaml.TypeError{Errors: []string{
				fmt.Sprintf("line %d: field %s not found in type %T", key.Line, key.Value, dst)}})
			continue
		}
		misplaced(key.Value, types)
	}
	if err := b.Node.Decode(dst); err != nil {
		b.DecodeError(err)
	}
}

// fieldTypes lists, for each field of an output block, the types of
// output that take it. It is made from kinds at init, since the kinds'
// parsers refer to it.
var fieldTypes = map[string][]string{}

func init() {
	for _, k := range kinds {
		for _, f := range blockFields(k.block) {
			fieldTypes[f] = append(fieldTypes[f], k.typ)
		}
	}
}

// blockFields returns the YAML field names of a block struct, or of the
// struct a pointer points to.
func blockFields(block any) []string {
	t := reflect.TypeOf(block)
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var names []string
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		names = append(names, name)
	}
	return names
}
