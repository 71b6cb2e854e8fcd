// Package watch calls a function when a file or a directory of files
// changes content, once the content has settled.
//
// It watches the directory, not the file: editors save by writing a new file
// and renaming it over the old one, and Kubernetes updates a ConfigMap
// volume by swapping a "..data" symbolic link, so a watch on the file itself
// would be lost at the first save. A change is reported only when the
// content read through the path differs from the last content reported, so
// a touch or a rewrite with the same bytes triggers nothing (unless another
// path loaded the content meanwhile: see Watcher.Recheck).
//
// A file rewritten in place (truncated, then written in several steps) is
// not whole until its last write, and nothing in the file system says when
// that is. So a change is reported only after the content has stayed the
// same, with no event, for a settle period (Watcher.Settle): a writer
// pausing for less than that between two writes is never seen half-way.
// Writers that pause longer must replace the file instead (write a new file
// and rename it over the old one), which is atomic.
package watch

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Debounce is how long the directory must be quiet before its content is
// first looked at; it covers the burst of events of one save.
const Debounce = 150 * time.Millisecond

// DefaultSettle is how long content must stay the same, after a change,
// before Run reports it. It is longer than the pauses between the writes
// of a person or a script rewriting a file in place.
const DefaultSettle = 2 * time.Second

// A Watcher calls Changed after the content behind Target changes and then
// settles.
type Watcher struct {
	// Target is a file or a directory. For a directory, the content is
	// that of every file directly in it.
	Target string
	// Log receives watch errors; nil means slog.Default().
	Log *slog.Logger
	// Settle is how long the content must stay the same, with no event in
	// the directory, before a change is reported; zero means
	// DefaultSettle.
	Settle time.Duration
	// Changed runs on Run's goroutine, one call at a time. If it returns
	// an error, the content was not taken (it changed again while it was
	// read, say): the watcher calls Changed again once the content has
	// settled, even if it is the same.
	Changed func() error
	// Recheck, if not nil, tells the watcher that the content was loaded
	// by another path than Changed, such as SIGHUP: what is in use may
	// then differ from the content last reported, so after a receive the
	// watcher calls Changed once the content settles, even if it is the
	// same. Otherwise a file loaded half-written by that path, and then
	// completed to the content last reported, would look unchanged, and
	// the half would stay in use.
	Recheck <-chan struct{}
}

// Run watches w.Target until ctx is done.
func (w *Watcher) Run(ctx context.Context) error {
	log := w.Log
	if log == nil {
		log = slog.Default()
	}
	settle := w.Settle
	if settle <= 0 {
		settle = DefaultSettle
	}
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer fw.Close()
	dir := w.Target
	if fi, err := os.Stat(w.Target); err != nil || !fi.IsDir() {
		dir = filepath.Dir(w.Target)
	}
	if err := fw.Add(dir); err != nil {
		return err
	}
	// last is the content last reported; pending, if not nil, is content
	// seen since that has not yet stayed the same for settle.
	last := digest(w.Target)
	var pending []byte
	var timer <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case err, ok := <-fw.Errors:
			if !ok {
				return nil
			}
			log.Warn("file watch error", "path", w.Target, "err", err)
		case _, ok := <-fw.Events:
			if !ok {
				return nil
			}
			// Something is being written: whatever was pending has not
			// settled.
			pending = nil
			timer = time.After(Debounce)
		case <-w.Recheck:
			last, pending = nil, nil
			timer = time.After(Debounce)
		case <-timer:
			timer = nil
			d := digest(w.Target)
			switch {
			case slices.Equal(d, last):
				pending = nil
			case pending == nil || !slices.Equal(d, pending):
				pending = d
				timer = time.After(settle)
			default:
				// The same content settle apart, with no event between.
				pending = nil
				if err := w.Changed(); err != nil {
					log.Warn("change not taken; trying again once the content settles", "path", w.Target, "err", err)
					last = nil
					timer = time.After(settle)
					continue
				}
				last = d
			}
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
		// Only regular files, through links too: opening a fifo would
		// block until someone writes to it, and a device such as
		// /dev/zero never ends.
		p := filepath.Join(target, e.Name())
		if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
			continue
		}
		data, err := os.ReadFile(p)
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
