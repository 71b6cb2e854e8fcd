package httpjson_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/fault"
	"github.com/mwi-project/mwi/internal/httpjson"
)

type inner struct {
	SSH string `json:"ssh"`
}

type request struct {
	Name  string `json:"name"`
	Count int    `json:"count"`
	Keys  inner  `json:"keys"`
}

func TestDecode(t *testing.T) {
	const limit = 1 << 20
	for _, tc := range []struct {
		name    string
		body    string
		want    request
		wantErr []string // parts of the message; nil means success
	}{
		{"object", `{"name":"ci","count":2,"keys":{"ssh":"k"}}`, request{Name: "ci", Count: 2, Keys: inner{SSH: "k"}}, nil},
		{"trailing whitespace", "{\"name\":\"ci\"}\n\t \r\n", request{Name: "ci"}, nil},
		{"leading whitespace", "\n  {}", request{}, nil},
		{"null", `null`, request{}, nil},
		{"body at the limit", `{"name":"` + strings.Repeat("x", limit-11) + `"}`, request{Name: strings.Repeat("x", limit-11)}, nil},
		{"empty", "", request{}, []string{"empty, want a JSON object"}},
		{"only whitespace", "  \n", request{}, []string{"empty"}},
		// The offset counts the bytes read, so it is the 1-based position
		// of the offending byte.
		{"syntax error", `{"name" "ci"}`, request{}, []string{"invalid JSON at byte 9"}},
		{"syntax error later", `{"name":"ci",}`, request{}, []string{"invalid JSON at byte 14"}},
		{"truncated", `{"name":"ci"`, request{}, []string{"unexpected EOF"}},
		{"type mismatch", `{"count":"two"}`, request{}, []string{`field "count"`, "want int", "got string"}},
		{"nested type mismatch", `{"keys":{"ssh":5}}`, request{}, []string{`"keys.ssh"`, "want string", "got number"}},
		{"wrong top-level type", `[1,2]`, request{}, []string{"want", "got array"}},
		{"unknown field", `{"name":"ci","nmae":"x"}`, request{}, []string{`unknown field "nmae"`}},
		{"unknown nested field", `{"keys":{"rsa":"x"}}`, request{}, []string{`"rsa"`}},
		{"too large", `{"name":"` + strings.Repeat("x", limit) + `"}`, request{}, []string{fmt.Sprintf("larger than %d bytes", limit)}},
		{"trailing object", `{"name":"ci"} {}`, request{}, []string{"data after the JSON value"}},
		{"trailing garbage", `{"name":"ci"}x`, request{}, []string{"data after the JSON value"}},
		{"trailing brace", `{"name":"ci"}}`, request{}, []string{"data after the JSON value"}},
		{"two values on two lines", "{}\n{}\n", request{}, []string{"data after the JSON value"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(tc.body))
			var got request
			err := httpjson.Decode(r, &got, httpjson.Limits{})
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				if got != tc.want {
					t.Errorf("Decode = %+v, want %+v", got, tc.want)
				}
				return
			}
			var herr *fault.Error
			if !errors.As(err, &herr) {
				t.Fatalf("Decode = %v (%T), want a *fault.Error", err, err)
			}
			if httpjson.Status(herr.Kind) != http.StatusBadRequest || herr.Code != api.CodeBadRequest {
				t.Errorf("error = %d %s, want 400 bad_request", httpjson.Status(herr.Kind), herr.Code)
			}
			if !strings.HasPrefix(herr.Message, "request body: ") {
				t.Errorf("message %q does not say it is about the request body", herr.Message)
			}
			for _, part := range tc.wantErr {
				if !strings.Contains(herr.Message, part) {
					t.Errorf("message %q does not contain %q", herr.Message, part)
				}
			}
		})
	}
}

type host struct {
	Key   string   `json:"public_key"`
	Names []string `json:"names,omitempty"`
}

type limited struct {
	Name    string              `json:"name"`
	Token   string              `json:"id_token"`
	Hosts   []host              `json:"host_keys"`
	Labels  []map[string]string `json:"labels"`
	Keys    *inner              `json:"keys"`
	Ignored string              `json:"-"`
	NoTag   string
}

