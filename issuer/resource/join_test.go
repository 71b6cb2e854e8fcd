package resource

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/mwi-project/mwi/api"
)

// TestJoinSpecs checks the registry of join methods: each is a join method
// of the wire protocol other than token, registered once, of exactly one
// kind, and decoded from the block its name keys.
func TestJoinSpecs(t *testing.T) {
	seen := map[api.JoinMethod]bool{}
	for _, js := range joinSpecs {
		m := js.Method()
		if !m.Known() || m == api.JoinMethodToken {
			t.Errorf("%T: method %q is not a join method of token resources", js, m)
		}
		if seen[m] {
			t.Errorf("%T: method %q registered twice", js, m)
		}
		seen[m] = true
		_, idToken := js.(IDTokenJoin)
		_, challenge := js.(ChallengeJoin)
		if idToken == challenge {
			t.Errorf("%T: IDTokenJoin %v, ChallengeJoin %v: want exactly one", js, idToken, challenge)
		}
		if got, ok := JoinSpecFor(m); !ok || got != js {
			t.Errorf("JoinSpecFor(%q) = %T, %v", m, got, ok)
		}
		if idToken != m.UsesIDToken() {
			t.Errorf("%q: IDTokenJoin %v, but api says UsesIDToken %v", m, idToken, m.UsesIDToken())
		}
	}
	for _, m := range api.JoinMethods {
		if m != api.JoinMethodToken && !seen[m] {
			t.Errorf("join method %q has no JoinSpec", m)
		}
	}
	if _, ok := JoinSpecFor(api.JoinMethodToken); ok {
		t.Error("JoinSpecFor(token) is a token resource method")
	}
}

// TestTokenJoinBlock checks that a loaded token's Join is the block its
// join_method names, and that the accessors of the other blocks are nil.
func TestTokenJoinBlock(t *testing.T) {
	blocks := map[api.JoinMethod]string{
		api.JoinMethodGitHub:       "github: {allow: [{repository: org/repo}]}",
		api.JoinMethodGitLab:       "gitlab: {allow: [{project_path: grp/proj}]}",
		api.JoinMethodKubernetes:   "kubernetes: {issuer_url: https://k8s.example.com, allow: [{service_account: default:b}]}",
		api.JoinMethodOIDC:         "oidc: {issuer_url: https://idp.example.com, allow: [{claims: {sub: x}}]}",
		api.JoinMethodBoundKeypair: "bound_keypair: {public_key: " + testSSHKey + "}",
	}
	for _, js := range joinSpecs {
		m := js.Method()
		t.Run(string(m), func(t *testing.T) {
			doc := fmt.Sprintf("kind: token\nversion: v1\nmetadata: {name: t}\nspec:\n  join_method: %s\n  bot_name: ci\n  %s\n", m, blocks[m])
			res, err := Parse("t.yaml", []byte(doc))
			if err != nil || len(res) != 1 {
				t.Fatalf("Parse = %v, %v", res, err)
			}
			tok := res[0].(Token)
			if tok.Join == nil || tok.Join.Method() != m || tok.JoinMethod != m {
				t.Fatalf("token %+v: Join is not the %s block", tok, m)
			}
			set := []bool{tok.GitHub() != nil, tok.GitLab() != nil, tok.Kubernetes() != nil, tok.OIDC() != nil, tok.BoundKeypair() != nil}
			if n := len(slices.DeleteFunc(set, func(b bool) bool { return !b })); n != 1 {
				t.Errorf("%d block accessors are not nil, want 1", n)
			}
		})
	}
}

// TestAudienceOnlyForIDTokens checks that spec.audience is refused for a
// join method that does not attest with an ID token.
func TestAudienceOnlyForIDTokens(t *testing.T) {
	doc := "kind: token\nversion: v1\nmetadata: {name: t}\nspec:\n  join_method: bound_keypair\n  bot_name: ci\n  audience: x\n  bound_keypair: {public_key: " + testSSHKey + "}\n"
	_, err := Parse("t.yaml", []byte(doc))
	if err == nil || !strings.Contains(err.Error(), "t.yaml:7: spec.audience applies to ID tokens, not to join_method bound_keypair") {
		t.Errorf("Parse = %v", err)
	}
}
