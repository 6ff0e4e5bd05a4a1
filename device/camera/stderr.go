package camera

import (
	"log/slog"
	"strings"
	"sync"
	"time"
)

// lineLogger is the stderr of an encoder process: it logs each line, capped in length, and at
// most perWindow lines a minute, so a chatty or broken encoder cannot flood the device's log.
// Lines end at '\n' or '\r' (progress meters rewrite one line with '\r').
type lineLogger struct {
	log     *slog.Logger
	maxLine int

	mu        sync.Mutex
	line      []byte
	truncated bool
	budget    logBudget
}

// stderrWindow is the period of a log budget.
const stderrWindow = time.Minute

// logBudget lets at most perWindow lines a minute through and counts the rest.
type logBudget struct {
	clock       Clock
	perWindow   int
	windowStart time.Time
	inWindow    int
	suppressed  int
}

func newLogBudget(clock Clock, perWindow int) logBudget {
	return logBudget{clock: clock, perWindow: perWindow, windowStart: clock.Now()}
}

// allow reports whether one more line may be logged now; report is called with the count of
// the lines the minute before suppressed, when a new minute starts.
func (b *logBudget) allow(report func(suppressed int)) bool {
	if now := b.clock.Now(); now.Sub(b.windowStart) >= stderrWindow {
		b.flush(report)
		b.windowStart, b.inWindow = now, 0
	}
	if b.inWindow >= b.perWindow {
		b.suppressed++
		return false
	}
	b.inWindow++
	return true
}

// flush calls report with the count of suppressed lines, if any, and starts counting again.
func (b *logBudget) flush(report func(suppressed int)) {
	if b.suppressed > 0 {
		report(b.suppressed)
		b.suppressed = 0
	}
}

// newLineLogger returns a lineLogger logging to log, which should name the command.
func newLineLogger(log *slog.Logger, clock Clock, maxLine, perWindow int) *lineLogger {
	return &lineLogger{log: log, maxLine: maxLine, line: make([]byte, 0, maxLine), budget: newLogBudget(clock, perWindow)}
}

// Write logs the complete lines in p and keeps the rest for the next call.
func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range p {
		switch {
		case c == '\n' || c == '\r':
			l.emitLocked()
		case len(l.line) < l.maxLine:
			l.line = append(l.line, c)
		default:
			l.truncated = true
		}
	}
	return len(p), nil
}

// Close logs a last unterminated line and the count of suppressed lines.
func (l *lineLogger) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.emitLocked()
	l.budget.flush(l.reportSuppressed)
	return nil
}

func (l *lineLogger) emitLocked() {
	line, truncated := l.line, l.truncated
	l.line, l.truncated = l.line[:0], false
	if len(strings.TrimSpace(string(line))) == 0 {
		return
	}
	if !l.budget.allow(l.reportSuppressed) {
		return
	}
	text := strings.ToValidUTF8(string(line), "\uFFFD")
	if truncated {
		l.log.Info("camera: command stderr", "line", text, "truncated", true)
	} else {
		l.log.Info("camera: command stderr", "line", text)
	}
}

func (l *lineLogger) reportSuppressed(n int) {
	l.log.Warn("camera: command stderr lines suppressed", "lines", n, "limit_per_minute", l.budget.perWindow)
}
