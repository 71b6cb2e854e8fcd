package pgtest_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/mwi-project/mwi/internal/pgtest"
)

// TestHaltResume checks that a halted server refuses connections, and that
// Resume brings it back on the same port with the same data.
func TestHaltResume(t *testing.T) {
	s := pgtest.StartT(t)
	url, err := s.CreateDatabase("kept", "")
	if err != nil {
		t.Fatal(err)
	}
	exec := func(q string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, q)
		return err
	}
	if err := exec(`CREATE TABLE t (v int); INSERT INTO t VALUES (7)`); err != nil {
		t.Fatal(err)
	}
	port := s.Port
	s.Halt()
	if err := exec(`SELECT 1`); err == nil {
		t.Fatal("a halted server accepted a connection")
	}
	if err := s.Resume(); err != nil {
		t.Fatal(err)
	}
	if s.Port != port {
		t.Errorf("port after Resume = %d, want %d", s.Port, port)
	}
	if err := exec(`DO $$ BEGIN IF (SELECT v FROM t) <> 7 THEN RAISE 'lost'; END IF; END $$`); err != nil {
		t.Fatalf("data after Resume: %v", err)
	}
	if err := s.Resume(); err == nil {
		t.Error("Resume of a running server succeeded")
	}
}
