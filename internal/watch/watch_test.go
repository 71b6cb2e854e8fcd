package watch

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// watchFor starts Run on target and returns a channel that receives one
// value per reported change.
func watchFor(t *testing.T, target string) <-chan struct{} {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch := make(chan struct{}, 10)
	go Run(ctx, target, slog.New(slog.NewTextHandler(io.Discard, nil)), func() { ch <- struct{}{} })
	time.Sleep(50 * time.Millisecond) // let the watch start
	return ch
}

func expect(t *testing.T, ch <-chan struct{}, want bool, what string) {
	t.Helper()
	select {
	case <-ch:
		if !want {
			t.Fatalf("%s: reported a change", what)
		}
	case <-time.After(4 * Debounce):
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
