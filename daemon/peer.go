package daemon

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/user"
	"slices"
	"strconv"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/internal/httpjson"
	"github.com/mwi-project/mwi/internal/unixsock"
)

// listen opens a configured socket with its mode and group, which
// unixsock sets before the socket appears at its path.
func listen(sc config.Socket) (*unixsock.Listener, error) {
	return unixsock.ListenGroup(sc.Path, sc.Mode, sc.Group)
}

// allowed reports whether the peer may use a socket. The socket's mode and
// group are the first gate; this second one is separate, and holds even if
// the mode or the file's group was widened by mistake. Root and mwid's own
// user are always admitted; anyone else must be named by the socket's
// allow list, as a user or through a group.
func allowed(sc config.Socket, p unixsock.Peer) error {
	if p.UID == 0 || p.UID == uint32(os.Geteuid()) || slices.Contains(sc.AllowUIDs, p.UID) {
		return nil
	}
	groups := []uint32{p.GID}
	// SO_PEERCRED carries only the primary group; the supplementary ones
	// come from the group database for the peer's user.
	if u, err := user.LookupId(strconv.FormatUint(uint64(p.UID), 10)); len(sc.AllowGIDs) > 0 && err == nil {
		if ids, err := u.GroupIds(); err == nil {
			for _, id := range ids {
				if g, err := strconv.ParseUint(id, 10, 32); err == nil {
					groups = append(groups, uint32(g))
				}
			}
		}
	}
	for _, g := range groups {
		if slices.Contains(sc.AllowGIDs, g) {
			return nil
		}
	}
	return fmt.Errorf("uid %d (gid %d) is not allowed on %s by mwid's configuration", p.UID, p.GID, sc.Path)
}

// checkPeer returns a connection check for the agent socket.
func (s *Server) checkPeer(name string, socket func(*config.Config) config.Socket) func(net.Conn) error {
	return func(c net.Conn) error {
		p, err := unixsock.PeerOf(c)
		if err != nil {
			return err
		}
		if err := allowed(socket(s.config()), p); err != nil {
			s.log.Warn("caller refused", "socket", name, "uid", p.UID, "gid", p.GID, "pid", p.PID)
			return err
		}
		return nil
	}
}

// requirePeer is the API's middleware for the same check: a refused caller
// gets 403 in the API's error shape.
func (s *Server) requirePeer(socket func(*config.Config) config.Socket) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p, ok := unixsock.PeerFromContext(r.Context())
			var err error
			if !ok {
				err = errors.New("the caller's credentials are unknown")
			} else {
				err = allowed(socket(s.config()), p)
			}
			if err != nil {
				s.log.Warn("caller refused", "socket", "api", "uid", p.UID, "gid", p.GID, "pid", p.PID, "path", r.URL.Path)
				httpjson.WriteError(w, s.log, httpjson.Errorf(http.StatusForbidden, api.CodeAccessDenied, "%v", err))
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}
