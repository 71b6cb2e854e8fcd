// Package atomicfile writes files so that readers see the old content or
// the new, never a part of either.
package atomicfile

import (
	"os"

	"github.com/mwi-project/mwi/internal/safefs"
)

// Write replaces the file at path with data, with the given mode. It is
// safefs.WriteFile: it writes a temporary file in the same directory,
// syncs it and renames it over path, and refuses a symbolic link at path
// or in any directory above it, and a directory that another user
// controls, so that no one can redirect the write or replace the file.
func Write(path string, data []byte, mode os.FileMode) error {
	return safefs.WriteFile(path, data, mode)
}
