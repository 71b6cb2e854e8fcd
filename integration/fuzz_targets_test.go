package integration

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestFuzzTargetsInMakefile checks that make fuzz (and so make fuzz-ci,
// which CI runs) runs every fuzz target in the repository: go test -fuzz
// takes one target at a time, so each needs its own line, and a new one is
// easily left out.
func TestFuzzTargetsInMakefile(t *testing.T) {
	t.Parallel()
	root := ".."
	makefile, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	fuzzFunc := regexp.MustCompile(`(?m)^func (Fuzz\w+)\(`)
	var found int
	err = filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := e.Name()
		if e.IsDir() {
			// As ./... does: not .*, _* or testdata directories.
			if path != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata") {
				return fs.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		pkg := "./" + filepath.ToSlash(filepath.Dir(rel)) + "/"
		for _, m := range fuzzFunc.FindAllStringSubmatch(string(src), -1) {
			found++
			line := regexp.MustCompile(`-fuzz '\^` + m[1] + `\$\$' .*` + regexp.QuoteMeta(pkg) + `\s*$`)
			if !matchesLine(line, string(makefile)) {
				t.Errorf("make fuzz does not run %s in %s; add it to the Makefile's fuzz target", m[1], pkg)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if found == 0 {
		t.Fatal("found no fuzz targets; the walk is wrong")
	}
}

func matchesLine(re *regexp.Regexp, text string) bool {
	for _, l := range strings.Split(text, "\n") {
		if re.MatchString(l) {
			return true
		}
	}
	return false
}
