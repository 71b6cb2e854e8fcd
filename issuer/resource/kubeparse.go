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
	"slices"
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

// kubeResourceKinds are the kinds of kubernetes_resources entries, as
// Teleport's roles of version v7 name them.
var kubeResourceKinds = []string{
	"*", "pod", "secret", "configmap", "namespace", "service", "serviceaccount", "kube_node",
	"persistentvolume", "persistentvolumeclaim", "deployment", "replicaset", "statefulset",
	"daemonset", "clusterrole", "kube_role", "clusterrolebinding", "rolebinding", "cronjob",
	"job", "certificatesigningrequest", "ingress",
}

// kubeClusterWideKinds are the kinds of kubeResourceKinds that have no
// namespace.
var kubeClusterWideKinds = []string{
	"namespace", "kube_node", "persistentvolume", "clusterrole", "clusterrolebinding", "certificatesigningrequest",
}

// kubeResourceVerbs are the verbs of kubernetes_resources entries.
var kubeResourceVerbs = []string{
	"*", "get", "list", "watch", "create", "update", "patch", "delete", "deletecollection", "exec", "portforward",
}

// kubernetesResources decodes a role's kubernetes_resources at path, for
// a role of the given version: v1 (MWI's) and v7 take kind, namespace,
// name and verbs, as Teleport's v7 does (no verbs is every verb; a kind
// with namespaces needs one); Teleport's v6 takes pods only, with every
// verb; Teleport's v5 has none (MWI refuses them).
//
// Kubernetes enforces them itself, through RBAC objects that name objects
// exactly, so a name or namespace is a plain name or "*", never one of the
// patterns Teleport's proxy matches.
func (p *fileParser) kubernetesResources(n *yaml.Node, path, version string) []KubernetesResource {
	if version == "v5" {
		p.Errorf(yamlfile.Resolve(n).Line, "%s: Teleport's roles of version v5 have none; write the role as version v7", path)
		return nil
	}
	items, _ := p.List(n, path)
	var out []KubernetesResource
	for i, item := range items {
		ipath := fmt.Sprintf("%s[%d]", path, i)
		known := []string{"kind", "namespace", "name", "verbs"}
		pairs, ok := p.Mapping(item, ipath)
		if !ok {
			continue
		}
		m := make(map[string]*yaml.Node, len(pairs))
		good := true
		for _, kv := range pairs {
			switch {
			case slices.Contains(known, kv.Key):
				m[kv.Key] = kv.Value
			case kv.Key == "api_group":
				p.Errorf(kv.Line, "%s.api_group: a field of Teleport's roles of version v8, which MWI does not read; name one of the kinds of version v7", ipath)
				good = false
			default:
				p.Errorf(kv.Line, "unknown field %q in %s (want %s)", kv.Key, ipath, strings.Join(known, ", "))
				good = false
			}
		}
		var kr KubernetesResource
		str := func(key string) string {
			v := m[key]
			if v == nil {
				return ""
			}
			s, ok := p.Scalar(v, ipath+"."+key)
			if !ok {
				good = false
			}
			return s
		}
		kr.Kind, kr.Namespace, kr.Name = str("kind"), str("namespace"), str("name")
		switch {
		case m["kind"] == nil || kr.Kind == "":
			p.Errorf(item.Line, "missing %s.kind (want one of %s)", ipath, strings.Join(kubeResourceKinds, ", "))
			good = false
		case version == "v6" && kr.Kind != "pod":
			p.Errorf(yamlfile.KeyLine(item, "kind"), "invalid %s.kind %q: Teleport's roles of version v6 take pods only; write the role as version v7", ipath, kr.Kind)
			good = false
		case !slices.Contains(kubeResourceKinds, kr.Kind):
			p.Errorf(yamlfile.KeyLine(item, "kind"), "invalid %s.kind %q (want one of %s)", ipath, kr.Kind, strings.Join(kubeResourceKinds, ", "))
			good = false
		}
		if kr.Namespace == "" && good && !slices.Contains(kubeClusterWideKinds, kr.Kind) {
			p.Errorf(item.Line, `missing %s.namespace: objects of kind %s are in namespaces ("*" for all)`, ipath, kr.Kind)
			good = false
		}
		if m["name"] == nil || kr.Name == "" {
			p.Errorf(item.Line, `missing %s.name ("*" for any name)`, ipath)
			good = false
		}
		for _, f := range []struct{ key, v string }{{"name", kr.Name}, {"namespace", kr.Namespace}} {
			if f.v == "" || f.v == "*" {
				continue
			}
			if err := checkKubeName(f.v); err != nil {
				p.Errorf(yamlfile.KeyLine(item, f.key), "invalid %s.%s %q: %v", ipath, f.key, f.v, err)
				good = false
				continue
			}
			// A namespace, and the name of an entry of kind namespace,
			// become the namespace of a Role and a part of its API path:
			// what is not a namespace's name would make an object the API
			// server refuses, or a path that is not the object's.
			if (f.key == "namespace" || kr.Kind == "namespace") && !namespaceRE.MatchString(f.v) {
				p.Errorf(yamlfile.KeyLine(item, f.key), "invalid %s.%s %q: not a Kubernetes namespace name (up to 63 lower-case letters, digits and '-', starting and ending with a letter or digit)", ipath, f.key, f.v)
				good = false
			}
		}
		if v := m["verbs"]; v == nil {
			kr.Verbs = []string{"*"}
		} else {
			verbs, _ := p.List(v, ipath+".verbs")
			for _, vn := range verbs {
				s, ok := p.Scalar(vn, ipath+".verbs entry")
				if !ok {
					good = false
					continue
				}
				if !slices.Contains(kubeResourceVerbs, s) {
					p.Errorf(vn.Line, "invalid verb %q in %s.verbs (want %s)", s, ipath, strings.Join(kubeResourceVerbs, ", "))
					good = false
					continue
				}
				kr.Verbs = append(kr.Verbs, s)
			}
			switch {
			case len(verbs) == 0:
				p.Errorf(yamlfile.Resolve(v).Line, `%s.verbs lists no verbs (leave verbs out, or list "*", for every verb)`, ipath)
				good = false
			case version == "v6" && !slices.Equal(kr.Verbs, []string{"*"}):
				p.Errorf(yamlfile.Resolve(v).Line, `%s.verbs: Teleport's roles of version v6 allow every verb ("*") only; write the role as version v7 to list verbs`, ipath)
				good = false
			case slices.Contains(kr.Verbs, "*") && len(kr.Verbs) > 1:
				p.Errorf(yamlfile.Resolve(v).Line, `%s.verbs: "*" is every verb; list it alone`, ipath)
				good = false
			}
		}
		if good {
			out = append(out, kr)
		}
	}
	return out
}