func TestDecodeLimits(t *testing.T) {
	l := httpjson.Limits{
		Body:    4096,
		String:  8,
		Items:   3,
		Strings: map[string]int{"id_token": 32, "host_keys.public_key": 16},
		Lists:   map[string]int{"host_keys": 2},
	}
	long := func(n int) string { return strings.Repeat("x", n) }
	for _, tc := range []struct {
		name    string
		body    string
		wantErr string // the message after "request body: "; empty means success
	}{
		{"within every bound", `{"name":"12345678","id_token":"` + long(32) + `","host_keys":[{"public_key":"` + long(16) + `","names":["a","b","c"]}],"labels":[{"k":"v"}],"keys":{"ssh":"k"},"NoTag":"t"}`, ""},
		{"default string bound", `{"name":"123456789"}`, "name is 9 bytes long; at most 8"},
		{"string bound by path", `{"id_token":"` + long(33) + `"}`, "id_token is 33 bytes long; at most 32"},
		{"nested string", `{"keys":{"ssh":"` + long(9) + `"}}`, "keys.ssh is 9 bytes long; at most 8"},
		{"string in a list element", `{"host_keys":[{"public_key":"k"},{"public_key":"` + long(17) + `"}]}`, "host_keys[1].public_key is 17 bytes long; at most 16"},
		{"string in a list of strings", `{"host_keys":[{"public_key":"k","names":["a","` + long(9) + `"]}]}`, "host_keys[0].names[1] is 9 bytes long; at most 8"},
		{"list bound by path", `{"host_keys":[{},{},{}]}`, "host_keys has 3 elements; at most 2"},
		{"default list bound", `{"host_keys":[{"names":["a","b","c","d"]}]}`, "host_keys[0].names has 4 elements; at most 3"},
		{"map size", `{"labels":[{"a":"1","b":"2","c":"3","d":"4"}]}`, "labels[0] has 4 elements; at most 3"},
		{"map key", `{"labels":[{"` + long(9) + `":"v"}]}`, "labels[0] key is 9 bytes long; at most 8"},
		{"map value", `{"labels":[{"k":"` + long(9) + `"}]}`, `labels[0]["k"] is 9 bytes long; at most 8`},
		{"field without a tag", `{"NoTag":"` + long(9) + `"}`, "NoTag is 9 bytes long; at most 8"},
		{"body past its bound", `{"name":"` + long(5000) + `"}`, "larger than 4096 bytes"},
		// What a request repeats in an error message is bounded too.
		{"long unknown field", `{"` + long(3000) + `":1}`, "…"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(tc.body))
			var got limited
			err := httpjson.Decode(r, &got, l)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				return
			}
			var herr *fault.Error
			if !errors.As(err, &herr) || httpjson.Status(herr.Kind) != http.StatusBadRequest || herr.Code != api.CodeBadRequest {
				t.Fatalf("Decode = %v, want a 400 bad_request *fault.Error", err)
			}
			if !strings.Contains(herr.Message, tc.wantErr) {
				t.Errorf("message %q does not contain %q", herr.Message, tc.wantErr)
			}
			if len(herr.Message) > 300 {
				t.Errorf("message is %d bytes long", len(herr.Message))
			}
		})
	}
}

// TestDecodeDrainsOversizedBody checks that a body past its limit is read
// on, up to a bound, so that the client still sending it can read the
// refusal instead of a reset.
func TestDecodeDrainsOversizedBody(t *testing.T) {
	for _, tc := range []struct {
		name    string
		size    int
		drained bool
	}{
		{"900 KB", 900 << 10, true},
		{"far past the bound", 8 << 20, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := strings.NewReader(`{"name":"` + strings.Repeat("x", tc.size) + `"}`)
			r := httptest.NewRequest(http.MethodPost, "/", body)
			var v request
			if err := httpjson.Decode(r, &v, httpjson.Limits{Body: 4096}); err == nil {
				t.Fatal("Decode accepted an oversized body")
			}
			if drained := body.Len() == 0; drained != tc.drained {
				t.Errorf("%d bytes left unread; drained = %v, want %v", body.Len(), drained, tc.drained)
			}
		})
	}
}

// TestStatus pins the status of each kind of refusal: the statuses on the
// wire, which openapi.yaml lists and clients match, depend on it.
func TestStatus(t *testing.T) {
	for _, tc := range []struct {
		kind fault.Kind
		want int
	}{
		{fault.KindInternal, http.StatusInternalServerError},
		{fault.KindInvalid, http.StatusBadRequest},
		{fault.KindUnauthenticated, http.StatusUnauthorized},
		{fault.KindDenied, http.StatusForbidden},
		{fault.KindNotFound, http.StatusNotFound},
		{fault.KindConflict, http.StatusConflict},
		{fault.KindFailedPrecondition, http.StatusUnprocessableEntity},
		{fault.KindRateLimited, http.StatusTooManyRequests},
		{fault.KindUpstream, http.StatusBadGateway},
		{fault.KindUnavailable, http.StatusServiceUnavailable},
		{fault.Kind(200), http.StatusInternalServerError},
	} {
		if got := httpjson.Status(tc.kind); got != tc.want {
			t.Errorf("Status(%v) = %d, want %d", tc.kind, got, tc.want)
		}
		// WriteError answers with the same status.
		rec := httptest.NewRecorder()
		httpjson.WriteError(rec, slog.New(slog.DiscardHandler), fault.New(tc.kind, "some_code", "refused"))
		if rec.Code != tc.want {
			t.Errorf("WriteError of a %v refusal answered %d, want %d", tc.kind, rec.Code, tc.want)
		}
		if e := decodeError(t, rec); e.Code != "some_code" || e.Message != "refused" {
			t.Errorf("WriteError of a %v refusal = %+v", tc.kind, e)
		}
	}
}

