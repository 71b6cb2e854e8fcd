package config

import (
	"regexp"
	"strings"

	"github.com/mwi-project/mwi/api"
)

// UsesIDToken reports whether the join method joins with an OIDC ID token.
func (o Onboarding) UsesIDToken() bool { return o.JoinMethod.UsesIDToken() }

// IDTokenSource names where an OIDC ID token comes from. Exactly one of
// GitHubActions, Env and File is set. The token is fetched or read afresh
// for every join, since ID tokens are short-lived and projected tokens
// rotate.
type IDTokenSource struct {
	// GitHubActions asks the GitHub Actions token endpoint
	// ($ACTIONS_ID_TOKEN_REQUEST_URL) for a token for Audience.
	GitHubActions bool
	Audience      string
	// Env is an environment variable holding the token, such as one that
	// GitLab CI's id_tokens: sets.
	Env string
	// File is a file holding the token, such as a Kubernetes projected
	// service-account token.
	File string
}

type fileIDToken struct {
	GitHubActions *fileGitHubActions `yaml:"github_actions"`
	Env           string             `yaml:"env"`
	File          string             `yaml:"file"`
}

type fileGitHubActions struct {
	Audience string `yaml:"audience"`
}

// fileKey is the bound key pair's private key: a file or a systemd
// credential, never an environment variable.
type fileKey struct {
	File       string `yaml:"file"`
	Credential string `yaml:"credential"`
}

var (
	envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	// credentialNameRE matches a systemd credential name: a file name in
	// $CREDENTIALS_DIRECTORY.
	credentialNameRE = regexp.MustCompile(`^[A-Za-z0-9_.@:-]+$`)
)

// onboarding validates the onboarding section: the fields each join
// method needs, and none that it does not use.
func (v *validator) onboarding(f fileOnboard) Onboarding {
	o := Onboarding{JoinMethod: f.JoinMethod}
	m := f.JoinMethod
	switch {
	case m == "":
		v.errorf("onboarding.join_method", "required (%s)", api.JoinMethodList(api.JoinMethods...))
		return o
	case !m.Known():
		v.errorf("onboarding.join_method", "unknown join method %q (want %s)", m, api.JoinMethodList(api.JoinMethods...))
		return o
	}

	switch {
	case m == api.JoinMethodToken && f.TokenName != "":
		v.errorf("onboarding.token_name", "is for the other join methods; join method token names no token resource, its secret is in token")
	case m != api.JoinMethodToken && f.TokenName == "":
		v.errorf("onboarding.token_name", "required: the name of the issuer's token resource that admits this machine")
	case m != api.JoinMethodToken && !resourceNameRE.MatchString(f.TokenName):
		v.errorf("onboarding.token_name", "%q is not a resource name (lower case letters, digits, '.', '_' and '-')", f.TokenName)
	default:
		o.TokenName = f.TokenName
	}

	switch {
	case m == api.JoinMethodToken && f.Token == nil:
		v.errorf("onboarding.token", "required: where the one-time join token comes from (env, file or credential)")
	case m == api.JoinMethodToken:
		t := f.Token
		if count(t.Env, t.File, t.Credential) != 1 {
			v.errorf("onboarding.token", "set exactly one of env, file or credential")
		}
		o.Token = SecretSource{Env: t.Env, File: v.path(t.File), Credential: t.Credential}
	case f.Token != nil:
		v.errorf("onboarding.token", "is for join method token; join method %s has no secret", m)
	}

	switch {
	case o.UsesIDToken():
		o.IDToken = v.idToken(m, f.IDToken)
	case f.IDToken != nil:
		v.errorf("onboarding.id_token", "is for join methods github, gitlab, kubernetes and oidc, not %s", m)
	}

	switch {
	case m == api.JoinMethodBoundKeypair && f.Key == nil:
		v.errorf("onboarding.key", "required: the bound key pair's OpenSSH private key (file: PATH or credential: NAME)")
	case m == api.JoinMethodBoundKeypair:
		k := f.Key
		if count(k.File, k.Credential) != 1 {
			v.errorf("onboarding.key", "set exactly one of file or credential")
		}
		if k.Credential != "" && (!credentialNameRE.MatchString(k.Credential) || k.Credential == "." || k.Credential == "..") {
			v.errorf("onboarding.key.credential", "%q is not a systemd credential name", k.Credential)
		}
		o.Key = SecretSource{File: v.path(k.File), Credential: k.Credential}
	case f.Key != nil:
		v.errorf("onboarding.key", "is for join method bound_keypair, not %s", m)
	}
	return o
}

// idToken validates the ID token source of join method m.
func (v *validator) idToken(m api.JoinMethod, f *fileIDToken) IDTokenSource {
	const path = "onboarding.id_token"
	if f == nil {
		v.errorf(path, "required for join method %s: github_actions: {audience: AUDIENCE}, env: VARIABLE or file: PATH", m)
		return IDTokenSource{}
	}
	if count(boolString(f.GitHubActions != nil), f.Env, f.File) != 1 {
		v.errorf(path, "set exactly one of github_actions, env or file")
	}
	var s IDTokenSource
	if g := f.GitHubActions; g != nil {
		s.GitHubActions, s.Audience = true, g.Audience
		switch {
		case m == api.JoinMethodGitLab || m == api.JoinMethodKubernetes:
			v.errorf(path+".github_actions", "a GitHub Actions token cannot join with join method %s", m)
		case g.Audience == "":
			v.errorf(path+".github_actions.audience", "required: the audience the issuer's token resource expects (by default the issuer's cluster name, mwi)")
		case strings.ContainsFunc(g.Audience, func(r rune) bool { return r <= ' ' || r == 0x7f }):
			v.errorf(path+".github_actions.audience", "%q is not an audience", g.Audience)
		}
	}
	if f.Env != "" {
		if !envNameRE.MatchString(f.Env) {
			v.errorf(path+".env", "%q is not an environment variable name", f.Env)
		}
		s.Env = f.Env
	}
	s.File = v.path(f.File)
	return s
}

// count returns how many of ss are not empty.
func count(ss ...string) int {
	n := 0
	for _, s := range ss {
		if s != "" {
			n++
		}
	}
	return n
}

func boolString(b bool) string {
	if b {
		return "set"
	}
	return ""
}
