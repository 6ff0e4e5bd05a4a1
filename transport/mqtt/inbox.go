package mqtt

import (
	"context"
	"sync"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// entry is one inbound message waiting for the Handler.
type entry struct {
	msg      paho.Message
	sess     *session // the connection it arrived on
	oversize bool     // over Config.MaxPayload: acknowledge without handing it to the Handler
}

type pushResult int

const (
	pushed pushResult = iota
	pushOverflow
	pushClosed
)

// overflow reports a connection whose messages overflowed the inbox, once the inbox has
// drained: it must be reconnected so that the broker redelivers what was left unacknowledged.
type overflow struct {
	sess    *session
	dropped int
}

// inbox is the bounded FIFO between paho's router goroutine (push, which never blocks) and
// the one worker goroutine that calls the Handler (pop).
type inbox struct {
	wake chan struct{} // capacity 1; signalled after every push and on close

	mu      sync.Mutex
	buf     []entry // ring buffer
	head, n int
	// over is the connection that overflowed, reported by pop once the ring is empty.
	over   *session
	closed bool
}

func newInbox(capacity int) *inbox {
	return &inbox{buf: make([]entry, capacity), wake: make(chan struct{}, 1)}
}

// push appends e unless the inbox is closed or full. Once a connection has overflowed, every
// later message of that connection is refused too, even if room has been made meanwhile: it
// must not overtake the refused one, which the broker will redeliver after a reconnect. A QoS
// 0 message refused by a full inbox does not make the connection overflow: the broker never
// sends it again, so a reconnect would recover nothing, and anyone who may write to a QoS 0
// topic of the client (signaling) could otherwise make it reconnect at will.
func (q *inbox) push(e entry) pushResult {
	q.mu.Lock()
	defer q.mu.Unlock()
	switch {
	case q.closed:
		return pushClosed
	case !e.sess.overflowed && q.n == len(q.buf) && e.msg.Qos() == 0:
		return pushOverflow
	case e.sess.overflowed || q.n == len(q.buf):
		if !e.sess.overflowed {
			e.sess.overflowed = true
			q.over = e.sess
		}
		e.sess.dropped++
		return pushOverflow
	}
	q.buf[(q.head+q.n)%len(q.buf)] = e
	q.n++
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return pushed
}

// pop returns the oldest entry, or, when the inbox is empty and a connection overflowed, that
// connection. It blocks until one of them is available, and returns ok == false once ctx is
// done or the inbox is closed; entries still queued then stay unacknowledged.
func (q *inbox) pop(ctx context.Context) (e entry, over overflow, ok bool) {
	for {
		if ctx.Err() != nil {
			return entry{}, overflow{}, false
		}
		q.mu.Lock()
		switch {
		case q.n > 0:
			e = q.buf[q.head]
			q.buf[q.head] = entry{}
			q.head = (q.head + 1) % len(q.buf)
			q.n--
			q.mu.Unlock()
			return e, overflow{}, true
		case q.over != nil:
			over = overflow{sess: q.over, dropped: q.over.dropped}
			q.over = nil
			q.mu.Unlock()
			return entry{}, over, true
		case q.closed:
			q.mu.Unlock()
			return entry{}, overflow{}, false
		}
		q.mu.Unlock()
		select {
		case <-q.wake:
		case <-ctx.Done():
		}
	}
}

// close makes push refuse and pop return once empty. It is idempotent.
func (q *inbox) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}
