package kubeselect

import "testing"

func TestMatchLabels(t *testing.T) {
	prod := map[string]string{"env": "prod", "team": "a"}
	for _, tc := range []struct {
		sel    map[string]string
		labels map[string]string
		want   bool
	}{
		{map[string]string{"env": "prod"}, prod, true},
		{map[string]string{"env": "prod", "team": "a"}, prod, true},
		{map[string]string{"env": "prod", "team": "b"}, prod, false},
		{map[string]string{"env": "dev"}, prod, false},
		{map[string]string{"region": "eu"}, prod, false},
		{map[string]string{"env": "*"}, prod, true},
		{map[string]string{"region": "*"}, prod, false},
		{map[string]string{"*": "*"}, prod, true},
		{map[string]string{"*": "*"}, nil, true},
		{map[string]string{"*": "prod"}, prod, false},
		{map[string]string{}, prod, false},
		{nil, nil, false},
		{map[string]string{"env": ""}, map[string]string{"env": ""}, true},
		{map[string]string{"env": ""}, nil, false},
	} {
		if got := MatchLabels(tc.sel, tc.labels); got != tc.want {
			t.Errorf("MatchLabels(%v, %v) = %v, want %v", tc.sel, tc.labels, got, tc.want)
		}
	}
}

func TestSelectorMatch(t *testing.T) {
	s := Selector{
		Names:  []string{"staging"},
		Labels: []map[string]string{{"env": "prod", "team": "a"}, {"region": "eu"}},
	}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   bool
	}{
		{"staging", nil, true},
		{"other", map[string]string{"env": "prod", "team": "a"}, true},
		{"other", map[string]string{"env": "prod", "team": "b"}, false},
		{"other", map[string]string{"region": "eu"}, true},
		{"other", map[string]string{"region": "us", "team": "a"}, false},
		{"other", nil, false},
	} {
		if got := s.Match(tc.name, tc.labels); got != tc.want {
			t.Errorf("Match(%q, %v) = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	if (Selector{}).Match("any", map[string]string{"a": "b"}) {
		t.Error("the empty selector matched a cluster")
	}
}

func TestString(t *testing.T) {
	if got := String(map[string]string{"team": "a", "env": "prod"}); got != "{env=prod, team=a}" {
		t.Errorf("String = %q", got)
	}
}
