package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/fault"
	"github.com/mwi-project/mwi/internal/httpjson"
	"github.com/mwi-project/mwi/issuer/audit"
	"github.com/mwi-project/mwi/issuer/ca"
	"github.com/mwi-project/mwi/issuer/resource"
	"github.com/mwi-project/mwi/issuer/store"
)

// maxNotCaughtUp bounds the instances a rotation's status lists.
const maxNotCaughtUp = 100

// rotator is the admin API's view of CA rotations.
type rotator interface {
	RotateCA(ctx context.Context, req api.RotateCARequest) (api.CARotations, error)
	CARotations(ctx context.Context) (api.CARotations, error)
}

// rotationLimits bound a rotate request.
var rotationLimits = httpjson.Limits{Body: 4 << 10, String: 64, Items: 4}

// rotationRoutes adds the CA rotation routes to r.
func rotationRoutes(r chi.Router, ro rotator, al *audit.Log, log *slog.Logger) {
	r.Post("/admin/v1/ca/rotate", handler(log, func(w http.ResponseWriter, r *http.Request) error {
		var req api.RotateCARequest
		if err := httpjson.Decode(r, &req, rotationLimits); err != nil {
			return refused(r, al, err)
		}
		out, err := ro.RotateCA(r.Context(), req)
		if err != nil {
			return err
		}
		httpjson.Write(w, http.StatusOK, out)
		return nil
	}))
	r.Get("/admin/v1/ca/rotations", handler(log, func(w http.ResponseWriter, r *http.Request) error {
		out, err := ro.CARotations(r.Context())
		if err != nil {
			return err
		}
		httpjson.Write(w, http.StatusOK, out)
		return nil
	}))
}

// caState is what the server last loaded of the rotations. reloadMu
// guards it.
type caState struct {
	rotations []store.Rotation           // as loaded
	loadErr   error                      // the last load's failure, if it failed
	tls       atomic.Pointer[tls.Config] // the HTTPS API's configuration for the authorities in use
}

// loadCAs loads the authorities as the store's rotation records say and
// puts them in use, unless they are what is in use already. On failure,
// such as a key that the state directory lacks, the authorities in use
// stay, and the failure is logged and shown in ca rotate status; the
// load is tried again at each poll of the store. s.reloadMu must be held.
func (s *Server) loadCAs(ctx context.Context) error {
	rs, err := s.auth.Store.Rotations(ctx)
	if err != nil {
		return err
	}
	if s.ca.loadErr == nil && s.ca.tls.Load() != nil && rotationsEqual(rs, s.ca.rotations) {
		return nil
	}
	// First the moves an issuer stopped half way left undone: a pair
	// caught between two renames, such as the Kubernetes CA's, does not
	// load.
	s.finishMoves(rs)
	states := make([]ca.State, 0, len(rs))
	for _, r := range rs {
		states = append(states, ca.State{Type: ca.Type(r.Type), Phase: r.Phase, Current: r.Current, Next: r.Next})
	}
	a, err := ca.LoadRotating(s.cfg.StateDir, states)
	if err != nil {
		if s.ca.loadErr == nil || s.ca.loadErr.Error() != err.Error() {
			s.log.Error("cannot load the authorities a CA rotation names; signing and trusting with the previous ones", "err", err)
		}
		s.ca.loadErr = err
		return err
	}
	if err := a.WriteKubeBundle(s.cfg.StateDir); err != nil {
		// API servers keep the bundle they have; the next load tries again.
		s.log.Error("cannot write the Kubernetes client CA bundle", "file", a.KubeCAFile(), "err", err)
		s.ca.loadErr = err
	} else {
		s.ca.loadErr = nil
	}
	s.auth.SetCAs(a)
	s.ca.tls.Store(tlsConfig(a, s.tlsNow))
	if s.ca.rotations != nil || len(rs) > 0 {
		s.log.Info("authorities loaded", "rotations", describeRotations(rs))
	}
	s.ca.rotations = rs
	return s.ca.loadErr
}

func rotationsEqual(a, b []store.Rotation) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return a != nil && b != nil && string(x) == string(y)
}

func describeRotations(rs []store.Rotation) string {
	var parts []string
	for _, r := range rs {
		parts = append(parts, r.Type+"="+r.Phase)
	}
	return strings.Join(parts, " ")
}

// rotationOf returns the stored rotation of t, or the standby of the
// authority a holds.
func rotationOf(rs []store.Rotation, t ca.Type, a *ca.Authority) store.Rotation {
	for _, r := range rs {
		if r.Type == string(t) {
			return r
		}
	}
	return store.Rotation{Type: string(t), Phase: ca.PhaseStandby, Current: a.Fingerprint(t)}
}

