package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
)

// keySet is what one request proposes: a fresh identity key with its CSR,
// and a fresh SSH key. The generator makes them before it measures, so
// that its own key generation does not compete with the issuer.
type keySet struct {
	cn     string // the CSR's subject
	key    *ecdsa.PrivateKey
	csrDER []byte
	csrPEM string
	sshPub ssh.PublicKey
}

// newKeySet makes a P-256 identity key and CSR, as mwid does, and an
// Ed25519 SSH key. cn is the CSR's subject.
func newKeySet(cn string) (keySet, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return keySet{}, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		return keySet{}, err
	}
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return keySet{}, err
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return keySet{}, err
	}
	return keySet{
		cn:     cn,
		key:    key,
		csrDER: der,
		csrPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})),
		sshPub: sshPub,
	}, nil
}

// newKeySets makes n key sets on every core.
func newKeySets(n int, cn func(i int) string) ([]keySet, error) {
	sets := make([]keySet, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				ks, err := newKeySet(cn(i))
				if err != nil {
					mu.Lock()
					first = err
					mu.Unlock()
					return
				}
				sets[i] = ks
			}
		})
	}
	wg.Wait()
	return sets, first
}

func (k keySet) publicKeys() api.PublicKeys {
	return api.PublicKeys{IdentityCSR: k.csrPEM, SSH: string(ssh.MarshalAuthorizedKey(k.sshPub))}
}

// bot is one simulated bot instance with its current identity.
type bot struct {
	instance string
	cert     tls.Certificate
}

// target is one server the generator sends requests to.
type target struct {
	addr       string
	serverName string
	roots      *x509.CertPool
}

// post sends one request to t on a new TLS connection, presenting client
// (if not nil), and decodes a 2xx answer's JSON into out. Every request has
// a connection of its own, as mwid's do: the handshake is part of what is
// measured.
func post(ctx context.Context, t target, client *tls.Certificate, path string, body, out any) error {
	cfg := t.tlsConfig()
	if client != nil {
		cfg.Certificates = []tls.Certificate{*client}
	}
	_, err := postWith(ctx, t, cfg, path, body, out)
	return err
}

// tlsConfig returns the TLS configuration of a connection to t, without a
// client certificate.
func (t target) tlsConfig() *tls.Config {
	return &tls.Config{RootCAs: t.roots, ServerName: t.serverName, NextProtos: []string{"http/1.1"}}
}

// postWith is post on a new connection made with cfg. It reports whether
// the connection resumed a TLS session.
func postWith(ctx context.Context, t target, cfg *tls.Config, path string, body, out any) (resumed bool, err error) {
	data, err := json.Marshal(body)
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	d := tls.Dialer{NetDialer: &net.Dialer{}, Config: cfg}
	c, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return false, err
	}
	conn := c.(*tls.Conn)
	defer conn.Close()
	resumed = conn.ConnectionState().DidResume
	return resumed, exchange(ctx, conn, t, path, data, out)
}

// exchange writes one request with the JSON data to conn and decodes a
// 2xx answer's JSON into out.
func exchange(ctx context.Context, conn net.Conn, t target, path string, data []byte, out any) error {
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	req, err := http.NewRequest(http.MethodPost, "https://"+t.serverName+path, bytes.NewReader(data))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Close = true
	if err := req.Write(conn); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return &statusError{fmt.Sprintf("%s %s: %s: %s", t.addr, path, resp.Status, bytes.TrimSpace(b))}
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

// statusError is an answer with a status other than 2xx.
type statusError struct{ msg string }

func (e *statusError) Error() string { return e.msg }

// identity turns the identity certificate of creds and the key it was
// issued for into a client certificate for the next renewal.
func identity(creds api.Credentials, key *ecdsa.PrivateKey) (tls.Certificate, error) {
	block, _ := pem.Decode([]byte(creds.IdentityCertificate))
	if block == nil {
		return tls.Certificate{}, fmt.Errorf("instance %s: no identity certificate in the answer", creds.Instance)
	}
	return tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: key}, nil
}

// join joins one bot with a one-time token.
func join(ctx context.Context, t target, token string, ks keySet, ttl time.Duration) (bot, error) {
	req := api.JoinRequest{JoinMethod: api.JoinMethodToken, Token: token, Keys: ks.publicKeys(), TTLSeconds: int64(ttl / time.Second)}
	var creds api.Credentials
	if err := post(ctx, t, nil, "/v1/join", req, &creds); err != nil {
		return bot{}, err
	}
	if creds.SSHCertificate == "" {
		return bot{}, fmt.Errorf("join of instance %s: no SSH certificate in the answer", creds.Instance)
	}
	cert, err := identity(creds, ks.key)
	return bot{instance: creds.Instance, cert: cert}, err
}

// renew renews b with the fresh keys ks over mutual TLS with b's identity.
func renew(ctx context.Context, t target, b bot, ks keySet, ttl time.Duration) (bot, error) {
	req := api.RenewRequest{Keys: ks.publicKeys(), TTLSeconds: int64(ttl / time.Second)}
	var creds api.Credentials
	if err := post(ctx, t, &b.cert, "/v1/renew", req, &creds); err != nil {
		return b, err
	}
	if creds.SSHCertificate == "" {
		return b, fmt.Errorf("renewal of instance %s: no SSH certificate in the answer", creds.Instance)
	}
	cert, err := identity(creds, ks.key)
	return bot{instance: b.instance, cert: cert}, err
}
