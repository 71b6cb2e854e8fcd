// Package yamlline corrects the line numbers of YAML syntax errors from
// go.yaml.in/yaml/v3 where they are off.
//
// For an unclosed flow collection ("did not find expected ',' or ']'" and
// the same with '}'), yaml.v3 reports the 0-based line of the opening
// bracket, that is the line before it, or, when the bracket is on the first
// line, the 0-based line of the token it stumbled on. Either way the line
// named is not the one to fix. The decoder returns no positions with an
// error, so the bracket is found again in the text.
package yamlline

import (
	"bytes"
	"strings"
)

// Correct returns the 1-based line that a yaml.v3 error with message msg,
// which named line reported, is about. It changes the line only for an
// unclosed flow collection; other errors keep reported.
func Correct(data []byte, reported int, msg string) int {
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
