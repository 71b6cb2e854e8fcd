package authority

import (
	"crypto/x509"
	"encoding/pem"
	"slices"
	"strings"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/fault"
	"github.com/mwi-project/mwi/internal/kubeselect"
	"github.com/mwi-project/mwi/issuer/ca"
	"github.com/mwi-project/mwi/issuer/resource"
	"github.com/mwi-project/mwi/issuer/store"
)

// Bounds on one Kubernetes request; a daemon asks for a handful.
const (
	maxKubeClusters  = 64
	maxKubeSelectors = 16
)

// kubePlan is what a request's Kubernetes part will be signed as. It is
// worked out, and any refusal made, before a token is consumed or a
// generation moves, so that a refused request changes nothing.
type kubePlan struct {
	csr   *ca.CSR
	certs []kubeCert
}

// kubeCert is one certificate to sign: for cluster, as user, in groups.
type kubeCert struct {
	cluster resource.KubeCluster
	user    string
	groups  []string
}

// kubernetes checks a request's Kubernetes part against the bot's roles and
// returns what to sign, or nil if the request asks for nothing.
//
// Every cluster that the request names must exist and be allowed by one of
// the bot's roles; label selectors only pick among the allowed clusters. For
// each cluster picked, the certificate's user is the one kubernetes_users of
// the roles that allow the cluster name, or "bot:NAME" if they name none,
// and its groups are the union of their kubernetes_groups, with
// resource.RoleGroup(role) for each of them that has kubernetes_resources
// (see withRoleGroups). Roles giving one
// cluster several users refuse the request: a certificate has one user, and
// picking one would be a guess.
func (a *Authority) kubernetes(bot string, req *api.KubernetesRequest) (*kubePlan, error) {
	if req == nil {
		return nil, nil
	}
	block, _ := pem.Decode([]byte(req.CSR))
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, badRequest("kubernetes.csr: want a PEM CERTIFICATE REQUEST")
	}
	req509, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, badRequest("kubernetes.csr: %v", err)
	}
	csr, err := ca.CheckCSR(req509)
	if err != nil {
		return nil, badRequest("kubernetes.csr: signature does not verify: %v", err)
	}
	if err := checkKeyStrength("kubernetes.csr", csr.PublicKey()); err != nil {
		return nil, err
	}
	if len(req.Clusters) > maxKubeClusters {
		return nil, badRequest("kubernetes.clusters: at most %d clusters in one request", maxKubeClusters)
	}
	if len(req.Labels) > maxKubeSelectors {
		return nil, badRequest("kubernetes.labels: at most %d selectors in one request", maxKubeSelectors)
	}
	if len(req.Clusters) == 0 && len(req.Labels) == 0 {
		return nil, badRequest("kubernetes: name clusters or give label selectors")
	}
	for i, sel := range req.Labels {
		if len(sel) == 0 {
			return nil, badRequest("kubernetes.labels[%d] is empty; use {\"*\": \"*\"} for every allowed cluster", i)
		}
	}
	set := a.Resources()
	for _, name := range req.Clusters {
		c, ok := set.KubeCluster(name)
		if !ok {
			return nil, kubeNotAllowed("no Kubernetes cluster named %q is defined on the issuer", name)
		}
		if _, ok, err := set.KubeAccess(bot, c); err != nil || !ok {
			return nil, kubeNotAllowed("the roles of bot %s do not allow Kubernetes cluster %s (their kubernetes_labels do not match its labels %s)",
				bot, name, kubeselect.String(c.Labels))
		}
	}
	sel := kubeselect.Selector{Names: req.Clusters, Labels: req.Labels}
	plan := &kubePlan{csr: csr}
	for _, c := range set.KubeClusters() {
		if !sel.Match(c.Name, c.Labels) {
			continue
		}
		acc, ok, err := set.KubeAccess(bot, c)
		if err != nil || !ok {
			continue
		}
		var user string
		switch len(acc.Users) {
		case 0:
			user = "bot:" + bot
		case 1:
			user = acc.Users[0]
		default:
			return nil, kubeNotAllowed("the roles of bot %s (%s) give Kubernetes cluster %s several users (%s), and a certificate has one: set kubernetes_users for it in one role only",
				bot, strings.Join(acc.Roles, ", "), c.Name, strings.Join(acc.Users, ", "))
		}
		plan.certs = append(plan.certs, kubeCert{cluster: c, user: user, groups: withRoleGroups(set, acc)})
	}
	// Selectors can match any number of clusters; the answer carries a
	// certificate and a CA bundle for each, and must stay small enough for
	// the daemon to read. Refused here, before a token is spent or a
	// generation moves.
	if len(plan.certs) > maxKubeClusters {
		return nil, badRequest("kubernetes: the selectors match %d allowed clusters; at most %d per renewal: narrow them", len(plan.certs), maxKubeClusters)
	}
	return plan, nil
}

// withRoleGroups returns the groups of acc and, for each of its roles that
// has kubernetes_resources, the group resource.RoleGroup(role): the RBAC
// objects of mwi-issuer kube rbac are bound to it, so that Kubernetes
// itself enforces the role's kubernetes_resources.
func withRoleGroups(set *resource.Set, acc resource.KubeAccess) []string {
	groups := slices.Clone(acc.Groups)
	for _, name := range acc.Roles {
		if r, ok := set.Role(name); ok && len(r.KubernetesResources) > 0 {
			groups = append(groups, resource.RoleGroup(name))
		}
	}
	slices.Sort(groups)
	return slices.Compact(groups)
}

func kubeNotAllowed(format string, args ...any) *fault.Error {
	return fault.Denied(api.CodeKubernetesClusterNotAllowed, format, args...)
}

// kubeRecord is a Kubernetes certificate as a join or renewal record names
// it.
type kubeRecord struct {
	Cluster string   `json:"kube_cluster"`
	Serial  string   `json:"serial"`
	User    string   `json:"user"`
	Groups  []string `json:"groups"`
}

// signKubernetes signs the certificates of plan, with the validity of the
// other certificates, and returns them and what the audit record says of
// them.
func (a *Authority) signKubernetes(cas *ca.Authority, in store.Instance, plan *kubePlan, notBefore, notAfter time.Time) ([]api.KubernetesCredential, []kubeRecord, error) {
	if plan == nil {
		return nil, nil, nil
	}
	out := make([]api.KubernetesCredential, 0, len(plan.certs))
	var records []kubeRecord
	for _, kc := range plan.certs {
		cert, err := cas.SignKubernetes(ca.KubernetesRequest{
			CSR:       plan.csr,
			User:      kc.user,
			Groups:    kc.groups,
			NotBefore: notBefore,
			NotAfter:  notAfter,
		})
		if err != nil {
			return nil, nil, err
		}
		records = append(records, kubeRecord{Cluster: kc.cluster.Name, Serial: cert.SerialNumber.Text(16), User: kc.user, Groups: nonNil(kc.groups)})
		out = append(out, api.KubernetesCredential{
			Cluster:                  kc.cluster.Name,
			Labels:                   kc.cluster.Labels,
			Server:                   kc.cluster.Server,
			CertificateAuthorityData: slices.Clone(kc.cluster.CAData),
			ClientCertificate:        string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})),
			Expires:                  notAfter,
		})
	}
	return out, records, nil
}

// nonNil returns s, or an empty slice for nil, so that the audit log shows
// [] rather than null.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