// decodeError decodes a recorded error answer strictly.
func decodeError(t *testing.T, rec *httptest.ResponseRecorder) api.Error {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	var eb api.ErrorBody
	dec := json.NewDecoder(rec.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&eb); err != nil {
		t.Fatalf("body is not an error body: %v", err)
	}
	return eb.Error
}

func TestWriteError(t *testing.T) {
	const secret = "open /var/lib/mwi/store.db: permission denied"
	for _, tc := range []struct {
		name    string
		err     error
		status  int
		code    string
		message string
		logged  bool
	}{
		{"*Error", fault.Denied(api.CodeBotLocked, "bot ci is locked"), http.StatusForbidden, api.CodeBotLocked, "bot ci is locked", false},
		{"wrapped *Error", fmt.Errorf("renew: %w", fault.Conflict(api.CodeGenerationMismatch, "stale")), http.StatusConflict, api.CodeGenerationMismatch, "stale", false},
		{"joined *Error", errors.Join(errors.New(secret), fault.NotFound(api.CodeNotFound, "gone")), http.StatusNotFound, api.CodeNotFound, "gone", false},
		{"plain error", errors.New(secret), http.StatusInternalServerError, api.CodeInternal, "internal error", true},
		{"wrapped plain error", fmt.Errorf("store: %w", errors.New(secret)), http.StatusInternalServerError, api.CodeInternal, "internal error", true},
		{"io.EOF", io.EOF, http.StatusInternalServerError, api.CodeInternal, "internal error", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logBuf bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logBuf, nil))
			rec := httptest.NewRecorder()
			httpjson.WriteError(rec, log, tc.err)
			if rec.Code != tc.status {
				t.Errorf("status = %d, want %d", rec.Code, tc.status)
			}
			body := rec.Body.String()
			e := decodeError(t, rec)
			if e.Code != tc.code || e.Message != tc.message {
				t.Errorf("error = %+v, want %s %q", e, tc.code, tc.message)
			}
			if tc.code == api.CodeInternal && strings.Contains(body, "/var/lib/mwi") {
				t.Errorf("body %q leaks the internal error", body)
			}
			if got := strings.Contains(logBuf.String(), tc.err.Error()); got != tc.logged {
				t.Errorf("logged = %v, want %v; log %q", got, tc.logged, logBuf.String())
			}
		})
	}
}

