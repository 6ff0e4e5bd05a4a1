package webrtc

import (
	"sync"
	"sync/atomic"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"

	"github.com/camagent/camagent/device/camera"
	"github.com/camagent/camagent/device/h264"
)

// rtpMTU is the largest RTP packet the camera sends (header included): small enough to pass
// a VPN or a TURN relay without IP fragmentation, as libwebrtc's 1200 bytes.
const rtpMTU = 1200

// maxPayload is rtpMTU without the fixed RTP header. The camera sends no header extensions.
const maxPayload = rtpMTU - 12

// frame is one access unit ready to send: packetized once (RFC 6184), shared by every
// viewer. Nothing in it changes once it is made.
type frame struct {
	// ts is the presentation time on the 90 kHz RTP clock (RFC 6184 §5.1), before each
	// viewer adds its random offset.
	ts       uint64
	keyframe bool
	// payloads are the RTP payloads: single NAL unit packets and FU-A fragments, in order.
	payloads [][]byte
	// au is the access unit, kept to match GOPCache snapshots with the frames above.
	au h264.AccessUnit
}

// newFrame packetizes au. buf is scratch space for the Annex B form; the payloads do not
// share it.
func newFrame(au h264.AccessUnit, ts uint64, buf *[]byte) *frame {
	// STAP-A is off: pion's payloader drops the SPS and PPS of an aggregate that would
	// exceed the MTU, and sending them as single NAL unit packets costs two packets per
	// keyframe. Access unit delimiters and filler are dropped by the payloader.
	p := codecs.H264Payloader{DisableStapA: true}
	*buf = h264.AppendAnnexB((*buf)[:0], au)
	return &frame{ts: ts, keyframe: au.Keyframe, payloads: p.Payload(maxPayload, *buf), au: au}
}

// viewer is the fan-out's side of one session: a bounded queue and counters.
type viewer struct {
	queue chan *frame
	// waitKey is set when the viewer lost a frame (or joined without a cached group): every
	// frame up to the next keyframe is dropped, since none of them would decode. Guarded by
	// fanout.mu.
	waitKey bool

	sent, dropped atomic.Uint64
}

func newViewer(queueLength int) *viewer {
	return &viewer{queue: make(chan *frame, queueLength)}
}

// offer queues fr for v without blocking. A viewer waiting for a keyframe gets restart
// instead of fr: the same keyframe, with the parameter sets if fr lacks them. offer reports
// whether v has just overflowed, so a keyframe would help it. Called with fanout.mu held.
func (v *viewer) offer(fr, restart *frame) (overflowed bool) {
	if v.waitKey {
		if !fr.keyframe {
			v.dropped.Add(1)
			return false
		}
		fr = restart
	}
	select {
	case v.queue <- fr:
		v.waitKey = false
		return false
	default:
		v.dropped.Add(1)
		v.waitKey = true
		return true
	}
}

// fanout takes the source's frames, keeps the current group of pictures, and queues every
// frame for every joined viewer.
type fanout struct {
	// needKeyframe is called, without locks held, when a viewer overflowed. It must not
	// block.
	needKeyframe func()

	framesIn atomic.Uint64
	buf      []byte // Annex B scratch space of push, which runs on one goroutine

	mu  sync.Mutex
	gop *h264.GOPCache
	// group holds the frames of gop, keyframe first: gop keeps the access units and adds the
	// parameter sets to the keyframe; group keeps their timestamps and payloads.
	group   []*frame
	viewers map[*viewer]struct{}
}

func newFanout(gopBytes int, needKeyframe func()) *fanout {
	return &fanout{
		needKeyframe: needKeyframe,
		gop:          h264.NewGOPCache(gopBytes),
		viewers:      map[*viewer]struct{}{},
	}
}

