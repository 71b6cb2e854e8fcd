package resource

import (
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/yamlfile"
)

var (
	// slugRE matches a GitHub enterprise slug.
	slugRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9_.-]{0,98}[A-Za-z0-9])?$`)
	// githubIDRE matches a GitHub repository or owner id as its claims
	// write it: a decimal number without leading zeros.
	githubIDRE = regexp.MustCompile(`^[1-9][0-9]{0,19}$`)
)

// GitHubJoin is the github block of a token: GitHub Actions ID tokens.
type GitHubJoin struct {
	// EnterpriseServerHost is the host (and port) of a GitHub Enterprise
	// Server, whose issuer is https://HOST/_services/token.
	EnterpriseServerHost string
	// EnterpriseSlug is the slug of a GitHub enterprise with a customised
	// issuer, https://token.actions.githubusercontent.com/SLUG.
	EnterpriseSlug string
	// StaticJWKS is a JSON Web Key Set to verify with instead of fetching
	// the issuer's; nil means discovery.
	StaticJWKS []byte
	Allow      []GitHubRule
}

// A GitHubRule admits a GitHub Actions ID token whose claims equal every
// non-empty field of the rule.
type GitHubRule struct {
	Sub             string
	Repository      string
	RepositoryOwner string
	// RepositoryID and RepositoryOwnerID are the immutable numeric ids of
	// the repository and of its owner, in decimal: unlike the names, they
	// do not pass to a repository or organisation registered under a name
	// that was renamed or deleted.
	RepositoryID      string
	RepositoryOwnerID string
	Workflow          string
	Environment       string
	Actor             string
	Ref               string
	RefType           string
}

// GitHub returns t's github block, or nil if t has another join method.
func (t Token) GitHub() *GitHubJoin {
	g, _ := t.Join.(*GitHubJoin)
	return g
}

// Method returns api.JoinMethodGitHub.
func (*GitHubJoin) Method() api.JoinMethod { return api.JoinMethodGitHub }

// Issuer returns the issuer of the block's ID tokens: githubIssuer
// (https://token.actions.githubusercontent.com on github.com),
// githubIssuer/SLUG with enterprise_slug, or https://HOST/_services/token
// with enterprise_server_host.
func (g *GitHubJoin) Issuer(githubIssuer string) IDTokenIssuer {
	base := strings.TrimSuffix(githubIssuer, "/")
	switch {
	case g.EnterpriseServerHost != "":
		return IDTokenIssuer{URL: "https://" + g.EnterpriseServerHost + "/_services/token", StaticJWKS: g.StaticJWKS}
	case g.EnterpriseSlug != "":
		return IDTokenIssuer{URL: base + "/" + g.EnterpriseSlug, StaticJWKS: g.StaticJWKS}
	}
	return IDTokenIssuer{URL: base, StaticJWKS: g.StaticJWKS}
}

// Match returns the first rule that admits a GitHub Actions ID token with
// the given claims. A rule admits when each of its non-empty fields equals
// the claim of the same name (repository_id and repository_owner_id
// compare as decimal text: the claims are strings such as "74"); a rule
// that names none of sub, repository, repository_owner and their ids
// admits nothing.
func (g *GitHubJoin) Match(claims map[string]any) (int, bool) {
	for i, r := range g.Allow {
		fields := []field{
			{"sub", r.Sub}, {"repository", r.Repository}, {"repository_owner", r.RepositoryOwner},
			{"repository_id", r.RepositoryID}, {"repository_owner_id", r.RepositoryOwnerID},
			{"workflow", r.Workflow}, {"environment", r.Environment}, {"actor", r.Actor},
			{"ref", r.Ref}, {"ref_type", r.RefType},
		}
		if matchFields(claims, fields, "sub", "repository", "repository_owner", "repository_id", "repository_owner_id") {
			return i, true
		}
	}
	return -1, false
}

func (g *GitHubJoin) clone() JoinSpec {
	c := *g
	c.StaticJWKS = slices.Clone(g.StaticJWKS)
	c.Allow = slices.Clone(g.Allow)
	return &c
}

func (*GitHubJoin) parse(p *fileParser, n *yaml.Node, path string, line int) JoinSpec {
	m, ok := p.Fields(n, path, "enterprise_server_host", "enterprise_slug", "static_jwks", "allow")
	if !ok {
		return nil
	}
	g := &GitHubJoin{}
	if v := m["enterprise_server_host"]; v != nil {
		g.EnterpriseServerHost = p.hostPort(v, path+".enterprise_server_host")
	}
	if v := m["enterprise_slug"]; v != nil {
		if s, ok := p.Scalar(v, path+".enterprise_slug"); ok && s != "" {
			if !slugRE.MatchString(s) {
				p.Errorf(v.Line, "invalid %s.enterprise_slug %q: must match %s", path, s, slugRE)
			} else {
				g.EnterpriseSlug = s
			}
		}
	}
	if g.EnterpriseServerHost != "" && g.EnterpriseSlug != "" {
		p.Errorf(yamlfile.Resolve(m["enterprise_slug"]).Line, "set one of %s.enterprise_server_host and %s.enterprise_slug, not both", path, path)
	}
	g.StaticJWKS = p.staticJWKS(m["static_jwks"], path)
	p.rules(m["allow"], path, line, func(r *yaml.Node, rpath string) {
		f, ok := p.ruleFields(r, rpath, []string{"sub", "repository", "repository_owner", "repository_id", "repository_owner_id",
			"workflow", "environment", "actor", "ref", "ref_type"},
			"the workflows of any repository on GitHub", "repository", "repository_owner", "repository_id", "repository_owner_id", "sub")
		if !ok {
			return
		}
		for _, k := range []string{"repository_id", "repository_owner_id"} {
			if v := f[k]; v != "" && !githubIDRE.MatchString(v) {
				p.Errorf(yamlfile.KeyLine(r, k), "invalid %s.%s %q: want GitHub's numeric id, in decimal (such as 74)", rpath, k, v)
				ok = false
			}
		}
		if !ok {
			return
		}
		g.Allow = append(g.Allow, GitHubRule{
			Sub: f["sub"], Repository: f["repository"], RepositoryOwner: f["repository_owner"],
			RepositoryID: f["repository_id"], RepositoryOwnerID: f["repository_owner_id"],
			Workflow: f["workflow"], Environment: f["environment"], Actor: f["actor"],
			Ref: f["ref"], RefType: f["ref_type"],
		})
	})
	return g
}
