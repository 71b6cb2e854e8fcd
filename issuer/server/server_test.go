package server

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mwi-project/mwi/issuer/authority"
	"github.com/mwi-project/mwi/issuer/resource"
)

const botsYAML = `kind: role
version: v1
metadata: {name: deploy}
spec:
  allow: {logins: [deploy]}
---
kind: bot
version: v1
metadata: {name: ci}
spec: {roles: [deploy]}
`

// tokenYAML is a github token whose one rule admits repo's main branch.
// Its last line is the ref.
func tokenYAML(repo string) (head, ref string) {
	return `kind: token
version: v1
metadata: {name: gh}
spec:
  join_method: github
  bot_name: ci
  github:
    allow:
      - repository: ` + repo + "\n", "        ref: refs/heads/main\n"
}

// TestResourceRewriteInPlace rewrites a token file in place in two writes
// 600 ms apart, as the attack on loopback did: the half-written file, a
// rule without its ref line that admits every branch, is valid on its own,
// and must never be applied. The whole file is.
func TestResourceRewriteInPlace(t *testing.T) {
	dir := t.TempDir()
	head, ref := tokenYAML("org/repo")
	for name, content := range map[string]string{"bots.yaml": botsYAML, "token.yaml": head + ref} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := Config{ResourcesDir: dir, ResourceSettle: 2 * time.Second}
	set, err := loadResources(cfg, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{cfg: cfg, log: discardLog(), auth: &authority.Authority{}}
	s.auth.SetResources(set)
	applied := make(chan *resource.Set, 10)
	s.loaded = func(set *resource.Set) { applied <- set }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.watchResources(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	time.Sleep(50 * time.Millisecond) // let the watch start

	newHead, _ := tokenYAML("org/other")
	f, err := os.OpenFile(filepath.Join(dir, "token.yaml"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(newHead); err != nil {
		t.Fatal(err)
	}
	time.Sleep(600 * time.Millisecond)
	if _, err := f.WriteString(ref); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	deadline := time.After(20 * time.Second)
	for {
		select {
		case set := <-applied:
			tok, ok := set.Token("gh")
			if !ok || len(tok.GitHub.Allow) != 1 {
				t.Fatalf("applied token = %+v, %v", tok, ok)
			}
			rule := tok.GitHub.Allow[0]
			if rule.Ref != "refs/heads/main" {
				t.Fatalf("applied a half-written rule: %+v", rule)
			}
			if rule.Repository != "org/other" {
				continue
			}
			if got, _ := s.auth.Resources().Token("gh"); got.GitHub.Allow[0] != rule {
				t.Errorf("the authority serves %+v, want %+v", got.GitHub.Allow[0], rule)
			}
			return
		case <-deadline:
			t.Fatal("the rewritten file was not applied")
		}
	}
}
