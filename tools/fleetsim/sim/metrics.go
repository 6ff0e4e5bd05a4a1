package sim

import (
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Kinds of timeline events.
const (
	evConnect = iota
	evConnectFailed
	evLost
	evRotation
	numEvents
)

// metrics counts what the agents do, per second since the run's clock started.
type metrics struct {
	start time.Time

	mu      sync.Mutex
	buckets [][numEvents]int // per second since start
	marks   []Event

	refused          atomic.Uint64 // commands refused by a device (not replays)
	rotationFailures atomic.Uint64 // failed rotation steps, retried by the agents
	replyDrops       atomic.Uint64 // replies a device could not publish

	failMu     sync.Mutex
	failByCode map[string]uint64 // rotationFailures by the agent's error code

	dropMu  sync.Mutex
	dropped map[uint64]bool // sequences of the commands whose reply could not be published
}

// rotationFailed records a failed rotation step with the agent's error code.
func (m *metrics) rotationFailed(code string) {
	m.rotationFailures.Add(1)
	m.failMu.Lock()
	defer m.failMu.Unlock()
	if m.failByCode == nil {
		m.failByCode = make(map[string]uint64)
	}
	m.failByCode[code]++
}

// failuresByCode returns a copy of the failed rotation steps by error code.
func (m *metrics) failuresByCode() map[string]uint64 {
	m.failMu.Lock()
	defer m.failMu.Unlock()
	return maps.Clone(m.failByCode)
}

// dropReply records that the reply to the command with sequence seq could not be published:
// the agent never publishes it again.
func (m *metrics) dropReply(seq uint64) {
	m.dropMu.Lock()
	defer m.dropMu.Unlock()
	if m.dropped == nil {
		m.dropped = map[uint64]bool{}
	}
	m.dropped[seq] = true
}

// replyDropped reports whether dropReply recorded seq.
func (m *metrics) replyDropped(seq uint64) bool {
	m.dropMu.Lock()
	defer m.dropMu.Unlock()
	return m.dropped[seq]
}

func newMetrics(start time.Time) *metrics { return &metrics{start: start} }

func (m *metrics) since() time.Duration { return time.Since(m.start) }

// event counts one event of kind now.
func (m *metrics) event(kind int) {
	s := int(m.since() / time.Second)
	if s < 0 {
		s = 0
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for len(m.buckets) <= s {
		m.buckets = append(m.buckets, [numEvents]int{})
	}
	m.buckets[s][kind]++
}

// mark records a scenario event (breach published, fault on, broker restarted, ...).
func (m *metrics) mark(what string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.marks = append(m.marks, Event{At: seconds(m.since()), What: what})
}

// timeline returns the per-second buckets and the marks.
func (m *metrics) timeline() ([]Second, []Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Second, len(m.buckets))
	for i, b := range m.buckets {
		out[i] = Second{At: i, Connects: b[evConnect], ConnectFailures: b[evConnectFailed], Lost: b[evLost], Rotations: b[evRotation]}
	}
	return out, slices.Clone(m.marks)
}

// percentile returns the p-th percentile (0..1) of sorted durations, nearest rank.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func seconds(d time.Duration) float64 { return float64(d.Milliseconds()) / 1000 }
