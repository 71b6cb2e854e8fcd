package api

import "testing"

func TestJoinMethod(t *testing.T) {
	if got, want := JoinMethodList(JoinMethods...), "token, github, gitlab, kubernetes, oidc or bound_keypair"; got != want {
		t.Errorf("JoinMethodList = %q, want %q", got, want)
	}
	for _, tc := range []struct {
		m              JoinMethod
		known, idToken bool
	}{
		{JoinMethodToken, true, false},
		{JoinMethodGitHub, true, true},
		{JoinMethodGitLab, true, true},
		{JoinMethodKubernetes, true, true},
		{JoinMethodOIDC, true, true},
		{JoinMethodBoundKeypair, true, false},
		{"", false, false},
		{"GitHub", false, false},
	} {
		if tc.m.Known() != tc.known || tc.m.UsesIDToken() != tc.idToken {
			t.Errorf("%q: Known %v, UsesIDToken %v; want %v, %v", tc.m, tc.m.Known(), tc.m.UsesIDToken(), tc.known, tc.idToken)
		}
	}
	if got := JoinMethodList(JoinMethodGitHub); got != "github" {
		t.Errorf("JoinMethodList(github) = %q", got)
	}
	if got := JoinMethodList(JoinMethodGitHub, JoinMethodOIDC); got != "github or oidc" {
		t.Errorf("JoinMethodList(github, oidc) = %q", got)
	}
}
