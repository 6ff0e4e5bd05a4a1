package egress

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"testing"
)

// logTo returns a logger redacting with g into a JSON and a text handler, and the output.
func logTo(g *Guard) (*slog.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	h := multi{slog.NewJSONHandler(&buf, nil), slog.NewTextHandler(&buf, nil)}
	return slog.New(NewRedactingHandler(h, g)), &buf
}

// multi sends a record to several handlers.
type multi []slog.Handler

func (m multi) Enabled(ctx context.Context, l slog.Level) bool { return m[0].Enabled(ctx, l) }
func (m multi) Handle(ctx context.Context, r slog.Record) error {
	for _, h := range m {
		if err := h.Handle(ctx, r.Clone()); err != nil {
			return err
		}
	}
	return nil
}
func (m multi) WithAttrs(a []slog.Attr) slog.Handler {
	out := multi{}
	for _, h := range m {
		out = append(out, h.WithAttrs(a))
	}
	return out
}
func (m multi) WithGroup(n string) slog.Handler {
	out := multi{}
	for _, h := range m {
		out = append(out, h.WithGroup(n))
	}
	return out
}

// assertClean fails if out carries a canary in any encoding the guard knows.
func assertClean(t *testing.T, g *Guard, out string) {
	t.Helper()
	if err := g.Check([]byte(out)); err != nil {
		t.Fatalf("log output carries a value (%v):\n%s", err, out)
	}
	for _, c := range []string{"Canary", "canary", "tr0ub", "Grün"} {
		if strings.Contains(out, c) {
			t.Fatalf("log output carries %q:\n%s", c, out)
		}
	}
}

type netInfo struct {
	SSID  string
	Level int
}

type stringer struct{ s string }

func (s stringer) String() string { return "net " + s.s }

type panicky struct{}

func (*panicky) String() string { panic("boom " + canarySSID) }

type panickyValuer struct{}

func (panickyValuer) LogValue() slog.Value { panic("boom " + canarySSID) }

type panickyErr struct{}

func (panickyErr) Error() string { panic("boom " + canarySSID) }

type panickyText struct{}

func (panickyText) MarshalText() ([]byte, error) { panic("boom " + canarySSID) }

type textM struct{ v string }

func (t textM) MarshalText() ([]byte, error) { return []byte(t.v), nil }

