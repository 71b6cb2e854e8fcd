package kuberbac

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// FieldManager is the field manager of the server-side applies of Apply.
const FieldManager = "mwi-issuer"

// A Client talks to one cluster's API server with an administrator's
// credentials, as a kubeconfig gives them.
type Client struct {
	Server string // https URL of the API server
	HTTP   *http.Client
	Token  string // bearer token, if the credentials are one
}

// kubeconfig is the part of a kubeconfig file that LoadKubeconfig reads.
type kubeconfig struct {
	CurrentContext string `yaml:"current-context"`
	Contexts       []struct {
		Name    string `yaml:"name"`
		Context struct {
			Cluster string `yaml:"cluster"`
			User    string `yaml:"user"`
		} `yaml:"context"`
	} `yaml:"contexts"`
	Clusters []struct {
		Name    string `yaml:"name"`
		Cluster struct {
			Server                   string `yaml:"server"`
			CertificateAuthority     string `yaml:"certificate-authority"`
			CertificateAuthorityData string `yaml:"certificate-authority-data"`
			InsecureSkipTLSVerify    bool   `yaml:"insecure-skip-tls-verify"`
		} `yaml:"cluster"`
	} `yaml:"clusters"`
	Users []struct {
		Name string `yaml:"name"`
		User struct {
			ClientCertificate     string `yaml:"client-certificate"`
			ClientCertificateData string `yaml:"client-certificate-data"`
			ClientKey             string `yaml:"client-key"`
			ClientKeyData         string `yaml:"client-key-data"`
			Token                 string `yaml:"token"`
			TokenFile             string `yaml:"tokenFile"`
		} `yaml:"user"`
	} `yaml:"users"`
}

// LoadKubeconfig returns a client for the current context of the
// kubeconfig file at path: its cluster's server and certificate
// authority, and its user's client certificate and key or token, each
// given inline (-data) or as a file relative to the kubeconfig. Other ways
// of authenticating (exec plugins, auth providers) are refused: the
// credentials must be usable without running anything. So is
// insecure-skip-tls-verify: the server is always verified.
func LoadKubeconfig(path string) (*Client, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var kc kubeconfig
	if err := yaml.Unmarshal(data, &kc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	fail := func(format string, args ...any) (*Client, error) {
		return nil, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...))
	}
	if kc.CurrentContext == "" {
		return fail("no current-context")
	}
	var clusterName, userName string
	found := false
	for _, c := range kc.Contexts {
		if c.Name == kc.CurrentContext {
			clusterName, userName, found = c.Context.Cluster, c.Context.User, true
		}
	}
	if !found {
		return fail("current-context %q is not among its contexts", kc.CurrentContext)
	}
	dir := filepath.Dir(path)
	// read returns inline base64 data, or the content of a file.
	read := func(what, inline, file string) ([]byte, error) {
		switch {
		case inline != "":
			b, err := base64.StdEncoding.DecodeString(inline)
			if err != nil {
				return nil, fmt.Errorf("%s: %s-data is not base64: %w", path, what, err)
			}
			return b, nil
		case file != "":
			if !filepath.IsAbs(file) {
				file = filepath.Join(dir, file)
			}
			return os.ReadFile(file)
		}
		return nil, nil
	}
	c := &Client{}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	found = false
	for _, cl := range kc.Clusters {
		if cl.Name != clusterName {
			continue
		}
		found = true
		u, err := url.Parse(cl.Cluster.Server)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return fail("cluster %s: server %q is not an https URL", clusterName, cl.Cluster.Server)
		}
		if cl.Cluster.InsecureSkipTLSVerify {
			return fail("cluster %s: insecure-skip-tls-verify: mwi-issuer writes RBAC over this connection and always verifies the API server; "+
				"set certificate-authority-data to its CA instead", clusterName)
		}
		c.Server = strings.TrimSuffix(cl.Cluster.Server, "/")
		ca, err := read("certificate-authority", cl.Cluster.CertificateAuthorityData, cl.Cluster.CertificateAuthority)
		if err != nil {
			return nil, err
		}
		if ca != nil {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(ca) {
				return fail("cluster %s: no PEM certificate in its certificate authority", clusterName)
			}
			tlsConf.RootCAs = pool
		}
	}
	if !found {
		return fail("context %s names cluster %q, which it does not define", kc.CurrentContext, clusterName)
	}
	found = false
	for _, u := range kc.Users {
		if u.Name != userName {
			continue
		}
		found = true
		cert, err := read("client-certificate", u.User.ClientCertificateData, u.User.ClientCertificate)
		if err != nil {
			return nil, err
		}
		key, err := read("client-key", u.User.ClientKeyData, u.User.ClientKey)
		if err != nil {
			return nil, err
		}
		switch {
		case cert != nil && key != nil:
			pair, err := tls.X509KeyPair(cert, key)
			if err != nil {
				return fail("user %s: %v", userName, err)
			}
			tlsConf.Certificates = []tls.Certificate{pair}
		case cert != nil || key != nil:
			return fail("user %s: a client certificate needs its key, and a key its certificate", userName)
		}
		c.Token = u.User.Token
		if c.Token == "" && u.User.TokenFile != "" {
			tok, err := read("tokenFile", "", u.User.TokenFile)
			if err != nil {
				return nil, err
			}
			c.Token = strings.TrimSpace(string(tok))
		}
		if tlsConf.Certificates == nil && c.Token == "" {
			return fail("user %s has neither a client certificate and key nor a token; mwi-issuer runs no exec plugin or auth provider", userName)
		}
	}
	if !found {
		return fail("context %s names user %q, which it does not define", kc.CurrentContext, userName)
	}
	c.HTTP = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConf}}
	return c, nil
}

