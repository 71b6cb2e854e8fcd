package daemon

import (
	"bytes"
	"crypto/x509"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mwi-project/mwi/daemon/identity"
	"github.com/mwi-project/mwi/daemon/renewal"
)

// syncBuffer is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestReportNamesJoinOrRenewal checks that a failed attempt is logged as a
// failed join until mwid holds credentials, and as a failed renewal after.
func TestReportNamesJoinOrRenewal(t *testing.T) {
	s, _ := newTestServer(t, newFakeIssuer(t), githubOnboarding, "  []")
	var logs syncBuffer
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
