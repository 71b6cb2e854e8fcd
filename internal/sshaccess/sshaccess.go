// Package sshaccess says where MWI's SSH certificates may be used, and
// decides it.
//
// The issuer writes a bot's access rules into its SSH user certificate, in
// the extension named AccessExtension, and a host's labels into its SSH
// host certificate, in the extension named LabelsExtension; the CA's
// signature binds both. A host's AuthorizedPrincipalsCommand (mwictl ssh
// authorized-principals) and mwid's agent then decide offline, with
// Access.Decide, whether a certificate may log in as a login on a host
// with given labels, and with Access.LockedBy whether a lock refuses it.
//
// The rules follow Teleport's roles: a rule applies to a host when every
// label of its node_labels matches one of the host's labels; the value "*"
// matches any value and the key "*" with the value "*" matches every host.
// A rule without node_labels applies to no host. Deny rules win over allow
// rules.
//
// OpenSSH ignores certificate extensions it does not know, so an sshd that
// only trusts the user CA (TrustedUserCAKeys) accepts these certificates
// for any of their principals: the rules bind only the hosts that check
// them.
package sshaccess

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
)

// Extension names. They are in the form name@domain that PROTOCOL.certkeys
// asks of vendor extensions.
const (
	// AccessExtension holds an Access, as JSON, in a user certificate.
	AccessExtension = "mwi-access@mwi-project.github.io"
	// LabelsExtension holds a host's labels, as a JSON object of strings,
	// in a host certificate.
	LabelsExtension = "mwi-labels@mwi-project.github.io"
)

// Version is the version of the Access encoding this package writes and
// the only one it reads.
const Version = 1

// Wildcard matches any value of a label; as a key with the value Wildcard,
// it matches every host.
const Wildcard = "*"

// A Rule is one role's condition: the logins it names on the hosts its
// NodeLabels select.
type Rule struct {
	Role       string              `json:"role"`
	Logins     []string            `json:"logins"`
	NodeLabels map[string][]string `json:"node_labels,omitempty"`
}

// applies reports whether the rule selects a host with the given labels.
func (r Rule) applies(labels map[string]string) bool {
	return MatchLabels(r.NodeLabels, labels)
}

// Access is what a user certificate says about its holder and where it may
// log in.
type Access struct {
	Version  int    `json:"v"`
	Bot      string `json:"bot"`
	Instance string `json:"instance"`
	// Token is the token resource the instance joined with, if it joined
	// with one: a lock of the token refuses it.
	Token string `json:"token,omitempty"`
	// Allow and Deny are the allow and deny conditions of the bot's roles,
	// with login templates expanded.
	Allow []Rule `json:"allow"`
	Deny  []Rule `json:"deny,omitempty"`
	// ForwardAgent is whether one of the bot's roles allows agent
	// forwarding (Teleport's options.forward_agent).
	ForwardAgent bool `json:"forward_agent,omitempty"`
}

// MatchLabels reports whether selector selects a host with the given
// labels: the host has every label of the selector with one of the values
// it lists, or with any value where it lists "*". The selector {"*": ["*"]}
// selects every host; an empty selector selects none.
func MatchLabels(selector map[string][]string, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, values := range selector {
		if k == Wildcard {
			continue
		}
		got, ok := labels[k]
		if !ok || !(slices.Contains(values, Wildcard) || slices.Contains(values, got)) {
			return false
		}
	}
	return true
}

// Decide returns nil if a allows login on a host with the given labels,
// and otherwise an error that says why, for logs and for the person who
// reads them.
func (a *Access) Decide(login string, labels map[string]string) error {
	for _, r := range a.Deny {
		if r.applies(labels) && slices.Contains(r.Logins, login) {
			return fmt.Errorf("role %s of bot %s denies login %s on a host labelled %s", r.Role, a.Bot, login, FormatLabels(labels))
		}
	}
	selected := false
	for _, r := range a.Allow {
		if !r.applies(labels) {
			continue
		}
		if slices.Contains(r.Logins, login) {
			return nil
		}
		selected = true
	}
	if !selected {
		return fmt.Errorf("no role of bot %s selects a host labelled %s (node_labels)", a.Bot, FormatLabels(labels))
	}
	return fmt.Errorf("no role of bot %s allows login %s on a host labelled %s", a.Bot, login, FormatLabels(labels))
}

