package camera

import (
	"context"
	"math/bits"
	"time"

	"github.com/camagent/camagent/device/h264"
)

// Source produces H.264 access units in real time.
//
// The consumer (the fan-out) calls Run in one goroutine. Run calls out once per coded picture,
// in stream order, from that goroutine only, and returns only after everything it started
// (processes, goroutines) has ended. out must return quickly: it should copy the Frame into
// the consumer's own queues (the Frame's bytes may be shared, never modified) and leave slow
// work to others, because a slow out delays the source and, for a live camera, makes its
// encoder drop frames. Run returns ctx.Err() once ctx is done, or an error when the source
// cannot go on; a source runs at most once at a time (ErrRunning).
type Source interface {
	Run(ctx context.Context, out func(Frame)) error
	// Info describes the stream. Fields are zero until known: a FileSource knows them once
	// created, an ExecSource once its encoder has sent an SPS.
	Info() StreamInfo
	// RequestKeyframe asks the encoder for a keyframe as soon as possible, as a viewer's
	// picture loss indication would. It returns ErrUnsupported when the source cannot.
	RequestKeyframe() error
}

// Frame is one coded picture from a Source.
type Frame struct {
	// AU is the access unit: the slices of one picture and the parameter sets and SEI that
	// came with it. It always holds a picture (AU.HasPicture). Its bytes are shared with
	// other consumers and must not be modified.
	AU h264.AccessUnit
	// PTS is the presentation time since Run began. It strictly increases from frame to
	// frame, also across a file loop or an encoder restart, by at least one tick of the
	// 90 kHz RTP clock (see Timestamp90k).
	PTS time.Duration
	// Seq counts the frames of one Run from 0.
	Seq uint64
	// Discontinuity marks the first frame of the stream and the first after the source
	// restarted it (a file loop, an encoder restart). Parameters may have changed and the
	// frames before are no reference for the ones after: a consumer should reset its
	// h264.GOPCache. The frame need not be a keyframe.
	Discontinuity bool
}

// Timestamp90k returns PTS on the 90 kHz clock of H.264 over RTP (RFC 6184 §5.1), rounded to
// the nearest tick. The RTP layer adds its random offset and wraps it to 32 bits.
func (f Frame) Timestamp90k() uint64 {
	return durationTo90k(f.PTS)
}

// ticksPerSecond is the H.264 RTP clock rate (RFC 6184 §8.2.1).
const ticksPerSecond = 90000

// minFrameStep is the smallest PTS step that advances the 90 kHz clock by a whole tick.
const minFrameStep = (time.Second + ticksPerSecond - 1) / ticksPerSecond

func durationTo90k(d time.Duration) uint64 {
	if d <= 0 {
		return 0
	}
	hi, lo := bits.Mul64(uint64(d), ticksPerSecond)
	lo, carry := bits.Add64(lo, uint64(time.Second)/2, 0)
	hi += carry
	q, _ := bits.Div64(hi, lo, uint64(time.Second))
	return q
}

// StreamInfo describes a Source's stream, from its SPS.
type StreamInfo struct {
	// ProfileLevelID is the stream's profile-level-id as its SPS writes it, such as
	// "42c01f"; empty when not known yet.
	ProfileLevelID string
	// SDPProfileLevelID is the profile-level-id to signal in SDP: for Constrained Baseline
	// the canonical "42e0xx" browsers offer (see h264.SPS.SDPProfileLevelID).
	SDPProfileLevelID string
	// Width and Height are the picture size in pixels; zero when not known yet.
	Width, Height int
	// FrameInterval is the nominal time between frames; zero when the source has none (a
	// live encoder is stamped by arrival time).
	FrameInterval time.Duration
}

// infoFromSPS fills the SPS-derived fields of a StreamInfo.
func infoFromSPS(sps *h264.SPS, interval time.Duration) StreamInfo {
	return StreamInfo{
		ProfileLevelID:    sps.ProfileLevelID(),
		SDPProfileLevelID: sps.SDPProfileLevelID(),
		Width:             sps.Width,
		Height:            sps.Height,
		FrameInterval:     interval,
	}
}

// firstSPS returns the first SPS NAL unit of an access unit, or nil.
func firstSPS(au h264.AccessUnit) []byte {
	for _, nal := range au.NALs {
		if h264.TypeOf(nal) == h264.NALSPS {
			return nal
		}
	}
	return nil
}
