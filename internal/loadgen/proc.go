package loadgen

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// clockTicks is the unit of the CPU times in /proc/PID/stat (USER_HZ),
// which is 100 on every Linux architecture Go supports.
const clockTicks = 100

// usage is what /proc/PID/stat says a process has used so far.
type usage struct {
	cpu         time.Duration // user and system time
	minorFaults uint64
	majorFaults uint64
}

func (u usage) sub(v usage) usage {
	return usage{cpu: u.cpu - v.cpu, minorFaults: u.minorFaults - v.minorFaults, majorFaults: u.majorFaults - v.majorFaults}
}

func (u usage) add(v usage) usage {
	return usage{cpu: u.cpu + v.cpu, minorFaults: u.minorFaults + v.minorFaults, majorFaults: u.majorFaults + v.majorFaults}
}

// procStat reads the usage of process pid, and its parent's PID.
func procStat(pid int) (usage, int, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return usage{}, 0, err
	}
	// The command name, in parentheses, may hold spaces: the fields
	// counted by proc(5) start after its closing parenthesis, at field 3.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return usage{}, 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return usage{}, 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	field := func(n int) uint64 { // n is proc(5)'s 1-based field number
		v, _ := strconv.ParseUint(f[n-3], 10, 64)
		return v
	}
	ticks := field(14) + field(15) // utime, stime
	return usage{
		cpu:         time.Duration(ticks) * time.Second / clockTicks,
		minorFaults: field(10),
		majorFaults: field(12),
	}, int(field(4)), nil
}

// usageOf returns the usage of pids and, for those in withChildren, of
// their child processes too (PostgreSQL's backends are the postmaster's
// children). A process that has ended counts for nothing.
func usageOf(pids []int, withChildren map[int]bool) usage {
	var total usage
	for _, pid := range pids {
		if u, _, err := procStat(pid); err == nil {
			total = total.add(u)
		}
	}
	if len(withChildren) == 0 {
		return total
	}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		if u, ppid, err := procStat(pid); err == nil && withChildren[ppid] {
			total = total.add(u)
		}
	}
	return total
}

// pinSelf binds every thread of this process to cpu. Threads the Go
// runtime starts later inherit the binding of the thread that starts them.
func pinSelf(cpu int) error {
	var set unix.CPUSet
	set.Set(cpu)
	tids, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, t := range tids {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &set); err != nil {
			return fmt.Errorf("pin thread %d to CPU %d: %w", tid, cpu, err)
		}
	}
	return nil
}

// loadAverage returns /proc/loadavg's first three fields.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
