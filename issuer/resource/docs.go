package resource

import (
	"bytes"
	"fmt"
	"strings"
	"time"
)

// A Doc is resource source text from outside the resource directory, such
// as a document kept in the issuer's store. Name stands for the file name
// in errors and in the Source of its resources, as in
// "store:role/deploy:3: unknown field".
type Doc struct {
	Name string
	Data []byte
}

// A Dir is the content of a resource directory, as read by ReadDirStable.
type Dir struct {
	files []file
}

// ReadDirStable reads the resource files of dir as [LoadDirStable] does,
// twice and recheck apart, without parsing them. An error wrapping
// [ErrChanging] means the files changed between the reads.
func ReadDirStable(dir string, recheck time.Duration) (*Dir, error) {
	return readDirStable(dir, func() { time.Sleep(recheck) })
}

// readDirStable is ReadDirStable with wait run between the two reads.
func readDirStable(dir string, wait func()) (*Dir, error) {
	first, err := readDir(dir)
	if err != nil {
		return nil, err
	}
	wait()
	second, err := readDir(dir)
	if err != nil {
		return nil, err
	}
	if changed := changedFiles(first, second); len(changed) > 0 {
		return nil, fmt.Errorf("%s: %w", strings.Join(changed, ", "), ErrChanging)
	}
	return &Dir{files: first}, nil
}

// Load validates the files of dir (none if dir is nil) and docs together,
// as [LoadDir] validates the files of a directory: a name defined twice
// for the same kind, anywhere, and a bot or token naming a role or bot
// that none of them defines, are errors. Errors name the file's path, or
// the Doc's Name, and the line.
func Load(dir *Dir, docs []Doc) (*Set, error) {
	var files []file
	if dir != nil {
		files = append(files, dir.files...)
	}
	for _, d := range docs {
		files = append(files, file{path: d.Name, data: d.Data})
	}
	return load(files)
}

// Document returns the text of the document that holds the line at loc in
// the directory's file loc.File, as [SplitDocuments] gives it.
func (d *Dir) Document(loc Location) (string, bool) {
	if d == nil {
		return "", false
	}
	for _, f := range d.files {
		if f.path != loc.File || f.err != nil {
			continue
		}
		docs, err := SplitDocuments(f.data)
		if err != nil {
			return "", false
		}
		text, found := "", false
		for _, doc := range docs {
			if doc.Line <= loc.Line {
				text, found = doc.Text, true
			}
		}
		return text, found
	}
	return "", false
}

// A Document is the text of one YAML document of a file, and the line of
// the file it starts at.
type Document struct {
	Line int
	Text string
}

// SplitDocuments splits data at its document markers ("---" and "..." at
// the start of a line), as YAML does: a marker at the start of a line ends
// a document wherever it is, even in a quoted string. Each document's text
// loses its leading and trailing blank lines and ends in one newline;
// documents with nothing else are left out. Joining the texts with
// "---\n" and splitting the result again gives the same texts.
//
// A marker followed by more than a comment on its own line is an error:
// the text after it belongs to no line of its own.
func SplitDocuments(data []byte) ([]Document, error) {
	var docs []Document
	var cur []string
	start := 1
	flush := func() {
		for len(cur) > 0 && strings.TrimSpace(cur[0]) == "" {
			cur = cur[1:]
			start++
		}
		for len(cur) > 0 && strings.TrimSpace(cur[len(cur)-1]) == "" {
			cur = cur[:len(cur)-1]
		}
		if len(cur) > 0 {
			docs = append(docs, Document{Line: start, Text: strings.Join(cur, "\n") + "\n"})
		}
		cur = nil
	}
	lines := bytes.Split(data, []byte("\n"))
	if len(lines) > 0 && len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1]
	}
	for i, raw := range lines {
		line := strings.TrimSuffix(string(raw), "\r")
		if marker, rest, ok := documentMarker(line); ok {
			if r := strings.TrimSpace(rest); r != "" && !strings.HasPrefix(r, "#") {
				return nil, fmt.Errorf("line %d: put the document on the line after %q", i+1, marker)
			}
			flush()
			start = i + 2
			continue
		}
		cur = append(cur, line)
	}
	flush()
	return docs, nil
}

// documentMarker reports whether line starts with a document marker, and
// returns the marker and the rest of the line.
func documentMarker(line string) (marker, rest string, ok bool) {
	for _, m := range []string{"---", "..."} {
		if r, found := strings.CutPrefix(line, m); found && (r == "" || r[0] == ' ' || r[0] == '\t') {
			return m, r, true
		}
	}
	return "", "", false
}

// KindName returns the kind and the name of a resource, as its document
// gives them.
func KindName(r Resource) (kind, name string) {
	switch r := r.(type) {
	case Role:
		return "role", r.Name
	case Bot:
		return "bot", r.Name
	case KubeCluster:
		return kindKubeCluster, r.Name
	case Token:
		return kindToken, r.Name
	}
	return "", ""
}

// Kinds are the kinds of resources, in the order of [Set.All].
var Kinds = []string{"role", "bot", kindKubeCluster, kindToken}

// All returns the set's resources of the given kind (every kind if kind is
// empty), sorted by kind in the order of [Kinds], then by name.
func (s *Set) All(kind string) []Resource {
	var out []Resource
	for _, k := range Kinds {
		if kind != "" && kind != k {
			continue
		}
		switch k {
		case "role":
			for _, r := range s.Roles() {
				out = append(out, r)
			}
		case "bot":
			for _, b := range s.Bots() {
				out = append(out, b)
			}
		case kindKubeCluster:
			for _, c := range s.KubeClusters() {
				out = append(out, c)
			}
		case kindToken:
			for _, t := range s.Tokens() {
				out = append(out, t)
			}
		}
	}
	return out
}

// Source returns where the resource KIND/NAME of the set is defined, and
// reports whether the set has it.
func (s *Set) Source(kind, name string) (Location, bool) {
	var loc Location
	var ok bool
	switch kind {
	case "role":
		var r Role
		r, ok = s.roles[name]
		loc = r.Source
	case "bot":
		var b Bot
		b, ok = s.bots[name]
		loc = b.Source
	case kindKubeCluster:
		var c KubeCluster
		c, ok = s.clusters[name]
		loc = c.Source
	case kindToken:
		var t Token
		t, ok = s.tokens[name]
		loc = t.Source
	}
	return loc, ok
}
