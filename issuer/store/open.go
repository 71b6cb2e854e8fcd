package store

import (
	"errors"
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
// passwords (the user's, and the password or sslpassword parameter)
// replaced by "xxxxx". A location that is not a URL is returned as it is,
// unless it has a scheme, in which case only the scheme is kept.
func Redact(location string) string {
	return redact(location)
}

// secretParams are the URL parameters that libpq and pgx read as
// passwords.
var secretParams = []string{"password", "sslpassword"}

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
	q := u.Query()
	for _, k := range secretParams {
		if q.Has(k) {
			q.Set(k, "xxxxx")
			u.RawQuery = q.Encode()
		}
	}
	return u.Redacted()
}

// unparsable returns why net/url cannot take location apart, or nil if it
// can, in words that quote none of it: where a password holds a character
// that should have been percent-encoded, such as "/" or "@", the parts
// net/url would name (a host, a port) are pieces of the password, and pgx
// would quote the whole URL with only what it takes for the password
// hidden.
//
// It also refuses a URL whose user and password libpq, and so pgx, read
// otherwise than net/url, which Redact uses: libpq takes them up to the
// first "@" before the path, net/url to the last "@" of the host part, so
// that with an "@" in the password pgx would connect to a host made of the
// rest of it, and a message would show that.
func unparsable(location string) error {
	u, err := url.Parse(location)
	if err == nil {
		_, rest, _ := strings.Cut(location, "://")
		end := strings.IndexByte(rest, '/')
		if end < 0 {
			end = len(rest)
		}
		i := strings.IndexByte(rest[:end], '@')
		if i < 0 || u.User != nil && !strings.ContainsAny(rest[:i], "?#") && !strings.Contains(rest[i+1:end], "@") {
			return nil
		}
		err = errors.New("userinfo")
	}
	var esc url.EscapeError
	var host url.InvalidHostError
	why := "it is not a URL"
	switch msg := err.Error(); {
	case errors.As(err, &esc):
		why = "a % is not followed by two hexadecimal digits"
	case errors.As(err, &host):
		why = "the host is not valid"
	case strings.Contains(msg, "invalid port"):
		why = "the port is not a number"
	case strings.Contains(msg, "userinfo"):
		why = "the user or password holds a character that must be percent-encoded"
	case strings.Contains(msg, "control character"):
		why = "it holds a control character"
	}
	return fmt.Errorf("store: %s: not a URL that can be read: %s (percent-encode @ / : ? # %% and spaces in the user and password)",
		redact(location), why)
}
