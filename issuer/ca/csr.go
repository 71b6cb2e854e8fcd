package ca

import (
	"crypto"
	"crypto/x509"
	"errors"
)

// CSR is a certificate request whose signature has been checked: whoever
// sent it holds the private key of its public key. CheckCSR makes one,
// and SignIdentity and SignKubernetes take one, so that the signature,
// an ECDSA verification as costly as a TLS handshake's, is checked once
// per request however many certificates are signed for its key.
type CSR struct {
	req *x509.CertificateRequest
}

// CheckCSR checks the signature of req and returns it as a CSR. Its
// error is the signature check's.
func CheckCSR(req *x509.CertificateRequest) (*CSR, error) {
	if req == nil {
		return nil, errors.New("no certificate request")
	}
	if err := req.CheckSignature(); err != nil {
		return nil, err
	}
	return &CSR{req: req}, nil
}

// PublicKey returns the key the request is for.
func (c *CSR) PublicKey() crypto.PublicKey { return c.req.PublicKey }

// RawSubjectPublicKeyInfo returns the DER encoding of the key.
func (c *CSR) RawSubjectPublicKeyInfo() []byte { return c.req.RawSubjectPublicKeyInfo }

// checked returns the request, or an error if c was not made by CheckCSR
// (the zero CSR, or nil).
func (c *CSR) checked() (*x509.CertificateRequest, error) {
	if c == nil || c.req == nil {
		return nil, errors.New("ca: certificate request not checked (use CheckCSR)")
	}
	return c.req, nil
}
