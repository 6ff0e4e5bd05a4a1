package signer

import (
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/internal/clock/clocktest"
)

// The hold queue names each request it holds once: the ones decided leave it, the ones
// deferred again keep their places and names, new ones join at the back, and a copy of a
// request held already, in the same batch or a later one, is dropped.
func TestTheHoldQueueHoldsEachRequestOnce(t *testing.T) {
	s := &Signer{
		cfg:     Config{HoldTimeout: time.Hour, MaxHeld: 100},
		log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		clk:     clocktest.New(time.Unix(1_800_000_000, 0)),
		holding: map[heldKey]struct{}{},
	}
	req := func(device string) request {
		return request{via: "csr", device: device, msg: wire.CertRequest{Kind: wire.KindRequest, ReqID: "r-" + device}}
	}
	names := func(rs []request) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.device)
		}
		return out
	}
	check := func(held []request, want ...string) {
		t.Helper()
		if got := names(held); !slices.Equal(got, want) {
			t.Fatalf("held %v, want %v", got, want)
		}
		if len(s.holding) != len(want) {
			t.Fatalf("holding names %d requests, the queue holds %v", len(s.holding), want)
		}
		for _, r := range held {
			if _, ok := s.holding[r.key()]; !ok {
				t.Fatalf("holding does not name %s", r.device)
			}
		}
	}

	var answers []answer
	held := s.requeue(nil, 0, []request{req("a"), req("b"), req("c"), req("a"), req("d")}, &answers)
	check(held, "a", "b", "c", "d")

	// A copy of b, and a new e, come in; b is dropped before the decision.
	batch := s.dropHeld([]request{req("b"), req("e")})
	if got := names(batch); !slices.Equal(got, []string{"e"}) {
		t.Fatalf("batch after dropHeld %v, want [e]", got)
	}
	// The first three held are decided with e: b is answered, a and c and e are deferred.
	deferred := []request{held[0], held[2], req("e")}
	held = s.requeue(held, 3, deferred, &answers)
	check(held, "a", "c", "d", "e")

	// b was answered: a copy of it is decided again, not dropped.
	if got := names(s.dropHeld([]request{req("b"), req("c")})); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("batch after dropHeld %v, want [b]", got)
	}
	// All four decided and answered.
	held = s.requeue(held, 4, nil, &answers)
	check(held)
	if len(answers) != 0 || s.stats.ignored.Load() != 3 || s.stats.held.Load() != 5 {
		t.Fatalf("answers %d, ignored %d, held %d; want 0, 3 and 5", len(answers), s.stats.ignored.Load(), s.stats.held.Load())
	}
}
