package httpjson_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/fault"
	"github.com/mwi-project/mwi/internal/httpjson"
)

// decodeTargets are the request types the issuer's and mwid's handlers
// decode with httpjson.Decode; FuzzDecode picks one by its first argument.
var decodeTargets = []func() any{
	func() any { return new(api.JoinRequest) },
	func() any { return new(api.RenewRequest) },
	func() any { return new(api.CreateTokenRequest) },
}

// FuzzDecode feeds arbitrary bodies to Decode for each API request type.
// Decode must never panic; a refusal must be a 400 bad_request *Error; an
// accepted body must be valid JSON, and the value it decoded to must
// re-encode to JSON that Decode accepts again and that encodes the same.
func FuzzDecode(f *testing.F) {
	for _, seed := range []struct {
		target uint8
		body   string
	}{
		{0, `{"join_method":"token","token":"0123abcd","keys":{"identity_csr":"-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n","ssh":"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA== mwid\n"},"ssh_logins":["deploy","root"],"ttl_seconds":3600,"host_keys":[{"public_key":"ssh-ed25519 AAAA","names":["build-01.example.com"]}]}`},
		{0, `{"join_method":"token","keys":{},"ttl_seconds":-1,"ssh_logins":[],"host_keys":null}`},
		{0, `{"JOIN_METHOD":"token","Keys":{"SSH":"x"}}`},
		{0, `{"join_method":"token","join_method":"github"}`},
		{0, `{"join_method":"\u0000\ud800\u00e9","token":"\xff"}`},
		{1, `{"keys":{"identity_csr":"","ssh":""},"ttl_seconds":600}`},
		{1, `{"keys":{"identity_csr":"","ssh":"","extra":1},"ttl_seconds":600}`},
		{1, `{"ttl_seconds":1e3}`},
		{1, `{"ttl_seconds":99999999999999999999}`},
		{1, `{"host_keys":[{"public_key":"k","names":[null,"a"]}]}`},
		{2, `{"bot":"ci","ttl_seconds":3600}`},
		{2, `{"bot":"ci"} {"bot":"other"}`},
		{2, `{"bot":"ci"} trailing`},
		{2, `{"bot":["ci"]}`},
		{2, `null`},
		{2, `[]`},
		{2, ``},
		{2, "  {\"bot\" : \"ci\" }\n\t"},
		{2, `{"bot":"ci"`},
	} {
		f.Add(seed.target, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, target uint8, body []byte) {
		newValue := decodeTargets[int(target)%len(decodeTargets)]
		v := newValue()
		err := decode(body, v)
		if err != nil {
			var e *fault.Error
			if !errors.As(err, &e) || httpjson.Status(e.Kind) != http.StatusBadRequest || e.Code != api.CodeBadRequest {
				t.Fatalf("Decode(%q) = %#v, want a 400 %s *fault.Error", body, err, api.CodeBadRequest)
			}
			return
		}
		if !json.Valid(body) {
			t.Fatalf("Decode accepted %q, which is not valid JSON", body)
		}
		enc, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("accepted %q but cannot re-encode %#v: %v", body, v, err)
		}
		again := newValue()
		if err := decode(enc, again); err != nil {
			t.Fatalf("accepted %q, re-encoded as %s, which Decode refuses: %v", body, enc, err)
		}
		enc2, err := json.Marshal(again)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("re-encoding is not stable for %q:\n%s\n%s", body, enc, enc2)
		}
	})
}

func decode(body []byte, v any) error {
	r := httptest.NewRequest(http.MethodPost, "/v1/join", bytes.NewReader(body))
	return httpjson.Decode(r, v, httpjson.Limits{})
}
