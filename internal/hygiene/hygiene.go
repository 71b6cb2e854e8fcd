// Package hygiene keeps the secrets in a process's memory inside it: out of
// core dumps, away from other processes of the same user, and, where the
// system allows, out of swap.
package hygiene

import (
	"errors"
	"fmt"
	"log/slog"

	"golang.org/x/sys/unix"
)

// Report says what Harden achieved, for logs and status.
type Report struct {
	// NonDumpable is true when the process is not dumpable: the kernel
	// writes no core dump of it, and /proc/PID/mem, environ and the rest
	// belong to root, so a process of the same user cannot read them or
	// attach with ptrace.
	NonDumpable bool
	// CoreLimitZero is true when RLIMIT_CORE is 0, soft and hard.
	CoreLimitZero bool
	// MemoryLocked is true when mlockall locked the process's memory,
	// present and future, so that none of it is written to swap.
	MemoryLocked bool
	// MemoryNote says why memory is not locked, when it is not.
	MemoryNote string
}

// Harden makes the calling process non-dumpable (PR_SET_DUMPABLE 0), sets
// its core dump size limit to 0, and locks its memory when that is safe
// (see lockPolicy). It logs what it did at info level and, when memory is
// not locked, one warning saying why and how to allow it. Call it early,
// before the process holds any secret.
//
// Non-dumpability is not inherited across execve: a program the process
// runs is dumpable again. Memory locks are not inherited at all. A nil log
// means slog.Default().
func Harden(log *slog.Logger) Report {
	if log == nil {
		log = slog.Default()
	}
	return harden(log, realSystem{})
}

// system is the kernel interface Harden uses; tests replace it.
type system interface {
	setDumpable(bool) error
	dumpable() (bool, error)
	setrlimit(resource int, lim *unix.Rlimit) error
	getrlimit(resource int, lim *unix.Rlimit) error
	hasCapIPCLock() (bool, error)
	mlockall(flags int) error
	munlockall() error
}

func harden(log *slog.Logger, sys system) Report {
	var r Report
	var warnings []error

	if err := sys.setDumpable(false); err != nil {
		warnings = append(warnings, fmt.Errorf("prctl(PR_SET_DUMPABLE, 0): %w", err))
	}
	if d, err := sys.dumpable(); err == nil {
		r.NonDumpable = !d
	}

	if err := sys.setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{Cur: 0, Max: 0}); err != nil {
		warnings = append(warnings, fmt.Errorf("setrlimit(RLIMIT_CORE, 0): %w", err))
	}
	var core unix.Rlimit
	if err := sys.getrlimit(unix.RLIMIT_CORE, &core); err == nil {
		r.CoreLimitZero = core.Cur == 0 && core.Max == 0
	}

	r.MemoryLocked, r.MemoryNote = lockMemory(sys)

	for _, err := range warnings {
		log.Warn("process hardening incomplete", "err", err)
	}
	log.Info("process hardened", "non_dumpable", r.NonDumpable, "core_limit_zero", r.CoreLimitZero, "memory_locked", r.MemoryLocked)
	if !r.MemoryLocked {
		log.Warn("memory is not locked and may be swapped to disk: " + r.MemoryNote)
	}
	return r
}

// howToAllow is the advice for an operator who wants memory locked.
const howToAllow = "to allow it, set LimitMEMLOCK=infinity in the systemd unit (as systemd/mwid.service does) or give mwid CAP_IPC_LOCK (AmbientCapabilities=CAP_IPC_LOCK)"

