package camera

import (
	"io"
	"log/slog"
	"time"
)

// Backoff exposes backoff to the external tests.
func Backoff(attempt int, lo, hi time.Duration, randN func(int64) int64) time.Duration {
	return backoff(attempt, lo, hi, randN)
}

// NewLineLogger exposes the stderr logger to the external tests.
func NewLineLogger(log *slog.Logger, clock Clock, maxLine, perMinute int) io.WriteCloser {
	return newLineLogger(log, clock, maxLine, perMinute)
}
