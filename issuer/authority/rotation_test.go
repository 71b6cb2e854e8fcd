package authority_test

import (
	"crypto/x509"
	"encoding/pem"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/internal/tlspin"
	"github.com/mwi-project/mwi/issuer/ca"
)

// TestCredentialsFollowRotation checks that the authority signs with the
// authorities of each phase set with SetCAs, and that its answers carry
// every trusted SSH authority and issuer pin.
func TestCredentialsFollowRotation(t *testing.T) {
	e := newEnv(t)
	state := filepath.Join(t.TempDir(), "state")
	if err := ca.Init(state, []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	cur, err := ca.Load(state)
	if err != nil {
		t.Fatal(err)
	}
	e.auth.SetCAs(cur)
	next := map[ca.Type]string{}
	for _, typ := range ca.Types {
		if next[typ], err = ca.CreateNext(state, typ); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		phase    string
		signedBy func(ca.Type) string // fingerprint expected to sign
		trusted  int
	}{
		{ca.PhaseStandby, cur.Fingerprint, 1},
		{ca.PhaseInit, cur.Fingerprint, 2},
		{ca.PhaseUpdateClients, func(t ca.Type) string { return next[t] }, 2},
		{ca.PhaseRollback, cur.Fingerprint, 2},
	} {
		var states []ca.State
		if tc.phase != ca.PhaseStandby {
			for _, typ := range ca.Types {
				states = append(states, ca.State{Type: typ, Phase: tc.phase, Current: cur.Fingerprint(typ), Next: next[typ]})
			}
		}
		a, err := ca.LoadRotating(state, states)
		if err != nil {
			t.Fatal(err)
		}
		e.auth.SetCAs(a)
		creds := e.join(t, e.token(t, "ci"), "deploy")
		if len(creds.SSHUserCAs) != tc.trusted || len(creds.SSHHostCAs) != tc.trusted || len(creds.IssuerCAPins) != tc.trusted {
			t.Errorf("%s: %d user CAs, %d host CAs, %d pins; want %d of each", tc.phase,
				len(creds.SSHUserCAs), len(creds.SSHHostCAs), len(creds.IssuerCAPins), tc.trusted)
		}
		// The text of the set in use, which the authority makes once
		// per set: never that of the phase before.
		for i, k := range a.SSHHostCAs() {
			if i < len(creds.SSHHostCAs) && creds.SSHHostCAs[i] != string(ssh.MarshalAuthorizedKey(k)) {
				t.Errorf("%s: host CA %d is %q, want %q", tc.phase, i, creds.SSHHostCAs[i], ssh.MarshalAuthorizedKey(k))
			}
		}
		if !slices.Equal(creds.IssuerCAPins, a.Pins()) {
			t.Errorf("%s: pins %v, want %v", tc.phase, creds.IssuerCAPins, a.Pins())
		}
		if !slices.Contains(creds.IssuerCAPins, cur.Pin()) {
			t.Errorf("%s: the current TLS authority's pin is missing", tc.phase)
		}
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(creds.SSHCertificate))
		if err != nil {
			t.Fatal(err)
		}
		if got := ssh.FingerprintSHA256(pub.(*ssh.Certificate).SignatureKey); got != tc.signedBy(ca.TypeSSHUser) {
			t.Errorf("%s: user certificate signed by %s, want %s", tc.phase, got, tc.signedBy(ca.TypeSSHUser))
		}
		block, _ := pem.Decode([]byte(creds.IdentityCertificate))
		idCert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		signed := ""
		for _, c := range a.IdentityCAs() {
			if idCert.CheckSignatureFrom(c) == nil {
				signed = tlspin.Of(c)
			}
		}
		if signed != tc.signedBy(ca.TypeIdentity) {
			t.Errorf("%s: identity signed by %s, want %s", tc.phase, signed, tc.signedBy(ca.TypeIdentity))
		}
	}
}
