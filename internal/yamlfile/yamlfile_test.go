package yamlfile_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/mwi-project/mwi/internal/yamlfile"
)

// config is a file format with every kind of field Decode supports.
type config struct {
	Version string            `yaml:"version"`
	Server  *server           `yaml:"server"`
	Hosts   []host            `yaml:"hosts"`
	Labels  map[string]string `yaml:"labels"`
	Debug   bool              `yaml:"debug"`
	Port    int               `yaml:"port"`
	Extra   []yaml.Node       `yaml:"extra"`
}

type server struct {
	Address string   `yaml:"address"`
	Pins    []string `yaml:"pins"`
}

type host struct {
	Name  string   `yaml:"name"`
	Names []string `yaml:"names"`
}

// errs returns the errors of f as strings.
func errs(f *yamlfile.File) []string {
	var out []string
	for _, err := range f.Errors() {
		out = append(out, err.Error())
	}
	return out
}

// TestDecode: every problem of a file is reported as FILE:LINE: with the
// path of the value, and what has no problem is decoded.
func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		merge     bool
		want      []string
	}{
		{"valid", "version: v1\nserver: {address: a:1, pins: [x]}\nhosts:\n  - name: h\n    names: [a, b]\nlabels: {env: prod}\ndebug: true\nport: 80\nextra: [1, {a: b}]\n", false, nil},
		{"null values", "version:\nserver:\nhosts:\nlabels:\n", false, nil},
		{"unknown field", "version: v1\nbogus: 1\n", false,
			[]string{`f.yaml:2: unknown field "bogus" (want version, server, hosts, labels, debug, port, extra)`}},
		{"unknown nested field", "server:\n  address: a:1\n  pin: x\n", false,
			[]string{`f.yaml:3: unknown field "pin" in server (want address, pins)`}},
		{"unknown field in a list", "hosts:\n  - name: a\n  - name: b\n    nmae: c\n", false,
			[]string{`f.yaml:4: unknown field "nmae" in hosts.1 (want name, names)`}},
		{"duplicate key", "version: v1\nserver:\n  address: a\n  address: b\n", false,
			[]string{`f.yaml:4: duplicate field "address" in server (first at line 3)`}},
		{"duplicate top-level key", "version: v1\nversion: v2\n", false,
			[]string{`f.yaml:2: duplicate field "version" in the document (first at line 1)`}},
		{"list for a string", "version: [v1]\n", false,
			[]string{`f.yaml:1: version must be a string, not a list`}},
		{"string for a list", "hosts:\n  - names: a\n", false,
			[]string{`f.yaml:2: hosts.0.names must be a list, not the value "a"`}},
		{"list for a mapping", "server: [a]\n", false,
			[]string{`f.yaml:1: server must be a mapping, not a list`}},
		{"not a boolean", "debug: maybe\n", false,
			[]string{`f.yaml:1: debug must be true or false, not the value "maybe"`}},
		{"yes is not a boolean", "debug: yes\n", false,
			[]string{`f.yaml:1: debug must be true or false, not the value "yes"`}},
		{"quoted boolean", "debug: \"true\"\n", false,
			[]string{`f.yaml:1: debug must be true or false, not the value "true"`}},
		{"null boolean and number", "debug:\nport: ~\n", false, nil},
		{"not an integer", "port: 1.5\n", false,
			[]string{`f.yaml:1: port must be an integer, not the value "1.5"`}},
		{"integer too large", "port: 99999999999999999999\n", false,
			[]string{`f.yaml:1: port must be an integer, not the value "99999999999999999999"`}},
		{"hexadecimal integer", "port: 0x50\n", false, nil},
		{"not a number", "port: \"80\"\n", false,
			[]string{`f.yaml:1: port must be an integer, not the value "80"`}},
		{"mapping in a map value", "labels:\n  env: {a: b}\n", false,
			[]string{`f.yaml:2: labels.env must be a string, not a mapping`}},
		{"root not a mapping", "- a\n", false,
			[]string{`f.yaml:1: the document must be a mapping, not a list`}},
		{"every problem", "bogus: 1\nserver:\n  pins: x\nhosts:\n  - name: [a]\n", false, []string{
			`f.yaml:1: unknown field "bogus"`,
			`f.yaml:3: server.pins must be a list, not the value "x"`,
			`f.yaml:5: hosts.0.name must be a string, not a list`,
		}},
		{"merge key", "server:\n  <<: {address: a, pins: [x]}\n  pins: [y]\n", true, nil},
		{"merge key without Merge", "server:\n  <<: {address: a}\n", false,
			[]string{`f.yaml:2: merge keys (<<) are not supported in server`}},
		{"merged unknown field", "server:\n  <<: {adress: a}\n", true,
			[]string{`f.yaml:2: unknown field "adress" in server (want address, pins)`}},
		{"alias checked where used", "hosts:\n  - &h {name: a, bad: 1}\n  - *h\n", false, []string{
			`f.yaml:2: unknown field "bad" in hosts.0 (want name, names)`,
			`f.yaml:2: unknown field "bad" in hosts.1 (want name, names)`,
		}},
		{"merged twice, reported once", "a: &a {name: x, bad: 1}\nhosts:\n  - <<: *a\n    <<: *a\n", true,
			[]string{`f.yaml:1: unknown field "a"`, `f.yaml:1: unknown field "bad" in hosts.0 (want name, names)`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := yamlfile.New("f.yaml", []byte(tc.doc))
			f.Merge = tc.merge
			docs := f.Documents()
			if len(docs) != 1 {
				t.Fatalf("%d documents, errors %q", len(docs), errs(f))
			}
			var c config
			f.Decode(docs[0], "", &c)
			got := errs(f)
			if len(got) != len(tc.want) {
				t.Fatalf("errors %q, want %q", got, tc.want)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tc.want[i]) {
					t.Errorf("error %d = %q, want %q", i, got[i], tc.want[i])
				}
			}
		})
	}
}

