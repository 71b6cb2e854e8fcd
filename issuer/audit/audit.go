// Package audit writes the issuer's audit log: one structured line for each
// decision the issuer makes.
//
// Every record is a JSON object that starts with the same fields: "time"
// (UTC), "code" (the event's stable code, see Code), "event", "outcome",
// "id" (unique to the record), "cluster" (the issuer's cluster name), then
// the event's own attributes, then the actor that WithActor put in the
// request's context, such as the uid of an admin socket's caller. Serial
// numbers are strings. A decision is one record: a join or a renewal names
// the certificates it issued. A key is on a line once, so that no
// attribute can pass for one of the fields every record starts with: an
// attribute whose key is taken is written under the key followed by "_".
//
// A Log opened on a file with Open can Reopen it, so that logrotate can
// rename the file and signal the issuer instead of copying and truncating
// it.
//
// The log is bounded and fails closed. Every value is cut to MaxValue bytes,
// so a request cannot put more than that in any attribute. Each record is
// one JSON line written with a single Write, so concurrent records never
// interleave, and a failed or short write is returned to the caller: a
// decision that issues something must be refused when its record was not
// written. Err reports whether the last write failed, for health checks.
//
// Denials are rate-limited per event, because whoever is refused controls
// how many there are: past the limit they are counted instead of written,
// and one record says how many were left out once the event's records are
// written again.
package audit

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"reflect"
	"slices"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"
)

// Events.
const (
	EventJoin          = "join"
	EventJoinChallenge = "join.challenge"
	EventRenew         = "renew"
	EventTokenCreate   = "token.create"
	EventBotLock       = "bot.lock"
	EventBotUnlock     = "bot.unlock"
	// EventInstanceLock and EventInstanceUnlock name the instance (and its
	// bot) whose lock was set or lifted.
	EventInstanceLock   = "instance.lock"
	EventInstanceUnlock = "instance.unlock"
	// EventTokenLock and EventTokenUnlock name the token resource whose
	// instances a lock refuses.
	EventTokenLock   = "token.lock"
	EventTokenUnlock = "token.unlock"
	// EventCARotate is a move of a certificate authority's rotation
	// to another phase (mwi-issuer ca rotate).
	EventCARotate = "ca.rotate"
	// EventSSHRefused is a login that a host refused to an MWI
	// certificate, as the host's mwid reports it.
	EventSSHRefused = "ssh_refused"
	// EventNodes is a bot's request for the hosts it may reach (GET
	// /v1/nodes); only refusals are recorded.
	EventNodes = "nodes"
	// EventRequest is a request refused before it reached a decision: a
	// body that does not decode or is too large, a renewal without an
	// identity. Its "path" attribute names the route.
	EventRequest = "request"
	// EventTLS is a TLS handshake refused, such as for a client
	// certificate that the identity authority did not sign.
	EventTLS = "tls"
	// EventAdmin is a caller refused by the admin socket.
	EventAdmin = "admin"
	// EventResourceCreate and EventResourceDelete are resource documents
	// created, replaced or removed through the admin socket, with their
	// kind and name and the caller's uid.
	EventResourceCreate = "resource.create"
	EventResourceDelete = "resource.delete"
	// EventTokenDelete is a one-time join token removed.
	EventTokenDelete = "token.delete"
	// EventAdminIssue is an admin identity issued: its name, serial and
	// expiry, and the uid that asked for it.
	EventAdminIssue = "admin.issue"
)

// Outcomes.
const (
	Allowed = "allowed"
	Denied  = "denied"
	// Suppressed is the outcome of the record that counts the denials of
	// an event that were not written because they came too fast.
	Suppressed = "suppressed"
)

// DefaultCluster is the cluster name of a Log that names none.
const DefaultCluster = "mwi"

// MaxValue bounds each attribute value of a record, in bytes. A longer
// string is cut, and says so and how long it was.
const MaxValue = 1024

