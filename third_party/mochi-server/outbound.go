// SPDX-License-Identifier: MIT

// camagent patch: a client's outbound queue holds only what is pending. v2.7.9 gave every
// client a channel of MaximumClientWritesPending packet pointers (8,192 by default: 64 KiB
// allocated and zeroed per connection, 625 MiB for 10,000 idle devices; upstream #189,
// #461). The queue has the same limit and the same drop behaviour, and WriteLoop takes
// everything pending at once.

package mqtt

import (
	"sync"
	"sync/atomic"

	"github.com/mochi-mqtt/server/v2/packets"
)

// outboundKeepCap is the largest backing array, in packets, the queue keeps for reuse once
// it is empty. A larger one, grown by a burst, is released, so an idle client holds at most
// two arrays of this size (1 KiB in all) and a new client none.
const outboundKeepCap = 64

// outboundQueue is the queue of packets waiting for a client's write loop. Any number of
// goroutines push; one, WriteLoop, takes. newClient sets ready and max; it allocates no room
// for the packets, whose array grows as they are pushed. The zero value refuses every packet.
type outboundQueue struct {
	mu      sync.Mutex
	pending []*packets.Packet // pushed and not yet taken, oldest first; guarded by mu
	spare   []*packets.Packet // the taker's emptied array, reused by the next take; taker only
	ready   chan struct{}     // capacity 1: holds a token when a push may not have been taken
	queued  atomic.Int32      // pushed and not yet handed to WritePacket
	max     int32             // the most packets queued at once (MaximumClientWritesPending)
}

// push appends pk to the queue and wakes the write loop. It returns false, and leaves the
// queue as it was, if max packets are queued already (counting those the write loop has
// taken but not yet begun to write, as v2.7.9's channel counted what it held).
func (q *outboundQueue) push(pk *packets.Packet) bool {
	q.mu.Lock()
	if q.queued.Load() >= q.max {
		q.mu.Unlock()
		return false
	}
	q.pending = append(q.pending, pk)
	q.queued.Add(1)
	q.mu.Unlock()

	select {
	case q.ready <- struct{}{}:
	default: // a token is there already; the taker takes this packet with the others
	}
	return true
}

// take returns every packet pushed since the last take, oldest first, and gives the queue
// the spare array to push into. The caller hands each packet to started before writing it,
// and the slice to recycle when done. Only the write loop calls take.
func (q *outboundQueue) take() []*packets.Packet {
	q.mu.Lock()
	batch := q.pending
	q.pending = q.spare
	q.mu.Unlock()
	q.spare = nil
	return batch
}

// started records that one taken packet is being written: it no longer counts against max
// nor in len.
func (q *outboundQueue) started() {
	q.queued.Add(-1)
}

// recycle keeps the array of a written batch for the next take, unless a burst made it larger
// than outboundKeepCap; then it is released.
func (q *outboundQueue) recycle(batch []*packets.Packet) {
	if cap(batch) > outboundKeepCap {
		return
	}
	clear(batch) // drop the written packets for the collector
	q.spare = batch[:0]
}

// len returns the number of packets queued and not yet being written, as len did of v2.7.9's
// channel: WritePacket buffers its write while it is not zero.
func (q *outboundQueue) len() int {
	return int(q.queued.Load())
}
