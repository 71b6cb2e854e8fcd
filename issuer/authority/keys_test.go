package authority_test

import (
	"context"
	"crypto"
	"crypto/dsa"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/fault"
	"github.com/mwi-project/mwi/issuer/audit"
)

// keyHostYAML adds a bot "keyhost" that may have SSH logins, a host name
// and every Kubernetes cluster of kubeResourcesYAML.
const keyHostYAML = `kind: role
version: v1
metadata: {name: keyhost}
spec:
  allow:
    host_names: [build-01.example.com]
---
kind: bot
version: v1
metadata: {name: keyhost}
spec: {roles: [keyhost, kadmin]}
---
`

// TestKeyStrength checks every key the issuer signs, in joins and
// renewals alike: the identity key, the SSH user key, the SSH host keys
// and the Kubernetes key. Only Ed25519, ECDSA on P-256, P-384 and P-521,
// and RSA of 2048 to 8192 bits are certified.
func TestKeyStrength(t *testing.T) {
	e := newEnv(t)
	e.auth.SetResources(loadResources(t, kubeResourcesYAML(keyHostYAML)))

	gen := func(f func() (crypto.Signer, error)) crypto.Signer {
		k, err := f()
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	ec := func(c elliptic.Curve) crypto.Signer {
		return gen(func() (crypto.Signer, error) { return ecdsa.GenerateKey(c, rand.Reader) })
	}
	rsaKey := func(bits int) crypto.Signer {
		return gen(func() (crypto.Signer, error) { return rsa.GenerateKey(rand.Reader, bits) })
	}
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)

	// Keys in a CSR, for the identity and Kubernetes.
	csrKeys := []struct {
		name string
		key  crypto.Signer
		ok   bool
	}{
		{"P-224", ec(elliptic.P224()), false},
		{"P-256", ec(elliptic.P256()), true},
		{"P-384", ec(elliptic.P384()), true},
		{"P-521", ec(elliptic.P521()), true},
		{"RSA 1024", rsaKey(1024), false},
		{"RSA 2048", rsaKey(2048), true},
		{"Ed25519", edKey, true},
	}

	// SSH keys, for the user and host keys. SSH has no P-224; it has DSA,
	// and an RSA public key of any size (no private half is needed).
	var dsaKey dsa.PrivateKey
	if err := dsa.GenerateParameters(&dsaKey.Parameters, rand.Reader, dsa.L1024N160); err != nil {
		t.Fatal(err)
	}
	if err := dsa.GenerateKey(&dsaKey, rand.Reader); err != nil {
		t.Fatal(err)
	}
	// 2^8199 + 1: a modulus of 8200 bits, which only its size matters for.
	huge := new(big.Int).SetBit(big.NewInt(1), 8199, 1)
	sshKeys := []struct {
		name string
		pub  crypto.PublicKey
		ok   bool
	}{
		{"DSA", &dsaKey.PublicKey, false},
		{"RSA 1024", rsaKey(1024).Public(), false},
		{"RSA of 8200 bits", &rsa.PublicKey{N: huge, E: 65537}, false},
		{"RSA 2048", rsaKey(2048).Public(), true},
		{"P-256", ec(elliptic.P256()).Public(), true},
		{"P-521", ec(elliptic.P521()).Public(), true},
		{"Ed25519", edKey.Public(), true},
	}
	authorized := func(pub crypto.PublicKey) string {
		k, err := ssh.NewPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		return string(ssh.MarshalAuthorizedKey(k))
	}

	type edit func(*api.PublicKeys, *[]api.HostKeyRequest, **api.KubernetesRequest)
	var cases []struct {
		name, field string
		edit        edit
		ok          bool
	}
	add := func(name, field string, ok bool, f edit) {
		cases = append(cases, struct {
			name, field string
			edit        edit
			ok          bool
		}{name, field, f, ok})
	}
	for _, k := range csrKeys {
		add("identity "+k.name, "keys.identity_csr", k.ok, func(p *api.PublicKeys, _ *[]api.HostKeyRequest, _ **api.KubernetesRequest) {
			p.IdentityCSR = csrPEM(t, k.key)
		})
		add("kubernetes "+k.name, "kubernetes.csr", k.ok, func(_ *api.PublicKeys, _ *[]api.HostKeyRequest, kr **api.KubernetesRequest) {
			*kr = &api.KubernetesRequest{CSR: csrPEM(t, k.key), Clusters: []string{"prod"}}
		})
	}
	for _, k := range sshKeys {
		add("ssh user "+k.name, "keys.ssh", k.ok, func(p *api.PublicKeys, _ *[]api.HostKeyRequest, _ **api.KubernetesRequest) {
			p.SSH = authorized(k.pub)
		})
		add("ssh host "+k.name, "host_keys[0].public_key", k.ok, func(_ *api.PublicKeys, h *[]api.HostKeyRequest, _ **api.KubernetesRequest) {
			*h = []api.HostKeyRequest{{PublicKey: authorized(k.pub), Names: []string{"build-01.example.com"}}}
		})
	}

	ctx := context.Background()
	// An instance that renews, for the renewal half of each case.
	first, err := e.auth.Join(ctx, api.JoinRequest{JoinMethod: api.JoinMethodToken, Token: e.token(t, "keyhost"), Keys: newKeys(t).pub, TTLSeconds: 600}, nil, "r")
	if err != nil {
		t.Fatal(err)
	}
	_, id, _ := parseCreds(t, e, first)

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			keys := newKeys(t).pub
			var hosts []api.HostKeyRequest
			var kube *api.KubernetesRequest
			tc.edit(&keys, &hosts, &kube)

			offset := e.audit.Len()
			creds, err := e.auth.Join(ctx, api.JoinRequest{
				JoinMethod: api.JoinMethodToken, Token: e.token(t, "keyhost"), Keys: keys, TTLSeconds: 600, HostKeys: hosts, Kubernetes: kube,
			}, nil, "r")
			if tc.ok {
				if err != nil {
					t.Fatalf("join refused: %v", err)
				}
				if len(hosts) > 0 && len(creds.HostCertificates) != 1 || kube != nil && len(creds.Kubernetes) != 1 {
					t.Errorf("credentials = %+v", creds)
				}
			} else {
				e.expectDenied(t, err, offset, audit.EventJoin, api.CodeBadRequest, http.StatusBadRequest)
				var herr *fault.Error
				if errors.As(err, &herr) && !strings.HasPrefix(herr.Message, tc.field+": ") {
					t.Errorf("error %q does not start with %s", herr.Message, tc.field)
				}
			}

			// A renewal checks the same keys.
			offset = e.audit.Len()
			creds, err = e.auth.Renew(ctx, id, api.RenewRequest{Keys: keys, TTLSeconds: 600, HostKeys: hosts, Kubernetes: kube}, "r")
			if tc.ok {
				if err != nil {
					t.Fatalf("renewal refused: %v", err)
				}
				id.Generation = creds.Generation
			} else {
				e.expectDenied(t, err, offset, audit.EventRenew, api.CodeBadRequest, http.StatusBadRequest)
			}
		})
	}
}