func TestHandler(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	t.Run("no error", func(t *testing.T) {
		h := httpjson.Handler(log, func(w http.ResponseWriter, r *http.Request) error {
			httpjson.Write(w, http.StatusCreated, map[string]int{"n": 1})
			return nil
		})
		rec := httptest.NewRecorder()
		h(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		if rec.Code != http.StatusCreated || rec.Header().Get("Content-Type") != "application/json" {
			t.Errorf("answer = %d %q", rec.Code, rec.Header().Get("Content-Type"))
		}
		var m map[string]int
		if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil || m["n"] != 1 {
			t.Errorf("body = %q, %v", rec.Body.String(), err)
		}
	})
	t.Run("error", func(t *testing.T) {
		h := httpjson.Handler(log, func(w http.ResponseWriter, r *http.Request) error {
			return fault.Conflict("teapot", "short and stout")
		})
		rec := httptest.NewRecorder()
		h(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		if rec.Code != http.StatusConflict {
			t.Errorf("status = %d", rec.Code)
		}
		if e := decodeError(t, rec); e.Code != "teapot" || e.Message != "short and stout" {
			t.Errorf("error = %+v", e)
		}
	})
}

func TestNotFoundAndMethodNotAllowed(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	routes := chi.NewRouter()
	ok := func(w http.ResponseWriter, r *http.Request) {}
	routes.Get("/x/y", ok)
	routes.Delete("/x/y", ok)
	routes.Route("/sub", func(r chi.Router) { r.Put("/z", ok) })
	for _, tc := range []struct {
		name    string
		h       http.HandlerFunc
		method  string
		path    string
		status  int
		code    string
		message string
		allow   []string
	}{
		{"not found", httpjson.NotFound(log), http.MethodGet, "/x/y", http.StatusNotFound, api.CodeNotFound, "no route GET /x/y", nil},
		{"method not allowed", httpjson.MethodNotAllowed(routes), http.MethodPost, "/x/y", http.StatusMethodNotAllowed, api.CodeBadRequest, "method POST not allowed on /x/y", []string{"GET", "DELETE"}},
		{"method not allowed in a subrouter", httpjson.MethodNotAllowed(routes), http.MethodGet, "/sub/z", http.StatusMethodNotAllowed, api.CodeBadRequest, "method GET not allowed on /sub/z", []string{"PUT"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			tc.h(rec, httptest.NewRequest(tc.method, tc.path, nil))
			if rec.Code != tc.status {
				t.Errorf("status = %d, want %d", rec.Code, tc.status)
			}
			if e := decodeError(t, rec); e.Code != tc.code || e.Message != tc.message {
				t.Errorf("error = %+v, want %s %q", e, tc.code, tc.message)
			}
			if got := rec.Header().Values("Allow"); !slices.Equal(got, tc.allow) {
				t.Errorf("Allow = %q, want %q", got, tc.allow)
			}
		})
	}
}

func TestDecodeError(t *testing.T) {
	tests := []struct {
		name string
		body string
		want *httpjson.APIError
	}{
		{"error shape", `{"error": {"code": "bot_locked", "message": "bot ci is locked"}}`,
			&httpjson.APIError{Status: 403, Code: "bot_locked", Message: "bot ci is locked"}},
		{"no code", `{"error": {"message": "m"}}`, nil},
		{"not JSON", "<html>bad gateway</html>", nil},
		{"empty", "", nil},
	}
	for _, tt := range tests {
		got := httpjson.DecodeError(403, []byte(tt.body))
		if (got == nil) != (tt.want == nil) || got != nil && *got != *tt.want {
			t.Errorf("%s: httpjson.DecodeError = %#v, want %#v", tt.name, got, tt.want)
		}
	}
	wrapped := fmt.Errorf("issuer refused: %w (bot_locked)", httpjson.DecodeError(403, []byte(tests[0].body)))
	if httpjson.ErrorCode(wrapped) != "bot_locked" || !httpjson.IsCode(wrapped, "bot_locked") || httpjson.IsCode(wrapped, "token_used") {
		t.Errorf("httpjson.ErrorCode(%v) = %q", wrapped, httpjson.ErrorCode(wrapped))
	}
	if httpjson.ErrorCode(errors.New("connection refused")) != "" || httpjson.IsCode(errors.New("x"), "") {
		t.Error("an error without an httpjson.APIError has a code")
	}
	// A refusal a server passes on is not rendered as its own.
	rec := httptest.NewRecorder()
	httpjson.WriteError(rec, slog.New(slog.DiscardHandler), fmt.Errorf("upstream: %w", httpjson.DecodeError(403, []byte(tests[0].body))))
	if rec.Code != http.StatusInternalServerError {
		t.Errorf("a passed-on httpjson.APIError was rendered with status %d", rec.Code)
	}
}

// TestWrite checks that a body goes out whole with its length, not in
// chunks, however long it is, and that a value that cannot be encoded is
// answered as an internal error rather than an empty body under the
// status meant for the value.
func TestWrite(t *testing.T) {
	long := strings.Repeat("x", 8<<10) // past net/http's buffer before chunking
	for _, tc := range []struct {
		name       string
		v          any
		wantStatus int
		wantCode   string
	}{
		{"short", map[string]string{"ssh": "key"}, http.StatusOK, ""},
		{"long", map[string]string{"ssh": long}, http.StatusOK, ""},
		{"unencodable", map[string]any{"f": func() {}}, http.StatusInternalServerError, api.CodeInternal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				httpjson.Write(w, http.StatusOK, tc.v)
			}))
			defer srv.Close()
			res, err := http.Get(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			body, err := io.ReadAll(res.Body)
			if err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != tc.wantStatus {
				t.Errorf("status = %d, want %d", res.StatusCode, tc.wantStatus)
			}
			if len(res.TransferEncoding) > 0 || res.ContentLength != int64(len(body)) {
				t.Errorf("Transfer-Encoding %q, Content-Length %d for a body of %d bytes, want the length and no chunks",
					res.TransferEncoding, res.ContentLength, len(body))
			}
			if got := res.Header.Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type = %q", got)
			}
			if tc.wantCode != "" {
				if e := httpjson.DecodeError(res.StatusCode, body); e == nil || e.Code != tc.wantCode {
					t.Errorf("body %s: want error code %s", body, tc.wantCode)
				}
				return
			}
			var got map[string]string
			if err := json.Unmarshal(body, &got); err != nil || got["ssh"] != tc.v.(map[string]string)["ssh"] {
				t.Errorf("body does not decode to the value written: %v", err)
			}
		})
	}
}
