package integration

import (
	"context"
	"net"
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
			unit := installedAt(t, u.file, string(data), u.program, binDir)
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

	// Each documented drop-in, alone with its unit: verify reads the
	// drop-ins in UNIT.d/ beside the unit it is given.
	dropIns, err := filepath.Glob(filepath.Join("..", "systemd", "examples", "*.service.d", "*.conf"))
	if err != nil || len(dropIns) == 0 {
		t.Fatalf("no drop-ins in ../systemd/examples/*.service.d: %v", err)
	}
	for _, d := range dropIns {
		unitFile := strings.TrimSuffix(filepath.Base(filepath.Dir(d)), ".d")
		t.Run(unitFile+"/"+filepath.Base(d), func(t *testing.T) {
			dir := t.TempDir()
			data, err := os.ReadFile(filepath.Join("..", "systemd", unitFile))
			if err != nil {
				t.Fatal(err)
			}
			program := strings.TrimSuffix(unitFile, ".service")
			path := filepath.Join(dir, unitFile)
			if err := os.WriteFile(path, []byte(installedAt(t, unitFile, string(data), program, binDir)), 0o644); err != nil {
				t.Fatal(err)
			}
			conf, err := os.ReadFile(d)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(path+".d", 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(path+".d", filepath.Base(d)), conf, 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := harness.Run(context.Background(), time.Minute, nil, analyze, "verify", "--man=no", path)
			if err != nil || out != "" {
				t.Errorf("systemd-analyze verify %s with %s: %v\n%s", unitFile, d, err, out)
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

// installedAt returns the unit data of file with each command line that
// runs /usr/bin/program, where the unit expects it installed, running it
// from binDir instead: verify checks that the programs exist.
func installedAt(t *testing.T, file, data, program, binDir string) string {
	t.Helper()
	installed := "/usr/bin/" + program
	exec := regexp.MustCompile(`(?m)^(Exec[A-Za-z]*)=` + regexp.QuoteMeta(installed) + `( |$)`)
	if !regexp.MustCompile(`(?m)^ExecStart=` + regexp.QuoteMeta(installed) + `( |$)`).MatchString(data) {
		t.Fatalf("%s: no ExecStart=%s", file, installed)
	}
	return exec.ReplaceAllString(data, "${1}="+filepath.Join(binDir, program)+"$2")
}

var exposureLine = regexp.MustCompile(`Overall exposure level for \S+: ([0-9]+(?:\.[0-9]+)?)`)

// TestSystemdUnitsSecurity fails when systemd-analyze security rates a
// unit's exposure above maxExposure.
func TestSystemdUnitsSecurity(t *testing.T) {
	t.Parallel()
	analyze := harness.Require(t, "systemd-analyze", installSystemd)
	for _, u := range units {
		t.Run(u.file, func(t *testing.T) {
			// The unit alone: systemd-analyze would apply the drop-ins of a
			// UNIT.d directory beside it.
			data, err := os.ReadFile(filepath.Join("..", "systemd", u.file))
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), u.file)
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
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

// unitLines returns the values of every line of the unit file that sets
// key, in order.
func unitLines(t *testing.T, file, key string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "systemd", file))
	if err != nil {
		t.Fatal(err)
	}
	var values []string
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, key+"="); ok {
			values = append(values, v)
		}
	}
	return values
}

// TestMwidUnitSkipsWithoutConfig: mwid.service starts only once its
// configuration exists, and then whatever else is missing: no credential
// (which systemd would fail the unit for when its file is missing; they go
// in drop-ins) and no other condition.
func TestMwidUnitSkipsWithoutConfig(t *testing.T) {
	t.Parallel()
	analyze := harness.Require(t, "systemd-analyze", installSystemd)
	const config = "/etc/mwi/mwid.yaml"
	if got := unitLines(t, "mwid.service", "ExecStart"); len(got) != 1 || !strings.Contains(got[0], " -c "+config) {
		t.Fatalf("mwid.service: ExecStart %q; want one, reading %s", got, config)
	}
	for _, key := range []string{"LoadCredential", "LoadCredentialEncrypted", "SetCredential", "SetCredentialEncrypted", "EnvironmentFile"} {
		if got := unitLines(t, "mwid.service", key); len(got) > 0 {
			t.Errorf("mwid.service: %s=%s: a file only some setups have; put it in a drop-in", key, got[0])
		}
	}

	// Every condition of the unit, with the configuration's path moved
	// into a temporary directory: all fail without the file, none with it.
	var conds []string
	data, err := os.ReadFile(filepath.Join("..", "systemd", "mwid.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "Condition") || strings.HasPrefix(line, "Assert") {
			conds = append(conds, line)
		}
	}
	if len(conds) == 0 {
		t.Fatal("mwid.service has no Condition line: without a configuration it would fail and restart")
	}
	path := filepath.Join(t.TempDir(), "mwid.yaml")
	for _, c := range conds {
		if strings.HasPrefix(c, "Assert") {
			t.Errorf("mwid.service: %s: an assertion fails the unit; a condition skips it", c)
		}
		if !strings.Contains(c, config) {
			t.Errorf("mwid.service: %s: a condition on something other than %s", c, config)
		}
	}
	check := func(want bool) {
		t.Helper()
		args := []string{analyze, "condition"}
		for _, c := range conds {
			args = append(args, strings.ReplaceAll(c, config, path))
		}
		out, err := harness.Run(context.Background(), time.Minute, []string{"SYSTEMD_COLORS=0"}, args...)
		if got := err == nil && strings.Contains(out, "Conditions succeeded"); got != want {
			t.Errorf("conditions with the configuration present=%v: %v\n%s", want, err, out)
		}
	}
	check(false)
	if err := os.WriteFile(path, []byte("version: v1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	check(true)
}

// TestIssuerUnitFirstStart runs mwi-issuer.service's own command lines, as
// systemd would on the first start and on the next: ExecStartPre makes the
// authorities in the empty directory StateDirectory= makes, ExecStart
// serves from it, and the second ExecStartPre leaves it as it is.
func TestIssuerUnitFirstStart(t *testing.T) {
	t.Parallel()
	bins := harness.Build(t)
	const state = "/var/lib/mwi-issuer"
	dir := t.TempDir()
	stateDir := filepath.Join(dir, "state")
	if err := os.Mkdir(stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	port := harness.FreePort(t)
	argv := func(line string) []string {
		args := strings.Fields(line)
		if args[0] != "/usr/bin/mwi-issuer" {
			t.Fatalf("mwi-issuer.service runs %s", args[0])
		}
		args[0] = bins.Issuer
		for i, a := range args {
			switch {
			case a == state:
				args[i] = stateDir
			case i > 0 && args[i-1] == "--listen":
				args[i] = "127.0.0.1:" + strconv.Itoa(port)
			}
		}
		return args
	}
	pre := unitLines(t, "mwi-issuer.service", "ExecStartPre")
	start := unitLines(t, "mwi-issuer.service", "ExecStart")
	if len(pre) != 1 || len(start) != 1 || !strings.Contains(pre[0], " --state "+state) || !strings.Contains(start[0], " --state "+state) {
		t.Fatalf("mwi-issuer.service: ExecStartPre %q, ExecStart %q; want one each, on %s", pre, start, state)
	}
	if dirs := unitLines(t, "mwi-issuer.service", "StateDirectory"); len(dirs) != 1 || "/var/lib/"+dirs[0] != state {
		t.Fatalf("mwi-issuer.service: StateDirectory=%q; want %s", dirs, state)
	}

	out, err := harness.Run(context.Background(), time.Minute, nil, argv(pre[0])...)
	if err != nil || !strings.Contains(out, "initialised issuer in "+stateDir) || !strings.Contains(out, "ca_pin: sha256:") {
		t.Fatalf("first ExecStartPre: %v\n%s", err, out)
	}
	iss := harness.Start(t, dir, "mwi-issuer", nil, argv(start[0])...)
	harness.Eventually(t, 20*time.Second, "the issuer listens", func() error {
		if iss.Exited() {
			t.Fatalf("mwi-issuer serve exited:\n%s", iss.Output())
		}
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			c.Close()
		}
		return err
	})
	iss.Stop(t)

	out, err = harness.Run(context.Background(), time.Minute, nil, argv(pre[0])...)
	if err != nil || !strings.Contains(out, "already holds an issuer") {
		t.Errorf("second ExecStartPre: %v\n%s", err, out)
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

// TestSysusersSocketGroup: the sysusers.d file makes, as a system group,
// the group mwid.service runs as, so that its sockets are made with it.
func TestSysusersSocketGroup(t *testing.T) {
	t.Parallel()
	sysusers := harness.Require(t, "systemd-sysusers", installSystemd)
	groups := unitLines(t, "mwid.service", "Group")
	if len(groups) != 1 {
		t.Fatalf("mwid.service: Group=%q; want one", groups)
	}
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	conf, err := filepath.Abs(filepath.Join("..", "systemd", "mwi.sysusers.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if out, err := harness.Run(context.Background(), time.Minute, nil, sysusers, "--root="+root, conf); err != nil {
		t.Fatalf("systemd-sysusers: %v\n%s", err, out)
	}
	data, err := os.ReadFile(filepath.Join(root, "etc", "group"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(line, ":")
		if len(f) == 4 && f[0] == groups[0] {
			// A system group: below the first regular id (1000 by default).
			if gid, err := strconv.Atoi(f[2]); err != nil || gid >= 1000 {
				t.Errorf("group %s has gid %s, not a system group's", f[0], f[2])
			}
			return
		}
	}
	t.Errorf("systemd-sysusers made no group %s:\n%s", groups[0], data)
}