// TestIssueAuditSerials checks that every issue line carries its
// certificate's serial as a JSON string: SSH serials in decimal, as
// ssh-keygen -L and sshd's log print them, X.509 serials in hexadecimal.
// A JSON number loses the low bits of a random 64-bit SSH serial in most
// readers, which hold numbers as float64.
func TestIssueAuditSerials(t *testing.T) {
	e := newEnv(t)
	e.auth.SetResources(loadResources(t, kubeResourcesYAML(keyHostYAML)))
	hostPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hostKey, err := ssh.NewPublicKey(hostPub)
	if err != nil {
		t.Fatal(err)
	}
	offset := e.audit.Len()
	creds, err := e.auth.Join(context.Background(), api.JoinRequest{
		JoinMethod: api.JoinMethodToken, Token: e.token(t, "keyhost"), Keys: newKeys(t).pub, TTLSeconds: 600,
		HostKeys: []api.HostKeyRequest{{PublicKey: string(ssh.MarshalAuthorizedKey(hostKey)), Names: []string{"build-01.example.com"}}},
	}, nil, "r")
	if err != nil {
		t.Fatal(err)
	}
	idCert, _, sshCert := parseCreds(t, e, creds)
	if len(creds.HostCertificates) != 1 {
		t.Fatalf("%d host certificates, want 1", len(creds.HostCertificates))
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(creds.HostCertificates[0]))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"identity": idCert.SerialNumber.Text(16),
		"ssh_host": strconv.FormatUint(pub.(*ssh.Certificate).Serial, 10),
	}
	if sshCert != nil {
		want["ssh_user"] = strconv.FormatUint(sshCert.Serial, 10)
	}
	got := map[string]any{}
	for _, l := range e.auditLines(t, offset) {
		if l["outcome"] == audit.Allowed && l["identity_serial"] != nil {
			got["identity"], got["ssh_user"] = l["identity_serial"], l["ssh_serial"]
			if hosts, ok := l["host_certs"].([]any); ok && len(hosts) == 1 {
				got["ssh_host"] = hosts[0].(map[string]any)["serial"]
			}
		}
	}
	for kind, serial := range want {
		if s, ok := got[kind].(string); !ok || s != serial {
			t.Errorf("%s certificate in the audit record: serial %#v, want the string %q", kind, got[kind], serial)
		}
	}
}
