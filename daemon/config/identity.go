package config

import (
	"fmt"
	"path/filepath"
)

// The files an identity output writes in its directory, and their modes.
const (
	IdentityKeyFile        = "key"          // the SSH private key, OpenSSH format, 0600
	IdentityPublicKeyFile  = "key.pub"      // its public key, 0644
	IdentityCertFile       = "key-cert.pub" // the SSH user certificate, 0644
	IdentityKnownHostsFile = "known_hosts"  // @cert-authority lines for ssh.hosts, 0644
	IdentitySSHConfigFile  = "ssh_config"   // for ssh -F, 0644
)

// Identity reports whether the output is of type identity.
func (o Output) Identity() bool { return o.Type == "identity" }

// IdentityPath returns the path of one of an identity output's files.
func (o Output) IdentityPath(name string) string { return filepath.Join(o.Directory, name) }

// identityOutput validates an output of type identity at path.
func (v *validator) identityOutput(path string, o fileOutput) Output {
	out := Output{Type: o.Type, Directory: v.path(o.Directory)}
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"host_key", o.HostKey != ""}, {"certificate", o.Certificate != ""},
		{"names", o.Names != nil}, {"reload_command", o.ReloadCommand != nil},
		{"clusters", o.Clusters != nil}, {"labels", o.Labels != nil},
	} {
		if f.set {
			v.errorf(path+"."+f.name, "is not a field of outputs of type identity (which take only directory)")
		}
	}
	if o.Directory == "" {
		v.errorf(path+".directory", "required: where to write %s, %s, %s, %s and %s",
			IdentityKeyFile, IdentityPublicKeyFile, IdentityCertFile, IdentityKnownHostsFile, IdentitySSHConfigFile)
	}
	return out
}

// identityDirectories refuses two identity outputs writing one directory.
func (v *validator) identityDirectories(outputs []Output) {
	seen := map[string]bool{}
	for i, o := range outputs {
		if !o.Identity() || o.Directory == "" {
			continue
		}
		if seen[o.Directory] {
			v.errorf(fmt.Sprintf("outputs.%d.directory", i), "another identity output writes to %s already", o.Directory)
		}
		seen[o.Directory] = true
	}
}
