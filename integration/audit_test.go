package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mwi-project/mwi/integration/harness"
)

// TestAuditRenewalBytes measures what one renewal adds to the audit log,
// through the real programs, and holds it to the budget of 400 bytes: one
// line naming the certificates issued.
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
	for _, l := range strings.Split(strings.TrimSpace(added), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatal(err)
		}
		if rec["code"] != "MWI1003I" || rec["cluster"] != "mwi" || rec["id"] == nil || rec["bot"] != "ci" ||
			rec["identity_serial"] == nil || rec["ssh_serial"] == nil {
			t.Errorf("renewal record = %s", l)
		}
	}
}

// TestAuditLogrotate renames the audit log while renewals go on and sends
// the issuer SIGHUP, as logrotate without copytruncate does: every
// renewal's record is in one of the two files, whole, and audit search
// reads them both back.
func TestAuditLogrotate(t *testing.T) {
	t.Parallel()
	iss, d := setup(t, time.Hour, everyRenewal)
	var renewed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if out, err := d.Ctl("renew"); err != nil {
				t.Errorf("mwictl renew: %v\n%s", err, out)
				return
			}
			renewed.Add(1)
		}
	}()
	harness.Eventually(t, 20*time.Second, "renewals before the rotation", func() error {
		if renewed.Load() < 5 {
			return errors.New("not yet")
		}
		return nil
	})
	if err := os.Rename(iss.AuditLog, iss.AuditLog+".1"); err != nil {
		t.Fatal(err)
	}
	if err := iss.Proc.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// The issuer makes a new file, and the renewals go on into it.
	harness.Eventually(t, 20*time.Second, "renewal records in the new file", func() error {
		if fi, err := os.Stat(iss.AuditLog); err != nil || fi.Size() < 1000 {
			return errors.New("not yet")
		}
		return nil
	})
	close(stop)
	wg.Wait()

	ids := map[string]bool{}
	renewals := 0
	for _, name := range []string{iss.AuditLog + ".1", iss.AuditLog} {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var rec map[string]any
			if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
				t.Errorf("%s: line is not a record: %v: %s", name, err, sc.Text())
				continue
			}
			id, _ := rec["id"].(string)
			if id == "" || ids[id] {
				t.Errorf("record id %q missing or repeated", id)
			}
			ids[id] = true
			if rec["event"] == "renew" && rec["outcome"] == "allowed" {
				renewals++
			}
		}
		f.Close()
	}
	if n := int(renewed.Load()); renewals != n {
		t.Errorf("%d renewal records in the two files, want one for each of the %d renewals", renewals, n)
	}
	if fi, err := os.Stat(iss.AuditLog); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("new audit log: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	t.Logf("%d renewals, %d records across the rotation", renewed.Load(), len(ids))

	out, err := harness.Run(t.Context(), 30*time.Second, nil, iss.Bins.Issuer, "audit", "search", "--state", iss.State,
		"--since", "1h", "--event", "renew", "--outcome", "allowed", "--bot", "ci", "--format", "json")
	if err != nil {
		t.Fatalf("audit search: %v\n%s", err, out)
	}
	// (harness.Run trims the output's last newline.)
	if got := len(strings.Split(strings.TrimSpace(out), "\n")); got != renewals {
		t.Errorf("audit search found %d renewals, want %d:\n%s", got, renewals, out)
	}
	out, err = harness.Run(t.Context(), 30*time.Second, nil, iss.Bins.Issuer, "audit", "search", "--state", iss.State,
		"--event", "join", "--outcome", "denied")
	if err != nil || !strings.Contains(out, "no audit records match") {
		t.Errorf("audit search for denied joins: %v\n%s", err, out)
	}
}

// TestAuditSearchForgedLines sends joins whose join_method, which anyone
// can set and which the refusal records, holds a newline, a carriage
// return and a terminal's control sequence followed by text that reads as
// an allowed join: audit search's text prints one line for each record
// with the value quoted, and no control character reaches the terminal.
func TestAuditSearchForgedLines(t *testing.T) {
	t.Parallel()
	iss := harness.StartIssuer(t, resources(harness.CurrentUser(t)))
	forged := "2026-01-01T00:00:00.000000Z MWI1001I join allowed bot=admin"
	methods := []string{"x\n" + forged, "x\r" + forged, "x\x1b[2K\x1b[1G" + forged, "x\u2028" + forged}
	c := issuerHTTP(t, iss)
	for _, m := range methods {
		body, _ := json.Marshal(map[string]any{"join_method": m, "ttl_seconds": 600})
		res, err := c.Post("https://"+iss.Addr+"/v1/join", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusBadRequest {
			t.Errorf("join with method %q: %s, want 400", m, res.Status)
		}
	}
	out, err := harness.Run(t.Context(), 30*time.Second, nil, iss.Bins.Issuer, "audit", "search", "--state", iss.State, "--event", "join")
	if err != nil {
		t.Fatalf("audit search: %v\n%s", err, out)
	}
	lines := strings.Split(out, "\n")
	if len(lines) != len(methods) {
		t.Fatalf("audit search printed %d lines for %d refused joins:\n%s", len(lines), len(methods), out)
	}
	for i, l := range lines {
		if strings.Contains(l, "MWI1001I") && !strings.Contains(l, `join_method="x`) {
			t.Errorf("line %d passes for an allowed join: %q", i, l)
		}
		if strings.ContainsFunc(l, func(r rune) bool { return r < ' ' || r == 0x7f || r == '\u2028' }) {
			t.Errorf("line %d holds a control character: %q", i, l)
		}
	}
}

// TestAuditReopenRefusesPlantedLink renames the audit log as logrotate
// does and, before the SIGHUP, puts a symbolic link to another file at
// its path, then a FIFO: the real issuer refuses each on reopen, logs
// why, and goes on recording in the renamed file, neither hanging nor
// writing through the link.
func TestAuditReopenRefusesPlantedLink(t *testing.T) {
	t.Parallel()
	iss := harness.StartIssuer(t, resources(harness.CurrentUser(t)))
	c := issuerHTTP(t, iss)
	refuse := func(method string) {
		t.Helper()
		body, _ := json.Marshal(map[string]any{"join_method": method, "ttl_seconds": 600})
		res, err := c.Post("https://"+iss.Addr+"/v1/join", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
	}
	target := filepath.Join(iss.Dir, "elsewhere")
	if err := os.WriteFile(target, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	refuse("before")
	if err := os.Rename(iss.AuditLog, iss.AuditLog+".1"); err != nil {
		t.Fatal(err)
	}
	for i, plant := range []func() error{
		func() error { return os.Symlink(target, iss.AuditLog) },
		func() error { os.Remove(iss.AuditLog); return syscall.Mkfifo(iss.AuditLog, 0o666) },
	} {
		if err := plant(); err != nil {
			t.Fatal(err)
		}
		if err := iss.Proc.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		want := []string{"is a symbolic link now", "is a FIFO without a reader"}[i]
		harness.Eventually(t, 20*time.Second, "the refused reopen logged", func() error {
			if !strings.Contains(iss.Proc.Output(), want) {
				return errors.New("not yet")
			}
			return nil
		})
		refuse(fmt.Sprintf("after-%d", i))
	}
	if data, _ := os.ReadFile(target); len(data) > 0 {
		t.Errorf("the issuer wrote through the planted link: %s", data)
	}
	data, err := os.ReadFile(iss.AuditLog + ".1")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"before", "after-0", "after-1"} {
		if !strings.Contains(string(data), `"join_method":"`+m+`"`) {
			t.Errorf("the renamed log lacks the refusal %s:\n%s", m, data)
		}
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
