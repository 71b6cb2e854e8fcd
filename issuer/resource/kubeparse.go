package resource

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"unicode"

	"go.yaml.in/yaml/v3"

	"github.com/mwi-project/mwi/internal/yamlfile"
)

// labelKeyRE matches a label key: letters, digits and "._/:-", starting
// and ending with a letter or digit, as Kubernetes label keys do.
var labelKeyRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/:-]{0,251}[A-Za-z0-9])?$`)

// checkLabelValue reports why s is not a valid label value of a cluster.
func checkLabelValue(s string) error {
	switch {
	case len(s) > 253:
		return errors.New("longer than 253 bytes")
	case s == "*":
		return errors.New(`"*" is a wildcard in roles and selectors, not a value`)
	case strings.ContainsFunc(s, func(r rune) bool { return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) }):
		return errors.New("must not contain control characters")
	}
	return nil
}

// clusterLabels decodes the metadata.labels of a kube_cluster.
func (p *fileParser) clusterLabels(n *yaml.Node) map[string]string {
	pairs, _ := p.Mapping(n, "metadata.labels")
	var labels map[string]string
	for _, kv := range pairs {
		if !labelKeyRE.MatchString(kv.Key) {
			p.Errorf(kv.Line, "invalid label key %q in metadata.labels: must match %s", kv.Key, labelKeyRE)
			continue
		}
		v, ok := p.Scalar(kv.Value, "metadata.labels."+kv.Key)
		if !ok {
			continue
		}
		if err := checkLabelValue(v); err != nil {
			p.Errorf(yamlfile.Resolve(kv.Value).Line, "invalid value %q for label %q: %v", v, kv.Key, err)
			continue
		}
		if labels == nil {
			labels = make(map[string]string)
		}
		labels[kv.Key] = v
	}
	return labels
}

// roleKubernetes decodes the kubernetes_* fields of a role's spec.allow,
// given by field name in a.
func (p *fileParser) roleKubernetes(a map[string]*yaml.Node, r *Role) {
	if n := a["kubernetes_labels"]; n != nil {
		r.KubernetesLabels = p.labelSelector(n, "spec.allow.kubernetes_labels", "cluster")
	}
	for _, f := range []struct {
		field, what string
		dst         *[]string
	}{
		{"kubernetes_groups", "group", &r.KubernetesGroups},
		{"kubernetes_users", "user", &r.KubernetesUsers},
	} {
		n := a[f.field]
		if n == nil {
			continue
		}
		path := "spec.allow." + f.field
		items, _ := p.List(n, path)
		for _, item := range items {
			s, ok := p.Scalar(item, path+" entry")
			if !ok {
				continue
			}
			if err := checkLogin(s, true); err != nil {
				p.Errorf(item.Line, "invalid Kubernetes %s %q in %s: %v", f.what, s, path, err)
				continue
			}
			*f.dst = append(*f.dst, s)
		}
	}
}

// kubeClusterSpec decodes the spec of a kube_cluster; spec may be nil, and
// specLine is where it is, or would be.
func (p *fileParser) kubeClusterSpec(spec *yaml.Node, specLine int) KubeCluster {
	var c KubeCluster
	var m map[string]*yaml.Node
	if spec != nil {
		var ok bool
		if m, ok = p.Fields(spec, "spec", "server", "certificate_authority_data", "certificate_authority_file"); !ok {
			return c
		}
	}
	if n := m["server"]; n == nil {
		p.Errorf(specLine, "missing spec.server (the API server's https URL)")
	} else if s, ok := p.Scalar(n, "spec.server"); ok {
		if err := checkServer(s); err != nil {
			p.Errorf(n.Line, "invalid spec.server %q: %v", s, err)
		} else {
			c.Server = s
		}
	}
	data, file := m["certificate_authority_data"], m["certificate_authority_file"]
	switch {
	case data != nil && file != nil:
		p.Errorf(yamlfile.Resolve(file).Line, "set one of spec.certificate_authority_data and spec.certificate_authority_file, not both")
	case data != nil:
		s, ok := p.Scalar(data, "spec.certificate_authority_data")
		if !ok {
			break
		}
		raw, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(s), ""))
		if err != nil {
			p.Errorf(data.Line, "invalid spec.certificate_authority_data: not base64 (as in a kubeconfig's certificate-authority-data): %v", err)
			break
		}
		if err := checkCAPEM(raw); err != nil {
			p.Errorf(data.Line, "invalid spec.certificate_authority_data: %v", err)
			break
		}
		c.CAData = raw
	case file != nil:
		s, ok := p.Scalar(file, "spec.certificate_authority_file")
		if !ok {
			break
		}
		if s == "" {
			p.Errorf(file.Line, "spec.certificate_authority_file is empty")
			break
		}
		path := s
		if !filepath.IsAbs(path) {
			path = filepath.Join(filepath.Dir(p.Name), path)
		}
		raw, err := readCAFile(path)
		if err != nil {
			p.Errorf(file.Line, "spec.certificate_authority_file: %v", err)
			break
		}
		if err := checkCAPEM(raw); err != nil {
			p.Errorf(file.Line, "spec.certificate_authority_file %s: %v", path, err)
			break
		}
		c.CAData = raw
	default:
		p.Errorf(specLine, "missing spec.certificate_authority_data or spec.certificate_authority_file (the CA of the API server's serving certificate)")
	}
	return c
}

// maxCAFile bounds a cluster's CA bundle, from data or a file: a few
// certificates. Every renewal's answer carries the bundle of each cluster,
// so it must stay small.
const maxCAFile = 64 << 10

// readCAFile reads a CA file, which must be a regular file of at most
// maxCAFile bytes: a device or a pipe named by mistake must not hang the
// issuer or fill its memory.
func readCAFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	switch {
	case err != nil:
		return nil, err
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("%s is not a regular file", path)
	case fi.Size() > maxCAFile:
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxCAFile)
	}
	return io.ReadAll(io.LimitReader(f, maxCAFile+1))
}

// checkServer reports why s is not an API server URL.
func checkServer(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return errors.New("not a URL")
	case u.Scheme != "https":
		return errors.New("want an https:// URL: client certificates need TLS")
	case u.Host == "" || u.Hostname() == "":
		return errors.New("no host")
	case u.User != nil:
		return errors.New("must not hold a user name or password")
	case u.RawQuery != "" || u.Fragment != "":
		return errors.New("must not have a query or fragment")
	}
	return nil
}

// checkCAPEM checks that data is one or more PEM certificates and nothing
// else.
func checkCAPEM(data []byte) error {
	if len(data) > maxCAFile {
		return fmt.Errorf("%d bytes, more than the %d a CA bundle of a few certificates needs", len(data), maxCAFile)
	}
	n := 0
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			if strings.TrimSpace(string(rest)) != "" {
				return errors.New("holds something other than PEM certificates")
			}
			break
		}
		if block.Type != "CERTIFICATE" {
			return fmt.Errorf("holds a PEM %s, want only CERTIFICATE blocks", block.Type)
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return fmt.Errorf("certificate %d: %v", n+1, err)
		}
		n++
	}
	if n == 0 {
		return errors.New("holds no PEM certificate")
	}
	return nil
}
