package camera_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	clipPath   = "testdata/clip.h264"
	clipFrames = 90
	clipGOP    = 30
)

// testTimeout bounds every wait in these tests; nothing should come near it.
const testTimeout = 60 * time.Second

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// logRecorder is a slog.Handler that keeps each record as a line of "msg key=value ...".
type logRecorder struct {
	mu      sync.Mutex
	lines   []string
	changed chan struct{}
	attrs   []slog.Attr
	parent  *logRecorder
}

// newLogRecorder returns a logger recording into r; if the test fails, the log is printed.
func newLogRecorder(t *testing.T) (*slog.Logger, *logRecorder) {
	r := &logRecorder{changed: make(chan struct{})}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", strings.Join(r.Lines(), "\n"))
		}
	})
	return slog.New(r), r
}

func (r *logRecorder) root() *logRecorder {
	if r.parent != nil {
		return r.parent.root()
	}
	return r
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	b.WriteString(rec.Message)
	write := func(a slog.Attr) bool {
		b.WriteString(" " + a.Key + "=" + a.Value.String())
		return true
	}
	for _, a := range r.attrs {
		write(a)
	}
	rec.Attrs(write)
	root := r.root()
	root.mu.Lock()
	defer root.mu.Unlock()
	root.lines = append(root.lines, b.String())
	close(root.changed)
	root.changed = make(chan struct{})
	return nil
}

func (r *logRecorder) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &logRecorder{attrs: append(append([]slog.Attr{}, r.attrs...), attrs...), parent: r}
}

func (r *logRecorder) WithGroup(string) slog.Handler { return r }

// Lines returns the records so far.
func (r *logRecorder) Lines() []string {
	root := r.root()
	root.mu.Lock()
	defer root.mu.Unlock()
	return append([]string(nil), root.lines...)
}

// Count returns how many records contain all of the substrings.
func (r *logRecorder) Count(subs ...string) int {
	n := 0
	for _, l := range r.Lines() {
		if containsAll(l, subs) {
			n++
		}
	}
	return n
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// WaitFor blocks until a record contains all of the substrings and returns it.
func (r *logRecorder) WaitFor(ctx context.Context, t *testing.T, subs ...string) string {
	t.Helper()
	root := r.root()
	for {
		root.mu.Lock()
		for _, l := range root.lines {
			if containsAll(l, subs) {
				root.mu.Unlock()
				return l
			}
		}
		changed := root.changed
		root.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("no log record with %q; have:\n%s", subs, strings.Join(r.Lines(), "\n"))
		}
	}
}

func bytesReader(b []byte) *strings.Reader { return strings.NewReader(string(b)) }
