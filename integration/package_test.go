package integration

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/integration/harness"
)

// The packages make package builds, and where their files go in each
// format. The README's "Install from packages" table lists the .deb's.
var packages = []struct {
	name      string
	conffiles []string
	// files besides those of the README's table, in the .rpm's places
	// where they differ from the .deb's.
	debOnly, rpmOnly []string
}{
	{
		name:      "mwid",
		conffiles: []string{"/etc/mwi/mwid.yaml.sample"},
		debOnly:   []string{"/lib/systemd/system/mwid.service", "/usr/share/zsh/vendor-completions/_mwictl", "/usr/share/lintian/overrides/mwid"},
		rpmOnly:   []string{"/usr/lib/systemd/system/mwid.service", "/usr/share/zsh/site-functions/_mwictl"},
	},
	{
		name:      "mwi-issuer",
		conffiles: []string{"/etc/mwi/issuer-resources.yaml.sample"},
		debOnly:   []string{"/lib/systemd/system/mwi-issuer.service", "/usr/share/zsh/vendor-completions/_mwi-issuer", "/usr/share/lintian/overrides/mwi-issuer"},
		rpmOnly:   []string{"/usr/lib/systemd/system/mwi-issuer.service", "/usr/share/zsh/site-functions/_mwi-issuer"},
	},
}

// packageDir returns the directory make package wrote the packages into
// (MWI_PACKAGE_DIR, which the Makefile sets), or skips the test without
// it; with MWI_REQUIRE_INTEGRATION=1 it fails instead.
func packageDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("MWI_PACKAGE_DIR")
	if dir == "" {
		if os.Getenv("MWI_REQUIRE_INTEGRATION") == "1" {
			t.Fatal("MWI_PACKAGE_DIR is not set: run make package, or the tests through make test (MWI_REQUIRE_INTEGRATION=1)")
		}
		t.Skip("MWI_PACKAGE_DIR is not set: run make package, or the tests through make test")
	}
	return dir
}

// packageFile returns the one file of the package name in format (deb or
// rpm) in dir.
func packageFile(t *testing.T, dir, name, format string) string {
	t.Helper()
	pattern := map[string]string{"deb": name + "_*.deb", "rpm": name + "-[0-9]*.rpm"}[format]
	found, err := filepath.Glob(filepath.Join(dir, pattern))
	if err != nil || len(found) != 1 {
		t.Fatalf("%s in %s: found %q (%v); want one (make package)", pattern, dir, found, err)
	}
	return found[0]
}

// builtVersion returns the version and commit of the programs in the
// packages, as --version prints them after the program's name.
func builtVersion(t *testing.T, dir string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	v, ok := strings.CutPrefix(strings.TrimSpace(string(data)), "mwid ")
	if !ok || !strings.Contains(v, " (commit ") {
		t.Fatalf("%s/VERSION: %q; want mwid --version's line", dir, data)
	}
	return v
}

// readmePaths returns the paths of the README's "Install from packages"
// table, by package.
func readmePaths(t *testing.T) map[string][]string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	row := regexp.MustCompile("^\\| `(/[^`]+)` \\| ([a-z-]+) \\|")
	paths := map[string][]string{}
	in := false
	for sc := bufio.NewScanner(f); sc.Scan(); {
		line := sc.Text()
		if strings.HasPrefix(line, "## ") {
			in = line == "## Install from packages"
			continue
		}
		if m := row.FindStringSubmatch(line); in && m != nil {
			paths[m[2]] = append(paths[m[2]], m[1])
		}
	}
	if len(paths) == 0 {
		t.Fatal(`README.md: no table of paths under "## Install from packages"`)
	}
	return paths
}

