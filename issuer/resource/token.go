package resource

import (
	"maps"
	"slices"
	"time"

	"golang.org/x/crypto/ssh"
)

// kindToken is the kind of a token resource.
const kindToken = "token"

// Join methods of token resources. They are the values of the join_method
// field, and equal the api package's JoinMethod constants.
const (
	JoinMethodGitHub       = "github"
	JoinMethodGitLab       = "gitlab"
	JoinMethodKubernetes   = "kubernetes"
	JoinMethodOIDC         = "oidc"
	JoinMethodBoundKeypair = "bound_keypair"
)

// A Token says how a bot joins without a secret: which attestation, from
// which issuer, is accepted as that bot. Daemons name it as their
// onboarding token_name; the name is not a secret.
//
//	kind: token
//	version: v1
//	metadata:
//	  name: github-ci
//	  expires: 2027-01-01T00:00:00Z   # optional; after it the token admits no one
//	spec:
//	  join_method: github             # github, gitlab, kubernetes, oidc or bound_keypair
//	  bot_name: ci
//	  audience: ""                    # optional; default: the issuer's cluster name
//	  github:                         # the block named by join_method, and no other
//	    enterprise_server_host: ""    # optional: issuer https://HOST/_services/token
//	    enterprise_slug: ""           # optional: issuer https://token.actions.githubusercontent.com/SLUG
//	    static_jwks: ""               # optional JWKS JSON: verify with it, without discovery
//	    allow:                        # any rule admits; each non-empty field must equal the claim
//	      - repository: org/repo      # sub repository repository_owner repository_id repository_owner_id
//	        repository_id: 74         #   workflow environment actor ref ref_type; a rule names at least
//	        ref: refs/heads/main      #   one of repository, repository_owner, their ids, sub
//	  gitlab:
//	    domain: gitlab.com            # issuer https://DOMAIN
//	    static_jwks: ""
//	    allow:                        # sub project_path namespace_path pipeline_source environment
//	      - project_path: grp/proj    #   ref ref_type user_login ref_protected; at least one of
//	                                  #   project_path, namespace_path, sub
//	  kubernetes:
//	    issuer_url: https://kubernetes.default.svc   # the service account issuer
//	    ca_data: ""                   # optional PEM, literal or base64, for the discovery endpoint
//	    static_jwks: ""               # instead of discovery
//	    allow:
//	      - service_account: ns:name
//	  oidc:
//	    issuer_url: https://issuer.example.com
//	    ca_data: ""
//	    static_jwks: ""
//	    allow:                        # each claim named must equal one of its values
//	      - claims: {repository: [a, b], ref: refs/heads/main}
//	  bound_keypair:
//	    public_key: ssh-ed25519 AAAA...
//
// Exactly one of GitHub, GitLab, Kubernetes, OIDC and BoundKeypair is
// set: the one JoinMethod names.
type Token struct {
	Name        string
	Description string
	// Expires is when the token stops admitting anyone; zero means never.
	// A token past its expiry still loads, so that a resource set does not
	// become invalid with time.
	Expires    time.Time
	JoinMethod string
	BotName    string
	// Audience is the audience an ID token must be issued for; empty means
	// the issuer's cluster name.
	Audience string

	GitHub       *GitHubJoin
	GitLab       *GitLabJoin
	Kubernetes   *KubernetesJoin
	OIDC         *OIDCJoin
	BoundKeypair *BoundKeypairJoin

	Source Location // where the resource document starts
}

func (Token) isResource() {}

// Expired reports whether the token admits no one at now.
func (t Token) Expired(now time.Time) bool {
	return !t.Expires.IsZero() && !now.Before(t.Expires)
}

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
}

// KubernetesJoin is the kubernetes block of a token: projected service
// account tokens of one cluster.
type KubernetesJoin struct {
	// IssuerURL is the cluster's service account issuer
	// (kube-apiserver --service-account-issuer).
	IssuerURL string
	// CAData is the PEM of the authorities to trust for the discovery
	// endpoint; nil means the system's.
	CAData     []byte
	StaticJWKS []byte
	Allow      []KubernetesRule
}

// A KubernetesRule admits the token of one service account.
type KubernetesRule struct {
	// ServiceAccount is "NAMESPACE:NAME"; the token's sub is
	// "system:serviceaccount:NAMESPACE:NAME".
	ServiceAccount string
}

// OIDCJoin is the oidc block of a token: ID tokens of any OIDC issuer.
type OIDCJoin struct {
	IssuerURL  string
	CAData     []byte
	StaticJWKS []byte
	Allow      []OIDCRule
}

// An OIDCRule admits an ID token in which each claim it names has one of
// the values listed for it.
type OIDCRule struct {
	Claims map[string][]string
}

// BoundKeypairJoin is the bound_keypair block of a token: the public key
// whose holder may join.
type BoundKeypairJoin struct {
	// PublicKey is the registered key, as written (authorized_keys form).
	PublicKey string
	// Key is PublicKey parsed.
	Key ssh.PublicKey
}

// Token returns the token resource with the given name and reports whether
// it exists.
func (s *Set) Token(name string) (Token, bool) {
	t, ok := s.tokens[name]
	if !ok {
		return Token{}, false
	}
	return t.clone(), true
}

// Tokens returns all token resources, sorted by name.
func (s *Set) Tokens() []Token {
	out := make([]Token, 0, len(s.tokens))
	for _, name := range slices.Sorted(maps.Keys(s.tokens)) {
		out = append(out, s.tokens[name].clone())
	}
	return out
}

func (t Token) clone() Token {
	if t.GitHub != nil {
		g := *t.GitHub
		g.StaticJWKS = slices.Clone(g.StaticJWKS)
		g.Allow = slices.Clone(g.Allow)
		t.GitHub = &g
	}
	if t.GitLab != nil {
		g := *t.GitLab
		g.StaticJWKS = slices.Clone(g.StaticJWKS)
		g.Allow = slices.Clone(g.Allow)
		t.GitLab = &g
	}
	if t.Kubernetes != nil {
		k := *t.Kubernetes
		k.CAData = slices.Clone(k.CAData)
		k.StaticJWKS = slices.Clone(k.StaticJWKS)
		k.Allow = slices.Clone(k.Allow)
		t.Kubernetes = &k
	}
	if t.OIDC != nil {
		o := *t.OIDC
		o.CAData = slices.Clone(o.CAData)
		o.StaticJWKS = slices.Clone(o.StaticJWKS)
		o.Allow = make([]OIDCRule, len(t.OIDC.Allow))
		for i, r := range t.OIDC.Allow {
			c := make(map[string][]string, len(r.Claims))
			for k, v := range r.Claims {
				c[k] = slices.Clone(v)
			}
			o.Allow[i] = OIDCRule{Claims: c}
		}
		t.OIDC = &o
	}
	if t.BoundKeypair != nil {
		b := *t.BoundKeypair
		t.BoundKeypair = &b
	}
	return t
}