// RotateCA moves the rotation of the authorities req names to req.Phase,
// all or none: each must allow the move. Going to standby from
// update_servers retires the old authority; unless req.Force, it is
// refused while any instance that last renewed before the new authority
// began to sign may still hold a certificate from the old one.
func (s *Server) RotateCA(ctx context.Context, req api.RotateCARequest) (api.CARotations, error) {
	attrs := []slog.Attr{slog.String("type", req.Type), slog.String("to", req.Phase), slog.Bool("force", req.Force)}
	deny := func(err error) (api.CARotations, error) {
		return api.CARotations{}, s.refuse(ctx, audit.EventCARotate, err, attrs...)
	}
	var types []ca.Type
	if req.Type == "all" {
		types = ca.Types
	} else {
		t, err := ca.ParseType(req.Type)
		if err != nil {
			return deny(fault.Invalid(api.CodeBadRequest, "type: %v", err))
		}
		types = []ca.Type{t}
	}
	if !slices.Contains(ca.Phases, req.Phase) {
		return deny(fault.Invalid(api.CodeBadRequest, "phase %q: want one of %s", req.Phase, strings.Join(ca.Phases, ", ")))
	}
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	rs, err := s.auth.Store.Rotations(ctx)
	if err != nil {
		return api.CARotations{}, err
	}
	cur := s.auth.CAs()
	now := time.Now()
	var plan []store.Rotation
	var from []string
	for _, t := range types {
		r := rotationOf(rs, t, cur)
		if !slices.Contains(ca.NextPhases(r.Phase), req.Phase) {
			return deny(fault.FailedPrecondition(api.CodeRotationPhase, "the %s authority is in phase %s, which can go only to %s",
				t, r.Phase, strings.Join(ca.NextPhases(r.Phase), " or ")))
		}
		if r.Phase == ca.PhaseUpdateServers && req.Phase == ca.PhaseStandby && !req.Force {
			behind, total, err := s.notCaughtUp(ctx, time.Time{}, r.Switched, now)
			if err != nil {
				return api.CARotations{}, err
			}
			if total > 0 {
				return deny(fault.FailedPrecondition(api.CodeRotationPhase,
					"%d bot instances last renewed before the new %s authority began to sign and may still hold certificates from the old one, which would lose trust (%s); wait until they renew or expire (mwi-issuer ca rotate status), or retire it anyway with --force",
					total, t, describeBehind(behind)))
			}
		}
		// update_servers re-signs the serving certificate with the next
		// TLS authority: an mwid that has not renewed since it was
		// published does not hold its pin, and would never reach the
		// issuer again without a new ca_pins.
		if t == ca.TypeTLS && r.Phase == ca.PhaseUpdateClients && req.Phase == ca.PhaseUpdateServers && !req.Force {
			behind, total, err := s.notCaughtUp(ctx, time.Time{}, r.Switched, now)
			if err != nil {
				return api.CARotations{}, err
			}
			if total > 0 {
				return deny(fault.FailedPrecondition(api.CodeRotationPhase,
					"%d bot instances last renewed before update_clients began and may not hold the pin of the next %s authority: their mwid would stop trusting the issuer once its serving certificate is re-signed (%s); wait until they renew (mwi-issuer ca rotate status), or go on anyway with --force",
					total, t, describeBehind(behind)))
			}
		}
		// The standby after a rollback drops the next authority, which
		// signed from Switched until the rollback began: what it signed
		// then loses trust as the old one's does at a rotation's end.
		if r.Phase == ca.PhaseRollback && !r.Switched.IsZero() && req.Phase == ca.PhaseStandby && !req.Force {
			behind, total, err := s.notCaughtUp(ctx, r.Switched, r.Started, now)
			if err != nil {
				return api.CARotations{}, err
			}
			if total > 0 {
				return deny(fault.FailedPrecondition(api.CodeRotationPhase,
					"%d bot instances last renewed while the abandoned %s authority signed and may still hold certificates from it, which would lose trust (%s); wait until they renew or expire (mwi-issuer ca rotate status), or drop it anyway with --force",
					total, t, describeBehind(behind)))
			}
		}
		from = append(from, r.Phase)
		plan = append(plan, r)
	}
	// The next authorities of init are all made before any phase is
	// stored, so that a failure leaves no rotation naming a key that
	// was removed again.
	admin := callerName(ctx)
	created := map[ca.Type]string{}
	undo := func(from int) {
		for _, r := range plan[from:] {
			t := ca.Type(r.Type)
			if created[t] == "" {
				continue
			}
			if err := ca.Tidy(s.cfg.StateDir, t, r.Current, created[t]); err != nil {
				s.log.Warn("cannot remove the next authority of a refused rotation", "type", t, "err", err)
			}
		}
	}
	moves := make([]store.Rotation, len(plan))
	for i, r := range plan {
		t := ca.Type(r.Type)
		next := r
		next.Phase, next.Started, next.Admin = req.Phase, now, admin
		switch req.Phase {
		case ca.PhaseInit:
			s.finishMoves([]store.Rotation{r})
			fp, err := ca.CreateNext(s.cfg.StateDir, t)
			if err != nil {
				undo(0)
				return deny(fault.FailedPrecondition(api.CodeRotationPhase, "%v", err))
			}
			created[t] = fp
			next.Next, next.Switched = fp, time.Time{}
		case ca.PhaseUpdateClients:
			next.Switched = now
		case ca.PhaseRollback:
			// Switched stays: the standby after the rollback asks who
			// holds certificates the next authority signed.
		case ca.PhaseStandby:
			if r.Phase == ca.PhaseUpdateServers {
				next.Current = r.Next
			}
			next.Next, next.Switched = "", time.Time{}
		}
		moves[i] = next
	}
	// Nothing is stored that this issuer cannot load, such as a phase
	// that names a key its state directory lacks: every replica that
	// can would move, and this one, through which the admin moved it,
	// would not. A rollback is the exception: it is the way out of a
	// rotation whose next key is lost, and the standby after it needs
	// only the current one.
	if req.Phase == ca.PhaseRollback {
		// Stored whatever this issuer can load; see below.
	} else if err := s.canLoad(rs, moves); err != nil {
		undo(0)
		return deny(fault.FailedPrecondition(api.CodeRotationPhase, "this issuer cannot load the authorities of that phase, so it is not stored: %v", err))
	}
	for i, next := range moves {
		t := ca.Type(next.Type)
		if err := s.auth.Store.SetRotation(ctx, next, plan[i]); err != nil {
			// The types before i moved; the others did not, and their
			// new keys go.
			undo(i)
			if i > 0 {
				s.loadCAs(ctx)
			}
			if errors.Is(err, store.ErrRotationConflict) {
				// The types before i are stored: an admin told only of
				// the refusal would take the whole move for refused.
				var done string
				if i > 0 {
					names := make([]string, i)
					for j := range names {
						names[j] = moves[j].Type
					}
					done = fmt.Sprintf("; %s moved to %s before it", strings.Join(names, ", "), req.Phase)
				}
				return deny(fault.Conflict(api.CodeRotationConflict, "%v%s; see mwi-issuer ca rotate status", err, done))
			}
			return api.CARotations{}, err
		}
		if req.Phase == ca.PhaseStandby {
			// A rollback's standby drops the next authority it names;
			// the end of a rotation promotes it (next.Current).
			if err := ca.Tidy(s.cfg.StateDir, t, next.Current, plan[i].Next); err != nil {
				// The store says standby already, and every issuer
				// finds the authority by fingerprint: a retired
				// authority's files are moved at the next start, and
				// a rolled back one's are refused by the next init,
				// which names them.
				s.log.Error("cannot tidy the authority files after a rotation", "type", t, "err", err)
			}
		}
		if err := s.record(ctx, audit.EventCARotate, audit.Allowed, slog.String("type", string(t)), slog.String("from", from[i]),
			slog.String("to", req.Phase), slog.String("current", next.Current), slog.String("next", next.Next), slog.Bool("force", req.Force)); err != nil {
			s.log.Error("cannot audit a CA rotation", "err", err)
		}
	}
	if err := s.loadCAs(ctx); err != nil {
		return api.CARotations{}, fault.Internal(api.CodeInternal, "the rotation is stored, but this issuer cannot load it: %v", err)
	}
	return s.caRotations(ctx, now)
}