// push is the Source's callback: it packetizes the frame and queues it for every viewer. It
// never blocks on a viewer. A viewer that overflowed, or is playing when a discontinuity
// starts on a frame other than a keyframe, waits for the next keyframe, and one is asked for.
func (f *fanout) push(cf camera.Frame) {
	fr := newFrame(cf.AU, cf.Timestamp90k(), &f.buf)
	defer f.framesIn.Add(1) // counted once every viewer has it

	f.mu.Lock()
	if cf.Discontinuity {
		f.gop.Reset()
		clear(f.group)
		f.group = f.group[:0]
	}
	f.gop.Push(cf.AU)
	switch {
	case f.gop.Bytes() == 0:
		// No keyframe yet, or the group outgrew the budget: the cache holds nothing.
		clear(f.group)
		f.group = f.group[:0]
	case fr.keyframe:
		clear(f.group)
		f.group = append(f.group[:0], fr)
	default:
		f.group = append(f.group, fr)
	}
	restart := fr
	if fr.keyframe && !cf.AU.HasParams {
		// A viewer starting or recovering here needs the SPS and PPS, which this encoder
		// sends apart from its keyframes; the cache has just put them into its copy.
		if snap := f.gop.Snapshot(); len(snap) == 1 && len(f.group) == 1 {
			restart = newFrame(snap[0], fr.ts, new([]byte))
		}
	}
	wantKey := false
	for v := range f.viewers {
		if cf.Discontinuity && !fr.keyframe && !v.waitKey {
			// The frames before a discontinuity are no reference for the ones after
			// (camera.Frame.Discontinuity): this one would not decode for a viewer that is
			// already playing, so it waits for the next keyframe, as after a loss.
			v.waitKey = true
			wantKey = true
		}
		if v.offer(fr, restart) {
			wantKey = true
		}
	}
	f.mu.Unlock()

	if wantKey {
		f.needKeyframe()
	}
}

// join adds v to the viewers and returns the cached group of pictures to send before the
// frames v's queue will receive: no frame is in both, and none is missed. With no group
// cached, v waits for the next keyframe and join returns nil.
func (f *fanout) join(v *viewer) []*frame {
	f.mu.Lock()
	defer f.mu.Unlock()
	snap := f.snapshotLocked()
	v.waitKey = snap == nil
	f.viewers[v] = struct{}{}
	return snap
}

// leave removes v. Frames already queued for it are left to the garbage collector.
func (f *fanout) leave(v *viewer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.viewers, v)
}

// snapshotLocked returns the cached group as frames, keyframe first, with the parameter sets
// in the keyframe, or nil.
func (f *fanout) snapshotLocked() []*frame {
	aus := f.gop.Snapshot()
	if len(aus) == 0 || len(aus) != len(f.group) {
		return nil
	}
	// The access units are the very ones pushed: their last NAL units (slices, which
	// Snapshot never copies or moves) are the same bytes.
	for i, au := range aus {
		if !sameLastNAL(au, f.group[i].au) {
			return nil
		}
	}
	out := make([]*frame, len(aus))
	copy(out, f.group)
	if len(aus[0].NALs) != len(f.group[0].au.NALs) {
		// The cache inserted the SPS and PPS the keyframe lacked: packetize it again.
		var buf []byte
		out[0] = newFrame(aus[0], f.group[0].ts, &buf)
	}
	return out
}

func sameLastNAL(a, b h264.AccessUnit) bool {
	if len(a.NALs) == 0 || len(b.NALs) == 0 {
		return false
	}
	x, y := a.NALs[len(a.NALs)-1], b.NALs[len(b.NALs)-1]
	return len(x) == len(y) && len(x) > 0 && &x[0] == &y[0]
}

// packetWriter is where a viewer's packets go: a pion track, or a fake in tests.
type packetWriter interface {
	WriteRTP(p *rtp.Packet) error
}

// rtpStream numbers and stamps one viewer's packets. Each viewer has its own sequence numbers
// and timestamp offset, random as RFC 3550 §5.1 asks, so frames a viewer drops leave no gap in
// its sequence (its receiver does not NACK them) and its timestamps still follow the frames'
// presentation times.
type rtpStream struct {
	w      packetWriter
	seq    uint16
	tsBase uint32
	pkt    rtp.Packet
}

func newRTPStream(w packetWriter, seq uint16, tsBase uint32) *rtpStream {
	return &rtpStream{w: w, seq: seq, tsBase: tsBase}
}

// send writes every packet of fr. The payload type and SSRC are the track's to set.
func (s *rtpStream) send(fr *frame) error {
	ts := s.tsBase + uint32(fr.ts) // wraps modulo 2^32, as RTP timestamps do
	for i, p := range fr.payloads {
		s.pkt.Header = rtp.Header{
			Version:        2,
			Marker:         i == len(fr.payloads)-1, // last packet of the access unit (RFC 6184 §5.1)
			PayloadType:    h264PayloadType,
			SequenceNumber: s.seq,
			Timestamp:      ts,
		}
		s.pkt.Payload = p
		s.seq++
		if err := s.w.WriteRTP(&s.pkt); err != nil {
			return err
		}
	}
	return nil
}
