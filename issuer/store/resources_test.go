package store

import (
	"context"
	"errors"
	"reflect"
	"testing"
)

func TestResources(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, path string) {

		if got, err := s.Resources(ctx); err != nil || got == nil || len(got) != 0 {
			t.Fatalf("Resources of a new store = %#v, %v; want an empty list", got, err)
		}
		role := Resource{Kind: "role", Name: "deploy", Source: "kind: role # as written\n", Updated: t0}
		bot := Resource{Kind: "bot", Name: "ci", Source: "kind: bot\n", Updated: t0}
		if err := s.PutResources(ctx, []Resource{role, bot}, false); err != nil {
			t.Fatal(err)
		}
		// All or nothing: one existing key refuses the whole put.
		other := Resource{Kind: "role", Name: "other", Source: "kind: role\n", Updated: t0}
		changed := role
		changed.Source = "kind: role # changed\n"
		if err := s.PutResources(ctx, []Resource{other, changed}, false); !errors.Is(err, ErrExists) {
			t.Fatalf("PutResources of an existing key without replace = %v; want ErrExists", err)
		}
		want := []Resource{bot, role} // by key
		if got, err := s.Resources(ctx); err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("after a refused put, Resources = %+v, %v\nwant %+v", got, err, want)
		}
		if err := s.PutResources(ctx, []Resource{other, changed}, true); err != nil {
			t.Fatalf("PutResources with replace: %v", err)
		}
		want = []Resource{bot, changed, other}
		if got, err := s.Resources(ctx); err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("after a replace, Resources = %+v, %v\nwant %+v", got, err, want)
		}

		if err := s.DeleteResource(ctx, "role", "other"); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteResource(ctx, "role", "other"); !errors.Is(err, ErrResourceUnknown) {
			t.Fatalf("deleting a deleted resource = %v; want ErrResourceUnknown", err)
		}
		for _, bad := range []Resource{{Kind: "role", Name: "a/b"}, {Kind: "", Name: "x"}, {Kind: "role", Name: ""}} {
			if err := s.PutResources(ctx, []Resource{bad}, true); err == nil {
				t.Errorf("PutResources(%q/%q) succeeded; want an error", bad.Kind, bad.Name)
			}
		}

		// The documents outlive the process, byte for byte.
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s2, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer s2.Close()
		want = []Resource{bot, changed}
		if got, err := s2.Resources(ctx); err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("after reopening, Resources = %+v, %v\nwant %+v", got, err, want)
		}
	})
}

func TestTokensAndInstancesListed(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, _ string) {
		if got, err := s.Tokens(ctx); err != nil || got == nil || len(got) != 0 {
			t.Fatalf("Tokens of a new store = %#v, %v", got, err)
		}
		tok := Token{Hash: "aa", Bot: "ci", Created: t0, Expires: t0.Add(3600e9)}
		if err := s.PutToken(ctx, tok); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Tokens(ctx); err != nil || !reflect.DeepEqual(got, []Token{tok}) {
			t.Fatalf("Tokens = %+v, %v", got, err)
		}
		if err := s.DeleteToken(ctx, "aa"); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteToken(ctx, "aa"); !errors.Is(err, ErrTokenUnknown) {
			t.Fatalf("deleting a deleted token = %v; want ErrTokenUnknown", err)
		}
		if got, err := s.Instances(ctx); err != nil || got == nil || len(got) != 0 {
			t.Fatalf("Instances of a new store = %#v, %v", got, err)
		}
		a := Instance{ID: "b", Bot: "ci", Generation: 1, Created: t0}
		b := Instance{ID: "a", Bot: "web", Generation: 1, Created: t0}
		for _, in := range []Instance{a, b} {
			if err := s.CreateInstance(ctx, in); err != nil {
				t.Fatal(err)
			}
		}
		if got, err := s.Instances(ctx); err != nil || !reflect.DeepEqual(got, []Instance{b, a}) {
			t.Fatalf("Instances = %+v, %v", got, err)
		}
	})
}
