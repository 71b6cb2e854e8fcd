package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mwi-project/mwi/integration/harness"
)

// hygieneResources add, to resources, a bot "hygiene" that holds both an
// SSH user certificate and a host certificate, so that mwid holds every
// kind of private key it makes.
func hygieneResources(login string) string {
	return resources(login) + `---
kind: role
version: v1
metadata:
  name: host
spec:
  allow:
    host_names: [127.0.0.1]
---
kind: bot
version: v1
metadata:
  name: hygiene
spec:
  roles: [ssh, host]
`
}

// TestMemoryHygiene runs a real mwid as nobody, as a non-root service
// would run, and checks from outside what internal/hygiene promises: the
// process is not dumpable, so its /proc files belong to root and the same
// user cannot read its memory or environment (where its join token is);
// core dumps are off; memory is locked only where allowed, with one
// warning where not; and nothing it wrote holds a private key or the token.
//
// It does not run in parallel: it scans the temporary directory for every
// file nobody wrote since it started, and other tests write files as
// nobody there too.
func TestMemoryHygiene(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run mwid and its readers as another user")
	}
	nobody := lookupCredential(t, "nobody")
	iss := harness.StartIssuer(t, hygieneResources(harness.CurrentUser(t)))
	// The built mwid may be in a directory only root can reach.
	asNobody := *iss
	asNobody.Bins.Daemon = reachableCopy(t, iss.Bins.Daemon, nobody)

	// The host key mwid certifies: only its public half, in a directory
	// mwid's user writes the certificate to.
	outDir := ownedTempDir(t, nobody)
	hostKey := harness.NewHostKey(t)
	pub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outDir, "ssh_host_ed25519_key.pub"), pub, 0o644); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	token := iss.CreateToken(t, "hygiene", time.Hour)
	d := harness.StartDaemon(t, &asNobody, harness.DaemonOptions{
		Token:      token,
		Credential: nobody,
		Extra: fmt.Sprintf(`outputs:
  - type: ssh_host
    host_key: %s
    names: [127.0.0.1]
`, filepath.Join(outDir, "ssh_host_ed25519_key.pub")),
	})
	st := d.WaitState(t, "ready", 20*time.Second)
	if len(st.Outputs) != 1 || st.Outputs[0].LastWrite == nil {
		t.Fatalf("outputs %+v; want the host certificate written", st.Outputs)
	}
	pid := d.Proc.Cmd.Process.Pid
	if uid := statusField(t, pid, "Uid"); strings.Fields(uid)[0] != fmt.Sprint(nobody.Uid) {
		t.Fatalf("mwid runs as uid %s, want nobody (%d)", uid, nobody.Uid)
	}

	t.Run("proc files belong to root", func(t *testing.T) {
		for _, name := range []string{"mem", "environ", "maps"} {
			fi, err := os.Stat(fmt.Sprintf("/proc/%d/%s", pid, name))
			if err != nil {
				t.Fatal(err)
			}
			s := fi.Sys().(*syscall.Stat_t)
			if s.Uid != 0 || s.Gid != 0 {
				t.Errorf("/proc/%d/%s is owned by %d:%d; want root:root (mwid is dumpable)", pid, name, s.Uid, s.Gid)
			}
		}
	})

	t.Run("its own user cannot read its memory or environment", func(t *testing.T) {
		for _, name := range []string{"mem", "environ"} {
			out, err := runAs(nobody, "head", "-c", "64", fmt.Sprintf("/proc/%d/%s", pid, name))
			if err == nil || !strings.Contains(out, "Permission denied") {
				t.Errorf("nobody reading mwid's /proc/%d/%s: err %v, output %q; want permission denied", pid, name, err, out)
			}
		}
		// The same read of a dumpable process of that user succeeds,
		// so the refusal above is mwid's doing.
		sleeper := exec.Command("sleep", "30")
		sleeper.SysProcAttr = &syscall.SysProcAttr{Credential: nobody}
		sleeper.Env = []string{"MWI_CONTROL=visible"}
		if err := sleeper.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { sleeper.Process.Kill(); sleeper.Wait() }()
		out, err := runAs(nobody, "cat", fmt.Sprintf("/proc/%d/environ", sleeper.Process.Pid))
		if err != nil || !strings.Contains(out, "MWI_CONTROL=visible") {
			t.Errorf("control: nobody cannot read its own dumpable process's environ either (%v, %q); the check proves nothing", err, out)
		}
	})

	t.Run("no core dumps", func(t *testing.T) {
		limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
		if err != nil {
			t.Fatal(err)
		}
		core := regexp.MustCompile(`(?m)^Max core file size\s+(\S+)\s+(\S+)`).FindStringSubmatch(string(limits))
		if core == nil || core[1] != "0" || core[2] != "0" {
			t.Errorf("core limit %q; want soft and hard 0:\n%s", core, limits)
		}
	})

	t.Run("memory not locked, and one warning says so", func(t *testing.T) {
		// nobody has no CAP_IPC_LOCK and a finite RLIMIT_MEMLOCK: mwid must
		// not lock (the Go runtime would abort at the limit) and must say
		// how to allow it, once.
		if lck := statusField(t, pid, "VmLck"); lck != "0 kB" {
			t.Errorf("VmLck %q; want 0 kB", lck)
		}
		log := d.Proc.Output()
		if n := strings.Count(log, "memory is not locked"); n != 1 {
			t.Errorf("%d warnings about locking memory; want 1:\n%s", n, log)
		}
		if !strings.Contains(log, "LimitMEMLOCK=infinity") {
			t.Errorf("the warning does not say how to allow locking:\n%s", log)
		}
	})

	t.Run("nothing written holds key material", func(t *testing.T) {
		// The files of its directories, and any file under the temporary
		// directory that mwid's user wrote since it started.
		files := map[string]bool{}
		for _, dir := range []string{d.Dir, outDir} {
			filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
				if err == nil && e.Type().IsRegular() {
					files[p] = true
				}
				return nil
			})
		}
		filepath.WalkDir(os.TempDir(), func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				if e != nil && e.IsDir() {
					return fs.SkipDir
				}
				return nil
			}
			if !e.Type().IsRegular() {
				return nil
			}
			if fi, err := e.Info(); err == nil && fi.Sys().(*syscall.Stat_t).Uid == nobody.Uid && !fi.ModTime().Before(start) {
				files[p] = true
			}
			return nil
		})
		// The scan finds a private key where there is one.
		if keyMaterial(t, hostKey, token) == "" {
			t.Fatalf("the scan does not recognise the private key %s", hostKey)
		}
		if !files[st.Outputs[0].Path] {
			t.Fatalf("the scan misses the host certificate %s: %v", st.Outputs[0].Path, files)
		}
		for p := range files {
			if bad := keyMaterial(t, p, token); bad != "" {
				t.Errorf("%s holds %s", p, bad)
			}
		}
		t.Logf("scanned %d files", len(files))
	})
}