func TestDecodeValues(t *testing.T) {
	doc := "version: v1\nserver:\n  <<: &s {address: a:1, pins: [x]}\n  pins: [y]\nhosts:\n  - name: h\n    names: [a, 2]\nlabels: {env: prod}\ndebug: true\nport: 80\nextra: [1, {a: b}]\n"
	f := yamlfile.New("f.yaml", []byte(doc))
	f.Merge = true
	var c config
	f.Decode(f.Documents()[0], "", &c)
	if err := f.Err(); err != nil {
		t.Fatal(err)
	}
	if c.Version != "v1" || c.Server == nil || c.Server.Address != "a:1" || !slices.Equal(c.Server.Pins, []string{"y"}) ||
		len(c.Hosts) != 1 || c.Hosts[0].Name != "h" || !slices.Equal(c.Hosts[0].Names, []string{"a", "2"}) ||
		c.Labels["env"] != "prod" || !c.Debug || c.Port != 80 || len(c.Extra) != 2 || c.Extra[1].Kind != yaml.MappingNode {
		t.Errorf("decoded %+v", c)
	}

	// A null leaves a pointer nil, and an empty mapping does not.
	for doc, want := range map[string]bool{"server:\n": false, "server: {}\n": true} {
		f := yamlfile.New("f.yaml", []byte(doc))
		var c config
		f.Decode(f.Documents()[0], "", &c)
		if (c.Server != nil) != want || f.Err() != nil {
			t.Errorf("%q: server %v, error %v", doc, c.Server, f.Err())
		}
	}
}

// TestDocuments: syntax errors are reported at the line to fix, after the
// documents before them.
func TestDocuments(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		docs      int
		want      string
	}{
		{"empty", "", 0, ""},
		{"several", "a: 1\n---\nb: 2\n---\n", 2, ""},
		{"empty documents are left out", "---\n---\na: 1\n---\n~\n", 1, ""},
		{"unclosed bracket", "a: 1\nb: [x, y\nc: 2\n", 0, `f.yaml:2: invalid YAML: did not find expected ',' or ']'`},
		{"unclosed brace on the first line", "a: {x: 1\nc: 2\n", 0, `f.yaml:1: invalid YAML: did not find expected ',' or '}'`},
		{"error in the second document", "a: 1\n---\nb: [\n", 1, `f.yaml:3: invalid YAML: did not find expected node content`},
		{"control character", "a: 1\nb: \x01\n", 0, `f.yaml:2: invalid YAML: control characters are not allowed`},
		{"unknown anchor", "a: 1\nb: *x\n", 0, `f.yaml:2: invalid YAML: unknown anchor 'x' referenced`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := yamlfile.New("f.yaml", []byte(tc.doc))
			docs := f.Documents()
			got := errs(f)
			if len(docs) != tc.docs {
				t.Errorf("%d documents, want %d", len(docs), tc.docs)
			}
			if tc.want == "" && len(got) > 0 || tc.want != "" && (len(got) != 1 || got[0] != tc.want) {
				t.Errorf("errors %q, want %q", got, tc.want)
			}
		})
	}
}

