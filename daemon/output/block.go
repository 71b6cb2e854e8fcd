package output

import (
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/mwi-project/mwi/internal/yamlfile"
)

// A Block is one entry of the outputs list of mwid's configuration, which
// the kind its type names parses and validates. The configuration reader
// supplies the file and the means to report errors at its lines, so that
// every kind's messages read alike: "FILE:LINE: outputs.N.FIELD: ...".
type Block struct {
	// Path is the block's dotted path in the file: outputs.N.
	Path string
	// Node is the block as read.
	Node *yaml.Node
	// Earlier are the outputs of the blocks before this one, so that a
	// kind can refuse two outputs that write one place.
	Earlier []Output
	// File is the configuration file, which records the errors of
	// decoding the block.
	File *yamlfile.File
	// Errorf records an error about the value at path (dotted keys from
	// the file's root), at its line.
	Errorf func(path, format string, args ...any)
	// Abs makes a path in the block absolute, relative to the file's
	// directory.
	Abs func(string) string

	fields []yamlfile.Pair // the block's fields, as Parse read them
}

// Parse returns the output of the block b, or nil after recording why
// there is none.
func Parse(b *Block) Output {
	n := yamlfile.Resolve(b.Node)
	if n.Kind != yaml.MappingNode {
		b.Errorf(b.Path, "want a mapping with a type (%s)", typeList())
		return nil
	}
	b.Node = n
	b.fields, _ = b.File.Mapping(n, b.Path)
	var typ string
	for _, f := range b.fields {
		if t := yamlfile.Resolve(f.Value); f.Key == "type" && t.Kind == yaml.ScalarNode {
			typ = t.Value
		}
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
	// The kind decodes the block without its type, which Parse read, and
	// without the fields of other kinds, which are misplaced rather than
	// unknown.
	own := blockFields(dst)
	n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: b.Node.Line, Column: b.Node.Column}
	for _, f := range b.fields {
		if f.Key == "type" {
			continue
		}
		if !slices.Contains(own, f.Key) {
			types := slices.DeleteFunc(slices.Clone(fieldTypes[f.Key]), func(t string) bool { return t == typ })
			if len(types) > 0 {
				misplaced(f.Key, types)
				continue
			}
		}
		key := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: f.Key, Line: f.Line}
		n.Content = append(n.Content, key, f.Value)
	}
	b.File.Decode(n, b.Path, dst)
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
