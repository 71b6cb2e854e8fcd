package hygiene

import (
	"bufio"
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeSystem records what harden asks of the kernel.
type fakeSystem struct {
	dump       bool
	limits     map[int]unix.Rlimit
	capLock    bool
	mlockErrs  []error // returned by successive mlockall calls
	mlockFlags []int
	unlocked   bool
	setErr     error // returned by setDumpable and setrlimit
}

func newFake() *fakeSystem {
	return &fakeSystem{
		dump: true,
		limits: map[int]unix.Rlimit{
			unix.RLIMIT_CORE:    {Cur: unix.RLIM_INFINITY, Max: unix.RLIM_INFINITY},
			unix.RLIMIT_MEMLOCK: {Cur: 8 << 20, Max: 8 << 20},
		},
	}
}

func (f *fakeSystem) setDumpable(on bool) error {
	if f.setErr != nil {
		return f.setErr
	}
	f.dump = on
	return nil
}
func (f *fakeSystem) dumpable() (bool, error) { return f.dump, nil }
func (f *fakeSystem) setrlimit(r int, l *unix.Rlimit) error {
	if f.setErr != nil {
		return f.setErr
	}
	f.limits[r] = *l
	return nil
}
func (f *fakeSystem) getrlimit(r int, l *unix.Rlimit) error { *l = f.limits[r]; return nil }
func (f *fakeSystem) hasCapIPCLock() (bool, error)          { return f.capLock, nil }
func (f *fakeSystem) mlockall(flags int) error {
	f.mlockFlags = append(f.mlockFlags, flags)
	if len(f.mlockErrs) == 0 {
		return nil
	}
	err := f.mlockErrs[0]
	f.mlockErrs = f.mlockErrs[1:]
	return err
}
func (f *fakeSystem) munlockall() error { f.unlocked = true; return nil }

// logRecords runs harden with a JSON logger and returns its records.
func logRecords(t *testing.T, sys system) (Report, []map[string]any) {
	t.Helper()
	var buf bytes.Buffer
	r := harden(slog.New(slog.NewJSONHandler(&buf, nil)), sys)
	var recs []map[string]any
	sc := bufio.NewScanner(&buf)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, m)
	}
	return r, recs
}

func warnings(recs []map[string]any) []string {
	var out []string
	for _, r := range recs {
		if r["level"] == "WARN" {
			out = append(out, r["msg"].(string))
		}
	}
	return out
}

const onFault = unix.MCL_CURRENT | unix.MCL_FUTURE | unix.MCL_ONFAULT

func TestHarden(t *testing.T) {
	tests := []struct {
		name       string
		setup      func(*fakeSystem)
		locked     bool
		mlockCalls []int
		note       []string // words the single warning must contain
	}{
		{
			name:       "CAP_IPC_LOCK locks despite a small limit",
			setup:      func(f *fakeSystem) { f.capLock = true },
			locked:     true,
			mlockCalls: []int{onFault},
		},
		{
			name: "unlimited RLIMIT_MEMLOCK locks",
			setup: func(f *fakeSystem) {
				f.limits[unix.RLIMIT_MEMLOCK] = unix.Rlimit{Cur: unix.RLIM_INFINITY, Max: unix.RLIM_INFINITY}
			},
			locked:     true,
			mlockCalls: []int{onFault},
		},
		{
			name:   "a finite limit skips mlockall",
			setup:  func(f *fakeSystem) {},
			locked: false,
			note:   []string{"RLIMIT_MEMLOCK is 8 MiB", "CAP_IPC_LOCK", "LimitMEMLOCK=infinity"},
		},
		{
			name: "a large finite limit skips mlockall too",
			setup: func(f *fakeSystem) {
				f.limits[unix.RLIMIT_MEMLOCK] = unix.Rlimit{Cur: 64 << 30, Max: 64 << 30}
			},
			locked: false,
			note:   []string{"RLIMIT_MEMLOCK is 64 GiB", "LimitMEMLOCK=infinity"},
		},
		{
			name: "EPERM is reported and undone",
			setup: func(f *fakeSystem) {
				f.capLock = true
				f.mlockErrs = []error{unix.EPERM}
			},
			locked:     false,
			mlockCalls: []int{onFault},
			note:       []string{"not permitted", "LimitMEMLOCK=infinity", "CAP_IPC_LOCK"},
		},
		{
			name: "ENOMEM is reported",
			setup: func(f *fakeSystem) {
				f.capLock = true
				f.mlockErrs = []error{unix.ENOMEM}
			},
			locked:     false,
			mlockCalls: []int{onFault},
			note:       []string{"RLIMIT_MEMLOCK too low", "LimitMEMLOCK=infinity"},
		},
		{
			name: "a kernel without MCL_ONFAULT",
			setup: func(f *fakeSystem) {
				f.capLock = true
				f.mlockErrs = []error{unix.EINVAL}
			},
			locked:     true,
			mlockCalls: []int{onFault, unix.MCL_CURRENT | unix.MCL_FUTURE},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake()
			tt.setup(f)
			r, recs := logRecords(t, f)
			if !r.NonDumpable || f.dump {
				t.Error("not made non-dumpable")
			}
			if !r.CoreLimitZero || f.limits[unix.RLIMIT_CORE] != (unix.Rlimit{}) {
				t.Errorf("RLIMIT_CORE = %+v, want 0", f.limits[unix.RLIMIT_CORE])
			}
			if r.MemoryLocked != tt.locked {
				t.Errorf("MemoryLocked = %v, want %v", r.MemoryLocked, tt.locked)
			}
			if !slicesEqual(f.mlockFlags, tt.mlockCalls) {
				t.Errorf("mlockall calls %v, want %v", f.mlockFlags, tt.mlockCalls)
			}
			if !tt.locked && len(f.mlockFlags) > 0 && !f.unlocked {
				t.Error("a failed mlockall was not undone with munlockall")
			}
			w := warnings(recs)
			if tt.locked {
				if len(w) != 0 || r.MemoryNote != "" {
					t.Errorf("warnings %q, note %q; want none", w, r.MemoryNote)
				}
				return
			}
			if len(w) != 1 {
				t.Fatalf("warnings %q; want exactly one", w)
			}
			for _, word := range tt.note {
				if !strings.Contains(w[0], word) || !strings.Contains(r.MemoryNote, word) {
					t.Errorf("warning %q / note %q does not say %q", w[0], r.MemoryNote, word)
				}
			}
		})
	}
}

