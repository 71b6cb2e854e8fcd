// Package attest obtains what mwid proves itself with when it joins the
// issuer: a one-time join token, an OIDC ID token (from the GitHub Actions
// token endpoint, an environment variable or a file), or a bound key
// pair's signature over a fresh challenge from the issuer.
//
// Each join method's attestation is one [Source], in a file of its own,
// made from the onboarding configuration by the function registered for
// the method in sources. Adding a join method is a new Source, a line in
// sources, and its onboarding block in the config package.
//
// Every attestation is obtained afresh for one join: ID tokens are
// short-lived, projected tokens rotate, and challenges are single-use.
// Nothing here logs a token or a key, and error messages name where a
// secret came from, never the secret.
package attest

import (
	"context"
	"crypto/tls"
	"fmt"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/config"
)

// Challenger asks the issuer for a bound key pair challenge, presenting
// identity over mutual TLS if it is not nil. *issuerclient.Client is one.
type Challenger interface {
	Challenge(ctx context.Context, identity *tls.Certificate, tokenName string) (api.ChallengeResponse, error)
}

// A Source obtains the proof of one join method and sets it in req, whose
// join method and token name are set already. ch asks the issuer for a
// challenge, for methods that need one; identity, if not nil, is the bot
// identity the daemon holds and will join with.
type Source interface {
	Attest(ctx context.Context, req *api.JoinRequest, ch Challenger, identity *tls.Certificate) error
}

// sources makes the Source of each join method from the onboarding
// configuration.
var sources = map[api.JoinMethod]func(config.Onboarding) Source{
	api.JoinMethodToken:        func(ob config.Onboarding) Source { return Token{Secret: ob.Token} },
	api.JoinMethodGitHub:       idTokenSource,
	api.JoinMethodGitLab:       idTokenSource,
	api.JoinMethodKubernetes:   idTokenSource,
	api.JoinMethodOIDC:         idTokenSource,
	api.JoinMethodBoundKeypair: func(ob config.Onboarding) Source { return BoundKeypairSource{Key: ob.Key} },
}

// Attest obtains an attestation for the onboarding ob and returns a join
// request carrying the join method, the token name and the proof. The
// caller adds the public keys and what it asks for. identity, if not nil,
// is the bot identity the daemon holds and will join with: a bound key
// pair's challenge is asked for with it too.
func Attest(ctx context.Context, ob config.Onboarding, ch Challenger, identity *tls.Certificate) (api.JoinRequest, error) {
	source, ok := sources[ob.JoinMethod]
	if !ok {
		return api.JoinRequest{}, fmt.Errorf("unknown join method %q", ob.JoinMethod)
	}
	req := api.JoinRequest{JoinMethod: ob.JoinMethod, TokenName: ob.TokenName}
	if err := source(ob).Attest(ctx, &req, ch, identity); err != nil {
		return api.JoinRequest{}, err
	}
	return req, nil
}
