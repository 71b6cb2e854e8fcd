package resource

import (
	"maps"
	"slices"
	"time"

	"github.com/mwi-project/mwi/api"
)

// kindToken is the kind of a token resource.
const kindToken = "token"

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
//	      - project_path: grp/proj    #   ref ref_type user_login ref_protected user_id user_email
//	                                  #   environment_protected ci_config_sha ci_config_ref_uri
//	                                  #   deployment_tier project_visibility; at least one of
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
// Join is the block of the join method, one of the types registered in
// joinSpecs; its Method is JoinMethod.
type Token struct {
	Name        string
	Description string
	// Expires is when the token stops admitting anyone; zero means never.
	// A token past its expiry still loads, so that a resource set does not
	// become invalid with time.
	Expires    time.Time
	JoinMethod api.JoinMethod
	BotName    string
	// Audience is the audience an ID token must be issued for; empty means
	// the issuer's cluster name.
	Audience string

	Join JoinSpec

	Source Location // where the resource document starts
}

func (Token) isResource() {}

// Expired reports whether the token admits no one at now.
func (t Token) Expired(now time.Time) bool {
	return !t.Expires.IsZero() && !now.Before(t.Expires)
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
	if t.Join != nil {
		t.Join = t.Join.clone()
	}
	return t
}
