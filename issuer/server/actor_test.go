package server

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/mwi-project/mwi/api"
)

// adminCalls are admin requests whose audit records the authority writes,
// not the server: tokens and locks, allowed and denied.
var adminCalls = []struct {
	path string
	req  any
}{
	{"/admin/v1/tokens", api.CreateTokenRequest{Bot: "ci", TTLSeconds: 600}},
	{"/admin/v1/tokens", api.CreateTokenRequest{Bot: "nobody", TTLSeconds: 600}},
	{"/admin/v1/locks", api.LockRequest{LockTarget: api.LockTarget{Bot: "ci"}, Reason: "stop"}},
	{"/admin/v1/locks/remove", api.LockTarget{Bot: "ci"}},
	{"/admin/v1/locks", api.LockRequest{LockTarget: api.LockTarget{Bot: "ci"}}},
	{"/admin/v1/instances/feedface/unlock", struct{}{}},
}

// auditRecords decodes the audit log, which must hold n records.
func auditRecords(t *testing.T, log string, n int) []map[string]any {
	t.Helper()
	var recs []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(log), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("audit line %q: %v", l, err)
		}
		recs = append(recs, m)
	}
	if len(recs) != n {
		t.Fatalf("%d audit records, want %d:\n%s", len(recs), n, log)
	}
	return recs
}

// TestAdminActorOnEveryRecord makes admin requests whose records the
// authority writes (token.create and the locks, which did not name the
// caller) and checks that each names it: the uid and pid on the admin
// socket, the admin identity's name over the network.
func TestAdminActorOnEveryRecord(t *testing.T) {
	t.Run("admin socket", func(t *testing.T) {
		auth, auditLog := testAuthority(t)
		c := unixServer(t, adminRoutes(auth, nil, auth.Audit, discardLog()))
		for _, call := range adminCalls {
			if _, body, err := post(t, c, "http://mwi"+call.path, call.req); err != nil {
				t.Fatalf("%s: %v %s", call.path, err, body)
			}
		}
		for _, r := range auditRecords(t, auditLog.String(), len(adminCalls)) {
			if r["uid"] != float64(os.Geteuid()) || r["pid"] != float64(os.Getpid()) || r["admin"] != nil {
				t.Errorf("record %v does not name the caller by uid %d and pid %d", r, os.Geteuid(), os.Getpid())
			}
		}
	})
	t.Run("admin identity", func(t *testing.T) {
		auth, auditLog := testAuthority(t)
		h := adminAPI(auth, nil, auth.Audit, discardLog())
		for _, call := range adminCalls {
			data, _ := json.Marshal(call.req)
			r := httptest.NewRequest(http.MethodPost, call.path, bytes.NewReader(data))
			// As adminCertOnly admits an admin identity.
			h.ServeHTTP(httptest.NewRecorder(), r.WithContext(withAdmin(r.Context(), "alice")))
		}
		for _, r := range auditRecords(t, auditLog.String(), len(adminCalls)) {
			if r["admin"] != "alice" || r["uid"] != nil {
				t.Errorf("record %v does not name the admin alice", r)
			}
		}
	})
}
