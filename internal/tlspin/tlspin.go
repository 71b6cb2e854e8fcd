// Package tlspin pins TLS authorities by the hash of their public key.
package tlspin

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Of returns the pin of a certificate: "sha256:" and the base64 SHA-256 of
// its SubjectPublicKeyInfo. Pinning the key rather than the certificate
// keeps the pin valid when the authority is re-issued with the same key.
func Of(c *x509.Certificate) string {
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return "sha256:" + base64.StdEncoding.EncodeToString(sum[:])
}

// Verify checks a server's certificate chain for serverName. With roots it
// verifies against them; without, the authority is taken from the presented
// chain, but only a certificate whose key matches one of pins. When pins are
// given, the verified chain must contain a pinned key in every case.
func Verify(presented []*x509.Certificate, serverName string, roots *x509.CertPool, pins []string) error {
	if len(presented) == 0 {
		return errors.New("server presented no certificate")
	}
	if roots == nil {
		roots = x509.NewCertPool()
		pinned := false
		for _, c := range presented {
			if slices.Contains(pins, Of(c)) {
				roots.AddCert(c)
				pinned = true
			}
		}
		if !pinned && len(pins) > 0 {
			// Most likely a pin copied wrong, or from another issuer.
			return fmt.Errorf("the issuer presented no pinned authority (pins %s): %s", strings.Join(pins, ", "), pinHint)
		}
	}
	inter := x509.NewCertPool()
	for _, c := range presented[1:] {
		inter.AddCert(c)
	}
	chains, err := presented[0].Verify(x509.VerifyOptions{
		DNSName:       serverName,
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		if len(pins) > 0 {
			return fmt.Errorf("issuer certificate does not chain to a pinned authority (pins %s): %w", strings.Join(pins, ", "), err)
		}
		return err
	}
	if len(pins) == 0 {
		return nil
	}
	for _, chain := range chains {
		for _, c := range chain {
			if slices.Contains(pins, Of(c)) {
				return nil
			}
		}
	}
	return fmt.Errorf("issuer certificate chain has no pinned key (pins %s): %s", strings.Join(pins, ", "), pinHint)
}

// pinHint says where the right pin is, for errors that a wrong pin causes.
const pinHint = "the pin must be the ca_pin that mwi-issuer ca prints on the issuer"
