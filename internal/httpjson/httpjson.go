// Package httpjson renders and decodes the JSON bodies of MWI's HTTP APIs.
//
// Handlers return an error; Handler renders it once, in the one error shape
// every API answers with: {"error": {"code": ..., "message": ...}}. A
// *fault.Error is shown as it is, with the status that Status gives its
// kind: this is the one place where a refusal becomes an HTTP status. Clients
// of those APIs decode that shape with DecodeError, into an *APIError that
// errors.As, ErrorCode and IsCode find however the error was wrapped.
package httpjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/fault"
)

// maxBody bounds request bodies: every request of these APIs is small.
const maxBody = 1 << 20

// maxDrain bounds what Decode reads and discards of a body past its limit.
const maxDrain = 1 << 20

// statuses is the HTTP status of each kind of refusal.
var statuses = [...]int{
	fault.KindInternal:           http.StatusInternalServerError,
	fault.KindInvalid:            http.StatusBadRequest,
	fault.KindUnauthenticated:    http.StatusUnauthorized,
	fault.KindDenied:             http.StatusForbidden,
	fault.KindNotFound:           http.StatusNotFound,
	fault.KindConflict:           http.StatusConflict,
	fault.KindFailedPrecondition: http.StatusUnprocessableEntity,
	fault.KindRateLimited:        http.StatusTooManyRequests,
	fault.KindUpstream:           http.StatusBadGateway,
	fault.KindUnavailable:        http.StatusServiceUnavailable,
}

// Status returns the HTTP status that answers a refusal of kind k. A kind
// it does not know answers 500.
func Status(k fault.Kind) int {
	if int(k) < len(statuses) && statuses[k] != 0 {
		return statuses[k]
	}
	return http.StatusInternalServerError
}

// APIError is an error answer from one of MWI's APIs, as a client decodes
// it. It is a type apart from fault.Error, which a server renders, so that a
// server passing on a refusal it received renders it as its own internal
// error, never as its own refusal.
type APIError struct {
	// Status is the HTTP status of the answer.
	Status int
	// Code is the stable code from the error body. It is empty when a
	// client makes an APIError for an answer that was not an error body.
	Code string
	// Message is for people; match on Code.
	Message string
}

// Error returns the message: each client says where the answer came from
// in its own words.
func (e *APIError) Error() string { return e.Message }

// DecodeError returns the error an answer with the given status and body
// carries, or nil if body is not the error shape with a code.
func DecodeError(status int, body []byte) *APIError {
	var b api.ErrorBody
	if json.Unmarshal(body, &b) != nil || b.Error.Code == "" {
		return nil
	}
	return &APIError{Status: status, Code: b.Error.Code, Message: b.Error.Message}
}

