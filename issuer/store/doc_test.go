package store

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	bolt "go.etcd.io/bbolt"
)

// TestCorruptRecords writes records as another issuer sharing the
// database, or a hand, could have got them wrong: not JSON, JSON null
// (which decodes to a record of zero values), an array, fields of the
// wrong type, the document of another instance under this one's key.
// Every read of them fails, naming the record and what is wrong, and none
// hands back a record to act on.
func TestCorruptRecords(t *testing.T) {
	url := newDatabase(t)
	s, err := Open(url)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	now := time.Now()
	corrupt(t, s, "tokens", "0123456789abcdef", "[]")
	other := `{"id":"other","bot":"b","generation":1,"created":"2026-01-01T00:00:00Z","renewed":"2026-01-01T00:00:00Z"}`
	for _, q := range []string{
		`INSERT INTO instances (id, bot, token_name, doc) VALUES ('i-null', 'b', '', 'null')`,
		`INSERT INTO instances (id, bot, token_name, doc) VALUES ('i-other', 'c', '', '` + other + `')`,
		`INSERT INTO instances (id, bot, token_name, doc) VALUES ('i-type', 'd', '', '{"id":"i-type","generation":"x"}')`,
		`INSERT INTO resources (key, doc) VALUES ('bot/a', 'not json')`,
		`INSERT INTO locks (kind, key, doc) VALUES (0, 'b', '{"bot":"someone-else","reason":"r","at":"2026-01-01T00:00:00Z"}')`,
		`INSERT INTO nodes (instance, bot, names, renewed, doc) VALUES ('i-node', 'b', '[]', 0, '{')`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name string
		call func() error
		want []string
	}{
		{"Instance of null", func() error { _, err := s.Instance(ctx, "i-null"); return err }, []string{`"i-null"`, "not a JSON object"}},
		{"AdvanceGeneration of null", func() error { _, err := s.AdvanceGeneration(ctx, "i-null", 0, "k", now); return err }, []string{`"i-null"`, "not a JSON object"}},
		{"Instance of another's document", func() error { _, err := s.Instance(ctx, "i-other"); return err }, []string{`"i-other"`, `is that of "other"`}},
		{"AdvanceGeneration of another's document", func() error { _, err := s.AdvanceGeneration(ctx, "i-other", 1, "k", now); return err }, []string{`"i-other"`, `is that of "other"`}},
		{"Instance of a wrong type", func() error { _, err := s.Instance(ctx, "i-type"); return err }, []string{`"i-type"`, "cannot unmarshal"}},
		{"Instances", func() error { _, err := s.Instances(ctx); return err }, []string{`instance "i-null"`, "not a JSON object"}},
		{"InstancesOfBot", func() error { _, err := s.InstancesOfBot(ctx, "c"); return err }, []string{`instance "i-other"`}},
		{"Resources", func() error { _, err := s.Resources(ctx); return err }, []string{`resource "bot/a"`, "not a JSON object"}},
		{"Tokens", func() error { _, err := s.Tokens(ctx); return err }, []string{`token "0123456789ab"`, "not a JSON object"}},
		{"Token", func() error { _, err := s.Token(ctx, "0123456789abcdef", now); return err }, []string{"not a JSON object"}},
		{"BotLock", func() error { _, _, err := s.BotLock(ctx, "b", now); return err }, []string{`"b"`, `is that of "someone-else"`}},
		{"Locks", func() error { _, err := s.Locks(ctx, now); return err }, []string{`lock "b"`}},
		{"Nodes", func() error { _, err := s.Nodes(ctx); return err }, []string{`node "i-node"`, "unexpected end of JSON input"}},
	} {
		err := tc.call()
		if err == nil {
			t.Errorf("%s succeeded", tc.name)
			continue
		}
		if errors.Is(err, ErrUnavailable) {
			t.Errorf("%s: %v is not an outage", tc.name, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %v\nwant it to say %s", tc.name, err, w)
			}
		}
	}
	// The refused advance wrote nothing.
	var doc string
	if err := conn.QueryRow(ctx, `SELECT convert_from(doc, 'UTF8') FROM instances WHERE id = 'i-other'`).Scan(&doc); err != nil || doc != other {
		t.Errorf("i-other's document is now %s (%v)", doc, err)
	}
}

// TestCorruptRecordsBolt does the same to a bbolt file's instances.
func TestCorruptRecordsBolt(t *testing.T) {
	s, _ := openTemp(t)
	db := s.(*boltStore).db
	err := db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketInstances)
		if err := b.Put([]byte("i-null"), []byte("null")); err != nil {
			return err
		}
		return b.Put([]byte("i-other"), []byte(`{"id":"other","bot":"b","generation":1}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for id, want := range map[string]string{"i-null": "not a JSON object", "i-other": `is that of "other"`} {
		if _, err := s.Instance(ctx, id); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), id) {
			t.Errorf("Instance(%s) = %v, want an error naming it and saying %s", id, err, want)
		}
		if _, err := s.AdvanceGeneration(ctx, id, 1, "k", time.Now()); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("AdvanceGeneration(%s) = %v, want an error saying %s", id, err, want)
		}
	}
}
