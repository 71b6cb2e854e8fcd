package resource

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/mwi-project/mwi/internal/yamlfile"
)

// LoadDir loads and validates the resources in directory dir.
//
// LoadDir reads, in lexical order, every regular file directly in dir whose
// name ends in ".yaml" or ".yml", following symbolic links. Names starting
// with "." are skipped, so editor temporary files and the "..data"
// directories of a mounted Kubernetes ConfigMap are ignored. An empty
// directory gives an empty set.
//
// Besides the checks made by [Parse], LoadDir rejects a name defined twice
// for the same kind in different files, a bot naming a role that no file
// defines, and a token naming a bot that no file defines. If any file fails
// to read or to validate, LoadDir returns a nil set and an error, made with
// [errors.Join], that holds every problem found, each prefixed with
// "FILE:LINE: " where FILE is filepath.Join(dir, name).
//
// LoadDir reads each file once, and may read one that is being written;
// use [LoadDirStable] for a directory that may change while it is read.
func LoadDir(dir string) (*Set, error) {
	files, err := readDir(dir)
	if err != nil {
		return nil, err
	}
	return load(files)
}

// ErrChanging is wrapped by the error of [LoadDirStable] when files changed
// while they were read.
var ErrChanging = errors.New("resource files changed while they were read")

// LoadDirStable is [LoadDir] for a directory whose files may be written
// while they are read. It reads every file, waits for recheck, and reads
// them all again; only if both reads agree, byte for byte and file for
// file, does it parse what it read. Otherwise it returns a nil set and an
// error wrapping ErrChanging that names the files that changed: a file
// caught half-way through being rewritten in place may be valid and yet
// say less than the whole file, such as a token rule without its "ref"
// line, which admits more. The caller tries again later.
func LoadDirStable(dir string, recheck time.Duration) (*Set, error) {
	return loadDirStable(dir, func() { time.Sleep(recheck) })
}

// loadDirStable is LoadDirStable with wait run between the two reads.
func loadDirStable(dir string, wait func()) (*Set, error) {
	d, err := readDirStable(dir, wait)
	if err != nil {
		return nil, err
	}
	return load(d.files)
}

// A file is one resource file as read: its content, or why it could not be
// read.
type file struct {
	path string
	data []byte
	err  error
}

// readDir reads the resource files of dir, in lexical order; see LoadDir.
func readDir(dir string) ([]file, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var files []file
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") ||
			!(strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")) {
			continue
		}
		path := filepath.Join(dir, name)
		typ := e.Type()
		if typ&fs.ModeSymlink != 0 {
			fi, err := os.Stat(path)
			if err != nil {
				files = append(files, file{path: path, err: err})
				continue
			}
			typ = fi.Mode().Type()
		}
		if !typ.IsRegular() {
			continue
		}
		data, err := os.ReadFile(path)
		files = append(files, file{path: path, data: data, err: err})
	}
	return files, nil
}

// changedFiles returns the paths of the files that differ between two reads
// of a directory: added, removed, or with other content or readability.
func changedFiles(a, b []file) []string {
	byPath := make(map[string]file, len(a))
	for _, f := range a {
		byPath[f.path] = f
	}
	var changed []string
	for _, f := range b {
		old, ok := byPath[f.path]
		delete(byPath, f.path)
		if !ok || (old.err == nil) != (f.err == nil) || !bytes.Equal(old.data, f.data) {
			changed = append(changed, f.path)
		}
	}
	for path := range byPath {
		changed = append(changed, path)
	}
	slices.Sort(changed)
	return changed
}

// load parses and validates files; see LoadDir.
func load(files []file) (*Set, error) {
	l := newLoader()
	for _, f := range files {
		if f.err != nil {
			l.ioError(f.path, f.err)
			continue
		}
		l.parseFile(f.path, f.data)
	}
	l.checkRefs()
	if err := l.err(); err != nil {
		return nil, err
	}
	return l.set(), nil
}

// Parse decodes and validates the resource documents in data, which was
// read from the named file; file is used only in error messages and in the
// Source of the resources. Each element of the result is a [Role] or a
// [Bot], a [KubeCluster] or a [Token], in the order of the documents. Empty documents
// are skipped.
//
// Parse checks each document on its own and rejects a name defined twice
// for the same kind within data. It does not check that the roles a bot
// names (or the bot a token names) exist, since they may be defined in
// other files; [LoadDir] does.
// On error, Parse returns no resources and an error holding every problem
// found, each prefixed with "FILE:LINE: ".
func Parse(file string, data []byte) ([]Resource, error) {
	l := newLoader()
	docs := l.parseFile(file, data)
	if err := l.err(); err != nil {
		return nil, err
	}
	out := make([]Resource, 0, len(docs))
	for _, d := range docs {
		out = append(out, d.res)
	}
	return out, nil
}