// ErrorCode returns the code of the *APIError in err's chain, or "" if
// there is none.
func ErrorCode(err error) string {
	var e *APIError
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// IsCode reports whether err's chain holds an *APIError with the given
// code.
func IsCode(err error, code string) bool {
	return code != "" && ErrorCode(err) == code
}

// Write writes v as a JSON body with the given status.
//
// The body is encoded whole before anything is sent, so that it goes out
// with a Content-Length in one write rather than in chunks, and a value
// that cannot be encoded is answered as an internal error instead of a
// truncated body under the status meant for it.
func Write(w http.ResponseWriter, status int, v any) {
	buf := bufs.Get().(*bytes.Buffer)
	defer putBuf(buf)
	buf.Reset()
	enc := json.NewEncoder(buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		buf.Reset()
		status = http.StatusInternalServerError
		enc.Encode(api.ErrorBody{Error: api.Error{Code: api.CodeInternal, Message: "internal error"}})
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// bufs holds the buffers Write encodes bodies in.
var bufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledBuf is the largest buffer put back in bufs: a rare large body
// (a long listing) is not held on to for every small one after it.
const maxPooledBuf = 64 << 10

func putBuf(b *bytes.Buffer) {
	if b.Cap() <= maxPooledBuf {
		bufs.Put(b)
	}
}

// WriteError renders err. A *fault.Error anywhere in err's chain is shown
// as it is, with the status of its kind; any other error is logged and
// shown as an internal error, because its text may hold details the caller
// must not see.
func WriteError(w http.ResponseWriter, log *slog.Logger, err error) {
	e, ok := fault.As(err)
	if !ok {
		log.Error("internal error", "err", err)
		e = fault.Internal(api.CodeInternal, "internal error")
	}
	writeError(w, Status(e.Kind), e.Code, e.Message)
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	Write(w, status, api.ErrorBody{Error: api.Error{Code: code, Message: message}})
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

// Limits bound a request body and the strings and lists in it. Zero
// means the default: 1 MiB for Body, no bound for the others.
type Limits struct {
	// Body bounds the whole body, in bytes.
	Body int64
	// String bounds every string, in bytes, and Items every list and map,
	// in elements, unless Strings or Lists name the field.
	String, Items int
	// Strings and Lists bound the fields at these paths: JSON names joined
	// by dots, such as "keys.ssh". The elements of a list, and the keys and
	// values of a map, are at the path of the list or map.
	Strings, Lists map[string]int
}

// Decode reads exactly one JSON value from r's body into v, and checks it
// against l. Unknown fields, trailing data, oversized bodies and values
// past l are refused with a bad_request *fault.Error that names the problem,
// and the field.
func Decode(r *http.Request, v any, l Limits) error {
	limit := l.Body
	if limit <= 0 {
		limit = maxBody
	}
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var big *http.MaxBytesError
		if errors.As(err, &big) {
			// Read on a little, to nowhere, so that a client still sending
			// its body gets the refusal: closing a connection with unread
			// data resets it, and the reset can take the answer with it.
			io.CopyN(io.Discard, r.Body, maxDrain)
		}
		return fault.Invalid(api.CodeBadRequest, "request body: %s", clip(describe(err)))
	}
	if _, err := dec.Token(); err != io.EOF {
		return fault.Invalid(api.CodeBadRequest, "request body: data after the JSON value")
	}
	if err := l.check(reflect.ValueOf(v), "", ""); err != nil {
		return fault.Invalid(api.CodeBadRequest, "request body: %s", err)
	}
	return nil
}

// check walks v and refuses the first string or list past l. path is the
// field's path as Strings and Lists name it; name is the same with the
// index of each element, to show the caller.
func (l Limits) check(v reflect.Value, path, name string) error {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return nil
		}
		return l.check(v.Elem(), path, name)
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			key, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			switch key {
			case "-":
				continue
			case "":
				key = f.Name
			}
			if err := l.check(v.Field(i), join(path, key), join(name, key)); err != nil {
				return err
			}
		}
	case reflect.Slice, reflect.Array:
		if err := l.checkItems(v.Len(), path, name); err != nil {
			return err
		}
		for i := range v.Len() {
			if err := l.check(v.Index(i), path, fmt.Sprintf("%s[%d]", name, i)); err != nil {
				return err
			}
		}
	case reflect.Map:
		if err := l.checkItems(v.Len(), path, name); err != nil {
			return err
		}
		for it := v.MapRange(); it.Next(); {
			if err := l.check(it.Key(), path, name+" key"); err != nil {
				return err
			}
			if err := l.check(it.Value(), path, fmt.Sprintf("%s[%q]", name, clip(fmt.Sprint(it.Key())))); err != nil {
				return err
			}
		}
	case reflect.String:
		max := l.String
		if n, ok := l.Strings[path]; ok {
			max = n
		}
		if max > 0 && v.Len() > max {
			return fmt.Errorf("%s is %d bytes long; at most %d", name, v.Len(), max)
		}
	}
	return nil
}

func (l Limits) checkItems(n int, path, name string) error {
	max := l.Items
	if m, ok := l.Lists[path]; ok {
		max = m
	}
	if max > 0 && n > max {
		return fmt.Errorf("%s has %d elements; at most %d", name, n, max)
	}
	return nil
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// maxDetail bounds what an error message repeats of a request, such as
// an unknown field's name.
const maxDetail = 200

// clip cuts s to maxDetail bytes, at a character boundary.
func clip(s string) string {
	if len(s) <= maxDetail {
		return s
	}
	cut := maxDetail
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
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
		return fault.NotFound(api.CodeNotFound, "no route %s %s", r.Method, r.URL.Path)
	})
}

// methods are the request methods MethodNotAllowed offers in Allow.
var methods = []string{
	http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
	http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace,
}

// MethodNotAllowed renders a bad_request error for a known route with the
// wrong method, with an Allow header listing the methods routes serves on
// that path, as HTTP requires of a 405 and as chi's own handler does.
func MethodNotAllowed(routes chi.Routes) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		path := r.URL.RawPath
		if path == "" {
			path = r.URL.Path
		}
		for _, m := range methods {
			if routes.Match(chi.NewRouteContext(), m, path) {
				w.Header().Add("Allow", m)
			}
		}
		// Routing refuses the method before any handler decides, so no kind
		// of refusal stands for 405: it is written here, and only here.
		writeError(w, http.StatusMethodNotAllowed, api.CodeBadRequest, fmt.Sprintf("method %s not allowed on %s", r.Method, r.URL.Path))
	}
}