func TestHardenFailuresAreLogged(t *testing.T) {
	f := newFake()
	f.capLock = true
	f.setErr = unix.EPERM
	r, recs := logRecords(t, f)
	if r.NonDumpable || r.CoreLimitZero {
		t.Errorf("report %+v claims what failed", r)
	}
	w := strings.Join(warnings(recs), "\n")
	for _, want := range []string{"process hardening incomplete"} {
		if strings.Count(w, want) != 2 {
			t.Errorf("warnings %q; want two %q (prctl and setrlimit)", w, want)
		}
	}
}

func slicesEqual(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestHardenProcess runs the real Harden in a child process, since it
// changes the process for good, and checks the kernel's view of it.
func TestHardenProcess(t *testing.T) {
	if os.Getenv("MWI_HYGIENE_CHILD") == "1" {
		childHarden()
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHardenProcess$", "-test.v")
	cmd.Env = append(os.Environ(), "MWI_HYGIENE_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	var got childResult
	for _, line := range strings.Split(string(out), "\n") {
		if s, ok := strings.CutPrefix(line, "RESULT "); ok {
			if err := json.Unmarshal([]byte(s), &got); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("child: %+v", got)
	if !got.Report.NonDumpable || got.Dumpable != 0 {
		t.Errorf("PR_GET_DUMPABLE = %d, report %+v; want 0", got.Dumpable, got.Report)
	}
	if !got.Report.CoreLimitZero || got.Core != "0 0" {
		t.Errorf("RLIMIT_CORE = %s; want 0 0", got.Core)
	}
	// Memory is locked exactly when the policy allows it, and the
	// kernel's VmLck agrees with the report.
	if got.Report.MemoryLocked != (got.VmLckKB > 0) {
		t.Errorf("report says locked=%v, /proc/self/status VmLck %d kB", got.Report.MemoryLocked, got.VmLckKB)
	}
	if got.Report.MemoryLocked != got.PolicyAllows {
		t.Errorf("locked=%v but the policy allows=%v (%s)", got.Report.MemoryLocked, got.PolicyAllows, got.Report.MemoryNote)
	}
}

type childResult struct {
	Report       Report
	Dumpable     int
	Core         string
	VmLckKB      int
	PolicyAllows bool
}

func childHarden() {
	var memlock unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_MEMLOCK, &memlock)
	capLock, _ := realSystem{}.hasCapIPCLock()
	allows, _ := lockPolicy(memlock, capLock)

	r := Harden(slog.New(slog.NewTextHandler(os.Stderr, nil)))
	res := childResult{Report: r, PolicyAllows: allows}
	res.Dumpable, _ = unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
	var core unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_CORE, &core)
	res.Core = strconv.FormatUint(core.Cur, 10) + " " + strconv.FormatUint(core.Max, 10)
	status, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmLck:"); ok {
			res.VmLckKB, _ = strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
		}
	}
	b, _ := json.Marshal(res)
	os.Stdout.WriteString("RESULT " + string(b) + "\n")
}
