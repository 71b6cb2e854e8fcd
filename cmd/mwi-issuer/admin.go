package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/cli"
	"github.com/mwi-project/mwi/internal/safefs"
	"github.com/mwi-project/mwi/issuer/server"
)

// The files of an admin identity directory, as mwi-issuer admin issue
// writes them.
const (
	identityCertFile = "identity.crt"
	identityKeyFile  = "identity.key"
	identityCAFile   = "issuer_ca.crt"
)

// adminConn is where an admin command sends its requests: the admin
// socket, or the issuer's HTTPS API with an admin identity.
type adminConn struct {
	socket   string
	issuer   string // host:port
	identity string // directory
}

// adminSocketFlags adds the flags that say where the issuer's admin API
// is: its socket, on the issuer's machine, or its address and an admin
// identity, from anywhere.
func (e *env) adminSocketFlags(fs *pflag.FlagSet) {
	e.localAdminFlags(fs)
	fs.StringVar(&e.issuer, "issuer", "", "issuer `ADDR` (host:port) to administer remotely, with --identity (default $MWI_ISSUER)")
	fs.StringVar(&e.identity, "identity", "", "admin identity `DIR` made by mwi-issuer admin issue, for --issuer (default $MWI_IDENTITY)")
}

// localAdminFlags adds the flags that locate the admin socket.
func (e *env) localAdminFlags(fs *pflag.FlagSet) {
	fs.StringVar(&e.state, "state", "", "issuer state `DIR`; the socket is STATE/admin.sock")
	fs.StringVar(&e.adminSocket, "admin-socket", "", "admin socket `PATH` (default $MWI_ADMIN_SOCKET)")
}

// socket returns where the flags of adminSocketFlags, or else the
// environment, say the admin API is. It is a usage error to name both the
// socket and a remote issuer, or neither.
func (e *env) socket() (adminConn, error) {
	local := e.state != "" || e.adminSocket != ""
	remote := e.issuer != "" || e.identity != ""
	if !local && !remote {
		// The environment is looked at only when no flag says.
		e.adminSocket, e.issuer, e.identity = os.Getenv("MWI_ADMIN_SOCKET"), os.Getenv("MWI_ISSUER"), os.Getenv("MWI_IDENTITY")
		local, remote = e.adminSocket != "", e.issuer != "" || e.identity != ""
		if local && remote {
			return adminConn{}, cli.Usagef("$MWI_ADMIN_SOCKET and $MWI_ISSUER/$MWI_IDENTITY are both set: unset one, or name the issuer with --admin-socket or --issuer")
		}
	}
	switch {
	case local && remote:
		return adminConn{}, cli.Usagef("name the issuer one way: --state or --admin-socket on its machine, or --issuer and --identity remotely, not both")
	case remote && e.issuer == "":
		return adminConn{}, cli.Usagef("--identity needs --issuer ADDR, the issuer's host:port")
	case remote && e.identity == "":
		return adminConn{}, cli.Usagef("--issuer needs --identity DIR, an admin identity made on the issuer's machine by mwi-issuer admin issue --out DIR")
	case remote:
		return adminConn{issuer: e.issuer, identity: e.identity}, nil
	case e.adminSocket != "":
		return adminConn{socket: e.adminSocket}, nil
	case e.state != "":
		return adminConn{socket: filepath.Join(e.state, "admin.sock")}, nil
	}
	return adminConn{}, cli.Usagef("name the issuer: --state DIR or --admin-socket PATH on its machine, or --issuer ADDR --identity DIR remotely")
}

// adminCommand returns "admin issue".
func (e *env) adminCommand() *cobra.Command {
	var out, name string
	var ttl time.Duration
	return group("admin", "administer the issuer remotely",
		command("issue", "", "write an admin identity for --issuer/--identity: a client certificate, its key and the issuer's CA", func([]string) error {
			return e.runAdminIssue(out, name, ttl)
		}, func(fs *pflag.FlagSet) {
			fs.StringVar(&out, "out", "", "`DIR` to write the identity to, made with mode 0700 (required)")
			fs.StringVar(&name, "name", "", "admin `NAME` the audit log records for its requests (default: your user name)")
			fs.DurationVar(&ttl, "ttl", server.DefaultAdminTTL, "`DURATION` the identity is valid for (at most 168h)")
			e.localAdminFlags(fs)
		}),
	)
}