// debFiles returns the files (not directories) of a .deb, as absolute
// paths.
func debFiles(t *testing.T, dpkgDeb, deb string) []string {
	t.Helper()
	cmd := exec.Command("sh", "-c", `"$0" --fsys-tarfile "$1" | tar -t`, dpkgDeb, deb)
	list, err := cmd.Output()
	if err != nil {
		t.Fatalf("listing %s: %v", deb, err)
	}
	var files []string
	for _, p := range strings.Split(strings.TrimSpace(string(list)), "\n") {
		if !strings.HasSuffix(p, "/") {
			files = append(files, strings.TrimPrefix(p, "."))
		}
	}
	return files
}

// TestPackageFiles checks what make package put in each package: the
// README's files and the per-format ones in both formats (dpkg-deb, rpm
// -qlp), the conffiles (the .deb's control file, rpm -qcp), the version,
// and the libc6 dependency.
func TestPackageFiles(t *testing.T) {
	t.Parallel()
	dir := packageDir(t)
	dpkgDeb := harness.Require(t, "dpkg-deb", "apt-get install -y dpkg")
	rpm := harness.Require(t, "rpm", "apt-get install -y --no-install-recommends rpm")
	readme := readmePaths(t)
	version := builtVersion(t, dir)
	out, err := harness.Run(context.Background(), time.Minute, nil, filepath.Join("..", "packaging", "version.sh"), strings.Fields(version)[0])
	if err != nil {
		t.Fatalf("packaging/version.sh: %v\n%s", err, out)
	}
	pkgVersion := out + "-1"

	for _, p := range packages {
		t.Run(p.name+".deb", func(t *testing.T) {
			deb := packageFile(t, dir, p.name, "deb")
			files := debFiles(t, dpkgDeb, deb)
			for _, want := range append(slices.Clone(readme[p.name]), p.debOnly...) {
				if !slices.Contains(files, want) {
					t.Errorf("%s has no %s", filepath.Base(deb), want)
				}
			}
			ctrl := func(field string) string {
				out, err := harness.Run(context.Background(), time.Minute, nil, dpkgDeb, "--field", deb, field)
				if err != nil {
					t.Fatalf("dpkg-deb --field %s: %v\n%s", field, err, out)
				}
				return out
			}
			if got := ctrl("Version"); got != pkgVersion {
				t.Errorf("Version: %s; want %s (packaging/version.sh of %q)", got, pkgVersion, version)
			}
			if got := ctrl("Depends"); !regexp.MustCompile(`(^|, )libc6 \(>= 2\.[0-9]+\)`).MatchString(got) {
				t.Errorf("Depends: %s; want libc6 (>= VERSION)", got)
			}
			cmd := exec.Command("sh", "-c", `"$0" --ctrl-tarfile "$1" | tar -xO ./conffiles`, dpkgDeb, deb)
			conf, err := cmd.Output()
			if err != nil {
				t.Fatalf("conffiles of %s: %v", deb, err)
			}
			if got := strings.Fields(string(conf)); !slices.Equal(got, p.conffiles) {
				t.Errorf("conffiles: %q; want %q", got, p.conffiles)
			}
			// Debian's conventions, as debhelper writes them: systemctl
			// only to reload systemd's configuration, deb-systemd-helper
			// for enabling, deb-systemd-invoke for the rest, and nothing
			// started on install.
			for _, script := range []string{"postinst", "prerm", "postrm"} {
				cmd := exec.Command("sh", "-c", `"$0" --ctrl-tarfile "$1" | tar -xO ./"$2"`, dpkgDeb, deb, script)
				data, err := cmd.Output()
				if err != nil {
					t.Fatalf("%s of %s: %v", script, deb, err)
				}
				for i, line := range strings.Split(string(data), "\n") {
					code, _, _ := strings.Cut(line, "#")
					if m := regexp.MustCompile(`\bsystemctl\b(.*)`).FindStringSubmatch(code); m != nil && !strings.Contains(m[1], "daemon-reload") {
						t.Errorf("%s:%d: %q: systemctl where deb-systemd-helper or deb-systemd-invoke belongs", script, i+1, line)
					}
					if regexp.MustCompile(`\b(start|restart|reload-or-restart)\b`).MatchString(code) && !strings.Contains(code, "try-restart") {
						t.Errorf("%s:%d: %q: the package starts nothing", script, i+1, line)
					}
				}
			}
			// Every file in /etc is a conffile: dpkg would otherwise
			// replace an administrator's edits on upgrade.
			for _, f := range files {
				if strings.HasPrefix(f, "/etc/") && !slices.Contains(p.conffiles, f) {
					t.Errorf("%s is in /etc but not a conffile", f)
				}
			}
		})

		t.Run(p.name+".rpm", func(t *testing.T) {
			pkg := packageFile(t, dir, p.name, "rpm")
			out, err := harness.Run(context.Background(), time.Minute, nil, rpm, "-qlp", pkg)
			if err != nil {
				t.Fatalf("rpm -qlp: %v\n%s", err, out)
			}
			files := strings.Split(out, "\n")
			for _, want := range append(slices.Clone(readme[p.name]), p.rpmOnly...) {
				if strings.HasPrefix(want, "/lib/systemd/") || strings.HasPrefix(want, "/usr/share/doc/") && strings.HasSuffix(want, "/changelog.Debian.gz") {
					continue // the .rpm's are in rpmOnly, or in its header
				}
				if !slices.Contains(files, want) {
					t.Errorf("%s has no %s", filepath.Base(pkg), want)
				}
			}
			out, err = harness.Run(context.Background(), time.Minute, nil, rpm, "-qcp", pkg)
			if err != nil {
				t.Fatalf("rpm -qcp: %v\n%s", err, out)
			}
			if got := strings.Fields(out); !slices.Equal(got, p.conffiles) {
				t.Errorf("rpm -qcp: %q; want %q", got, p.conffiles)
			}
			out, err = harness.Run(context.Background(), time.Minute, nil, rpm, "-qp", "--queryformat", "%{VERSION}-%{RELEASE}", pkg)
			if err != nil || out != pkgVersion {
				t.Errorf("rpm version %q (%v); want %s", out, err, pkgVersion)
			}
			if out, err := harness.Run(context.Background(), time.Minute, nil, rpm, "-qp", "--changelog", pkg); err != nil || !strings.Contains(out, "First packages") {
				t.Errorf("rpm --changelog: %v\n%s", err, out)
			}
		})
	}
}

