package ca

import "crypto/x509"

// IdentityCA returns the certificate of the authority that signs bot
// identities, for the issuer's metrics of when it expires.
func (a *Authority) IdentityCA() *x509.Certificate { return a.identityCA }

// ServingLeaf returns the parsed serving certificate, or nil if it cannot
// be parsed.
func (a *Authority) ServingLeaf() *x509.Certificate {
	if a.serving.Leaf != nil {
		return a.serving.Leaf
	}
	if len(a.serving.Certificate) == 0 {
		return nil
	}
	leaf, err := x509.ParseCertificate(a.serving.Certificate[0])
	if err != nil {
		return nil
	}
	return leaf
}
