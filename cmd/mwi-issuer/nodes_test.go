package main

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mwi-project/mwi/api"
)

// serveNodes serves nodes at GET /admin/v1/nodes on STATE/admin.sock.
func serveNodes(t *testing.T, nodes []api.Node) string {
	t.Helper()
	state, err := os.MkdirTemp("", "mwi-issuer") // short: a socket path
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	l, err := net.Listen("unix", filepath.Join(state, "admin.sock"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/admin/v1/nodes" {
			http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, http.StatusTeapot)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(api.Nodes{Nodes: nodes})
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return state
}

func TestNodesLs(t *testing.T) {
	renewed := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	nodes := []api.Node{
		{Names: []string{"db-01", "db-01.example.com"}, Instance: "aaaa", Bot: "db", Labels: map[string]string{"env": "prod", "team": "db"},
			Address: "192.0.2.1", Version: "v1.2.0", Renewed: renewed},
		{Names: []string{"web-01"}, Instance: "bbbb", Bot: "web", Labels: map[string]string{}, Address: "192.0.2.2", Renewed: renewed},
	}
	state := serveNodes(t, nodes)

	code, out, errs := mwiIssuer("nodes", "ls", "--state", state)
	if code != 0 || errs != "" {
		t.Fatalf("text: exit %d, stderr %q", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 {
		t.Fatalf("text: %d lines, want a header, a rule and 2 nodes:\n%s", len(lines), out)
	}
	for i, want := range [][]string{
		{"Host", "Instance", "Bot", "Address", "Labels", "Version", "Last", "renewal"},
		{"----", "--------", "---", "-------", "------", "-------", "------------"},
		{"db-01,db-01.example.com", "aaaa", "db", "192.0.2.1", "env=prod,team=db", "v1.2.0", "2026-11-30T09:00:00Z"},
		{"web-01", "bbbb", "web", "192.0.2.2", "unknown", "2026-11-30T09:00:00Z"},
	} {
		if got := strings.Fields(lines[i]); !reflect.DeepEqual(got, want) {
			t.Errorf("text line %d = %q, want %q", i, got, want)
		}
	}

	code, out, errs = mwiIssuer("nodes", "ls", "--format", "json", "--state", state)
	var fromJSON api.Nodes
	if code != 0 || errs != "" || json.Unmarshal([]byte(out), &fromJSON) != nil || !reflect.DeepEqual(fromJSON.Nodes, nodes) {
		t.Errorf("json: exit %d, stderr %q, stdout:\n%s", code, errs, out)
	}

	code, out, errs = mwiIssuer("nodes", "ls", "--format=yaml", "--state", state)
	var fromYAML api.Nodes
	if err := yaml.Unmarshal([]byte(out), &fromYAML); code != 0 || errs != "" || err != nil || !reflect.DeepEqual(fromYAML.Nodes, nodes) {
		t.Errorf("yaml: exit %d, stderr %q, %v, stdout:\n%s", code, errs, err, out)
	}
	if !strings.Contains(out, "instance: aaaa") || !strings.Contains(out, "env: prod") {
		t.Errorf("yaml does not use the field names of the JSON form:\n%s", out)
	}

	code, out, errs = mwiIssuer("nodes", "ls", "--format", "xml", "--state", state)
	if want := `mwi-issuer: --format must be text, json or yaml, not "xml"; see mwi-issuer nodes ls --help` + "\n"; code != 2 || out != "" || errs != want {
		t.Errorf("--format xml: exit %d, stdout %q, stderr %q; want 2 and %q", code, out, errs, want)
	}

	empty := serveNodes(t, nil)
	code, out, errs = mwiIssuer("nodes", "ls", "--state", empty)
	if code != 0 || errs != "" || out != "no nodes\n" {
		t.Errorf("no nodes, text: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	code, out, _ = mwiIssuer("nodes", "ls", "--format", "json", "--state", empty)
	if code != 0 || strings.TrimSpace(out) != "{\n  \"nodes\": []\n}" {
		t.Errorf("no nodes, json: exit %d, stdout %q; want an empty list", code, out)
	}
}
