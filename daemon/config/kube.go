package config

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"unicode"
)

// KubeconfigFile is the name of the kubeconfig that a kubernetes output
// with a directory writes.
const KubeconfigFile = "kubeconfig.yaml"

// clusterNameRE matches a cluster name as the issuer's resources allow it.
var clusterNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// Kubernetes reports whether the output is of type kubernetes.
func (o Output) Kubernetes() bool { return o.Type == "kubernetes" }

// KubeconfigPath returns where a kubernetes output writes its kubeconfig,
// or "" if it writes none.
func (o Output) KubeconfigPath() string {
	if !o.Kubernetes() || o.Directory == "" {
		return ""
	}
	return filepath.Join(o.Directory, KubeconfigFile)
}

// kubernetesOutput validates an output of type kubernetes at path.
func (v *validator) kubernetesOutput(path string, o fileOutput) Output {
	out := Output{Type: o.Type, Clusters: o.Clusters, Labels: o.Labels, Directory: v.path(o.Directory)}
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"host_key", o.HostKey != ""}, {"certificate", o.Certificate != ""},
		{"names", o.Names != nil}, {"reload_command", o.ReloadCommand != nil},
	} {
		if f.set {
			v.errorf(path+"."+f.name, "is for outputs of type ssh_host, not kubernetes")
		}
	}
	if len(o.Clusters) == 0 && len(o.Labels) == 0 {
		v.errorf(path, `a kubernetes output needs clusters (names) or labels (selectors such as {env: prod}, or {"*": "*"} for every cluster the roles allow)`)
	}
	for _, c := range o.Clusters {
		if !clusterNameRE.MatchString(c) {
			v.errorf(path+".clusters", "%q is not a cluster name (lower case letters, digits, '.', '_' and '-')", c)
		}
	}
	for i, sel := range o.Labels {
		p := fmt.Sprintf("%s.labels.%d", path, i)
		if len(sel) == 0 {
			v.errorf(p, `an empty selector picks nothing; use {"*": "*"} for every cluster the roles allow`)
		}
		for k, val := range sel {
			if k == "" || strings.ContainsFunc(k+val, func(r rune) bool { return unicode.IsControl(r) || unicode.IsSpace(r) }) {
				v.errorf(p, "%q: %q is not a label selector entry", k, val)
			}
			if k == "*" && val != "*" {
				v.errorf(p, `the key "*" takes only the value "*" (every cluster)`)
			}
		}
	}
	return out
}

// onlyKubernetes refuses the kubernetes fields on an output of another type.
func (v *validator) onlyKubernetes(path string, o fileOutput) {
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"clusters", o.Clusters != nil}, {"labels", o.Labels != nil}, {"directory", o.Directory != ""},
	} {
		if f.set {
			v.errorf(path+"."+f.name, "is for outputs of type kubernetes, not %s", o.Type)
		}
	}
}

// kubeDirectories refuses two kubernetes outputs writing one kubeconfig.
func (v *validator) kubeDirectories(outputs []Output) {
	seen := map[string]bool{}
	for i, o := range outputs {
		p := o.KubeconfigPath()
		if p == "" {
			continue
		}
		if seen[p] {
			v.errorf(fmt.Sprintf("outputs.%d.directory", i), "another kubernetes output writes %s already", p)
		}
		seen[p] = true
	}
}
