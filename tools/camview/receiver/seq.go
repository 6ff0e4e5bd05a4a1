package receiver

// seqWindow is how far behind the highest sequence number a packet may arrive and still be
// told apart as late (filling a gap) or duplicate (a retransmission that was not needed). A
// NACK retransmission arrives one round trip late: at 2 Mb/s in 1200-byte packets, 1024
// packets are about five seconds.
const seqWindow = 1024

// seqCounter counts the RTP packets of one stream that are missing, by sequence number: the
// packets between the first one received and the highest one, less those received. It
// extends the 16-bit sequence numbers across wrap-arounds (RFC 3550 §A.1), so a stream can
// run for any length of time. A packet that arrives late fills its gap (reordering, NACK
// retransmission); a packet received twice counts once. A packet older than the first one,
// or more than seqWindow behind the highest, is ignored: it was never counted as missing, or
// can no longer be told apart.
//
// The zero value is ready to use. It is not safe for concurrent use.
type seqCounter struct {
	started    bool
	first, max int64 // extended sequence numbers
	received   int64 // distinct packets from first to max
	duplicates int
	seen       [seqWindow / 64]uint64 // bit ext%seqWindow: packet ext was received
}

// add records a packet's sequence number and reports whether it was a duplicate.
func (c *seqCounter) add(seq uint16) (duplicate bool) {
	if !c.started {
		c.started = true
		c.first, c.max = int64(seq), int64(seq)
		c.set(c.max)
		c.received = 1
		return false
	}
	// The extended number closest to the highest so far: a forward step of up to 32767,
	// across a wrap-around of the 16-bit number, or a backward one of up to 32768.
	ext := c.max + int64(int16(seq-uint16(c.max)))
	switch {
	case ext > c.max:
		// Forget what was seen in the numbers the window now reuses.
		for n := c.max + 1; n < ext && n <= c.max+seqWindow; n++ {
			c.clear(n)
		}
		c.max = ext
		c.set(ext)
		c.received++
	case ext < c.first || c.max-ext >= seqWindow:
		// Before the stream as we know it began, or too old to tell.
	case c.isSet(ext):
		c.duplicates++
		return true
	default:
		c.set(ext)
		c.received++
	}
	return false
}

// lost returns how many packets from the first to the highest have not been received.
func (c *seqCounter) lost() int {
	if !c.started {
		return 0
	}
	return int(c.max - c.first + 1 - c.received)
}

func (c *seqCounter) set(n int64) {
	i := uint64(n) % seqWindow
	c.seen[i/64] |= 1 << (i % 64)
}

func (c *seqCounter) clear(n int64) {
	i := uint64(n) % seqWindow
	c.seen[i/64] &^= 1 << (i % 64)
}

func (c *seqCounter) isSet(n int64) bool {
	i := uint64(n) % seqWindow
	return c.seen[i/64]&(1<<(i%64)) != 0
}
