package loadgen

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// stepCA is step-ca, Smallstep's CA, running for comparison, with the
// bodies of the requests to send it.
//
// Each request, on a new TLS connection, asks POST /1.0/ssh/sign for an
// SSH user certificate and, in the same request, an X.509 identity
// certificate for a CSR (identityCSR), authorised by a one-time token of a
// JWK provisioner. That is what a renewal gets from the issuer: an SSH
// certificate and an identity certificate. The tokens, like the keys, are
// made before the measurement.
type stepCA struct {
	cmd    *exec.Cmd
	tmp    string
	t      target
	bodies []stepSSHSign
}

// startStepCA starts step-ca from the directory c.StepCA (step-ca and step
// v0.30.2), with a request for each of keys. step ca init makes the CA in
// a temporary directory, with its defaults (P-256 keys, a badger database,
// request logs on standard error, kept in a file).
func startStepCA(ctx context.Context, c Config, keys []keySet) (_ *stepCA, err error) {
	stepca, step := filepath.Join(c.StepCA, "step-ca"), filepath.Join(c.StepCA, "step")
	for _, p := range []string{stepca, step} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("%s not found: comparison skipped", p)
		}
	}
	s := &stepCA{}
	if s.tmp, err = os.MkdirTemp("", "mwi-loadgen-stepca-"); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	pw := filepath.Join(s.tmp, "password")
	if err := os.WriteFile(pw, []byte("load-test-password\n"), 0o600); err != nil {
		return nil, err
	}
	stepPath := filepath.Join(s.tmp, "step")
	init := exec.CommandContext(ctx, step, "ca", "init", "--name", "mwi-load", "--dns", "127.0.0.1", "--address", addr,
		"--provisioner", "admin", "--password-file", pw, "--provisioner-password-file", pw, "--ssh", "--deployment-type", "standalone")
	init.Env = append(os.Environ(), "STEPPATH="+stepPath)
	if out, err := init.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("step ca init: %v: %s", err, out)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	const provisioner = "loadgen"
	kid := jwkThumbprint(&key.PublicKey)
	if err := addJWKProvisioner(filepath.Join(stepPath, "config", "ca.json"), provisioner, kid, &key.PublicKey); err != nil {
		return nil, err
	}
	args := []string{stepca, "--password-file", pw, filepath.Join(stepPath, "config", "ca.json")}
	if c.Pin {
		args = append([]string{"taskset", "-c", "0"}, args...)
	}
	s.cmd = exec.Command(args[0], args[1:]...)
	s.cmd.Env = append(os.Environ(), "STEPPATH="+stepPath)
	logPath := filepath.Join(s.tmp, "step-ca.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := s.cmd.Start(); err != nil {
		s.cmd = nil
		return nil, err
	}
	rootPEM, err := os.ReadFile(filepath.Join(stepPath, "certs", "root_ca.crt"))
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rootPEM)
	s.t = target{addr: addr, serverName: "127.0.0.1", roots: roots}
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := post(ctx, s.t, nil, "/health", nil, nil)
		if err == nil || isHTTPError(err) {
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("step-ca did not answer within 60s: %v\n%s", err, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
	aud := "https://" + addr + "/1.0/ssh/sign"
	s.bodies = make([]stepSSHSign, len(keys))
	now := time.Now()
	for i, ks := range keys {
		ott, err := jwkToken(key, kid, provisioner, ks.cn, aud, now)
		if err != nil {
			return nil, err
		}
		s.bodies[i] = stepSSHSign{
			PublicKey: ks.sshPub.Marshal(), OTT: ott, CertType: "user", KeyID: ks.cn,
			Principals: []string{"load"}, ValidBefore: c.TTL.String(), IdentityCSR: ks.csrPEM,
		}
	}
	return s, nil
}

// run sends requests [from, to) and measures step-ca's CPU time.
func (s *stepCA) run(ctx context.Context, e *env, from, to int) Phase {
	se := &env{c: e.c, log: e.log, pids: []int{s.cmd.Process.Pid}}
	return se.phase(ctx, "step-ca", to-from, func(ctx context.Context, i int) error {
		var resp struct {
			Crt         string   `json:"crt"`
			IdentityCrt []string `json:"identityCrt"`
		}
		if err := post(ctx, s.t, nil, "/1.0/ssh/sign", s.bodies[from+i], &resp); err != nil {
			return err
		}
		if resp.Crt == "" || len(resp.IdentityCrt) == 0 {
			return fmt.Errorf("step-ca answered without an SSH or an identity certificate")
		}
		return nil
	})
}

func (s *stepCA) close() {
	if s.cmd != nil {
		s.cmd.Process.Signal(syscall.SIGTERM)
		s.cmd.Wait()
	}
	os.RemoveAll(s.tmp)
}

// isHTTPError reports whether err is an answer with an error status,
// rather than no answer.
func isHTTPError(err error) bool {
	var se *statusError
	return errors.As(err, &se)
}

// stepSSHSign is the body of step-ca's POST /1.0/ssh/sign.
type stepSSHSign struct {
	PublicKey   []byte   `json:"publicKey"`
	OTT         string   `json:"ott"`
	CertType    string   `json:"certType"`
	KeyID       string   `json:"keyID"`
	Principals  []string `json:"principals"`
	ValidBefore string   `json:"validBefore,omitempty"`
	IdentityCSR string   `json:"identityCSR"`
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func coord(n *big.Int) []byte { return n.FillBytes(make([]byte, 32)) }

// jwkThumbprint is the RFC 7638 thumbprint of a P-256 public key, the key
// ID step uses for its provisioners.
func jwkThumbprint(pub *ecdsa.PublicKey) string {
	canonical := fmt.Sprintf(`{"crv":"P-256","kty":"EC","x":"%s","y":"%s"}`, b64(coord(pub.X)), b64(coord(pub.Y)))
	sum := sha256.Sum256([]byte(canonical))
	return b64(sum[:])
}

// addJWKProvisioner adds a JWK provisioner with the public key pub, SSH
// enabled, to step-ca's configuration file.
func addJWKProvisioner(path, name, kid string, pub *ecdsa.PublicKey) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var cfg map[string]any
	if err := json.Unmarshal(data, &cfg); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	auth, ok := cfg["authority"].(map[string]any)
	if !ok {
		return fmt.Errorf("%s: no authority section", path)
	}
	provs, _ := auth["provisioners"].([]any)
	auth["provisioners"] = append(provs, map[string]any{
		"type": "JWK",
		"name": name,
		"key": map[string]any{
			"use": "sig", "kty": "EC", "kid": kid, "crv": "P-256", "alg": "ES256",
			"x": b64(coord(pub.X)), "y": b64(coord(pub.Y)),
		},
		"claims": map[string]any{"enableSSHCA": true},
	})
	out, err := json.MarshalIndent(cfg, "", "\t")
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, 0o600)
}

// jwkToken makes a one-time token of the JWK provisioner for an SSH user
// certificate, as step ssh certificate does: an ES256 JWT with a unique
// jti, which step-ca accepts once.
func jwkToken(key *ecdsa.PrivateKey, kid, iss, sub, aud string, now time.Time) (string, error) {
	var jti [16]byte
	rand.Read(jti[:])
	header, _ := json.Marshal(map[string]string{"alg": "ES256", "kid": kid, "typ": "JWT"})
	claims, _ := json.Marshal(map[string]any{
		"iss": iss, "sub": sub, "aud": aud, "jti": hex.EncodeToString(jti[:]),
		"iat": now.Unix(), "nbf": now.Add(-time.Minute).Unix(), "exp": now.Add(time.Hour).Unix(),
		"sans": []string{sub},
		"step": map[string]any{"ssh": map[string]any{"certType": "user", "keyID": sub, "principals": []string{"load"}}},
	})
	signing := b64(header) + "." + b64(claims)
	sum := sha256.Sum256([]byte(signing))
	r, s, err := ecdsa.Sign(rand.Reader, key, sum[:])
	if err != nil {
		return "", err
	}
	return signing + "." + b64(append(coord(r), coord(s)...)), nil
}
