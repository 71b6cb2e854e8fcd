package resource_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/mwi-project/mwi/issuer/resource"
)

func claims(t testing.TB, s string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	dec.UseNumber()
	var c map[string]any
	if err := dec.Decode(&c); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestMatchGitHub(t *testing.T) {
	c := claims(t, `{"sub":"repo:org/repo:ref:refs/heads/main","repository":"org/repo","repository_owner":"org",
		"workflow":"deploy","environment":"prod","actor":"octocat","ref":"refs/heads/main","ref_type":"branch","repository_id":"74","repository_owner_id":"1342004"}`)
	for _, tc := range []struct {
		name  string
		rules []resource.GitHubRule
		want  int
	}{
		{"no rules", nil, -1},
		{"repository", []resource.GitHubRule{{Repository: "org/repo"}}, 0},
		{"owner and every field", []resource.GitHubRule{{RepositoryOwner: "org", Workflow: "deploy", Environment: "prod", Actor: "octocat", Ref: "refs/heads/main", RefType: "branch"}}, 0},
		{"sub", []resource.GitHubRule{{Sub: "repo:org/repo:ref:refs/heads/main"}}, 0},
		{"repository id", []resource.GitHubRule{{RepositoryID: "74"}}, 0},
		{"owner id", []resource.GitHubRule{{RepositoryOwnerID: "1342004", Ref: "refs/heads/main"}}, 0},
		{"repository and another id", []resource.GitHubRule{{Repository: "org/repo", RepositoryID: "75"}}, -1},
		{"owner and another owner id", []resource.GitHubRule{{RepositoryOwner: "org", RepositoryOwnerID: "1"}}, -1},
		{"id with a leading zero", []resource.GitHubRule{{RepositoryID: "074"}}, -1},
		{"second rule", []resource.GitHubRule{{Repository: "org/other"}, {Repository: "org/repo", RefType: "branch"}}, 1},
		{"one field differs", []resource.GitHubRule{{Repository: "org/repo", Actor: "mallory"}}, -1},
		{"prefix is not equal", []resource.GitHubRule{{Repository: "org/rep"}}, -1},
		{"case matters", []resource.GitHubRule{{RepositoryOwner: "Org"}}, -1},
		// The loader refuses such rules; the matcher refuses them too.
		{"rule without repository, owner or sub", []resource.GitHubRule{{Ref: "refs/heads/main"}}, -1},
		{"empty rule", []resource.GitHubRule{{}}, -1},
	} {
		got, ok := (&resource.GitHubJoin{Allow: tc.rules}).Match(c)
		if got != tc.want || ok != (tc.want >= 0) {
			t.Errorf("%s: MatchGitHub = %d, %v; want %d", tc.name, got, ok, tc.want)
		}
	}
	// A claim of another type than string does not equal its text...
	if _, ok := (&resource.GitHubJoin{Allow: []resource.GitHubRule{{Repository: "[\"org/repo\"]"}}}).Match(claims(t, `{"repository":["org/repo"]}`)); ok {
		t.Error("a list claim matched")
	}
	// ...except booleans and numbers, compared as written.
	if _, ok := (&resource.GitHubJoin{Allow: []resource.GitHubRule{{RepositoryID: "74"}}}).Match(claims(t, `{"repository_id":74}`)); !ok {
		t.Error("a number repository_id did not match its decimal text")
	}
	if _, ok := (&resource.GitHubJoin{Allow: []resource.GitHubRule{{Repository: "74"}}}).Match(claims(t, `{"repository":74}`)); !ok {
		t.Error("a number claim did not match its text")
	}
}

func TestMatchGitLab(t *testing.T) {
	c := claims(t, `{"sub":"project_path:grp/proj:ref_type:branch:ref:main","project_path":"grp/proj","namespace_path":"grp",
		"pipeline_source":"push","environment":"prod","ref":"main","ref_type":"branch","user_login":"alice","ref_protected":"true"}`)
	for _, tc := range []struct {
		name  string
		rules []resource.GitLabRule
		want  int
	}{
		{"project", []resource.GitLabRule{{ProjectPath: "grp/proj"}}, 0},
		{"namespace and every field", []resource.GitLabRule{{NamespacePath: "grp", PipelineSource: "push", Environment: "prod", Ref: "main", RefType: "branch", UserLogin: "alice", RefProtected: "true"}}, 0},
		{"sub", []resource.GitLabRule{{Sub: "project_path:grp/proj:ref_type:branch:ref:main"}}, 0},
		{"unprotected wanted", []resource.GitLabRule{{ProjectPath: "grp/proj", RefProtected: "false"}}, -1},
		{"other user", []resource.GitLabRule{{ProjectPath: "grp/proj", UserLogin: "bob"}}, -1},
		{"rule without project, namespace or sub", []resource.GitLabRule{{UserLogin: "alice"}}, -1},
	} {
		got, ok := (&resource.GitLabJoin{Allow: tc.rules}).Match(c)
		if got != tc.want || ok != (tc.want >= 0) {
			t.Errorf("%s: MatchGitLab = %d, %v; want %d", tc.name, got, ok, tc.want)
		}
	}
}

func TestMatchKubernetes(t *testing.T) {
	rules := []resource.KubernetesRule{{ServiceAccount: "ci:builder"}, {ServiceAccount: ""}}
	for sub, want := range map[string]int{
		"system:serviceaccount:ci:builder":   0,
		"system:serviceaccount:ci:builder2":  -1,
		"system:serviceaccount:ci:":          -1,
		"system:serviceaccount:":             -1,
		"ci:builder":                         -1,
		"system:serviceaccounts:ci:builder":  -1,
		"system:serviceaccount:ci:builder:x": -1,
	} {
		got, ok := (&resource.KubernetesJoin{Allow: rules}).Match(map[string]any{"sub": sub})
		if got != want || ok != (want >= 0) {
			t.Errorf("MatchKubernetes(sub %q) = %d, %v; want %d", sub, got, ok, want)
		}
	}
	if _, ok := (&resource.KubernetesJoin{Allow: rules}).Match(map[string]any{}); ok {
		t.Error("a token without sub matched")
	}
}

func TestMatchOIDC(t *testing.T) {
	c := claims(t, `{"repository":"org/a","ref":"refs/heads/main","admin":true,"n":42,"f":1.5,"groups":["a","b"],"empty":""}`)
	for _, tc := range []struct {
		name  string
		rules []resource.OIDCRule
		want  int
	}{
		{"one claim", []resource.OIDCRule{{Claims: map[string][]string{"repository": {"org/b", "org/a"}}}}, 0},
		{"two claims", []resource.OIDCRule{{Claims: map[string][]string{"repository": {"org/a"}, "ref": {"refs/heads/main"}}}}, 0},
		{"one of two claims", []resource.OIDCRule{{Claims: map[string][]string{"repository": {"org/a"}, "ref": {"refs/heads/dev"}}}}, -1},
		{"boolean", []resource.OIDCRule{{Claims: map[string][]string{"admin": {"true"}}}}, 0},
		{"number as written", []resource.OIDCRule{{Claims: map[string][]string{"n": {"42"}, "f": {"1.5"}}}}, 0},
		{"number written otherwise", []resource.OIDCRule{{Claims: map[string][]string{"n": {"42.0"}}}}, -1},
		{"list claim", []resource.OIDCRule{{Claims: map[string][]string{"groups": {"a"}}}}, -1},
		{"missing claim", []resource.OIDCRule{{Claims: map[string][]string{"team": {"x"}}}}, -1},
		{"empty value never matches", []resource.OIDCRule{{Claims: map[string][]string{"empty": {""}}}}, -1},
		{"rule without claims", []resource.OIDCRule{{}}, -1},
		{"second rule", []resource.OIDCRule{{Claims: map[string][]string{"ref": {"x"}}}, {Claims: map[string][]string{"ref": {"refs/heads/main"}}}}, 1},
	} {
		got, ok := (&resource.OIDCJoin{Allow: tc.rules}).Match(c)
		if got != tc.want || ok != (tc.want >= 0) {
			t.Errorf("%s: MatchOIDC = %d, %v; want %d", tc.name, got, ok, tc.want)
		}
	}
}

// refString is the string form of a claim, written apart from
// resource.ClaimString so that the fuzz target checks one against the other.
func refString(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case bool:
		if v {
			return "true", true
		}
		return "false", true
	case json.Number:
		return v.String(), true
	}
	return "", false
}

