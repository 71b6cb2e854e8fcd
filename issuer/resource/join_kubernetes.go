package resource

import (
	"regexp"
	"slices"

	"go.yaml.in/yaml/v3"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/yamlfile"
)

// serviceAccountRE matches "NAMESPACE:NAME" of a Kubernetes service
// account: a DNS label and a DNS subdomain.
var serviceAccountRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?:[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$`)

// KubernetesJoin is the kubernetes block of a token: projected service
// account tokens of one cluster.
type KubernetesJoin struct {
	// IssuerURL is the cluster's service account issuer
	// (kube-apiserver --service-account-issuer).
	IssuerURL string
	// CAData is the PEM of the authorities to trust for the discovery
	// endpoint; nil means the system's.
	CAData     []byte
	StaticJWKS []byte
	Allow      []KubernetesRule
}

// A KubernetesRule admits the token of one service account.
type KubernetesRule struct {
	// ServiceAccount is "NAMESPACE:NAME"; the token's sub is
	// "system:serviceaccount:NAMESPACE:NAME".
	ServiceAccount string
}

// Kubernetes returns t's kubernetes block, or nil if t has another join
// method.
func (t Token) Kubernetes() *KubernetesJoin {
	k, _ := t.Join.(*KubernetesJoin)
	return k
}

// Method returns api.JoinMethodKubernetes.
func (*KubernetesJoin) Method() api.JoinMethod { return api.JoinMethodKubernetes }

// Issuer returns the cluster's service account issuer.
func (k *KubernetesJoin) Issuer(string) IDTokenIssuer {
	return IDTokenIssuer{URL: k.IssuerURL, StaticJWKS: k.StaticJWKS, CAData: k.CAData}
}

// Match returns the first rule whose service account ("NAMESPACE:NAME")
// the token's sub names ("system:serviceaccount:NAMESPACE:NAME").
func (k *KubernetesJoin) Match(claims map[string]any) (int, bool) {
	sub, ok := claims["sub"].(string)
	if !ok {
		return -1, false
	}
	for i, r := range k.Allow {
		if r.ServiceAccount != "" && sub == "system:serviceaccount:"+r.ServiceAccount {
			return i, true
		}
	}
	return -1, false
}

func (k *KubernetesJoin) clone() JoinSpec {
	c := *k
	c.CAData = slices.Clone(k.CAData)
	c.StaticJWKS = slices.Clone(k.StaticJWKS)
	c.Allow = slices.Clone(k.Allow)
	return &c
}

func (*KubernetesJoin) parse(p *fileParser, n *yaml.Node, path string, line int) JoinSpec {
	m, iss, ok := p.issuerBlock(n, path, line)
	if !ok {
		return nil
	}
	k := &KubernetesJoin{IssuerURL: iss.URL, CAData: iss.CAData, StaticJWKS: iss.StaticJWKS}
	k.Allow = p.kubernetesAllow(m["allow"], path, line)
	return k
}

// kubernetesAllow decodes the allow rules of a kubernetes block at path,
// n, which may be nil; line is where the block is. MWI's block and
// Teleport's write them alike: a list of {service_account: NAMESPACE:NAME}.
func (p *fileParser) kubernetesAllow(n *yaml.Node, path string, line int) []KubernetesRule {
	var allow []KubernetesRule
	p.rules(n, path, line, func(r *yaml.Node, rpath string) {
		f, ok := p.ruleFields(r, rpath, []string{"service_account"}, "", "service_account")
		if !ok {
			return
		}
		if !serviceAccountRE.MatchString(f["service_account"]) {
			p.Errorf(yamlfile.KeyLine(r, "service_account"), "invalid %s.service_account %q: want NAMESPACE:NAME", rpath, f["service_account"])
			return
		}
		allow = append(allow, KubernetesRule{ServiceAccount: f["service_account"]})
	})
	return allow
}
