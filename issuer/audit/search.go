package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"
)

// Filter selects records of the audit log. Its zero fields select every
// record.
type Filter struct {
	// Since selects records written at or after it.
	Since time.Time
	// Event selects the records of an event by its name, or of every
	// event whose name starts with it if it ends in ".", such as "token.".
	Event    string
	Outcome  string
	Code     string
	Bot      string
	Instance string
}

// Match reports whether the record rec, a line of the log decoded, is one
// that f selects.
func (f Filter) Match(rec map[string]any) bool {
	str := func(key string) string { s, _ := rec[key].(string); return s }
	switch {
	case f.Event != "" && str("event") != f.Event && !(strings.HasSuffix(f.Event, ".") && strings.HasPrefix(str("event"), f.Event)):
		return false
	case f.Outcome != "" && str("outcome") != f.Outcome,
		f.Code != "" && str("code") != f.Code,
		f.Bot != "" && str("bot") != f.Bot,
		f.Instance != "" && str("instance") != f.Instance:
		return false
	}
	if !f.Since.IsZero() {
		t, err := time.Parse(time.RFC3339Nano, str("time"))
		if err != nil || t.Before(f.Since) {
			return false
		}
	}
	return true
}

// Files returns the files that hold the log written to path, oldest first:
// the file logrotate renamed it to (path.1), if there is one, and path.
// Older files are compressed, and not read.
func Files(path string) []string {
	var out []string
	if fi, err := os.Stat(path + ".1"); err == nil && fi.Mode().IsRegular() {
		out = append(out, path+".1")
	}
	return append(out, path)
}

// Entry is a record read back from the log: the line as it was written,
// without its newline, and its fields.
type Entry struct {
	Line   []byte
	Fields map[string]any
}

// Search reads the files in order and calls fn with each record that f
// selects, in the order they were written. A file that does not exist is
// skipped, unless it is the last (the log itself). Lines that are not
// JSON objects, such as one a full disk cut short, are skipped and
// counted. An error from fn stops the search and is returned.
func Search(files []string, f Filter, fn func(Entry) error) (skipped int, err error) {
	for i, name := range files {
		file, err := os.Open(name)
		if errors.Is(err, fs.ErrNotExist) && i < len(files)-1 {
			continue
		}
		if err != nil {
			return skipped, fmt.Errorf("audit log: %w", err)
		}
		n, err := search(file, f, fn)
		file.Close()
		skipped += n
		if err != nil {
			return skipped, err
		}
	}
	return skipped, nil
}

func search(r io.Reader, f Filter, fn func(Entry) error) (skipped int, err error) {
	br := bufio.NewReader(r)
	for {
		line, rerr := br.ReadBytes('\n')
		line = bytes.TrimSuffix(line, []byte("\n"))
		if len(bytes.TrimSpace(line)) > 0 {
			var rec map[string]any
			if json.Unmarshal(line, &rec) != nil {
				skipped++
			} else if f.Match(rec) {
				if err := fn(Entry{Line: line, Fields: rec}); err != nil {
					return skipped, err
				}
			}
		}
		if rerr == io.EOF {
			return skipped, nil
		}
		if rerr != nil {
			return skipped, fmt.Errorf("audit log: %w", rerr)
		}
	}
}
