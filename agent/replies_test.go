package agent

import (
	"fmt"
	"slices"
	"testing"

	"github.com/camagent/camagent/agent/state"
)

// The reply cache keeps the last ReplayWindow replies and remembers which were not sent, so a
// reply lost with a connection is sent again after the next connect or on the command's
// redelivery (R3).
func TestReplyCacheKeepsTheWindowAndTheUnsent(t *testing.T) {
	var c replyCache
	for seq := uint64(1); seq <= state.ReplayWindow+10; seq++ {
		c.add(seq, []byte(fmt.Sprint(seq)))
	}
	if c.get(10) != nil || string(c.get(11)) != "11" || string(c.get(state.ReplayWindow+10)) != fmt.Sprint(state.ReplayWindow+10) {
		t.Fatal("the cache does not hold exactly the last ReplayWindow replies")
	}
	c.markUnsent(20)
	c.markUnsent(15)
	c.markUnsent(5) // no longer cached: nothing to send again
	if got := c.unsentSeqs(); !slices.Equal(got, []uint64{15, 20}) {
		t.Fatalf("unsent %v, want [15 20] in command order", got)
	}
	c.markSent(15)
	if got := c.unsentSeqs(); !slices.Equal(got, []uint64{20}) {
		t.Fatalf("unsent %v after sending 15", got)
	}
	// An unsent reply that falls out of the window is forgotten with it.
	for seq := uint64(state.ReplayWindow + 11); seq <= 2*state.ReplayWindow+30; seq++ {
		c.add(seq, nil)
	}
	if got := c.unsentSeqs(); len(got) != 0 {
		t.Fatalf("unsent %v after the window moved on", got)
	}
}