// canLoad reports why the authorities of rs with moves made in place of
// their types' records cannot be loaded, or nil.
func (s *Server) canLoad(rs, moves []store.Rotation) error {
	byType := map[string]store.Rotation{}
	for _, r := range rs {
		byType[r.Type] = r
	}
	for _, m := range moves {
		byType[m.Type] = m
	}
	states := make([]ca.State, 0, len(byType))
	for _, r := range byType {
		states = append(states, ca.State{Type: ca.Type(r.Type), Phase: r.Phase, Current: r.Current, Next: r.Next})
	}
	_, err := ca.LoadRotating(s.cfg.StateDir, states)
	return err
}

// CARotations returns the state of every authority's rotation.
func (s *Server) CARotations(ctx context.Context) (api.CARotations, error) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	return s.caRotations(ctx, time.Now())
}

func (s *Server) caRotations(ctx context.Context, now time.Time) (api.CARotations, error) {
	rs, err := s.auth.Store.Rotations(ctx)
	if err != nil {
		return api.CARotations{}, err
	}
	cur := s.auth.CAs()
	out := api.CARotations{Rotations: []api.CARotation{}}
	for _, t := range ca.Types {
		r := rotationOf(rs, t, cur)
		info := api.CARotation{Type: r.Type, Phase: r.Phase, Since: r.Started, Current: r.Current, Next: r.Next,
			Admin: r.Admin, Loaded: cur.Phase(t), NotCaughtUp: []api.CatchUp{}}
		if s.ca.loadErr != nil {
			info.LoadError = s.ca.loadErr.Error()
		}
		if r.Phase != ca.PhaseStandby {
			if info.NotCaughtUp, info.NotCaughtUpTotal, err = s.notCaughtUp(ctx, time.Time{}, r.Started, now); err != nil {
				return api.CARotations{}, err
			}
		}
		out.Rotations = append(out.Rotations, info)
	}
	return out, nil
}

