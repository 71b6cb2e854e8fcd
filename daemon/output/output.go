// Package output writes what mwid keeps outside its memory: SSH host
// certificates for sshd, kubeconfigs, and the files of an SSH identity for
// tools that cannot use the agent.
//
// Each kind of output is one type in its own file that implements Output:
// it parses and validates its own block of mwid's configuration, says what
// it needs from the issuer (Request), writes itself from the credentials
// the issuer answered with, and checks, before a one-shot join spends its
// token, that it can be written (Check). Parse builds the output of a
// configuration block through kinds, the one list of output types; adding
// a kind is a new file and a line there. Outputs write their files into a
// Directory, their destination, through safefs, which refuses symbolic
// links and directories that another user controls.
package output

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"slices"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/identity"
)

// kinds are the types of output, in the order messages list them.
var kinds = []kind{
	{"ssh_host", parseSSHHost, sshHostBlock{}},
	{"kubernetes", parseKubernetes, kubernetesBlock{}},
	{"identity", parseIdentity, identityBlock{}},
}

// A kind is a type of output: how to make one from its configuration
// block, and the YAML form of that block (a struct with yaml tags, without
// type), from which a field of another kind is told from an unknown one.
type kind struct {
	typ   string
	parse func(b *Block) Output
	block any
}

// Output is one output of mwid.
//
// An Output's value is its configuration, and nothing else: two outputs
// that are equal (reflect.DeepEqual) ask the issuer for the same
// certificates and write them to the same place. NeedsRenewal relies on
// it, so that a field added to a kind takes effect at a reload without
// anyone having to list it.
type Output interface {
	// Type is the output's type, as the configuration names it.
	Type() string
	// Path is where the output writes, as status shows it, or "" for an
	// output that writes no file.
	Path() string
	// Check reports what would stop the output from being written, so
	// that mwid --oneshot can refuse before it joins. A directory that
	// does not exist yet is made, and checked, when the output is written.
	Check() error
	// Request adds what the output needs from the issuer to r, and
	// returns the function that writes the output from the credentials
	// the issuer answered r with, or nil for an output that writes no
	// file. An output that returns an error is left out of this renewal,
	// so that it does not stop the others.
	Request(r *Request) (Write, error)
}

// Write writes an output from the credentials a renewal obtained, and logs
// what it wrote.
type Write func(ctx context.Context, c *identity.Credentials, env Env) error

// Env is what outputs take from the daemon's configuration as a whole at
// the time they are written.
type Env struct {
	Log      *slog.Logger
	Patterns []string // ssh_config Host patterns: sshconfig.Patterns of ssh.hosts
	Revision string   // the configuration's revision, which ssh_config names
	// Access keeps the access directories of ssh_host outputs; nil where
	// none is kept.
	Access AccessKeeper
}

// AccessKeeper keeps the access directory of ssh_host outputs (access_dir)
// current: the daemon's, with the locks it polls from the issuer.
type AccessKeeper interface {
	// Certified writes the files of the access directory dir for a new
	// host certificate and the issuer's SSH user CAs.
	Certified(dir string, hostCert *ssh.Certificate, userCAs []ssh.PublicKey) error
}

// NeedsRenewal reports whether the outputs next differ from old in any way:
// other certificates asked for, or the same written elsewhere or
// otherwise. Either takes a renewal, which writes the outputs.
func NeedsRenewal(old, next []Output) bool {
	return !reflect.DeepEqual(old, next)
}

// outputError returns err about the output o: "TYPE output PATH: ...".
func outputError(o Output, err error) error {
	return fmt.Errorf("%s output %s: %w", o.Type(), o.Path(), err)
}

// Request is what one renewal asks of the issuer for the outputs.
type Request struct {
	hostKeys   []api.HostKeyRequest
	hostPubs   []ssh.PublicKey
	kubernetes *api.KubernetesRequest
}

// addHostKey asks for a host certificate for key with names and labels, and returns
// its index in the credentials' HostCerts.
func (r *Request) addHostKey(key ssh.PublicKey, names []string, labels map[string]string) int {
	r.hostKeys = append(r.hostKeys, api.HostKeyRequest{PublicKey: string(ssh.MarshalAuthorizedKey(key)), Names: names, Labels: labels})
	r.hostPubs = append(r.hostPubs, key)
	return len(r.hostKeys) - 1
}

// addKubernetes asks for certificates for the clusters that clusters and
// labels select: the request is the union of those of every output.
func (r *Request) addKubernetes(clusters []string, labels []map[string]string) {
	if r.kubernetes == nil {
		r.kubernetes = &api.KubernetesRequest{}
	}
	for _, c := range clusters {
		if !slices.Contains(r.kubernetes.Clusters, c) {
			r.kubernetes.Clusters = append(r.kubernetes.Clusters, c)
		}
	}
	r.kubernetes.Labels = append(r.kubernetes.Labels, labels...)
}

// HostKeys returns the host keys to certify, for the join or renewal.
func (r *Request) HostKeys() []api.HostKeyRequest { return r.hostKeys }

// HostPublicKeys returns the host keys to certify, in the order of
// HostKeys, for identity.Assemble to check the answer against.
func (r *Request) HostPublicKeys() []ssh.PublicKey { return r.hostPubs }

// Kubernetes returns the Kubernetes part of the join or renewal, with a CSR
// for the Kubernetes key made in keys, or nil when no output asks for
// Kubernetes.
func (r *Request) Kubernetes(keys *identity.Keys) (*api.KubernetesRequest, error) {
	if r.kubernetes == nil {
		return nil, nil
	}
	csr, err := keys.KubernetesCSR()
	if err != nil {
		return nil, err
	}
	req := *r.kubernetes
	req.CSR = csr
	return &req, nil
}

// verify is Check for the output o that writes into d: "TYPE output DIR:
// ..." when safefs refuses d.
func verify(o Output, d Directory) error {
	if err := d.Verify(); err != nil {
		return fmt.Errorf("%s output %s: %w", o.Type(), d, err)
	}
	return nil
}
