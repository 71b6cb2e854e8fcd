package attest

import (
	"context"
	"crypto/tls"
	"fmt"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/config"
)

// Token is the Source of join method token: a one-time secret made with
// mwi-issuer token create, read from Secret at every join.
type Token struct {
	Secret config.SecretSource
}

// Attest sets req.Token to the secret.
func (t Token) Attest(_ context.Context, req *api.JoinRequest, _ Challenger, _ *tls.Certificate) error {
	tok, err := t.Secret.Read()
	if err != nil {
		return fmt.Errorf("join token: %w", err)
	}
	req.Token = tok
	return nil
}
