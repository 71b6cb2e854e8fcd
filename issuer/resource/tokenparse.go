package resource

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	jose "github.com/go-jose/go-jose/v4"
	"go.yaml.in/yaml/v3"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/yamlfile"
)

// maxRules bounds the allow rules of one token.
const maxRules = 256

// tokenExpires decodes a token's metadata.expires.
func (p *fileParser) tokenExpires(n *yaml.Node) time.Time {
	s, ok := p.Scalar(n, "metadata.expires")
	if !ok || s == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		p.Errorf(yamlfile.Resolve(n).Line, "invalid metadata.expires %q: want an RFC 3339 time such as 2027-01-01T00:00:00Z", s)
		return time.Time{}
	}
	return t
}

// tokenSpec decodes the spec of a token, recording the bot it names in d;
// spec may be nil, and specLine is where it is, or would be.
func (p *fileParser) tokenSpec(spec *yaml.Node, specLine int, d *decoded) Token {
	var t Token
	var m map[string]*yaml.Node
	if spec != nil {
		var ok bool
		known := []string{"join_method", "bot_name", "audience"}
		for _, s := range joinSpecs {
			known = append(known, string(s.Method()))
		}
		m, ok = p.Fields(spec, "spec", known...)
		if !ok {
			return t
		}
	}
	t.JoinMethod = p.tokenJoinMethod(m["join_method"], specLine)
	t.BotName = p.tokenBotName(m["bot_name"], specLine, d)
	if n := m["audience"]; n != nil {
		if s, ok := p.Scalar(n, "spec.audience"); ok {
			if err := checkPlain(s); err != nil {
				p.Errorf(n.Line, "invalid spec.audience %q: %v", s, err)
			} else {
				t.Audience = s
			}
		}
	}
	for _, js := range joinSpecs {
		parse := func(n *yaml.Node, path string, line int) JoinSpec { return js.parse(p, n, path, line) }
		if j := p.joinBlock(spec, m, specLine, t.JoinMethod, string(js.Method()), parse); j != nil {
			t.Join = j
		}
	}
	kind, _ := JoinSpecFor(t.JoinMethod)
	if _, idToken := kind.(IDTokenJoin); kind != nil && !idToken && t.Audience != "" {
		p.Errorf(yamlfile.KeyLine(spec, "audience"), "spec.audience applies to ID tokens, not to join_method %s", t.JoinMethod)
	}
	return t
}

// joinBlock decodes with parse the block key of a token's spec, whose
// fields are m: the block of the join method, method, must be there, and
// no other may be. It returns the decoded block if it is the method's.
// Both token forms call it for each block they know.
func (p *fileParser) joinBlock(spec *yaml.Node, m map[string]*yaml.Node, specLine int, method api.JoinMethod, key string, parse func(n *yaml.Node, path string, line int) JoinSpec) JoinSpec {
	n := m[key]
	switch {
	case n == nil && key == string(method):
		p.Errorf(specLine, "missing spec.%s (join_method is %s)", key, method)
	case n == nil:
	case method != "" && key != string(method):
		p.Errorf(yamlfile.KeyLine(spec, key), "spec.%s is set but spec.join_method is %s: set only the block of the join method", key, method)
	case method == "":
		// The method is unknown or missing, which is reported; still
		// check the block for its own errors.
		parse(n, "spec."+key, yamlfile.Resolve(n).Line)
	default:
		return parse(n, "spec."+key, yamlfile.Resolve(n).Line)
	}
	return nil
}

// tokenBotName decodes spec.bot_name, n, which may be nil, recording it
// in d; specLine is where the spec is. It returns "" for a name that is
// missing, which is reported.
func (p *fileParser) tokenBotName(n *yaml.Node, specLine int, d *decoded) string {
	if n == nil {
		p.Errorf(specLine, "missing spec.bot_name (the bot the token joins as)")
		return ""
	}
	s, ok := p.Scalar(n, "spec.bot_name")
	if !ok {
		return ""
	}
	if s == "" {
		p.Errorf(n.Line, "missing spec.bot_name (the bot the token joins as)")
		return ""
	}
	d.refs = append(d.refs, ref{name: s, line: n.Line})
	return s
}