// TestLine: errors found after decoding are reported at the value's line,
// or at its parent's when the value is missing.
func TestLine(t *testing.T) {
	doc := "version: v1\nserver:\n  address: a\nhosts:\n  - name: a\n  - name: b\n    names: [x]\nalias: *b\n"
	doc = strings.Replace(doc, "  - name: b", "  - &b\n    name: b", 1)
	f := yamlfile.New("f.yaml", []byte(doc))
	root := f.Documents()[0]
	if err := f.Err(); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]int{
		"":                 1,
		"version":          1,
		"server.address":   3,
		"server.pins":      3,
		"hosts.1.names":    8,
		"hosts.1.names.0":  8,
		"hosts.7":          5,
		"missing.deep":     1,
		"alias.name":       7,
		"version.whatever": 1,
	} {
		if got := yamlfile.Line(root, path); got != want {
			t.Errorf("Line(%q) = %d, want %d", path, got, want)
		}
	}
}

// TestErrors: errors come in the order of their lines, each once, and an
// error about the whole file names no line.
func TestErrors(t *testing.T) {
	f := yamlfile.New("f.yaml", nil)
	f.Errorf(3, "c")
	f.Errorf(1, "a")
	f.Errorf(3, "c")
	f.Errorf(0, "the file is empty")
	got := errs(f)
	want := []string{"f.yaml: the file is empty", "f.yaml:1: a", "f.yaml:3: c"}
	if !slices.Equal(got, want) {
		t.Errorf("errors %q, want %q", got, want)
	}
	if err := yamlfile.New("g.yaml", nil).Err(); err != nil {
		t.Errorf("no errors: Err = %v", err)
	}
}

// TestDecodeUnsupported: a type Decode cannot fill is an error, not a
// panic.
func TestDecodeUnsupported(t *testing.T) {
	f := yamlfile.New("f.yaml", []byte("a: 1\nb: {x: 1}\n"))
	root := f.Documents()[0]
	var v struct {
		A any
		B map[int]string
	}
	f.Decode(root, "", &v)
	f.Decode(root, "", v)
	want := []string{
		"f.yaml:1: a: cannot decode into interface {}",
		"f.yaml:1: the document: cannot decode into struct { A interface {}; B map[int]string }, not a non-nil pointer",
		"f.yaml:2: b: cannot decode into map[int]string",
	}
	if got := errs(f); !slices.Equal(got, want) {
		t.Errorf("errors %q, want %q", got, want)
	}
}

// TestDecodeAliasBomb: aliases that name a list many times over are
// refused, not decoded without end.
func TestDecodeAliasBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("a: &a [x, x, x, x, x, x, x, x, x, x]\n")
	prev := "a"
	for _, name := range []string{"b", "c", "d", "e", "f", "g"} {
		b.WriteString(name + ": &" + name + " [")
		for i := range 10 {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("*" + prev)
		}
		b.WriteString("]\n")
		prev = name
	}
	f := yamlfile.New("f.yaml", []byte(b.String()))
	var v struct {
		A []string
		B [][]string
		C [][][]string
		D [][][][]string
		E [][][][][]string
		F [][][][][][]string
		G [][][][][][][]string
	}
	f.Decode(f.Documents()[0], "", &v)
	if err := f.Err(); err == nil || !strings.Contains(err.Error(), "f.yaml: the file names too many values through aliases") {
		t.Errorf("error %v", err)
	}
}

// TestMergeBomb: merge keys that merge each other many times over are
// refused, not resolved without end.
func TestMergeBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("a: &a {x: 1, y: 2}\n")
	prev := "a"
	for i := range 12 {
		name := fmt.Sprintf("m%d", i)
		b.WriteString(name + ": &" + name + " {<<: [")
		for j := range 10 {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString("*" + prev)
		}
		b.WriteString("]}\n")
		prev = name
	}
	f := yamlfile.New("f.yaml", []byte(b.String()))
	f.Merge = true
	var v map[string]map[string]string
	f.Decode(f.Documents()[0], "", &v)
	if err := f.Err(); err == nil || !strings.Contains(err.Error(), "f.yaml: the file names too many values through aliases") {
		t.Errorf("error %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte("version: v1\nserver: {address: a:1, pins: [x]}\nhosts:\n  - name: h\n    names: [a, b]\nlabels: {env: prod}\ndebug: true\nport: 80\nextra: [1, {a: b}]\n"))
	f.Add([]byte("server:\n  <<: &s {address: a}\n  pins: [y]\nhosts: [*s]\n"))
	f.Add([]byte("a: [\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		yf := yamlfile.New("f.yaml", data)
		yf.Merge = true
		for _, doc := range yf.Documents() {
			var c config
			yf.Decode(doc, "", &c)
			for _, err := range yf.Errors() {
				if !strings.HasPrefix(err.Error(), "f.yaml:") {
					t.Errorf("error %q does not name the file", err)
				}
			}
		}
	})
}
