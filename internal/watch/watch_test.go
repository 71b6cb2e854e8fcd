package watch

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// testSettle is the settle period of the tests that do not measure it.
const testSettle = 100 * time.Millisecond

// watchFor starts a Watcher on target and returns a channel that receives
// one value per reported change.
func watchFor(t *testing.T, target string) <-chan struct{} {
	t.Helper()
	ch := make(chan struct{}, 10)
	start(t, &Watcher{Target: target, Settle: testSettle, Changed: func() error { ch <- struct{}{}; return nil }})
	return ch
}

// start runs w until the test ends.
func start(t *testing.T, w *Watcher) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	w.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	go func() {
		defer close(done)
		if err := w.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	time.Sleep(50 * time.Millisecond) // let the watch start
}

func expect(t *testing.T, ch <-chan struct{}, want bool, what string) {
	t.Helper()
	select {
	case <-ch:
		if !want {
			t.Fatalf("%s: reported a change", what)
		}
	case <-time.After(4 * (Debounce + testSettle)):
		if want {
			t.Fatalf("%s: no change reported", what)
		}
	}
}

func TestFileEdits(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "mwid.yaml")
	os.WriteFile(p, []byte("a"), 0o600)
	ch := watchFor(t, p)

	os.WriteFile(p, []byte("b"), 0o600)
	expect(t, ch, true, "write in place")

	// An editor's save: write a temporary file, rename it over the target.
	tmp := filepath.Join(dir, ".mwid.yaml.swp")
	os.WriteFile(tmp, []byte("c"), 0o600)
	os.Rename(tmp, p)
	expect(t, ch, true, "rename over the file")

	os.WriteFile(p, []byte("c"), 0o600)
	expect(t, ch, false, "rewrite with the same bytes")

	os.WriteFile(filepath.Join(dir, "other"), []byte("x"), 0o600)
	expect(t, ch, false, "another file in the directory")
}

// TestConfigMapSwap plays Kubernetes' update of a ConfigMap volume: the
// file is a link through "..data", which is swapped to a new directory.
func TestConfigMapSwap(t *testing.T) {
	dir := t.TempDir()
	v1 := filepath.Join(dir, "..2026_01")
	os.Mkdir(v1, 0o755)
	os.WriteFile(filepath.Join(v1, "mwid.yaml"), []byte("one"), 0o600)
	os.Symlink("..2026_01", filepath.Join(dir, "..data"))
	p := filepath.Join(dir, "mwid.yaml")
	os.Symlink("..data/mwid.yaml", p)
	ch := watchFor(t, p)

	v2 := filepath.Join(dir, "..2026_02")
	os.Mkdir(v2, 0o755)
	os.WriteFile(filepath.Join(v2, "mwid.yaml"), []byte("two"), 0o600)
	os.Symlink("..2026_02", filepath.Join(dir, "..data_tmp"))
	os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data"))
	expect(t, ch, true, "..data swapped")
}

func TestDirectory(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "roles.yaml"), []byte("a"), 0o600)
	ch := watchFor(t, dir)
	os.WriteFile(filepath.Join(dir, "bots.yaml"), []byte("b"), 0o600)
	expect(t, ch, true, "new file")
	os.Remove(filepath.Join(dir, "bots.yaml"))
	expect(t, ch, true, "file removed")
	os.Chtimes(filepath.Join(dir, "roles.yaml"), time.Now(), time.Now())
	expect(t, ch, false, "touch")
}

// TestInPlaceRewrite rewrites a file in place in two writes, with a pause
// shorter than the settle period between them, as a person or a script
// does: the half-written content is never reported, the whole one is.
func TestInPlaceRewrite(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "tokens.yaml")
	const (
		first = "allow:\n  - repository: org/repo\n"
		rest  = "    ref: refs/heads/main\n"
	)
	if err := os.WriteFile(p, []byte(first+rest), 0o600); err != nil {
		t.Fatal(err)
	}
	seen := make(chan string, 10)
	start(t, &Watcher{Target: dir, Settle: 2 * time.Second, Changed: func() error {
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		seen <- string(data)
		return nil
	}})

	// The new content differs from the old by a repository; the first
	// write alone would be a wider rule.
	const newFirst = "allow:\n  - repository: org/other\n"
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(newFirst); err != nil {
		t.Fatal(err)
	}
	time.Sleep(600 * time.Millisecond)
	if _, err := f.WriteString(rest); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	select {
	case got := <-seen:
		if got != newFirst+rest {
			t.Fatalf("reported content %q, want the whole file %q", got, newFirst+rest)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the rewrite was not reported")
	}
	select {
	case got := <-seen:
		t.Errorf("reported again, with %q", got)
	case <-time.After(4 * (Debounce + testSettle)):
	}
}

// TestChangedError checks that content Changed did not take is offered
// again once it has settled, even though it did not change since.
func TestChangedError(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "r.yaml")
	os.WriteFile(p, []byte("a"), 0o600)
	calls := make(chan int, 10)
	n := 0
	start(t, &Watcher{Target: dir, Settle: testSettle, Changed: func() error {
		n++
		calls <- n
		if n == 1 {
			return errors.New("changed while read")
		}
		return nil
	}})
	os.WriteFile(p, []byte("b"), 0o600)
	for want := 1; want <= 2; want++ {
		select {
		case got := <-calls:
			if got != want {
				t.Fatalf("call %d, want %d", got, want)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("call %d did not come", want)
		}
	}
	select {
	case <-calls:
		t.Error("called again after the content was taken")
	case <-time.After(4 * (Debounce + testSettle)):
	}
}

// TestRecheck: another path (SIGHUP) loaded the file while it was being
// rewritten, and the file then went back to the content last reported.
// Without a recheck the watcher sees nothing new and the half-written
// content stays in use; with one, it reports the content once it settles,
// even though it is the same.
func TestRecheck(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "resources.yaml")
	os.WriteFile(p, []byte("whole"), 0o600)
	ch := make(chan struct{}, 10)
	recheck := make(chan struct{}, 1)
	start(t, &Watcher{Target: p, Settle: testSettle, Recheck: recheck, Changed: func() error { ch <- struct{}{}; return nil }})

	os.WriteFile(p, []byte("wh"), 0o600)
	recheck <- struct{}{} // SIGHUP loaded "wh"
	os.WriteFile(p, []byte("whole"), 0o600)
	expect(t, ch, true, "the file back to the content last reported, after a recheck")

	recheck <- struct{}{}
	expect(t, ch, true, "a recheck with no write")
	expect(t, ch, false, "nothing more")
}

// TestDirectorySpecialFiles puts a fifo, and a link to a device that
// never ends, in a watched directory: the watcher must not block on the
// one nor read the other forever, and goes on reporting changes.
func TestDirectorySpecialFiles(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "roles.yaml"), []byte("a"), 0o600)
	ch := watchFor(t, dir)
	fifo := filepath.Join(dir, "fifo.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// Should the watcher be blocked opening the fifo, a writer frees it,
	// so that the test ends.
	t.Cleanup(func() {
		if f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
	})
	os.Symlink("/dev/zero", filepath.Join(dir, "zero.yaml"))
	os.WriteFile(filepath.Join(dir, "roles.yaml"), []byte("b"), 0o600)
	expect(t, ch, true, "an edit beside a fifo and /dev/zero")
}
