package output

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/mwi-project/mwi/daemon/identity"
	"github.com/mwi-project/mwi/internal/yamlfile"
)

// request returns the request of outputs, leaving out those that fail as
// a renewal does.
func request(outputs []Output) *Request {
	var r Request
	for _, o := range outputs {
		o.Request(&r)
	}
	return &r
}

func TestKubernetesRequest(t *testing.T) {
	keys, _ := identity.NewKeys()
	if req, err := request([]Output{SSHHost{}}).Kubernetes(keys); req != nil || err != nil {
		t.Errorf("request without kubernetes outputs = %+v, %v", req, err)
	}
	req, err := request([]Output{
		Kubernetes{Clusters: []string{"prod", "dev"}},
		SSHHost{},
		Kubernetes{Clusters: []string{"dev"}, Labels: []map[string]string{{"env": "qa"}}},
	}).Kubernetes(keys)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(req.Clusters, []string{"prod", "dev"}) || len(req.Labels) != 1 || !strings.HasPrefix(req.CSR, "-----BEGIN CERTIFICATE REQUEST-----") {
		t.Errorf("request = %+v", req)
	}
}

func needsRenewal(a, b Output) bool {
	return NeedsRenewal([]Output{a}, []Output{b})
}

// parse returns the output of a configuration block, and the errors
// recorded about it.
func parse(t *testing.T, block string) (Output, []string) {
	t.Helper()
	f := yamlfile.New("f.yaml", []byte(block))
	docs := f.Documents()
	if err := f.Err(); err != nil {
		t.Fatal(err)
	}
	var semantic []string
	b := &Block{
		Path: "outputs.0",
		Node: docs[0],
		File: f,
		Errorf: func(path, format string, args ...any) {
			semantic = append(semantic, path+": "+fmt.Sprintf(format, args...))
		},
		Abs: func(p string) string { return p },
	}
	o := Parse(b)
	// Decoding comes first, and its errors with it.
	var errs []string
	for _, err := range f.Errors() {
		errs = append(errs, err.Error())
	}
	return o, append(errs, semantic...)
}

func TestNeedsRenewal(t *testing.T) {
	a := Kubernetes{Clusters: []string{"a"}, Labels: []map[string]string{{"env": "prod"}}, Directory: "/d"}
	same := Kubernetes{Clusters: []string{"a"}, Labels: []map[string]string{{"env": "prod"}}, Directory: "/d"}
	if needsRenewal(a, same) {
		t.Error("equal outputs differ")
	}
	for _, b := range []Output{
		Kubernetes{Clusters: []string{"b"}, Labels: a.Labels, Directory: "/d"},
		Kubernetes{Clusters: a.Clusters, Labels: []map[string]string{{"env": "dev"}}, Directory: "/d"},
		Kubernetes{Clusters: a.Clusters, Labels: []map[string]string{{"env": "prod", "team": "x"}}, Directory: "/d"},
		Kubernetes{Clusters: a.Clusters, Labels: a.Labels},
		SSHHost{},
	} {
		if !needsRenewal(a, b) {
			t.Errorf("%+v and %+v are taken for equal", a, b)
		}
	}
	host, _ := parse(t, "{type: ssh_host, host_key: /k.pub}")
	if empty, _ := parse(t, "{type: ssh_host, host_key: /k.pub, names: [], reload_command: []}"); needsRenewal(host, empty) {
		t.Error(`"names: []" is taken for a change from no names`)
	}
	if web, _ := parse(t, "{type: ssh_host, host_key: /k.pub, names: [web]}"); !needsRenewal(host, web) {
		t.Error("a change of names is not taken for a change")
	}
}

// TestEveryFieldRenews changes each field of each kind of output in turn:
// every change takes a renewal, so that a field added to a kind cannot be
// forgotten by reload.
func TestEveryFieldRenews(t *testing.T) {
	for _, k := range kinds {
		o, _ := parse(t, "type: "+k.typ)
		v := reflect.ValueOf(o)
		for i := range v.NumField() {
			f := v.Type().Field(i)
			changed := reflect.New(v.Type()).Elem()
			changed.Set(v)
			switch f.Type.Kind() {
			case reflect.String:
				changed.Field(i).SetString("/changed")
			case reflect.Bool:
				changed.Field(i).SetBool(!changed.Field(i).Bool())
			case reflect.Slice:
				changed.Field(i).Set(reflect.MakeSlice(f.Type, 1, 1))
			case reflect.Map:
				m := reflect.MakeMap(f.Type)
				m.SetMapIndex(reflect.New(f.Type.Key()).Elem(), reflect.New(f.Type.Elem()).Elem())
				changed.Field(i).Set(m)
			default:
				t.Fatalf("%s.%s: a field of kind %s; teach this test to change it", v.Type(), f.Name, f.Type.Kind())
			}
			if !NeedsRenewal([]Output{o}, []Output{changed.Interface().(Output)}) {
				t.Errorf("a change of %s.%s takes no renewal", v.Type(), f.Name)
			}
		}
	}
}