// Default rate of denials written for each event: DenialBurst at once,
// then DenialsPerSecond.
const (
	DenialsPerSecond = 20
	DenialBurst      = 100
)

// ErrShortWrite is the error of a record that was written only in part.
var ErrShortWrite = errors.New("audit: short write")

// Log records audit events as JSON lines.
type Log struct {
	// Logger receives write failures and recoveries; nil means
	// slog.Default().
	Logger *slog.Logger
	// Cluster is the name of the issuer's cluster, written in every
	// record; empty means DefaultCluster. Set it before the first record.
	Cluster string

	mu      sync.Mutex
	w       io.Writer
	path    string   // of the file w, if Open opened it
	kind    fileKind // of the file Open opened
	err     error    // of the last write
	torn    bool     // the last write stopped in the middle of a line
	now     func() time.Time
	rate    float64 // denials per second for each event
	burst   float64
	buckets map[string]*bucket // by event
}

// bucket is the token bucket of one event's denials.
type bucket struct {
	tokens  float64
	last    time.Time
	dropped int       // denials not written since the last one written
	since   time.Time // of the first of them
}

// New returns a Log that writes to w. If w is an *os.File, it should be
// opened with O_APPEND.
func New(w io.Writer) *Log {
	return &Log{w: w, now: time.Now, rate: DenialsPerSecond, burst: DenialBurst}
}

// Open returns a Log that appends to the file at path, which it creates
// with mode 0600 if it does not exist. Close it when done.
func Open(path string) (*Log, error) {
	fi, err := os.Lstat(path)
	link := err == nil && fi.Mode()&fs.ModeSymlink != 0
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	k, err := kindOf(f, link)
	if err != nil {
		f.Close()
		return nil, err
	}
	a := New(f)
	a.path, a.kind = path, k
	return a, nil
}

// fileKind is what Open found at the log's path, which Reopen holds the
// file it opens to.
type fileKind struct {
	link bool        // the path was a symbolic link
	typ  fs.FileMode // the file's type: regular, a device, a FIFO
	uid  int         // its owner
}

func kindOf(f *os.File, link bool) (fileKind, error) {
	fi, err := f.Stat()
	if err != nil {
		return fileKind{}, fmt.Errorf("audit log: %w", err)
	}
	k := fileKind{link: link, typ: fi.Mode().Type(), uid: -1}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		k.uid = int(st.Uid)
	}
	return k, nil
}

// Reopen opens the log's file again by its name and writes the records
// that follow to it, then closes the file it wrote to until then. After
// logrotate renames the file, Reopen makes a new one, and every record is
// in one of the two. If the file cannot be opened, the log keeps writing
// to the file it had, and Reopen returns the error. Reopen does nothing
// to a Log that Open did not make.
//
// Whoever can write to the file's directory could put something else at
// the path once logrotate renamed the file. Reopen takes only what Open
// found there: the same type of file (a regular file, or the device or
// FIFO the log was opened on), with the same owner, and a symbolic link
// only if the path was one. It does not wait for a FIFO's reader, which
// would hold every record back.
func (a *Log) Reopen() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.path == "" {
		return nil
	}
	flags := os.O_WRONLY | os.O_APPEND | os.O_CREATE | syscall.O_NONBLOCK | syscall.O_CLOEXEC
	if !a.kind.link {
		flags |= syscall.O_NOFOLLOW
	}
	f, err := os.OpenFile(a.path, flags, 0o600)
	switch {
	case errors.Is(err, syscall.ELOOP):
		return fmt.Errorf("audit log %s: is a symbolic link now, and was not when the log was opened", a.path)
	case errors.Is(err, syscall.ENXIO):
		return fmt.Errorf("audit log %s: is a FIFO without a reader, or a socket", a.path)
	case err != nil:
		return fmt.Errorf("audit log: %w", err)
	}
	k, err := kindOf(f, a.kind.link)
	switch {
	case err != nil:
	case k.typ != a.kind.typ:
		err = fmt.Errorf("audit log %s: is a %s now, not a %s as when the log was opened", a.path, typeName(k.typ), typeName(a.kind.typ))
	case k.uid != a.kind.uid:
		err = fmt.Errorf("audit log %s: is owned by uid %d now, not by uid %d as when the log was opened", a.path, k.uid, a.kind.uid)
	}
	if err != nil {
		f.Close()
		return err
	}
	old := a.w.(*os.File)
	a.w = f
	// A write torn in the old file stays there; the new one starts clean.
	a.torn = false
	return old.Close()
}

