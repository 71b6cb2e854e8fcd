package store

import (
	"fmt"
	"net/url"
	"strings"
)

// Open opens the store at location:
//
//   - bolt://PATH, or a plain PATH: the bbolt file at PATH, made if it does
//     not exist; one issuer at a time.
//   - postgres://… or postgresql://…: a PostgreSQL database, as pgx reads
//     the URL (host, port, user, password, database, sslmode and the other
//     libpq parameters). Open connects and applies the schema migrations the
//     database has not had yet.
//
// Errors name the location without its password (see Redact).
func Open(location string) (Store, error) {
	switch {
	case strings.HasPrefix(location, "postgres://"), strings.HasPrefix(location, "postgresql://"):
		return openPostgres(location)
	case strings.HasPrefix(location, "bolt://"):
		path := strings.TrimPrefix(location, "bolt://")
		if path == "" {
			return nil, fmt.Errorf("store: %q names no file", location)
		}
		return openBolt(path)
	case strings.Contains(location, "://"):
		return nil, fmt.Errorf("store: %q: unknown kind of store; want bolt://PATH, postgres://… or a file path", Redact(location))
	case location == "":
		return nil, fmt.Errorf("store: no location given")
	}
	return openBolt(location)
}

// Redact returns location fit for logs and messages: a URL with its
// password replaced by "xxxxx". A location that is not a URL is returned
// as it is, unless it has a scheme, in which case only the scheme is kept.
func Redact(location string) string {
	return redact(location)
}

func redact(location string) string {
	if !strings.Contains(location, "://") {
		return location
	}
	u, err := url.Parse(location)
	if err != nil {
		// Not a URL we can take apart: say nothing of what follows the
		// scheme, which may hold a password.
		scheme, _, _ := strings.Cut(location, "://")
		return scheme + "://(unparsable)"
	}
	if u.Query().Has("password") {
		q := u.Query()
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}
