package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
	bolt "go.etcd.io/bbolt"
)

// ErrRotationConflict is a SetRotation whose expected record is not the
// stored one: another admin, perhaps through another issuer, moved the
// rotation first.
var ErrRotationConflict = errors.New("rotation changed meanwhile")

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
	// Version counts the writes of the record; SetRotation sets it.
	// SetRotation compares it rather than the phase alone, which a
	// rotation revisits (standby, init, ..., standby again): a move
	// decided on a record read before such a round would otherwise
	// store that record's stale fingerprints. A type without a record,
	// and a record written before versions, are at 0.
	Version uint64 `json:"version,omitempty"`
}

// bucketRotations holds one Rotation per type, by type. It is made by the
// first SetRotation.
var bucketRotations = []byte("rotations")

func checkRotation(r, from Rotation) error {
	if r.Type == "" || r.Phase == "" || from.Phase == "" {
		return fmt.Errorf("store: set rotation: type %q, phase %q and the expected phase %q must be set", r.Type, r.Phase, from.Phase)
	}
	if from.Type != r.Type {
		return fmt.Errorf("store: set rotation %s: the expected record is of type %q", r.Type, from.Type)
	}
	return nil
}

// casRotation returns r as SetRotation stores it over stored (the
// standby at version 0 for a type without a record), or
// ErrRotationConflict if stored is not the record from the caller read.
// The version decides; the phase is compared too, so that a caller that
// made up its expected record is refused rather than believed.
func casRotation(r, from, stored Rotation) (Rotation, error) {
	if stored.Version != from.Version || stored.Phase != from.Phase {
		return Rotation{}, fmt.Errorf("store: set rotation %s: %w: it is %s (write %d), not %s (write %d)",
			r.Type, ErrRotationConflict, stored.Phase, stored.Version, from.Phase, from.Version)
	}
	if stored.Version == math.MaxUint64 {
		// Only a forged or damaged record gets here; the next version
		// would be 0, that of a type never written.
		return Rotation{}, fmt.Errorf("store: set rotation %s: the stored record is at the last version %d", r.Type, stored.Version)
	}
	r.Version = stored.Version + 1
	return r, nil
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

func (s *boltStore) SetRotation(ctx context.Context, r, from Rotation) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkRotation(r, from); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketRotations)
		if err != nil {
			return fmt.Errorf("store: set rotation %s: %w", r.Type, err)
		}
		stored := Rotation{Type: r.Type, Phase: RotationStandby}
		if _, err := get(b, r.Type, &stored); err != nil {
			return fmt.Errorf("store: rotation %s: %w", r.Type, err)
		}
		r, err := casRotation(r, from, stored)
		if err != nil {
			return err
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

func (s *pgStore) SetRotation(ctx context.Context, r, from Rotation) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkRotation(r, from); err != nil {
		return err
	}
	return s.tx(ctx, func(tx pgx.Tx) error {
		// The version is in the document, compared here under the row's
		// lock. A missing row is the standby at version 0; the insert of
		// two admins racing from there is decided by the primary key.
		stored := Rotation{Type: r.Type, Phase: RotationStandby}
		var old []byte
		err := tx.QueryRow(ctx, `SELECT doc FROM rotations WHERE type = $1 FOR UPDATE`, r.Type).Scan(&old)
		found := err == nil
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return fmt.Errorf("store: rotation %s: %w", r.Type, err)
		default:
			if err := json.Unmarshal(old, &stored); err != nil {
				return fmt.Errorf("store: rotation %s: decode: %w", r.Type, err)
			}
		}
		r, err := casRotation(r, from, stored)
		if err != nil {
			return err
		}
		doc, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("store: set rotation %s: %w", r.Type, err)
		}
		if found {
			if _, err := tx.Exec(ctx, `UPDATE rotations SET phase = $2, doc = $3 WHERE type = $1`, r.Type, r.Phase, doc); err != nil {
				return fmt.Errorf("store: set rotation %s: %w", r.Type, err)
			}
			return pgBump(ctx, tx)
		}
		tag, err := tx.Exec(ctx, `INSERT INTO rotations (type, phase, doc) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`, r.Type, r.Phase, doc)
		if err != nil {
			return fmt.Errorf("store: set rotation %s: %w", r.Type, err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("store: set rotation %s: %w: another admin made its first record", r.Type, ErrRotationConflict)
		}
		return pgBump(ctx, tx)
	})
}