// typeName names a file's type for a message.
func typeName(t fs.FileMode) string {
	switch {
	case t.IsRegular():
		return "regular file"
	case t&fs.ModeDir != 0:
		return "directory"
	case t&fs.ModeNamedPipe != 0:
		return "FIFO"
	case t&fs.ModeSocket != 0:
		return "socket"
	case t&fs.ModeCharDevice != 0:
		return "character device"
	case t&fs.ModeDevice != 0:
		return "device"
	}
	return "file of type " + t.String()
}

// Close closes the file that Open opened. It does not write the denials
// left out; call Flush first.
func (a *Log) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.path == "" {
		return nil
	}
	return a.w.(*os.File).Close()
}

// actorKey is the context key of WithActor's attributes.
type actorKey struct{}

// WithActor returns a copy of ctx whose records name the actor by attrs,
// such as the uid of an admin socket's caller or the name of a remote
// admin: every record written with the context carries them, whichever
// package writes it.
func WithActor(ctx context.Context, attrs ...slog.Attr) context.Context {
	return context.WithValue(ctx, actorKey{}, append(Actor(ctx), attrs...))
}

// Actor returns the attributes that WithActor put in ctx.
func Actor(ctx context.Context) []slog.Attr {
	attrs, _ := ctx.Value(actorKey{}).([]slog.Attr)
	return slices.Clip(attrs)
}

func (a *Log) logger() *slog.Logger {
	if a.Logger != nil {
		return a.Logger
	}
	return slog.Default()
}

// Err returns the error of the last write, or nil if it succeeded. Once a
// write fails, Err reports it until a later write succeeds.
func (a *Log) Err() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}

// Record writes one event. A denial must carry a "reason" attribute. The
// keys of the fields every record starts with (see the package
// documentation), and "level" and "msg", are not for attrs.
//
// Record returns an error if the record could not be written whole. A
// caller about to issue anything must then refuse; Record has already
// logged the failure. A denial past the rate limit is counted and not
// written, and Record returns nil.
func (a *Log) Record(ctx context.Context, event, outcome string, attrs ...slog.Attr) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	// Counts of left-out denials are written first, for every event whose
	// denials may be written again.
	var errs []error
	for ev, b := range a.buckets {
		if b.dropped > 0 && a.refill(b, now) >= 1 {
			errs = append(errs, a.summaryLocked(ctx, ev, b, now))
		}
	}
	if outcome == Denied {
		b := a.bucket(event, now)
		if a.refill(b, now) < 1 {
			if b.dropped == 0 {
				b.since = now
			}
			b.dropped++
			return errors.Join(errs...)
		}
		b.tokens--
	}
	return errors.Join(append(errs, a.writeLocked(ctx, now, event, outcome, a.attrs(ctx, event, outcome, attrs)))...)
}

