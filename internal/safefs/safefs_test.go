package safefs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// nobody is the uid (and gid) of a user other than the test's.
const nobody = 65534

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root, to give a directory to another user")
	}
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "cert")
	for _, tc := range []struct {
		content string
		mode    os.FileMode
	}{{"one", 0o644}, {"two", 0o600}} {
		if err := WriteFile(p, []byte(tc.content), tc.mode); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(p)
		fi, _ := os.Stat(p)
		if string(got) != tc.content || fi.Mode().Perm() != tc.mode {
			t.Fatalf("after writing %q: content %q mode %v", tc.content, got, fi.Mode())
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("directory holds %d entries, want no temporary file left", len(entries))
	}
}

func TestWriteFileRelative(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	if err := WriteFile("kubeconfig", []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "kubeconfig")); err != nil || string(got) != "x" {
		t.Fatalf("relative write: %q, %v", got, err)
	}
}

func TestWriteFileRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	os.WriteFile(target, []byte("keep"), 0o600)
	link := filepath.Join(dir, "link")
	os.Symlink(target, link)
	err := WriteFile(link, []byte("evil"), 0o644)
	var ue *UnsafeError
	if !errors.As(err, &ue) || ue.Path != link || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("Write through a symlink: %v", err)
	}
	if got, _ := os.ReadFile(target); string(got) != "keep" {
		t.Fatalf("target changed to %q", got)
	}
}

func TestWriteFileBadName(t *testing.T) {
	d, err := OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, name := range []string{"", ".", "..", "a/b", "../x"} {
		if err := d.WriteFile(name, nil, 0o600); err == nil {
			t.Errorf("WriteFile(%q) succeeded", name)
		}
	}
}

// TestWriteNewFile checks that WriteNewFile creates a file and never
// replaces or writes through what is already at its name.
func TestWriteNewFile(t *testing.T) {
	dir := t.TempDir()
	d, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.WriteNewFile("ca.key", []byte("key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "ca.key")); string(got) != "key" {
		t.Errorf("ca.key holds %q", got)
	}
	if fi, _ := os.Lstat(filepath.Join(dir, "ca.key")); fi == nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
		t.Errorf("ca.key: %v; want a regular file with mode 0600", fi)
	}

	target := filepath.Join(dir, "target")
	for _, tc := range []struct {
		name    string
		prepare func(path string)
	}{
		{"existing file", func(path string) {}}, // ca.key from above
		{"link to a file", func(path string) {
			os.WriteFile(target, []byte("keep"), 0o600)
			os.Symlink(target, path)
		}},
		{"link to nowhere", func(path string) { os.Symlink(filepath.Join(dir, "nowhere"), path) }},
		{"directory", func(path string) { os.Mkdir(path, 0o700) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "ca.key"
			if tc.name != "existing file" {
				name = strings.ReplaceAll(tc.name, " ", "-")
			}
			path := filepath.Join(dir, name)
			tc.prepare(path)
			before, _ := os.Lstat(path)
			err := d.WriteNewFile(name, []byte("evil"), 0o644)
			if !errors.Is(err, os.ErrExist) || !strings.Contains(err.Error(), path) {
				t.Fatalf("WriteNewFile over %s = %v; want an error naming it that wraps fs.ErrExist", tc.name, err)
			}
			if after, _ := os.Lstat(path); after == nil || !os.SameFile(before, after) || after.Mode() != before.Mode() {
				t.Errorf("%s was replaced or changed", path)
			}
		})
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "ca.key")); string(got) != "key" {
		t.Errorf("ca.key changed to %q", got)
	}
	if got, _ := os.ReadFile(target); string(got) != "keep" {
		t.Errorf("a link's target changed to %q", got)
	}
	if _, err := os.Lstat(filepath.Join(dir, "nowhere")); err == nil {
		t.Error("a link to nowhere was written through")
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
	if err := d.WriteNewFile("a/b", nil, 0o600); err == nil {
		t.Error("WriteNewFile(a/b) succeeded")
	}
}

