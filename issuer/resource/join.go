package resource

import (
	"encoding/json"
	"slices"
	"strconv"

	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
)

// A JoinSpec is the block of a token resource for its join method: which
// attestations the token admits. Each join method is one type, in a file
// of its own (join_METHOD.go), that decodes its block, reports line by
// line what is wrong with it, and judges attestations; what the methods
// share (decoding and verifying ID tokens, replay, audit) is done outside
// them, by the packages join and authority.
//
// A JoinSpec is also one of the kinds below, which tell how its machines
// attest: IDTokenJoin or ChallengeJoin.
type JoinSpec interface {
	// Method returns the join method the block is for.
	Method() api.JoinMethod
	// parse decodes the block n of a token, at path ("spec.METHOD") and
	// line, recording errors in p. It is called on the nil value
	// registered in joinSpecs.
	parse(p *fileParser, n *yaml.Node, path string, line int) JoinSpec
	// clone returns a deep copy, so that a Set's tokens cannot be changed
	// through a copy given out.
	clone() JoinSpec
}

// An IDTokenJoin is the JoinSpec of a method whose machines attest with an
// OIDC ID token: the token must be issued by Issuer, and an allow rule
// must Match its claims.
type IDTokenJoin interface {
	JoinSpec
	// Issuer returns the issuer the ID tokens must name and where its keys
	// come from. githubIssuer is the base issuer of GitHub Actions.
	Issuer(githubIssuer string) IDTokenIssuer
	// Match returns the index of the first allow rule that admits an ID
	// token with the given claims, and whether there is one.
	Match(claims map[string]any) (int, bool)
}

// A ChallengeJoin is the JoinSpec of a method whose machines attest with a
// signature over a challenge from the issuer, made for one token and
// usable once.
type ChallengeJoin interface {
	JoinSpec
	// SigningKey returns the key whose signature over a challenge admits.
	SigningKey() ssh.PublicKey
}

// IDTokenIssuer is where the ID tokens of a token resource come from.
type IDTokenIssuer struct {
	URL string // the iss claim the tokens must have
	// StaticJWKS is the key set to verify with; nil means OIDC discovery.
	StaticJWKS []byte
	// CAData is the PEM of the authorities to trust for discovery; nil
	// means the system's.
	CAData []byte
}

// joinSpecs registers the join methods of token resources, each as the nil
// value of its JoinSpec type. Adding a join method is a JoinSpec type in a
// file of its own and a line here.
var joinSpecs = []JoinSpec{
	(*GitHubJoin)(nil),
	(*GitLabJoin)(nil),
	(*KubernetesJoin)(nil),
	(*OIDCJoin)(nil),
	(*BoundKeypairJoin)(nil),
}

// JoinSpecFor returns the JoinSpec kind of join method m, as a nil value
// whose type tells how its machines attest (IDTokenJoin or ChallengeJoin),
// and reports whether token resources have that method.
func JoinSpecFor(m api.JoinMethod) (JoinSpec, bool) {
	for _, s := range joinSpecs {
		if s.Method() == m {
			return s, true
		}
	}
	return nil, false
}

// joinMethodNames returns the join methods of token resources.
func joinMethodNames() []api.JoinMethod {
	out := make([]api.JoinMethod, len(joinSpecs))
	for i, s := range joinSpecs {
		out[i] = s.Method()
	}
	return out
}

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
