package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	bolt "go.etcd.io/bbolt"
)

// ErrRotationConflict is a SetRotation whose expected phase is not the
// stored one: another admin, perhaps through another issuer, moved the
// rotation first.
var ErrRotationConflict = errors.New("rotation phase changed meanwhile")

// RotationStandby is the phase of a type with no stored rotation record.
const RotationStandby = "standby"

// Rotation is the state of the rotation of one certificate authority
// type, as package ca names it (ssh_user, ssh_host, identity, kube, tls).
type Rotation struct {
	Type  string `json:"type"`
	Phase string `json:"phase"`
	// Started is when Phase began.
	Started time.Time `json:"started"`
	// Current and Next are the fingerprints of the authority in use and
	// of the one that replaces it; Next is empty when no rotation is in
	// progress.
	Current string `json:"current"`
	Next    string `json:"next,omitempty"`
	// Switched is when Next began to sign (the update_clients phase
	// began); zero before. A rollback keeps it: until the rollback
	// began, Next signed.
	Switched time.Time `json:"switched,omitzero"`
	// Admin is who made the last change, for status.
	Admin string `json:"admin,omitempty"`
}

// bucketRotations holds one Rotation per type, by type. It is made by the
// first SetRotation.
var bucketRotations = []byte("rotations")

func checkRotation(r Rotation, fromPhase string) error {
	if r.Type == "" || r.Phase == "" || fromPhase == "" {
		return fmt.Errorf("store: set rotation: type %q, phase %q and the expected phase %q must be set", r.Type, r.Phase, fromPhase)
	}
	return nil
}

func (s *boltStore) Rotations(ctx context.Context) ([]Rotation, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := []Rotation{}
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRotations)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var r Rotation
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("store: rotation %q: decode: %w", k, err)
			}
			out = append(out, r)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (s *boltStore) SetRotation(ctx context.Context, r Rotation, fromPhase string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkRotation(r, fromPhase); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketRotations)
		if err != nil {
			return fmt.Errorf("store: set rotation %s: %w", r.Type, err)
		}
		stored := RotationStandby
		var old Rotation
		found, err := get(b, r.Type, &old)
		if err != nil {
			return fmt.Errorf("store: rotation %s: %w", r.Type, err)
		}
		if found {
			stored = old.Phase
		}
		if stored != fromPhase {
			return fmt.Errorf("store: set rotation %s: %w: it is %s, not %s", r.Type, ErrRotationConflict, stored, fromPhase)
		}
		if _, err := put(b, r.Type, r); err != nil {
			return fmt.Errorf("store: set rotation %s: %w", r.Type, err)
		}
		return boltBump(tx)
	})
}

func (s *pgStore) Rotations(ctx context.Context) ([]Rotation, error) {
	out, err := queryDocs[Rotation](ctx, s, "rotation", `SELECT doc FROM rotations ORDER BY type`)
	if out == nil && err == nil {
		out = []Rotation{}
	}
	return out, err
}

func (s *pgStore) SetRotation(ctx context.Context, r Rotation, fromPhase string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkRotation(r, fromPhase); err != nil {
		return err
	}
	doc, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("store: set rotation %s: %w", r.Type, err)
	}
	return s.tx(ctx, func(tx pgx.Tx) error {
		// A missing row is in standby; the insert of two admins racing
		// from there is decided by the primary key, and the loser's
		// conditional update then finds the winner's phase.
		var stored string
		err := tx.QueryRow(ctx, `SELECT phase FROM rotations WHERE type = $1 FOR UPDATE`, r.Type).Scan(&stored)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			if fromPhase != RotationStandby {
				return fmt.Errorf("store: set rotation %s: %w: it is %s, not %s", r.Type, ErrRotationConflict, RotationStandby, fromPhase)
			}
			tag, err := tx.Exec(ctx, `INSERT INTO rotations (type, phase, doc) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`, r.Type, r.Phase, doc)
			if err != nil {
				return fmt.Errorf("store: set rotation %s: %w", r.Type, err)
			}
			if tag.RowsAffected() == 0 {
				return fmt.Errorf("store: set rotation %s: %w", r.Type, ErrRotationConflict)
			}
		case err != nil:
			return fmt.Errorf("store: rotation %s: %w", r.Type, err)
		case stored != fromPhase:
			return fmt.Errorf("store: set rotation %s: %w: it is %s, not %s", r.Type, ErrRotationConflict, stored, fromPhase)
		default:
			if _, err := tx.Exec(ctx, `UPDATE rotations SET phase = $2, doc = $3 WHERE type = $1`, r.Type, r.Phase, doc); err != nil {
				return fmt.Errorf("store: set rotation %s: %w", r.Type, err)
			}
		}
		return pgBump(ctx, tx)
	})
}
