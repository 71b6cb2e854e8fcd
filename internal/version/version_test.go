package version

import "testing"

func TestGet(t *testing.T) {
	// A test binary is built with no -ldflags -X: the fallbacks apply.
	info := Get()
	if info.Version == "" || info.Commit == "" {
		t.Fatalf("Get() = %+v, want neither field empty", info)
	}
	if got, want := (Info{Version: "v1.2.0", Commit: "3f2a9c1"}).String(), "v1.2.0 (commit 3f2a9c1)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestShort(t *testing.T) {
	for in, want := range map[string]string{
		"3f2a9c1e0b6d4a5f8e7c9b1a2d3e4f5a6b7c8d9e": "3f2a9c1",
		"3f2a9c1": "3f2a9c1",
		"abc":     "abc",
	} {
		if got := short(in); got != want {
			t.Errorf("short(%q) = %q, want %q", in, got, want)
		}
	}
}
