// Package version reports the version and commit that an MWI program was
// built from.
//
// make build sets both at link time:
//
//	go build -ldflags "-X github.com/mwi-project/mwi/internal/version.Version=v1.2.0
//	    -X github.com/mwi-project/mwi/internal/version.Commit=3f2a9c1" ./cmd/...
//
// A binary built otherwise (go build, go install, go test) falls back to what
// the Go toolchain recorded in it: the module version and the VCS revision,
// when it recorded them.
package version

import (
	"runtime/debug"
	"sync"
)

// Version and Commit are set with -ldflags -X at build time; empty means
// not set.
var (
	Version string
	Commit  string
)

// Info is the version and commit of the running program.
type Info struct {
	Version string // such as v1.2.0-3-g3f2a9c1-dirty, or "dev"
	Commit  string // such as 3f2a9c1, or "unknown"
}

// String returns the version and commit in the form --version prints.
func (i Info) String() string { return i.Version + " (commit " + i.Commit + ")" }

var buildInfo = sync.OnceValue(func() Info {
	info := Info{Version: Version, Commit: Commit}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version // go install module@version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && info.Commit == "" && s.Value != "" {
				info.Commit = short(s.Value)
			}
		}
	}
	if info.Version == "" {
		info.Version = "dev"
	}
	if info.Commit == "" {
		info.Commit = "unknown"
	}
	return info
})

// Get returns the version and commit of the running program.
func Get() Info { return buildInfo() }

// short abbreviates a full commit hash as git rev-parse --short does by
// default, to 7 hexadecimal digits.
func short(rev string) string {
	if len(rev) > 7 {
		return rev[:7]
	}
	return rev
}
