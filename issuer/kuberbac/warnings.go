package kuberbac

import (
	"fmt"
	"slices"
	"strings"

	"github.com/mwi-project/mwi/issuer/resource"
)

// Warnings returns what the loader and mwi-issuer get should say about
// the kubernetes_resources of src's roles: every rule that restricts
// nothing on some cluster (see [ClusterWarnings]), every rule that
// mwi-issuer kube rbac cannot turn into RBAC, and every verb that RBAC
// cannot allow on one object by name. It returns nil if there is nothing
// to say.
func Warnings(src Source) []string {
	var out []string
	seen := map[string]bool{}
	for _, w := range warnings(src) {
		if !seen[w.text] {
			seen[w.text] = true
			out = append(out, w.text)
		}
	}
	return out
}

// WarningsFor returns the warnings of [Warnings] that concern the resource
// kind/name: a role's are about its own rules; a bot's and a
// kube_cluster's are those of rules that restrict nothing for that bot or
// on that cluster. mwi-issuer get prints them with the documents.
func WarningsFor(src Source, kind, name string) []string {
	var out []string
	seen := map[string]bool{}
	for _, w := range warnings(src) {
		var about string
		switch kind {
		case "role":
			about = w.role
		case "bot":
			about = w.bot
		case "kube_cluster":
			about = w.cluster
		}
		if about == name && !seen[w.text] {
			seen[w.text] = true
			out = append(out, w.text)
		}
	}
	return out
}

// A warning is the text of one warning and the resources it concerns.
type warning struct {
	text, role, bot, cluster string
}

// warnings returns the warnings of [Warnings] with what each concerns.
func warnings(src Source) []warning {
	var out []warning
	for _, r := range src.Roles() {
		for _, text := range roleWarnings(r) {
			out = append(out, warning{text: text, role: r.Name})
		}
	}
	for _, c := range src.KubeClusters() {
		cw := clusterWarnings(src, c)
		slices.SortFunc(cw, func(a, b warning) int { return strings.Compare(a.text, b.text) })
		out = append(out, cw...)
	}
	return out
}

// ClusterWarnings returns a warning for each role with
// kubernetes_resources whose certificates for cluster c are also in
// system:masters, given by that role or another role of the same bot:
// Kubernetes grants system:masters everything before RBAC is asked, so
// the role's kubernetes_resources restrict nothing there. The warnings
// are sorted.
func ClusterWarnings(src Source, c resource.KubeCluster) []string {
	var out []string
	for _, w := range clusterWarnings(src, c) {
		out = append(out, w.text)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// clusterWarnings returns the warnings of [ClusterWarnings], unsorted,
// with the role, bot and cluster each concerns.
func clusterWarnings(src Source, c resource.KubeCluster) []warning {
	byName := map[string]resource.Role{}
	for _, r := range src.Roles() {
		byName[r.Name] = r
	}
	var out []warning
	for _, b := range src.Bots() {
		acc, ok, err := src.KubeAccess(b.Name, c)
		if err != nil || !ok || !slices.Contains(acc.Groups, Masters) {
			continue
		}
		// The roles that give the bot system:masters on c: those that
		// name it, or else those whose groups come from the bot's traits.
		var givers, templated []string
		for _, name := range acc.Roles {
			r := byName[name]
			if slices.Contains(r.KubernetesGroups, Masters) {
				givers = append(givers, name)
			}
			if slices.ContainsFunc(r.KubernetesGroups, func(g string) bool { return strings.Contains(g, "{{") }) {
				templated = append(templated, name)
			}
		}
		if len(givers) == 0 {
			givers = templated
		}
		for _, name := range acc.Roles {
			if len(byName[name].KubernetesResources) == 0 {
				continue
			}
			why := "its certificates are in " + Masters
			if !slices.Contains(givers, name) {
				why = fmt.Sprintf("bot %s also holds role %s, which puts its certificates in %s", b.Name, strings.Join(givers, ", "), Masters)
			}
			out = append(out, warning{
				text: fmt.Sprintf("kubernetes_resources of role %s restrict nothing on cluster %s: %s, which Kubernetes never restricts", name, c.Name, why),
				role: name, bot: b.Name, cluster: c.Name,
			})
		}
	}
	return out
}

// roleWarnings returns the warnings about the rules of role r themselves:
// those RBAC cannot express, and verbs RBAC cannot allow by name.
func roleWarnings(r resource.Role) []string {
	var out []string
	for i, kr := range r.KubernetesResources {
		if err := Check(kr); err != nil {
			out = append(out, fmt.Sprintf("kubernetes_resources[%d] of role %s cannot be enforced: %v; mwi-issuer kube rbac refuses it", i, r.Name, err))
			continue
		}
		if kr.Name == "" || kr.Name == "*" {
			continue
		}
		for _, v := range kr.Verbs {
			if v == "create" || v == "deletecollection" {
				out = append(out, fmt.Sprintf("kubernetes_resources[%d] of role %s allows %s on %s %q, which Kubernetes RBAC never allows by name (the request names no object): give name '*' to allow it", i, r.Name, v, kr.Kind, kr.Name))
			}
		}
	}
	return out
}
