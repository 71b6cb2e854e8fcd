package store

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestOpenLocations(t *testing.T) {
	dir := t.TempDir()
	for _, loc := range []string{filepath.Join(dir, "plain.db"), "bolt://" + filepath.Join(dir, "url.db")} {
		s, err := Open(loc)
		if err != nil {
			t.Errorf("Open(%q): %v", loc, err)
			continue
		}
		if _, ok := s.(*boltStore); !ok {
			t.Errorf("Open(%q) = %T, want the bbolt store", loc, s)
		}
		s.Close()
	}
	for _, tc := range []struct{ loc, want string }{
		{"", "no location"},
		{"bolt://", "names no file"},
		{"mysql://u:pw@host/db", `"mysql://u:xxxxx@host/db": unknown kind of store`},
	} {
		if _, err := Open(tc.loc); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%q) error = %v, want it to say %q", tc.loc, err, tc.want)
		}
	}
}

func TestRedact(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"/var/lib/mwi/store.db", "/var/lib/mwi/store.db"},
		{"bolt:///var/lib/mwi/store.db", "bolt:///var/lib/mwi/store.db"},
		{"postgres://mwi:s3cret@db:5432/mwi?sslmode=verify-full", "postgres://mwi:xxxxx@db:5432/mwi?sslmode=verify-full"},
		{"postgres://mwi@db/mwi?password=s3cret", "postgres://mwi@db/mwi?password=xxxxx"},
		{"postgresql://db/mwi", "postgresql://db/mwi"},
		{"postgres://mwi:s3cret@db:badport/mwi", "postgres://(unparsable)"},
	} {
		if got := Redact(tc.in); got != tc.want {
			t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
