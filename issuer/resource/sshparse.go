package resource

import (
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/mwi-project/mwi/internal/yamlfile"
)

// labelSelector decodes a role's label selector, such as
// spec.allow.node_labels, described by path in error messages: a mapping
// of label keys to a value or a list of values. The key "*" takes only the
// value "*", which selects every one of what the selector selects (every
// is "host" or "cluster", for the message).
func (p *fileParser) labelSelector(n *yaml.Node, path, every string) map[string][]string {
	pairs, _ := p.Mapping(n, path)
	var selector map[string][]string
	for _, kv := range pairs {
		keyPath := path + "." + kv.Key
		if kv.Key != "*" && !labelKeyRE.MatchString(kv.Key) {
			p.Errorf(kv.Line, "invalid label key %q in %s: must be \"*\" or match %s", kv.Key, path, labelKeyRE)
			continue
		}
		// A value is a string or a list of strings.
		var items []*yaml.Node
		if v := yamlfile.Resolve(kv.Value); v.Kind == yaml.SequenceNode {
			items, _ = p.List(v, keyPath)
			if len(items) == 0 {
				p.Errorf(v.Line, "%s lists no values (use \"*\" for any value)", keyPath)
			}
		} else {
			items = []*yaml.Node{v}
		}
		var values []string
		for _, item := range items {
			s, ok := p.Scalar(item, keyPath)
			if !ok {
				continue
			}
			if s != "*" {
				if err := checkLabelValue(s); err != nil {
					p.Errorf(item.Line, "invalid value %q in %s: %v", s, keyPath, err)
					continue
				}
				if p.teleport && (strings.Contains(s, "*") || strings.HasPrefix(s, "^") && strings.HasSuffix(s, "$")) {
					p.Errorf(item.Line, `invalid value %q in %s: Teleport reads it as a pattern, but MWI matches label values exactly, or any value with "*" alone: list the values`, s, keyPath)
					continue
				}
			}
			values = append(values, s)
		}
		if kv.Key == "*" && (len(values) != 1 || values[0] != "*") {
			p.Errorf(kv.Line, `the key "*" in %s takes only the value "*" (every %s)`, path, every)
			continue
		}
		if selector == nil {
			selector = make(map[string][]string)
		}
		selector[kv.Key] = values
	}
	return selector
}

// roleSSHAllow decodes the node_labels and host_labels of a role's
// spec.allow, given by field name in a.
func (p *fileParser) roleSSHAllow(a map[string]*yaml.Node, r *Role) {
	if n := a["node_labels"]; n != nil {
		r.NodeLabels = p.labelSelector(n, "spec.allow.node_labels", "host")
	}
	if n := a["host_labels"]; n != nil {
		r.HostLabels = p.labelSelector(n, "spec.allow.host_labels", "label")
	}
}

// roleDeny decodes a role's spec.deny. A deny rule applies where its
// node_labels select the host and to the logins it lists, so one without
// either would deny nothing: it is refused rather than silently ignored.
func (p *fileParser) roleDeny(deny *yaml.Node, r *Role) {
	d, ok := p.Fields(deny, "spec.deny", "logins", "node_labels")
	if !ok {
		return
	}
	if n := d["logins"]; n != nil {
		r.DenyLogins = p.logins(n, "spec.deny.logins")
	}
	if n := d["node_labels"]; n != nil {
		r.DenyNodeLabels = p.labelSelector(n, "spec.deny.node_labels", "host")
	}
	switch line := yamlfile.Resolve(deny).Line; {
	case d["logins"] != nil && d["node_labels"] == nil:
		p.Errorf(line, `spec.deny.logins denies nothing without spec.deny.node_labels ('*': '*' for every host)`)
	case d["node_labels"] != nil && d["logins"] == nil:
		p.Errorf(line, "spec.deny.node_labels denies nothing without spec.deny.logins")
	}
}

// logins decodes a list of logins, which may be trait templates.
func (p *fileParser) logins(n *yaml.Node, path string) []string {
	var out []string
	items, _ := p.List(n, path)
	for _, item := range items {
		s, ok := p.Scalar(item, path+" entry")
		if !ok {
			continue
		}
		if err := checkLogin(s, true); err != nil {
			p.Errorf(item.Line, "invalid login %q in %s: %v", s, path, err)
			continue
		}
		out = append(out, s)
	}
	return out
}

// CheckLabel reports why key=value is not a label a host may carry: a key
// as in node_labels, and a value that is not a wildcard.
func CheckLabel(key, value string) error {
	if !labelKeyRE.MatchString(key) {
		return fmt.Errorf("invalid label key %q: must match %s", key, labelKeyRE)
	}
	if err := checkLabelValue(value); err != nil {
		return fmt.Errorf("invalid value %q for label %q: %v", value, key, err)
	}
	return nil
}
