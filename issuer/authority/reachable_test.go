package authority_test

import (
	"context"
	"fmt"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/issuer/audit"
	"github.com/mwi-project/mwi/issuer/authority"
	"github.com/mwi-project/mwi/issuer/ca"
	"github.com/mwi-project/mwi/issuer/store"
)

// reachableYAML defines host bots (hosts, with max_ttl 1h, and gone,
// whose roles are defined but which is no bot) and the callers:
//
//	dev:    deploy and ops on env=staging
//	wide:   ops on every host, but not on env=prod (deny)
//	legacy: a login without node_labels, so on no managed host
const reachableYAML = `kind: role
version: v1
metadata: {name: host}
spec:
  allow:
    host_labels: {'*': '*'}
  options:
    max_ttl: 1h
---
kind: role
version: v1
metadata: {name: staging}
spec:
  allow:
    logins: [deploy, ops]
    node_labels: {env: staging}
---
kind: role
version: v1
metadata: {name: ops}
spec:
  allow:
    logins: [ops]
    node_labels: {'*': '*'}
  deny:
    logins: [ops]
    node_labels: {env: prod}
---
kind: role
version: v1
metadata: {name: legacy}
spec:
  allow:
    logins: [legacy]
---
kind: bot
version: v1
metadata: {name: hosts}
spec:
  roles: [host]
---
kind: bot
version: v1
metadata: {name: dev}
spec:
  roles: [staging]
---
kind: bot
version: v1
metadata: {name: wide}
spec:
  roles: [ops]
---
kind: bot
version: v1
metadata: {name: legacy}
spec:
  roles: [legacy]
`