// TestWriteFiles checks that WriteFiles replaces every file, and none if
// one of them cannot be written or is a symbolic link.
func TestWriteFiles(t *testing.T) {
	dir := t.TempDir()
	d, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	read := func(name string) string {
		data, _ := os.ReadFile(filepath.Join(dir, name))
		return string(data)
	}
	if err := d.WriteFiles(File{"tls.key", []byte("key 1"), 0o600}, File{"tls.crt", []byte("crt 1"), 0o644}); err != nil {
		t.Fatal(err)
	}
	old, _ := os.Lstat(filepath.Join(dir, "tls.key"))
	if err := d.WriteFiles(File{"tls.key", []byte("key 2"), 0o600}, File{"tls.crt", []byte("crt 2"), 0o644}); err != nil {
		t.Fatal(err)
	}
	if read("tls.key") != "key 2" || read("tls.crt") != "crt 2" {
		t.Errorf("after the second write: %q, %q", read("tls.key"), read("tls.crt"))
	}
	// Replaced by a rename, not written in place: a reader holding the
	// old file still reads it whole.
	if now, _ := os.Lstat(filepath.Join(dir, "tls.key")); os.SameFile(old, now) {
		t.Error("tls.key was written in place")
	}
	if fi, _ := os.Stat(filepath.Join(dir, "tls.crt")); fi.Mode().Perm() != 0o644 {
		t.Errorf("tls.crt mode = %v, want 0644", fi.Mode().Perm())
	}

	// The temporary file of a name this long cannot be created.
	long := strings.Repeat("x", 250)
	if err := d.WriteFiles(File{"tls.key", []byte("key 3"), 0o600}, File{long, nil, 0o600}); err == nil {
		t.Fatal("WriteFiles with an unwritable file succeeded")
	}
	os.Symlink(filepath.Join(dir, "elsewhere"), filepath.Join(dir, "tls.crt.link"))
	err = d.WriteFiles(File{"tls.key", []byte("key 3"), 0o600}, File{"tls.crt.link", []byte("crt 3"), 0o644})
	var ue *UnsafeError
	if !errors.As(err, &ue) {
		t.Fatalf("WriteFiles with a link = %v; want an UnsafeError", err)
	}
	if read("tls.key") != "key 2" {
		t.Errorf("a failed WriteFiles replaced tls.key with %q", read("tls.key"))
	}
	if _, err := os.Lstat(filepath.Join(dir, "elsewhere")); err == nil {
		t.Error("WriteFiles wrote through a link")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 {
		t.Errorf("directory holds %d entries, want tls.key, tls.crt and the link, no temporary file", len(entries))
	}
}

func TestMkdirAll(t *testing.T) {
	base := t.TempDir()
	path := filepath.Join(base, "a", "b", "c")
	d, err := MkdirAll(path, 0o700)
	if err != nil {
		t.Fatal(err)
	}
	if d.Path() != path {
		t.Errorf("Path() = %q, want %q", d.Path(), path)
	}
	if err := d.WriteFile("key", []byte("k"), 0o600); err != nil {
		t.Fatal(err)
	}
	d.Close()
	for _, p := range []string{filepath.Join(base, "a"), filepath.Join(base, "a", "b"), path} {
		fi, err := os.Lstat(p)
		if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v, %v; want a directory with mode 0700", p, fi.Mode(), err)
		}
	}
	if got, _ := os.ReadFile(filepath.Join(path, "key")); string(got) != "k" {
		t.Errorf("key holds %q", got)
	}
	// Opening it again finds it, and keeps its mode until Chmod.
	os.Chmod(path, 0o755)
	d, err = MkdirAll(path, 0o700)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o755 {
		t.Errorf("MkdirAll of an existing directory changed its mode to %v", fi.Mode().Perm())
	}
	if err := d.Chmod(0o700); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o700 {
		t.Errorf("after Chmod(0700): mode %v", fi.Mode().Perm())
	}
}

func TestOpenDirMissing(t *testing.T) {
	p := filepath.Join(t.TempDir(), "missing", "dir")
	_, err := OpenDir(p)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), filepath.Dir(p)) {
		t.Fatalf("OpenDir of a missing directory: %v", err)
	}
	if _, err := os.Lstat(filepath.Dir(p)); err == nil {
		t.Error("OpenDir created a directory")
	}
}

