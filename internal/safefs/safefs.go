// Package safefs opens directories and writes files so that no other user
// can redirect or replace what is written.
//
// A directory is reached from "/" one component at a time, each opened
// relative to the one before with O_NOFOLLOW: a symbolic link in any
// component is refused, and the checks and the writes apply to the
// directories that were opened, even if a path is changed meanwhile. On
// the way, each directory is checked before anything is looked up in it:
//
//   - It must be owned by root or by the effective user of the process.
//   - The directory written in, and every directory that MkdirAll
//     creates, must not be writable by its group or by others.
//   - Above it, a directory that others may write to is accepted only if
//     root owns it and it has the sticky bit, as /tmp: others may add
//     entries there, but not rename or remove ours.
//
// Files are written relative to the open directory: into a new temporary
// file, never an existing one, which is synced and renamed over the final
// name, so that readers see the old content or the new, never a part of
// either, and a symbolic link at the final name is never written through.
// WriteNewFile links the temporary file to the final name instead, which
// fails if anything exists there: it is for files that must never be
// replaced, such as the private key of an authority.
//
// Paths are cleaned lexically, as filepath.Clean does; a relative path is
// taken from the working directory as the kernel reports it.
package safefs

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// An UnsafeError reports a path that safefs refuses to use, and why.
type UnsafeError struct {
	Path   string
	Reason string
}

func (e *UnsafeError) Error() string { return "refusing " + e.Path + ": " + e.Reason }

// Dir is a directory opened by OpenDir or MkdirAll. Its methods work
// relative to the open directory and never look its path up again.
type Dir struct {
	fd   int
	path string
}

// OpenDir opens the existing directory at path, refusing a symbolic link in
// any of its components and a directory that another user controls, as
// the package documentation describes.
func OpenDir(path string) (*Dir, error) { return openDir(path, false, 0, false) }

// MkdirAll is OpenDir that first creates, with mode perm (before the
// umask), the directories of path that do not exist, as os.MkdirAll does.
// Each is made relative to its parent and opened again without following
// a link, so a link planted meanwhile is refused like any other.
func MkdirAll(path string, perm os.FileMode) (*Dir, error) { return openDir(path, true, perm, false) }

// MkdirAllExact is MkdirAll for directories that other users must enter,
// such as one whose files sshd's AuthorizedPrincipalsCommand reads as an
// unprivileged user: the directories it makes get mode perm whatever the
// umask, which a hardened service often sets to 0077.
func MkdirAllExact(path string, perm os.FileMode) (*Dir, error) {
	return openDir(path, true, perm, true)
}

func openDir(path string, create bool, perm os.FileMode, exact bool) (*Dir, error) {
	abs, err := absolute(path)
	if err != nil {
		return nil, err
	}
	var names []string
	if abs != "/" {
		names = strings.Split(abs[1:], "/")
	}
	// Components are opened with O_PATH, which needs only search
	// permission; the last one is opened for reading, so that it can be
	// synced after a rename.
	flags := unix.O_PATH
	if len(names) == 0 {
		flags = unix.O_RDONLY
	}
	fd, err := unix.Open("/", flags|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: "/", Err: err}
	}
	dir, made := "/", false
	for i := 0; ; i++ {
		last := i == len(names)
		if err := check(fd, dir, last || made); err != nil {
			unix.Close(fd)
			return nil, err
		}
		if last {
			return &Dir{fd: fd, path: dir}, nil
		}
		if i == len(names)-1 {
			flags = unix.O_RDONLY
		}
		next := filepath.Join(dir, names[i])
		child, created, err := openChild(fd, names[i], next, flags, create, perm, exact)
		unix.Close(fd)
		if err != nil {
			return nil, err
		}
		fd, dir, made = child, next, created
	}
}

// openChild opens the directory name in the directory dirfd, not following
// a link, and creates it first if create is set and it does not exist,
// with mode perm exactly if exact is set.
func openChild(dirfd int, name, path string, flags int, create bool, perm os.FileMode, exact bool) (fd int, created bool, err error) {
	flags |= unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fd, err = unix.Openat(dirfd, name, flags, 0)
	if err == unix.ENOENT && create {
		err = unix.Mkdirat(dirfd, name, uint32(perm.Perm()))
		created = err == nil
		if created && exact {
			// dirfd was checked: no one else can have replaced name
			// since mkdirat made it, and fchmodat cannot take
			// AT_SYMLINK_NOFOLLOW on Linux.
			err = unix.Fchmodat(dirfd, name, uint32(perm.Perm()), 0)
		}
		// EEXIST: someone made it meanwhile; it is checked like any other.
		if err == nil || err == unix.EEXIST {
			fd, err = unix.Openat(dirfd, name, flags, 0)
		}
	}
	if err != nil {
		// O_NOFOLLOW with O_DIRECTORY fails on a link with ENOTDIR (or
		// ELOOP); say which it was.
		var st unix.Stat_t
		if (err == unix.ENOTDIR || err == unix.ELOOP) &&
			unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			return -1, false, &UnsafeError{Path: path, Reason: "it is a symbolic link, and no component of a path is followed through one"}
		}
		return -1, false, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return fd, created, nil
}

