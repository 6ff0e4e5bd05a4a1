package receiver

import (
	"bytes"
	"cmp"
	"errors"
	"io"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	pion "github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
	"github.com/pion/webrtc/v4/pkg/media/samplebuilder"

	"github.com/camagent/camagent/device/h264"
)

// Depacketizing and reassembly limits.
const (
	// maxLatePackets is how many packets after a gap the sample builder waits for the missing
	// one (a reordered or retransmitted packet) before it gives up on that frame.
	maxLatePackets = 512
	// maxLateTime is the same bound in time.
	maxLateTime = time.Second
	// maxAU caps one reassembled access unit, as the camera's own splitter does.
	maxAU = h264.DefaultMaxAU
	// pliInterval is the least time between two keyframe requests.
	pliInterval = time.Second
	// keyframeWait is how long the receiver waits for its first keyframe before it asks for
	// one. A camera normally starts a new viewer at a keyframe at once.
	keyframeWait = time.Second
	// clockRate is H.264's RTP clock (RFC 6184 §8.2.1).
	clockRate = 90000
)

// Stats describes a session's video so far.
type Stats struct {
	// OfferSent is when the offer left for the camera.
	OfferSent time.Time
	// TimeToFirstFrame is the time from OfferSent to the arrival of the last packet of the
	// first complete keyframe access unit (with SPS and PPS); zero until then.
	TimeToFirstFrame time.Duration
	// Frames counts complete access units (a run of packets ending with the RTP marker bit),
	// Keyframes the IDR pictures among them.
	Frames, Keyframes int
	// Bytes counts RTP payload bytes, duplicates included.
	Bytes int64
	// Packets counts RTP packets received, duplicates included; Lost the packets missing by
	// sequence number gaps after the first packet (a gap filled late by a reordered or
	// retransmitted packet is not lost); Duplicates the packets received more than once.
	Packets, Lost, Duplicates int
	// Elapsed is the time from the first packet to now, or to the end of the session.
	Elapsed time.Duration
	// MediaDuration is the span of the frames' RTP timestamps, first to last: the length of
	// the video received. It is the honest denominator for frame and bit rates, since a
	// camera sends a new viewer its last group of pictures at once before the live frames.
	MediaDuration time.Duration
	// Width and Height are the picture size from the last SPS received (device/h264).
	Width, Height int
	// KeyframeRequests counts the picture loss indications sent to the camera.
	KeyframeRequests int
}

// track reassembles one H.264 track. Its methods run on the track's reader goroutine; the
// fields shared with Stats are guarded by Session.mu.
type track struct {
	s     *Session
	ssrc  uint32
	sb    *samplebuilder.SampleBuilder
	split *h264.Splitter
	sps   []byte // the last SPS and PPS seen, to start the output with
	pps   []byte
	buf   []byte // Annex B of the access unit being written

	firstPacket time.Time
	lastPLI     time.Time
	// completedAt remembers when the last packet (marker bit) of recent frames arrived, by
	// RTP timestamp: the sample builder hands a frame over only when the packet after it
	// arrives, up to a frame interval later.
	completedAt [64]struct {
		ts uint32
		at time.Time
	}
	nCompleted int
}

func newTrack(s *Session, ssrc uint32) *track {
	return &track{
		s:     s,
		ssrc:  ssrc,
		sb:    samplebuilder.New(maxLatePackets, &h264Depacketizer{}, clockRate, samplebuilder.WithMaxTimeDelay(maxLateTime)),
		split: h264.NewSplitter(bytes.NewReader(nil), maxAU),
	}
}

// h264Depacketizer is pion's H.264 depacketizer with its reassembly of fragmented NAL units
// (FU-A, RFC 6184 §5.8) bounded. pion's keeps every fragment until one has the end bit, across
// frames, and joins a new start to an unfinished NAL unit: a camera that never ends its NAL
// units would make the receiver keep everything it sends. Here a start drops an unfinished
// NAL unit, and one over maxAU is dropped, with its fragments up to the next start.
type h264Depacketizer struct {
	codecs.H264Packet
	fragmented int  // payload bytes of the NAL unit being reassembled
	skipping   bool // the NAL unit being received went over the cap
	// maxNAL caps one reassembled NAL unit; 0 means maxAU. Tests set a small one.
	maxNAL int
}

func (d *h264Depacketizer) Unmarshal(payload []byte) ([]byte, error) {
	const fuA, fuStart, fuEnd = 28, 0x80, 0x40
	if len(payload) < 2 || payload[0]&0x1f != fuA {
		return d.H264Packet.Unmarshal(payload)
	}
	if payload[1]&fuStart != 0 {
		d.H264Packet, d.fragmented, d.skipping = codecs.H264Packet{}, 0, false
	}
	end := payload[1]&fuEnd != 0
	if !d.skipping {
		d.fragmented += len(payload) - 2
		d.skipping = d.fragmented > cmp.Or(d.maxNAL, maxAU)
		if d.skipping {
			d.H264Packet = codecs.H264Packet{}
		}
	}
	if d.skipping {
		if end {
			d.fragmented, d.skipping = 0, false
		}
		return []byte{}, nil
	}
	if end {
		d.fragmented = 0
	}
	return d.H264Packet.Unmarshal(payload)
}

// run reads tr until the connection ends.
func (t *track) run(tr *pion.TrackRemote) {
	for {
		pkt, _, err := tr.ReadRTP()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				t.s.log.Debug("receiver: track ended", "session", t.s.id, "err", err)
			}
			return
		}
		now := time.Now()
		t.packet(pkt, now)
		t.sb.Push(pkt)
		for smp := t.sb.Pop(); smp != nil; smp = t.sb.Pop() {
			if err := t.sample(smp, now); err != nil {
				t.s.shutdown(&OutputError{Err: err}, true)
				return
			}
		}
		t.maybeRequestKeyframe(now)
	}
}