// TestPackageLintian runs lintian on the .debs: no error or warning, and
// nothing but informational tags, may remain that packaging/lintian does
// not override, and each override there says why above it.
func TestPackageLintian(t *testing.T) {
	t.Parallel()
	dir := packageDir(t)
	lintian := harness.Require(t, "lintian", "apt-get install -y --no-install-recommends lintian")
	var debs []string
	for _, p := range packages {
		debs = append(debs, packageFile(t, dir, p.name, "deb"))

		data, err := os.ReadFile(filepath.Join("..", "packaging", "lintian", p.name))
		if err != nil {
			t.Fatal(err)
		}
		reason := false
		for i, line := range strings.Split(string(data), "\n") {
			switch {
			case strings.HasPrefix(line, "#"):
				reason = true
			case strings.TrimSpace(line) == "":
				// A blank line ends nothing: the reason may sit a line above.
			default:
				if !strings.HasPrefix(line, p.name+": ") {
					t.Errorf("packaging/lintian/%s:%d: %q does not name the package", p.name, i+1, line)
				}
				if !reason {
					t.Errorf("packaging/lintian/%s:%d: %q has no reason in a comment above it", p.name, i+1, line)
				}
				reason = false
			}
		}
	}
	// --pedantic -I: every tag, so that an override no longer needed
	// (unused-override) is reported too.
	args := append([]string{lintian, "--pedantic", "-I", "--fail-on", "error,warning"}, debs...)
	out, err := harness.Run(context.Background(), 10*time.Minute, nil, args...)
	var tags []string
	for _, line := range strings.Split(out, "\n") {
		if len(line) > 2 && line[1] == ':' && strings.Contains("EWIPX", line[:1]) && line[0] != 'N' {
			tags = append(tags, line)
		}
	}
	if err != nil || len(tags) > 0 {
		t.Errorf("lintian: %v\n%s", err, strings.Join(tags, "\n"))
	}
}

