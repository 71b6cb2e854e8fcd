// Package kubeconfig renders the kubeconfig files that mwid hands to
// kubectl: one cluster, user and context for each Kubernetes cluster mwid
// holds a certificate for.
//
// By default a user is an exec credential plugin, `mwictl kube-credential`,
// that asks mwid for the certificate and key each time kubectl needs them,
// so that the key is never written to disk. With Embed, the certificate and
// key are written inline instead, for tools that cannot run a plugin; the
// file is then a secret.
//
// The types mirror the fields of kubeconfig's v1 Config that are used; the
// package does not depend on client-go.
package kubeconfig

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ExecAPIVersion is the client.authentication.k8s.io version the exec
// plugin speaks.
const ExecAPIVersion = "client.authentication.k8s.io/v1"

// DefaultContextTemplate names each context after its cluster.
const DefaultContextTemplate = "{{.Cluster}}"

// Cluster is one cluster to render.
type Cluster struct {
	Name   string
	Server string
	CAData []byte // PEM; empty means the system's roots
	// CertPEM and KeyPEM are written inline when Options.Embed is set.
	CertPEM []byte
	KeyPEM  []byte
}

// Options say how to render.
type Options struct {
	// Bot is the bot's name, for the context template.
	Bot string
	// Mwictl is the absolute path of the mwictl that the exec plugin runs,
	// and Socket the API socket it is to ask.
	Mwictl string
	Socket string
	// ContextTemplate names the contexts: text in which {{.Cluster}} and
	// {{.Bot}} are replaced; empty means DefaultContextTemplate.
	ContextTemplate string
	// Current is the cluster whose context is current; empty means the
	// first.
	Current string
	// Embed writes the certificates and keys inline instead of the exec
	// plugin.
	Embed bool
}

// Config is a kubeconfig (v1 Config).
type Config struct {
	APIVersion     string         `yaml:"apiVersion"`
	Kind           string         `yaml:"kind"`
	Clusters       []NamedCluster `yaml:"clusters"`
	Users          []NamedUser    `yaml:"users"`
	Contexts       []NamedContext `yaml:"contexts"`
	CurrentContext string         `yaml:"current-context"`
}

// NamedCluster is an entry of a kubeconfig's clusters.
type NamedCluster struct {
	Name    string      `yaml:"name"`
	Cluster ClusterInfo `yaml:"cluster"`
}

// ClusterInfo is how to reach an API server.
type ClusterInfo struct {
	Server                   string `yaml:"server"`
	CertificateAuthorityData string `yaml:"certificate-authority-data,omitempty"`
}

// NamedUser is an entry of a kubeconfig's users.
type NamedUser struct {
	Name string   `yaml:"name"`
	User AuthInfo `yaml:"user"`
}

// AuthInfo is how a user authenticates: an exec plugin, or a certificate
// and key inline.
type AuthInfo struct {
	ClientCertificateData string      `yaml:"client-certificate-data,omitempty"`
	ClientKeyData         string      `yaml:"client-key-data,omitempty"`
	Exec                  *ExecConfig `yaml:"exec,omitempty"`
}

// ExecConfig is an exec credential plugin.
type ExecConfig struct {
	APIVersion         string   `yaml:"apiVersion"`
	Command            string   `yaml:"command"`
	Args               []string `yaml:"args"`
	InstallHint        string   `yaml:"installHint,omitempty"`
	InteractiveMode    string   `yaml:"interactiveMode"`
	ProvideClusterInfo bool     `yaml:"provideClusterInfo"`
}

// NamedContext is an entry of a kubeconfig's contexts.
type NamedContext struct {
	Name    string      `yaml:"name"`
	Context ContextInfo `yaml:"context"`
}

// ContextInfo pairs a cluster with a user.
type ContextInfo struct {
	Cluster string `yaml:"cluster"`
	User    string `yaml:"user"`
}

// installHint is what kubectl shows when it cannot run the plugin.
const installHint = "mwictl is installed with mwid, which must be running: see mwictl status"

