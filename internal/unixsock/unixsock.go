// Package unixsock creates Unix sockets safely and identifies their callers.
package unixsock

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mwi-project/mwi/internal/safefs"
)

// Listen listens on a Unix socket at path with the given mode and the
// process's group, as ListenGroup does.
func Listen(path string, mode os.FileMode) (*Listener, error) {
	return listen(path, mode, -1, false)
}

// ListenGroup listens on a Unix socket at path with the given mode and
// group (-1 for the process's).
//
// The socket's directory is opened with safefs, and made with mode 0755
// if it is missing: a symbolic link in any component of its path is
// refused, and so is a directory not owned by root or this process's
// user, or that its group or others can write to, since they could put
// their own socket, or a link, in place of this one.
//
// A socket file left by a process that died is removed; a socket that
// still answers belongs to a running process, and ListenGroup refuses to
// steal it. Anything else at path is refused.
//
// The socket is bound in a new private directory inside its directory,
// given its group and mode there and renamed to path, where it appears
// with both. Mode and group are thus never set through a path that
// another process could have swapped for a link.
func ListenGroup(path string, mode os.FileMode, gid int) (*Listener, error) {
	return listen(path, mode, gid, false)
}

// Replace listens on a new socket at path, made as ListenGroup makes it,
// that takes the place of the socket there in one step (a rename), so that
// path always holds a socket: this is how the mode or group of a socket in
// use changes. The listener of the socket replaced keeps its connections,
// and its Close leaves the new socket alone.
func Replace(path string, mode os.FileMode, gid int) (*Listener, error) {
	return listen(path, mode, gid, true)
}

// A Listener is a Unix socket listener made by this package. Its Close
// removes the socket file if it is still the one the listener made.
type Listener struct {
	ln   *net.UnixListener
	path string
	dir  *safefs.Dir // the socket's directory, from which Close removes it
	name string
	made unix.Stat_t // the socket file, as made: its device and inode
	once sync.Once
}

// Accept waits for and returns the next connection.
func (l *Listener) Accept() (net.Conn, error) { return l.ln.Accept() }

// Addr returns the socket's path. (The kernel's name for the socket is
// where it was bound, in a private directory since removed.)
func (l *Listener) Addr() net.Addr { return &net.UnixAddr{Name: l.path, Net: "unix"} }

