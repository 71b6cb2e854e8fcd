package daemon

import (
	"crypto/ed25519"
	"crypto/rand"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/daemon/identity"
	"github.com/mwi-project/mwi/daemon/metrics"
	"github.com/mwi-project/mwi/daemon/output"
)

// TestOutputWritesRefuseUnsafeDirectories writes a running daemon's
// kubernetes and ssh_host outputs into directories that safefs refuses: a
// path through a link to a root-only directory, and a directory another
// user owns. Each write fails naming the directory, and nothing lands
// there.
func TestOutputWritesRefuseUnsafeDirectories(t *testing.T) {
	tests := []struct {
		name   string
		root   bool
		setup  func(t *testing.T, base string) // the outputs write in base/link/out
		reason string
	}{
		{"symlinked parent", false, func(t *testing.T, b string) {
			os.MkdirAll(filepath.Join(b, "secret", "out"), 0o700)
			os.Symlink(filepath.Join(b, "secret"), filepath.Join(b, "link"))
		}, "symbolic link"},
		{"symlinked directory", false, func(t *testing.T, b string) {
			os.MkdirAll(filepath.Join(b, "secret"), 0o700)
			os.Mkdir(filepath.Join(b, "link"), 0o700)
			os.Symlink(filepath.Join(b, "secret"), filepath.Join(b, "link", "out"))
		}, "symbolic link"},
		{"another user's directory", true, func(t *testing.T, b string) {
			os.MkdirAll(filepath.Join(b, "link", "out"), 0o700)
			os.Chown(filepath.Join(b, "link", "out"), 65534, 65534)
		}, "owned by uid 65534"},
		{"a directory others can write to", false, func(t *testing.T, b string) {
			os.MkdirAll(filepath.Join(b, "link", "out"), 0o700)
			os.Chmod(filepath.Join(b, "link", "out"), 0o777)
		}, "writable by users other than its owner"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.root && os.Geteuid() != 0 {
				t.Skip("needs root, to give a directory to another user")
			}
			base := t.TempDir()
			tt.setup(t, base)
			out := filepath.Join(base, "link", "out")
			check := func(kind string, err error) {
				t.Helper()
				if err == nil || !strings.Contains(err.Error(), tt.reason) || !strings.Contains(err.Error(), filepath.Join(base, "link")) {
					t.Errorf("%s output: %v; want a refusal naming the directory and saying %q", kind, err, tt.reason)
				}
			}

			kube := []output.Output{output.Kubernetes{Clusters: []string{"prod"}, Directory: out}}
			s := kubeServer(t, kube, time.Hour)
			check("kubernetes", s.writeConfigOutputs(t, kube, s.creds.Current()))

			cert := hostCert(t)
			hostKey := filepath.Join(t.TempDir(), "ssh_host_ed25519_key.pub")
			os.WriteFile(hostKey, ssh.MarshalAuthorizedKey(cert.Key), 0o644)
			host := []output.Output{output.SSHHost{HostKey: hostKey, Certificate: filepath.Join(out, "ssh_host_ed25519_key-cert.pub")}}
			s = &Server{log: slog.New(slog.DiscardHandler), now: time.Now, outputs: map[string]*outputState{}, metrics: metrics.New()}
			check("ssh_host", s.writeConfigOutputs(t, host, &identity.Credentials{HostCerts: []*ssh.Certificate{cert}}))

			filepath.Walk(base, func(p string, fi os.FileInfo, err error) error {
				if err == nil && fi.Mode().IsRegular() {
					t.Errorf("%s was written", p)
				}
				return nil
			})
		})
	}
}

// hostCert returns a host certificate signed by a throwaway authority.
func hostCert(t *testing.T) *ssh.Certificate {
	t.Helper()
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	_, caKey, _ := ed25519.GenerateKey(rand.Reader)
	key, _ := ssh.NewPublicKey(pub)
	ca, _ := ssh.NewSignerFromKey(caKey)
	cert := &ssh.Certificate{Key: key, CertType: ssh.HostCert, ValidPrincipals: []string{"build-01"}, ValidBefore: ssh.CertTimeInfinity}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	return cert
}

// TestHostKeyReadSafely: the issuer certifies the host key that an
// ssh_host output reads, with the host's names. A key that another user
// could have put there (in a directory they own, through a link, or in a
// file they can write) is refused and not sent, or they would get a host
// certificate for their own key.
func TestHostKeyReadSafely(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	key, _ := ssh.NewPublicKey(pub)
	line := ssh.MarshalAuthorizedKey(key)
	tests := []struct {
		name   string
		root   bool
		setup  func(t *testing.T, dir, file string)
		reason string // "" when the key is sent
	}{
		{"root's key", false, func(*testing.T, string, string) {}, ""},
		{"in another user's directory", true, func(t *testing.T, dir, file string) { os.Chown(dir, 65534, 65534) }, "owned by uid 65534"},
		{"another user's file", true, func(t *testing.T, dir, file string) { os.Chown(file, 65534, 65534) }, "owned by uid 65534"},
		{"a file others can write", false, func(t *testing.T, dir, file string) { os.Chmod(file, 0o666) }, "writable by users other than its owner"},
		{"a link", false, func(t *testing.T, dir, file string) {
			os.Rename(file, file+".real")
			os.Symlink(file+".real", file)
		}, "symbolic link"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.root && os.Geteuid() != 0 {
				t.Skip("needs root, to give a file to another user")
			}
			dir := filepath.Join(t.TempDir(), "ssh")
			os.Mkdir(dir, 0o755)
			file := filepath.Join(dir, "ssh_host_ed25519_key.pub")
			if err := os.WriteFile(file, line, 0o644); err != nil {
				t.Fatal(err)
			}
			tt.setup(t, dir, file)
			cert := filepath.Join(t.TempDir(), "ssh_host_ed25519_key-cert.pub")
			s := &Server{log: slog.New(slog.DiscardHandler), now: time.Now, outputs: map[string]*outputState{}, metrics: metrics.New()}
			var req output.Request
			outs := s.requestOutputs([]output.Output{output.SSHHost{HostKey: file, Certificate: cert}}, &req)
			reqs := req.HostKeys()
			if tt.reason == "" {
				if len(outs) != 1 || len(reqs) != 1 || reqs[0].PublicKey != string(line) {
					t.Fatalf("requests %v; want the key", reqs)
				}
				return
			}
			if len(reqs) != 0 {
				t.Fatalf("the key was sent: %v", reqs)
			}
			if st := s.outputs[cert]; st == nil || !strings.Contains(st.lastError, tt.reason) {
				t.Errorf("output state %+v; want an error saying %q", st, tt.reason)
			}
		})
	}
}
