package config

import (
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/output"
	"github.com/mwi-project/mwi/internal/yamlfile"
)

// tbot's configuration, version v2, as Teleport's Machine ID guides print
// it, is read into the same Config as mwid's own format, so that a file
// copied from a guide runs as it is. What mwid can honour maps onto its
// settings; every other field of tbot's is refused with the reason and
// what MWI does instead (tbotRefused), never ignored. Relative paths are
// taken, as tbot takes them, from the working directory.

// DefaultAudience is the audience of the GitHub Actions ID token that a v2
// configuration asks for: tbot asks for one for the cluster's name, and
// mwi-issuer's cluster name (its --cluster-name) is by default mwi. The
// extension onboarding.audience names another.
const DefaultAudience = "mwi"

// DefaultKubernetesTokenPath is where join method kubernetes reads the
// service-account token in a v2 configuration that names no
// onboarding.kubernetes.token_path, as tbot does.
const DefaultKubernetesTokenPath = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// DefaultGitLabTokenEnv is the environment variable that holds the GitLab
// ID token in a v2 configuration without onboarding.gitlab.token_env_var_name,
// as in tbot.
const DefaultGitLabTokenEnv = "TBOT_GITLAB_JWT"

// tbotFile is the YAML form of tbot's v2 configuration, with the fields mwid
// honours. ca_pins at the top level and onboarding.audience are MWI's
// extensions.
type tbotFile struct {
	Version         string           `yaml:"version"`
	Debug           bool             `yaml:"debug"`
	DiagAddr        string           `yaml:"diag_addr"`
	ProxyServer     string           `yaml:"proxy_server"`
	AuthServer      string           `yaml:"auth_server"`
	CAPins          []string         `yaml:"ca_pins"`
	CertificateTTL  string           `yaml:"certificate_ttl"`
	CredentialTTL   string           `yaml:"credential_ttl"`
	RenewalInterval string           `yaml:"renewal_interval"`
	Oneshot         bool             `yaml:"oneshot"`
	Onboarding      tbotOnboarding   `yaml:"onboarding"`
	Storage         *tbotDestination `yaml:"storage"`
	Outputs         []yaml.Node      `yaml:"outputs"`
	Services        []yaml.Node      `yaml:"services"`
}

type tbotOnboarding struct {
	JoinMethod api.JoinMethod `yaml:"join_method"`
	Token      string         `yaml:"token"`
	CAPins     []string       `yaml:"ca_pins"`
	CAPath     string         `yaml:"ca_path"`
	Audience   string         `yaml:"audience"`
	GitLab     *struct {
		TokenEnvVarName string `yaml:"token_env_var_name"`
	} `yaml:"gitlab"`
	Kubernetes *struct {
		TokenPath string `yaml:"token_path"`
	} `yaml:"kubernetes"`
	BoundKeypair *struct {
		StaticKeyPath string `yaml:"static_key_path"`
	} `yaml:"bound_keypair"`
}

// tbotDestination is a destination (or storage) of tbot's.
type tbotDestination struct {
	Type     string `yaml:"type"`
	Path     string `yaml:"path"`
	Symlinks string `yaml:"symlinks"`
}

// Reasons shared by several refusals.
const (
	refuseV1   = "is a field of mwid's own format (version: v1), not of tbot's (version: v2); write the file in one of them"
	refuseJoin = "MWI joins with token, github, gitlab, kubernetes, oidc or bound_keypair; "
	// refusePerOutputTTL is for credential_ttl and renewal_interval of an
	// output: mwid renews every output together.
	refusePerOutputTTL = "mwid issues and renews every output together, with the top-level certificate_ttl and renewal_interval; set them there"
)