// TestSymlinkInAnyComponent plants a symbolic link, to a directory only
// root may use, at each component of an output path in turn: every one is
// refused with an error naming it, and nothing is written where it points.
func TestSymlinkInAnyComponent(t *testing.T) {
	for _, create := range []bool{false, true} {
		for i, component := range []string{"a", "a/b", "a/b/out"} {
			// Each link points where the component would lead.
			base := t.TempDir()
			secret := filepath.Join(base, "secret")
			if err := os.MkdirAll(filepath.Join(secret, "b", "out"), 0o700); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(base, "a", "b", "out")
			if err := os.MkdirAll(out, 0o700); err != nil {
				t.Fatal(err)
			}
			link := filepath.Join(base, component)
			os.RemoveAll(link)
			target := []string{secret, filepath.Join(secret, "b"), filepath.Join(secret, "b", "out")}[i]
			if err := os.Symlink(target, link); err != nil {
				t.Fatal(err)
			}
			var err error
			if create {
				var d *Dir
				if d, err = MkdirAll(filepath.Join(out, "new"), 0o700); err == nil {
					err = d.WriteFile("key", []byte("k"), 0o600)
					d.Close()
				}
			} else {
				err = WriteFile(filepath.Join(out, "key"), []byte("k"), 0o600)
			}
			var ue *UnsafeError
			if !errors.As(err, &ue) || ue.Path != link || !strings.Contains(err.Error(), "symbolic link") {
				t.Errorf("link at %s (create %v): %v; want a refusal naming %s", component, create, err, link)
			}
			filepath.Walk(secret, func(p string, fi os.FileInfo, err error) error {
				if err == nil && (!fi.IsDir() || fi.Name() == "new") {
					t.Errorf("link at %s (create %v): %s was written through it", component, create, p)
				}
				return nil
			})
		}
	}
}

// TestOwnershipAndMode checks the rules on owners and modes, for the
// directory written in and for the directories above it.
func TestOwnershipAndMode(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name   string
		setup  func(base string) // base/a/out is written in
		unsafe string            // the directory refused, relative to base; "" for accepted
		reason string
	}{
		{"private", func(string) {}, "", ""},
		{"output directory owned by another user", func(b string) { chown(t, b+"/a/out", nobody) }, "a/out", "owned by uid 65534"},
		{"parent owned by another user", func(b string) { chown(t, b+"/a", nobody) }, "a", "owned by uid 65534"},
		{"output directory writable by its group", func(b string) { chmod(t, b+"/a/out", 0o770) }, "a/out", "mode 0770"},
		{"output directory writable by others", func(b string) { chmod(t, b+"/a/out", 0o757) }, "a/out", "writable by users other than its owner"},
		{"output directory shared like /tmp", func(b string) { chmod(t, b+"/a/out", 0o1777) }, "a/out", "accepted only above"},
		{"parent writable by others", func(b string) { chmod(t, b+"/a", 0o777) }, "a", "mode 0777"},
		{"parent shared like /tmp", func(b string) { chmod(t, b+"/a", 0o1777) }, "", ""},
		{"parent shared but not owned by root", func(b string) { chmod(t, b+"/a", 0o1777); chown(t, b+"/a", nobody) }, "a", "owned by uid 65534"},
		{"parent read-only to others", func(b string) { chmod(t, b+"/a", 0o755) }, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			out := filepath.Join(base, "a", "out")
			if err := os.MkdirAll(out, 0o700); err != nil {
				t.Fatal(err)
			}
			tt.setup(base)
			err := WriteFile(filepath.Join(out, "key"), []byte("k"), 0o600)
			if tt.unsafe == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var ue *UnsafeError
			want := filepath.Join(base, tt.unsafe)
			if !errors.As(err, &ue) || ue.Path != want || !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("error %v; want a refusal of %s saying %q", err, want, tt.reason)
			}
			if _, err := os.Lstat(filepath.Join(out, "key")); err == nil {
				t.Error("the file was written anyway")
			}
		})
	}
}