// check applies the ownership and mode rules to the directory open at fd.
// strict is for the directory written in and for the directories made on
// the way to it: no one but the owner may write to them.
func check(fd int, path string, strict bool) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return &os.PathError{Op: "stat", Path: path, Err: err}
	}
	euid := uint32(os.Geteuid())
	perm := st.Mode & 0o7777
	if st.Uid != 0 && st.Uid != euid {
		return &UnsafeError{Path: path, Reason: fmt.Sprintf(
			"it is owned by uid %d (mode %04o), not by root or by uid %d that this process runs as; its owner could replace what is written there",
			st.Uid, perm, euid)}
	}
	if perm&0o022 == 0 {
		return nil
	}
	sticky := st.Uid == 0 && perm&unix.S_ISVTX != 0
	if sticky && !strict {
		return nil // as /tmp: others may add entries, but not move ours
	}
	reason := fmt.Sprintf("it is writable by users other than its owner (uid %d, mode %04o), who could replace what is written there", st.Uid, perm)
	if sticky {
		reason += "; a shared directory such as /tmp is accepted only above the one written in"
	}
	return &UnsafeError{Path: path, Reason: reason}
}

// absolute returns path cleaned and made absolute. A relative path is
// taken from the working directory the kernel reports, which names no
// symbolic link, rather than from $PWD, which may.
func absolute(path string) (string, error) {
	if path == "" {
		return "", &os.PathError{Op: "open", Path: path, Err: unix.ENOENT}
	}
	if !filepath.IsAbs(path) {
		wd, err := unix.Getwd()
		if err != nil {
			return "", fmt.Errorf("working directory: %w", err)
		}
		path = filepath.Join(wd, path)
	}
	return filepath.Clean(path), nil
}

// Path returns the directory's absolute path, as it was opened.
func (d *Dir) Path() string { return d.path }

// Fd returns the directory's file descriptor, for the *at system calls.
// It is valid until Close.
func (d *Dir) Fd() int { return d.fd }

// Chmod changes the mode of the directory to mode, which MkdirAll does not
// do for a directory that exists.
func (d *Dir) Chmod(mode os.FileMode) error {
	if err := unix.Fchmod(d.fd, uint32(mode.Perm())); err != nil {
		return &os.PathError{Op: "chmod", Path: d.path, Err: err}
	}
	return nil
}

// Close closes the directory.
func (d *Dir) Close() error {
	if d.fd < 0 {
		return os.ErrClosed
	}
	err := unix.Close(d.fd)
	d.fd = -1
	return err
}

// WriteFile replaces the file name in d with data, with the given mode,
// atomically: it writes a new temporary file in d, syncs it, renames it
// over name and syncs d. It refuses to replace a symbolic link, which
// would mean that something is not as mwi left it.
func (d *Dir) WriteFile(name string, data []byte, mode os.FileMode) error {
	return d.WriteFiles(File{Name: name, Data: data, Mode: mode})
}

// A File is a file for WriteFiles to write: its name in the directory,
// its content and its mode.
type File struct {
	Name string
	Data []byte
	Mode os.FileMode
}

// WriteFiles is WriteFile for files that belong together, such as a key
// and its certificate: every file is written to a temporary file and
// synced before the first is renamed over its name, so that if any write
// fails, no file is replaced. The renames, in the order of files, are not
// one step: a reader between two of them sees some files new and others
// old. If any name is a symbolic link, nothing is written.
func (d *Dir) WriteFiles(files ...File) error {
	for _, f := range files {
		path, err := d.checkName("write", f.Name)
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Fstatat(d.fd, f.Name, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			return &UnsafeError{Path: path, Reason: "it is a symbolic link, and files are never written through one"}
		}
	}
	tmps := make([]string, 0, len(files))
	defer func() {
		for _, tmp := range tmps {
			unix.Unlinkat(d.fd, tmp, 0) // fails harmlessly once renamed
		}
	}()
	for _, f := range files {
		tmp, err := d.writeTemp(f.Name, f.Data, f.Mode)
		if err != nil {
			return err
		}
		tmps = append(tmps, tmp)
	}
	for i, f := range files {
		if err := unix.Renameat(d.fd, tmps[i], d.fd, f.Name); err != nil {
			return &os.LinkError{Op: "rename", Old: filepath.Join(d.path, tmps[i]), New: filepath.Join(d.path, f.Name), Err: err}
		}
	}
	return d.sync()
}