// tbotRefused are tbot's fields that mwid does not take, by dotted path
// from the root, with the reason and what MWI does instead.
var tbotRefused = map[string]string{
	"fips":     "mwid has no FIPS mode; remove it",
	"join_uri": "MWI's address is proxy_server or auth_server and its onboarding join_method and token; remove it",
	"insecure": "mwid never trusts the issuer blindly: set ca_pins or run mwid --ca-pin PIN",
	// mwid's own (v1) fields, in a file that says v2.
	"issuer":                  "is a field of mwid's own format (version: v1); tbot's format (version: v2) names the issuer in proxy_server",
	"sockets":                 refuseV1,
	"ssh":                     refuseV1,
	"log":                     refuseV1 + "; debug: true logs at level debug",
	"agent":                   refuseV1,
	"identity_ttl":            refuseV1,
	"renew_min_interval":      refuseV1,
	"onboarding.token_name":   "is a field of mwid's own format (version: v1); in tbot's format (version: v2) the token resource is onboarding.token",
	"onboarding.id_token":     refuseV1 + "; tbot's format takes the ID token from where tbot does (the Actions token endpoint for github)",
	"onboarding.key":          refuseV1 + "; for bound_keypair, give onboarding.bound_keypair.static_key_path",
	"onboarding.azure":        refuseJoin + "azure is not one of them",
	"onboarding.gcp":          refuseJoin + "gcp is not one of them",
	"onboarding.terraform":    refuseJoin + "terraform_cloud is not one of them",
	"onboarding.spacelift":    refuseJoin + "spacelift is not one of them",
	"onboarding.tpm":          refuseJoin + "tpm is not one of them",
	"onboarding.azure_devops": refuseJoin + "azure_devops is not one of them",
	"onboarding.bound_keypair.registration_secret":      "MWI's bound_keypair token registers the public key on the issuer; give the private key with static_key_path",
	"onboarding.bound_keypair.registration_secret_path": "MWI's bound_keypair token registers the public key on the issuer; give the private key with static_key_path",
}

// refuseOneAddress is the reason a list of addresses is refused where
// tbot's format has one. tbot's v2 configuration (BotConfig in Teleport's
// lib/tbot/config) names its cluster with the single string auth_server
// or proxy_server and has no field for several; mwid does not invent one.
const refuseOneAddress = "tbot's format (version: v2) takes one address here, as tbot does; for several issuer replicas give one host name " +
	"that resolves to each of them (mwid tries every address of a name), or write mwid's own format (version: v1) with issuer.addresses"

// tbotOneValue are tbot's fields that hold one value where a list might be
// written, by dotted path, with the reason a list is refused.
var tbotOneValue = map[string]string{
	"proxy_server": refuseOneAddress,
	"auth_server":  refuseOneAddress,
}

// tbotOutputRefused are the fields of tbot's outputs and services that
// mwid does not take, by field, for every type.
var tbotOutputRefused = map[string]string{
	"roles":            "MWI issues every output with all of the bot's roles; give the bot fewer roles, or run another bot",
	"credential_ttl":   refusePerOutputTTL,
	"renewal_interval": refusePerOutputTTL,
	"name":             "mwid names outputs by type and path in its logs and status; remove it",
}

// buildTBot builds a Config from the document, tbot's v2 format. It
// returns nil if the document could not be decoded, after recording why.
func (v *validator) buildTBot() *Config {
	root := v.refuseFields(v.root, "", tbotRefused)
	var f tbotFile
	v.f.Decode(root, "", &f)
	if v.f.Err() != nil {
		return nil
	}
	c := &Config{Oneshot: f.Oneshot}

	c.Issuer.Address = v.tbotAddress(&f)
	if len(f.CAPins) > 0 && len(f.Onboarding.CAPins) > 0 {
		v.errorf("ca_pins", "set ca_pins once: here or in onboarding, as tbot does")
	}
	c.Issuer.CAPins = v.pins("ca_pins", f.CAPins)
	if len(f.Onboarding.CAPins) > 0 {
		c.Issuer.CAPins = v.pins("onboarding.ca_pins", f.Onboarding.CAPins)
	}
	// Without pins or a CA file the issuer is verified with the system's
	// trust store, as tbot verifies a proxy.
	c.Issuer.CAFile = tbotPath(f.Onboarding.CAPath)

	c.Onboarding = v.tbotOnboarding(f.Onboarding)

	ttlPath, ttl := "certificate_ttl", f.CertificateTTL
	if f.CredentialTTL != "" {
		ttlPath, ttl = "credential_ttl", f.CredentialTTL
		if f.CertificateTTL != "" {
			v.errorf("credential_ttl", "set one of certificate_ttl and credential_ttl, which tbot reads as the same")
		}
	}
	c.CertificateTTL = v.duration(ttlPath, ttl, DefaultCertificateTTL)
	if c.CertificateTTL < minCertificateTTL {
		v.errorf(ttlPath, "%s is shorter than the minimum %s", c.CertificateTTL, minCertificateTTL)
	}
	c.IdentityTTL = max(DefaultIdentityTTL, c.CertificateTTL)
	c.RenewalInterval = v.duration("renewal_interval", f.RenewalInterval, 0)
	if c.RenewalInterval < 0 || (c.RenewalInterval > 0 && c.RenewalInterval >= c.CertificateTTL) {
		v.errorf("renewal_interval", "%s must be positive and shorter than %s (%s)", c.RenewalInterval, ttlPath, c.CertificateTTL)
	}
	c.RenewMinInterval = DefaultRenewMinInterval

	if s := f.Storage; s != nil && s.Type != "memory" {
		v.errorf("storage.type", "%q: mwid keeps its identity only in memory; set storage: {type: memory} or remove storage", s.Type)
	} else if s != nil && (s.Path != "" || s.Symlinks != "") {
		v.errorf("storage", "a memory storage takes only type")
	}

	c.AgentSocket = Socket{Path: DefaultAgentSocket, Mode: defaultSocketMode, Group: -1}
	c.APISocket = Socket{Path: DefaultAPISocket, Mode: defaultSocketMode, Group: -1}
	for i := range f.Outputs {
		c.Outputs = v.tbotOutput(fmt.Sprintf("outputs.%d", i), &f.Outputs[i], c.Outputs)
	}
	for i := range f.Services {
		c.Outputs = v.tbotOutput(fmt.Sprintf("services.%d", i), &f.Services[i], c.Outputs)
	}

	// tbot listens wherever diag_addr says; mwid, only on loopback from
	// a tbot file, which has no field to allow more.
	c.Diag = v.diag("diag_addr", f.DiagAddr, false, "diag_allow_remote: true in mwid's own format, version: v1")

	c.Log = Log{Level: "info", Format: "text"}
	if f.Debug {
		c.Log.Level = "debug"
	}
	return c
}

