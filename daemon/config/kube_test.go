package config

import (
	"slices"
	"strings"
	"testing"

	"github.com/mwi-project/mwi/daemon/output"
)

const kubeOutputs = `outputs:
  - type: kubernetes
    clusters: [prod, staging]
  - type: kubernetes
    labels:
      - {env: prod, team: a}
      - {"*": "*"}
    directory: kube
`

func TestParseKubernetesOutputs(t *testing.T) {
	c, err := Parse("/etc/mwi/mwid.yaml", []byte(valid+kubeOutputs))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Outputs) != 2 {
		t.Fatalf("outputs = %+v", c.Outputs)
	}
	a, aok := c.Outputs[0].(output.Kubernetes)
	b, bok := c.Outputs[1].(output.Kubernetes)
	if !aok || !slices.Equal(a.Clusters, []string{"prod", "staging"}) || a.Directory != "" || a.Path() != "" {
		t.Errorf("outputs[0] = %+v", a)
	}
	if !bok || len(b.Labels) != 2 || b.Labels[0]["env"] != "prod" || b.Labels[0]["team"] != "a" || b.Labels[1]["*"] != "*" {
		t.Errorf("outputs[1] = %+v", b)
	}
	if b.Directory != "/etc/mwi/kube" || b.Path() != "/etc/mwi/kube/kubeconfig.yaml" {
		t.Errorf("outputs[1] directory %q, kubeconfig %q; want them relative to the file", b.Directory, b.Path())
	}
}

func TestParseKubernetesOutputErrors(t *testing.T) {
	for _, tc := range []struct {
		name, outputs, want string
	}{
		{"no selector", "outputs:\n  - type: kubernetes\n    directory: x\n",
			"mwid.yaml:22: outputs.0: a kubernetes output needs clusters (names) or labels"},
		{"bad cluster name", "outputs:\n  - type: kubernetes\n    clusters: [Prod]\n",
			`mwid.yaml:23: outputs.0.clusters: "Prod" is not a cluster name`},
		{"empty selector", "outputs:\n  - type: kubernetes\n    labels: [{}]\n",
			"mwid.yaml:23: outputs.0.labels.0: an empty selector picks nothing"},
		{"wildcard key", "outputs:\n  - type: kubernetes\n    labels: [{'*': prod}]\n",
			`outputs.0.labels.0: the key "*" takes only the value "*"`},
		{"ssh_host field", "outputs:\n  - type: kubernetes\n    clusters: [a]\n    host_key: /k.pub\n",
			"mwid.yaml:24: outputs.0.host_key: is for outputs of type ssh_host, not kubernetes"},
		{"kubernetes field on ssh_host", "outputs:\n  - type: ssh_host\n    host_key: /k.pub\n    clusters: [a]\n",
			"mwid.yaml:24: outputs.0.clusters: is for outputs of type kubernetes, not ssh_host"},
		{"same directory", "outputs:\n  - type: kubernetes\n    clusters: [a]\n    directory: /k\n  - type: kubernetes\n    clusters: [b]\n    directory: /k/\n",
			"outputs.1.directory: another kubernetes output writes /k/kubeconfig.yaml already"},
		{"unknown field", "outputs:\n  - type: kubernetes\n    cluster: a\n",
			`mwid.yaml:23: unknown field "cluster"`},
		{"unknown type", "outputs:\n  - type: kube\n",
			`unknown output type "kube" (want ssh_host, kubernetes or identity)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("/etc/mwi/mwid.yaml", []byte(valid+tc.outputs))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}