// attrs returns the attributes of a record: those every record starts
// with, then attrs, then the actor's from ctx unless attrs has their keys.
//
// Each key is written once, so that a reader of the line, which keeps the
// last of two equal keys, reads the record as it was meant: an attribute
// whose key is taken, such as one named "outcome" or "time", is written
// under its key followed by "_" (as many as it takes). A group without a
// key is taken apart, since the handler writes its attributes at the top
// level.
func (a *Log) attrs(ctx context.Context, event, outcome string, attrs []slog.Attr) []slog.Attr {
	all := make([]slog.Attr, 0, 6+len(attrs))
	all = append(all,
		slog.String("code", Code(event, outcome)),
		slog.String("event", event),
		slog.String("outcome", outcome),
		slog.String("id", newID()),
		slog.String("cluster", cmp.Or(a.Cluster, DefaultCluster)))
	// The handler's own keys: "time" is written first, and "level" and
	// "msg" would be left out by replace.
	taken := map[string]bool{slog.TimeKey: true, slog.LevelKey: true, slog.MessageKey: true}
	for _, at := range all {
		taken[at.Key] = true
	}
	own := make(map[string]bool, len(attrs))
	var add func(at slog.Attr, isOwn bool)
	add = func(at slog.Attr, isOwn bool) {
		at.Value = at.Value.Resolve()
		if at.Key == "" && at.Value.Kind() == slog.KindGroup {
			for _, g := range at.Value.Group() {
				add(g, isOwn)
			}
			return
		}
		at.Key = truncate(at.Key)
		if isOwn {
			own[at.Key] = true
		}
		for taken[at.Key] {
			at.Key += "_"
		}
		taken[at.Key] = true
		all = append(all, at)
	}
	for _, at := range attrs {
		add(at, true)
	}
	for _, act := range Actor(ctx) {
		if !own[truncate(act.Key)] {
			add(act, false)
		}
	}
	return all
}

// newID returns a record's id: 96 random bits, so that ids are unique
// across every issuer and every restart without coordination.
func newID() string {
	var b [12]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Flush writes the count of every event's denials that were left out and
// not yet reported, as when the issuer stops.
func (a *Log) Flush(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var errs []error
	for ev, b := range a.buckets {
		if b.dropped > 0 {
			errs = append(errs, a.summaryLocked(ctx, ev, b, a.now()))
		}
	}
	return errors.Join(errs...)
}

func (a *Log) bucket(event string, now time.Time) *bucket {
	if a.buckets == nil {
		a.buckets = make(map[string]*bucket)
	}
	b, ok := a.buckets[event]
	if !ok {
		b = &bucket{tokens: a.burst, last: now}
		a.buckets[event] = b
	}
	return b
}

// refill adds the tokens earned since b's last refill and returns how many
// b holds.
func (a *Log) refill(b *bucket, now time.Time) float64 {
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(a.burst, b.tokens+d.Seconds()*a.rate)
	}
	b.last = now
	return b.tokens
}

// summaryLocked writes the count of b's left-out denials.
func (a *Log) summaryLocked(ctx context.Context, event string, b *bucket, now time.Time) error {
	n, since := b.dropped, b.since
	b.dropped = 0
	return a.writeLocked(ctx, now, event, Suppressed,
		a.attrs(context.Background(), event, Suppressed, []slog.Attr{
			slog.Int("count", n), slog.Time("since", since),
			slog.String("reason", fmt.Sprintf("%d denials were not recorded: more than %g a second", n, a.rate)),
		}))
}

// writeLocked writes one record as one line with one Write.
func (a *Log) writeLocked(ctx context.Context, now time.Time, event, outcome string, attrs []slog.Attr) error {
	var buf bytes.Buffer
	if a.torn {
		// End the piece of line a failed write left, so that it does not
		// swallow this record.
		buf.WriteByte('\n')
	}
	h := slog.NewJSONHandler(&buf, &slog.HandlerOptions{ReplaceAttr: replace})
	r := slog.NewRecord(now, slog.LevelInfo, "audit", 0)
	r.AddAttrs(attrs...)
	if err := h.Handle(ctx, r); err != nil {
		return a.failed(event, outcome, fmt.Errorf("audit: encode: %w", err))
	}
	line := escapeControls(buf.Bytes())
	n, err := a.w.Write(line)
	if err == nil && n < len(line) {
		err = ErrShortWrite
	}
	if err != nil {
		if n > 0 && n < len(line) && !a.undo(n) {
			a.torn = true
		}
		return a.failed(event, outcome, err)
	}
	a.torn = false
	if a.err != nil {
		a.logger().Warn("audit log is written again", "after", a.err)
		a.err = nil
	}
	return nil
}

