package authority

import (
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/fault"
	"github.com/mwi-project/mwi/internal/sshaccess"
	"github.com/mwi-project/mwi/issuer/resource"
	"github.com/mwi-project/mwi/issuer/store"
)

// maxHostLabels bounds the labels of one host key request.
const maxHostLabels = 32

// userKeyID is the key ID of an instance's SSH user certificates. It
// carries no generation, so that one KRL entry revokes every certificate
// of the instance (the generation is in the audit record, with the serial).
func userKeyID(in store.Instance) string {
	return fmt.Sprintf("bot=%s instance=%s", in.Bot, in.ID)
}

// userAccess returns the access rules of an instance's user certificate,
// encoded for sshaccess.AccessExtension: one allow rule per role of g,
// keeping only the logins the certificate is issued for, and g's deny
// rules whole.
func userAccess(in store.Instance, g resource.Grant, logins []string) (string, error) {
	a := sshaccess.Access{
		Bot:          in.Bot,
		Instance:     in.ID,
		Token:        in.TokenName,
		Allow:        make([]sshaccess.Rule, 0, len(g.Allow)),
		Deny:         g.Deny,
		ForwardAgent: g.ForwardAgent,
	}
	for _, r := range g.Allow {
		r.Logins = slices.DeleteFunc(slices.Clone(r.Logins), func(l string) bool { return !slices.Contains(logins, l) })
		a.Allow = append(a.Allow, r)
	}
	return a.Marshal()
}

// checkRequestLabels checks the form of the labels a host key request
// asks for.
func checkRequestLabels(i int, labels map[string]string) error {
	if len(labels) > maxHostLabels {
		return badRequest("host_keys[%d].labels: at most %d labels", i, maxHostLabels)
	}
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		if err := resource.CheckLabel(k, labels[k]); err != nil {
			return badRequest("host_keys[%d].labels: %v", i, err)
		}
	}
	return nil
}

// checkHostLabels checks that the bot's roles allow every label asked for
// (host_labels). One label refused refuses the request.
func checkHostLabels(g resource.Grant, hosts []hostKey) error {
	for _, h := range hosts {
		for _, k := range slices.Sorted(maps.Keys(h.labels)) {
			if !g.AllowsHostLabel(k, h.labels[k]) {
				return hostLabelNotAllowed(g.Bot, k, h.labels[k])
			}
		}
	}
	return nil
}

// hostLabelNotAllowed is the refusal of a host label the roles do not allow.
func hostLabelNotAllowed(bot, key, value string) error {
	return fault.Denied(api.CodeHostLabelNotAllowed,
		"the roles of bot %s do not allow host label %s=%s (host_labels)", bot, key, value)
}

// hostExtensions returns the extensions of a host certificate with the
// given labels: LabelsExtension, always, so that a host without labels
// says so rather than looks like a certificate of an older issuer.
func hostExtensions(labels map[string]string) map[string]string {
	return map[string]string{sshaccess.LabelsExtension: sshaccess.MarshalLabels(labels)}
}

// maxVersion bounds the version recorded from a User-Agent.
const maxVersion = 64

type userAgentKey struct{}

// WithUserAgent returns a copy of ctx that carries the User-Agent of the
// request being served; the node inventory takes mwid's version from it.
func WithUserAgent(ctx context.Context, ua string) context.Context {
	return context.WithValue(ctx, userAgentKey{}, ua)
}

// daemonVersion returns the version of mwid that ctx's User-Agent names,
// "mwid/VERSION" optionally followed by more, or "" if it names none.
func daemonVersion(ctx context.Context) string {
	ua, _ := ctx.Value(userAgentKey{}).(string)
	product, _, _ := strings.Cut(ua, " ")
	v, ok := strings.CutPrefix(product, "mwid/")
	if !ok || v == "" || len(v) > maxVersion || strings.ContainsFunc(v, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
		return ""
	}
	return v
}

// node returns the inventory record of a host whose request asks host
// certificates for hosts, with the address remote its request came from,
// or nil if it asks none. The join or renewal writes it in the
// transaction that makes or moves its instance in, so that the inventory
// never names an instance the store does not have.
func (a *Authority) node(ctx context.Context, in store.Instance, g resource.Grant, hosts []hostKey, remote string, now time.Time) *store.Node {
	if len(hosts) == 0 {
		return nil
	}
	var names []string
	labels := map[string]string{}
	for _, h := range hosts {
		hn := h.names
		if len(hn) == 0 {
			hn = g.HostNames
		}
		for _, n := range hn {
			if !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
		maps.Copy(labels, h.labels)
	}
	addr := remote
	if host, _, err := net.SplitHostPort(remote); err == nil {
		addr = host
	}
	return &store.Node{Instance: in.ID, Bot: in.Bot, Names: names, Labels: labels, Address: addr, Version: daemonVersion(ctx), Renewed: now}
}

// Nodes returns the node inventory, ordered by host name.
func (a *Authority) Nodes(ctx context.Context) ([]api.Node, error) {
	nodes, err := a.Store.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]api.Node, 0, len(nodes))
	for _, n := range nodes {
		labels := n.Labels
		if labels == nil {
			labels = map[string]string{}
		}
		out = append(out, api.Node{Names: n.Names, Instance: n.Instance, Bot: n.Bot, Labels: labels,
			Address: n.Address, Version: n.Version, Renewed: n.Renewed})
	}
	slices.SortStableFunc(out, func(x, y api.Node) int {
		return strings.Compare(firstName(x.Names), firstName(y.Names))
	})
	return out, nil
}

func firstName(names []string) string {
	if len(names) == 0 {
		return ""
	}
	return names[0]
}