// Logins returns the logins a allows on a host with the given labels,
// sorted.
func (a *Access) Logins(labels map[string]string) []string {
	var out []string
	for _, r := range a.Allow {
		if r.applies(labels) {
			for _, l := range r.Logins {
				if a.Decide(l, labels) == nil {
					out = append(out, l)
				}
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// LockedBy returns the first of locks that refuses a at time now: a lock
// of its bot, of its instance or of the token it joined with, which has not
// expired.
func (a *Access) LockedBy(locks []api.Lock, now time.Time) (api.Lock, bool) {
	for _, l := range locks {
		if !l.Expires.IsZero() && !now.Before(l.Expires) {
			continue
		}
		switch {
		case l.Instance != "" && l.Instance == a.Instance,
			l.Instance == "" && l.Token == "" && l.Bot != "" && l.Bot == a.Bot,
			l.Token != "" && l.Token == a.Token:
			return l, true
		}
	}
	return api.Lock{}, false
}

// Marshal returns a's encoding for AccessExtension.
func (a *Access) Marshal() (string, error) {
	c := *a
	c.Version = Version
	b, err := json.Marshal(c)
	return string(b), err
}

// maxExtension bounds an extension this package decodes; a bot with many
// roles stays far below it.
const maxExtension = 64 << 10

// ErrNoAccess is returned by FromCertificate for a certificate without
// AccessExtension: one the issuer did not make, or made before access
// rules existed.
var ErrNoAccess = errors.New("sshaccess: the certificate carries no MWI access rules")

// FromCertificate returns the Access of a user certificate. It does not
// check the certificate's signature or validity: the caller must.
func FromCertificate(c *ssh.Certificate) (*Access, error) {
	if c.CertType != ssh.UserCert {
		return nil, errors.New("sshaccess: not a user certificate")
	}
	v, ok := c.Extensions[AccessExtension]
	if !ok {
		return nil, ErrNoAccess
	}
	if len(v) > maxExtension {
		return nil, fmt.Errorf("sshaccess: %s is %d bytes long; at most %d", AccessExtension, len(v), maxExtension)
	}
	var a Access
	if err := json.Unmarshal([]byte(v), &a); err != nil {
		return nil, fmt.Errorf("sshaccess: malformed %s: %v", AccessExtension, err)
	}
	if a.Version != Version {
		return nil, fmt.Errorf("sshaccess: %s version %d, want %d", AccessExtension, a.Version, Version)
	}
	if a.Bot == "" || a.Instance == "" {
		return nil, fmt.Errorf("sshaccess: %s names no bot or instance", AccessExtension)
	}
	return &a, nil
}

// MarshalLabels returns labels' encoding for LabelsExtension.
func MarshalLabels(labels map[string]string) string {
	if labels == nil {
		labels = map[string]string{}
	}
	b, _ := json.Marshal(labels) // a map of strings always encodes
	return string(b)
}

// HostLabels returns the labels of a host certificate: none if it has no
// LabelsExtension. It does not check the certificate's signature or
// validity: the caller must.
func HostLabels(c *ssh.Certificate) (map[string]string, error) {
	if c.CertType != ssh.HostCert {
		return nil, errors.New("sshaccess: not a host certificate")
	}
	v, ok := c.Extensions[LabelsExtension]
	if !ok {
		return map[string]string{}, nil
	}
	if len(v) > maxExtension {
		return nil, fmt.Errorf("sshaccess: %s is %d bytes long; at most %d", LabelsExtension, len(v), maxExtension)
	}
	labels := map[string]string{}
	if err := json.Unmarshal([]byte(v), &labels); err != nil {
		return nil, fmt.Errorf("sshaccess: malformed %s: %v", LabelsExtension, err)
	}
	return labels, nil
}

// FormatLabels formats labels as "k=v,k=v", sorted by key, or "(none)".
func FormatLabels(labels map[string]string) string {
	if len(labels) == 0 {
		return "(none)"
	}
	keys := slices.Collect(maps.Keys(labels))
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k + "=" + labels[k])
	}
	return b.String()
}

// KeyID returns the key ID of the SSH user certificates of a bot's
// instance: "bot=NAME instance=ID". It names no generation, so that one
// entry of the issuer's KRL (which revokes by key ID) covers every
// certificate the instance is given.
func KeyID(bot, instance string) string {
	return "bot=" + bot + " instance=" + instance
}
