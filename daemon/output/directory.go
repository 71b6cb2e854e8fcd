package output

import (
	"errors"
	"io/fs"

	"github.com/mwi-project/mwi/internal/safefs"
)

// Directory is where an output writes its files: a directory that safefs
// opens, never through a symbolic link, nor one that another user could
// change. It is the one destination of outputs today (as tbot's
// destinations are); another kind of destination would be a type with the
// same methods.
type Directory struct {
	Path string
	// Create makes the directory, and those above it, with mode Perm when
	// they do not exist; without it the directory must exist.
	Create bool
	// Perm is the mode of the directories Create makes, whatever the
	// umask, for a directory that other users read; zero is 0700 less
	// the umask.
	Perm fs.FileMode
}

// File is a file to write into a Directory.
type File struct {
	Name string
	Data []byte
	Mode fs.FileMode
}

// Verify reports what would stop files from being written into d: a
// directory that safefs refuses. One that does not exist yet is made, and
// checked, when files are written.
func (d Directory) Verify() error {
	dir, err := safefs.OpenDir(d.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return dir.Close()
}

// Write writes files into d, in order, each atomically (into a temporary
// file renamed over the old), into the directory opened once, so that all
// of them land in the same directory.
func (d Directory) Write(files ...File) error {
	var dir *safefs.Dir
	var err error
	if d.Create {
		if d.Perm != 0 {
			dir, err = safefs.MkdirAllExact(d.Path, d.Perm)
		} else {
			dir, err = safefs.MkdirAll(d.Path, 0o700)
		}
	} else {
		dir, err = safefs.OpenDir(d.Path)
	}
	if err != nil {
		return err
	}
	defer dir.Close()
	for _, f := range files {
		if err := dir.WriteFile(f.Name, f.Data, f.Mode); err != nil {
			return err
		}
	}
	return nil
}

// String returns the directory's path.
func (d Directory) String() string { return d.Path }
