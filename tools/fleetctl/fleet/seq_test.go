package fleet_test

import (
	"sync"
	"testing"
	"time"

	"github.com/camagent/camagent/tools/fleetctl/fleet"
)

// Two fleetctl processes on one fleet directory (here two Fleets opened on it) never hand out
// the same sequence, even while the clock is behind the last one handed out (a command sent
// from a machine whose clock ran ahead): a device refuses the second of two commands with one
// sequence as a replay, and ignores the second of two desired states with one version.
func TestNextSeqIsUniqueAcrossProcesses(t *testing.T) {
	f := newFleet(t)
	if _, err := f.NextSeq(time.Now().Add(time.Hour)); err != nil { // the clock that ran ahead
		t.Fatal(err)
	}
	const each = 200
	var (
		mu   sync.Mutex
		seen = map[uint64]int{}
		wg   sync.WaitGroup
	)
	for range 2 {
		g, err := fleet.Open(f.Dir)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				seq, err := g.NextSeq(time.Now())
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				seen[seq]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	dups := 0
	for _, n := range seen {
		dups += n - 1
	}
	if dups > 0 {
		t.Fatalf("%d of %d sequences were handed out twice", dups, 2*each)
	}
}