// A loader accumulates the resources of one or more files, and the problems
// found in them.
type loader struct {
	files     []*yamlfile.File    // each with the problems found in it
	roles     map[string]*decoded // by name; the first definition
	bots      map[string]*decoded // by name; the first definition
	clusters  map[string]*decoded // kube_cluster by name; the first definition
	tokens    map[string]*decoded // token by name; the first definition
	botDocs   []*decoded          // every bot document, for checkRefs
	tokenDocs []*decoded          // every token document, for checkRefs
}

// A decoded is one resource document, with what the cross-document checks
// need to know about it.
type decoded struct {
	res     Resource // Role, Bot, KubeCluster or Token; complete only if the document had no errors
	kind    string
	name    string // "" if missing or invalid
	nameLoc Location
	file    int
	refs    []ref // a bot's roles, or a token's bot
}

// A ref is a role named by a bot.
type ref struct {
	name string
	line int
}

func newLoader() *loader {
	return &loader{
		roles:    make(map[string]*decoded),
		bots:     make(map[string]*decoded),
		clusters: make(map[string]*decoded),
		tokens:   make(map[string]*decoded),
	}
}

// ioError records that the named file could not be read.
func (l *loader) ioError(path string, err error) {
	f := yamlfile.New(path, nil)
	f.Fail(err)
	l.files = append(l.files, f)
}

// errorf records an error at line of file number idx.
func (l *loader) errorf(idx, line int, format string, args ...any) {
	l.files[idx].Errorf(line, format, args...)
}

// register adds a named document, rejecting a second definition of a name.
func (l *loader) register(d *decoded) {
	if d.name == "" {
		return
	}
	byName := l.roles
	switch d.kind {
	case "bot":
		byName = l.bots
	case kindKubeCluster:
		byName = l.clusters
	case kindToken:
		byName = l.tokens
	}
	if first, ok := byName[d.name]; ok {
		l.errorf(d.file, d.nameLoc.Line, "duplicate %s %q (first defined at %s)", d.kind, d.name, first.nameLoc)
		return
	}
	byName[d.name] = d
}

// checkRefs reports every role named by a bot, and every bot named by a
// token, that is not defined.
func (l *loader) checkRefs() {
	for _, d := range l.botDocs {
		for _, r := range d.refs {
			if _, ok := l.roles[r.name]; !ok {
				who := ""
				if d.name != "" {
					who = fmt.Sprintf("bot %q ", d.name)
				}
				l.errorf(d.file, r.line, "%sreferences unknown role %q", who, r.name)
			}
		}
	}
	for _, d := range l.tokenDocs {
		for _, r := range d.refs {
			if _, ok := l.bots[r.name]; !ok {
				who := ""
				if d.name != "" {
					who = fmt.Sprintf("token %q ", d.name)
				}
				l.errorf(d.file, r.line, "%snames unknown bot %q in spec.bot_name", who, r.name)
			}
		}
	}
}

// err returns the recorded problems, in the order of files and lines, as
// one error.
func (l *loader) err() error {
	var errs []error
	for _, f := range l.files {
		errs = append(errs, f.Errors()...)
	}
	return errors.Join(errs...)
}

// set returns the loaded resources. It must be called only if err is nil.
func (l *loader) set() *Set {
	s := &Set{
		roles: make(map[string]Role, len(l.roles)),
		bots:  make(map[string]Bot, len(l.bots)),
		files: make([]string, len(l.files)),
	}
	for i, f := range l.files {
		s.files[i] = f.Name
	}
	for name, d := range l.roles {
		s.roles[name] = d.res.(Role)
	}
	for name, d := range l.bots {
		s.bots[name] = d.res.(Bot)
	}
	s.clusters = make(map[string]KubeCluster, len(l.clusters))
	for name, d := range l.clusters {
		s.clusters[name] = d.res.(KubeCluster)
	}
	s.tokens = make(map[string]Token, len(l.tokens))
	for name, d := range l.tokens {
		s.tokens[name] = d.res.(Token)
	}
	return s
}
