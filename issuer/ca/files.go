package ca

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/mwi-project/mwi/internal/safefs"
)

// keyMode is the mode of every file in a state directory.
const keyMode = 0o600

// openStateDir opens the state directory dir as mwi-issuer serve may
// write in it. serve's state directory is, under systemd's DynamicUser=,
// a link into /var/lib/private: as for serve's admin socket, the link the
// administrator named is resolved once, and the directory it leads to is
// opened through no other link and checked as safefs checks every
// directory.
func openStateDir(dir string) (*safefs.Dir, error) {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, err
	}
	return safefs.OpenDir(real)
}

// existsIn reports whether anything, even a symbolic link, is at name in d.
func existsIn(d *safefs.Dir, name string) bool {
	var st unix.Stat_t
	return unix.Fstatat(d.Fd(), name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil
}

// removeIn removes the file name from d.
func removeIn(d *safefs.Dir, name string) error {
	if err := unix.Unlinkat(d.Fd(), name, 0); err != nil {
		return &os.PathError{Op: "remove", Path: filepath.Join(d.Path(), name), Err: err}
	}
	return nil
}

type replacement struct {
	name string
	data []byte
}

// replaceFiles writes every file of files to a temporary file in dir and
// syncs it, and only then renames each over its name and syncs dir. If any
// write fails, nothing is replaced.
func replaceFiles(dir string, files []replacement) error {
	d, err := safefs.OpenDir(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	out := make([]safefs.File, 0, len(files))
	for _, f := range files {
		var st unix.Stat_t
		if err := unix.Fstatat(d.Fd(), f.name, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil && st.Mode&unix.S_IFMT != unix.S_IFREG {
			return fmt.Errorf("%s is not a regular file; refusing to replace it", filepath.Join(dir, f.name))
		}
		out = append(out, safefs.File{Name: f.name, Data: f.data, Mode: keyMode})
	}
	return d.WriteFiles(out...)
}
