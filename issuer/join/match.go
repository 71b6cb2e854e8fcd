package join

import (
	"encoding/json"
	"slices"
	"strconv"

	"github.com/mwi-project/mwi/issuer/resource"
)

// ClaimString returns the value of a claim as a rule compares it: a string
// as it is, a boolean as "true" or "false", and a number as written in the
// token (json.Number) or in its shortest decimal form (float64). Other
// values (lists, objects, null) have no string form and match no rule.
func ClaimString(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case bool:
		return strconv.FormatBool(v), true
	case json.Number:
		return string(v), true
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), true
	}
	return "", false
}

// field is one field of a rule: the claim it names and the value it wants;
// an empty want places no condition.
type field struct {
	claim, want string
}

// matchFields reports whether claims satisfies every field with a non-empty
// want, and at least one of them is among key: a rule that would admit
// anyone's jobs never matches, even if a resource file let it through.
func matchFields(claims map[string]any, fields []field, key ...string) bool {
	named := false
	for _, f := range fields {
		if f.want == "" {
			continue
		}
		if slices.Contains(key, f.claim) {
			named = true
		}
		got, ok := ClaimString(claims[f.claim])
		if !ok || got != f.want {
			return false
		}
	}
	return named
}

func githubFields(r resource.GitHubRule) []field {
	return []field{
		{"sub", r.Sub}, {"repository", r.Repository}, {"repository_owner", r.RepositoryOwner},
		{"repository_id", r.RepositoryID}, {"repository_owner_id", r.RepositoryOwnerID},
		{"workflow", r.Workflow}, {"environment", r.Environment}, {"actor", r.Actor},
		{"ref", r.Ref}, {"ref_type", r.RefType},
	}
}

func gitlabFields(r resource.GitLabRule) []field {
	return []field{
		{"sub", r.Sub}, {"project_path", r.ProjectPath}, {"namespace_path", r.NamespacePath},
		{"pipeline_source", r.PipelineSource}, {"environment", r.Environment}, {"ref", r.Ref},
		{"ref_type", r.RefType}, {"user_login", r.UserLogin}, {"ref_protected", r.RefProtected},
	}
}

// MatchGitHub returns the index of the first rule that admits a GitHub
// Actions ID token with the given claims, and whether there is one. A rule
// admits when each of its non-empty fields equals the claim of the same
// name (repository_id and repository_owner_id compare as decimal text: the
// claims are strings such as "74"); a rule that names none of sub,
// repository, repository_owner and their ids admits nothing.
func MatchGitHub(rules []resource.GitHubRule, claims map[string]any) (int, bool) {
	for i, r := range rules {
		if matchFields(claims, githubFields(r), "sub", "repository", "repository_owner", "repository_id", "repository_owner_id") {
			return i, true
		}
	}
	return -1, false
}

// MatchGitLab is MatchGitHub for GitLab CI ID tokens; a rule must name one
// of sub, project_path and namespace_path.
func MatchGitLab(rules []resource.GitLabRule, claims map[string]any) (int, bool) {
	for i, r := range rules {
		if matchFields(claims, gitlabFields(r), "sub", "project_path", "namespace_path") {
			return i, true
		}
	}
	return -1, false
}

// MatchKubernetes returns the index of the first rule whose service
// account ("NAMESPACE:NAME") the token's sub names
// ("system:serviceaccount:NAMESPACE:NAME"), and whether there is one.
func MatchKubernetes(rules []resource.KubernetesRule, claims map[string]any) (int, bool) {
	sub, ok := claims["sub"].(string)
	if !ok {
		return -1, false
	}
	for i, r := range rules {
		if r.ServiceAccount != "" && sub == "system:serviceaccount:"+r.ServiceAccount {
			return i, true
		}
	}
	return -1, false
}

// MatchOIDC returns the index of the first rule that admits a token with
// the given claims, and whether there is one. A rule admits when each
// claim it names has, by ClaimString, one of the values it lists; a rule
// naming no claim admits nothing.
func MatchOIDC(rules []resource.OIDCRule, claims map[string]any) (int, bool) {
	for i, r := range rules {
		if matchOIDCRule(r, claims) {
			return i, true
		}
	}
	return -1, false
}

func matchOIDCRule(r resource.OIDCRule, claims map[string]any) bool {
	if len(r.Claims) == 0 {
		return false
	}
	for name, values := range r.Claims {
		got, ok := ClaimString(claims[name])
		if !ok || got == "" || !slices.Contains(values, got) {
			return false
		}
	}
	return true
}