// runAdminIssue makes a key, has the issuer sign an admin identity for it
// over the admin socket, and writes both, with the issuer's CA, to out.
// The key never leaves this process but to its file.
func (e *env) runAdminIssue(out, name string, ttl time.Duration) error {
	if err := required("out", out); err != nil {
		return err
	}
	if ttl < time.Second {
		return cli.Usagef("--ttl: want at least 1s, not %s", ttl)
	}
	if name == "" {
		u, err := user.Current()
		if err != nil {
			return cli.Usagef("--name: cannot tell your user name (%v); name the admin with --name", err)
		}
		name = u.Username
	}
	conn, err := e.socket()
	if err != nil {
		return err
	}
	// The directory is made, through no link, before the issuer signs
	// anything, so that no identity is issued that cannot be written.
	d, err := safefs.MkdirAll(out, 0o700)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Chmod(0o700); err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	req := api.IssueAdminRequest{
		Name:       name,
		CSR:        string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})),
		TTLSeconds: int64(ttl / time.Second),
	}
	var resp api.IssueAdminResponse
	if err := adminCall(conn, http.MethodPost, "/admin/v1/admins", req, &resp); err != nil {
		return err
	}
	err = d.WriteFiles(
		safefs.File{Name: identityKeyFile, Data: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), Mode: 0o600},
		safefs.File{Name: identityCertFile, Data: []byte(resp.Certificate), Mode: 0o600},
		safefs.File{Name: identityCAFile, Data: []byte(resp.IssuerCA), Mode: 0o600},
	)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "admin identity %s written to %s, valid until %s\n", resp.Name, out, resp.Expires.Format(time.RFC3339))
	fmt.Fprintf(e.stdout, "use it with: mwi-issuer --issuer HOST:PORT --identity %s COMMAND\n", out)
	return nil
}

// remoteClient returns an HTTPS client that presents the admin identity
// in dir and trusts only the issuer CA found there. Its files are read as
// trusted files are (see safefs.ReadFile: no link, and no other user can
// have changed them), and its key must be readable by its owner only, as
// OpenSSH asks of a private key.
func remoteClient(dir, issuer string) (*http.Client, error) {
	files, err := readIdentityDir(dir)
	if err != nil {
		return nil, fmt.Errorf("admin identity %s (made by mwi-issuer admin issue --out DIR): %w", dir, err)
	}
	cert, err := tls.X509KeyPair(files[identityCertFile], files[identityKeyFile])
	if err != nil {
		return nil, fmt.Errorf("admin identity %s (made by mwi-issuer admin issue --out DIR): %w", dir, err)
	}
	if now := time.Now(); now.After(cert.Leaf.NotAfter) {
		return nil, fmt.Errorf("the admin identity in %s expired at %s; issue a new one on the issuer's machine with mwi-issuer admin issue --out DIR",
			dir, cert.Leaf.NotAfter.Format(time.RFC3339))
	}
	caPEM := files[identityCAFile]
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s holds no certificate", filepath.Join(dir, identityCAFile))
	}
	if _, _, err := net.SplitHostPort(issuer); err != nil {
		return nil, cli.Usagef("--issuer %q: want host:port", issuer)
	}
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			RootCAs:      roots,
			Certificates: []tls.Certificate{cert},
		}},
	}, nil
}

// readIdentityDir reads the files of the admin identity directory dir.
func readIdentityDir(dir string) (map[string][]byte, error) {
	d, err := safefs.OpenDir(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	files := map[string][]byte{}
	for _, name := range []string{identityCertFile, identityKeyFile, identityCAFile} {
		data, err := d.ReadFile(name, 1<<20)
		if err != nil {
			return nil, err
		}
		files[name] = data
	}
	var st unix.Stat_t
	if err := unix.Fstatat(d.Fd(), identityKeyFile, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, &os.PathError{Op: "stat", Path: filepath.Join(d.Path(), identityKeyFile), Err: err}
	}
	if perm := st.Mode & 0o777; perm&0o077 != 0 {
		return nil, fmt.Errorf("%s: its group or others can read it (mode %04o); chmod 600 it, or issue a new identity, as this key may have been read",
			filepath.Join(d.Path(), identityKeyFile), perm)
	}
	return files, nil
}
