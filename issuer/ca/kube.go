package ca

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// kubeCAName is the subject of the Kubernetes client CA.
const kubeCAName = "MWI Kubernetes client CA"

// kubeCAWait is how long Load waits for another process that is creating
// the Kubernetes client CA to finish.
const kubeCAWait = 2 * time.Second

// kubeCA is an authority that Load creates when the state directory
// predates it: the one that signs Kubernetes client certificates, or the
// admin CA. API servers trust the first through their --client-ca-file,
// and it trusts nothing else, so a Kubernetes certificate can never pass
// as a bot identity.
type kubeCA struct {
	cert    *x509.Certificate
	key     crypto.Signer
	file    string // absolute path of its certificate
	created bool   // Load made it
}

// loadKubeCA reads the Kubernetes client CA from dir, creating it first
// in a state directory made by an mwi-issuer init from before it existed
// (see loadLazyCA).
func loadKubeCA(dir string) (kubeCA, error) { return loadLazyCA(dir, kubeAuthority) }

// kubeAuthority is the Kubernetes client CA.
var kubeAuthority = lazyCA{key: kubeKeyFile, cert: kubeCertFile, name: kubeCAName,
	what: "Kubernetes client CA", after: " (API servers must then trust the new one)"}

// lazyCA names an authority that Load creates in a state directory that
// predates it.
type lazyCA struct {
	key, cert string // file names
	name      string // the certificate's subject
	what      string // for messages
	after     string // what a new one means, for messages
}

// loadLazyCA reads the authority l from dir. If neither of its files
// exists, it creates them first; it never replaces a file, and refuses a
// directory holding only one of the two.
func loadLazyCA(dir string, l lazyCA) (kubeCA, error) {
	keyPath, certPath := filepath.Join(dir, l.key), filepath.Join(dir, l.cert)
	k := kubeCA{file: certPath}
	if abs, err := filepath.Abs(certPath); err == nil {
		k.file = abs
	}
	keyExists, certExists := exists(keyPath), exists(certPath)
	if !keyExists && !certExists {
		switch err := createLazyCA(dir, l); {
		case err == nil:
			k.created = true
		case errors.Is(err, fs.ErrExist):
			// Another process is creating it: wait for it below.
		default:
			return kubeCA{}, fmt.Errorf("create the %s in %s: %w", l.what, dir, err)
		}
	}
	// A process creating the CA writes the key first, then the certificate.
	for deadline := time.Now().Add(kubeCAWait); exists(keyPath) && !exists(certPath) && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	switch keyExists, certExists = exists(keyPath), exists(certPath); {
	case keyExists && !certExists:
		return kubeCA{}, fmt.Errorf("%s exists without %s: restore %s, or remove %s to have a new %s made%s", keyPath, l.cert, l.cert, l.key, l.what, l.after)
	case certExists && !keyExists:
		return kubeCA{}, fmt.Errorf("%s exists without %s: restore %s, or remove %s to have a new %s made%s", certPath, l.key, l.key, l.cert, l.what, l.after)
	}
	var err error
	if k.cert, err = loadCert(certPath); err != nil {
		return kubeCA{}, err
	}
	if k.key, err = loadKey(keyPath); err != nil {
		return kubeCA{}, err
	}
	if pub, ok := k.key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(k.cert.PublicKey) {
		return kubeCA{}, fmt.Errorf("%s does not hold the key of %s", keyPath, certPath)
	}
	return k, nil
}

// createLazyCA makes the new authority l and writes its key, then its
// certificate. Each file appears whole or not at all, and an existing
// file is never replaced: the error then wraps fs.ErrExist.
func createLazyCA(dir string, l lazyCA) error {
	cert, key, err := newCA(l.name, time.Now())
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	// Load runs in mwi-issuer serve; see openStateDir.
	d, err := openStateDir(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.WriteNewFile(l.key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), keyMode); err != nil {
		return err
	}
	return d.WriteNewFile(l.cert, certPEM(cert), keyMode)
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// KubeCA returns the Kubernetes client CA's certificate.
func (a *Authority) KubeCA() *x509.Certificate { return a.kube.cert }

// KubeCAFile returns the absolute path of the bundle of Kubernetes
// client CAs (KubeBundleFile, beside the CA's files): the file to name in
// kube-apiserver's --client-ca-file. It holds both authorities during a
// rotation.
func (a *Authority) KubeCAFile() string {
	return filepath.Join(filepath.Dir(a.kube.file), KubeBundleFile)
}

// Created names the files that Load created because the state directory
// lacked them: the Kubernetes client CA of a directory made by an older
// mwi-issuer init, and its admin CA. It is empty otherwise.
func (a *Authority) Created() []string {
	var files []string
	if a.kube.created {
		files = append(files, filepath.Join(filepath.Dir(a.kube.file), kubeKeyFile), a.kube.file)
	}
	if a.admin.created {
		files = append(files, filepath.Join(filepath.Dir(a.admin.file), adminKeyFile), a.admin.file)
	}
	return files
}

// KubernetesRequest describes a Kubernetes client certificate to sign.
type KubernetesRequest struct {
	CSR       *CSR
	User      string   // the certificate's CN
	Groups    []string // its Os
	NotBefore time.Time
	NotAfter  time.Time
}

// SignKubernetes signs a Kubernetes client certificate for the key of
// r.CSR with a random serial number. API servers take the CN as the user
// and each O as a group; nothing else of the CSR is copied.
func (a *Authority) SignKubernetes(r KubernetesRequest) (*x509.Certificate, error) {
	if r.User == "" {
		return nil, errors.New("ca: refusing to sign a Kubernetes certificate with no user")
	}
	csr, err := r.CSR.checked()
	if err != nil {
		return nil, err
	}
	serial, err := randSerial()
	if err != nil {
		return nil, err
	}
	usage := x509.KeyUsageDigitalSignature
	if _, isRSA := csr.PublicKey.(*rsa.PublicKey); isRSA {
		usage |= x509.KeyUsageKeyEncipherment
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: r.User, Organization: r.Groups},
		NotBefore:    r.NotBefore,
		NotAfter:     r.NotAfter,
		KeyUsage:     usage,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.kube.cert, csr.PublicKey, a.kube.key)
	if err != nil {
		return nil, fmt.Errorf("ca: sign Kubernetes certificate: %w", err)
	}
	return x509.ParseCertificate(der)
}