// TestPackageSamples: the sample configurations the packages install are
// valid. mwid's names the group mwi, which only the package makes: here
// it is replaced by root's group; TestPackageInstall reads it as
// installed.
func TestPackageSamples(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(filepath.Join("..", "packaging", "etc", "mwid.yaml.sample"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "groups: [mwi]") {
		t.Error("mwid.yaml.sample does not let the group mwi use the sockets")
	}
	if _, err := config.Parse("mwid.yaml.sample", []byte(strings.ReplaceAll(string(data), "groups: [mwi]", "groups: [0]"))); err != nil {
		t.Errorf("mwid.yaml.sample: %v", err)
	}

	res, err := os.ReadFile(filepath.Join("..", "packaging", "etc", "issuer-resources.yaml.sample"))
	if err != nil {
		t.Fatal(err)
	}
	iss := harness.StartIssuer(t, string(res))
	for _, what := range []string{"role/deploy", "bot/deploy"} {
		out, err := harness.Run(context.Background(), time.Minute, nil, iss.Bins.Issuer, "get", what, "--state", iss.State)
		if err != nil || !strings.Contains(out, "name: deploy") {
			t.Errorf("mwi-issuer get %s with issuer-resources.yaml.sample loaded: %v\n%s", what, err, out)
		}
	}
}

// TestPackageInstall installs the .debs with dpkg -i, checks the programs'
// versions, the README's files, the group and that mwid.service is
// enabled and mwi-issuer.service is not, then purges them and checks that
// nothing of theirs is left. It changes the machine, so it runs only as
// root and when asked: MWI_REQUIRE_INTEGRATION=1 (as in CI) or
// MWI_TEST_DPKG=1.
func TestPackageInstall(t *testing.T) {
	dir := packageDir(t)
	if os.Getenv("MWI_REQUIRE_INTEGRATION") != "1" && os.Getenv("MWI_TEST_DPKG") != "1" {
		t.Skip("installs packages on this machine: set MWI_TEST_DPKG=1 (as root) to run it")
	}
	if os.Geteuid() != 0 {
		t.Skip("dpkg -i needs root")
	}
	dpkg := harness.Require(t, "dpkg", "apt-get install -y dpkg")
	var debs, names []string
	for _, p := range packages {
		debs = append(debs, packageFile(t, dir, p.name, "deb"))
		names = append(names, p.name)
		if out, err := harness.Run(context.Background(), time.Minute, nil, "dpkg-query", "-W", "-f", "${Status}", p.name); err == nil && strings.Contains(out, "installed") {
			t.Fatalf("package %s is already installed (%s): this test would replace and purge it", p.name, out)
		}
	}
	// The group mwi outlives a purge, as Debian leaves sysusers.d groups;
	// the test removes it if it made it.
	if _, err := harness.Run(context.Background(), time.Minute, nil, "getent", "group", "mwi"); err != nil {
		t.Cleanup(func() {
			if out, err := harness.Run(context.Background(), time.Minute, nil, "groupdel", "mwi"); err != nil {
				t.Errorf("groupdel mwi: %v\n%s", err, out)
			}
		})
	}
	purge := func() (string, error) {
		return harness.Run(context.Background(), 5*time.Minute, nil, append([]string{dpkg, "--purge"}, names...)...)
	}
	t.Cleanup(func() {
		if out, err := purge(); err != nil {
			t.Errorf("dpkg --purge: %v\n%s", err, out)
		}
	})
	if out, err := harness.Run(context.Background(), 5*time.Minute, nil, append([]string{dpkg, "-i"}, debs...)...); err != nil {
		t.Fatalf("dpkg -i: %v\n%s", err, out)
	}

	version := builtVersion(t, dir)
	for _, prog := range []string{"mwid", "mwictl", "mwi-issuer"} {
		out, err := harness.Run(context.Background(), time.Minute, nil, "/usr/bin/"+prog, "--version")
		if want := prog + " " + version; err != nil || out != want {
			t.Errorf("/usr/bin/%s --version: %q (%v); want %q", prog, out, err, want)
		}
	}
	readme := readmePaths(t)
	var installed []string
	for _, paths := range readme {
		for _, p := range paths {
			installed = append(installed, p)
			if _, err := os.Stat(p); err != nil {
				t.Errorf("README says the packages install %s: %v", p, err)
			}
		}
	}
	if out, err := harness.Run(context.Background(), time.Minute, nil, "getent", "group", "mwi"); err != nil {
		t.Errorf("no group mwi after installing mwid: %v %s", err, out)
	}
	// The sample as installed, with the group the package made.
	if _, err := config.Load("/etc/mwi/mwid.yaml.sample"); err != nil {
		t.Errorf("/etc/mwi/mwid.yaml.sample: %v", err)
	}
	const wants = "/etc/systemd/system/multi-user.target.wants/"
	if _, err := os.Lstat(wants + "mwid.service"); err != nil {
		t.Errorf("mwid.service is not enabled: %v", err)
	}
	if _, err := os.Lstat(wants + "mwi-issuer.service"); err == nil {
		t.Error("mwi-issuer.service is enabled on install; an authority should start only when asked")
	}

	if out, err := purge(); err != nil {
		t.Fatalf("dpkg --purge: %v\n%s", err, out)
	}
	for _, p := range append(installed, "/usr/bin/mwictl", wants+"mwid.service", "/etc/mwi/mwid.yaml.sample") {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s is still there after dpkg --purge", p)
		}
	}
}

