// Package watch calls a function when a file or a directory of files
// changes content.
//
// It watches the directory, not the file: editors save by writing a new file
// and renaming it over the old one, and Kubernetes updates a ConfigMap
// volume by swapping a "..data" symbolic link, so a watch on the file itself
// would be lost at the first save. Events are debounced, and a change is
// reported only when the content read through the path differs from the
// last content reported, so a touch or a rewrite with the same bytes
// triggers nothing.
package watch

import (
	"context"
	"crypto/sha256"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Debounce is how long the directory must be quiet before its content is
// compared; it covers the burst of events of one save.
const Debounce = 150 * time.Millisecond

// Run watches target, a file or a directory, until ctx is done, and calls
// changed after its content changes. For a directory, the content is that
// of every file directly in it. changed runs on Run's goroutine, one call
// at a time.
func Run(ctx context.Context, target string, log *slog.Logger, changed func()) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
	dir := target
	if fi, err := os.Stat(target); err != nil || !fi.IsDir() {
		dir = filepath.Dir(target)
	}
	if err := w.Add(dir); err != nil {
		return err
	}
	last := digest(target)
	var timer <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			log.Warn("file watch error", "path", target, "err", err)
		case _, ok := <-w.Events:
			if !ok {
				return nil
			}
			timer = time.After(Debounce)
		case <-timer:
			timer = nil
			d := digest(target)
			if slices.Equal(d, last) {
				continue
			}
			last = d
			changed()
		}
	}
}

// digest hashes the content behind target, following symbolic links. An
// unreadable file hashes to nil, so that it becoming readable again counts
// as a change.
func digest(target string) []byte {
	h := sha256.New()
	fi, err := os.Stat(target)
	if err != nil {
		return nil
	}
	if !fi.IsDir() {
		data, err := os.ReadFile(target)
		if err != nil {
			return nil
		}
		h.Write(data)
		return h.Sum(nil)
	}
	entries, err := os.ReadDir(target)
	if err != nil {
		return nil
	}
	for _, e := range entries {
		if e.Type()&fs.ModeType != 0 && e.Type()&fs.ModeSymlink == 0 {
			continue
		}
		data, err := os.ReadFile(filepath.Join(target, e.Name()))
		if err != nil {
			continue
		}
		h.Write([]byte(e.Name()))
		h.Write([]byte{0})
		h.Write(data)
		h.Write([]byte{0})
	}
	return h.Sum(nil)
}
