package integration

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/integration/harness"
	"github.com/mwi-project/mwi/internal/pgtest"
)

// TestIssuerRestartOnPostgres is TestIssuerRestart with serve --store on
// PostgreSQL: a join, a consumed token and the generation survive a
// restart, nothing is written to the state directory's bbolt file, and the
// store's password appears nowhere in the issuer's output.
func TestIssuerRestartOnPostgres(t *testing.T) {
	t.Parallel()
	pg := pgtest.StartT(t)
	url, err := pg.CreateDatabase("mwi", "")
	if err != nil {
		t.Fatal(err)
	}
	// The server trusts local connections, so any password does; it is
	// there to be looked for in the output.
	url = strings.Replace(url, "postgres@", "postgres:s3cret-pw@", 1)

	iss := harness.StartIssuerWith(t, resources(harness.CurrentUser(t)), harness.IssuerOptions{Args: []string{"--store", url}})
	token := iss.CreateToken(t, "ci", time.Hour)
	d := harness.StartDaemon(t, iss, harness.DaemonOptions{Token: token, TTL: 10 * time.Second})
	before := d.WaitState(t, "ready", 20*time.Second)

	iss.Stop(t)
	iss.Start(t)

	d2 := harness.StartDaemon(t, iss, harness.DaemonOptions{Token: token})
	d2.WaitError(t, api.CodeTokenUsed, 20*time.Second)
	harness.Eventually(t, 30*time.Second, "renewal after the restart", func() error {
		st, err := d.Status(t)
		if err != nil {
			return err
		}
		if st.State != "ready" || st.Generation < before.Generation+2 {
			return errors.New("state " + st.State + ", error " + st.LastError)
		}
		return nil
	})

	if _, err := os.Stat(filepath.Join(iss.State, "store.db")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("STATE/store.db with --store postgres://: %v, want it absent", err)
	}
	out := iss.Proc.Output()
	if !strings.Contains(out, "postgres://postgres:xxxxx@127.0.0.1") {
		t.Errorf("the issuer did not log its store:\n%s", out)
	}
	if strings.Contains(out, "s3cret-pw") {
		t.Errorf("the issuer's output holds the store's password:\n%s", out)
	}
}

// TestStoreURLNeverShowsThePassword runs store migrate, through the real
// program, on URLs of a real PostgreSQL whose passwords are written in
// the ways a user gets wrong (an @ or a / not percent-encoded) or given as
// sslpassword: no piece of a password is in the output, whether the URL
// is refused or the store opened.
func TestStoreURLNeverShowsThePassword(t *testing.T) {
	t.Parallel()
	pg := pgtest.StartT(t)
	url, err := pg.CreateDatabase("mwi", "")
	if err != nil {
		t.Fatal(err)
	}
	b := harness.Build(t)
	withPassword := func(pw string) string { return strings.Replace(url, "postgres@", "postgres:"+pw+"@", 1) }
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{withPassword("Qx7k@Wv3m"), false},
		{withPassword("Qx7k/Wv3m"), false},
		{withPassword("Qx7k%ZZWv3m"), false},
		{withPassword("Qx7kWv3m") + "&sslpassword=Jp9zHy4t", true},
		{withPassword("Qx7kWv3m") + "&sslmode=bogus&sslpassword=Jp9zHy4t", false},
	} {
		out, err := harness.Run(t.Context(), 60*time.Second, nil, b.Issuer, "store", "migrate", "--store", tc.url)
		if (err == nil) != tc.ok {
			t.Errorf("store migrate --store %s: %v, want success %v\n%s", tc.url, err, tc.ok, out)
		}
		for _, p := range []string{"Qx7k", "Wv3m", "Jp9z", "Hy4t"} {
			if strings.Contains(out, p) {
				t.Errorf("store migrate --store %s printed %q of a password:\n%s", tc.url, p, out)
			}
		}
	}
}
