package daemon

import (
	"crypto/x509"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/mwi-project/mwi/daemon/identity"
	"github.com/mwi-project/mwi/daemon/renewal"
	"github.com/mwi-project/mwi/internal/logtest"
)

// TestReportNamesJoinOrRenewal checks that a failed attempt is logged as a
// failed join until mwid holds credentials, and as a failed renewal after.
func TestReportNamesJoinOrRenewal(t *testing.T) {
	s, _ := newTestServer(t, newFakeIssuer(t), githubOnboarding, "  []")
	var logs logtest.Buffer
	s.log = slog.New(slog.NewTextHandler(&logs, nil))
	fail := renewal.Attempt{At: time.Now(), Err: errors.New("issuer unreachable"), Failures: 1, Next: time.Now().Add(time.Second)}

	s.report(fail)
	if out := logs.String(); !strings.Contains(out, `msg="join failed"`) || strings.Contains(out, "renewal failed") {
		t.Errorf("a failed first join is logged as:\n%s", out)
	}

	now := time.Now()
	s.creds.Set(&identity.Credentials{Identity: &x509.Certificate{NotBefore: now, NotAfter: now.Add(time.Hour)}})
	before := len(logs.String())
	s.report(fail)
	if out := logs.String()[before:]; !strings.Contains(out, `msg="renewal failed"`) {
		t.Errorf("a failed renewal is logged as:\n%s", out)
	}
}