// refuseFields records an error for each field of n (at path) that
// refused names, with its reason, and returns n without them, so that
// decoding does not report them again as unknown. Nested mappings are
// searched too.
func (v *validator) refuseFields(n *yaml.Node, path string, refused map[string]string) *yaml.Node {
	n = yamlfile.Resolve(n)
	if n.Kind != yaml.MappingNode {
		return n
	}
	out := *n
	out.Content = nil
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := yamlfile.Resolve(n.Content[i]), n.Content[i+1]
		full := key.Value
		if path != "" {
			full = path + "." + key.Value
		}
		if reason, ok := refused[full]; ok {
			v.f.Errorf(key.Line, "%s: %s", full, reason)
			continue
		}
		if reason, ok := tbotOneValue[full]; ok && yamlfile.Resolve(val).Kind == yaml.SequenceNode {
			v.f.Errorf(key.Line, "%s: %s", full, reason)
			// Its first item stands in, so that decoding reports nothing
			// more of it.
			seq := yamlfile.Resolve(val)
			val = &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Line: seq.Line}
			if len(seq.Content) > 0 {
				val.Value = yamlfile.Resolve(seq.Content[0]).Value
			}
		}
		if yamlfile.Resolve(val).Kind == yaml.MappingNode {
			val = v.refuseFields(val, full, refused)
		}
		out.Content = append(out.Content, n.Content[i], val)
	}
	return &out
}

// tbotAddress returns the issuer's address from proxy_server or
// auth_server: host:port, as written or as a URL (https://host[:port]),
// the port 443 if none is given.
func (v *validator) tbotAddress(f *tbotFile) string {
	path, addr := "proxy_server", f.ProxyServer
	switch {
	case f.ProxyServer != "" && f.AuthServer != "":
		v.errorf("auth_server", "set one of proxy_server and auth_server: both name mwi-issuer, which has no separate proxy")
		return ""
	case f.AuthServer != "":
		path, addr = "auth_server", f.AuthServer
	case addr == "":
		v.errorf("proxy_server", "required: the address of mwi-issuer (host:port), in proxy_server or auth_server")
		return ""
	}
	s := addr
	if rest, ok := strings.CutPrefix(s, "https://"); ok {
		s = strings.TrimSuffix(rest, "/")
	} else if strings.Contains(s, "://") {
		v.errorf(path, "%q: mwi-issuer is reached over HTTPS; write host:port or https://host:port", addr)
		return ""
	}
	if _, _, err := net.SplitHostPort(s); err != nil {
		h := s
		if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
			h = h[1 : len(h)-1]
		}
		s = net.JoinHostPort(h, "443")
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" || !validPort(port) || strings.ContainsAny(s, "/?#@ ") {
		v.errorf(path, "%q is not host:port", addr)
		return ""
	}
	return s
}

