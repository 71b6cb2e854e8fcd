// Package audit writes the issuer's audit log: one structured line for each
// decision the issuer makes.
package audit

import (
	"context"
	"io"
	"log/slog"
)

// Events.
const (
	EventJoin          = "join"
	EventJoinChallenge = "join.challenge"
	EventRenew         = "renew"
	EventIssue         = "issue"
	EventTokenCreate   = "token.create"
	EventBotLock       = "bot.lock"
	EventBotUnlock     = "bot.unlock"
	// EventInstanceLock and EventInstanceUnlock name the instance (and its
	// bot) whose lock was set or lifted.
	EventInstanceLock   = "instance.lock"
	EventInstanceUnlock = "instance.unlock"
)

// Outcomes.
const (
	Allowed = "allowed"
	Denied  = "denied"
)

// Log records audit events as JSON lines.
type Log struct {
	l *slog.Logger
}

// New returns a Log that writes to w.
func New(w io.Writer) *Log {
	return &Log{l: slog.New(slog.NewJSONHandler(w, nil))}
}

// Record writes one event. A denial must carry a "reason" attribute.
func (a *Log) Record(ctx context.Context, event, outcome string, attrs ...slog.Attr) {
	all := append([]slog.Attr{slog.String("event", event), slog.String("outcome", outcome)}, attrs...)
	a.l.LogAttrs(ctx, slog.LevelInfo, "audit", all...)
}
