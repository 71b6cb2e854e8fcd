package agent

import (
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/mwi-project/mwi/internal/logging"
)

// LogWriter returns a writer for the standard log package that passes
// each line to log at info level, at most a few lines a second.
//
// x/crypto's agent server writes a line to the standard logger for every
// request it answers with a failure: an unknown message, a refused add, a
// signature refused for an expired certificate. A client decides how many
// of those there are, so without a bound one caller could write thousands
// of lines a second to mwid's log. The next line written after some were
// dropped says how many.
func LogWriter(log *slog.Logger) io.Writer {
	return &logWriter{log: log}
}

type logWriter struct {
	log   *slog.Logger
	lines logging.Limit
}

func (w *logWriter) Write(p []byte) (int, error) {
	ok, dropped := w.lines.Allow(time.Now())
	if !ok {
		return len(p), nil
	}
	msg := strings.TrimSuffix(string(p), "\n")
	if dropped > 0 {
		w.log.Info(msg, "suppressed", dropped)
	} else {
		w.log.Info(msg)
	}
	return len(p), nil
}
