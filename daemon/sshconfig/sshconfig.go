// Package sshconfig renders the OpenSSH client files that mwid hands out:
// an ssh_config block and known_hosts lines that trust the issuer's host
// CAs. The local API and the identity output both use it, so that ssh
// sees one set of settings however it gets them.
package sshconfig

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"
)

// Patterns returns hosts, the ssh_config Host patterns configured, or "*"
// when there are none.
func Patterns(hosts []string) []string {
	if len(hosts) > 0 {
		return hosts
	}
	return []string{"*"}
}

// KnownHosts returns known_hosts @cert-authority lines that trust cas for
// the host patterns and nothing else.
func KnownHosts(patterns []string, cas []ssh.PublicKey) string {
	// known_hosts names a host on a port other than 22 as "[host]:port";
	// each pattern is given in both forms so that it matches either way.
	var names []string
	for _, p := range patterns {
		names = append(names, p)
		if p != "*" {
			names = append(names, "["+p+"]:*")
		}
	}
	var b strings.Builder
	for _, ca := range cas {
		fmt.Fprintf(&b, "@cert-authority %s %s", strings.Join(names, ","), ssh.MarshalAuthorizedKey(ca))
	}
	return b.String()
}

// Config is an ssh_config block for the host patterns of one bot. Host
// keys are always checked strictly against the issuer's host CAs, with no
// known_hosts file that trust on first use could add to.
//
// A client authenticates either through mwid's agent (Agent is set) or
// with the key and certificate files of an identity output; it learns the
// host CAs either from mwictl (Mwictl and APISocket are set) or from a
// known_hosts file.
type Config struct {
	Bot, Revision string
	Patterns      []string

	Agent string // the agent socket

	IdentityFile    string // the private key, when there is no Agent
	CertificateFile string // its certificate

	Mwictl    string // the mwictl that runs as KnownHostsCommand
	APISocket string // the socket it asks

	KnownHostsFile string // the known_hosts file, when there is no Mwictl
}

// String renders c. Paths are written as given: they are absolute, so
// that ssh -F finds the files from any directory.
func (c Config) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# ssh_config from mwid for bot %s (configuration %s).\n", c.Bot, c.Revision)
	fmt.Fprintf(&b, "Host %s\n", strings.Join(c.Patterns, " "))
	if c.Agent != "" {
		fmt.Fprintf(&b, "    IdentityAgent %s\n", Quote(c.Agent))
	} else {
		fmt.Fprintf(&b, "    IdentityFile %s\n", Quote(c.IdentityFile))
		fmt.Fprintf(&b, "    CertificateFile %s\n", Quote(c.CertificateFile))
		b.WriteString("    IdentitiesOnly yes\n")
		b.WriteString("    IdentityAgent none\n")
	}
	if c.Mwictl != "" {
		fmt.Fprintf(&b, "    KnownHostsCommand %s --socket %s known-hosts\n", Quote(c.Mwictl), Quote(c.APISocket))
		b.WriteString("    UserKnownHostsFile /dev/null\n")
	} else {
		fmt.Fprintf(&b, "    UserKnownHostsFile %s\n", Quote(c.KnownHostsFile))
	}
	b.WriteString("    GlobalKnownHostsFile /dev/null\n")
	b.WriteString("    StrictHostKeyChecking yes\n")
	b.WriteString("    UpdateHostKeys no\n")
	return b.String()
}

// Quote quotes a path for ssh_config when it needs it. A control character
// is escaped rather than written, so no value can start a new line of
// configuration, and "%" is doubled because ssh expands %-tokens in these
// directives.
func Quote(s string) string {
	s = strings.ReplaceAll(s, "%", "%%")
	if strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f || strings.ContainsRune(" \"'\\#%", r) }) {
		return strconv.Quote(s)
	}
	return s
}
