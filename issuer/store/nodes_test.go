package store

import (
	"context"
	"reflect"
	"testing"
	"time"
)

func TestNodes(t *testing.T) {
	ctx := context.Background()
	forEachStore(t, func(t *testing.T, s Store, path string) {

		if got, err := s.Nodes(ctx); err != nil || len(got) != 0 || got == nil {
			t.Fatalf("Nodes of a new store = %#v, %v; want an empty list", got, err)
		}
		a := Node{Instance: "a1", Bot: "web", Names: []string{"web-01"}, Labels: map[string]string{"env": "prod"},
			Address: "192.0.2.1", Version: "v1.2.0", Renewed: t0}
		b := Node{Instance: "b1", Bot: "db", Names: []string{"db-01", "db-01.example.com"}, Renewed: t0}
		for _, n := range []Node{b, a} {
			if err := s.PutNode(ctx, n); err != nil {
				t.Fatal(err)
			}
		}
		want := []Node{a, b}
		if got, err := s.Nodes(ctx); err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("Nodes = %+v, %v\nwant %+v", got, err, want)
		}

		steps := []struct {
			name string
			put  Node
			want []Node
		}{
			{
				// A renewal replaces the record of its instance.
				name: "renewal",
				put:  Node{Instance: "a1", Bot: "web", Names: []string{"web-01"}, Labels: map[string]string{"env": "staging"}, Renewed: t0.Add(time.Hour)},
				want: []Node{
					{Instance: "a1", Bot: "web", Names: []string{"web-01"}, Labels: map[string]string{"env": "staging"}, Renewed: t0.Add(time.Hour)},
					b,
				},
			},
			{
				// The same host joined anew replaces its earlier instance.
				name: "rejoin",
				put:  Node{Instance: "a2", Bot: "web", Names: []string{"web-01"}, Renewed: t0.Add(2 * time.Hour)},
				want: []Node{{Instance: "a2", Bot: "web", Names: []string{"web-01"}, Renewed: t0.Add(2 * time.Hour)}, b},
			},
			{
				// Another host of the same bot is another node.
				name: "other host",
				put:  Node{Instance: "c1", Bot: "web", Names: []string{"web-02"}, Renewed: t0.Add(2 * time.Hour)},
				want: []Node{
					{Instance: "a2", Bot: "web", Names: []string{"web-01"}, Renewed: t0.Add(2 * time.Hour)},
					b,
					{Instance: "c1", Bot: "web", Names: []string{"web-02"}, Renewed: t0.Add(2 * time.Hour)},
				},
			},
			{
				// Nodes gone quiet for longer than NodeRetention leave.
				name: "retention",
				put:  Node{Instance: "c1", Bot: "web", Names: []string{"web-02"}, Renewed: t0.Add(time.Hour + NodeRetention)},
				want: []Node{
					{Instance: "a2", Bot: "web", Names: []string{"web-01"}, Renewed: t0.Add(2 * time.Hour)},
					{Instance: "c1", Bot: "web", Names: []string{"web-02"}, Renewed: t0.Add(time.Hour + NodeRetention)},
				},
			},
		}
		for _, st := range steps {
			if err := s.PutNode(ctx, st.put); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			if got, err := s.Nodes(ctx); err != nil || !reflect.DeepEqual(got, st.want) {
				t.Errorf("%s: Nodes = %+v, %v\nwant %+v", st.name, got, err, st.want)
			}
		}

		// The inventory survives a restart.
		s.Close()
		s2, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer s2.Close()
		if got, err := s2.Nodes(ctx); err != nil || len(got) != 2 {
			t.Errorf("after reopening: Nodes = %+v, %v", got, err)
		}

		ctx2, cancel := context.WithCancel(ctx)
		cancel()
		if err := s2.PutNode(ctx2, a); err == nil {
			t.Error("PutNode with a cancelled context succeeded")
		}
		if _, err := s2.Nodes(ctx2); err == nil {
			t.Error("Nodes with a cancelled context succeeded")
		}
	})
}
