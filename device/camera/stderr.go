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
	log       *slog.Logger
	clock     Clock
	maxLine   int
	perWindow int

	mu          sync.Mutex
	line        []byte
	truncated   bool
	windowStart time.Time
	inWindow    int
	suppressed  int
}

// stderrWindow is the period of the line budget.
const stderrWindow = time.Minute

// newLineLogger returns a lineLogger logging to log, which should name the command.
func newLineLogger(log *slog.Logger, clock Clock, maxLine, perWindow int) *lineLogger {
	return &lineLogger{log: log, clock: clock, maxLine: maxLine, perWindow: perWindow,
		line: make([]byte, 0, maxLine), windowStart: clock.Now()}
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
	l.reportSuppressedLocked()
	return nil
}

func (l *lineLogger) emitLocked() {
	line, truncated := l.line, l.truncated
	l.line, l.truncated = l.line[:0], false
	if len(strings.TrimSpace(string(line))) == 0 {
		return
	}
	if now := l.clock.Now(); now.Sub(l.windowStart) >= stderrWindow {
		l.reportSuppressedLocked()
		l.windowStart, l.inWindow = now, 0
	}
	if l.inWindow >= l.perWindow {
		l.suppressed++
		return
	}
	l.inWindow++
	text := strings.ToValidUTF8(string(line), "\uFFFD")
	if truncated {
		l.log.Info("camera: command stderr", "line", text, "truncated", true)
	} else {
		l.log.Info("camera: command stderr", "line", text)
	}
}

func (l *lineLogger) reportSuppressedLocked() {
	if l.suppressed > 0 {
		l.log.Warn("camera: command stderr lines suppressed", "lines", l.suppressed, "limit_per_minute", l.perWindow)
		l.suppressed = 0
	}
}
