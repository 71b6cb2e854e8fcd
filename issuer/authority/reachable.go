package authority

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/sshaccess"
	"github.com/mwi-project/mwi/issuer/audit"
	"github.com/mwi-project/mwi/issuer/ca"
	"github.com/mwi-project/mwi/issuer/store"
)

// StaleFactor says when a node has gone quiet: a node whose last renewal
// is older than StaleFactor times the max_ttl of its bot's roles is left
// out of ReachableNodes. A host certificate lives at most max_ttl, so such
// a node's certificate has expired, and ssh would refuse it anyway; twice
// the lifetime leaves a host that renews late, or rides out an issuer
// outage, listed.
const StaleFactor = 2

// ReachableNodes returns the nodes of the inventory on which the roles of
// the caller's bot, as the issuer's resources say now, allow at least one
// login, with those logins (Access.Logins of the bot's allow and deny
// rules). It leaves out nodes that are locked (a lock of their bot, their
// instance or the token they joined with), stale (see StaleFactor), or
// whose bot is no longer defined, and lists at most api.MaxReachableNodes,
// ordered by name.
//
// The caller is refused, and the refusal audited, if its bot is unknown or
// locked, or its instance unknown, another bot's, or locked.
func (a *Authority) ReachableNodes(ctx context.Context, id ca.Identity, remote string) (api.ReachableNodes, error) {
	deny := func(err error) (api.ReachableNodes, error) {
		return api.ReachableNodes{}, a.refuse(ctx, audit.EventNodes, err, slog.String("remote", remote),
			slog.String("bot", id.Bot), slog.String("instance", id.Instance))
	}
	g, _, err := a.grant(ctx, id.Bot, id.Instance, nil)
	if err != nil {
		return deny(err)
	}
	in, err := a.identityInstance(ctx, id)
	if err != nil {
		return deny(err)
	}
	if err := a.tokenLocked(ctx, in.TokenName); err != nil {
		return deny(err)
	}

	now, err := a.now(ctx)
	if err != nil {
		return api.ReachableNodes{}, err
	}
	locks, err := a.Locks(ctx)
	if err != nil {
		return api.ReachableNodes{}, err
	}
	tokenLocks := slices.ContainsFunc(locks, func(l api.Lock) bool { return l.Token != "" })
	nodes, err := a.Store.Nodes(ctx)
	if err != nil {
		return api.ReachableNodes{}, err
	}
	caller := sshaccess.Access{Bot: g.Bot, Allow: g.Allow, Deny: g.Deny}
	out := api.ReachableNodes{Nodes: []api.ReachableNode{}}
	for _, n := range nodes {
		if len(n.Names) == 0 {
			continue
		}
		logins := caller.Logins(n.Labels)
		if len(logins) == 0 {
			continue
		}
		hg, err := a.Resources().Grant(n.Bot)
		if err != nil || now.Sub(n.Renewed) > StaleFactor*hg.MaxTTL {
			continue
		}
		host := sshaccess.Access{Bot: n.Bot, Instance: n.Instance}
		if tokenLocks {
			in, err := a.Store.Instance(ctx, n.Instance)
			if errors.Is(err, store.ErrInstanceUnknown) {
				continue
			} else if err != nil {
				return api.ReachableNodes{}, err
			}
			host.Token = in.TokenName
		}
		if _, locked := host.LockedBy(locks, now); locked {
			continue
		}
		labels := n.Labels
		if labels == nil {
			labels = map[string]string{}
		}
		out.Nodes = append(out.Nodes, api.ReachableNode{Name: n.Names[0], Names: n.Names, Labels: labels, Logins: logins})
	}
	slices.SortStableFunc(out.Nodes, func(x, y api.ReachableNode) int { return strings.Compare(x.Name, y.Name) })
	if len(out.Nodes) > api.MaxReachableNodes {
		out.Nodes, out.Truncated = out.Nodes[:api.MaxReachableNodes], true
	}
	return out, nil
}
