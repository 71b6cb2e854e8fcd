package unixsock

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// filterChild names the environment variable that makes
// TestGroupUnderSystemCallFilter the child process it starts.
const filterChild = "MWI_UNIXSOCK_FILTER_CHILD"

// TestGroupUnderSystemCallFilter: a socket asked for in the group it is
// made with is not chowned, so that a service whose system call filter
// refuses chown (mwid.service: SystemCallFilter=~@privileged, running as
// the group of its sockets) can make it; one of another group still is,
// and then fails there. The filter, once installed, stays for the whole
// process, so a child process installs it.
func TestGroupUnderSystemCallFilter(t *testing.T) {
	if os.Getenv(filterChild) == "1" {
		groupUnderFilter(t)
		return
	}
	if runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64" {
		t.Skipf("no system call filter for %s in this test", runtime.GOARCH)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestGroupUnderSystemCallFilter$", "-test.v")
	cmd.Env = append(os.Environ(), filterChild+"=1", "TMPDIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	t.Logf("child:\n%s", out)
}

// groupUnderFilter runs in the child: it refuses fchownat with EPERM, as
// SystemCallErrorNumber=EPERM does, then makes sockets.
func groupUnderFilter(t *testing.T) {
	arch := map[string]uint32{"amd64": unix.AUDIT_ARCH_X86_64, "arm64": unix.AUDIT_ARCH_AARCH64}[runtime.GOARCH]
	const (
		archOff = 4 // offsetof(struct seccomp_data, arch)
		nrOff   = 0 // offsetof(struct seccomp_data, nr)
	)
	filter := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: archOff},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 1, Jf: 0, K: arch},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: nrOff},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: unix.SYS_FCHOWNAT},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	// TSYNC: every thread of the process, as systemd's filter applies to
	// the whole service.
	if _, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&prog))); errno != 0 {
		t.Skipf("seccomp: %v", errno)
	}

	dir := t.TempDir()
	l, err := ListenGroup(filepath.Join(dir, "own.sock"), 0o660, os.Getegid())
	if err != nil {
		t.Fatalf("a socket in the group it is made with: %v", err)
	}
	l.Close()

	other := 0 // root's group, or any other than ours
	if os.Getegid() == 0 {
		other = 1
	}
	_, err = ListenGroup(filepath.Join(dir, "other.sock"), 0o660, other)
	if !errors.Is(err, unix.EPERM) {
		t.Fatalf("a socket in group %d under a filter refusing chown: %v; want EPERM (is the filter in place?)", other, err)
	}
}
