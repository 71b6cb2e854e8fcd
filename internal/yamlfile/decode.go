package yamlfile

import (
	"fmt"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

var nodeType = reflect.TypeFor[yaml.Node]()

// maxDecoded returns how many nodes Decode may visit in the file f. Aliases
// let a small file name a node many times over, and each time is decoded,
// as yaml.v3 does; past the bound the file is refused, as yaml.v3 refuses
// "excessive aliasing". A file without aliases, which has fewer nodes
// than bytes, never reaches it.
func (f *File) maxDecoded() int {
	return 1<<16 + 2*len(f.Data)
}

// Decode decodes n into the value v points to, and records every problem
// on the way at its line: a field that v's struct does not have, a key
// given twice, a value of the wrong kind. Messages name the value by its
// path, which is path, the dotted path of n from the document's root (""
// for the root), extended by field names and list indexes:
// "outputs.0.names". What has no problem is decoded, so that one pass
// reports every problem of the node.
//
// A struct field is named by its yaml tag ("-" leaves it out), or by its
// name in lower case. A field of type yaml.Node keeps its value undecoded,
// for the caller to read; a pointer stays nil for a null value. Decode
// supports structs, pointers, slices, maps with string keys, strings,
// booleans and numbers; another type in v is recorded as an error.
func (f *File) Decode(n *yaml.Node, path string, v any) {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		f.Errorf(n.Line, "%s: cannot decode into %T, not a non-nil pointer", name(path), v)
		return
	}
	f.decode(n, path, rv.Elem())
}

func (f *File) decode(n *yaml.Node, path string, v reflect.Value) {
	f.decoded++
	if f.decoded > f.maxDecoded() {
		f.Errorf(0, "the file names too many values through aliases (more than %d)", f.maxDecoded())
		return
	}
	if v.Type() == nodeType {
		v.Set(reflect.ValueOf(*n))
		return
	}
	n = Resolve(n)
	switch v.Kind() {
	case reflect.Pointer:
		if IsNull(n) {
			return
		}
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		f.decode(n, path, v.Elem())
	case reflect.Struct:
		names, index := structFields(v.Type())
		m, ok := f.Fields(n, path, names...)
		if !ok {
			return
		}
		for i, field := range names {
			if c := m[field]; c != nil {
				f.decode(c, join(path, field), v.Field(index[i]))
			}
		}
	case reflect.Slice:
		items, ok := f.List(n, path)
		if !ok || items == nil {
			return
		}
		s := reflect.MakeSlice(v.Type(), len(items), len(items))
		for i, item := range items {
			f.decode(item, join(path, fmt.Sprint(i)), s.Index(i))
		}
		v.Set(s)
	case reflect.Map:
		if v.Type().Key().Kind() != reflect.String {
			f.Errorf(n.Line, "%s: cannot decode into %s", name(path), v.Type())
			return
		}
		pairs, ok := f.Mapping(n, path)
		if !ok || IsNull(n) {
			return
		}
		m := reflect.MakeMapWithSize(v.Type(), len(pairs))
		for _, p := range pairs {
			e := reflect.New(v.Type().Elem()).Elem()
			f.decode(p.Value, join(path, p.Key), e)
			m.SetMapIndex(reflect.ValueOf(p.Key).Convert(v.Type().Key()), e)
		}
		v.Set(m)
	case reflect.String:
		if s, ok := f.Scalar(n, path); ok {
			v.SetString(s)
		}
	case reflect.Bool:
		if b, ok := f.Bool(n, path); ok {
			v.SetBool(b)
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		f.number(n, path, v)
	default:
		f.Errorf(n.Line, "%s: cannot decode into %s", name(path), v.Type())
	}
}

// number decodes the scalar n into v, a number. An integer field takes an
// integer that fits, not 1.5, which yaml.v3 would cut to 1; a quoted "1"
// is a string. A null is zero.
func (f *File) number(n *yaml.Node, path string, v reflect.Value) {
	if IsNull(n) {
		return
	}
	var x any
	if n.Kind == yaml.ScalarNode && (n.ShortTag() == "!!int" || n.ShortTag() == "!!float") {
		if n.Decode(&x) != nil {
			x = nil
		}
	}
	ok, want := false, "an integer"
	switch k := v.Kind(); {
	case k >= reflect.Int && k <= reflect.Int64:
		var i int64
		switch x := x.(type) {
		case int:
			i, ok = int64(x), true
		case int64:
			i, ok = x, true
		}
		if ok = ok && !v.OverflowInt(i); ok {
			v.SetInt(i)
		}
	case k >= reflect.Uint && k <= reflect.Uint64:
		var u uint64
		switch x := x.(type) {
		case int:
			u, ok = uint64(x), x >= 0
		case int64:
			u, ok = uint64(x), x >= 0
		case uint64:
			u, ok = x, true
		}
		if ok = ok && !v.OverflowUint(u); ok {
			v.SetUint(u)
		}
	default: // a float
		want = "a number"
		var g float64
		switch x := x.(type) {
		case int:
			g, ok = float64(x), true
		case int64:
			g, ok = float64(x), true
		case uint64:
			g, ok = float64(x), true
		case float64:
			g, ok = x, true
		}
		if ok = ok && !v.OverflowFloat(g); ok {
			v.SetFloat(g)
		}
	}
	if !ok {
		f.Errorf(n.Line, "%s must be %s, not %s", name(path), want, Describe(n))
	}
}

// structFields returns the YAML names of the fields of the struct type t,
// in order, and their indexes in t. A field with the tag "-" or that is
// not exported is not in the YAML form.
func structFields(t reflect.Type) (names []string, index []int) {
	for i := range t.NumField() {
		sf := t.Field(i)
		tag, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if !sf.IsExported() || tag == "-" {
			continue
		}
		if tag == "" {
			tag = strings.ToLower(sf.Name)
		}
		names = append(names, tag)
		index = append(index, i)
	}
	return names, index
}

// join extends path by key.
func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
