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
	"syscall"
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
// Older files are compressed, and not read. A path.1 that is not a
// regular file, such as a symbolic link, is not one logrotate made, and
// is left out.
func Files(path string) []string {
	var out []string
	if fi, err := os.Lstat(path + ".1"); err == nil && fi.Mode().IsRegular() {
		out = append(out, path+".1")
	}
	return append(out, path)
}

// MaxLine bounds the length of a line that Search reads as a record. The
// issuer's records are far shorter (each value is at most MaxValue); a
// longer line is skipped, and counted, without being held in memory.
const MaxLine = 1 << 20

// Entry is a record read back from the log: the line as it was written,
// without its newline, and its fields.
type Entry struct {
	Line   []byte
	Fields map[string]any
}

// Search reads the files in order and calls fn with each record that f
// selects, in the order they were written. A file that does not exist is
// skipped, unless it is the last (the log itself). Each but the last must
// be a regular file, not read through a symbolic link; the last, which
// the caller named, may also be a pipe (/dev/stdin) or a link. Lines that
// are not JSON objects, such as one a full disk cut short, or longer than
// MaxLine, are skipped and counted. An error from fn stops the search and
// is returned.
func Search(files []string, f Filter, fn func(Entry) error) (skipped int, err error) {
	for i, name := range files {
		last := i == len(files)-1
		file, err := openLog(name, last)
		if errors.Is(err, fs.ErrNotExist) && !last {
			continue
		}
		if err != nil {
			return skipped, err
		}
		n, err := search(file, f, fn)
		file.Close()
		skipped += n
		if err != nil {
			return skipped, fmt.Errorf("audit log %s: %w", name, err)
		}
	}
	return skipped, nil
}

// openLog opens the file name for reading. It does not wait for a FIFO's
// writer: one without is read as empty. Unless named is set it neither
// follows a symbolic link nor takes anything but a regular file.
func openLog(name string, named bool) (*os.File, error) {
	flags := os.O_RDONLY | syscall.O_NONBLOCK
	if !named {
		flags |= syscall.O_NOFOLLOW
	}
	file, err := os.OpenFile(name, flags, 0)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("audit log %s: is a symbolic link, which logrotate does not make", name)
	}
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	fi, err := file.Stat()
	if err == nil && (fi.IsDir() || !named && !fi.Mode().IsRegular()) {
		err = fmt.Errorf("audit log %s: is a %s, not a regular file", name, typeName(fi.Mode().Type()))
	}
	if err != nil {
		file.Close()
		return nil, err
	}
	return file, nil
}

func search(r io.Reader, f Filter, fn func(Entry) error) (skipped int, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var line []byte
	long := false // the line is past MaxLine: skip the rest of it
	for {
		chunk, rerr := br.ReadSlice('\n')
		if !long {
			line = append(line, chunk...)
			if len(line) > MaxLine+1 {
				long, line = true, line[:0]
			}
		}
		if rerr == bufio.ErrBufferFull {
			continue
		}
		switch {
		case long:
			skipped++
		case len(bytes.TrimSpace(line)) > 0:
			line = bytes.TrimSuffix(line, []byte("\n"))
			var rec map[string]any
			if json.Unmarshal(line, &rec) != nil || rec == nil {
				skipped++
			} else if f.Match(rec) {
				if err := fn(Entry{Line: bytes.Clone(line), Fields: rec}); err != nil {
					return skipped, err
				}
			}
		}
		line, long = line[:0], false
		if rerr == io.EOF {
			return skipped, nil
		}
		if rerr != nil {
			return skipped, rerr
		}
	}
}