// tbotOnboarding maps tbot's onboarding: token is the name of the token
// resource for every join method but token, for which it is the secret
// itself or, as tbot allows, the absolute path of a file holding it. The ID
// token comes from where tbot takes it for each join method.
func (v *validator) tbotOnboarding(f tbotOnboarding) Onboarding {
	o := Onboarding{JoinMethod: f.JoinMethod}
	m := f.JoinMethod
	switch {
	case m == "":
		v.errorf("onboarding.join_method", "required (%s)", api.JoinMethodList(api.JoinMethods...))
		return o
	case !m.Known():
		v.errorf("onboarding.join_method", "%q: %sjoin with one of those, with a token resource of that join method on the issuer", m, refuseJoin)
		return o
	}
	if f.Token == "" {
		v.errorf("onboarding.token", "required: the name of the issuer's token resource (for join method token, its secret)")
	}
	switch {
	case m == api.JoinMethodToken && filepath.IsAbs(f.Token):
		o.Token = SecretSource{File: f.Token}
	case m == api.JoinMethodToken:
		o.Token = SecretSource{Value: f.Token}
	case f.Token != "" && !resourceNameRE.MatchString(f.Token):
		// The value is not shown: it may be a secret meant for join
		// method token, under another join method.
		v.errorf("onboarding.token", "not the name of a token resource (up to 63 lower case letters, digits, '.', '_' and '-'); "+
			"only join method token takes a secret here")
	default:
		o.TokenName = f.Token
	}
	if f.Audience != "" && m != api.JoinMethodGitHub {
		v.errorf("onboarding.audience", "is for join method github, not %s", m)
	}
	if f.GitLab != nil && m != api.JoinMethodGitLab {
		v.errorf("onboarding.gitlab", "is for join method gitlab, not %s", m)
	}
	if f.Kubernetes != nil && m != api.JoinMethodKubernetes {
		v.errorf("onboarding.kubernetes", "is for join method kubernetes, not %s", m)
	}
	if f.BoundKeypair != nil && m != api.JoinMethodBoundKeypair {
		v.errorf("onboarding.bound_keypair", "is for join method bound_keypair, not %s", m)
	}
	switch m {
	case api.JoinMethodGitHub:
		// As tbot does: from the job's token endpoint
		// ($ACTIONS_ID_TOKEN_REQUEST_URL), which the job's id-token: write
		// permission provides.
		o.IDToken = IDTokenSource{GitHubActions: true, Audience: DefaultAudience}
		if f.Audience != "" {
			o.IDToken.Audience = f.Audience
		}
	case api.JoinMethodGitLab:
		o.IDToken.Env = DefaultGitLabTokenEnv
		if f.GitLab != nil && f.GitLab.TokenEnvVarName != "" {
			o.IDToken.Env = f.GitLab.TokenEnvVarName
			if !envNameRE.MatchString(o.IDToken.Env) {
				v.errorf("onboarding.gitlab.token_env_var_name", "%q is not an environment variable name", o.IDToken.Env)
			}
		}
	case api.JoinMethodKubernetes:
		o.IDToken.File = DefaultKubernetesTokenPath
		if f.Kubernetes != nil && f.Kubernetes.TokenPath != "" {
			o.IDToken.File = tbotPath(f.Kubernetes.TokenPath)
		}
	case api.JoinMethodOIDC:
		v.errorf("onboarding.join_method", "oidc: tbot's format cannot say where the ID token comes from; use mwid's format (version: v1) with onboarding.id_token")
	case api.JoinMethodBoundKeypair:
		if f.BoundKeypair == nil || f.BoundKeypair.StaticKeyPath == "" {
			v.errorf("onboarding.bound_keypair.static_key_path", "required: mwid keeps nothing on disk, so the bound key pair's private key is a file of yours (OpenSSH format)")
		} else {
			o.Key = SecretSource{File: tbotPath(f.BoundKeypair.StaticKeyPath)}
		}
	}
	return o
}

// tbotPath makes p absolute, relative to the working directory, as tbot
// reads the paths of its configuration.
func tbotPath(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	if abs, err := filepath.Abs(p); err == nil {
		return abs
	}
	return p
}

