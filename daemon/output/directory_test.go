package output

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDirectory(t *testing.T) {
	base := t.TempDir()
	os.Mkdir(filepath.Join(base, "real"), 0o700)
	os.Symlink(filepath.Join(base, "real"), filepath.Join(base, "link"))
	tests := []struct {
		name   string
		d      Directory
		verify string // "" when Verify passes
		write  string // "" when Write succeeds
	}{
		{"made", Directory{Path: filepath.Join(base, "new", "out"), Create: true}, "", ""},
		{"must exist", Directory{Path: filepath.Join(base, "missing")}, "", "no such file or directory"},
		{"exists", Directory{Path: filepath.Join(base, "real")}, "", ""},
		{"through a link", Directory{Path: filepath.Join(base, "link", "out"), Create: true}, "symbolic link", "symbolic link"},
		{"a link", Directory{Path: filepath.Join(base, "link")}, "symbolic link", "symbolic link"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check := func(what string, err error, want string) {
				t.Helper()
				if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
					t.Errorf("%s = %v, want %q", what, err, want)
				}
			}
			check("Verify", tt.d.Verify(), tt.verify)
			err := tt.d.Write(File{"key", []byte("secret"), 0o600}, File{"key.pub", []byte("public"), 0o644})
			check("Write", err, tt.write)
			if err != nil {
				return
			}
			for name, mode := range map[string]fs.FileMode{"key": 0o600, "key.pub": 0o644} {
				fi, err := os.Stat(filepath.Join(tt.d.Path, name))
				if err != nil || fi.Mode().Perm() != mode {
					t.Errorf("%s: %v, %v; want mode %v", name, fi, err, mode)
				}
			}
			if fi, err := os.Stat(tt.d.Path); tt.d.Create && (err != nil || fi.Mode().Perm() != 0o700) {
				t.Errorf("made directory: %v, %v; want mode 0700", fi, err)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(base, "real", "out")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a directory was made through the link: %v", err)
	}
}
