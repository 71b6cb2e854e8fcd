package ca

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTidyRemovesOnlyWhatItIsTold checks that Tidy removes next files
// only if they hold the authority it promotes or the one it drops: with
// replicas sharing the state directory, next files holding any other
// authority, whole or half written, are those of an init another issuer
// began after the store said standby, and must stay.
func TestTidyRemovesOnlyWhatItIsTold(t *testing.T) {
	for _, typ := range Types {
		for _, tc := range []struct {
			name string
			// dropped returns the dropped argument of Tidy, given the
			// authority in the next files.
			dropped  func(next string) string
			halfPair bool // only the next key is written, as mid-CreateNext
			promote  bool // Tidy is told the next authority is current
			wantGone bool
		}{
			{name: "rollback of that authority", dropped: func(next string) string { return next }, wantGone: true},
			{name: "rollback of another authority", dropped: func(string) string { return "SHA256:another" }},
			{name: "no rollback", dropped: func(string) string { return "" }},
			{name: "half pair of another", dropped: func(string) string { return "SHA256:another" }, halfPair: true},
			{name: "half pair of that authority", dropped: func(next string) string { return next }, halfPair: true, wantGone: true},
			{name: "promotion", dropped: func(string) string { return "" }, promote: true, wantGone: true},
		} {
			t.Run(string(typ)+"/"+tc.name, func(t *testing.T) {
				dir := t.TempDir()
				if err := Init(dir, []string{"127.0.0.1"}); err != nil {
					t.Fatal(err)
				}
				a, err := LoadRotating(dir, nil)
				if err != nil {
					t.Fatal(err)
				}
				cur := a.Fingerprint(typ)
				next, err := CreateNext(dir, typ)
				if err != nil {
					t.Fatal(err)
				}
				f := rotationFiles[typ]
				if tc.halfPair {
					if err := os.Remove(filepath.Join(dir, f[1].pub)); err != nil {
						t.Fatal(err)
					}
				}
				current := cur
				if tc.promote {
					current = next
				}
				if err := Tidy(dir, typ, current, tc.dropped(next)); err != nil {
					t.Fatal(err)
				}
				_, err = os.Lstat(filepath.Join(dir, f[1].key))
				if gone := errors.Is(err, fs.ErrNotExist); gone != tc.wantGone {
					t.Errorf("next key removed: %v; want %v", gone, tc.wantGone)
				}
				if !tc.wantGone && !NextHolds(dir, typ, next) && !tc.halfPair {
					t.Errorf("the next files no longer hold %s", next)
				}
				noTidyLeftovers(t, dir)
				want := cur
				if tc.promote {
					want = next
				}
				a, err = LoadRotating(dir, nil)
				if err != nil {
					t.Fatal(err)
				}
				if got := a.Fingerprint(typ); got != want {
					t.Errorf("current authority after Tidy = %s; want %s", got, want)
				}
			})
		}
	}
}

// TestRepairLeavesLonePublicHalf checks that Repair does not put back
// the public half of a next authority whose key a killed Tidy removed
// already: alone it loads as nothing, and the next init would refuse on
// it.
func TestRepairLeavesLonePublicHalf(t *testing.T) {
	for _, typ := range Types {
		t.Run(string(typ), func(t *testing.T) {
			dir := t.TempDir()
			if err := Init(dir, []string{"127.0.0.1"}); err != nil {
				t.Fatal(err)
			}
			if _, err := CreateNext(dir, typ); err != nil {
				t.Fatal(err)
			}
			f := rotationFiles[typ]
			if err := os.Remove(filepath.Join(dir, f[1].key)); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(filepath.Join(dir, f[1].pub), filepath.Join(dir, f[1].pub+".tidy-KILLED")); err != nil {
				t.Fatal(err)
			}
			if _, err := Repair(dir); err != nil {
				t.Fatal(err)
			}
			if _, err := CreateNext(dir, typ); err != nil {
				t.Errorf("init after the repair: %v", err)
			}
		})
	}
}

// TestRepairPutsBackTidyAside checks that Repair finishes what a Tidy
// killed between its rename of a next file aside and its put-back left:
// the next files hold what they held (otherwise the store names a next
// authority no file holds, and every load fails on it), and an aside
// name that is only a second link to its file is removed.
func TestRepairPutsBackTidyAside(t *testing.T) {
	for _, typ := range Types {
		for _, tc := range []struct {
			name   string
			linked bool // killed after the put-back, before the removal
		}{
			{name: "killed before the put-back"},
			{name: "killed after the put-back", linked: true},
		} {
			t.Run(string(typ)+"/"+tc.name, func(t *testing.T) {
				dir := t.TempDir()
				if err := Init(dir, []string{"127.0.0.1"}); err != nil {
					t.Fatal(err)
				}
				next, err := CreateNext(dir, typ)
				if err != nil {
					t.Fatal(err)
				}
				f := rotationFiles[typ]
				for _, name := range []string{f[1].key, f[1].pub} {
					aside := filepath.Join(dir, name+".tidy-KILLED")
					if err := os.Rename(filepath.Join(dir, name), aside); err != nil {
						t.Fatal(err)
					}
					if tc.linked {
						if err := os.Link(aside, filepath.Join(dir, name)); err != nil {
							t.Fatal(err)
						}
					}
				}
				if _, err := Repair(dir); err != nil {
					t.Fatal(err)
				}
				if !NextHolds(dir, typ, next) {
					t.Errorf("the next files no longer hold %s", next)
				}
				noTidyLeftovers(t, dir)
			})
		}
	}
}

// TestTidyRacingRepair checks that a Tidy whose file an issuer starting
// meanwhile puts back (Repair) still removes what it was told to, and
// still leaves what it was not.
func TestTidyRacingRepair(t *testing.T) {
	for _, drop := range []bool{true, false} {
		t.Run(fmt.Sprint("drop=", drop), func(t *testing.T) {
			dir := t.TempDir()
			if err := Init(dir, []string{"127.0.0.1"}); err != nil {
				t.Fatal(err)
			}
			a, err := LoadRotating(dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			next, err := CreateNext(dir, TypeSSHUser)
			if err != nil {
				t.Fatal(err)
			}
			once := true
			testAside = func() {
				if once {
					once = false
					if _, err := Repair(dir); err != nil {
						t.Error(err)
					}
				}
			}
			t.Cleanup(func() { testAside = func() {} })
			dropped := "SHA256:another"
			if drop {
				dropped = next
			}
			if err := Tidy(dir, TypeSSHUser, a.Fingerprint(TypeSSHUser), dropped); err != nil {
				t.Fatalf("Tidy: %v", err)
			}
			if holds := NextHolds(dir, TypeSSHUser, next); holds == drop {
				t.Errorf("the next files hold %s: %v; want %v", next, holds, !drop)
			}
			noTidyLeftovers(t, dir)
		})
	}
}

// noTidyLeftovers fails the test if dir holds a file that Tidy set aside.
func noTidyLeftovers(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tidy-") {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}
