package localapi_test

// The contract tests keep openapi.yaml and the local API in step. They fail
//
//   - when the document is not valid OpenAPI 3.0, or an example in it does
//     not match its schema;
//   - when the route table has a (method, path) that the document lacks, or
//     the reverse (TestContractRoutes, by walking the chi router);
//   - when a schema's properties, required list or types differ from the
//     JSON encoding of its type in package api (TestContractSchemas, by
//     reflection, so that even an omitempty field the fakes never set is
//     compared);
//   - when a real answer of the real handler, over a fake backend, does not
//     validate against the document: status, Content-Type and body, with
//     additionalProperties: false catching unknown fields
//     (TestContractResponses);
//   - when an operation has a "default" answer, which would hide statuses
//     the document does not list, or a status the handler answers is not
//     listed, or a listed status is never exercised.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/go-chi/chi/v5"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/localapi"
	"github.com/mwi-project/mwi/daemon/metrics"
)

const specPath = "../../openapi.yaml"

// loadSpec loads openapi.yaml and validates it, examples included.
func loadSpec(t *testing.T) *openapi3.T {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromFile(specPath)
	if err != nil {
		t.Fatalf("load %s: %v", specPath, err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		t.Fatalf("%s is not a valid OpenAPI document: %v", specPath, err)
	}
	return doc
}

// specOperations returns "METHOD /path" for every operation in doc.
func specOperations(doc *openapi3.T) map[string]*openapi3.Operation {
	ops := make(map[string]*openapi3.Operation)
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			ops[method+" "+path] = op
		}
	}
	return ops
}

// chiParam matches a chi path parameter with a regular expression, which
// OpenAPI writes without it.
var chiParam = regexp.MustCompile(`\{([^{}:]+):[^{}]*\}`)