// tokenJoinMethod decodes spec.join_method, n, which may be nil; specLine
// is where the spec is. It returns "" for a method token resources do not
// have, which is reported.
func (p *fileParser) tokenJoinMethod(n *yaml.Node, specLine int) api.JoinMethod {
	methods := api.JoinMethodList(joinMethodNames()...)
	if n == nil {
		p.Errorf(specLine, "missing spec.join_method (want %s)", methods)
		return ""
	}
	s, ok := p.Scalar(n, "spec.join_method")
	if !ok {
		return ""
	}
	method := api.JoinMethod(s)
	_, isMethod := JoinSpecFor(method)
	switch {
	case isMethod:
		return method
	case s == "":
		p.Errorf(n.Line, "missing spec.join_method (want %s)", methods)
	case method == api.JoinMethodToken:
		p.Errorf(n.Line, "spec.join_method token is for one-time secrets made with mwi-issuer token create, not for token resources (want %s)", methods)
	default:
		p.Errorf(n.Line, "unknown spec.join_method %q (want %s)", s, methods)
	}
	return ""
}

// issuerBlock decodes the fields of a join block whose ID tokens come
// from an issuer named by URL (kubernetes, oidc): issuer_url, ca_data and
// static_jwks, and allow, which it returns undecoded with the others.
func (p *fileParser) issuerBlock(n *yaml.Node, path string, line int) (map[string]*yaml.Node, IDTokenIssuer, bool) {
	m, ok := p.Fields(n, path, "issuer_url", "ca_data", "static_jwks", "allow")
	if !ok {
		return nil, IDTokenIssuer{}, false
	}
	var iss IDTokenIssuer
	if v := m["issuer_url"]; v == nil {
		p.Errorf(line, "missing %s.issuer_url (the issuer of the ID tokens, as in their iss claim)", path)
	} else if s, ok := p.Scalar(v, path+".issuer_url"); ok {
		if err := checkIssuerURL(s); err != nil {
			p.Errorf(v.Line, "invalid %s.issuer_url %q: %v", path, s, err)
		} else {
			iss.URL = s
		}
	}
	iss.StaticJWKS = p.staticJWKS(m["static_jwks"], path)
	if v := m["ca_data"]; v != nil {
		iss.CAData = p.caData(v, path+".ca_data")
		if iss.CAData != nil && iss.StaticJWKS != nil {
			p.Errorf(v.Line, "%s.ca_data is for the discovery endpoint, which static_jwks replaces: set one of them", path)
		}
	}
	return m, iss, true
}

// rules decodes the allow list of a join block, calling rule for each
// entry, and reports an empty list; blockLine is where the block is.
func (p *fileParser) rules(n *yaml.Node, path string, blockLine int, rule func(r *yaml.Node, rpath string)) {
	if n == nil {
		p.Errorf(blockLine, "missing %s.allow: a token needs at least one allow rule", path)
		return
	}
	items, ok := p.List(n, path+".allow")
	if !ok {
		return
	}
	if len(items) == 0 {
		p.Errorf(yamlfile.Resolve(n).Line, "%s.allow lists no rules: a token needs at least one", path)
		return
	}
	if len(items) > maxRules {
		p.Errorf(yamlfile.Resolve(n).Line, "%s.allow lists %d rules, more than %d", path, len(items), maxRules)
		return
	}
	for i, item := range items {
		rule(item, fmt.Sprintf("%s.allow[%d]", path, i))
	}
}

// ruleFields decodes a rule of string fields, which must name at least one
// of required.
//
// A rule of a CI join method that names neither the repository or project
// nor the subject would admit jobs of anyone's repositories, so one of
// required must be set; what names what it would admit, for the message.
func (p *fileParser) ruleFields(n *yaml.Node, path string, known []string, what string, required ...string) (map[string]string, bool) {
	m, ok := p.Fields(n, path, known...)
	if !ok {
		return nil, false
	}
	out := make(map[string]string, len(m))
	good := true
	for k, v := range m {
		s, ok := p.Scalar(v, path+"."+k)
		if !ok {
			good = false
			continue
		}
		if err := checkPlain(s); err != nil {
			p.Errorf(yamlfile.Resolve(v).Line, "invalid %s.%s %q: %v", path, k, s, err)
			good = false
			continue
		}
		if s != "" {
			out[k] = s
		}
	}
	if !good {
		return nil, false
	}
	if !slices.ContainsFunc(required, func(k string) bool { return out[k] != "" }) {
		if len(required) == 1 {
			p.Errorf(yamlfile.Resolve(n).Line, "%s must set %s", path, required[0])
		} else {
			p.Errorf(yamlfile.Resolve(n).Line, "%s must set at least one of %s: a rule on the other fields alone would admit %s",
				path, strings.Join(required, ", "), what)
		}
		return nil, false
	}
	return out, true
}