// WriteNewFile writes data to the file name in d, with the given mode, if
// name does not exist yet: it writes a new temporary file in d, syncs it,
// links it to name and syncs d. The link fails if anything exists at name,
// even a symbolic link to nowhere, so an existing file, such as the key of
// an authority that others already trust, is never replaced and nothing is
// written through a link; the error then wraps fs.ErrExist. As with
// WriteFile, name never holds part of data.
func (d *Dir) WriteNewFile(name string, data []byte, mode os.FileMode) error {
	path, err := d.checkName("create", name)
	if err != nil {
		return err
	}
	tmp, err := d.writeTemp(name, data, mode)
	if err != nil {
		return err
	}
	err = unix.Linkat(d.fd, tmp, d.fd, name, 0)
	unix.Unlinkat(d.fd, tmp, 0)
	switch {
	case err == unix.EEXIST:
		return &os.PathError{Op: "create", Path: path, Err: err}
	case err != nil:
		return &os.LinkError{Op: "link", Old: filepath.Join(d.path, tmp), New: path, Err: err}
	}
	return d.sync()
}

// checkName returns the path of the file name in d, or an error for op if
// name is not the name of a file in a directory.
func (d *Dir) checkName(op, name string) (string, error) {
	path := filepath.Join(d.path, name)
	if name == "" || name == "." || name == ".." || strings.Contains(name, "/") {
		return "", &os.PathError{Op: op, Path: path, Err: errors.New("not the name of a file in the directory")}
	}
	return path, nil
}

// writeTemp writes data, synced and with the given mode, to a new
// temporary file in d named after name, and returns its name.
func (d *Dir) writeTemp(name string, data []byte, mode os.FileMode) (string, error) {
	tmp, fd, err := d.createTemp(name)
	if err != nil {
		return "", &os.PathError{Op: "create", Path: filepath.Join(d.path, name), Err: err}
	}
	f := os.NewFile(uintptr(fd), filepath.Join(d.path, tmp))
	err = f.Chmod(mode)
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
		unix.Unlinkat(d.fd, tmp, 0)
		return "", err
	}
	return tmp, nil
}

// sync makes the names changed in d durable. Some file systems cannot
// sync a directory (EINVAL); the files are in place.
func (d *Dir) sync() error {
	if err := unix.Fsync(d.fd); err != nil && err != unix.EINVAL {
		return &os.PathError{Op: "sync", Path: d.path, Err: err}
	}
	return nil
}

// createTemp creates a new file in d, named after name, for writing only,
// and returns its name and descriptor.
func (d *Dir) createTemp(name string) (string, int, error) {
	for range 100 {
		tmp := "." + name + ".tmp-" + strconv.FormatUint(rand.Uint64(), 36)
		fd, err := unix.Openat(d.fd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err == unix.EEXIST {
			continue
		}
		return tmp, fd, err
	}
	return "", -1, unix.EEXIST
}

// ReadFile reads the file name in d, which must be a regular file that
// root or this process's user owns and that neither its group nor others
// can write, and that is at most max bytes long. A symbolic link at name
// is refused. It is for files whose content is trusted, such as a host
// key that the issuer certifies: someone who could change such a file
// would choose what is certified.
func (d *Dir) ReadFile(name string, max int64) ([]byte, error) {
	path, err := d.checkName("read", name)
	if err != nil {
		return nil, err
	}
	// O_NONBLOCK, so that a fifo planted at name cannot block the open.
	fd, err := unix.Openat(d.fd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err == unix.ELOOP {
		return nil, &UnsafeError{Path: path, Reason: "it is a symbolic link, and trusted files are never read through one"}
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	euid := uint32(os.Geteuid())
	perm := st.Mode & 0o7777
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return nil, &UnsafeError{Path: path, Reason: "it is not a regular file"}
	case st.Uid != 0 && st.Uid != euid:
		return nil, &UnsafeError{Path: path, Reason: fmt.Sprintf(
			"it is owned by uid %d (mode %04o), not by root or by uid %d that this process runs as; its owner chooses what it says", st.Uid, perm, euid)}
	case perm&0o022 != 0:
		return nil, &UnsafeError{Path: path, Reason: fmt.Sprintf(
			"it is writable by users other than its owner (uid %d, mode %04o), who choose what it says", st.Uid, perm)}
	case st.Size > max:
		return nil, &os.PathError{Op: "read", Path: path, Err: fmt.Errorf("larger than %d bytes", max)}
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, &os.PathError{Op: "read", Path: path, Err: fmt.Errorf("larger than %d bytes", max)}
	}
	return data, nil
}

// ReadFile reads the file at path as Dir.ReadFile does, in the directory
// that OpenDir opens.
func ReadFile(path string, max int64) ([]byte, error) {
	dir, name := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	d, err := OpenDir(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.ReadFile(name, max)
}

// WriteFile writes data to the file at path as Dir.WriteFile does, in the
// directory that OpenDir opens: it must exist.
func WriteFile(path string, data []byte, mode os.FileMode) error {
	dir, name := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	d, err := OpenDir(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.WriteFile(name, data, mode)
}