// Build returns the kubeconfig for clusters.
func Build(clusters []Cluster, o Options) (*Config, error) {
	if len(clusters) == 0 {
		return nil, errors.New("no clusters")
	}
	if !o.Embed && (o.Mwictl == "" || o.Socket == "") {
		return nil, errors.New("the exec plugin needs the paths of mwictl and of mwid's API socket")
	}
	names, err := contextNames(clusters, o)
	if err != nil {
		return nil, err
	}
	c := &Config{APIVersion: "v1", Kind: "Config"}
	for i, cl := range clusters {
		ci := ClusterInfo{Server: cl.Server}
		if len(cl.CAData) > 0 {
			ci.CertificateAuthorityData = base64.StdEncoding.EncodeToString(cl.CAData)
		}
		var user AuthInfo
		if o.Embed {
			if len(cl.CertPEM) == 0 || len(cl.KeyPEM) == 0 {
				return nil, fmt.Errorf("cluster %s: no certificate and key to embed", cl.Name)
			}
			user.ClientCertificateData = base64.StdEncoding.EncodeToString(cl.CertPEM)
			user.ClientKeyData = base64.StdEncoding.EncodeToString(cl.KeyPEM)
		} else {
			user.Exec = &ExecConfig{
				APIVersion:      ExecAPIVersion,
				Command:         o.Mwictl,
				Args:            []string{"--socket", o.Socket, "kube-credential", "--cluster", cl.Name},
				InstallHint:     installHint,
				InteractiveMode: "Never",
			}
		}
		c.Clusters = append(c.Clusters, NamedCluster{Name: cl.Name, Cluster: ci})
		c.Users = append(c.Users, NamedUser{Name: names[i], User: user})
		c.Contexts = append(c.Contexts, NamedContext{Name: names[i], Context: ContextInfo{Cluster: cl.Name, User: names[i]}})
		if cl.Name == o.Current || (o.Current == "" && i == 0) {
			c.CurrentContext = names[i]
		}
	}
	if c.CurrentContext == "" {
		return nil, fmt.Errorf("cluster %s is not among the clusters rendered", o.Current)
	}
	return c, nil
}

// Render returns the kubeconfig for clusters as YAML.
func Render(clusters []Cluster, o Options) ([]byte, error) {
	c, err := Build(clusters, o)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if o.Embed {
		b.WriteString("# kubeconfig from mwid, with the client certificates and private keys inline: keep it secret.\n")
	} else {
		b.WriteString("# kubeconfig from mwid: kubectl gets short-lived credentials from mwictl kube-credential.\n")
	}
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// maxContextTemplate bounds a context template; names are short.
const maxContextTemplate = 256

// contextField matches the fields a context template may use.
var contextField = regexp.MustCompile(`\{\{\s*\.(Cluster|Bot)\s*\}\}`)

// contextNames runs the context template for each cluster and checks that
// the names are usable and distinct.
func contextNames(clusters []Cluster, o Options) ([]string, error) {
	text := o.ContextTemplate
	if text == "" {
		text = DefaultContextTemplate
	}
	// Only the two fields are substituted, never a text/template program:
	// the template comes from an API caller, and a template's loops could
	// make mwid spend unbounded memory and time.
	if len(text) > maxContextTemplate {
		return nil, fmt.Errorf("context template is longer than %d bytes", maxContextTemplate)
	}
	if rest := contextField.ReplaceAllString(text, ""); strings.Contains(rest, "{{") || strings.Contains(rest, "}}") {
		return nil, fmt.Errorf("context template %q: it may use only {{.Cluster}} and {{.Bot}}", text)
	}
	names := make([]string, len(clusters))
	seen := map[string]string{}
	for i, cl := range clusters {
		name := contextField.ReplaceAllStringFunc(text, func(f string) string {
			if strings.Contains(f, "Cluster") {
				return cl.Name
			}
			return o.Bot
		})
		switch {
		case strings.TrimSpace(name) == "":
			return nil, fmt.Errorf("context template %q gives an empty name for cluster %s", text, cl.Name)
		case strings.ContainsFunc(name, func(r rune) bool { return r < ' ' || r == 0x7f }):
			return nil, fmt.Errorf("context template %q gives a name with control characters for cluster %s", text, cl.Name)
		}
		if other, dup := seen[name]; dup {
			return nil, fmt.Errorf("context template %q gives clusters %s and %s the same name %q; use {{.Cluster}} in it", text, other, cl.Name, name)
		}
		seen[name] = cl.Name
		names[i] = name
	}
	return names, nil
}
