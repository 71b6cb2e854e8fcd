package integration

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mwi-project/mwi/integration/harness"
)

const installSystemd = "apt-get install -y systemd"

// units are the systemd units in ../systemd, with the program each starts.
var units = []struct{ file, program string }{
	{"mwid.service", "mwid"},
	{"mwi-issuer.service", "mwi-issuer"},
}

// maxExposure is the highest overall exposure systemd-analyze security may
// give a unit (0 is fully sandboxed, 10 not at all).
const maxExposure = 2.0

// TestSystemdUnitsVerify runs systemd-analyze verify on each unit, with
// ExecStart pointing at the programs just built instead of /usr/bin, where
// the units expect them installed. verify exits 0 even for unknown keys and
// values it cannot parse, so any output at all is a failure.
func TestSystemdUnitsVerify(t *testing.T) {
	t.Parallel()
	analyze := harness.Require(t, "systemd-analyze", installSystemd)
	bins := harness.Build(t)
	binDir := filepath.Dir(bins.Daemon)
	dir := t.TempDir()
	for _, u := range units {
		t.Run(u.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("..", "systemd", u.file))
			if err != nil {
				t.Fatal(err)
			}
			installed := "/usr/bin/" + u.program
			exec := regexp.MustCompile(`(?m)^ExecStart=` + regexp.QuoteMeta(installed) + `( |$)`)
			if !exec.Match(data) {
				t.Fatalf("%s: no ExecStart=%s", u.file, installed)
			}
			unit := exec.ReplaceAllString(string(data), "ExecStart="+filepath.Join(binDir, u.program)+"$1")
			path := filepath.Join(dir, u.file)
			if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := harness.Run(context.Background(), time.Minute, nil, analyze, "verify", "--man=no", path)
			if err != nil || out != "" {
				t.Errorf("systemd-analyze verify %s: %v\n%s", u.file, err, out)
			}
		})
	}

	// The check above means something only if verify does complain about
	// a broken unit.
	t.Run("a broken unit is caught", func(t *testing.T) {
		path := filepath.Join(dir, "broken.service")
		unit := "[Service]\nType=notify\nExecStart=" + bins.Daemon + "\nProtectSystem=everything\nNoSuchSetting=yes\n"
		if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
			t.Fatal(err)
		}
		out, _ := harness.Run(context.Background(), time.Minute, nil, analyze, "verify", "--man=no", path)
		if !strings.Contains(out, "NoSuchSetting") || !strings.Contains(out, "everything") {
			t.Errorf("systemd-analyze verify said nothing about a broken unit:\n%s", out)
		}
	})
}

var exposureLine = regexp.MustCompile(`Overall exposure level for \S+: ([0-9]+(?:\.[0-9]+)?)`)

// TestSystemdUnitsSecurity fails when systemd-analyze security rates a
// unit's exposure above maxExposure.
func TestSystemdUnitsSecurity(t *testing.T) {
	t.Parallel()
	analyze := harness.Require(t, "systemd-analyze", installSystemd)
	for _, u := range units {
		t.Run(u.file, func(t *testing.T) {
			path := filepath.Join("..", "systemd", u.file)
			out, err := harness.Run(context.Background(), time.Minute, []string{"SYSTEMD_COLORS=0"},
				analyze, "security", "--offline=yes", "--no-pager", path)
			if err != nil {
				t.Fatalf("systemd-analyze security %s: %v\n%s", u.file, err, out)
			}
			m := exposureLine.FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("no overall exposure level in:\n%s", out)
			}
			score, err := strconv.ParseFloat(m[1], 64)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: overall exposure %.1f", u.file, score)
			if score > maxExposure {
				t.Errorf("%s: exposure %.1f is above %.1f:\n%s", u.file, score, maxExposure, out)
			}
		})
	}
}

// TestJoinTokenFromCredentialsDirectory runs mwid as systemd would with
// LoadCredential=join-token:...: the token is a file in
// $CREDENTIALS_DIRECTORY, and the configuration says credential: join-token.
func TestJoinTokenFromCredentialsDirectory(t *testing.T) {
	t.Parallel()
	iss := harness.StartIssuer(t, resources(harness.CurrentUser(t)))

	t.Run("joins", func(t *testing.T) {
		creds := t.TempDir()
		token := iss.CreateToken(t, "ci", time.Hour)
		// systemd writes the credential read-only, with a newline if the
		// source file had one.
		if err := os.WriteFile(filepath.Join(creds, "join-token"), []byte(token+"\n"), 0o400); err != nil {
			t.Fatal(err)
		}
		d := harness.StartDaemon(t, iss, harness.DaemonOptions{
			Token:       "not-the-token", // in MWI_TOKEN, which this configuration does not read
			TokenConfig: "credential: join-token",
			Env:         []string{"CREDENTIALS_DIRECTORY=" + creds},
		})
		st := d.WaitState(t, "ready", 20*time.Second)
		if st.Bot != "ci" {
			t.Errorf("joined as bot %q, want ci", st.Bot)
		}
		if ev := iss.FindAudit(t, map[string]any{"event": "join", "outcome": "allowed", "bot": "ci"}); ev == nil {
			t.Errorf("no audit line for the join")
		}
	})

	t.Run("not under systemd", func(t *testing.T) {
		d := harness.StartDaemon(t, iss, harness.DaemonOptions{
			Token:       iss.CreateToken(t, "ci", time.Hour),
			TokenConfig: "credential: join-token",
			Env:         []string{"CREDENTIALS_DIRECTORY="},
		})
		st := d.WaitError(t, "$CREDENTIALS_DIRECTORY is not set", 20*time.Second)
		if st.Joined {
			t.Error("joined without its credential")
		}
	})

	t.Run("credential missing", func(t *testing.T) {
		d := harness.StartDaemon(t, iss, harness.DaemonOptions{
			Token:       iss.CreateToken(t, "ci", time.Hour),
			TokenConfig: "credential: join-token",
			Env:         []string{"CREDENTIALS_DIRECTORY=" + t.TempDir()},
		})
		st := d.WaitError(t, "credential join-token", 20*time.Second)
		if st.Joined || !strings.Contains(st.LastError, "no such file") {
			t.Errorf("status joined=%v error %q; want not joined, naming the missing file", st.Joined, st.LastError)
		}
	})
}