// TestReachableNodes checks which nodes a bot is told it may reach: those
// whose labels its roles select for a login that no deny rule takes back,
// without the nodes that are locked, stale or of a bot no longer defined.
func TestReachableNodes(t *testing.T) {
	e := newEnv(t)
	e.auth.SetResources(loadResources(t, reachableYAML))
	ctx := context.Background()
	put := func(n store.Node) {
		t.Helper()
		if err := e.store.PutNode(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	t0 := e.now
	// hosts' max_ttl is 1h, so a node is stale 2h after its renewal.
	put(store.Node{Instance: "i-staging", Bot: "hosts", Names: []string{"staging-1", "staging-1.example.com"},
		Labels: map[string]string{"env": "staging"}, Renewed: t0.Add(-authority.StaleFactor * time.Hour)})
	put(store.Node{Instance: "i-prod", Bot: "hosts", Names: []string{"prod-1"}, Labels: map[string]string{"env": "prod"}, Renewed: t0})
	put(store.Node{Instance: "i-plain", Bot: "hosts", Names: []string{"plain-1"}, Renewed: t0})
	put(store.Node{Instance: "i-stale", Bot: "hosts", Names: []string{"stale-1"},
		Labels: map[string]string{"env": "staging"}, Renewed: t0.Add(-authority.StaleFactor*time.Hour - time.Second)})
	put(store.Node{Instance: "i-gone", Bot: "gone", Names: []string{"gone-1"}, Labels: map[string]string{"env": "staging"}, Renewed: t0})

	caller := func(bot string) ca.Identity {
		creds := e.join(t, e.token(t, bot))
		return ca.Identity{Bot: bot, Instance: creds.Instance, Generation: 1}
	}
	dev, wide, legacy := caller("dev"), caller("wide"), caller("legacy")
	staging := api.ReachableNode{Name: "staging-1", Names: []string{"staging-1", "staging-1.example.com"},
		Labels: map[string]string{"env": "staging"}, Logins: []string{"deploy", "ops"}}
	stagingOps := staging
	stagingOps.Logins = []string{"ops"}
	plain := api.ReachableNode{Name: "plain-1", Names: []string{"plain-1"}, Labels: map[string]string{}, Logins: []string{"ops"}}

	check := func(name string, id ca.Identity, want []api.ReachableNode) {
		t.Helper()
		got, err := e.auth.ReachableNodes(ctx, id, "192.0.2.1:1234")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got.Truncated || !reflect.DeepEqual(got.Nodes, want) {
			t.Errorf("%s: nodes = %+v (truncated %v)\nwant %+v", name, got.Nodes, got.Truncated, want)
		}
	}
	check("node_labels env=staging", dev, []api.ReachableNode{staging})
	check("'*' with a deny on env=prod", wide, []api.ReachableNode{plain, stagingOps})
	check("no node_labels", legacy, []api.ReachableNode{})

	// A lock of the node's instance, then of its bot, leaves it out.
	if err := e.store.LockInstance(ctx, store.Lock{Bot: "hosts", Instance: "i-staging", Reason: "test", At: t0}); err != nil {
		t.Fatal(err)
	}
	check("instance locked", dev, []api.ReachableNode{})
	check("instance locked, other nodes", wide, []api.ReachableNode{plain})
	if _, _, err := e.store.UnlockInstance(ctx, "i-staging"); err != nil {
		t.Fatal(err)
	}
	if err := e.store.LockBot(ctx, store.Lock{Bot: "hosts", Reason: "test", At: t0}); err != nil {
		t.Fatal(err)
	}
	check("bot locked", wide, []api.ReachableNode{})
	if _, _, err := e.store.UnlockBot(ctx, "hosts"); err != nil {
		t.Fatal(err)
	}
	check("unlocked", dev, []api.ReachableNode{staging})

	// One second later, the staging node is stale too.
	e.now = t0.Add(time.Second)
	check("stale", dev, []api.ReachableNode{})
}

// TestReachableNodesTokenLock leaves out the nodes that joined with a
// locked token resource, and refuses a caller that joined with one.
func TestReachableNodesTokenLock(t *testing.T) {
	e := newAttestEnv(t)
	ctx := context.Background()
	ghJoin := func() api.Credentials {
		t.Helper()
		raw := e.p.Mint(e.p.GitHubClaims("mwi", "org/repo"))
		creds, err := e.auth.Join(ctx, joinReq(t, api.JoinMethodGitHub, "gh", raw), nil, "192.0.2.1:1234")
		if err != nil {
			t.Fatal(err)
		}
		return creds
	}
	host, caller := ghJoin(), ghJoin()
	e.auth.SetResources(loadResources(t, resourcesYAML+tokensYAML(e.p.Issuer(), e.p.Host(), string(e.p.CAPEM()),
		authorizedKey(e.signer), authorizedKey(newSigner(t)))+"---\n"+reachableYAML))
	if err := e.store.PutNode(ctx, store.Node{Instance: host.Instance, Bot: "ci", Names: []string{"web-1"},
		Labels: map[string]string{"env": "staging"}, Renewed: e.now}); err != nil {
		t.Fatal(err)
	}
	dev := e.join(t, e.token(t, "dev"))
	id := ca.Identity{Bot: "dev", Instance: dev.Instance, Generation: 1}
	list := func() []api.ReachableNode {
		t.Helper()
		got, err := e.auth.ReachableNodes(ctx, id, "192.0.2.1:1234")
		if err != nil {
			t.Fatal(err)
		}
		return got.Nodes
	}
	if n := list(); len(n) != 1 || n[0].Name != "web-1" {
		t.Fatalf("nodes before the lock = %+v, want web-1", n)
	}
	if _, err := e.auth.AddLock(ctx, api.LockTarget{Token: "gh"}, "workflow leaked", 0); err != nil {
		t.Fatal(err)
	}
	if n := list(); len(n) != 0 {
		t.Errorf("nodes with their token locked = %+v, want none", n)
	}
	offset := e.audit.Len()
	_, err := e.auth.ReachableNodes(ctx, ca.Identity{Bot: "ci", Instance: caller.Instance, Generation: 1}, "192.0.2.1:1234")
	e.expectDenied(t, err, offset, audit.EventNodes, api.CodeTokenLocked, http.StatusForbidden)
}

// TestReachableNodesRefusals refuses, and audits, a caller whose bot or
// instance is locked or unknown.
func TestReachableNodesRefusals(t *testing.T) {
	e := newEnv(t)
	e.auth.SetResources(loadResources(t, reachableYAML))
	ctx := context.Background()
	dev := e.join(t, e.token(t, "dev"))
	wide := e.join(t, e.token(t, "wide"))
	if err := e.store.LockInstance(ctx, store.Lock{Bot: "wide", Instance: wide.Instance, Reason: "test", At: e.now}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		id     ca.Identity
		code   string
		status int
	}{
		{"unknown bot", ca.Identity{Bot: "nobody", Instance: dev.Instance}, api.CodeBotUnknown, http.StatusForbidden},
		{"unknown instance", ca.Identity{Bot: "dev", Instance: "i-none"}, api.CodeUnauthenticated, http.StatusUnauthorized},
		{"another bot's instance", ca.Identity{Bot: "legacy", Instance: dev.Instance}, api.CodeUnauthenticated, http.StatusUnauthorized},
		{"instance locked", ca.Identity{Bot: "wide", Instance: wide.Instance}, api.CodeInstanceLocked, http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			offset := e.audit.Len()
			_, err := e.auth.ReachableNodes(ctx, tc.id, "192.0.2.1:1234")
			e.expectDenied(t, err, offset, audit.EventNodes, tc.code, tc.status)
		})
	}
	if err := e.store.LockBot(ctx, store.Lock{Bot: "dev", Reason: "test", At: e.now}); err != nil {
		t.Fatal(err)
	}
	offset := e.audit.Len()
	_, err := e.auth.ReachableNodes(ctx, ca.Identity{Bot: "dev", Instance: dev.Instance}, "192.0.2.1:1234")
	e.expectDenied(t, err, offset, audit.EventNodes, api.CodeBotLocked, http.StatusForbidden)
}

// TestReachableNodesBounded lists at most api.MaxReachableNodes, and says
// that it left some out.
func TestReachableNodesBounded(t *testing.T) {
	e := newEnv(t)
	e.auth.SetResources(loadResources(t, reachableYAML))
	ctx := context.Background()
	for i := range api.MaxReachableNodes + 1 {
		if err := e.store.PutNode(ctx, store.Node{Instance: fmt.Sprintf("i-%04d", i), Bot: "hosts",
			Names: []string{fmt.Sprintf("web-%04d", i)}, Renewed: e.now}); err != nil {
			t.Fatal(err)
		}
	}
	wide := e.join(t, e.token(t, "wide"))
	got, err := e.auth.ReachableNodes(ctx, ca.Identity{Bot: "wide", Instance: wide.Instance}, "192.0.2.1:1234")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Nodes) != api.MaxReachableNodes || !got.Truncated || got.Nodes[0].Name != "web-0000" {
		t.Errorf("%d nodes, truncated %v; want %d, true", len(got.Nodes), got.Truncated, api.MaxReachableNodes)
	}
}