// tbotOutput appends to outs the output of the block n (an entry of outputs
// or services at path), or records why there is none.
func (v *validator) tbotOutput(path string, n *yaml.Node, outs []output.Output) []output.Output {
	n = yamlfile.Resolve(n)
	pairs, ok := v.f.Mapping(n, path)
	if !ok {
		return outs
	}
	fields := make(map[string]*yaml.Node, len(pairs))
	for _, p := range pairs {
		if reason, refused := tbotOutputRefused[p.Key]; refused {
			v.f.Errorf(p.Line, "%s.%s: %s", path, p.Key, reason)
			continue
		}
		fields[p.Key] = p.Value
	}
	str := func(key string) string {
		if n := fields[key]; n != nil {
			s, _ := v.f.Scalar(n, path+"."+key)
			return s
		}
		return ""
	}
	typ := str("type")
	known := map[string][]string{
		"identity":      {"type", "destination", "ssh_config", "allow_reissue"},
		"kubernetes/v2": {"type", "destination", "selectors", "disable_exec_plugin"},
		"kubernetes":    {"type", "destination", "kubernetes_cluster", "disable_exec_plugin"},
		"ssh_host":      {"type", "destination", "principals", "ca_type"},
	}
	own, ok := known[typ]
	switch {
	case typ == "":
		v.errorf(path+".type", "required (identity, kubernetes/v2, kubernetes or ssh_host)")
		return outs
	case !ok:
		v.errorf(path+".type", "%q: MWI issues SSH and Kubernetes credentials only; its outputs are identity, kubernetes/v2, kubernetes and ssh_host", typ)
		return outs
	}
	for _, p := range pairs {
		if _, seen := fields[p.Key]; seen && !slices.Contains(own, p.Key) {
			v.f.Errorf(p.Line, "%s.%s: unknown field of outputs of type %s (want %s)", path, p.Key, typ, strings.Join(own[1:], ", "))
		}
	}
	dir, memory := v.tbotDestination(path, fields["destination"], typ)

	switch typ {
	case "identity":
		if b := fields["allow_reissue"]; b != nil {
			if reissue, _ := v.f.Bool(b, path+".allow_reissue"); reissue {
				v.errorf(path+".allow_reissue", "MWI certificates are not reissued for other uses; remove it")
			}
		}
		o := output.Identity{Directory: dir}
		switch s := str("ssh_config"); s {
		case "", "on":
		case "off":
			o.NoSSHConfig = true
		default:
			v.errorf(path+".ssh_config", "%q: want on or off", s)
		}
		if memory {
			if o.NoSSHConfig {
				v.errorf(path+".ssh_config", "an identity in memory writes no ssh_config anyway; remove it")
			}
			// mwid's agent serves the identity: SSH_AUTH_SOCK, mwictl
			// ssh-config.
			return outs
		}
		for _, e := range outs {
			if e, ok := e.(output.Identity); ok && e.Directory == dir {
				v.errorf(path+".destination.path", "another identity output writes to %s already", dir)
			}
		}
		return append(outs, o)

	case "kubernetes/v2", "kubernetes":
		if b := fields["disable_exec_plugin"]; b != nil {
			if off, ok := v.f.Bool(b, path+".disable_exec_plugin"); ok && !off {
				v.errorf(path+".disable_exec_plugin", "mwid's kubeconfig.yaml holds the credentials inline and uses no exec plugin, as true does; set true or remove it")
			}
		}
		var o output.Kubernetes
		if typ == "kubernetes" {
			name := str("kubernetes_cluster")
			if !resourceNameRE.MatchString(name) {
				v.errorf(path+".kubernetes_cluster", "%q is not a cluster name (required)", name)
			}
			o.Clusters = []string{name}
		} else {
			o.Clusters, o.Labels = v.tbotSelectors(path+".selectors", fields["selectors"])
		}
		if !memory {
			o.Directory = dir
		}
		for _, e := range outs {
			if e, ok := e.(output.Kubernetes); ok && o.Directory != "" && e.Directory == o.Directory {
				v.errorf(path+".destination.path", "another kubernetes output writes %s already", o.Path())
			}
		}
		return append(outs, o)

	default: // ssh_host
		if s := str("ca_type"); s != "" && s != "user" {
			v.errorf(path+".ca_type", "%q: MWI exports its SSH user CA only; remove it", s)
		}
		var names []string
		if p := fields["principals"]; p != nil {
			v.f.Decode(p, path+".principals", &names)
		}
		if memory {
			v.errorf(path+".destination", "sshd reads its host certificate from a file; give a directory destination")
			return outs
		}
		// tbot makes the host key; mwid certifies the host's own, which
		// sshd holds: the key ssh_host in the destination, as tbot names it.
		return append(outs, output.SSHHost{
			HostKey:     filepath.Join(dir, "ssh_host.pub"),
			Certificate: filepath.Join(dir, "ssh_host-cert.pub"),
			Names:       names,
		})
	}
}