// An Applied is what Apply did to one object.
type Applied struct {
	Kind, Namespace, Name string
	Action                string // "applied" or "deleted"
}

// String returns the line mwi-issuer kube rbac --apply prints.
func (a Applied) String() string {
	what := a.Kind + " " + a.Name
	if a.Namespace != "" {
		what = a.Kind + " " + a.Namespace + "/" + a.Name
	}
	return what + " " + a.Action
}

// Apply makes the cluster's RBAC objects labelled as this package's be
// exactly objs: it applies each (server-side apply, field manager
// mwi-issuer, taking over conflicting fields), then deletes the objects
// of earlier applies that objs no longer has. It returns what it did, in
// order, up to the first error.
func (c *Client) Apply(ctx context.Context, objs []Object) ([]Applied, error) {
	var done []Applied
	want := map[string]bool{}
	for _, o := range objs {
		if o.Metadata.Labels[LabelManagedBy] != ManagedBy {
			return done, fmt.Errorf("%s %s: not labelled %s=%s; only such objects are applied", o.Kind, o.Metadata.Name, LabelManagedBy, ManagedBy)
		}
		body, err := json.Marshal(o)
		if err != nil {
			return done, err
		}
		path, err := objectPath(o.Kind, o.Metadata.Namespace, o.Metadata.Name)
		if err != nil {
			return done, err
		}
		q := url.Values{"fieldManager": {FieldManager}, "force": {"true"}}
		if err := c.do(ctx, http.MethodPatch, path+"?"+q.Encode(), "application/apply-patch+yaml", body, nil); err != nil {
			return done, fmt.Errorf("apply %s: %w", Applied{Kind: o.Kind, Namespace: o.Metadata.Namespace, Name: o.Metadata.Name}.what(), err)
		}
		want[key(o.Kind, o.Metadata.Namespace, o.Metadata.Name)] = true
		done = append(done, Applied{Kind: o.Kind, Namespace: o.Metadata.Namespace, Name: o.Metadata.Name, Action: "applied"})
	}
	// Delete bindings first, so that no binding is left pointing at a
	// deleted role if a deletion fails half-way.
	for _, kind := range []string{KindClusterRoleBinding, KindRoleBinding, KindClusterRole, KindRole} {
		var list struct {
			Items []Object `json:"items"`
		}
		q := url.Values{"labelSelector": {LabelManagedBy + "=" + ManagedBy}}
		if err := c.do(ctx, http.MethodGet, collectionPath(kind)+"?"+q.Encode(), "", nil, &list); err != nil {
			return done, fmt.Errorf("list %ss: %w", kind, err)
		}
		slices.SortFunc(list.Items, func(a, b Object) int {
			return strings.Compare(a.Metadata.Namespace+"/"+a.Metadata.Name, b.Metadata.Namespace+"/"+b.Metadata.Name)
		})
		for _, o := range list.Items {
			// The selector is the API server's to apply; an object
			// answered without the label, by a server or proxy that
			// ignores it, is not ours to delete.
			if want[key(kind, o.Metadata.Namespace, o.Metadata.Name)] || o.Metadata.Labels[LabelManagedBy] != ManagedBy {
				continue
			}
			a := Applied{Kind: kind, Namespace: o.Metadata.Namespace, Name: o.Metadata.Name, Action: "deleted"}
			path, err := objectPath(kind, o.Metadata.Namespace, o.Metadata.Name)
			if err != nil {
				return done, err
			}
			if err := c.do(ctx, http.MethodDelete, path, "", nil, nil); err != nil && !errors.Is(err, errNotFound) {
				return done, fmt.Errorf("delete %s: %w", a.what(), err)
			}
			done = append(done, a)
		}
	}
	return done, nil
}