// TestMemoryLockedAsRoot checks the other side of the policy: with
// CAP_IPC_LOCK, as root has, mwid locks its memory and warns about nothing.
func TestMemoryLockedAsRoot(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_IPC_LOCK)")
	}
	_, d := setup(t, time.Hour)
	pid := d.Proc.Cmd.Process.Pid
	lck := statusField(t, pid, "VmLck")
	if kb, _ := strconv.Atoi(strings.TrimSuffix(lck, " kB")); kb == 0 {
		t.Errorf("VmLck %q; want memory locked", lck)
	}
	if log := d.Proc.Output(); strings.Contains(log, "memory is not locked") || !strings.Contains(log, "memory_locked=true") {
		t.Errorf("log does not say memory is locked:\n%s", log)
	}
}

// keyPatterns are what a private key looks like in a file: PEM blocks of
// any kind of private key, an OpenSSH private key (armoured or not).
var keyPatterns = []*regexp.Regexp{
	regexp.MustCompile(`-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----`),
	regexp.MustCompile(`openssh-key-v1`),
}

// keyMaterial returns what secret the file at path holds, or "".
func keyMaterial(t *testing.T, path, token string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, 64<<20))
	if err != nil {
		return ""
	}
	for _, re := range keyPatterns {
		if m := re.Find(data); m != nil {
			return fmt.Sprintf("a private key (%q)", m)
		}
	}
	if bytes.Contains(data, []byte(token)) {
		return "the join token"
	}
	return ""
}

// statusField returns a field of /proc/PID/status, such as "VmLck".
func statusField(t *testing.T, pid int, field string) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return ""
}

func lookupCredential(t *testing.T, name string) *syscall.Credential {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		t.Skipf("no user %s: %v", name, err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

// ownedTempDir returns a new directory in the system's temporary
// directory, owned by cred's user and readable by all.
func ownedTempDir(t *testing.T, cred *syscall.Credential) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "mwi-hygiene-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
		t.Fatal(err)
	}
	return dir
}

// reachableCopy copies the program at path where cred's user can run it.
func reachableCopy(t *testing.T, path string, cred *syscall.Credential) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(ownedTempDir(t, cred), filepath.Base(path))
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return dst
}

// runAs runs a command as cred's user and returns its combined output.
func runAs(cred *syscall.Credential, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	out, err := cmd.CombinedOutput()
	return string(out), err
}