// tbotDestination returns the directory of the destination n of an output
// of type typ at path, or memory == true for a memory destination.
func (v *validator) tbotDestination(path string, n *yaml.Node, typ string) (dir string, memory bool) {
	path += ".destination"
	if n == nil {
		v.errorf(path, "required: {type: directory, path: PATH} or {type: memory}")
		return "", false
	}
	const modes = "mwid writes each file with a fixed mode (0600 for keys and kubeconfigs, 0644 for public files) owned by its user; remove it"
	n = v.refuseFields(n, path, map[string]string{path + ".acls": modes, path + ".readers": modes})
	var d tbotDestination
	v.f.Decode(n, path, &d)
	switch d.Type {
	case "directory":
		if d.Path == "" {
			v.errorf(path+".path", "required: the directory to write the %s output into", typ)
		}
		switch d.Symlinks {
		case "", "secure", "try-secure":
		default:
			v.errorf(path+".symlinks", "%q: mwid never writes through a symbolic link; remove it", d.Symlinks)
		}
		return tbotPath(d.Path), false
	case "memory":
		if d.Path != "" || d.Symlinks != "" {
			v.errorf(path, "a memory destination takes only type")
		}
		return "", true
	case "kubernetes_secret":
		v.errorf(path+".type", "kubernetes_secret: mwid writes no Kubernetes secrets; write to a directory (an emptyDir volume) or use memory and mwictl")
	case "":
		v.errorf(path+".type", "required: directory or memory")
	default:
		v.errorf(path+".type", "%q: want directory or memory", d.Type)
	}
	return "", false
}

// tbotSelectors returns the clusters and label selectors of a
// kubernetes/v2 output's selectors: each is {name: NAME} or {labels: {...}}.
func (v *validator) tbotSelectors(path string, n *yaml.Node) (clusters []string, labels []map[string]string) {
	type selector struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	}
	var sels []selector
	if n != nil {
		before := len(v.f.Errors())
		n2 := v.refuseSelectorFields(path, n)
		v.f.Decode(n2, path, &sels)
		if len(v.f.Errors()) > before {
			return nil, nil
		}
	}
	if len(sels) == 0 {
		v.errorf(path, "required: one or more of {name: CLUSTER} or {labels: {KEY: VALUE}}")
	}
	for i, s := range sels {
		p := fmt.Sprintf("%s.%d", path, i)
		switch {
		case (s.Name == "") == (len(s.Labels) == 0):
			v.errorf(p, "set one of name and labels")
		case s.Name != "":
			if !resourceNameRE.MatchString(s.Name) {
				v.errorf(p+".name", "%q is not a cluster name", s.Name)
			}
			clusters = append(clusters, s.Name)
		default:
			for k, val := range s.Labels {
				if k == "" || val == "" || strings.ContainsAny(k+val, " \t\r\n") {
					v.errorf(p+".labels", "%q: %q is not a label selector entry", k, val)
				}
			}
			labels = append(labels, s.Labels)
		}
	}
	return clusters, labels
}

// refuseSelectorFields refuses the fields of tbot's selectors that mwid
// does not take, and returns the list without them.
func (v *validator) refuseSelectorFields(path string, n *yaml.Node) *yaml.Node {
	n = yamlfile.Resolve(n)
	if n.Kind != yaml.SequenceNode {
		return n
	}
	out := *n
	out.Content = nil
	for i, item := range n.Content {
		out.Content = append(out.Content, v.refuseFields(item, fmt.Sprintf("%s.%d", path, i), map[string]string{
			fmt.Sprintf("%s.%d.default_namespace", path, i): "mwid's kubeconfig sets no namespace; pass kubectl -n NAMESPACE",
		}))
	}
	return &out
}