// TestMkdirAllRefusesForeignDirectory: a directory that another user
// made where MkdirAll would have made its own is refused, not used.
func TestMkdirAllRefusesForeignDirectory(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	chmod(t, base, 0o1777)
	planted := filepath.Join(base, "out")
	if err := os.Mkdir(planted, 0o700); err != nil {
		t.Fatal(err)
	}
	chown(t, planted, nobody)
	_, err := MkdirAll(filepath.Join(planted, "sub"), 0o700)
	var ue *UnsafeError
	if !errors.As(err, &ue) || ue.Path != planted {
		t.Fatalf("MkdirAll under a directory owned by nobody: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(planted, "sub")); err == nil {
		t.Error("MkdirAll created a directory in it")
	}
}

// TestMkdirAllUmask: a directory made here is checked like the one
// written in, so a umask that leaves it writable by others is refused.
func TestMkdirAllUmask(t *testing.T) {
	base := t.TempDir()
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	_, err := MkdirAll(filepath.Join(base, "wide", "out"), 0o777)
	var ue *UnsafeError
	if !errors.As(err, &ue) || ue.Path != filepath.Join(base, "wide") {
		t.Fatalf("MkdirAll with mode 0777 and umask 0: %v", err)
	}
}

// TestMkdirAllExact: directories for other users to enter get their mode
// whatever the umask, and are checked as MkdirAll's are.
func TestMkdirAllExact(t *testing.T) {
	base := t.TempDir()
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	d, err := MkdirAllExact(filepath.Join(base, "var", "ssh"), 0o755)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	for _, p := range []string{filepath.Join(base, "var"), filepath.Join(base, "var", "ssh")} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("%s: %v, %v; want mode 0755 under umask 0077", p, fi, err)
		}
	}
	d, err = MkdirAll(filepath.Join(base, "private"), 0o755)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	if fi, _ := os.Stat(filepath.Join(base, "private")); fi.Mode().Perm() != 0o700 {
		t.Errorf("MkdirAll under umask 0077 made mode %v; want the umask applied", fi.Mode().Perm())
	}
	_, err = MkdirAllExact(filepath.Join(base, "wide"), 0o777)
	var ue *UnsafeError
	if !errors.As(err, &ue) {
		t.Errorf("MkdirAllExact with mode 0777: %v", err)
	}
}

func chown(t *testing.T, path string, uid int) {
	t.Helper()
	if err := os.Chown(path, uid, uid); err != nil {
		t.Fatal(err)
	}
}

func chmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	// os.Chmod takes the sticky bit as os.ModeSticky.
	m := mode.Perm()
	if mode&0o1000 != 0 {
		m |= os.ModeSticky
	}
	if err := os.Chmod(path, m); err != nil {
		t.Fatal(err)
	}
}

// TestReadFile reads a file whose content is trusted, such as a host key
// that the issuer certifies: only one that root or this process's user
// wrote, through no link, in a directory no one else controls.
func TestReadFile(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name   string
		setup  func(dir, file string)
		reason string // "" for read
	}{
		{"root's", func(string, string) {}, ""},
		{"a symbolic link", func(dir, file string) {
			os.WriteFile(file+".real", []byte("k"), 0o644)
			os.Remove(file)
			os.Symlink(file+".real", file)
		}, "symbolic link"},
		{"owned by another user", func(dir, file string) { chown(t, file, nobody) }, "owned by uid 65534"},
		{"writable by others", func(dir, file string) { chmod(t, file, 0o646) }, "writable by users other than its owner"},
		{"in a directory owned by another user", func(dir, file string) { chown(t, dir, nobody) }, "owned by uid 65534"},
		{"in a directory others can write", func(dir, file string) { chmod(t, dir, 0o1777) }, "accepted only above"},
		{"a fifo", func(dir, file string) {
			os.Remove(file)
			if err := syscall.Mkfifo(file, 0o644); err != nil {
				t.Fatal(err)
			}
		}, "not a regular file"},
		{"too large", func(dir, file string) { os.WriteFile(file, make([]byte, 2048), 0o644) }, "larger than 1024 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "keys")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(dir, "host_key.pub")
			if err := os.WriteFile(file, []byte("k"), 0o644); err != nil {
				t.Fatal(err)
			}
			tt.setup(dir, file)
			data, err := ReadFile(file, 1024)
			if tt.reason == "" {
				if err != nil || string(data) != "k" {
					t.Fatalf("ReadFile = %q, %v", data, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("ReadFile = %q, %v; want a refusal saying %q", data, err, tt.reason)
			}
		})
	}
}
