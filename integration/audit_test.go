package integration

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mwi-project/mwi/integration/harness"
)

// TestAuditRenewalBytes measures what one renewal adds to the audit log,
// through the real programs, and holds it to the budget of 400 bytes.
func TestAuditRenewalBytes(t *testing.T) {
	t.Parallel()
	iss, d := setup(t, time.Hour, everyRenewal)
	const renewals = 5
	before := fileSize(t, iss.AuditLog)
	for range renewals {
		if out, err := d.Ctl("renew"); err != nil {
			t.Fatalf("mwictl renew: %v\n%s", err, out)
		}
	}
	data, err := os.ReadFile(iss.AuditLog)
	if err != nil {
		t.Fatal(err)
	}
	added := string(data[before:])
	per := len(added) / renewals
	t.Logf("audit bytes per renewal: %d (%d lines for %d renewals)\n%s", per, strings.Count(added, "\n"), renewals, added)
	if per > 400 {
		t.Errorf("a renewal adds %d bytes to the audit log; want at most 400", per)
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

var _ = harness.Build
