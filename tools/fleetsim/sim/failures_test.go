package sim

import (
	"log/slog"
	"maps"
	"testing"
)

// The agents' failed rotation steps are counted by the error code they log, and the report
// names the codes, most first: a load test that retried thousands of steps says why.
func TestFailedRotationStepsAreCountedByCode(t *testing.T) {
	m := &metrics{}
	log := slog.New(&countingHandler{m: m})
	for _, code := range []string{"timeout", "refused", "timeout", "rate_limited", "timeout"} {
		log.Warn(msgRotationFailed, "err", "x", "code", code, "failures", 1)
	}
	log.Warn(msgRotationFailed, "err", "an older agent's line")
	want := map[string]uint64{"timeout": 3, "refused": 1, "rate_limited": 1, "unknown": 1}
	if got := m.failuresByCode(); !maps.Equal(got, want) || m.rotationFailures.Load() != 6 {
		t.Fatalf("by code %v (total %d), want %v", got, m.rotationFailures.Load(), want)
	}
	if got, want := byCode(want), " (timeout 3, rate_limited 1, refused 1, unknown 1)"; got != want {
		t.Fatalf("byCode = %q, want %q", got, want)
	}
	if byCode(nil) != "" {
		t.Fatal("byCode of nothing is not empty")
	}
}