// refEq reports whether a rule field want is satisfied by the claim.
func refEq(c map[string]any, name, want string) bool {
	if want == "" {
		return true
	}
	got, ok := refString(c[name])
	return ok && got == want
}

// FuzzMatch checks the rule matchers against a plain statement of the
// rules: every non-empty field equals its claim, a rule must name one of
// the key fields, and nothing panics.
func FuzzMatch(f *testing.F) {
	f.Add(`{"sub":"repo:org/repo:ref:refs/heads/main","repository":"org/repo","repository_owner":"org","ref":"refs/heads/main","environment":"prod"}`,
		"", "org/repo", "", "refs/heads/main", "", "repository", "org/repo")
	f.Add(`{"project_path":"grp/proj","namespace_path":"grp","ref":"main","ref_protected":"true"}`,
		"", "grp/proj", "grp", "main", "", "ref_protected", "true")
	f.Add(`{"sub":"system:serviceaccount:ns:sa","aud":["mwi"]}`, "system:serviceaccount:ns:sa", "", "", "", "", "sub", "ns:sa")
	f.Add(`{"n":1e3,"b":false,"l":[1],"o":{"a":"b"},"z":null}`, "", "", "", "", "", "n", "1e3")
	f.Add(`{}`, "", "", "", "", "", "", "")
	f.Fuzz(func(t *testing.T, claimsJSON, sub, repo, owner, ref, env, claimName, claimValue string) {
		dec := json.NewDecoder(bytes.NewReader([]byte(claimsJSON)))
		dec.UseNumber()
		var c map[string]any
		if err := dec.Decode(&c); err != nil || c == nil {
			return
		}

		gh := resource.GitHubRule{Sub: sub, Repository: repo, RepositoryOwner: owner, Ref: ref, Environment: env}
		want := (sub != "" || repo != "" || owner != "") &&
			refEq(c, "sub", sub) && refEq(c, "repository", repo) && refEq(c, "repository_owner", owner) &&
			refEq(c, "ref", ref) && refEq(c, "environment", env)
		if i, ok := (&resource.GitHubJoin{Allow: []resource.GitHubRule{gh}}).Match(c); ok != want || (ok && i != 0) || (!ok && i != -1) {
			t.Errorf("MatchGitHub(%+v, %s) = %d, %v; want %v", gh, claimsJSON, i, ok, want)
		}
		// Rules are tried in order; a rule that cannot match is skipped.
		if i, ok := (&resource.GitHubJoin{Allow: []resource.GitHubRule{{RefType: "x"}, gh}}).Match(c); ok != want || (ok && i != 1) {
			t.Errorf("MatchGitHub with a first rule that cannot match = %d, %v; want %v", i, ok, want)
		}

		gl := resource.GitLabRule{Sub: sub, ProjectPath: repo, NamespacePath: owner, Ref: ref, RefProtected: env}
		want = (sub != "" || repo != "" || owner != "") &&
			refEq(c, "sub", sub) && refEq(c, "project_path", repo) && refEq(c, "namespace_path", owner) &&
			refEq(c, "ref", ref) && refEq(c, "ref_protected", env)
		if _, ok := (&resource.GitLabJoin{Allow: []resource.GitLabRule{gl}}).Match(c); ok != want {
			t.Errorf("MatchGitLab(%+v, %s) = %v; want %v", gl, claimsJSON, ok, want)
		}

		subClaim, isString := c["sub"].(string)
		want = claimValue != "" && isString && subClaim == "system:serviceaccount:"+claimValue
		if _, ok := (&resource.KubernetesJoin{Allow: []resource.KubernetesRule{{ServiceAccount: claimValue}}}).Match(c); ok != want {
			t.Errorf("MatchKubernetes(%q, %s) = %v; want %v", claimValue, claimsJSON, ok, want)
		}

		rule := resource.OIDCRule{Claims: map[string][]string{claimName: {claimValue, "other-" + claimValue}}}
		got, isScalar := refString(c[claimName])
		want = isScalar && got != "" && (got == claimValue || got == "other-"+claimValue)
		if _, ok := (&resource.OIDCJoin{Allow: []resource.OIDCRule{rule}}).Match(c); ok != want {
			t.Errorf("MatchOIDC(%v, %s) = %v; want %v", rule.Claims, claimsJSON, ok, want)
		}
		if s, ok := resource.ClaimString(c[claimName]); ok != isScalar || s != got {
			t.Errorf("ClaimString(%#v) = %q, %v; want %q, %v", c[claimName], s, ok, got, isScalar)
		}
	})
}
