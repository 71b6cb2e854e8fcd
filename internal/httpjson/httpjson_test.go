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
	"strings"
	"testing"

	"github.com/mwi-project/mwi/api"
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
			err := httpjson.Decode(r, &got)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				if got != tc.want {
					t.Errorf("Decode = %+v, want %+v", got, tc.want)
				}
				return
			}
			var herr *httpjson.Error
			if !errors.As(err, &herr) {
				t.Fatalf("Decode = %v (%T), want an *httpjson.Error", err, err)
			}
			if herr.Status != http.StatusBadRequest || herr.Code != api.CodeBadRequest {
				t.Errorf("error = %d %s, want 400 bad_request", herr.Status, herr.Code)
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

func TestErrorError(t *testing.T) {
	e := httpjson.Errorf(http.StatusForbidden, api.CodeTokenUsed, "token %s was used", "abc")
	if e.Status != http.StatusForbidden || e.Code != api.CodeTokenUsed || e.Message != "token abc was used" {
		t.Errorf("Errorf = %+v", e)
	}
	if got, want := e.Error(), "token_used: token abc was used"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
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
		{"*Error", httpjson.Errorf(http.StatusForbidden, api.CodeBotLocked, "bot ci is locked"), http.StatusForbidden, api.CodeBotLocked, "bot ci is locked", false},
		{"wrapped *Error", fmt.Errorf("renew: %w", httpjson.Errorf(http.StatusConflict, api.CodeGenerationMismatch, "stale")), http.StatusConflict, api.CodeGenerationMismatch, "stale", false},
		{"joined *Error", errors.Join(errors.New(secret), httpjson.Errorf(http.StatusNotFound, api.CodeNotFound, "gone")), http.StatusNotFound, api.CodeNotFound, "gone", false},
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
			return httpjson.Errorf(http.StatusTeapot, "teapot", "short and stout")
		})
		rec := httptest.NewRecorder()
		h(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		if rec.Code != http.StatusTeapot {
			t.Errorf("status = %d", rec.Code)
		}
		if e := decodeError(t, rec); e.Code != "teapot" || e.Message != "short and stout" {
			t.Errorf("error = %+v", e)
		}
	})
}

func TestNotFoundAndMethodNotAllowed(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		name    string
		h       http.HandlerFunc
		status  int
		code    string
		message string
	}{
		{"not found", httpjson.NotFound(log), http.StatusNotFound, api.CodeNotFound, "no route GET /x/y"},
		{"method not allowed", httpjson.MethodNotAllowed(log), http.StatusMethodNotAllowed, api.CodeBadRequest, "method GET not allowed on /x/y"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			tc.h(rec, httptest.NewRequest(http.MethodGet, "/x/y", nil))
			if rec.Code != tc.status {
				t.Errorf("status = %d, want %d", rec.Code, tc.status)
			}
			if e := decodeError(t, rec); e.Code != tc.code || e.Message != tc.message {
				t.Errorf("error = %+v, want %s %q", e, tc.code, tc.message)
			}
		})
	}
}