// escapeControls writes DEL and the C1 control characters (U+0080 to
// U+009F) of an encoded line as \u escapes, which the JSON encoder leaves
// as they are: the values read back are the same, and whoever shows the
// file on a terminal (tail -f) is not sent a control sequence that a
// request put in a value, such as U+009B, the terminal's CSI. The line's
// other bytes are JSON's own, so that these can only be in its strings.
func escapeControls(line []byte) []byte {
	isControl := func(r rune) bool { return r == 0x7f || r >= 0x80 && r <= 0x9f }
	if !bytes.ContainsFunc(line, isControl) {
		return line
	}
	out := make([]byte, 0, len(line)+32)
	for len(line) > 0 {
		r, size := utf8.DecodeRune(line)
		if isControl(r) {
			out = fmt.Appendf(out, `\u%04x`, r)
		} else {
			out = append(out, line[:size]...)
		}
		line = line[size:]
	}
	return out
}

// undo removes the n bytes a short write left at the end of the file, if
// the log is a file. It reports whether it did.
func (a *Log) undo(n int) bool {
	f, ok := a.w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Size() < int64(n) {
		return false
	}
	return f.Truncate(fi.Size()-int64(n)) == nil
}

func (a *Log) failed(event, outcome string, err error) error {
	a.err = err
	a.logger().Error("audit record not written", "event", event, "outcome", outcome, "err", err)
	return fmt.Errorf("audit: %s %s: %w", event, outcome, err)
}

// TimeFormat is the format of a record's time: UTC, to the microsecond.
const TimeFormat = "2006-01-02T15:04:05.000000Z07:00"

// replace writes a record's time in UTC, leaves out the level and message,
// which say nothing in an audit log, writes other times in UTC, and cuts
// values to MaxValue bytes.
func replace(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 {
		switch a.Key {
		case slog.TimeKey:
			if a.Value.Kind() == slog.KindTime {
				return slog.String(a.Key, a.Value.Time().UTC().Format(TimeFormat))
			}
		case slog.LevelKey, slog.MessageKey:
			return slog.Attr{}
		}
	}
	if a.Value.Kind() == slog.KindTime {
		return slog.String(a.Key, a.Value.Time().UTC().Format(time.RFC3339Nano))
	}
	return bound(groups, a)
}

// bound cuts a record's values to MaxValue bytes.
func bound(_ []string, a slog.Attr) slog.Attr {
	a.Key = truncate(a.Key)
	switch a.Value.Kind() {
	case slog.KindString:
		if s := a.Value.String(); len(s) > MaxValue {
			a.Value = slog.StringValue(truncate(s))
		}
	case slog.KindAny:
		switch v := a.Value.Any().(type) {
		case error:
			a.Value = slog.StringValue(truncate(v.Error()))
		default:
			// As the JSON handler would write it, if that is short. A
			// list may take MaxValue for each item, so that a record
			// naming several certificates keeps them as a list.
			limit := MaxValue
			if rv := reflect.ValueOf(v); rv.Kind() == reflect.Slice {
				limit *= max(1, rv.Len())
			}
			if b, err := json.Marshal(v); err != nil {
				a.Value = slog.StringValue(truncate(fmt.Sprintf("%+v", v)))
			} else if len(b) > limit {
				a.Value = slog.StringValue(truncate(string(b)))
			}
		}
	}
	return a
}

// truncate cuts s to MaxValue bytes, at a character boundary, and says so.
func truncate(s string) string {
	if len(s) <= MaxValue {
		return s
	}
	cut := MaxValue
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s…[truncated: %d bytes]", s[:cut], len(s))
}
