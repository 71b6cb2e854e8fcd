package unixsock

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mwi-project/mwi/internal/safefs"
)

// nobody is the uid and gid of a user other than the test's.
const nobody = 65534

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root, to give a directory or a socket to another user")
	}
}

// owner returns the mode and group of the file at path, not following a link.
func owner(t *testing.T, path string) (os.FileMode, uint32, uint64) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fi.Mode(), st.Gid, st.Ino
}

func dial(path string) error {
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err == nil {
		c.Close()
	}
	return err
}

func TestListen(t *testing.T) {
	requireRoot(t)
	dir := filepath.Join(t.TempDir(), "run", "mwi")
	path := filepath.Join(dir, "agent.sock")
	ln, err := ListenGroup(path, 0o660, nobody)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o755&^umask() {
		t.Errorf("socket directory: %v, %v; want it made with mode 0755", fi.Mode(), err)
	}
	mode, gid, _ := owner(t, path)
	if mode.Type() != os.ModeSocket || mode.Perm() != 0o660 || gid != nobody {
		t.Errorf("socket mode %v group %d, want a socket with mode 0660 and group %d", mode, gid, nobody)
	}
	if got := ln.Addr().String(); got != path {
		t.Errorf("Addr() = %q, want %q", got, path)
	}
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	if err := dial(path); err != nil {
		t.Fatalf("dial: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("socket directory holds %d entries, want only the socket", len(entries))
	}
	ln.Close()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Close left the socket: %v", err)
	}
}

func umask() os.FileMode {
	m := syscall.Umask(0)
	syscall.Umask(m)
	return os.FileMode(m)
}

func TestListenStaleAndLive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "api.sock")
	// A socket left by a process that died.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	ln, err := Listen(path, 0o600)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	defer ln.Close()
	if _, err := Listen(path, 0o600); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("Listen over a live socket: %v", err)
	}
	if err := dial(path); err != nil {
		t.Errorf("the live socket was disturbed: %v", err)
	}
}

// TestListenNeverFollowsLinkAtPath plants a link at the socket's path to a
// root-only file: Listen refuses, and the file keeps its mode and group.
func TestListenNeverFollowsLinkAtPath(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "shadow")
	if err := os.WriteFile(target, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, gid0, _ := owner(t, target)
	path := filepath.Join(dir, "agent.sock")
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	_, err := ListenGroup(path, 0o666, nobody)
	if err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Listen on a symlink: %v", err)
	}
	if mode, gid, _ := owner(t, target); mode.Perm() != 0o600 || gid != gid0 {
		t.Errorf("the link's target changed to mode %v group %d", mode, gid)
	}
}

// TestListenRefusesUnsafeDirectory: a socket directory with a link in its
// path, owned by another user or writable by others is refused with an
// error naming it, and nothing is made there.
func TestListenRefusesUnsafeDirectory(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name   string
		setup  func(t *testing.T, base string) // the socket is base/run/mwi/agent.sock
		unsafe string                          // relative to base
		reason string
	}{
		{"link to the socket directory", func(t *testing.T, b string) {
			os.Mkdir(b+"/elsewhere", 0o755)
			os.Symlink(b+"/elsewhere", b+"/run/mwi")
		}, "run/mwi", "symbolic link"},
		{"link above it", func(t *testing.T, b string) {
			os.MkdirAll(b+"/elsewhere/mwi", 0o755)
			os.Remove(b + "/run")
			os.Symlink(b+"/elsewhere", b+"/run")
		}, "run", "symbolic link"},
		{"owned by another user", func(t *testing.T, b string) {
			os.Mkdir(b+"/run/mwi", 0o755)
			os.Chown(b+"/run/mwi", nobody, nobody)
		}, "run/mwi", "owned by uid 65534"},
		{"parent owned by another user", func(t *testing.T, b string) {
			os.Chown(b+"/run", nobody, nobody)
		}, "run", "owned by uid 65534"},
		{"writable by its group", func(t *testing.T, b string) {
			os.Mkdir(b+"/run/mwi", 0o755)
			os.Chmod(b+"/run/mwi", 0o775)
		}, "run/mwi", "mode 0775"},
		{"shared like /tmp", func(t *testing.T, b string) {
			os.Mkdir(b+"/run/mwi", 0o755)
			os.Chmod(b+"/run/mwi", 0o777|os.ModeSticky)
		}, "run/mwi", "mode 1777"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			if err := os.Mkdir(base+"/run", 0o755); err != nil {
				t.Fatal(err)
			}
			tt.setup(t, base)
			path := filepath.Join(base, "run", "mwi", "agent.sock")
			ln, err := ListenGroup(path, 0o660, nobody)
			if err == nil {
				ln.Close()
			}
			var ue *safefs.UnsafeError
			want := filepath.Join(base, tt.unsafe)
			if !errors.As(err, &ue) || ue.Path != want || !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("error %v; want a refusal of %s saying %q", err, want, tt.reason)
			}
			filepath.Walk(base, func(p string, fi os.FileInfo, err error) error {
				if err == nil && fi.Mode().Type() == os.ModeSocket {
					t.Errorf("a socket was made at %s", p)
				}
				return nil
			})
		})
	}
}

// TestReplace changes a live socket's mode and group: the path always
// holds a socket, the new one has the new mode and group, and closing the
// old listener leaves the new socket in place.
func TestReplace(t *testing.T) {
	requireRoot(t)
	path := filepath.Join(t.TempDir(), "agent.sock")
	old, err := Listen(path, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	_, _, oldIno := owner(t, path)
	ln, err := Replace(path, 0o660, nobody)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	mode, gid, ino := owner(t, path)
	if mode.Type() != os.ModeSocket || mode.Perm() != 0o660 || gid != nobody || ino == oldIno {
		t.Errorf("after Replace: mode %v group %d, same file %v; want a new socket with mode 0660 and group %d", mode, gid, ino == oldIno, nobody)
	}
	old.Close()
	if _, _, after := owner(t, path); after != ino {
		t.Fatal("closing the replaced listener removed the new socket")
	}
	accepted := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Close()
		}
		accepted <- err
	}()
	if err := dial(path); err != nil {
		t.Fatal(err)
	}
	if err := <-accepted; err != nil {
		t.Fatalf("the new listener did not accept: %v", err)
	}
	// Replace takes only a socket's place.
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	if _, err := Replace(file, 0o660, -1); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Replace of a regular file: %v", err)
	}
}

// TestListenRace runs Listen over and over while another goroutine keeps
// putting a link to a root-only 0600 file at the socket's path and taking
// it away. Whatever the interleaving, the file keeps its mode and group:
// the socket's mode and group are never set through the path.
func TestListenRace(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	target := filepath.Join(dir, "shadow")
	if err := os.WriteFile(target, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "agent.sock")
	tmp := filepath.Join(dir, "link")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			os.Symlink(target, tmp)
			os.Rename(tmp, path)
			os.Remove(path)
		}
	}()
	var listened int
	for range 2000 {
		ln, err := ListenGroup(path, 0o666, nobody)
		if err == nil {
			listened++
			ln.Close()
		}
	}
	close(stop)
	wg.Wait()
	mode, gid, _ := owner(t, target)
	if mode.Perm() != 0o600 || gid != 0 {
		t.Fatalf("the link's target changed to mode %v group %d", mode, gid)
	}
	t.Logf("%d of 2000 attempts listened", listened)
}
