// Package logtest records slog output in tests so that a test can wait for a log line instead
// of sleeping, and can check that nothing secret was logged.
package logtest

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// Recorder is a slog.Handler that keeps every record as a text line.
type Recorder struct {
	mu      sync.Mutex
	lines   []string
	changed chan struct{}
	attrs   []slog.Attr
	parent  *Recorder
}

var _ slog.Handler = (*Recorder)(nil)

// New returns a logger writing to a new Recorder, and the Recorder.
func New() (*slog.Logger, *Recorder) {
	r := &Recorder{changed: make(chan struct{})}
	return slog.New(r), r
}

func (r *Recorder) root() *Recorder {
	if r.parent != nil {
		return r.parent
	}
	return r
}

// Enabled implements slog.Handler; every level is recorded.
func (r *Recorder) Enabled(context.Context, slog.Level) bool { return true }

// Handle implements slog.Handler.
func (r *Recorder) Handle(_ context.Context, rec slog.Record) error {
	var b bytes.Buffer
	h := slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelDebug})
	rec2 := rec.Clone()
	rec2.AddAttrs(r.attrs...)
	if err := h.Handle(context.Background(), rec2); err != nil {
		return err
	}
	root := r.root()
	root.mu.Lock()
	root.lines = append(root.lines, strings.TrimSpace(b.String()))
	close(root.changed)
	root.changed = make(chan struct{})
	root.mu.Unlock()
	return nil
}

// WithAttrs implements slog.Handler.
func (r *Recorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &Recorder{parent: r.root(), attrs: append(append([]slog.Attr(nil), r.attrs...), as...)}
}

// WithGroup implements slog.Handler; groups are flattened.
func (r *Recorder) WithGroup(string) slog.Handler { return r }

// Lines returns every line recorded so far.
func (r *Recorder) Lines() []string {
	root := r.root()
	root.mu.Lock()
	defer root.mu.Unlock()
	return append([]string(nil), root.lines...)
}

// Text returns every line recorded so far, joined by newlines.
func (r *Recorder) Text() string { return strings.Join(r.Lines(), "\n") }

// WaitFor waits until a line containing every one of subs is recorded, failing the test after
// timeout. It returns the line.
func (r *Recorder) WaitFor(t testing.TB, timeout time.Duration, subs ...string) string {
	t.Helper()
	return r.WaitForNth(t, timeout, 1, subs...)
}

// WaitForNth waits until n lines containing every one of subs are recorded, failing the test
// after timeout. It returns the nth.
func (r *Recorder) WaitForNth(t testing.TB, timeout time.Duration, n int, subs ...string) string {
	t.Helper()
	root := r.root()
	deadline := time.After(timeout)
	seen, found := 0, 0
	for {
		root.mu.Lock()
		lines, ch := root.lines, root.changed
		root.mu.Unlock()
		for ; seen < len(lines); seen++ {
			if containsAll(lines[seen], subs) {
				if found++; found == n {
					return lines[seen]
				}
			}
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("%d log lines with %q wanted within %s, %d seen; log:\n%s", n, subs, timeout, found, r.Text())
			return ""
		}
	}
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// Buffer is a bytes.Buffer safe for concurrent writers: the io.Writer of a slog text handler
// that a broker's or a client's goroutines log to, and that keeps accepting writes after the
// test ended (unlike t.Log).
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