// notCaughtUp returns the instances last issued certificates from from
// and before since whose certificates may not have expired at now (their
// roles' max_ttl after), at most maxNotCaughtUp of them, and how many
// there are.
func (s *Server) notCaughtUp(ctx context.Context, from, since, now time.Time) ([]api.CatchUp, int, error) {
	ins, err := s.auth.Store.Instances(ctx)
	if err != nil {
		return nil, 0, err
	}
	hosts, err := s.hosts(ctx)
	if err != nil {
		return nil, 0, err
	}
	set := s.auth.Resources()
	out := []api.CatchUp{}
	total := 0
	for _, in := range ins {
		last := in.Renewed
		if last.IsZero() {
			last = in.Created
		}
		if !last.Before(since) || last.Before(from) {
			continue
		}
		lifetime := resource.DefaultMaxTTL
		if g, err := set.Grant(in.Bot); err == nil {
			lifetime = g.MaxTTL
		}
		until := last.Add(lifetime)
		if !until.After(now) {
			continue
		}
		total++
		if len(out) < maxNotCaughtUp {
			c := api.CatchUp{Bot: in.Bot, Instance: in.ID, Renewed: last, Until: until}
			if n, ok := hosts[in.ID]; ok {
				c.Node = n.Names
			}
			out = append(out, c)
		}
	}
	return out, total, nil
}

// describeBehind names the first few instances of behind.
func describeBehind(behind []api.CatchUp) string {
	var parts []string
	for i, c := range behind {
		if i == 5 {
			parts = append(parts, "…")
			break
		}
		who := "bot " + c.Bot + " instance " + c.Instance
		if len(c.Node) > 0 {
			who += " (host " + strings.Join(c.Node, ",") + ")"
		}
		parts = append(parts, fmt.Sprintf("%s until %s", who, c.Until.UTC().Format(time.RFC3339)))
	}
	return strings.Join(parts, "; ")
}

// callerName names the admin caller for the rotation record.
func callerName(ctx context.Context) string {
	var parts []string
	for _, a := range callerAttrs(ctx) {
		if a.Key == "pid" {
			continue
		}
		parts = append(parts, a.Key+"="+a.Value.String())
	}
	return strings.Join(parts, " ")
}

// tidyAtStart finishes the file moves of rotations that reached standby
// but were stopped before their files were put in order.
func (s *Server) tidyAtStart(ctx context.Context) {
	rs, err := s.auth.Store.Rotations(ctx)
	if err != nil {
		return
	}
	s.finishMoves(rs)
}

// finishMoves finishes the file moves of the rotations of rs that reached
// standby but whose files Tidy has not put in order (see ca.TidyPending):
// an issuer stopped between the store write and the moves, or between two
// of them. It runs at start, before each load that follows a change, and
// before an init, which would otherwise refuse on those next files.
func (s *Server) finishMoves(rs []store.Rotation) {
	for _, r := range rs {
		if r.Phase != ca.PhaseStandby || !ca.TidyPending(s.cfg.StateDir, ca.Type(r.Type), r.Current) {
			continue
		}
		if err := ca.Tidy(s.cfg.StateDir, ca.Type(r.Type), r.Current, ""); err != nil {
			s.log.Warn("cannot finish the file moves of a rotation", "type", r.Type, "err", err)
		} else {
			s.log.Info("finished the file moves of a rotation stopped half way", "type", r.Type)
		}
	}
}

// servingConfig is the configuration the gate's handshakes start with: it
// hands each the configuration of the authorities in use, so that a
// rotation applies to the next handshake.
func (s *Server) servingConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.ca.tls.Load(), nil
		},
	}
}
