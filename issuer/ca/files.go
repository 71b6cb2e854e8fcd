package ca

import (
	"os"
	"path/filepath"
)

// writeTemp writes data, synced, to a new temporary file with mode 0600 in
// dir, named after name, and returns its path. Renaming or linking it into
// place then makes the whole content appear at once.
func writeTemp(dir, name string, data []byte) (string, error) {
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return "", err
	}
	err = f.Chmod(0o600)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// linkNew writes data to a file at path that must not exist yet: a
// temporary file linked into place, so that path never holds part of data
// and an existing file is never replaced.
func linkNew(path string, data []byte) error {
	tmp, err := writeTemp(filepath.Dir(path), filepath.Base(path), data)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	return os.Link(tmp, path)
}