func TestRedactingHandlerRedactsEveryPlace(t *testing.T) {
	g := canaryGuard(t)
	var nilPanicky *panicky
	tests := []struct {
		name string
		log  func(l *slog.Logger)
		keep []string // what must survive
	}{
		{"the message", func(l *slog.Logger) { l.Info("joined " + canarySSID) }, []string{"joined [redacted]"}},
		{"a string attribute", func(l *slog.Logger) { l.Info("joined", "ssid", canarySSID, "rssi", -60) }, []string{"rssi", "-60"}},
		{"an attribute key", func(l *slog.Logger) { l.Info("x", canaryNick, 1) }, []string{"[redacted]"}},
		{"an error", func(l *slog.Logger) {
			l.Error("connect failed", "err", fmt.Errorf("wpa: %s: %w", canarySSID, errors.New("4-way handshake timeout")))
		}, []string{"4-way handshake timeout"}},
		{"a fmt.Stringer", func(l *slog.Logger) { l.Info("x", "net", stringer{canarySSID}) }, []string{"net [redacted]"}},
		{"a struct the JSON handler marshals", func(l *slog.Logger) { l.Info("x", "net", netInfo{SSID: canarySSID, Level: 3}) }, nil},
		{"a pointer to a struct", func(l *slog.Logger) { l.Info("x", "net", &netInfo{SSID: canarySSID}) }, nil},
		{"a map", func(l *slog.Logger) { l.Info("x", "m", map[string]string{"ssid": canarySSID}) }, nil},
		{"a byte slice", func(l *slog.Logger) { l.Info("x", "b", []byte(canaryPass)) }, nil},
		{"a text marshaler", func(l *slog.Logger) { l.Info("x", "t", textM{canaryNick}) }, nil},
		{"a group", func(l *slog.Logger) {
			l.Info("x", slog.Group("wifi", "ssid", canarySSID, slog.Group("inner", "pass", canaryPass, "n", 1)))
		}, []string{"wifi", "inner"}},
		{"attributes added with With", func(l *slog.Logger) { l.With("ssid", canarySSID).Info("x") }, nil},
		{"a group name", func(l *slog.Logger) { l.WithGroup(canaryNick).Info("x", "a", 1) }, nil},
		{"With inside WithGroup", func(l *slog.Logger) {
			l.WithGroup("g").With("nick", canaryNick).WithGroup("h").Info("x", "pass", canaryPass)
		}, []string{`"g":{`, "g.h.pass="}},
		{"a base64 value", func(l *slog.Logger) { l.Info("x", "b64", base64.StdEncoding.EncodeToString([]byte(canaryPass))) }, nil},
		{"a percent-encoded value", func(l *slog.Logger) { l.Info("x", "q", "ssid="+url.QueryEscape(canaryNick)) }, nil},
		{"a JSON-escaped value", func(l *slog.Logger) { l.Info("x", "raw", `{"p":"tr0ub4dor\u00263\/horse"}`) }, nil},
		{"a LogValuer that panics with a value", func(l *slog.Logger) { l.Info("x", "v", panickyValuer{}) }, nil},
		{"a String that panics with a value", func(l *slog.Logger) { l.Info("x", "v", &panicky{}) }, []string{"PANIC"}},
		{"a nil pointer Stringer", func(l *slog.Logger) { l.Info("x", "v", nilPanicky) }, nil},
		{"an Error that panics", func(l *slog.Logger) { l.Info("x", "err", panickyErr{}) }, []string{Unprintable}},
		{"a MarshalText that panics", func(l *slog.Logger) { l.Info("x", "t", panickyText{}) }, []string{Unprintable}},
		{"odd values", func(l *slog.Logger) {
			l.Info("x", "ch", make(chan int), "f", func() {}, "nil", nil, "err", error(nil), "any", []any{canarySSID, 1})
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, buf := logTo(g)
			tt.log(l)
			out := buf.String()
			if out == "" {
				t.Fatal("nothing logged")
			}
			assertClean(t, g, out)
			for _, k := range tt.keep {
				if !strings.Contains(out, k) {
					t.Fatalf("%q lost:\n%s", k, out)
				}
			}
		})
	}
}

func TestRedactingHandlerLeavesCleanRecordsAlone(t *testing.T) {
	g := canaryGuard(t)
	l, buf := logTo(g)
	l.Info("rotation committed", "generation", 3, "serial", "5a1f3c9e", "net", netInfo{SSID: "other", Level: 2}, "err", errors.New("timeout"))
	out := buf.String()
	for _, k := range []string{`"net":{"SSID":"other","Level":2}`, `net="{SSID:other Level:2}"`, "serial=5a1f3c9e", `"err":"timeout"`} {
		if !strings.Contains(out, k) {
			t.Fatalf("%q changed:\n%s", k, out)
		}
	}
}

func TestRedactingHandlerUsesTheCurrentValues(t *testing.T) {
	g := New()
	l, buf := logTo(g)
	l = l.With("ssid", "LaterNetwork-9")
	g.Set(KindSSID, "LaterNetwork-9") // registered after With
	l.Info("joined")
	if strings.Contains(buf.String(), "LaterNetwork") {
		t.Fatalf("an attribute added before the value was registered leaked:\n%s", buf.String())
	}
	buf.Reset()
	g.Set(KindSSID, "Another-Network") // the old value is no longer secret
	l.Info("joined")
	if !strings.Contains(buf.String(), "LaterNetwork-9") {
		t.Fatalf("the handler did not follow the new values:\n%s", buf.String())
	}
}

func TestRedactingHandlerKeepsLevels(t *testing.T) {
	var buf bytes.Buffer
	h := NewRedactingHandler(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}), New())
	if h.Enabled(context.Background(), slog.LevelInfo) || !h.Enabled(context.Background(), slog.LevelError) {
		t.Fatal("Enabled does not follow next")
	}
}