// teleportV6Resources returns the kubernetes_resources of a Teleport role
// of version v6, whose listed pods are all it restricts: Teleport allows
// objects of every other kind, so they are added, every verb on every one.
// Namespaces are left out, since Teleport's kind namespace allows every
// object in them, pods too.
func teleportV6Resources(pods []KubernetesResource) []KubernetesResource {
	out := slices.Clone(pods)
	for _, kind := range kubeResourceKinds {
		if kind == "*" || kind == "pod" || kind == "namespace" {
			continue
		}
		ns := "*"
		if slices.Contains(kubeClusterWideKinds, kind) {
			ns = ""
		}
		out = append(out, KubernetesResource{Kind: kind, Namespace: ns, Name: "*", Verbs: []string{"*"}})
	}
	return out
}

// namespaceRE matches a Kubernetes namespace name: a DNS label.
var namespaceRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// checkKubeName reports why s cannot name Kubernetes objects in an RBAC
// rule: Teleport's proxy matches globs ("web-*") and regular expressions
// ("^web-.*$"), but RBAC names objects exactly.
func checkKubeName(s string) error {
	switch {
	case strings.ContainsAny(s, "*?") || strings.HasPrefix(s, "^") && strings.HasSuffix(s, "$"):
		return errors.New(`MWI turns kubernetes_resources into Kubernetes RBAC, which names objects exactly: write a name, or "*" for any`)
	case len(s) > 253:
		return errors.New("longer than 253 bytes")
	case strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) || unicode.Is(unicode.Cf, r) }):
		return errors.New("must not contain whitespace or control characters")
	}
	return nil
}
