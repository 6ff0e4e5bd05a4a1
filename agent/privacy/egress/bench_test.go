package egress

import (
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
)

// benchPayload is a 1 KiB JSON status message of the agent's shape, with no sensitive value.
func benchPayload(b *testing.B) []byte {
	b.Helper()
	msg := map[string]any{
		"v": 1, "fw": "v0.9.1-3-gabc1234", "uptime_s": 86400, "cert_serial": "5a1f3c9e0b7d44e2a8c6f1b3d5e7a9c1",
		"cert_not_after": 1798675200, "keyset": 3, "epoch": 2, "rotation": "idle", "rssi_dbm": -61,
		"network_tag": "9f86d081884c7d659a2feaa0c55ad015",
		"streams":     map[string]any{"active": 1, "viewers": 2, "bytes_out": 123456789, "frames": 987654},
		"counters":    map[string]any{"cmds_ok": 17, "cmds_rejected": 0, "refusals": 0},
	}
	p, _ := json.Marshal(msg)
	pad := 1024 - len(p) - len(`,"pad":""`)
	msg["pad"] = strings.Repeat("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", 20)[:pad]
	p, _ = json.Marshal(msg)
	if len(p) != 1024 {
		b.Fatalf("payload is %d bytes", len(p))
	}
	return p
}

// BenchmarkCheck checks a clean 1 KiB JSON payload against three registered values: the cost
// the guard adds to every publish.
func BenchmarkCheck(b *testing.B) {
	g := canaryGuard(b)
	p := benchPayload(b)
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		if err := g.Check(p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheckEscaped is BenchmarkCheck on a payload with JSON escapes and '%', which costs
// the decoded passes too.
func BenchmarkCheckEscaped(b *testing.B) {
	g := canaryGuard(b)
	p := benchPayload(b)
	p = append(p[:len(p)-40], []byte(`,"e":"a\"b\u00e9c%41\n"}`)...)
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		if err := g.Check(p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRedactingHandler logs a typical line through the redacting handler.
func BenchmarkRedactingHandler(b *testing.B) {
	g := canaryGuard(b)
	l := slog.New(NewRedactingHandler(slog.NewTextHandler(io.Discard, nil), g)).With("device", "cam-0001")
	b.ReportAllocs()
	for b.Loop() {
		l.Info("rotation committed", "generation", 3, "serial", "5a1f3c9e0b7d44e2", "epoch", 2)
	}
}