// Close stops listening and removes the socket file, unless it is no longer
// the listener's own: Replace put another socket there, or something else
// took the name.
func (l *Listener) Close() error {
	err := l.ln.Close()
	l.once.Do(func() {
		var st unix.Stat_t
		if unix.Fstatat(l.dir.Fd(), l.name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Dev == l.made.Dev && st.Ino == l.made.Ino {
			unix.Unlinkat(l.dir.Fd(), l.name, 0)
		}
		l.dir.Close()
	})
	return err
}

func listen(path string, mode os.FileMode, gid int, replace bool) (*Listener, error) {
	dirPath, name := filepath.Split(path)
	if name == "" || name == "." || name == ".." {
		return nil, fmt.Errorf("%q is not the path of a socket", path)
	}
	if dirPath == "" {
		dirPath = "."
	}
	dir, err := safefs.MkdirAll(dirPath, 0o755)
	if err != nil {
		return nil, err
	}
	l := &Listener{path: path, dir: dir, name: name}
	if err := l.clear(replace); err != nil {
		dir.Close()
		return nil, err
	}
	if err := l.bind(mode, gid, replace); err != nil {
		dir.Close()
		return nil, err
	}
	return l, nil
}

// clear makes way for the new socket: there must be nothing at its name,
// or a socket. A socket that a process answers on is refused, unless it is
// to be replaced; one that none answers on was left by a process that
// died, and is removed.
func (l *Listener) clear(replace bool) error {
	var st unix.Stat_t
	err := unix.Fstatat(l.dir.Fd(), l.name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if err == unix.ENOENT {
		return nil
	}
	if err != nil {
		return &os.PathError{Op: "stat", Path: l.path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fmt.Errorf("%s exists and is not a socket; refusing to replace it", l.path)
	}
	if replace {
		return nil
	}
	// The directory was checked: only root and this process's user can
	// have put something else at path since.
	if c, err := net.DialTimeout("unix", l.path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("%s is in use by a running process", l.path)
	}
	if err := unix.Unlinkat(l.dir.Fd(), l.name, 0); err != nil && err != unix.ENOENT {
		return fmt.Errorf("remove stale socket %s: %w", l.path, err)
	}
	return nil
}

// sockName is the socket's name in its private directory.
const sockName = "s"

// bind makes the socket in a private directory, sets its group and mode
// there and renames it into place.
func (l *Listener) bind(mode os.FileMode, gid int, replace bool) error {
	priv, pfd, err := l.mkdirPrivate()
	if err != nil {
		return err
	}
	defer func() {
		unix.Unlinkat(pfd, sockName, 0) // there only if something failed
		unix.Close(pfd)
		unix.Unlinkat(l.dir.Fd(), priv, unix.AT_REMOVEDIR)
	}()
	// Through /proc/self/fd the bind, too, is relative to the directory
	// opened, and the address is short whatever the length of path.
	// Without /proc, the private directory's path serves: no one but
	// root and this process's user can change it.
	addr := fmt.Sprintf("/proc/self/fd/%d/%s", pfd, sockName)
	if _, err := os.Stat("/proc/self/fd"); err != nil {
		addr = filepath.Join(l.dir.Path(), priv, sockName)
	}
	// The umask is process-wide, so it is left alone; no one can reach the
	// socket before its mode is set, in the private directory.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: addr, Net: "unix"})
	if err != nil {
		return fmt.Errorf("listen on %s: %w", l.path, err)
	}
	ln.SetUnlinkOnClose(false) // the bound name does not outlive bind
	if err := l.place(pfd, mode, gid, replace); err != nil {
		ln.Close()
		return err
	}
	l.ln = ln
	return nil
}

// place sets the group and mode of the socket in the private directory pfd
// and renames it to its name.
func (l *Listener) place(pfd int, mode os.FileMode, gid int, replace bool) error {
	if err := unix.Fstatat(pfd, sockName, &l.made, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "stat", Path: l.path, Err: err}
	}
	if l.made.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fmt.Errorf("%s: the private directory holds something other than the socket bound", l.path)
	}
	// A socket already of its group is left alone: chown needs no
	// privilege then, but a system call filter may still refuse it, as
	// mwid.service's does (it runs as the group its sockets are for).
	if gid >= 0 && uint32(gid) != l.made.Gid {
		if err := unix.Fchownat(pfd, sockName, -1, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return &os.PathError{Op: "chown", Path: l.path, Err: err}
		}
	}
	// fchmodat follows a link at the name (only Linux 6.6's fchmodat2 can
	// refuse to), but the private directory holds only the socket just
	// bound, and no one else can write to it.
	if err := unix.Fchmodat(pfd, sockName, uint32(mode.Perm()), 0); err != nil {
		return &os.PathError{Op: "chmod", Path: l.path, Err: err}
	}
	var err error
	if replace {
		err = unix.Renameat(pfd, sockName, l.dir.Fd(), l.name)
	} else {
		err = unix.Renameat2(pfd, sockName, l.dir.Fd(), l.name, unix.RENAME_NOREPLACE)
		if err == unix.EINVAL || err == unix.ENOSYS {
			// The file system cannot refuse to replace; clear found the
			// name free a moment ago, in a directory no one else writes.
			err = unix.Renameat(pfd, sockName, l.dir.Fd(), l.name)
		}
	}
	switch {
	case err == unix.EEXIST:
		return fmt.Errorf("%s is in use by a running process", l.path)
	case err != nil:
		return &os.PathError{Op: "rename", Path: l.path, Err: err}
	}
	return nil
}

// mkdirPrivate makes a new directory, with mode 0700, beside the socket,
// and opens it.
func (l *Listener) mkdirPrivate() (string, int, error) {
	for range 100 {
		priv := "." + l.name + ".tmp-" + strconv.FormatUint(rand.Uint64(), 36)
		err := unix.Mkdirat(l.dir.Fd(), priv, 0o700)
		if err == unix.EEXIST {
			continue
		}
		if err != nil {
			return "", -1, &os.PathError{Op: "mkdir", Path: filepath.Join(l.dir.Path(), priv), Err: err}
		}
		fd, err := unix.Openat(l.dir.Fd(), priv, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			unix.Unlinkat(l.dir.Fd(), priv, unix.AT_REMOVEDIR)
			return "", -1, &os.PathError{Op: "open", Path: filepath.Join(l.dir.Path(), priv), Err: err}
		}
		return priv, fd, nil
	}
	return "", -1, fmt.Errorf("%s: no free name for a private directory", l.path)
}

// Peer is the process at the other end of a Unix connection, as the kernel
// reported it when the connection was made.
type Peer struct {
	PID int32
	UID uint32
	GID uint32
}

// PeerOf returns the credentials of the process that connected c.
func PeerOf(c net.Conn) (Peer, error) {
	// A connection wrapped by a limiter (connlimit.Conn) or a server
	// holds the Unix connection the credentials come from.
	for {
		w, ok := c.(interface{ Unwrap() net.Conn })
		if !ok {
			break
		}
		c = w.Unwrap()
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return Peer{}, errors.New("not a Unix connection")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return Peer{}, err
	}
	var cred *unix.Ucred
	var credErr error
	err = raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err != nil {
		return Peer{}, err
	}
	if credErr != nil {
		return Peer{}, fmt.Errorf("SO_PEERCRED: %w", credErr)
	}
	return Peer{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid}, nil
}

type peerKey struct{}

// ConnContext records the peer of c in ctx; use it as http.Server.ConnContext
// so handlers can find their caller with PeerFromContext.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	p, err := PeerOf(c)
	if err != nil {
		return ctx
	}
	return context.WithValue(ctx, peerKey{}, p)
}

// PeerFromContext returns the peer that ConnContext recorded.
func PeerFromContext(ctx context.Context) (Peer, bool) {
	p, ok := ctx.Value(peerKey{}).(Peer)
	return p, ok
}
