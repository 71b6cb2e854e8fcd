// Package httpjson renders and decodes the JSON bodies of MWI's HTTP APIs.
//
// Handlers return an error; Handler renders it once, in the one error shape
// every API answers with: {"error": {"code": ..., "message": ...}}.
package httpjson

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"github.com/mwi-project/mwi/api"
)

// maxBody bounds request bodies: every request of these APIs is small.
const maxBody = 1 << 20

// Error is an error with an HTTP status and a stable code. Its message is
// shown to the caller, so it must not leak anything the caller may not know.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf returns an *Error with a formatted message.
func Errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Write writes v as a JSON body with the given status.
func Write(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// WriteError renders err. An *Error anywhere in err's chain is shown as it
// is; any other error is logged and shown as an internal error, because its
// text may hold details the caller must not see.
func WriteError(w http.ResponseWriter, log *slog.Logger, err error) {
	var e *Error
	if !errors.As(err, &e) {
		log.Error("internal error", "err", err)
		e = &Error{Status: http.StatusInternalServerError, Code: api.CodeInternal, Message: "internal error"}
	}
	Write(w, e.Status, api.ErrorBody{Error: api.Error{Code: e.Code, Message: e.Message}})
}

// HandlerFunc is an HTTP handler that returns its error for Handler to render.
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// Handler adapts h to an http.HandlerFunc that renders h's error.
func Handler(log *slog.Logger, h HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			WriteError(w, log, err)
		}
	}
}

// Decode reads exactly one JSON value from r's body into v. Unknown fields,
// trailing data and oversized bodies are refused with a bad_request *Error
// that names the problem.
func Decode(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return Errorf(http.StatusBadRequest, api.CodeBadRequest, "request body: %s", describe(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return Errorf(http.StatusBadRequest, api.CodeBadRequest, "request body: data after the JSON value")
	}
	return nil
}

func describe(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var big *http.MaxBytesError
	switch {
	case errors.Is(err, io.EOF):
		return "empty, want a JSON object"
	case errors.As(err, &syn):
		return fmt.Sprintf("invalid JSON at byte %d: %v", syn.Offset, syn)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %q: want %s, got %s", typ.Field, typ.Type, typ.Value)
	case errors.As(err, &big):
		return fmt.Sprintf("larger than %d bytes", big.Limit)
	default:
		return err.Error()
	}
}

// NotFound renders a not_found error for an unknown route.
func NotFound(log *slog.Logger) http.HandlerFunc {
	return Handler(log, func(w http.ResponseWriter, r *http.Request) error {
		return Errorf(http.StatusNotFound, api.CodeNotFound, "no route %s %s", r.Method, r.URL.Path)
	})
}

// MethodNotAllowed renders a bad_request error for a known route with the
// wrong method.
func MethodNotAllowed(log *slog.Logger) http.HandlerFunc {
	return Handler(log, func(w http.ResponseWriter, r *http.Request) error {
		return Errorf(http.StatusMethodNotAllowed, api.CodeBadRequest, "method %s not allowed on %s", r.Method, r.URL.Path)
	})
}