// TestContractRoutes compares the route table with the document's paths:
// a route the document lacks, or an operation with no route, fails.
func TestContractRoutes(t *testing.T) {
	doc := loadSpec(t)
	h := localapi.Routes(&fakeBackend{}, metrics.New().Handler(), newLogger(t))
	routes, ok := h.(chi.Routes)
	if !ok {
		t.Fatalf("Routes returned %T, which is not a chi.Routes: the route table cannot be walked", h)
	}
	served := make(map[string]bool)
	err := chi.Walk(routes, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		if strings.HasSuffix(route, "*") {
			return fmt.Errorf("route %s %s is a wildcard mount, which openapi.yaml cannot describe path by path", method, route)
		}
		served[method+" "+chiParam.ReplaceAllString(route, "{$1}")] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	documented := specOperations(doc)
	for _, r := range sortedKeys(served) {
		if documented[r] == nil {
			t.Errorf("route %s is served but not documented in openapi.yaml", r)
		}
	}
	for _, r := range sortedKeys(documented) {
		if !served[r] {
			t.Errorf("openapi.yaml documents %s, but Routes does not serve it", r)
		}
	}
}

// TestContractConventions checks what every operation of the document must
// have: an operationId, a summary and a description, the 403 of the peer
// credential check, error answers in the one error shape, and no default
// answer: every status is listed.
func TestContractConventions(t *testing.T) {
	doc := loadSpec(t)
	ids := make(map[string]string)
	for _, name := range sortedKeys(specOperations(doc)) {
		op := specOperations(doc)[name]
		if op.OperationID == "" {
			t.Errorf("%s: no operationId", name)
		} else if other, dup := ids[op.OperationID]; dup {
			t.Errorf("%s: operationId %q is also %s's", name, op.OperationID, other)
		}
		ids[op.OperationID] = name
		if op.Summary == "" || op.Description == "" {
			t.Errorf("%s: needs a summary and a description", name)
		}
		if r := op.Responses.Value("403"); r == nil || r.Ref != "#/components/responses/AccessDenied" {
			t.Errorf("%s: 403 must be #/components/responses/AccessDenied", name)
		}
		if op.Responses.Default() != nil {
			t.Errorf("%s: has a default answer; list each status it answers instead", name)
		}
		if r := op.Responses.Value("500"); r != nil && r.Ref != "#/components/responses/Internal" {
			t.Errorf("%s: 500 must be #/components/responses/Internal", name)
		}
		for status, r := range op.Responses.Map() {
			if s, _ := strconv.Atoi(status); s < 400 || notErrorShaped[name+" "+status] {
				continue
			}
			mt := r.Value.Content.Get("application/json")
			if mt == nil || !refersTo(mt.Schema, "#/components/schemas/Error") {
				t.Errorf("%s: %s answer must be application/json with the Error schema", name, status)
			}
		}
	}
}

// notErrorShaped are the non-2xx answers that are not errors: /readyz
// answers 503 with its Readiness body, so that a probe can see why.
var notErrorShaped = map[string]bool{"GET /readyz 503": true}

// refersTo reports whether s is ref, or an allOf that includes ref.
func refersTo(s *openapi3.SchemaRef, ref string) bool {
	if s == nil {
		return false
	}
	if s.Ref == ref {
		return true
	}
	return slices.ContainsFunc(s.Value.AllOf, func(s *openapi3.SchemaRef) bool { return s.Ref == ref })
}

// goTypes maps the document's object schemas to the api types they
// describe. Every object schema that forbids additional properties must be
// here or in schemasWithoutType.
var goTypes = map[string]reflect.Type{
	"Error":           reflect.TypeFor[api.ErrorBody](),
	"ErrorDetail":     reflect.TypeFor[api.Error](),
	"Status":          reflect.TypeFor[api.Status](),
	"RenewOutcome":    reflect.TypeFor[api.RenewOutcome](),
	"Refusal":         reflect.TypeFor[api.Refusal](),
	"Credential":      reflect.TypeFor[api.Credential](),
	"Output":          reflect.TypeFor[api.Output](),
	"AccessDirStatus": reflect.TypeFor[api.AccessDirStatus](),
	"SSHHostOutput":   reflect.TypeFor[api.SSHHostOutput](),
	"SSHRefusal":      reflect.TypeFor[api.SSHRefusal](),
	"SSHNodes":        reflect.TypeFor[api.SSHNodes](),
	"ReachableNode":   reflect.TypeFor[api.ReachableNode](),
	"ConfigStatus":    reflect.TypeFor[api.ConfigStatus](),
	"Identity":        reflect.TypeFor[api.Identity](),
	"ReloadResult":    reflect.TypeFor[api.ReloadResult](),
	"Readiness":       reflect.TypeFor[api.Readiness](),
	"CredentialRead":  reflect.TypeFor[api.CredentialRead](),
	"Version":         reflect.TypeFor[api.Version](),

	"KubernetesCluster":    reflect.TypeFor[api.KubernetesCluster](),
	"ExecCredential":       reflect.TypeFor[api.ExecCredential](),
	"ExecCredentialStatus": reflect.TypeFor[api.ExecCredentialStatus](),
}

// schemasWithoutType are object schemas with no api type: /healthz answers
// a map.
var schemasWithoutType = map[string]bool{"Health": true}

// TestContractSchemas compares each schema with the JSON encoding of its
// api type: property names, required properties (those without
// omitempty) and types.
func TestContractSchemas(t *testing.T) {
	doc := loadSpec(t)
	schemaOf := make(map[reflect.Type]string)
	for name, typ := range goTypes {
		schemaOf[typ] = name
	}
	for _, name := range sortedKeys(doc.Components.Schemas) {
		s := doc.Components.Schemas[name].Value
		if !s.Type.Is("object") || s.AdditionalProperties.Has == nil || *s.AdditionalProperties.Has {
			continue
		}
		if goTypes[name] == nil && !schemasWithoutType[name] {
			t.Errorf("schema %s forbids additional properties but is mapped to no api type in goTypes", name)
		}
	}
	for _, name := range sortedKeys(goTypes) {
		typ := goTypes[name]
		ref := doc.Components.Schemas[name]
		if ref == nil {
			t.Errorf("openapi.yaml has no schema %s for %v", name, typ)
			continue
		}
		s := ref.Value
		if !s.Type.Is("object") {
			t.Errorf("schema %s: type %v, want object", name, s.Type)
		}
		if s.AdditionalProperties.Has == nil || *s.AdditionalProperties.Has {
			t.Errorf("schema %s: want additionalProperties: false, so that new fields are caught", name)
		}
		fields := jsonFields(typ)
		for _, f := range fields {
			prop := s.Properties[f.name]
			if prop == nil {
				t.Errorf("schema %s lacks property %q of %v.%s", name, f.name, typ, f.goName)
				continue
			}
			if required := slices.Contains(s.Required, f.name); required == f.omitempty {
				t.Errorf("schema %s: property %q required=%v, but %v.%s has omitempty=%v",
					name, f.name, required, typ, f.goName, f.omitempty)
			}
			typ := f.typ
			if f.asString {
				typ = reflect.TypeFor[string]()
			}
			if err := checkType(prop, typ, schemaOf); err != nil {
				t.Errorf("schema %s, property %q (%v.%s): %v", name, f.name, typ, f.goName, err)
			}
		}
		for _, p := range sortedKeys(s.Properties) {
			if !slices.ContainsFunc(fields, func(f jsonField) bool { return f.name == p }) {
				t.Errorf("schema %s has property %q, which %v does not have", name, p, typ)
			}
		}
		for _, r := range s.Required {
			if s.Properties[r] == nil {
				t.Errorf("schema %s requires %q, which it does not define", name, r)
			}
		}
	}
}

type jsonField struct {
	name, goName string
	typ          reflect.Type
	omitempty    bool
	asString     bool // the ",string" option: a number encoded as a JSON string
}

// jsonFields returns the fields encoding/json encodes for struct type typ.
// The api types have no embedded structs.
func jsonFields(typ reflect.Type) []jsonField {
	var out []jsonField
	for f := range typ.Fields() {
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if name == "" {
			name = f.Name
		}
		out = append(out, jsonField{
			name:      name,
			goName:    f.Name,
			typ:       f.Type,
			omitempty: slices.Contains(strings.Split(opts, ","), "omitempty"),
			asString:  slices.Contains(strings.Split(opts, ","), "string"),
		})
	}
	return out
}

var timeType = reflect.TypeFor[time.Time]()

// checkType reports whether s describes the JSON encoding of typ.
func checkType(s *openapi3.SchemaRef, typ reflect.Type, schemaOf map[reflect.Type]string) error {
	if typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	v := s.Value
	want := func(jsonType string) error {
		if !v.Type.Is(jsonType) {
			return fmt.Errorf("schema type %v, want %s for Go %v", v.Type.Slice(), jsonType, typ)
		}
		return nil
	}
	switch {
	case typ == timeType:
		if err := want("string"); err != nil {
			return err
		}
		if v.Format != "date-time" {
			return fmt.Errorf("format %q, want date-time for time.Time", v.Format)
		}
		return nil
	case typ.Kind() == reflect.Struct:
		name, ok := schemaOf[typ]
		if !ok {
			return fmt.Errorf("Go %v is mapped to no schema in goTypes", typ)
		}
		if s.Ref != "#/components/schemas/"+name {
			return fmt.Errorf("schema %q, want a $ref to #/components/schemas/%s", s.Ref, name)
		}
		return nil
	case typ.Kind() == reflect.Slice:
		if err := want("array"); err != nil {
			return err
		}
		return checkType(v.Items, typ.Elem(), schemaOf)
	case typ.Kind() == reflect.Map && typ.Key().Kind() == reflect.String:
		// A map with string keys is a JSON object whose values the
		// schema's additionalProperties describe.
		if err := want("object"); err != nil {
			return err
		}
		if v.AdditionalProperties.Schema == nil {
			return fmt.Errorf("Go %v needs additionalProperties with the values' schema", typ)
		}
		return checkType(v.AdditionalProperties.Schema, typ.Elem(), schemaOf)
	case typ.Kind() == reflect.Bool:
		return want("boolean")
	case typ.Kind() == reflect.String:
		if err := want("string"); err != nil {
			return err
		}
		if v.Format != "" {
			return fmt.Errorf("format %q on a plain Go string", v.Format)
		}
		return nil
	case typ.Kind() >= reflect.Int && typ.Kind() <= reflect.Int64:
		return want("integer")
	case typ.Kind() >= reflect.Uint && typ.Kind() <= reflect.Uint64:
		if err := want("integer"); err != nil {
			return err
		}
		if v.Min == nil || *v.Min < 0 {
			return fmt.Errorf("unsigned Go %v needs minimum >= 0", typ)
		}
		if v.Format == "int32" || v.Format == "int64" {
			return fmt.Errorf("format %s cannot hold every Go %v", v.Format, typ)
		}
		return nil
	}
	return fmt.Errorf("no rule for Go %v", typ)
}

// exchange is one request to the real handler and the answer wanted.
type exchange struct {
	name    string
	backend *fakeBackend
	deny    bool // put a refusing peer-credential check in front
	method  string
	target  string
	body    string // a JSON request body, if not empty
	status  int
	code    string // the error code wanted, for errors
	// outside is the routers error wanted for requests the document does
	// not describe (unknown routes, wrong methods).
	outside error
	// invalid marks a request to a documented route that breaks the
	// document's rules for it (a required parameter missing, a boolean
	// that is not one): only the answer is validated.
	invalid bool
}

func contractExchanges() []exchange {
	return []exchange{
		{name: "healthz", backend: &fakeBackend{state: notJoined}, method: "GET", target: "/healthz", status: 200},
		{name: "readyz ready", backend: &fakeBackend{state: ready}, method: "GET", target: "/readyz", status: 200},
		{name: "readyz not joined", backend: &fakeBackend{state: notJoined}, method: "GET", target: "/readyz", status: 503},
		{name: "metrics", backend: &fakeBackend{state: ready}, method: "GET", target: "/metrics", status: 200},
		{name: "version", backend: &fakeBackend{state: notJoined}, method: "GET", target: "/v1/version", status: 200},
		{name: "status ready", backend: &fakeBackend{state: ready}, method: "GET", target: "/v1/status", status: 200},
		{name: "status degraded", backend: &fakeBackend{state: degraded}, method: "GET", target: "/v1/status", status: 200},
		{name: "status not joined", backend: &fakeBackend{state: notJoined}, method: "GET", target: "/v1/status", status: 200},
		{name: "status refused", backend: &fakeBackend{state: refused}, method: "GET", target: "/v1/status", status: 200},
		{name: "readyz refused", backend: &fakeBackend{state: refused}, method: "GET", target: "/readyz", status: 200},
		{name: "identity", backend: &fakeBackend{state: ready}, method: "GET", target: "/v1/identity", status: 200},
		{name: "identity not joined", backend: &fakeBackend{state: notJoined}, method: "GET", target: "/v1/identity", status: 503, code: api.CodeNotJoined},
		{name: "known_hosts", backend: &fakeBackend{state: ready}, method: "GET", target: "/v1/ssh/known_hosts", status: 200},
		{name: "known_hosts for hosts", backend: &fakeBackend{state: ready}, method: "GET", target: "/v1/ssh/known_hosts?host=web-01&host=web-01.example.com", status: 200},
		{name: "known_hosts for a pattern", backend: &fakeBackend{state: ready}, method: "GET", target: "/v1/ssh/known_hosts?host=%2A", status: 400, code: api.CodeBadRequest, invalid: true},
		{name: "known_hosts for two lines", backend: &fakeBackend{state: ready}, method: "GET", target: "/v1/ssh/known_hosts?host=a%0A%40cert-authority", status: 400, code: api.CodeBadRequest, invalid: true},
		{name: "ssh nodes", backend: &fakeBackend{state: ready}, method: "GET", target: "/v1/ssh/nodes", status: 200},
		{name: "ssh nodes issuer failed", backend: &fakeBackend{state: ready, nodesErr: errNodes}, method: "GET", target: "/v1/ssh/nodes", status: 502, code: api.CodeIssuerFailed},
		{name: "ssh nodes no certificate", backend: &fakeBackend{state: ready, nodesErr: errNoSSH}, method: "GET", target: "/v1/ssh/nodes", status: 404, code: api.CodeNotFound},
		{name: "ssh nodes not joined", backend: &fakeBackend{state: notJoined}, method: "GET", target: "/v1/ssh/nodes", status: 503, code: api.CodeNotJoined},
		{name: "known_hosts not joined", backend: &fakeBackend{state: notJoined}, method: "GET", target: "/v1/ssh/known_hosts", status: 503, code: api.CodeNotJoined},
		{name: "ssh config", backend: &fakeBackend{state: ready}, method: "GET", target: "/v1/ssh/config?mwictl=%2Fusr%2Flocal%2Fbin%2Fmwictl", status: 200},
		{name: "ssh config default mwictl", backend: &fakeBackend{state: ready}, method: "GET", target: "/v1/ssh/config", status: 200},
		{name: "ssh config not joined", backend: &fakeBackend{state: notJoined}, method: "GET", target: "/v1/ssh/config", status: 503, code: api.CodeNotJoined},
		{name: "renew", backend: &fakeBackend{state: ready}, method: "POST", target: "/v1/renew", status: 200},
		{name: "renew failed", backend: &fakeBackend{state: degraded, renewErr: errRenew}, method: "POST", target: "/v1/renew", status: 502, code: api.CodeRenewFailed},
		{name: "renew not joined", backend: &fakeBackend{state: notJoined}, method: "POST", target: "/v1/renew", status: 503, code: api.CodeNotJoined},
		{name: "reload", backend: &fakeBackend{state: ready}, method: "POST", target: "/v1/reload", status: 200},
		{name: "reload failed", backend: &fakeBackend{state: ready, reloadErr: errReload}, method: "POST", target: "/v1/reload", status: 422, code: api.CodeReloadFailed},
		{name: "reload internal error", backend: &fakeBackend{state: ready, reloadErr: errSecret}, method: "POST", target: "/v1/reload", status: 500, code: api.CodeInternal},
		{name: "unknown route", backend: &fakeBackend{state: ready}, method: "GET", target: "/v1/nope", status: 404, code: api.CodeNotFound, outside: routers.ErrPathNotFound},
		{name: "wrong method", backend: &fakeBackend{state: ready}, method: "POST", target: "/v1/status", status: 405, code: api.CodeBadRequest, outside: routers.ErrMethodNotAllowed},
		{name: "GET on renew", backend: &fakeBackend{state: ready}, method: "GET", target: "/v1/renew", status: 405, code: api.CodeBadRequest, outside: routers.ErrMethodNotAllowed},
		{name: "kubernetes clusters", backend: &fakeBackend{state: ready}, method: "GET", target: "/v1/kubernetes/clusters", status: 200},
		{name: "kubernetes clusters none", backend: &fakeBackend{state: degraded}, method: "GET", target: "/v1/kubernetes/clusters", status: 200},
		{name: "kubernetes clusters not joined", backend: &fakeBackend{state: notJoined}, method: "GET", target: "/v1/kubernetes/clusters", status: 503, code: api.CodeNotJoined},
		{name: "kubeconfig", backend: &fakeBackend{state: ready}, method: "GET", target: "/v1/kubernetes/kubeconfig", status: 200},
		{name: "kubeconfig one cluster", backend: &fakeBackend{state: ready}, method: "GET", target: "/v1/kubernetes/kubeconfig?cluster=prod&mwictl=%2Fusr%2Fbin%2Fmwictl&context_template=%7B%7B.Bot%7D%7D-%7B%7B.Cluster%7D%7D", status: 200},
		{name: "kubeconfig embedded", backend: &fakeBackend{state: ready}, method: "GET", target: "/v1/kubernetes/kubeconfig?embed=true", status: 200},
		{name: "kubeconfig bad template", backend: &fakeBackend{state: ready}, method: "GET", target: "/v1/kubernetes/kubeconfig?context_template=x", status: 400, code: api.CodeBadRequest},
		{name: "kubeconfig unknown cluster", backend: &fakeBackend{state: ready}, method: "GET", target: "/v1/kubernetes/kubeconfig?cluster=nope", status: 404, code: api.CodeNotFound},
		{name: "kubeconfig not joined", backend: &fakeBackend{state: notJoined}, method: "GET", target: "/v1/kubernetes/kubeconfig", status: 503, code: api.CodeNotJoined},
		{name: "kubernetes credential", backend: &fakeBackend{state: ready}, method: "GET", target: "/v1/kubernetes/credential?cluster=prod", status: 200},
		{name: "kubernetes credential unknown cluster", backend: &fakeBackend{state: ready}, method: "GET", target: "/v1/kubernetes/credential?cluster=nope", status: 404, code: api.CodeNotFound},
		{name: "kubernetes credential without cluster", backend: &fakeBackend{state: ready}, method: "GET", target: "/v1/kubernetes/credential", status: 400, code: api.CodeBadRequest, invalid: true},
		{name: "kubeconfig embed not a boolean", backend: &fakeBackend{state: ready}, method: "GET", target: "/v1/kubernetes/kubeconfig?embed=maybe", status: 400, code: api.CodeBadRequest, invalid: true},
		{name: "ssh host outputs", backend: &fakeBackend{state: ready}, method: "GET", target: "/v1/ssh/host_outputs", status: 200},
		{name: "ssh host outputs none", backend: &fakeBackend{state: notJoined}, method: "GET", target: "/v1/ssh/host_outputs", status: 200},
		{name: "ssh refusal", backend: &fakeBackend{state: ready}, method: "POST", target: "/v1/ssh/refusals", status: 204,
			body: `{"login":"root","bot":"deploy","instance":"7f3c9a12","key_id":"bot=deploy instance=7f3c9a12","serial":"42","reason":"bot deploy is locked: stolen"}`},
		{name: "ssh refusal without reason", backend: &fakeBackend{state: ready}, method: "POST", target: "/v1/ssh/refusals", status: 400, code: api.CodeBadRequest,
			body: `{"login":"root"}`, invalid: true},
		{name: "ssh refusal not JSON", backend: &fakeBackend{state: ready}, method: "POST", target: "/v1/ssh/refusals", status: 400, code: api.CodeBadRequest,
			body: `login=root`, invalid: true},
		{name: "kubernetes credential not joined", backend: &fakeBackend{state: notJoined}, method: "GET", target: "/v1/kubernetes/credential?cluster=prod", status: 503, code: api.CodeNotJoined},
	}
}

// requestBodies are valid bodies of the operations that take one, for the
// requests made to every operation.
var requestBodies = map[string]string{
	"POST /v1/ssh/refusals": `{"login":"root","reason":"no role allows it"}`,
}

// TestContractResponses sends requests to every route of the real handler,
// over fake backends, and validates every answer against openapi.yaml.
func TestContractResponses(t *testing.T) {
	doc := loadSpec(t)
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	exchanges := contractExchanges()
	// Every operation answers 403 to a caller the configuration refuses.
	for _, op := range sortedKeys(specOperations(doc)) {
		method, path, _ := strings.Cut(op, " ")
		// A required query parameter is given, so that the request is one
		// the document describes.
		sep := "?"
		for _, p := range specOperations(doc)[op].Parameters {
			if p.Value.In == "query" && p.Value.Required {
				path += sep + p.Value.Name + "=x"
				sep = "&"
			}
		}
		exchanges = append(exchanges, exchange{
			name: "access denied " + op, backend: &fakeBackend{state: ready}, deny: true,
			method: method, target: path, status: 403, code: api.CodeAccessDenied,
			body: requestBodies[op],
		})
	}

	// covered records "METHOD /path status" for every validated answer.
	covered := make(map[string]bool)
	for _, ex := range exchanges {
		t.Run(ex.name, func(t *testing.T) {
			log := newLogger(t)
			m := metrics.New()
			mws := []func(http.Handler) http.Handler{m.Middleware}
			if ex.deny {
				mws = append(mws, denyAll(log))
			}
			h := localapi.Routes(ex.backend, m.Handler(), log, mws...)
			var body io.Reader
			if ex.body != "" {
				body = strings.NewReader(ex.body)
			}
			req := httptest.NewRequest(ex.method, "http://mwid"+ex.target, body)
			if ex.body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			// The handler read the body; the validation reads it again.
			req.Body = io.NopCloser(strings.NewReader(ex.body))
			if rec.Code != ex.status {
				t.Fatalf("%s %s: status %d, want %d; body: %s", ex.method, ex.target, rec.Code, ex.status, rec.Body)
			}
			if ex.code != "" {
				var e api.ErrorBody
				decodeStrict(t, rec.Body.Bytes(), &e)
				if e.Error.Code != ex.code {
					t.Errorf("error code %q, want %q", e.Error.Code, ex.code)
				}
			}

			route, pathParams, err := router.FindRoute(req)
			if ex.outside != nil {
				if !errors.Is(err, ex.outside) {
					t.Fatalf("openapi.yaml: FindRoute(%s %s) = %v, want %v", ex.method, ex.target, err, ex.outside)
				}
				validateOutside(t, doc, rec)
				return
			}
			if err != nil {
				t.Fatalf("openapi.yaml does not describe %s %s: %v", ex.method, ex.target, err)
			}

			in := &openapi3filter.RequestValidationInput{
				Request:    req,
				PathParams: pathParams,
				Route:      route,
				Options:    &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
			}
			if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil && !ex.invalid {
				t.Fatalf("the test's request does not match openapi.yaml: %v", err)
			} else if err == nil && ex.invalid {
				t.Fatalf("the test's request is marked invalid but matches openapi.yaml")
			}
			out := &openapi3filter.ResponseValidationInput{
				RequestValidationInput: in,
				Status:                 rec.Code,
				Header:                 rec.Header(),
				Options:                in.Options,
			}
			out.SetBodyBytes(rec.Body.Bytes())
			if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
				t.Fatalf("%s %s answered %d with a response openapi.yaml does not allow:\n%v\nContent-Type: %s\nbody: %s",
					ex.method, ex.target, rec.Code, err, rec.Header().Get("Content-Type"), rec.Body)
			}

			status := strconv.Itoa(rec.Code)
			if route.Operation.Responses.Value(status) == nil {
				t.Errorf("%s %s answers %d, which openapi.yaml does not list; list it", ex.method, route.Path, rec.Code)
			}
			covered[ex.method+" "+route.Path+" "+status] = true
		})
	}

	// Every documented answer must have been seen, so that the document
	// cannot promise what the handler never does. A 500 needs to be seen
	// once, not on every operation: httpjson.Handler turns every unexpected
	// error into it in one place.
	saw500 := false
	for _, op := range sortedKeys(specOperations(doc)) {
		for status := range specOperations(doc)[op].Responses.Map() {
			if status == "500" {
				saw500 = saw500 || covered[op+" 500"]
				continue
			}
			if !covered[op+" "+status] {
				t.Errorf("openapi.yaml documents %s answering %s, but no exchange produced it", op, status)
			}
		}
	}
	if !saw500 {
		t.Error("no exchange produced a 500")
	}
}

// validateOutside validates an answer to a request that the document does
// not describe (unknown route, wrong method) against its Error schema.
func validateOutside(t *testing.T, doc *openapi3.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var body any
	dec := json.NewDecoder(bytes.NewReader(rec.Body.Bytes()))
	dec.UseNumber()
	if err := dec.Decode(&body); err != nil {
		t.Fatalf("body is not JSON: %v: %s", err, rec.Body)
	}
	if err := doc.Components.Schemas["Error"].Value.VisitJSON(body, openapi3.VisitAsResponse()); err != nil {
		t.Errorf("body does not match the Error schema: %v\nbody: %s", err, rec.Body)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
