package server

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mwi-project/mwi/issuer/authority"
	"github.com/mwi-project/mwi/issuer/resource"
	"github.com/mwi-project/mwi/issuer/store"
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

// loadedServer returns a server, not running, with an empty store and
// the resources of cfg.ResourcesDir loaded.
func loadedServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s := &Server{cfg: cfg, log: discardLog(), auth: &authority.Authority{Store: st, Audit: discardAudit()}}
	dir, err := loadResources(cfg, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	set, err := s.loadAll(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	s.swap(dir, set, "start")
	return s
}

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
	s := loadedServer(t, cfg)
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
			if !ok || len(tok.GitHub().Allow) != 1 {
				t.Fatalf("applied token = %+v, %v", tok, ok)
			}
			rule := tok.GitHub().Allow[0]
			if rule.Ref != "refs/heads/main" {
				t.Fatalf("applied a half-written rule: %+v", rule)
			}
			if rule.Repository != "org/other" {
				continue
			}
			if got, _ := s.auth.Resources().Token("gh"); got.GitHub().Allow[0] != rule {
				t.Errorf("the authority serves %+v, want %+v", got.GitHub().Allow[0], rule)
			}
			return
		case <-deadline:
			t.Fatal("the rewritten file was not applied")
		}
	}
}

// TestSIGHUPDuringRewrite sends SIGHUP (Reload) while a token file is
// rewritten in place with the same content, its ref line last. A writer
// pausing less than the settle period is never seen half-way, SIGHUP or
// not. One pausing longer exposes the half it wrote (a rule without its
// ref, which admits every branch) until it finishes; then the whole file
// must be applied, although it is the content the watcher last saw.
func TestSIGHUPDuringRewrite(t *testing.T) {
	for _, tc := range []struct {
		name          string
		settle, pause time.Duration
		halfSeen      bool // the pause is longer than the settle period
	}{
		{"pause shorter than settle", 2 * time.Second, 600 * time.Millisecond, false},
		{"pause longer than settle", 300 * time.Millisecond, time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			head, ref := tokenYAML("org/repo")
			for name, content := range map[string]string{"bots.yaml": botsYAML, "token.yaml": head + ref} {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			cfg := Config{ResourcesDir: dir, ResourceSettle: tc.settle}
			s := loadedServer(t, cfg)
			s.recheck = make(chan struct{}, 1)
			var mu sync.Mutex
			var refs []string // of the rule each load applied
			s.loaded = func(set *resource.Set) {
				tok, _ := set.Token("gh")
				mu.Lock()
				refs = append(refs, tok.GitHub().Allow[0].Ref)
				mu.Unlock()
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); s.watchResources(ctx) }()
			t.Cleanup(func() { cancel(); <-done })
			time.Sleep(50 * time.Millisecond) // let the watch start

			f, err := os.OpenFile(filepath.Join(dir, "token.yaml"), os.O_WRONLY|os.O_TRUNC, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteString(head); err != nil {
				t.Fatal(err)
			}
			time.Sleep(tc.pause / 10)
			hup := make(chan struct{})
			go func() { defer close(hup); s.Reload() }()
			time.Sleep(tc.pause)
			if _, err := f.WriteString(ref); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			<-hup

			eventually(t, "the whole rule served", func() bool {
				tok, _ := s.auth.Resources().Token("gh")
				return tok.GitHub().Allow[0].Ref == "refs/heads/main"
			})
			mu.Lock()
			defer mu.Unlock()
			if !tc.halfSeen && slices.Contains(refs, "") {
				t.Errorf("a half-written rule was applied; loads applied refs %q", refs)
			}
		})
	}
}
