package camera

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/bits"
	"os"
	"sync/atomic"
	"time"

	"github.com/camagent/camagent/device/h264"
)

// DefaultFPS is the frame rate of a FileSource whose file carries no timing and whose
// configuration sets none.
const DefaultFPS = 30

// MaxFPS bounds FileConfig.FPS.
const MaxFPS = 240

// maxLag is how far a FileSource may fall behind its schedule (a slow consumer, a suspended
// board) before it gives up catching up and restarts the schedule from now.
const maxLag = time.Second

// FileConfig configures a FileSource.
type FileConfig struct {
	// Path is the Annex B H.264 file to loop. It must start with a keyframe and its SPS and
	// PPS, and should repeat them before every keyframe. Required.
	Path string
	// FPS is the frame rate in frames per second, at most MaxFPS. Zero means the rate in
	// the SPS's VUI timing information if present, else DefaultFPS.
	FPS float64
	// MaxAU caps an access unit in bytes. Zero means h264.DefaultMaxAU.
	MaxAU int
	// Clock paces the frames. Nil means SystemClock.
	Clock Clock
	// Logger receives warnings about damaged access units and lag. Nil means no logging.
	Logger *slog.Logger
}

// FileSource plays an Annex B file in a loop, in real time, as a camera would. Timestamps
// follow the frame rate and keep increasing across loops. Its keyframes are those of the
// file; it cannot make more (RequestKeyframe returns ErrUnsupported).
type FileSource struct {
	cfg  FileConfig
	info StreamInfo
	// The frame interval as a fraction num/den of nanoseconds, so PTS = n·num/den is exact.
	num, den uint64
	running  atomic.Bool
}

var _ Source = (*FileSource)(nil)

// NewFileSource checks the configuration and the start of the file: it must open, and its
// first picture must be a keyframe with an SPS and a PPS.
func NewFileSource(cfg FileConfig) (*FileSource, error) {
	if cfg.Path == "" {
		return nil, errors.New("camera: FileConfig.Path is empty")
	}
	if math.IsNaN(cfg.FPS) || cfg.FPS < 0 || cfg.FPS > MaxFPS || (cfg.FPS > 0 && cfg.FPS < 0.01) {
		return nil, fmt.Errorf("camera: FileConfig.FPS %v out of range 0.01..%d (or 0 for the file's own)", cfg.FPS, MaxFPS)
	}
	if cfg.MaxAU < 0 {
		return nil, fmt.Errorf("camera: FileConfig.MaxAU %d is negative", cfg.MaxAU)
	}
	if cfg.Clock == nil {
		cfg.Clock = SystemClock()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &FileSource{cfg: cfg}

	sps, err := s.probe()
	if err != nil {
		return nil, err
	}
	_, hasTiming := sps.FrameInterval()
	switch {
	case cfg.FPS > 0:
		// Millihertz resolution keeps 29.97 exact enough and the fraction small.
		s.num, s.den = uint64(time.Second)*1000, uint64(math.Round(cfg.FPS*1000))
	case hasTiming:
		// Two clock ticks per frame, as in h264.SPS.FrameInterval.
		s.num, s.den = 2*uint64(sps.NumUnitsInTick)*uint64(time.Second), uint64(sps.TimeScale)
	default:
		s.num, s.den = uint64(time.Second), DefaultFPS
	}
	s.info = infoFromSPS(sps, s.pts(1))
	return s, nil
}

// probe reads the file up to its first picture and returns its SPS.
func (s *FileSource) probe() (*h264.SPS, error) {
	f, err := os.Open(s.cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("camera: %w", err)
	}
	defer f.Close()
	sp := h264.NewSplitter(f, s.cfg.MaxAU)
	for {
		au, err := sp.Next()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: %s has no picture", ErrNoPictures, s.cfg.Path)
		}
		if err != nil {
			return nil, fmt.Errorf("camera: read %s: %w", s.cfg.Path, err)
		}
		if !au.HasPicture() {
			continue
		}
		if !au.Keyframe || !au.HasParams {
			return nil, fmt.Errorf("%w: %s does not start with a keyframe and its SPS and PPS", ErrNoPictures, s.cfg.Path)
		}
		sps, err := h264.ParseSPS(firstSPS(au))
		if err != nil {
			return nil, fmt.Errorf("camera: %s: %w", s.cfg.Path, err)
		}
		return sps, nil
	}
}