// hostPort decodes a host name with an optional port.
func (p *fileParser) hostPort(n *yaml.Node, path string) string {
	s, ok := p.Scalar(n, path)
	if !ok || s == "" {
		return ""
	}
	if err := checkHostPort(s); err != nil {
		p.Errorf(yamlfile.Resolve(n).Line, "invalid %s %q: %v", path, s, err)
		return ""
	}
	return s
}

// checkHostPort reports why s is not HOST or HOST:PORT.
func checkHostPort(s string) error {
	if strings.Contains(s, "://") || strings.ContainsAny(s, "/?#@ \t") {
		return errors.New("want a host name with an optional port, without a scheme or path")
	}
	host := s
	if h, port, err := net.SplitHostPort(s); err == nil {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("invalid port %q", port)
		}
		host = h
	}
	if host == "" {
		return errors.New("no host")
	}
	return nil
}

// checkIssuerURL reports why s is not an OIDC issuer URL.
func checkIssuerURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case s == "":
		return errors.New("empty")
	case err != nil:
		return errors.New("not a URL")
	case u.Scheme != "https":
		return errors.New("want an https:// URL")
	case u.Host == "" || u.Hostname() == "":
		return errors.New("no host")
	case u.User != nil:
		return errors.New("must not hold a user name or password")
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return errors.New("must not have a query or fragment")
	}
	return nil
}

// checkPlain reports why s is not a plain single-line value.
func checkPlain(s string) error {
	if len(s) > 1024 {
		return errors.New("longer than 1024 bytes")
	}
	if strings.ContainsFunc(s, func(r rune) bool { return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) }) {
		return errors.New("must not contain control characters")
	}
	return nil
}

// caData decodes a ca_data field: PEM certificates, as a literal block or
// base64-encoded.
func (p *fileParser) caData(n *yaml.Node, path string) []byte {
	s, ok := p.Scalar(n, path)
	if !ok || s == "" {
		return nil
	}
	raw := []byte(s)
	if !strings.HasPrefix(strings.TrimSpace(s), "-----BEGIN") {
		var err error
		raw, err = base64.StdEncoding.DecodeString(strings.Join(strings.Fields(s), ""))
		if err != nil {
			p.Errorf(yamlfile.Resolve(n).Line, "invalid %s: neither PEM nor base64 of PEM", path)
			return nil
		}
	}
	if err := checkCAPEM(raw); err != nil {
		p.Errorf(yamlfile.Resolve(n).Line, "invalid %s: %v", path, err)
		return nil
	}
	return raw
}

// maxJWKS bounds a static_jwks.
const maxJWKS = 64 << 10

// staticJWKS decodes the static_jwks field of block path; n may be nil.
func (p *fileParser) staticJWKS(n *yaml.Node, path string) []byte {
	if n == nil {
		return nil
	}
	s, ok := p.Scalar(n, path+".static_jwks")
	if !ok || strings.TrimSpace(s) == "" {
		return nil
	}
	if err := CheckJWKS([]byte(s)); err != nil {
		p.Errorf(yamlfile.Resolve(n).Line, "invalid %s.static_jwks: %v", path, err)
		return nil
	}
	return []byte(s)
}

// CheckJWKS reports why data is not a JSON Web Key Set that can verify ID
// tokens: it must hold at least one public RSA (2048 bits or more) or
// ECDSA signing key, and no private key. Keys of other types and keys for
// encryption are ignored, as verifiers ignore them.
func CheckJWKS(data []byte) error {
	if len(data) > maxJWKS {
		return fmt.Errorf("larger than %d bytes", maxJWKS)
	}
	var raw struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return fmt.Errorf("not JSON: %v", err)
	}
	usable := 0
	for i, k := range raw.Keys {
		var key jose.JSONWebKey
		if err := key.UnmarshalJSON(k); err != nil {
			if errors.Is(err, jose.ErrUnsupportedKeyType) {
				continue
			}
			return fmt.Errorf("key %d: %v", i, err)
		}
		if !key.IsPublic() {
			return fmt.Errorf("key %d (kid %q) is a private key: a key set holds public keys only", i, key.KeyID)
		}
		if key.Use == "enc" {
			continue
		}
		switch pub := key.Key.(type) {
		case *rsa.PublicKey:
			if pub.N.BitLen() < 2048 {
				return fmt.Errorf("key %d (kid %q): RSA keys must have at least 2048 bits", i, key.KeyID)
			}
		case *ecdsa.PublicKey:
		default:
			continue
		}
		usable++
	}
	if usable == 0 {
		return errors.New(`holds no RSA or ECDSA signing key (want {"keys": [...]})`)
	}
	return nil
}