// packet counts one RTP packet.
func (t *track) packet(pkt *rtp.Packet, now time.Time) {
	s := t.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if t.firstPacket.IsZero() {
		t.firstPacket = now
		s.firstPacket = now
	}
	if pkt.Marker {
		c := &t.completedAt[t.nCompleted%len(t.completedAt)]
		c.ts, c.at = pkt.Timestamp, now
		t.nCompleted++
	}
	s.stats.Packets++
	s.stats.Bytes += int64(len(pkt.Payload))
	if s.seq.add(pkt.SequenceNumber) {
		s.stats.Duplicates++
	}
}

// sample takes one reassembled access unit: it counts it, learns the picture size from its
// SPS, and from the first keyframe on writes it to Options.Out.
func (t *track) sample(smp *media.Sample, now time.Time) error {
	if smp.PrevDroppedPackets > 0 {
		// Frames were dropped as incomplete: the pictures that refer to them will not decode
		// until the next keyframe.
		t.s.log.Debug("receiver: incomplete frames dropped", "session", t.s.id, "packets", smp.PrevDroppedPackets)
		t.requestKeyframe(now)
	}
	au, ok := t.accessUnit(smp.Data)
	if !ok {
		return nil
	}
	for _, nal := range au.NALs {
		switch h264.TypeOf(nal) {
		case h264.NALSPS:
			if sps, err := h264.ParseSPS(nal); err == nil {
				t.s.mu.Lock()
				t.s.stats.Width, t.s.stats.Height = sps.Width, sps.Height
				t.s.mu.Unlock()
				t.sps = append(t.sps[:0], nal...)
			}
		case h264.NALPPS:
			t.pps = append(t.pps[:0], nal...)
		}
	}

	s := t.s
	s.mu.Lock()
	s.stats.Frames++
	if au.Keyframe {
		s.stats.Keyframes++
	}
	s.mediaSpan.add(smp.PacketTimestamp)
	first := false
	if !s.started && au.Keyframe && t.sps != nil && t.pps != nil {
		s.started, first = true, true
		s.stats.TimeToFirstFrame = t.completed(smp.PacketTimestamp, now).Sub(s.stats.OfferSent)
	}
	started := s.started
	s.mu.Unlock()
	if first {
		close(s.firstKeyframe)
	}
	if !started || s.out == nil {
		return nil
	}
	t.buf = t.buf[:0]
	if first && !au.HasParams {
		// Start the stream with the parameter sets, so it decodes from its first byte.
		t.buf = h264.AppendAnnexB(t.buf, h264.AccessUnit{NALs: [][]byte{t.sps, t.pps}})
	}
	t.buf = h264.AppendAnnexB(t.buf, au)
	_, err := s.out.Write(t.buf)
	return err
}

// completed returns when the last packet of the frame with RTP timestamp ts arrived, or
// otherwise if that is no longer known.
func (t *track) completed(ts uint32, otherwise time.Time) time.Time {
	for i := range t.completedAt {
		if c := t.completedAt[i]; c.ts == ts && !c.at.IsZero() {
			return c.at
		}
	}
	return otherwise
}

// accessUnit splits one sample's Annex B bytes into NAL units with device/h264's splitter
// and returns them as one access unit (a sample is one frame by construction: the packets
// of one RTP timestamp, up to the marker bit). ok is false when it holds no picture.
func (t *track) accessUnit(annexB []byte) (h264.AccessUnit, bool) {
	t.split.Reset(bytes.NewReader(annexB))
	var au h264.AccessUnit
	for {
		part, err := t.split.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if errors.Is(err, h264.ErrTooLarge) || errors.Is(err, h264.ErrMalformed) {
				t.s.log.Debug("receiver: damaged access unit dropped", "session", t.s.id, "err", err)
				continue
			}
			break
		}
		au.NALs = append(au.NALs, part.NALs...)
		au.Keyframe = au.Keyframe || part.Keyframe
		au.HasParams = au.HasParams || part.HasParams
	}
	if !au.HasPicture() {
		return h264.AccessUnit{}, false
	}
	return au, true
}

// maybeRequestKeyframe asks for a keyframe when none has come keyframeWait after the first
// packet.
func (t *track) maybeRequestKeyframe(now time.Time) {
	t.s.mu.Lock()
	started := t.s.started
	t.s.mu.Unlock()
	if !started && now.Sub(t.firstPacket) >= keyframeWait {
		t.requestKeyframe(now)
	}
}

// requestKeyframe sends a picture loss indication (RFC 4585 §6.3.1), at most once per
// pliInterval.
func (t *track) requestKeyframe(now time.Time) {
	if now.Sub(t.lastPLI) < pliInterval {
		return
	}
	t.lastPLI = now
	if err := t.s.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: t.ssrc}}); err != nil {
		t.s.log.Debug("receiver: keyframe request not sent", "session", t.s.id, "err", err)
		return
	}
	t.s.mu.Lock()
	t.s.stats.KeyframeRequests++
	t.s.mu.Unlock()
}

// tsSpan measures the span of a stream's 32-bit RTP timestamps, extended across wrap-arounds.
type tsSpan struct {
	started     bool
	last        uint32
	ext         int64 // extended timestamp of last
	first, high int64
}

func (a *tsSpan) add(ts uint32) {
	if !a.started {
		a.started, a.last = true, ts
		return
	}
	a.ext += int64(int32(ts - a.last))
	a.last = ts
	a.first = min(a.first, a.ext)
	a.high = max(a.high, a.ext)
}

func (a *tsSpan) duration() time.Duration {
	return time.Duration((a.high - a.first) * int64(time.Second) / clockRate)
}
