package resource

import (
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/yamlfile"
)

// GitLabJoin is the gitlab block of a token: GitLab CI ID tokens.
type GitLabJoin struct {
	// Domain is the GitLab instance's host (and port); its issuer is
	// https://DOMAIN. It is gitlab.com if the resource sets none.
	Domain     string
	StaticJWKS []byte
	Allow      []GitLabRule
}

// A GitLabRule admits a GitLab CI ID token whose claims equal every
// non-empty field of the rule.
type GitLabRule struct {
	Sub            string
	ProjectPath    string
	NamespacePath  string
	PipelineSource string
	Environment    string
	Ref            string
	RefType        string
	UserLogin      string
	RefProtected   string // "true" or "false", as GitLab's claim
	// The claims that Teleport's gitlab rules also compare.
	UserID               string
	UserEmail            string
	EnvironmentProtected string // "true" or "false", as GitLab's claim
	CIConfigSHA          string
	CIConfigRefURI       string
	DeploymentTier       string
	ProjectVisibility    string
}

// GitLab returns t's gitlab block, or nil if t has another join method.
func (t Token) GitLab() *GitLabJoin {
	g, _ := t.Join.(*GitLabJoin)
	return g
}

// Method returns api.JoinMethodGitLab.
func (*GitLabJoin) Method() api.JoinMethod { return api.JoinMethodGitLab }

// Issuer returns the issuer of the block's ID tokens, https://DOMAIN.
func (g *GitLabJoin) Issuer(string) IDTokenIssuer {
	domain := g.Domain
	if domain == "" {
		domain = "gitlab.com"
	}
	return IDTokenIssuer{URL: "https://" + domain, StaticJWKS: g.StaticJWKS}
}

// Match is GitHubJoin.Match for GitLab CI ID tokens; a rule must name one
// of sub, project_path and namespace_path.
func (g *GitLabJoin) Match(claims map[string]any) (int, bool) {
	for i, r := range g.Allow {
		fields := []field{
			{"sub", r.Sub}, {"project_path", r.ProjectPath}, {"namespace_path", r.NamespacePath},
			{"pipeline_source", r.PipelineSource}, {"environment", r.Environment}, {"ref", r.Ref},
			{"ref_type", r.RefType}, {"user_login", r.UserLogin}, {"ref_protected", r.RefProtected},
			{"user_id", r.UserID}, {"user_email", r.UserEmail}, {"environment_protected", r.EnvironmentProtected},
			{"ci_config_sha", r.CIConfigSHA}, {"ci_config_ref_uri", r.CIConfigRefURI},
			{"deployment_tier", r.DeploymentTier}, {"project_visibility", r.ProjectVisibility},
		}
		if matchFields(claims, fields, "sub", "project_path", "namespace_path") {
			return i, true
		}
	}
	return -1, false
}

func (g *GitLabJoin) clone() JoinSpec {
	c := *g
	c.StaticJWKS = slices.Clone(g.StaticJWKS)
	c.Allow = slices.Clone(g.Allow)
	return &c
}

func (*GitLabJoin) parse(p *fileParser, n *yaml.Node, path string, line int) JoinSpec {
	m, ok := p.Fields(n, path, "domain", "static_jwks", "allow")
	if !ok {
		return nil
	}
	g := &GitLabJoin{Domain: "gitlab.com"}
	if v := m["domain"]; v != nil {
		if h := p.hostPort(v, path+".domain"); h != "" {
			g.Domain = h
		}
	}
	g.StaticJWKS = p.staticJWKS(m["static_jwks"], path)
	p.rules(m["allow"], path, line, func(r *yaml.Node, rpath string) {
		f, ok := p.ruleFields(r, rpath, []string{"sub", "project_path", "namespace_path", "pipeline_source", "environment", "ref", "ref_type", "user_login", "ref_protected",
			"user_id", "user_email", "environment_protected", "ci_config_sha", "ci_config_ref_uri", "deployment_tier", "project_visibility"},
			"the pipelines of any project on the GitLab instance", "project_path", "namespace_path", "sub")
		if !ok {
			return
		}
		for _, k := range []string{"ref_protected", "environment_protected"} {
			if v := f[k]; v != "" && v != "true" && v != "false" {
				p.Errorf(yamlfile.KeyLine(r, k), "invalid %s.%s %q: want true or false", rpath, k, v)
				ok = false
			}
		}
		if p.teleport {
			// Teleport matches some of these fields as glob patterns;
			// MWI compares every claim exactly.
			for k, v := range f {
				if strings.ContainsAny(v, "*?") {
					p.Errorf(yamlfile.KeyLine(r, k), "invalid %s.%s %q: MWI compares claims exactly, without patterns; list a rule for each value", rpath, k, v)
					ok = false
				}
			}
		}
		if !ok {
			return
		}
		g.Allow = append(g.Allow, GitLabRule{
			Sub: f["sub"], ProjectPath: f["project_path"], NamespacePath: f["namespace_path"],
			PipelineSource: f["pipeline_source"], Environment: f["environment"], Ref: f["ref"],
			RefType: f["ref_type"], UserLogin: f["user_login"], RefProtected: f["ref_protected"],
			UserID: f["user_id"], UserEmail: f["user_email"], EnvironmentProtected: f["environment_protected"],
			CIConfigSHA: f["ci_config_sha"], CIConfigRefURI: f["ci_config_ref_uri"],
			DeploymentTier: f["deployment_tier"], ProjectVisibility: f["project_visibility"],
		})
	})
	return g
}