// TestPackageVersion: packaging/version.sh turns make's version (git
// describe) into a package version that starts with a digit and that dpkg
// orders as the builds were made.
func TestPackageVersion(t *testing.T) {
	t.Parallel()
	dpkg := harness.Require(t, "dpkg", "apt-get install -y dpkg")
	// In the order of the builds.
	cases := []struct{ version, want string }{
		{"dev", "0.0.0~dev"},
		{"3f2a9c1", "0.0.0~git.3f2a9c1"},
		{"3f2a9c1-dirty", "0.0.0~git.3f2a9c1.dirty"},
		{"v1.2.0-rc.1", "1.2.0~rc.1"},
		{"v1.2.0-rc.1-2-gabcdef0", "1.2.0~rc.1+2.gabcdef0"},
		{"v1.2.0", "1.2.0"},
		{"v1.2.0-dirty", "1.2.0+0.dirty"},
		{"v1.2.0-3-g3f2a9c1", "1.2.0+3.g3f2a9c1"},
		{"v1.2.0-3-g3f2a9c1-dirty", "1.2.0+3.g3f2a9c1.dirty"},
		{"v1.2.0-12-g0a1b2c3", "1.2.0+12.g0a1b2c3"},
		{"v1.2.1", "1.2.1"},
	}
	prev := ""
	for _, c := range cases {
		got, err := harness.Run(context.Background(), time.Minute, nil, filepath.Join("..", "packaging", "version.sh"), c.version)
		if err != nil || got != c.want {
			t.Errorf("version.sh %s: %q (%v); want %s", c.version, got, err, c.want)
			continue
		}
		if prev != "" {
			if out, err := harness.Run(context.Background(), time.Minute, nil, dpkg, "--compare-versions", prev, "lt", got); err != nil {
				t.Errorf("dpkg orders %s before %s: %v %s", got, prev, err, out)
			}
		}
		prev = got
	}
}
