package resource

import (
	"regexp"
	"slices"

	"go.yaml.in/yaml/v3"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/yamlfile"
)

// claimNameRE matches a claim name in an oidc rule.
var claimNameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,127}$`)

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

// OIDC returns t's oidc block, or nil if t has another join method.
func (t Token) OIDC() *OIDCJoin {
	o, _ := t.Join.(*OIDCJoin)
	return o
}

// Method returns api.JoinMethodOIDC.
func (*OIDCJoin) Method() api.JoinMethod { return api.JoinMethodOIDC }

// Issuer returns the block's issuer_url.
func (o *OIDCJoin) Issuer(string) IDTokenIssuer {
	return IDTokenIssuer{URL: o.IssuerURL, StaticJWKS: o.StaticJWKS, CAData: o.CAData}
}

// Match returns the first rule that admits a token with the given claims.
// A rule admits when each claim it names has, by ClaimString, one of the
// values it lists; a rule naming no claim admits nothing.
func (o *OIDCJoin) Match(claims map[string]any) (int, bool) {
	for i, r := range o.Allow {
		if r.match(claims) {
			return i, true
		}
	}
	return -1, false
}

func (r OIDCRule) match(claims map[string]any) bool {
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

func (o *OIDCJoin) clone() JoinSpec {
	c := *o
	c.CAData = slices.Clone(o.CAData)
	c.StaticJWKS = slices.Clone(o.StaticJWKS)
	c.Allow = make([]OIDCRule, len(o.Allow))
	for i, r := range o.Allow {
		claims := make(map[string][]string, len(r.Claims))
		for k, v := range r.Claims {
			claims[k] = slices.Clone(v)
		}
		c.Allow[i] = OIDCRule{Claims: claims}
	}
	return &c
}

func (*OIDCJoin) parse(p *fileParser, n *yaml.Node, path string, line int) JoinSpec {
	m, iss, ok := p.issuerBlock(n, path, line)
	if !ok {
		return nil
	}
	o := &OIDCJoin{IssuerURL: iss.URL, CAData: iss.CAData, StaticJWKS: iss.StaticJWKS}
	p.rules(m["allow"], path, line, func(r *yaml.Node, rpath string) {
		if rule, ok := p.oidcRule(r, rpath); ok {
			o.Allow = append(o.Allow, rule)
		}
	})
	return o
}

// oidcRule decodes a rule of an oidc block: {claims: {NAME: [VALUE...]}}.
func (p *fileParser) oidcRule(n *yaml.Node, path string) (OIDCRule, bool) {
	m, ok := p.Fields(n, path, "claims")
	if !ok {
		return OIDCRule{}, false
	}
	c := m["claims"]
	if c == nil {
		p.Errorf(yamlfile.Resolve(n).Line, "%s must set claims", path)
		return OIDCRule{}, false
	}
	pairs, ok := p.Mapping(c, path+".claims")
	if !ok {
		return OIDCRule{}, false
	}
	if len(pairs) == 0 {
		p.Errorf(yamlfile.Resolve(c).Line, "%s.claims names no claims: a rule needs at least one", path)
		return OIDCRule{}, false
	}
	rule := OIDCRule{Claims: make(map[string][]string, len(pairs))}
	good := true
	for _, kv := range pairs {
		cpath := path + ".claims." + kv.Key
		if !claimNameRE.MatchString(kv.Key) {
			p.Errorf(kv.Line, "invalid claim name %q in %s.claims: must match %s", kv.Key, path, claimNameRE)
			good = false
			continue
		}
		// A value is a string or a list of strings.
		var items []*yaml.Node
		if v := yamlfile.Resolve(kv.Value); v.Kind == yaml.SequenceNode {
			items, _ = p.List(v, cpath)
			if len(items) == 0 {
				p.Errorf(v.Line, "%s lists no values", cpath)
				good = false
				continue
			}
		} else {
			items = []*yaml.Node{v}
		}
		for _, item := range items {
			s, ok := p.Scalar(item, cpath)
			if !ok {
				good = false
				continue
			}
			if s == "" {
				p.Errorf(item.Line, "%s: empty value: a claim must equal a non-empty value", cpath)
				good = false
				continue
			}
			if err := checkPlain(s); err != nil {
				p.Errorf(item.Line, "invalid value %q in %s: %v", s, cpath, err)
				good = false
				continue
			}
			rule.Claims[kv.Key] = append(rule.Claims[kv.Key], s)
		}
	}
	return rule, good
}
