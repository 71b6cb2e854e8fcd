// Package sshconfig renders the OpenSSH client files that mwid hands out:
// an ssh_config block and known_hosts lines that trust the issuer's host
// CAs. The local API and the identity output both use it, so that ssh
// sees one set of settings however it gets them.
package sshconfig

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
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
	c.writeSettings(&b, nil)
	return b.String()
}

// writeSettings writes the settings of a Host block to b; KnownHostsCommand
// gets a --host flag for each of hosts.
func (c Config) writeSettings(b *strings.Builder, hosts []string) {
	if c.Agent != "" {
		fmt.Fprintf(b, "    IdentityAgent %s\n", Quote(c.Agent))
	} else {
		fmt.Fprintf(b, "    IdentityFile %s\n", Quote(c.IdentityFile))
		fmt.Fprintf(b, "    CertificateFile %s\n", Quote(c.CertificateFile))
		b.WriteString("    IdentitiesOnly yes\n")
		b.WriteString("    IdentityAgent none\n")
	}
	if c.Mwictl != "" {
		fmt.Fprintf(b, "    KnownHostsCommand %s --socket %s known-hosts", Quote(c.Mwictl), Quote(c.APISocket))
		for _, h := range hosts {
			fmt.Fprintf(b, " --host %s", Quote(h))
		}
		b.WriteString("\n    UserKnownHostsFile /dev/null\n")
	} else {
		fmt.Fprintf(b, "    UserKnownHostsFile %s\n", Quote(c.KnownHostsFile))
	}
	b.WriteString("    GlobalKnownHostsFile /dev/null\n")
	b.WriteString("    StrictHostKeyChecking yes\n")
	b.WriteString("    UpdateHostKeys no\n")
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

// maxName bounds a host name in an ssh_config Host line: the longest DNS
// name.
const maxName = 253

// CheckName returns an error if name is not a host name that ssh_config
// and known_hosts can carry as it is: only letters, digits, '.', '-',
// '_' and ':' (for IPv6 addresses), not starting with '-'. Everything
// else is refused, not quoted: a space or a comma would make two names, a
// '*', '?' or '!' a pattern, a quote, '#', '%' or a control character
// would be read as syntax, and a leading '-' as an option of a command.
func CheckName(name string) error {
	return checkWord("host name", name, maxName, ":")
}

// CheckLogin returns an error if login is not one that an ssh_config User
// line carries as it is, by the rules of CheckName, with '@' allowed
// besides (some directories make logins of mail addresses) and ':' not.
func CheckLogin(login string) error {
	return checkWord("login", login, 64, "@")
}

func checkWord(what, s string, max int, more string) error {
	switch {
	case s == "":
		return fmt.Errorf("empty %s", what)
	case len(s) > max:
		return fmt.Errorf("%s of %d bytes; at most %d", what, len(s), max)
	case s[0] == '-':
		return fmt.Errorf("%s %q starts with '-'", what, s)
	}
	for _, r := range s {
		ok := 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' ||
			r == '.' || r == '-' || r == '_' || strings.ContainsRune(more, r)
		if !ok {
			return fmt.Errorf("%s %q has the character %q, which ssh_config would not read as part of it", what, s, r)
		}
	}
	return nil
}

// A Host is a Host block for one node: its names, the first the one the
// issuer lists it by, and the login ssh uses there, if not the local user.
type Host struct {
	Names []string
	User  string
}

// Hosts returns the Host blocks for the nodes a bot may reach. localUser
// is the login ssh uses when a block names none: the user who runs ssh.
// A block's User is the first of the node's logins, or none when localUser
// is one of them.
//
// Names and logins that CheckName or CheckLogin refuse are left out, and
// a node without a name or a login left is skipped; each is a warning in
// the second result. The issuer's roles choose host names and logins, but
// a name that is not what it seems in an ssh_config could make the file
// say something else than the issuer did, so they are checked here too.
func Hosts(nodes []api.ReachableNode, localUser string) ([]Host, []string) {
	var hosts []Host
	var warnings []string
	taken := make(map[string]string) // name -> the node that has it
	for _, n := range nodes {
		label := strconv.Quote(n.Name)
		candidates := []string{n.Name}
		for _, name := range n.Names {
			if !slices.Contains(candidates, name) {
				candidates = append(candidates, name)
			}
		}
		var names []string
		for _, name := range candidates {
			if err := CheckName(name); err != nil {
				warnings = append(warnings, fmt.Sprintf("node %s: name skipped: %v", label, err))
				continue
			}
			if other, ok := taken[name]; ok {
				warnings = append(warnings, fmt.Sprintf("node %s: name %s skipped: node %s has it", label, name, strconv.Quote(other)))
				continue
			}
			names = append(names, name)
		}
		var logins []string
		for _, l := range n.Logins {
			if err := CheckLogin(l); err != nil {
				warnings = append(warnings, fmt.Sprintf("node %s: login skipped: %v", label, err))
				continue
			}
			logins = append(logins, l)
		}
		switch {
		case len(names) == 0:
			warnings = append(warnings, fmt.Sprintf("node %s skipped: no name left that ssh_config can carry", label))
			continue
		case len(logins) == 0:
			warnings = append(warnings, fmt.Sprintf("node %s skipped: no login left that ssh_config can carry", label))
			continue
		}
		for _, name := range names {
			taken[name] = n.Name
		}
		h := Host{Names: names}
		if !slices.Contains(logins, localUser) {
			h.User = logins[0]
		}
		hosts = append(hosts, h)
	}
	return hosts, warnings
}

// HostBlocks renders a Host block for each of hosts, with c's settings
// (those of String), except that the known_hosts lines KnownHostsCommand
// prints trust the host CAs for the host's own names rather than for c's
// Patterns. It needs Agent, Mwictl and APISocket. The names and logins
// must have passed CheckName and CheckLogin, as those of Hosts have.
func (c Config) HostBlocks(hosts []Host) string {
	if len(hosts) == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n# Hosts the roles of bot %s let it log in to, from the issuer's node inventory.\n", c.Bot)
	for _, h := range hosts {
		fmt.Fprintf(&b, "Host %s\n", strings.Join(h.Names, " "))
		if h.User != "" {
			fmt.Fprintf(&b, "    User %s\n", h.User)
		}
		c.writeSettings(&b, h.Names)
	}
	return b.String()
}
