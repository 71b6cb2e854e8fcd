package resource

import (
	"fmt"
	"maps"
	"slices"
)

// kindKubeCluster is the kind of a Kubernetes cluster resource.
const kindKubeCluster = "kube_cluster"

// wantKinds lists the kinds, for error messages.
const wantKinds = "role, bot, kube_cluster or token"

// A KubeCluster is a Kubernetes cluster that the issuer signs client
// certificates for. The cluster's API server must trust the issuer's
// Kubernetes client CA (its --client-ca-file).
type KubeCluster struct {
	Name        string
	Description string
	// Labels are what roles select the cluster by (kubernetes_labels) and
	// what daemons select it by; nil if the resource sets none.
	Labels map[string]string
	// Server is the API server's https URL.
	Server string
	// CAData is the PEM of the certificate authorities that the API
	// server's serving certificate chains to, from the resource's
	// certificate_authority_data or certificate_authority_file.
	CAData []byte
	Source Location // where the resource document starts
}

func (KubeCluster) isResource() {}

func (c KubeCluster) clone() KubeCluster {
	c.Labels = maps.Clone(c.Labels)
	c.CAData = slices.Clone(c.CAData)
	return c
}

// KubeCluster returns the Kubernetes cluster with the given name and
// reports whether it exists.
func (s *Set) KubeCluster(name string) (KubeCluster, bool) {
	c, ok := s.clusters[name]
	if !ok {
		return KubeCluster{}, false
	}
	return c.clone(), true
}

// KubeClusters returns all Kubernetes clusters, sorted by name.
func (s *Set) KubeClusters() []KubeCluster {
	out := make([]KubeCluster, 0, len(s.clusters))
	for _, name := range slices.Sorted(maps.Keys(s.clusters)) {
		out = append(out, s.clusters[name].clone())
	}
	return out
}

// KubeAccess is what a bot may do on one Kubernetes cluster: the union of
// the bot's roles whose kubernetes_labels match the cluster's labels.
type KubeAccess struct {
	Roles  []string // the roles that allow the cluster, in the bot's order
	Users  []string // sorted, without duplicates, templates expanded
	Groups []string // sorted, without duplicates, templates expanded
}

// KubeAccess returns what bot may do on cluster c, and reports whether any
// of its roles allows the cluster at all. Group and user entries of the form
// "{{internal.NAME}}" are replaced by the values of the bot's trait NAME, as
// logins are by [Set.Grant].
//
// If the set has no bot of that name, KubeAccess returns an error wrapping
// [ErrUnknownBot].
func (s *Set) KubeAccess(bot string, c KubeCluster) (KubeAccess, bool, error) {
	b, ok := s.bots[bot]
	if !ok {
		return KubeAccess{}, false, fmt.Errorf("%w %q", ErrUnknownBot, bot)
	}
	// A role that denies the cluster denies it whatever the others allow.
	for _, name := range b.Roles {
		if r, ok := s.roles[name]; ok && selects(r.DenyKubernetesLabels, c.Labels) {
			return KubeAccess{}, false, nil
		}
	}
	var acc KubeAccess
	expand := func(dst *[]string, values []string) {
		for _, v := range values {
			if trait, ok := traitRef(v); ok {
				*dst = append(*dst, b.Traits[trait]...)
			} else {
				*dst = append(*dst, v)
			}
		}
	}
	for _, name := range b.Roles {
		r, ok := s.roles[name]
		if !ok {
			return KubeAccess{}, false, fmt.Errorf("bot %q: unknown role %q", bot, name)
		}
		if !r.AllowsKubeCluster(c.Labels) {
			continue
		}
		acc.Roles = append(acc.Roles, name)
		expand(&acc.Users, r.KubernetesUsers)
		expand(&acc.Groups, r.KubernetesGroups)
	}
	if len(acc.Roles) == 0 {
		return KubeAccess{}, false, nil
	}
	slices.Sort(acc.Users)
	acc.Users = slices.Compact(acc.Users)
	slices.Sort(acc.Groups)
	acc.Groups = slices.Compact(acc.Groups)
	return acc, true, nil
}

// AllowsKubeCluster reports whether the role's kubernetes_labels match a
// cluster with the given labels: for each key, the cluster has the label
// with one of the values listed, or with any value if "*" is listed; the
// key "*" (with the value "*") matches every cluster.
func (r Role) AllowsKubeCluster(labels map[string]string) bool {
	return selects(r.KubernetesLabels, labels)
}

// selects reports whether the label selector sel matches a cluster with
// the given labels, as AllowsKubeCluster describes. An empty selector
// matches nothing.
func selects(sel map[string][]string, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, values := range sel {
		if k == "*" {
			continue
		}
		got, ok := labels[k]
		if !ok || !(slices.Contains(values, "*") || slices.Contains(values, got)) {
			return false
		}
	}
	return true
}
