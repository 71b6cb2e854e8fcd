// Package kubeselect decides which Kubernetes clusters a selector picks.
//
// The issuer uses it to resolve the selectors of a request, and mwid to
// sort the clusters it holds among its outputs, so that both sides agree.
// The semantics are those of Teleport's kubernetes/v2 selectors: a cluster
// is picked when a name selector names it, or when any label selector
// matches its labels; a label selector matches when the cluster has each of
// its labels with the same value.
package kubeselect

import "sort"

// Wildcard in a label selector matches any value; as both key and value
// ("*": "*"), it matches every cluster.
const Wildcard = "*"

// Selector picks clusters by name and by labels.
type Selector struct {
	Names  []string
	Labels []map[string]string
}

// Match reports whether s picks the cluster with the given name and labels.
func (s Selector) Match(name string, labels map[string]string) bool {
	for _, n := range s.Names {
		if n == name {
			return true
		}
	}
	for _, sel := range s.Labels {
		if MatchLabels(sel, labels) {
			return true
		}
	}
	return false
}

// MatchLabels reports whether labels satisfy the label selector sel: for
// each key of sel, labels has that key with the same value, or with any
// value when sel's value is Wildcard. The selector {"*": "*"} matches all
// labels, even none; an empty selector matches nothing, so that a selector
// left empty by mistake does not pick every cluster.
func MatchLabels(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if k == Wildcard {
			if v != Wildcard {
				return false
			}
			continue
		}
		got, ok := labels[k]
		if !ok || (v != Wildcard && got != v) {
			return false
		}
	}
	return true
}

// String formats a label selector for messages, keys sorted: {env=prod, team=a}.
func String(sel map[string]string) string {
	keys := make([]string, 0, len(sel))
	for k := range sel {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := "{"
	for i, k := range keys {
		if i > 0 {
			out += ", "
		}
		out += k + "=" + sel[k]
	}
	return out + "}"
}
