package resource

import (
	"strings"
	"testing"
)

func TestNewSet(t *testing.T) {
	role := Role{Name: "r", KubernetesLabels: map[string][]string{"*": {"*"}},
		KubernetesResources: []KubernetesResource{{Kind: "pod", Namespace: "default", Name: "*", Verbs: []string{"get"}}}}
	tests := []struct {
		name    string
		in      []Resource
		wantErr string // "" for success
	}{
		{"ok", []Resource{role, Bot{Name: "b", Roles: []string{"r"}}, KubeCluster{Name: "c"}}, ""},
		{"duplicate role", []Resource{role, role}, `duplicate role "r"`},
		{"unknown role", []Resource{Bot{Name: "b", Roles: []string{"x"}, Source: Location{"f.yaml", 3}}}, `f.yaml:3: bot "b" references unknown role "x"`},
		{"unknown bot", []Resource{Token{Name: "t", BotName: "x"}}, `token "t" references unknown bot "x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := NewSet(tt.in...)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				r, ok := s.Role("r")
				if !ok || len(r.KubernetesResources) != 1 {
					t.Fatalf("Role(r) = %+v, %v", r, ok)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}
