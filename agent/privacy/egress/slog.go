package egress

import (
	"context"
	"encoding"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync/atomic"
)

// NewRedactingHandler returns a slog.Handler that passes every record to next with each
// sensitive value of g replaced by Redacted (see Guard.Redact) in the message, in attribute
// keys and values, and in group names, at any depth. g must not be nil.
//
// Values are looked at as next will print them: strings as they are; errors through Error;
// other values (fmt.Stringer, encoding.TextMarshaler, structs, byte slices) through fmt's %+v,
// MarshalText and json.Marshal, so both the text and the JSON handler are covered. A value any
// of whose forms carries a sensitive value is replaced by the redacted string of its first
// form; a value whose String, Error, MarshalText or LogValue panics is replaced by
// "[unprintable]". Numbers, booleans, times and durations pass as they are.
//
// Attributes added with WithAttrs are redacted against the values g holds when a record is
// handled, not when they were added: a value registered after logger.With still disappears.
func NewRedactingHandler(next slog.Handler, g *Guard) slog.Handler {
	return &redactingHandler{root: next, g: g}
}

// Unprintable replaces a logged value whose formatting panicked.
const Unprintable = "[unprintable]"

// redactingHandler keeps the WithAttrs and WithGroup calls made on it and replays them on next,
// redacted, whenever the Guard's values change.
type redactingHandler struct {
	root  slog.Handler
	g     *Guard
	ops   []handlerOp
	built atomic.Pointer[builtHandler]
}

type handlerOp struct {
	group string // WithGroup(group) if attrs is nil
	attrs []slog.Attr
}

type builtHandler struct {
	gen uint64
	h   slog.Handler
}

var _ slog.Handler = (*redactingHandler)(nil)

// next returns next with the handler's ops applied, redacted under the Guard's current values.
func (h *redactingHandler) next() slog.Handler {
	gen := h.g.generation()
	if b := h.built.Load(); b != nil && b.gen == gen {
		return b.h
	}
	n := h.root
	for _, op := range h.ops {
		if op.attrs == nil {
			n = n.WithGroup(h.g.Redact(op.group))
		} else {
			n = n.WithAttrs(h.g.redactAttrs(op.attrs, 0))
		}
	}
	h.built.Store(&builtHandler{gen: gen, h: n})
	return n
}

func (h *redactingHandler) with(op handlerOp) *redactingHandler {
	ops := make([]handlerOp, len(h.ops), len(h.ops)+1)
	copy(ops, h.ops)
	return &redactingHandler{root: h.root, g: h.g, ops: append(ops, op)}
}

// Enabled reports whether next handles level.
func (h *redactingHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next().Enabled(ctx, level)
}

// Handle redacts r and passes it to next.
func (h *redactingHandler) Handle(ctx context.Context, r slog.Record) error {
	nr := slog.NewRecord(r.Time, r.Level, h.g.Redact(r.Message), r.PC)
	attrs := make([]slog.Attr, 0, r.NumAttrs())
	r.Attrs(func(a slog.Attr) bool {
		attrs = append(attrs, a)
		return true
	})
	nr.AddAttrs(h.g.redactAttrs(attrs, 0)...)
	return h.next().Handle(ctx, nr)
}

// WithAttrs returns a handler that adds attrs, redacted, to every record.
func (h *redactingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	return h.with(handlerOp{attrs: attrs})
}

// WithGroup returns a handler that puts later attributes in group name, redacted.
func (h *redactingHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return h.with(handlerOp{group: name})
}

// maxDepth bounds the nesting of groups redacted; deeper groups are replaced.
const maxDepth = 32

func (g *Guard) redactAttrs(attrs []slog.Attr, depth int) []slog.Attr {
	out := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		out[i] = slog.Attr{Key: g.Redact(a.Key), Value: g.redactValue(a.Value, depth)}
	}
	return out
}

func (g *Guard) redactValue(v slog.Value, depth int) slog.Value {
	v = v.Resolve() // recovers a panicking LogValue into an error value
	switch v.Kind() {
	case slog.KindString:
		return slog.StringValue(g.Redact(v.String()))
	case slog.KindGroup:
		if depth >= maxDepth {
			return slog.StringValue(Redacted)
		}
		return slog.GroupValue(g.redactAttrs(v.Group(), depth+1)...)
	case slog.KindAny:
		return g.redactAny(v.Any())
	}
	return v
}

// redactAny checks the forms a handler may print x in and returns x itself if none carries a
// value, or else the redacted first form.
func (g *Guard) redactAny(x any) slog.Value {
	if x == nil {
		return slog.AnyValue(x)
	}
	var forms []func() string
	switch t := x.(type) {
	case error:
		forms = append(forms, t.Error)
	case []byte:
		forms = append(forms, func() string { return string(t) })
	}
	forms = append(forms, func() string { return fmt.Sprintf("%+v", x) })
	if tm, ok := x.(encoding.TextMarshaler); ok {
		forms = append(forms, func() string {
			b, _ := tm.MarshalText()
			return string(b)
		})
	}
	forms = append(forms, func() string {
		b, _ := json.Marshal(x)
		return string(b)
	})
	var first string
	dirty := false
	for i, f := range forms {
		s, ok := safeCall(f)
		if !ok {
			return slog.StringValue(Unprintable)
		}
		if i == 0 {
			first = s
		}
		if !dirty && g.redactNeeded(s) {
			dirty = true
		}
	}
	if !dirty {
		return slog.AnyValue(x)
	}
	return slog.StringValue(g.Redact(first))
}

// redactNeeded reports whether s carries a value, without counting a refusal.
func (g *Guard) redactNeeded(s string) bool {
	m := g.m.Load()
	if m == nil || m.values == 0 {
		return false
	}
	sc := getScratch()
	defer putScratch(sc)
	return m.scan(sc, []byte(s)) != nil
}

// safeCall calls f, reporting false if it panicked.
func safeCall(f func() string) (s string, ok bool) {
	defer func() {
		if recover() != nil {
			s, ok = "", false
		}
	}()
	return f(), true
}
