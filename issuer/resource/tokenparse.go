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
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	jose "github.com/go-jose/go-jose/v4"
	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/ssh"
)

var (
	// slugRE matches a GitHub enterprise slug.
	slugRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9_.-]{0,98}[A-Za-z0-9])?$`)
	// serviceAccountRE matches "NAMESPACE:NAME" of a Kubernetes service
	// account: a DNS label and a DNS subdomain.
	serviceAccountRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?:[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$`)
	// githubIDRE matches a GitHub repository or owner id as its claims
	// write it: a decimal number without leading zeros.
	githubIDRE = regexp.MustCompile(`^[1-9][0-9]{0,19}$`)
	// claimNameRE matches a claim name in an oidc rule.
	claimNameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,127}$`)
)

// joinMethods lists the join methods of token resources, for messages.
const joinMethods = "github, gitlab, kubernetes, oidc or bound_keypair"

// maxRules bounds the allow rules of one token.
const maxRules = 256

// tokenExpires decodes a token's metadata.expires.
func (p *fileParser) tokenExpires(n *yaml.Node) time.Time {
	s, ok := p.scalar(n, "metadata.expires")
	if !ok || s == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		p.errorf(resolve(n).Line, "invalid metadata.expires %q: want an RFC 3339 time such as 2027-01-01T00:00:00Z", s)
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
		m, ok = p.fields(spec, "spec", "join_method", "bot_name", "audience",
			JoinMethodGitHub, JoinMethodGitLab, JoinMethodKubernetes, JoinMethodOIDC, JoinMethodBoundKeypair)
		if !ok {
			return t
		}
	}
	if n := m["join_method"]; n == nil {
		p.errorf(specLine, "missing spec.join_method (want %s)", joinMethods)
	} else if s, ok := p.scalar(n, "spec.join_method"); ok {
		switch s {
		case JoinMethodGitHub, JoinMethodGitLab, JoinMethodKubernetes, JoinMethodOIDC, JoinMethodBoundKeypair:
			t.JoinMethod = s
		case "":
			p.errorf(n.Line, "missing spec.join_method (want %s)", joinMethods)
		case "token":
			p.errorf(n.Line, "spec.join_method token is for one-time secrets made with mwi-issuer token create, not for token resources (want %s)", joinMethods)
		default:
			p.errorf(n.Line, "unknown spec.join_method %q (want %s)", s, joinMethods)
		}
	}
	if n := m["bot_name"]; n == nil {
		p.errorf(specLine, "missing spec.bot_name (the bot the token joins as)")
	} else if s, ok := p.scalar(n, "spec.bot_name"); ok {
		if s == "" {
			p.errorf(n.Line, "missing spec.bot_name (the bot the token joins as)")
		} else {
			t.BotName = s
			d.refs = append(d.refs, ref{name: s, line: n.Line})
		}
	}
	if n := m["audience"]; n != nil {
		if s, ok := p.scalar(n, "spec.audience"); ok {
			if err := checkPlain(s); err != nil {
				p.errorf(n.Line, "invalid spec.audience %q: %v", s, err)
			} else {
				t.Audience = s
			}
		}
	}
	// The block of the join method, and no other.
	for _, method := range []string{JoinMethodGitHub, JoinMethodGitLab, JoinMethodKubernetes, JoinMethodOIDC, JoinMethodBoundKeypair} {
		n := m[method]
		switch {
		case n == nil && method == t.JoinMethod:
			p.errorf(specLine, "missing spec.%s (join_method is %s)", method, method)
		case n == nil:
		case t.JoinMethod != "" && method != t.JoinMethod:
			p.errorf(keyLine(spec, method), "spec.%s is set but spec.join_method is %s: set only the block of the join method", method, t.JoinMethod)
		case t.JoinMethod == "":
			// The method is unknown or missing, which is reported; still
			// check the block for its own errors.
			fallthrough
		default:
			p.joinBlock(method, n, &t)
		}
	}
	if t.JoinMethod == JoinMethodBoundKeypair && t.Audience != "" {
		p.errorf(keyLine(spec, "audience"), "spec.audience applies to ID tokens, not to join_method bound_keypair")
	}
	return t
}

// keyLine returns the line of key in the mapping n, or n's line.
func keyLine(n *yaml.Node, key string) int {
	n = resolve(n)
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := resolve(n.Content[i]); k.Value == key {
			return k.Line
		}
	}
	return n.Line
}

// joinBlock decodes the block of one join method into t.
func (p *fileParser) joinBlock(method string, n *yaml.Node, t *Token) {
	path := "spec." + method
	line := resolve(n).Line
	switch method {
	case JoinMethodGitHub:
		m, ok := p.fields(n, path, "enterprise_server_host", "enterprise_slug", "static_jwks", "allow")
		if !ok {
			return
		}
		g := &GitHubJoin{}
		if v := m["enterprise_server_host"]; v != nil {
			g.EnterpriseServerHost = p.hostPort(v, path+".enterprise_server_host")
		}
		if v := m["enterprise_slug"]; v != nil {
			if s, ok := p.scalar(v, path+".enterprise_slug"); ok && s != "" {
				if !slugRE.MatchString(s) {
					p.errorf(v.Line, "invalid %s.enterprise_slug %q: must match %s", path, s, slugRE)
				} else {
					g.EnterpriseSlug = s
				}
			}
		}
		if g.EnterpriseServerHost != "" && g.EnterpriseSlug != "" {
			p.errorf(resolve(m["enterprise_slug"]).Line, "set one of %s.enterprise_server_host and %s.enterprise_slug, not both", path, path)
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
					p.errorf(keyLine(r, k), "invalid %s.%s %q: want GitHub's numeric id, in decimal (such as 74)", rpath, k, v)
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
		t.GitHub = g
	case JoinMethodGitLab:
		m, ok := p.fields(n, path, "domain", "static_jwks", "allow")
		if !ok {
			return
		}
		g := &GitLabJoin{Domain: "gitlab.com"}
		if v := m["domain"]; v != nil {
			if h := p.hostPort(v, path+".domain"); h != "" {
				g.Domain = h
			}
		}
		g.StaticJWKS = p.staticJWKS(m["static_jwks"], path)
		p.rules(m["allow"], path, line, func(r *yaml.Node, rpath string) {
			f, ok := p.ruleFields(r, rpath, []string{"sub", "project_path", "namespace_path", "pipeline_source", "environment", "ref", "ref_type", "user_login", "ref_protected"},
				"the pipelines of any project on the GitLab instance", "project_path", "namespace_path", "sub")
			if !ok {
				return
			}
			if v := f["ref_protected"]; v != "" && v != "true" && v != "false" {
				p.errorf(keyLine(r, "ref_protected"), "invalid %s.ref_protected %q: want true or false", rpath, v)
				return
			}
			g.Allow = append(g.Allow, GitLabRule{
				Sub: f["sub"], ProjectPath: f["project_path"], NamespacePath: f["namespace_path"],
				PipelineSource: f["pipeline_source"], Environment: f["environment"], Ref: f["ref"],
				RefType: f["ref_type"], UserLogin: f["user_login"], RefProtected: f["ref_protected"],
			})
		})
		t.GitLab = g
	case JoinMethodKubernetes, JoinMethodOIDC:
		m, ok := p.fields(n, path, "issuer_url", "ca_data", "static_jwks", "allow")
		if !ok {
			return
		}
		var issuer string
		if v := m["issuer_url"]; v == nil {
			p.errorf(line, "missing %s.issuer_url (the issuer of the ID tokens, as in their iss claim)", path)
		} else if s, ok := p.scalar(v, path+".issuer_url"); ok {
			if err := checkIssuerURL(s); err != nil {
				p.errorf(v.Line, "invalid %s.issuer_url %q: %v", path, s, err)
			} else {
				issuer = s
			}
		}
		jwks := p.staticJWKS(m["static_jwks"], path)
		var caData []byte
		if v := m["ca_data"]; v != nil {
			caData = p.caData(v, path+".ca_data")
			if caData != nil && jwks != nil {
				p.errorf(v.Line, "%s.ca_data is for the discovery endpoint, which static_jwks replaces: set one of them", path)
			}
		}
		if method == JoinMethodKubernetes {
			k := &KubernetesJoin{IssuerURL: issuer, CAData: caData, StaticJWKS: jwks}
			p.rules(m["allow"], path, line, func(r *yaml.Node, rpath string) {
				f, ok := p.ruleFields(r, rpath, []string{"service_account"}, "", "service_account")
				if !ok {
					return
				}
				if !serviceAccountRE.MatchString(f["service_account"]) {
					p.errorf(keyLine(r, "service_account"), "invalid %s.service_account %q: want NAMESPACE:NAME", rpath, f["service_account"])
					return
				}
				k.Allow = append(k.Allow, KubernetesRule{ServiceAccount: f["service_account"]})
			})
			t.Kubernetes = k
		} else {
			o := &OIDCJoin{IssuerURL: issuer, CAData: caData, StaticJWKS: jwks}
			p.rules(m["allow"], path, line, func(r *yaml.Node, rpath string) {
				if rule, ok := p.oidcRule(r, rpath); ok {
					o.Allow = append(o.Allow, rule)
				}
			})
			t.OIDC = o
		}
	case JoinMethodBoundKeypair:
		m, ok := p.fields(n, path, "public_key")
		if !ok {
			return
		}
		b := &BoundKeypairJoin{}
		if v := m["public_key"]; v == nil {
			p.errorf(line, "missing %s.public_key (the key in authorized_keys form)", path)
		} else if s, ok := p.scalar(v, path+".public_key"); ok {
			key, err := parseBoundKey(s)
			if err != nil {
				p.errorf(v.Line, "invalid %s.public_key: %v", path, err)
			} else {
				b.PublicKey = strings.TrimSpace(s)
				b.Key = key
			}
		}
		t.BoundKeypair = b
	}
}

// rules decodes the allow list of a join block, calling rule for each
// entry, and reports an empty list; blockLine is where the block is.
func (p *fileParser) rules(n *yaml.Node, path string, blockLine int, rule func(r *yaml.Node, rpath string)) {
	if n == nil {
		p.errorf(blockLine, "missing %s.allow: a token needs at least one allow rule", path)
		return
	}
	items, ok := p.list(n, path+".allow")
	if !ok {
		return
	}
	if len(items) == 0 {
		p.errorf(resolve(n).Line, "%s.allow lists no rules: a token needs at least one", path)
		return
	}
	if len(items) > maxRules {
		p.errorf(resolve(n).Line, "%s.allow lists %d rules, more than %d", path, len(items), maxRules)
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
	m, ok := p.fields(n, path, known...)
	if !ok {
		return nil, false
	}
	out := make(map[string]string, len(m))
	good := true
	for k, v := range m {
		s, ok := p.scalar(v, path+"."+k)
		if !ok {
			good = false
			continue
		}
		if err := checkPlain(s); err != nil {
			p.errorf(resolve(v).Line, "invalid %s.%s %q: %v", path, k, s, err)
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
			p.errorf(resolve(n).Line, "%s must set %s", path, required[0])
		} else {
			p.errorf(resolve(n).Line, "%s must set at least one of %s: a rule on the other fields alone would admit %s",
				path, strings.Join(required, ", "), what)
		}
		return nil, false
	}
	return out, true
}

// oidcRule decodes a rule of an oidc block: {claims: {NAME: [VALUE...]}}.
func (p *fileParser) oidcRule(n *yaml.Node, path string) (OIDCRule, bool) {
	m, ok := p.fields(n, path, "claims")
	if !ok {
		return OIDCRule{}, false
	}
	c := m["claims"]
	if c == nil {
		p.errorf(resolve(n).Line, "%s must set claims", path)
		return OIDCRule{}, false
	}
	pairs, ok := p.mapping(c, path+".claims")
	if !ok {
		return OIDCRule{}, false
	}
	if len(pairs) == 0 {
		p.errorf(resolve(c).Line, "%s.claims names no claims: a rule needs at least one", path)
		return OIDCRule{}, false
	}
	rule := OIDCRule{Claims: make(map[string][]string, len(pairs))}
	good := true
	for _, kv := range pairs {
		cpath := path + ".claims." + kv.key
		if !claimNameRE.MatchString(kv.key) {
			p.errorf(kv.line, "invalid claim name %q in %s.claims: must match %s", kv.key, path, claimNameRE)
			good = false
			continue
		}
		// A value is a string or a list of strings.
		var items []*yaml.Node
		if v := resolve(kv.value); v.Kind == yaml.SequenceNode {
			items, _ = p.list(v, cpath)
			if len(items) == 0 {
				p.errorf(v.Line, "%s lists no values", cpath)
				good = false
				continue
			}
		} else {
			items = []*yaml.Node{v}
		}
		for _, item := range items {
			s, ok := p.scalar(item, cpath)
			if !ok {
				good = false
				continue
			}
			if s == "" {
				p.errorf(item.Line, "%s: empty value: a claim must equal a non-empty value", cpath)
				good = false
				continue
			}
			if err := checkPlain(s); err != nil {
				p.errorf(item.Line, "invalid value %q in %s: %v", s, cpath, err)
				good = false
				continue
			}
			rule.Claims[kv.key] = append(rule.Claims[kv.key], s)
		}
	}
	return rule, good
}

// hostPort decodes a host name with an optional port.
func (p *fileParser) hostPort(n *yaml.Node, path string) string {
	s, ok := p.scalar(n, path)
	if !ok || s == "" {
		return ""
	}
	if err := checkHostPort(s); err != nil {
		p.errorf(resolve(n).Line, "invalid %s %q: %v", path, s, err)
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
	s, ok := p.scalar(n, path)
	if !ok || s == "" {
		return nil
	}
	raw := []byte(s)
	if !strings.HasPrefix(strings.TrimSpace(s), "-----BEGIN") {
		var err error
		raw, err = base64.StdEncoding.DecodeString(strings.Join(strings.Fields(s), ""))
		if err != nil {
			p.errorf(resolve(n).Line, "invalid %s: neither PEM nor base64 of PEM", path)
			return nil
		}
	}
	if err := checkCAPEM(raw); err != nil {
		p.errorf(resolve(n).Line, "invalid %s: %v", path, err)
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
	s, ok := p.scalar(n, path+".static_jwks")
	if !ok || strings.TrimSpace(s) == "" {
		return nil
	}
	if err := CheckJWKS([]byte(s)); err != nil {
		p.errorf(resolve(n).Line, "invalid %s.static_jwks: %v", path, err)
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

// parseBoundKey parses the public key of a bound_keypair token.
func parseBoundKey(s string) (ssh.PublicKey, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("empty")
	}
	key, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(s))
	if err != nil {
		return nil, errors.New("not a public key in authorized_keys form (ssh-ed25519 AAAA...)")
	}
	if strings.TrimSpace(string(rest)) != "" {
		return nil, errors.New("holds more than one key")
	}
	if _, isCert := key.(*ssh.Certificate); isCert {
		return nil, errors.New("want a public key, not a certificate")
	}
	if cpk, ok := key.(ssh.CryptoPublicKey); ok {
		if pub, ok := cpk.CryptoPublicKey().(*rsa.PublicKey); ok && pub.N.BitLen() < 2048 {
			return nil, errors.New("RSA keys must have at least 2048 bits")
		}
	}
	switch key.Type() {
	case ssh.KeyAlgoED25519, ssh.KeyAlgoRSA, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521:
	default:
		return nil, fmt.Errorf("unsupported key type %s (want ssh-ed25519, ecdsa-sha2-* or ssh-rsa)", key.Type())
	}
	return key, nil
}
