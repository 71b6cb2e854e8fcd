package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/user"
	"slices"
	"strconv"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/agent"
	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/internal/connlimit"
	"github.com/mwi-project/mwi/internal/fault"
	"github.com/mwi-project/mwi/internal/httpjson"
	"github.com/mwi-project/mwi/internal/unixsock"
)

// listen opens a configured socket with its mode and group, which
// unixsock sets before the socket appears at its path.
func listen(sc config.Socket) (*unixsock.Listener, error) {
	return unixsock.ListenGroup(sc.Path, sc.Mode, sc.Group)
}

// selfUID is mwid's own user, which may always use its sockets.
var selfUID = uint32(os.Geteuid())

// allowed reports whether the peer may use a socket. The socket's mode and
// group are the first gate; this second one is separate, and holds even if
// the mode or the file's group was widened by mistake. Root and mwid's own
// user are always admitted; anyone else must be named by the socket's
// allow list, as a user or through a group.
func allowed(sc config.Socket, p unixsock.Peer) error {
	c := caller{Peer: p}
	return c.allowedBy(sc)
}

// caller is a socket's peer, with its groups looked up the first time a
// rule needs them: the check of an agent connection is repeated for every
// request, and must neither read the group database nor allocate each
// time. Groups are those of the peer's user when first needed; like its
// credentials, they are not looked up again for the same connection.
type caller struct {
	unixsock.Peer
	groups []uint32 // supplementary groups, once looked
	looked bool
}

// allowedBy reports whether the caller may use the socket sc.
func (c *caller) allowedBy(sc config.Socket) error {
	if c.UID == 0 || c.UID == selfUID || slices.Contains(sc.AllowUIDs, c.UID) || slices.Contains(sc.AllowGIDs, c.GID) {
		return nil
	}
	if len(sc.AllowGIDs) > 0 {
		if !c.looked {
			c.groups, c.looked = supplementaryGroups(c.UID), true
		}
		for _, g := range c.groups {
			if slices.Contains(sc.AllowGIDs, g) {
				return nil
			}
		}
	}
	return fmt.Errorf("uid %d (gid %d) is not allowed on %s by mwid's configuration", c.UID, c.GID, sc.Path)
}

// supplementaryGroups returns the groups of the user uid from the group
// database: SO_PEERCRED carries only the primary group.
func supplementaryGroups(uid uint32) []uint32 {
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return nil
	}
	ids, err := u.GroupIds()
	if err != nil {
		return nil
	}
	var groups []uint32
	for _, id := range ids {
		if g, err := strconv.ParseUint(id, 10, 32); err == nil {
			groups = append(groups, uint32(g))
		}
	}
	return groups
}

// checkPeer returns the agent server's check of a connection's peer: once
// when it connects, before the connection counts against the limits, and
// then before each of its requests against the configuration in use, so
// that a reload that narrows who is allowed reaches connections already
// open.
func (s *Server) checkPeer(name string, socket func(*config.Config) config.Socket) func(unixsock.Peer) (func() error, error) {
	return func(p unixsock.Peer) (func() error, error) {
		c := &caller{Peer: p}
		check := func() error {
			if err := c.allowedBy(socket(s.config())); err != nil {
				s.refused("socket", name, "uid", p.UID, "gid", p.GID, "pid", p.PID, "err", err)
				return err
			}
			return nil
		}
		if err := check(); err != nil {
			return nil, err
		}
		return check, nil
	}
}

// apiListener bounds the connections of the API socket ln by s.apiLimits,
// which the old and new sockets share across a reload. A caller that the
// socket's allow rules refuse is refused when it connects, before it is
// counted: the socket's mode may let many users connect, and none of them
// may hold a place that an allowed caller (root, sshd's
// AuthorizedPrincipalsCommand) needs. A few such connections at once, in
// a room of their own, get requirePeer's 403 so that mwictl can say why,
// and are closed; the others are closed at once. requirePeer checks each
// request again, for the callers a reload refuses on connections they
// hold.
func (s *Server) apiListener(ln net.Listener) net.Listener {
	return &connlimit.Listener{Listener: ln, Limits: s.apiLimits, Log: s.log, Name: "api",
		Check: func(p unixsock.Peer) error {
			err := allowed(s.config().APISocket, p)
			if err != nil {
				s.refused("socket", "api", "uid", p.UID, "gid", p.GID, "pid", p.PID, "err", err)
			}
			return err
		},
		Answer: refusalsAnswered}
}

// refusalsAnswered is how many refused callers of the API socket are told
// why at once; see apiListener.
const refusalsAnswered = 16

// newAgentServer returns the agent's server, checking callers against the
// agent socket's allow rules in the configuration in use.
func (s *Server) newAgentServer() *agent.Server {
	a := agent.New(&s.creds, s.now)
	a.Log = s.log
	a.SetAllowUnbound(s.config().Agent.AllowUnbound)
	s.sshAgent.Store(a)
	return &agent.Server{
		Agent:  s.metrics.InstrumentAgent(a),
		Check:  s.checkPeer("agent", func(c *config.Config) config.Socket { return c.AgentSocket }),
		Limits: s.agentLimits,
		Log:    s.log,
	}
}

// refused logs a refused caller at warning level, a few lines a second: a
// user that the sockets' mode lets connect decides how many there are.
func (s *Server) refused(args ...any) {
	s.refusals.Warn(s.log, "caller refused", args...)
}

// refusedKey is the context key of an API connection's refusal when it
// connected: such a connection is served only to be told why (see
// apiListener), even if a reload allows the caller meanwhile.
type refusedKey struct{}

// apiConnContext is the API server's ConnContext: the caller's
// credentials, and its refusal when it connected, if any.
func apiConnContext(ctx context.Context, c net.Conn) context.Context {
	ctx = unixsock.ConnContext(ctx, c)
	if lc, ok := c.(*connlimit.Conn); ok && lc.Refused() != nil {
		ctx = context.WithValue(ctx, refusedKey{}, lc.Refused())
	}
	return ctx
}

// requirePeer is the API's middleware for the same check, made for each
// request against the configuration in use, so that a reload reaches
// keep-alive connections too: a refused caller gets 403 in the API's error
// shape, and the connection is closed.
func (s *Server) requirePeer(socket func(*config.Config) config.Socket) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p, ok := unixsock.PeerFromContext(r.Context())
			var err error
			if !ok {
				err = errors.New("the caller's credentials are unknown")
			} else if refused, ok := r.Context().Value(refusedKey{}).(error); ok {
				err = refused // counted against no bound: never served
			} else {
				err = allowed(socket(s.config()), p)
			}
			if err != nil {
				s.refused("socket", "api", "uid", p.UID, "gid", p.GID, "pid", p.PID, "path", r.URL.Path)
				w.Header().Set("Connection", "close")
				httpjson.WriteError(w, s.log, fault.Denied(api.CodeAccessDenied, "%v", err))
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}
