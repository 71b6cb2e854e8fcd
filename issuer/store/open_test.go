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

// TestOpenNeverShowsThePassword opens PostgreSQL URLs whose passwords are
// written in every way a user might get wrong, in the user part or as a
// parameter: neither Open's error nor Redact holds any piece of them.
func TestOpenNeverShowsThePassword(t *testing.T) {
	// Pieces of the secrets, each unlikely to be in a message by chance.
	pieces := []string{"Qx7k", "Wv3m", "Jp9z", "Hy4t"}
	const down = "127.0.0.1:1" // refused at once
	for _, loc := range []string{
		"postgres://mwi:Qx7kWv3m@" + down + "/mwi?sslmode=disable&connect_timeout=1",
		"postgres://mwi:Qx7k/Wv3m@" + down + "/mwi",
		"postgres://mwi:Qx7k@Wv3m@" + down + "/mwi",
		"postgres://mwi:Qx7k:Wv3m@" + down + "/mwi",
		"postgres://mwi:Qx7k#Wv3m@" + down + "/mwi",
		"postgres://mwi:Qx7k?Wv3m@" + down + "/mwi",
		"postgres://mwi:Qx7k%Wv3m@" + down + "/mwi",
		"postgres://mwi:Qx7k%ZZWv3m@" + down + "/mwi",
		"postgres://mwi:Qx7k Wv3m@" + down + "/mwi",
		"postgres://mwi:Qx7k\x01Wv3m@" + down + "/mwi",
		"postgres://mwi:Qx7kWv3m@[::1/mwi",
		"postgres://mwi:Qx7kWv3m@" + down + "/mwi?sslmode=bogus",
		"postgres://mwi@" + down + "/mwi?password=Qx7kWv3m&sslmode=bogus",
		"postgres://mwi@" + down + "/mwi?password=Qx7kWv3m&sslmode=disable&connect_timeout=1",
		"postgres://mwi@" + down + "/mwi?sslpassword=Jp9zHy4t&sslmode=disable&connect_timeout=1",
		"postgres://mwi:Qx7kWv3m@" + down + "/mwi?sslpassword=Jp9zHy4t&sslmode=bogus",
		"postgres://mwi:Qx7kWv3m@" + down + "/mwi?sslmode=verify-full&sslrootcert=/nonexistent",
		"postgresql://mwi:Qx7k/Wv3m@" + down + "/mwi",
	} {
		_, err := Open(loc)
		if err == nil {
			t.Errorf("Open(%q) succeeded", loc)
			continue
		}
		for _, p := range pieces {
			if strings.Contains(err.Error(), p) || strings.Contains(Redact(loc), p) {
				t.Errorf("Open(%q): %v\nRedact: %s\nshows %q of the password", loc, err, Redact(loc), p)
			}
		}
	}
}

// TestOpenRefusesAmbiguousURLs opens URLs whose user and password libpq
// (and pgx) would read otherwise than net/url: refused before any
// connection, saying what to encode.
func TestOpenRefusesAmbiguousURLs(t *testing.T) {
	for _, loc := range []string{
		"postgres://mwi:Qx7k@Wv3m@127.0.0.1:1/mwi",
		"postgres://127.0.0.1:1?password=Qx7k@Wv3m",
	} {
		_, err := Open(loc)
		if err == nil || !strings.Contains(err.Error(), "must be percent-encoded") {
			t.Errorf("Open(%q) = %v, want a refusal to read the user and password", loc, err)
		}
	}
	// An "@" in the query, after the path, is the query's.
	if err := unparsable("postgres://mwi:pw@127.0.0.1:1/mwi?application_name=a@b"); err != nil {
		t.Errorf("an @ in the query: %v", err)
	}
}
