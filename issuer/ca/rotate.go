package ca

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"path/filepath"
	"time"
)

// RotateServing replaces the serving certificate in dir, tls.key and
// tls.crt, with a new key and a certificate for hosts signed by the
// existing TLS authority. It never changes an authority, so daemons that
// pin the TLS authority (or trust its certificate) go on trusting the
// issuer. With no hosts, the new certificate names the hosts of the
// current one.
//
// Both new files are written in full and synced before either replaces
// its predecessor, each by a rename, so neither is ever seen half written.
// The two renames are not one step: a reader that loads the pair between
// them finds a key that does not match the certificate and fails, and a
// crash between them leaves such a pair, which running RotateServing
// again repairs. Rotate while the issuer is stopped, or restart it after.
func RotateServing(dir string, hosts []string) error {
	if !Exists(dir) {
		return fmt.Errorf("%s holds no issuer (no %s); run mwi-issuer init first", dir, sshUserCAFile)
	}
	caCert, err := loadCert(filepath.Join(dir, tlsCACertFile))
	if err != nil {
		return fmt.Errorf("TLS authority: %w", err)
	}
	caKey, err := loadKey(filepath.Join(dir, tlsCAKeyFile))
	if err != nil {
		return fmt.Errorf("TLS authority: %w", err)
	}
	if !publicKeyEqual(caKey.Public(), caCert.PublicKey) {
		return fmt.Errorf("TLS authority: %s does not hold the key of %s", tlsCAKeyFile, tlsCACertFile)
	}
	now := time.Now()
	if !now.Before(caCert.NotAfter) {
		return fmt.Errorf("TLS authority expired at %s; a new serving certificate from it would not verify", caCert.NotAfter.Format(time.RFC3339))
	}
	for _, h := range hosts {
		if h == "" {
			return errors.New("ca: empty host name for the serving certificate")
		}
	}
	if len(hosts) == 0 {
		if hosts, err = servingHosts(filepath.Join(dir, servingCertFile)); err != nil {
			return fmt.Errorf("%w; name the hosts of the new certificate", err)
		}
	}
	serving, servingKey, err := newServing(caCert, caKey, hosts, now)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(servingKey)
	if err != nil {
		return err
	}
	return replaceFiles(dir, []replacement{
		{servingKeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})},
		{servingCertFile, append(certPEM(serving), certPEM(caCert)...)},
	})
}

// servingHosts returns the DNS names and IP addresses of the serving
// certificate at path, the first certificate of the chain it holds.
func servingHosts(path string) ([]string, error) {
	c, err := loadCert(path)
	if err != nil {
		return nil, fmt.Errorf("current serving certificate: %w", err)
	}
	hosts := append([]string(nil), c.DNSNames...)
	for _, ip := range c.IPAddresses {
		hosts = append(hosts, ip.String())
	}
	if len(hosts) == 0 {
		return nil, fmt.Errorf("current serving certificate %s names no host", path)
	}
	return hosts, nil
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	ka, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ka.Equal(b)
}
