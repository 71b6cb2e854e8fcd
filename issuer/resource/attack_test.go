package resource

import (
	"strings"
	"testing"
)

// TestKubeResourceNamespaceNames gives kubernetes_resources namespaces
// that are no Kubernetes namespace name: each would make an RBAC object
// the API server refuses, or a path that is not the object's, so each is
// refused at load with the line.
func TestKubeResourceNamespaceNames(t *testing.T) {
	for _, ns := range []string{"Default", "a_b", strings.Repeat("a", 64), "..", ".", "a/b", "a.b", "-a", "a-", "a%2Fb", "ünï"} {
		for _, tc := range []struct{ version, entry string }{
			{"v1", "{kind: pod, namespace: " + yq(ns) + ", name: '*'}"},
			{"v7", "{kind: pod, namespace: " + yq(ns) + ", name: '*'}"},
			{"v7", "{kind: namespace, name: " + yq(ns) + "}"},
		} {
			doc := "kind: role\nversion: " + tc.version + "\nmetadata: {name: r}\nspec:\n  allow:\n    kubernetes_labels: {'*': '*'}\n    kubernetes_groups: [g]\n    kubernetes_resources:\n    - " + tc.entry + "\n"
			_, err := Parse("r.yaml", []byte(doc))
			if err == nil || !strings.Contains(err.Error(), "r.yaml:9") {
				t.Errorf("%s %s: %v, want refused at r.yaml:9", tc.version, tc.entry, err)
			}
		}
	}
	for _, ns := range []string{"default", "kube-system", "a", strings.Repeat("a", 63), "a1-b2"} {
		doc := "kind: role\nversion: v7\nmetadata: {name: r}\nspec:\n  allow:\n    kubernetes_labels: {'*': '*'}\n    kubernetes_groups: [g]\n    kubernetes_resources:\n    - {kind: pod, namespace: " + ns + ", name: '*'}\n"
		if _, err := Parse("r.yaml", []byte(doc)); err != nil {
			t.Errorf("namespace %q: %v", ns, err)
		}
	}
}

// TestTeleportVariants gives Teleport documents that differ a little from
// what is read: each is refused, none is read as something else.
func TestTeleportVariants(t *testing.T) {
	role := func(version, spec string) string {
		return "kind: role\nversion: " + version + "\nmetadata: {name: r}\nspec:\n" + spec
	}
	for _, tc := range []struct{ name, doc string }{
		{"version V7", role("V7", "  allow: {logins: [x]}\n")},
		{"version 'v7 '", role("'v7 '", "  allow: {logins: [x]}\n")},
		{"version v8", role("v8", "  allow: {logins: [x]}\n")},
		{"version 7", role("7", "  allow: {logins: [x]}\n")},
		{"external trait in logins", role("v7", "  allow: {logins: ['{{external.logins}}']}\n")},
		{"external trait in deny logins", role("v7", "  allow: {logins: [x]}\n  deny: {logins: ['{{external.logins}}']}\n")},
		{"external trait in kubernetes_groups", role("v7", "  allow: {kubernetes_labels: {'*': '*'}, kubernetes_groups: ['{{external.groups}}']}\n")},
		{"function template in logins", role("v7", "  allow: {logins: ['{{email.local(external.email)}}']}\n")},
		{"refused field in deny", role("v7", "  allow: {logins: [x]}\n  deny: {app_labels: {'*': '*'}}\n")},
		{"refused field in allow, deny ok", role("v7", "  allow: {logins: [x], db_labels: {'*': '*'}}\n  deny: {logins: [root]}\n")},
		{"duplicate key in allow", role("v7", "  allow:\n    logins: [x]\n    logins: [root]\n")},
		{"duplicate allow", role("v7", "  allow: {logins: [x]}\n  allow: {logins: [root]}\n")},
		{"kind Role", "kind: Role\nversion: v7\nmetadata: {name: r}\nspec:\n  allow: {logins: [x]}\n"},
		{"token roles Node", "kind: token\nversion: v2\nmetadata: {name: t}\nspec:\n  roles: [Node]\n  join_method: github\n  bot_name: b\n  github: {allow: [{repository: o/r}]}\n"},
		{"token roles Bot, Node", "kind: token\nversion: v2\nmetadata: {name: t}\nspec:\n  roles: [Bot, Node]\n  join_method: github\n  bot_name: b\n  github: {allow: [{repository: o/r}]}\n"},
		{"token roles bot lowercase", "kind: token\nversion: v2\nmetadata: {name: t}\nspec:\n  roles: [bot]\n  join_method: github\n  bot_name: b\n  github: {allow: [{repository: o/r}]}\n"},
	} {
		if _, err := Parse("r.yaml", []byte(tc.doc)); err == nil {
			t.Errorf("%s: read, want refused", tc.name)
		} else if !strings.Contains(err.Error(), "r.yaml:") {
			t.Errorf("%s: %v, want FILE:LINE", tc.name, err)
		}
	}
}

func yq(s string) string { return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"` }

// TestDocumentNameTwice gives a document two names, or a name hidden by
// YAML's own means: each is refused, so that the name a store keys it by
// is the one it loads as.
func TestDocumentNameTwice(t *testing.T) {
	for _, doc := range []string{
		"kind: role\nversion: v1\nmetadata:\n  name: a\n  name: b\nspec: {}\n",
		"kind: role\nversion: v1\nmetadata: {name: a}\nmetadata: {name: b}\nspec: {}\n",
		"kind: role\nkind: bot\nversion: v1\nmetadata: {name: a}\nspec: {}\n",
		"kind: role\nversion: v1\nmetadata: {name: a}\nname: b\nspec: {}\n",
		"kind: role\nversion: v1\nmetadata: &m {name: a}\nspec: {}\n<<: {metadata: {name: b}}\n",
		"kind: role\nversion: v1\nmetadata: {<<: {name: b}, name: a}\nspec: {}\n",
		"kind: role\nversion: v1\nmetadata: {name: !!binary YQ==}\nspec: {}\n",
		"- kind: role\n  version: v1\n  metadata: {name: a}\n  spec: {}\n- kind: role\n  version: v1\n  metadata: {name: b}\n  spec: {}\n",
	} {
		res, err := Parse("r.yaml", []byte(doc))
		if err == nil {
			var names []string
			for _, r := range res {
				_, n := KindName(r)
				names = append(names, n)
			}
			t.Errorf("read %v from:\n%s", names, doc)
		}
	}
}
