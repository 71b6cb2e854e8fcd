// Package yamlfile reads YAML files strictly and reports every problem in
// one as "FILE:LINE: message".
//
// A File holds a file's bytes and the problems found in it. Documents
// parses the file into nodes and records a syntax error at the line to fix,
// which go.yaml.in/yaml/v3 does not always name. The checked accessors
// Mapping, Fields, List, Scalar and Bool read one node each, for code that
// walks a document itself; Decode walks a node into a Go value by the yaml
// tags of its structs, through the same accessors. Either way an unknown field, a key
// given twice or a value of the wrong kind is an error that names the
// value's path and line, never ignored, and reading goes on, so that one
// pass reports every problem of the file. Line finds the line of a path
// again, for errors found once the file is decoded.
package yamlfile

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"slices"

	"go.yaml.in/yaml/v3"
)

// A File is a YAML file being read, and the problems found in it.
type File struct {
	// Name names the file in errors.
	Name string
	// Data is the file's content.
	Data []byte
	// Merge makes a mapping take the entries of its merge keys (<<), as
	// YAML 1.1 defines them; without it a merge key is an error.
	Merge bool

	errs []problem
	seen map[Error]bool // the errors in errs that Errorf made

	decoded int // the nodes Decode visited, to bound aliasing
}

// A problem is one recorded error and the line it sorts by.
type problem struct {
	line int
	err  error
}

// An Error is a problem at a line of a file.
type Error struct {
	File string
	Line int // 0 for a problem with the file as a whole
	Msg  string
}

func (e *Error) Error() string {
	if e.Line <= 0 {
		return e.File + ": " + e.Msg
	}
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
}

// New returns a File for data, which was read from the file name.
func New(name string, data []byte) *File {
	return &File{Name: name, Data: data}
}

// Errorf records an error at line, or about the whole file if line is 0.
// An error recorded already is not recorded again: a node that aliases or
// merge keys name more than once is read, and checked, each time.
func (f *File) Errorf(line int, format string, args ...any) {
	e := Error{File: f.Name, Line: line, Msg: fmt.Sprintf(format, args...)}
	if f.seen[e] {
		return
	}
	if f.seen == nil {
		f.seen = make(map[Error]bool)
	}
	f.seen[e] = true
	f.errs = append(f.errs, problem{line, &e})
}

// Fail records err, which names the file itself, such as an error of
// os.ReadFile.
func (f *File) Fail(err error) {
	f.errs = append(f.errs, problem{0, err})
}

// Err returns the recorded errors in the order of their lines, joined, or
// nil if there are none.
func (f *File) Err() error {
	return errors.Join(f.Errors()...)
}

// Errors returns the recorded errors in the order of their lines.
func (f *File) Errors() []error {
	slices.SortStableFunc(f.errs, func(a, b problem) int { return cmp.Compare(a.line, b.line) })
	errs := make([]error, len(f.errs))
	for i, p := range f.errs {
		errs[i] = p.err
	}
	return errs
}

// Documents returns the root node of each document of the file, in order;
// an empty document, or one that is only null, is left out. A syntax error is
// recorded, as "invalid YAML: ...", and ends the reading: the documents
// before it are returned.
func (f *File) Documents() []*yaml.Node {
	dec := yaml.NewDecoder(bytes.NewReader(f.Data))
	var docs []*yaml.Node
	for {
		var doc yaml.Node
		err := decode(dec, &doc)
		if err == io.EOF {
			return docs
		}
		if err != nil {
			f.syntaxError(err)
			return docs
		}
		if len(doc.Content) > 0 && !IsNull(doc.Content[0]) {
			docs = append(docs, doc.Content[0])
		}
	}
}

// decode is dec.Decode, with a panic in the YAML decoder turned into an
// error so that a malformed file cannot bring the program down.
func decode(dec *yaml.Decoder, n *yaml.Node) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml: internal error: %v", r)
		}
	}()
	return dec.Decode(n)
}
