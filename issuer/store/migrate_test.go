package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io/fs"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
)

// databaseAt returns the URL of a new database migrated up to version
// only, as an older issuer would have left it.
func databaseAt(t *testing.T, version int64) string {
	t.Helper()
	newDatabase(t) // starts the server, or skips
	pg.mu.Lock()
	pg.n++
	name := fmt.Sprintf("test_old_%d", pg.n)
	pg.mu.Unlock()
	url, err := pg.srv.CreateDatabase(name, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	dir, err := fs.Sub(migrations, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, dir, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, version); err != nil {
		t.Fatal(err)
	}
	return url
}

// TestTokenDoneMigrated checks that migration 3 gives the tokens stored
// before it the time Prune judges them by, so that they are pruned as
// Prune would have judged their docs: none early.
func TestTokenDoneMigrated(t *testing.T) {
	url := databaseAt(t, 2)
	ctx := context.Background()
	used := token("used", t0.Add(48*time.Hour))
	used.ConsumedAt, used.ConsumedBy = t0.Add(time.Nanosecond), "i1"
	unused := token("unused", t0.Add(2*time.Hour+time.Microsecond+1))
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range []Token{used, unused} {
		doc, err := json.Marshal(tok)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pool.Exec(ctx, `INSERT INTO tokens (hash, doc) VALUES ($1, $2)`, tok.Hash, doc); err != nil {
			t.Fatal(err)
		}
	}
	pool.Close()

	s, err := Open(url) // migrates to the last version
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	steps := []struct {
		now  time.Time
		want []string
	}{
		// Within a microsecond of its time, never before it.
		{t0.Add(TokenGrace), []string{"unused", "used"}},
		{t0.Add(TokenGrace + time.Microsecond), []string{"unused"}},
		{t0.Add(TokenGrace + 2*time.Hour + time.Microsecond), []string{"unused"}},
		{t0.Add(TokenGrace + 2*time.Hour + 2*time.Microsecond), nil},
	}
	for _, st := range steps {
		if _, err := s.Prune(ctx, st.now); err != nil {
			t.Fatal(err)
		}
		toks, err := s.Tokens(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, tok := range toks {
			got = append(got, tok.Hash)
		}
		if fmt.Sprint(got) != fmt.Sprint(st.want) {
			t.Errorf("after Prune at grace+%v: tokens %v, want %v", st.now.Sub(t0.Add(TokenGrace)), got, st.want)
		}
	}
}

// TestPrunePostgresReadsNoTokenDoc checks that PostgreSQL's Prune judges
// tokens by their done column and never decodes their docs: a token whose
// doc cannot be decoded is pruned all the same.
func TestPrunePostgresReadsNoTokenDoc(t *testing.T) {
	s, url := openPostgresTemp(t)
	ctx := context.Background()
	if err := s.PutToken(ctx, token("garbled", t0)); err != nil {
		t.Fatal(err)
	}
	if err := s.PutToken(ctx, token("kept", t0.Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `UPDATE tokens SET doc = 'not json' WHERE hash = 'garbled'`); err != nil {
		t.Fatal(err)
	}
	st, err := s.Prune(ctx, t0.Add(TokenGrace))
	if err != nil || st.Tokens != 1 {
		t.Fatalf("Prune = %+v, %v; want the garbled token removed without reading it", st, err)
	}
	if toks, err := s.Tokens(ctx); err != nil || len(toks) != 1 || toks[0].Hash != "kept" {
		t.Fatalf("Tokens after Prune = %+v, %v; want kept only", toks, err)
	}
}