// pts returns the presentation time of frame n.
func (s *FileSource) pts(n uint64) time.Duration {
	hi, lo := bits.Mul64(n, s.num)
	if hi >= s.den {
		return math.MaxInt64 // centuries away
	}
	q, _ := bits.Div64(hi, lo, s.den)
	return time.Duration(min(q, math.MaxInt64))
}

// Info describes the file's stream. FrameInterval is the pacing interval.
func (s *FileSource) Info() StreamInfo { return s.info }

// RequestKeyframe returns ErrUnsupported: the file's keyframes are where they are. A new
// viewer starts from the keyframe cached by the consumer's h264.GOPCache.
func (s *FileSource) RequestKeyframe() error { return ErrUnsupported }

// Run plays the file from the start, in a loop, until ctx is done. The first frame comes at
// once, the others on the frame rate's schedule. Damaged access units are logged and
// skipped. Run returns ctx.Err() when ctx is done, or an error if the file cannot be read or
// a whole pass over it yields no picture.
func (s *FileSource) Run(ctx context.Context, out func(Frame)) error {
	if out == nil {
		return errors.New("camera: Run: out is nil")
	}
	if !s.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer s.running.Store(false)

	p := &filePlayback{src: s, out: out}
	for {
		before := p.n
		if err := p.playOnce(ctx); err != nil {
			return err
		}
		if p.n == before {
			return fmt.Errorf("%w: a pass over %s yielded no picture", ErrNoPictures, s.cfg.Path)
		}
	}
}

// filePlayback is the state of one Run.
type filePlayback struct {
	src    *FileSource
	out    func(Frame)
	sp     *h264.Splitter
	n      uint64    // frames sent
	anchor time.Time // when frame anchorN was due
	anchN  uint64
}

// playOnce plays the file once.
func (p *filePlayback) playOnce(ctx context.Context) error {
	s := p.src
	f, err := os.Open(s.cfg.Path)
	if err != nil {
		return fmt.Errorf("camera: %w", err)
	}
	defer f.Close()
	if p.sp == nil {
		p.sp = h264.NewSplitter(f, s.cfg.MaxAU)
	} else {
		p.sp.Reset(f)
	}
	first := true
	for {
		au, err := p.sp.Next()
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case errors.Is(err, h264.ErrTooLarge), errors.Is(err, h264.ErrMalformed):
			s.cfg.Logger.Warn("camera: skipped damaged access unit", "file", s.cfg.Path, "err", err)
			continue
		case err != nil:
			return fmt.Errorf("camera: read %s: %w", s.cfg.Path, err)
		}
		if !au.HasPicture() {
			continue
		}
		if err := p.waitFor(ctx); err != nil {
			return err
		}
		p.out(Frame{AU: au, PTS: s.pts(p.n), Seq: p.n, Discontinuity: first})
		p.n++
		first = false
	}
}

// waitFor waits until frame p.n is due.
func (p *filePlayback) waitFor(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s := p.src
	now := s.cfg.Clock.Now()
	if p.n == 0 {
		p.anchor, p.anchN = now, 0
		return nil
	}
	due := p.anchor.Add(s.pts(p.n) - s.pts(p.anchN))
	if lag := now.Sub(due); lag > maxLag {
		s.cfg.Logger.Warn("camera: file source fell behind; restarting its schedule from now", "file", s.cfg.Path, "lag", lag)
		p.anchor, p.anchN = now, p.n
		return nil
	}
	return sleep(ctx, s.cfg.Clock, due.Sub(now))
}
