package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/mwi-project/mwi/internal/cli"
	"github.com/mwi-project/mwi/issuer/audit"
)

// auditSearch holds the flags of audit search.
type auditSearch struct {
	state, log, since, format string
	filter                    audit.Filter
}

// auditCommand returns the "audit" group: the issuer's audit log read
// back.
func (e *env) auditCommand() *cobra.Command {
	var o auditSearch
	return group("audit", "read the issuer's audit log",
		command("search", "", "print the audit records that match every filter given, oldest first", func([]string) error { return e.runAuditSearch(&o) }, func(fs *pflag.FlagSet) {
			fs.StringVar(&o.state, "state", "", "issuer state `DIR`, whose audit.log is read")
			fs.StringVar(&o.log, "audit-log", "", "audit log `FILE` (and FILE.1, rotated), as serve --audit-log names it")
			fs.StringVar(&o.since, "since", "", "records from the last `DURATION` (1h), or since a time (RFC 3339)")
			fs.StringVar(&o.filter.Event, "event", "", "event `NAME` (join, renew, ...), or a prefix ending in a dot (token.)")
			fs.StringVar(&o.filter.Outcome, "outcome", "", "`OUTCOME`: allowed, denied or suppressed")
			fs.StringVar(&o.filter.Code, "code", "", "event `CODE`, such as MWI1001W")
			fs.StringVar(&o.filter.Bot, "bot", "", "bot `NAME`")
			fs.StringVar(&o.filter.Instance, "instance", "", "bot instance `ID`")
			fs.StringVar(&o.format, "format", "text", "output `FORMAT`: text (a line each) or json (the records as written)")
		}),
	)
}

func (e *env) runAuditSearch(o *auditSearch) error {
	path := o.log
	switch {
	case path == "" && o.state == "":
		return cli.Usagef("name the audit log with --audit-log FILE or --state DIR")
	case path != "" && o.state != "":
		return cli.Usagef("name the audit log with --audit-log FILE or --state DIR, not both")
	case path == "":
		path = filepath.Join(o.state, "audit.log")
	}
	switch o.format {
	case "text", "json":
	default:
		return cli.Usagef("--format must be text or json, not %q", o.format)
	}
	switch o.filter.Outcome {
	case "", audit.Allowed, audit.Denied, audit.Suppressed:
	default:
		return cli.Usagef("--outcome must be allowed, denied or suppressed, not %q", o.filter.Outcome)
	}
	if o.since != "" {
		since, err := parseSince(o.since, time.Now())
		if err != nil {
			return err
		}
		o.filter.Since = since
	}
	w := bufio.NewWriter(e.stdout)
	n := 0
	skipped, err := audit.Search(audit.Files(path), o.filter, func(en audit.Entry) error {
		n++
		if o.format == "json" {
			w.Write(en.Line)
			return w.WriteByte('\n')
		}
		_, err := fmt.Fprintln(w, auditText(en.Fields))
		return err
	})
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	if err != nil {
		return err
	}
	if skipped > 0 {
		fmt.Fprintf(e.stderr, "mwi-issuer: skipped %d lines of %s that are not audit records\n", skipped, path)
	}
	if n == 0 && o.format == "text" {
		fmt.Fprintln(e.stderr, "no audit records match")
	}
	return nil
}

// parseSince reads --since: a duration back from now, or a time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, cli.Usagef("--since: want a positive duration, not %s", s)
		}
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Time{}, cli.Usagef("--since: want a duration (1h) or a time (2026-01-02T15:04:05Z), not %q", s)
}

// auditActorKeys are the fields of a record that the text format names
// after its outcome: who acted, and on what.
var auditActorKeys = []string{"bot", "instance", "token", "token_name", "join_method", "uid", "admin", "remote"}

// auditText is a record as one line of text: time, code, event, outcome,
// the actor and the reason. Each value is written as auditTextValue
// writes it, so that the line is one line whatever the record holds.
func auditText(rec map[string]any) string {
	str := func(key string) string {
		if v, ok := rec[key]; ok && v != nil {
			return auditTextValue(v)
		}
		return "-"
	}
	parts := []string{str("time"), str("code"), str("event"), str("outcome")}
	for _, k := range auditActorKeys {
		if v, ok := rec[k]; ok && v != nil && v != "" {
			parts = append(parts, k+"="+auditTextValue(v))
		}
	}
	if r, ok := rec["reason"].(string); ok {
		parts = append(parts, "reason="+strconv.Quote(r))
	}
	return strings.Join(parts, " ")
}

// auditTextValue returns v for a line of text: a string as it is if it is
// a single word of printable characters, and quoted as a Go string
// otherwise; any other value as its JSON. Values come from requests, such
// as the join_method of a refused join, and a newline, a terminal's
// control sequence or a space in one must not let it pass for another
// field or another record.
func auditTextValue(v any) string {
	s, ok := v.(string)
	if !ok {
		b, err := json.Marshal(v)
		if err != nil {
			return strconv.Quote(fmt.Sprint(v))
		}
		s = string(b)
	}
	if s == "" || strings.ContainsFunc(s, func(r rune) bool {
		return r == ' ' || r == '"' || r == '\\' || r == utf8.RuneError || !strconv.IsPrint(r)
	}) {
		return strconv.Quote(s)
	}
	return s
}
