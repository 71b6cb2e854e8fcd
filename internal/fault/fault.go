// Package fault defines the errors with which MWI refuses a request,
// apart from the protocol that carries the refusal.
//
// An *Error has a stable code, one of the api.Code* strings, which
// programs match on; a message, for people; and a Kind, the category of
// the refusal. The code says what was refused and the kind how: the same
// code can be a denial in one place and a missing resource in another.
// The HTTP layer (internal/httpjson) alone turns a kind into a status.
//
// Any error that is not an *Error is an internal failure: its text may hold
// details the caller must not see, so it is logged, not shown.
package fault

import (
	"errors"
	"fmt"
	"strconv"
)

// A Kind is the category of a refusal.
type Kind uint8

const (
	// KindInternal means the server failed to decide. It is the zero
	// Kind, so that an *Error whose kind is not set claims nothing more.
	KindInternal Kind = iota
	// KindInvalid means the request is malformed: a field is missing,
	// too long or not what it must be.
	KindInvalid
	// KindUnauthenticated means the caller did not prove who it is.
	KindUnauthenticated
	// KindDenied means the caller is known but may not have what it asks.
	KindDenied
	// KindNotFound means what the request names does not exist.
	KindNotFound
	// KindConflict means the request met a change made meanwhile; the
	// same request may succeed when tried again.
	KindConflict
	// KindFailedPrecondition means the request is well formed but the
	// state it acts on does not allow it, such as a configuration file
	// that does not load.
	KindFailedPrecondition
	// KindRateLimited means the caller asks too often.
	KindRateLimited
	// KindUpstream means a server asked on the caller's behalf refused or
	// could not be reached.
	KindUpstream
	// KindUnavailable means the server cannot serve the request now, but
	// may later.
	KindUnavailable
)

var kindNames = [...]string{
	KindInternal:           "internal",
	KindInvalid:            "invalid",
	KindUnauthenticated:    "unauthenticated",
	KindDenied:             "denied",
	KindNotFound:           "not found",
	KindConflict:           "conflict",
	KindFailedPrecondition: "failed precondition",
	KindRateLimited:        "rate limited",
	KindUpstream:           "upstream",
	KindUnavailable:        "unavailable",
}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Error is a refusal. Its message is shown to the caller, so it must not
// leak anything the caller may not know.
type Error struct {
	Kind    Kind
	Code    string
	Message string
}

// Error returns the code and the message.
func (e *Error) Error() string { return e.Code + ": " + e.Message }

// New returns an *Error of kind k with a formatted message.
func New(k Kind, code, format string, args ...any) *Error {
	return &Error{Kind: k, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Internal returns an *Error of KindInternal: a failure whose code and
// message the caller may see, unlike any other error's.
func Internal(code, format string, args ...any) *Error {
	return New(KindInternal, code, format, args...)
}

// Invalid returns an *Error of KindInvalid.
func Invalid(code, format string, args ...any) *Error {
	return New(KindInvalid, code, format, args...)
}

// Unauthenticated returns an *Error of KindUnauthenticated.
func Unauthenticated(code, format string, args ...any) *Error {
	return New(KindUnauthenticated, code, format, args...)
}

// Denied returns an *Error of KindDenied.
func Denied(code, format string, args ...any) *Error {
	return New(KindDenied, code, format, args...)
}

// NotFound returns an *Error of KindNotFound.
func NotFound(code, format string, args ...any) *Error {
	return New(KindNotFound, code, format, args...)
}

// Conflict returns an *Error of KindConflict.
func Conflict(code, format string, args ...any) *Error {
	return New(KindConflict, code, format, args...)
}

// FailedPrecondition returns an *Error of KindFailedPrecondition.
func FailedPrecondition(code, format string, args ...any) *Error {
	return New(KindFailedPrecondition, code, format, args...)
}

// RateLimited returns an *Error of KindRateLimited.
func RateLimited(code, format string, args ...any) *Error {
	return New(KindRateLimited, code, format, args...)
}

// Upstream returns an *Error of KindUpstream.
func Upstream(code, format string, args ...any) *Error {
	return New(KindUpstream, code, format, args...)
}

// Unavailable returns an *Error of KindUnavailable.
func Unavailable(code, format string, args ...any) *Error {
	return New(KindUnavailable, code, format, args...)
}

// As returns the *Error in err's chain, if there is one.
func As(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}
