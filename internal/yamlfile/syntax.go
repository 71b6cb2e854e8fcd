package yamlfile

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// lineRE matches a yaml.v3 error that carries a line number.
var lineRE = regexp.MustCompile(`(?s)^yaml: line (\d+): (.*)$`)

// syntaxError records err, a syntax error of the YAML decoder, at the line
// to fix.
func (f *File) syntaxError(err error) {
	msg := err.Error()
	if m := lineRE.FindStringSubmatch(msg); m != nil {
		if line, err := strconv.Atoi(m[1]); err == nil && line > 0 {
			f.Errorf(correctLine(f.Data, line, m[2]), "invalid YAML: %s", m[2])
			return
		}
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	f.Errorf(guessLine(f.Data, msg), "invalid YAML: %s", msg)
}

// correctLine returns the 1-based line that a yaml.v3 error with message
// msg, which named line reported, is about. It changes the line only for
// an unclosed flow collection; other errors keep reported.
//
// For an unclosed flow collection ("did not find expected ',' or ']'" and
// the same with '}'), yaml.v3 reports the 0-based line of the opening
// bracket, that is the line before it, or, when the bracket is on the first
// line, the 0-based line of the token it stumbled on. Either way the line
// named is not the one to fix. The decoder returns no positions with an
// error, so the bracket is found again in the text.
func correctLine(data []byte, reported int, msg string) int {
	var opener byte
	switch {
	case strings.Contains(msg, "did not find expected ',' or ']'"):
		opener = '['
	case strings.Contains(msg, "did not find expected ',' or '}'"):
		opener = '{'
	default:
		return reported
	}
	lines := bytes.Split(data, []byte("\n"))
	has := func(n int) bool { return n >= 1 && n <= len(lines) && bytes.IndexByte(lines[n-1], opener) >= 0 }
	switch {
	case has(reported + 1):
		// The usual case: reported is the bracket's 0-based line.
		return reported + 1
	case has(1):
		// The bracket is on the first line, whose 0-based number, 0,
		// yaml.v3 does not report.
		return 1
	}
	return reported
}

// guessLine returns the line of data that a YAML error without a line
// number refers to. The decoder omits the line for errors on the first line
// and for errors found while reading the input, such as control characters
// and invalid UTF-8; guessLine looks for the offending text.
func guessLine(data []byte, msg string) int {
	off := -1
	switch {
	case strings.Contains(msg, "control characters"):
		off = bytes.IndexFunc(data, func(r rune) bool {
			return r != '\t' && r != '\n' && r != '\r' && r != 0x85 &&
				(r < 0x20 || r >= 0x7f && r < 0xa0 || r == 0xfffe || r == 0xffff)
		})
	case strings.Contains(msg, "UTF-8"):
		for i := 0; i < len(data); {
			r, n := utf8.DecodeRune(data[i:])
			if r == utf8.RuneError && n <= 1 {
				off = i
				break
			}
			i += n
		}
	case strings.HasPrefix(msg, "unknown anchor '"):
		name, _, _ := strings.Cut(strings.TrimPrefix(msg, "unknown anchor '"), "'")
		off = bytes.Index(data, []byte("*"+name))
	}
	if off < 0 {
		return 1
	}
	return 1 + bytes.Count(data[:off], []byte("\n"))
}