func (a Applied) what() string {
	s := a.String()
	return strings.TrimSuffix(strings.TrimSuffix(s, " "+a.Action), " ")
}

func key(kind, ns, name string) string { return kind + "/" + ns + "/" + name }

// resourceOf maps the RBAC kinds to their API resources.
var resourceOf = map[string]string{
	KindClusterRole:        "clusterroles",
	KindClusterRoleBinding: "clusterrolebindings",
	KindRole:               "roles",
	KindRoleBinding:        "rolebindings",
}

// collectionPath returns the path that lists every object of kind, in
// every namespace.
func collectionPath(kind string) string {
	return "/apis/" + rbacGroup + "/v1/" + resourceOf[kind]
}

// objectPath returns the path of one object.
func objectPath(kind, ns, name string) (string, error) {
	res, ok := resourceOf[kind]
	if !ok {
		return "", fmt.Errorf("kind %q is not an RBAC kind", kind)
	}
	namespaced := kind == KindRole || kind == KindRoleBinding
	if name == "" || namespaced != (ns != "") {
		return "", fmt.Errorf("%s %q in namespace %q: a Role or RoleBinding has a namespace, and only they do", kind, name, ns)
	}
	p := "/apis/" + rbacGroup + "/v1/"
	if namespaced {
		p += "namespaces/" + url.PathEscape(ns) + "/"
	}
	return p + res + "/" + url.PathEscape(name), nil
}

var errNotFound = errors.New("not found")

// do sends one request and decodes a JSON answer into out, if not nil. An
// error answer becomes an error holding the API server's message.
func (c *Client) do(ctx context.Context, method, path, contentType string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.Server+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var status struct {
			Message string `json:"message"`
		}
		msg := resp.Status
		if json.Unmarshal(data, &status) == nil && status.Message != "" {
			msg = resp.Status + ": " + status.Message
		}
		if resp.StatusCode == http.StatusNotFound && method == http.MethodDelete {
			return fmt.Errorf("%s: %w", msg, errNotFound)
		}
		return errors.New(msg)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(data, out)
}

// ParseYAML decodes a YAML stream of RBAC objects, as Plan.YAML writes
// it, and checks that each is one Apply can apply.
func ParseYAML(data []byte) ([]Object, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var out []Object
	for i := 1; ; i++ {
		var o Object
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if _, err := objectPath(o.Kind, o.Metadata.Namespace, o.Metadata.Name); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		out = append(out, o)
	}
}