// lockMemory locks the process's memory if lockPolicy allows it, and
// otherwise says why not.
func lockMemory(sys system) (bool, string) {
	var memlock unix.Rlimit
	if err := sys.getrlimit(unix.RLIMIT_MEMLOCK, &memlock); err != nil {
		return false, fmt.Sprintf("getrlimit(RLIMIT_MEMLOCK): %v", err)
	}
	capLock, err := sys.hasCapIPCLock()
	if err != nil {
		capLock = false
	}
	if ok, why := lockPolicy(memlock, capLock); !ok {
		return false, why + "; " + howToAllow
	}
	// MCL_ONFAULT locks each page when it is first touched instead of
	// populating every mapping at once: the Go runtime maps heap and
	// reserves address space in large pieces, and without it each new
	// piece would be made resident whole. A page that holds a secret has
	// been touched, so it is locked all the same. Kernels before 4.4 do not
	// know the flag and say EINVAL.
	err = sys.mlockall(unix.MCL_CURRENT | unix.MCL_FUTURE | unix.MCL_ONFAULT)
	if errors.Is(err, unix.EINVAL) {
		err = sys.mlockall(unix.MCL_CURRENT | unix.MCL_FUTURE)
	}
	if err != nil {
		// Leave no MCL_FUTURE behind from a partial success.
		sys.munlockall()
		switch {
		case errors.Is(err, unix.EPERM):
			return false, "mlockall: not permitted (EPERM); " + howToAllow
		case errors.Is(err, unix.ENOMEM), errors.Is(err, unix.EAGAIN):
			return false, fmt.Sprintf("mlockall: %v (RLIMIT_MEMLOCK too low); %s", err, howToAllow)
		default:
			return false, fmt.Sprintf("mlockall: %v", err)
		}
	}
	return true, ""
}

// lockPolicy decides whether mlockall(MCL_CURRENT|MCL_FUTURE) is safe.
//
// MCL_FUTURE makes every later mapping locked, and the kernel refuses a
// mapping that would take the locked total past RLIMIT_MEMLOCK unless the
// process has CAP_IPC_LOCK. The Go runtime cannot handle that refusal: when
// the heap grows, or a goroutine stack or a new thread's stack needs
// memory, a failed mmap is "fatal error: runtime: out of memory" and the
// process dies, with no error to handle (golang/go#28081 shows it for the
// 64 MiB heap arenas). With a finite limit, locking would only trade a
// swapped page for a crash at an unpredictable later time, the next time
// the heap grows past it. So memory is locked only when nothing can be
// refused: with CAP_IPC_LOCK, which the kernel lets lock without limit, or
// with RLIMIT_MEMLOCK unlimited. Otherwise the process runs unlocked and
// says so. (A finite limit that happens to be large is treated the same:
// the daemon's heap has no fixed bound that would make it safe.)
func lockPolicy(memlock unix.Rlimit, capIPCLock bool) (bool, string) {
	switch {
	case capIPCLock:
		return true, ""
	case memlock.Cur == unix.RLIM_INFINITY:
		return true, ""
	default:
		return false, fmt.Sprintf("RLIMIT_MEMLOCK is %s and the process lacks CAP_IPC_LOCK, so locking all memory would make the Go runtime abort when its heap outgrows the limit", formatBytes(memlock.Cur))
	}
}

func formatBytes(n uint64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	default:
		return fmt.Sprintf("%d bytes", n)
	}
}

// realSystem is the kernel.
type realSystem struct{}

func (realSystem) setDumpable(on bool) error {
	v := uintptr(0)
	if on {
		v = 1
	}
	return unix.Prctl(unix.PR_SET_DUMPABLE, v, 0, 0, 0)
}

func (realSystem) dumpable() (bool, error) {
	v, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
	return v != 0, err
}

func (realSystem) setrlimit(resource int, lim *unix.Rlimit) error {
	return unix.Setrlimit(resource, lim)
}

func (realSystem) getrlimit(resource int, lim *unix.Rlimit) error {
	return unix.Getrlimit(resource, lim)
}

// hasCapIPCLock reports whether CAP_IPC_LOCK is in the effective set.
func (realSystem) hasCapIPCLock() (bool, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	// Version 3 takes two 32-bit halves; passing one would let the
	// kernel write past it.
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false, err
	}
	const c = unix.CAP_IPC_LOCK
	return data[c/32].Effective&(1<<(c%32)) != 0, nil
}

func (realSystem) mlockall(flags int) error { return unix.Mlockall(flags) }
func (realSystem) munlockall() error        { return unix.Munlockall() }