// TestKindsMatchTypes: each kind is registered under the type it names.
func TestKindsMatchTypes(t *testing.T) {
	for _, k := range kinds {
		if o, _ := parse(t, "type: "+k.typ); o == nil || o.Type() != k.typ {
			t.Errorf("kind %q makes output %#v", k.typ, o)
		}
	}
	if o, errs := parse(t, "type: ftp"); o != nil || len(errs) != 1 || !strings.Contains(errs[0], `unknown output type "ftp"`) {
		t.Errorf("Parse of an unknown type = %v, %q", o, errs)
	}
}

// TestSSHHostWithoutCertificate: credentials that hold no certificate for
// the host key are an error of the output, not a crash of mwid.
func TestSSHHostWithoutCertificate(t *testing.T) {
	dir := t.TempDir()
	keys, _ := identity.NewKeys()
	pub, _ := keys.Public()
	hostKey := filepath.Join(dir, "ssh_host_ed25519_key.pub")
	if err := os.WriteFile(hostKey, []byte(pub.SSH+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	o := SSHHost{HostKey: hostKey, Certificate: filepath.Join(dir, "ssh_host_ed25519_key-cert.pub")}
	var r Request
	write, err := o.Request(&r)
	if err != nil || len(r.HostKeys()) != 1 || len(r.HostPublicKeys()) != 1 {
		t.Fatalf("Request = %v; host keys %v", err, r.HostKeys())
	}
	err = write(context.Background(), &identity.Credentials{}, Env{Log: slog.New(slog.DiscardHandler)})
	if err == nil || !strings.Contains(err.Error(), "ssh_host output "+o.Certificate+": the credentials hold no certificate") {
		t.Errorf("write = %v", err)
	}
}

// TestParseFields: each kind takes its own fields, refuses another kind's
// by name, and reports a field of none as unknown, with the fields it takes.
func TestParseFields(t *testing.T) {
	for _, tc := range []struct{ block, want string }{
		{"{type: ssh_host, host_key: /k.pub, certificate: /c, names: [a], reload_command: [x]}", ""},
		{"{type: ssh_host, host_key: /k.pub, labels: {env: prod, team: db}, access_dir: /var/lib/mwi/ssh}", ""},
		{"{type: ssh_host, host_key: /k.pub, labels: [env]}", "labels must be a mapping"},
		{"{type: ssh_host, host_key: /k.pub, labels: {env: '*'}}", `outputs.0.labels: label "env"="*": a host's label needs a key and a value`},
		{"{type: ssh_host, host_key: /k.pub, labels: {env: ''}}", `outputs.0.labels: label "env"="": a host's label`},
		{"{type: kubernetes, clusters: [a], access_dir: /d}", "outputs.0.access_dir: is for outputs of type ssh_host, not kubernetes"},
		{"{type: kubernetes, clusters: [a], labels: [{env: prod}], directory: /d}", ""},
		{"{type: identity, directory: /d}", ""},
		{"{type: ssh_host, host_key: /k.pub, directory: /d}", "outputs.0.directory: is for outputs of type kubernetes or identity, not ssh_host"},
		{"{type: kubernetes, clusters: [a], names: [a]}", "outputs.0.names: is for outputs of type ssh_host, not kubernetes"},
		{"{type: identity, directory: /d, labels: []}", "outputs.0.labels: is not a field of outputs of type identity"},
		{"{type: identity, directory: /d, dir: /e}", `f.yaml:1: unknown field "dir" in outputs.0 (want directory)`},
		{"{type: kubernetes, clusters: a}", `f.yaml:1: outputs.0.clusters must be a list, not the value "a"`},
		{"{host_key: /k.pub}", "outputs.0.type: required (ssh_host, kubernetes or identity)"},
		{"[ssh_host]", "outputs.0: want a mapping with a type"},
	} {
		_, errs := parse(t, tc.block)
		if tc.want == "" && len(errs) > 0 || tc.want != "" && (len(errs) == 0 || !strings.Contains(errs[0], tc.want)) {
			t.Errorf("%s: errors %q, want %q", tc.block, errs, tc.want)
		}
	}
}
