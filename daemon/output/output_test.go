package output

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/daemon/identity"
)

// request returns the request of outputs, leaving out those that fail as
// a renewal does.
func request(t *testing.T, outputs []config.Output) *Request {
	t.Helper()
	outs, err := New(outputs)
	if err != nil {
		t.Fatal(err)
	}
	var r Request
	for _, o := range outs {
		o.Request(&r)
	}
	return &r
}

func TestKubernetesRequest(t *testing.T) {
	keys, _ := identity.NewKeys()
	if req, err := request(t, []config.Output{{Type: "ssh_host"}}).Kubernetes(keys); req != nil || err != nil {
		t.Errorf("request without kubernetes outputs = %+v, %v", req, err)
	}
	req, err := request(t, []config.Output{
		{Type: "kubernetes", Clusters: []string{"prod", "dev"}},
		{Type: "ssh_host"},
		{Type: "kubernetes", Clusters: []string{"dev"}, Labels: []map[string]string{{"env": "qa"}}},
	}).Kubernetes(keys)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(req.Clusters, []string{"prod", "dev"}) || len(req.Labels) != 1 || !strings.HasPrefix(req.CSR, "-----BEGIN CERTIFICATE REQUEST-----") {
		t.Errorf("request = %+v", req)
	}
}

func needsRenewal(t *testing.T, a, b config.Output) bool {
	t.Helper()
	old, err := New([]config.Output{a})
	if err != nil {
		t.Fatal(err)
	}
	next, err := New([]config.Output{b})
	if err != nil {
		t.Fatal(err)
	}
	return NeedsRenewal(old, next)
}

func TestNeedsRenewal(t *testing.T) {
	a := config.Output{Type: "kubernetes", Clusters: []string{"a"}, Labels: []map[string]string{{"env": "prod"}}, Directory: "/d"}
	same := config.Output{Type: "kubernetes", Clusters: []string{"a"}, Labels: []map[string]string{{"env": "prod"}}, Directory: "/d"}
	if needsRenewal(t, a, same) {
		t.Error("equal outputs differ")
	}
	for _, b := range []config.Output{
		{Type: "kubernetes", Clusters: []string{"b"}, Labels: a.Labels, Directory: "/d"},
		{Type: "kubernetes", Clusters: a.Clusters, Labels: []map[string]string{{"env": "dev"}}, Directory: "/d"},
		{Type: "kubernetes", Clusters: a.Clusters, Labels: []map[string]string{{"env": "prod", "team": "x"}}, Directory: "/d"},
		{Type: "kubernetes", Clusters: a.Clusters, Labels: a.Labels},
		{Type: "ssh_host"},
	} {
		if !needsRenewal(t, a, b) {
			t.Errorf("%+v and %+v are taken for equal", a, b)
		}
	}
	host := config.Output{Type: "ssh_host", HostKey: "/k.pub", Certificate: "/k-cert.pub"}
	if needsRenewal(t, host, config.Output{Type: "ssh_host", HostKey: "/k.pub", Certificate: "/k-cert.pub", Names: []string{}}) {
		t.Error(`"names: []" is taken for a change from no names`)
	}
	if !needsRenewal(t, host, config.Output{Type: "ssh_host", HostKey: "/k.pub", Certificate: "/k-cert.pub", Names: []string{"web"}}) {
		t.Error("a change of names is not taken for a change")
	}
}

// TestEveryFieldRenews changes each field of each kind of output in turn:
// every change takes a renewal, so that a field added to a kind cannot be
// forgotten by reload.
func TestEveryFieldRenews(t *testing.T) {
	for typ, kind := range kinds {
		o := kind(config.Output{Type: typ})
		v := reflect.ValueOf(o)
		for i := range v.NumField() {
			f := v.Type().Field(i)
			changed := reflect.New(v.Type()).Elem()
			changed.Set(v)
			switch f.Type.Kind() {
			case reflect.String:
				changed.Field(i).SetString("/changed")
			case reflect.Slice:
				changed.Field(i).Set(reflect.MakeSlice(f.Type, 1, 1))
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
	for typ, kind := range kinds {
		if got := kind(config.Output{Type: typ}).Type(); got != typ {
			t.Errorf("kinds[%q] makes an output of type %q", typ, got)
		}
	}
	if _, err := New([]config.Output{{Type: "ftp"}}); err == nil || !strings.Contains(err.Error(), `unknown output type "ftp"`) {
		t.Errorf("New of an unknown type = %v", err)
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
