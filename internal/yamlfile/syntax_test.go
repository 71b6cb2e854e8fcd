package yamlfile

import (
	"regexp"
	"strconv"
	"testing"

	"go.yaml.in/yaml/v3"
)

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func TestCorrectLine(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		want      int
	}{
		{"sequence", "a: 1\nz: 2\nb: [x, y\nc: 2\nd: 3\n", 3},
		{"sequence at the end", "a: 1\nb: [x, y\n", 2},
		{"sequence over two lines", "a: 1\nz: 2\nb: [x,\n  y\nc: 2\n", 3},
		{"mapping", "a: 1\nb: {x: 1\nc: 2\n", 2},
		{"in a list", "a: 1\nb:\n  - [x, y\n  - c\n", 3},
		{"on the first line", "b: [x, y\nc: 2\n", 1},
		{"mapping on the first line", "issuer: {addr: x\n  pin: y\nc: 2\n", 1},
		{"other errors are left alone", "a: 1\nz:\n  b: 1\n c: 2\nd: 3\n", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var n yaml.Node
			err := yaml.Unmarshal([]byte(tc.doc), &n)
			if err == nil {
				t.Fatal("no error")
			}
			m := yamlLineRE.FindStringSubmatch(err.Error())
			if m == nil {
				t.Fatalf("error %q names no line", err)
			}
			reported, _ := strconv.Atoi(m[1])
			if got := correctLine([]byte(tc.doc), reported, m[2]); got != tc.want {
				t.Errorf("%q: line %d (yaml.v3 said %d), want %d", err, got, reported, tc.want)
			}
		})
	}
}
