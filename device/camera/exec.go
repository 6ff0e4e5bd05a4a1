package camera

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/camagent/camagent/device/h264"
)

// Defaults for ExecConfig fields left zero.
const (
	DefaultBackoffMin      = 500 * time.Millisecond
	DefaultBackoffMax      = 30 * time.Second
	DefaultStableAfter     = time.Minute
	DefaultKillGrace       = 3 * time.Second
	DefaultStallTimeout    = 30 * time.Second
	DefaultStderrLineMax   = 512
	DefaultStderrPerMinute = 60
)

// ExecConfig configures an ExecSource.
type ExecConfig struct {
	// Argv is the encoder command and its arguments, run directly, never through a shell.
	// Argv[0] is looked up in PATH if it has no slash. Required. For example, on a
	// Raspberry Pi:
	//
	//	rpicam-vid -t 0 -n --inline --codec h264 --profile baseline --width 1280 --height 720 --framerate 30 -o -
	Argv []string
	// Env is the encoder's environment. Nil means the agent's own.
	Env []string
	// Dir is the encoder's working directory. Empty means the agent's own.
	Dir string
	// MaxAU caps an access unit in bytes. Zero means h264.DefaultMaxAU.
	MaxAU int
	// BackoffMin is the delay before the first restart after the encoder exits; each
	// further restart doubles it, up to BackoffMax. Delays are jittered: a random point in
	// their upper half. Zero means DefaultBackoffMin and DefaultBackoffMax.
	BackoffMin, BackoffMax time.Duration
	// StableAfter is how long the encoder must have run for its exit to count as a fresh
	// failure, restarting the backoff from BackoffMin. Zero means DefaultStableAfter.
	StableAfter time.Duration
	// KillGrace is how long the encoder gets between SIGTERM and SIGKILL when it must stop.
	// Zero means DefaultKillGrace.
	KillGrace time.Duration
	// StallTimeout is how long a running encoder may go without sending a picture before it
	// counts as hung (alive but silent, as a wedged camera stack is): it is then stopped and
	// restarted like one that exited. It must cover the encoder's start-up. Zero means
	// DefaultStallTimeout.
	StallTimeout time.Duration
	// StderrLineMax caps each logged line of the encoder's stderr, in bytes; longer lines
	// are truncated. Zero means DefaultStderrLineMax.
	StderrLineMax int
	// StderrPerMinute caps the stderr lines logged per minute; the rest are counted and the
	// count logged. It caps the lines about damaged access units in the encoder's output
	// the same way. Zero means DefaultStderrPerMinute.
	StderrPerMinute int
	// Clock stamps frames and times backoff and kill grace. Nil means SystemClock.
	Clock Clock
	// Logger receives the encoder's stderr, its exits and restarts, and damaged access
	// units. Nil means no logging.
	Logger *slog.Logger
}

// ExecSource runs a camera encoder process that writes an Annex B H.264 stream to its
// standard output, such as rpicam-vid or ffmpeg, and yields its access units.
//
// When the encoder exits, its output ends or it sends no picture for StallTimeout (it hung),
// ExecSource makes sure its whole process group is gone and starts it again after an
// exponential, jittered, capped backoff; it never gives up while ctx lives. Frames are
// stamped with their arrival time, so their PTS reflects when the encoder delivered them (one
// frame late, without access unit delimiters; see h264.Splitter).
//
// There is no portable way to ask an encoder process for a keyframe, so RequestKeyframe
// returns ErrUnsupported; run the encoder with a short, fixed GOP (rpicam-vid --intra 30,
// x264 keyint) and SPS/PPS before every keyframe (rpicam-vid --inline) so a new viewer waits
// at most one GOP, and less with an h264.GOPCache.
type ExecSource struct {
	cfg     ExecConfig
	log     *slog.Logger
	running atomic.Bool

	mu      sync.Mutex
	info    StreamInfo
	lastSPS []byte
}

var _ Source = (*ExecSource)(nil)

// NewExecSource checks the configuration and applies its defaults. It starts nothing.
func NewExecSource(cfg ExecConfig) (*ExecSource, error) {
	if len(cfg.Argv) == 0 || cfg.Argv[0] == "" {
		return nil, errors.New("camera: ExecConfig.Argv is empty")
	}
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"MaxAU", int64(cfg.MaxAU)}, {"BackoffMin", int64(cfg.BackoffMin)}, {"BackoffMax", int64(cfg.BackoffMax)},
		{"StableAfter", int64(cfg.StableAfter)}, {"KillGrace", int64(cfg.KillGrace)}, {"StallTimeout", int64(cfg.StallTimeout)},
		{"StderrLineMax", int64(cfg.StderrLineMax)}, {"StderrPerMinute", int64(cfg.StderrPerMinute)},
	} {
		if f.v < 0 {
			return nil, fmt.Errorf("camera: ExecConfig.%s is negative", f.name)
		}
	}
	if cfg.BackoffMin == 0 {
		cfg.BackoffMin = DefaultBackoffMin
	}
	if cfg.BackoffMax == 0 {
		cfg.BackoffMax = max(DefaultBackoffMax, cfg.BackoffMin)
	}
	if cfg.BackoffMax < cfg.BackoffMin {
		return nil, fmt.Errorf("camera: ExecConfig.BackoffMax %v is below BackoffMin %v", cfg.BackoffMax, cfg.BackoffMin)
	}
	if cfg.StableAfter == 0 {
		cfg.StableAfter = DefaultStableAfter
	}
	if cfg.KillGrace == 0 {
		cfg.KillGrace = DefaultKillGrace
	}
	if cfg.StallTimeout == 0 {
		cfg.StallTimeout = DefaultStallTimeout
	}
	if cfg.StderrLineMax == 0 {
		cfg.StderrLineMax = DefaultStderrLineMax
	}
	if cfg.StderrPerMinute == 0 {
		cfg.StderrPerMinute = DefaultStderrPerMinute
	}
	if cfg.Clock == nil {
		cfg.Clock = SystemClock()
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg.Argv = append([]string(nil), cfg.Argv...)
	return &ExecSource{cfg: cfg, log: log.With("cmd", cfg.Argv[0])}, nil
}

// Info describes the stream as of the latest SPS the encoder sent; it is zero before the
// first. FrameInterval is zero: frames are stamped by arrival.
func (s *ExecSource) Info() StreamInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.info
}

// RequestKeyframe returns ErrUnsupported: an encoder process offers no generic way to force a
// keyframe (see ExecSource).
func (s *ExecSource) RequestKeyframe() error { return ErrUnsupported }

// Run starts the encoder and yields its frames until ctx is done, restarting it with backoff
// whenever it exits or fails to start; each failure is logged. On cancel it sends SIGTERM to
// the encoder's process group, SIGKILL after KillGrace, waits for the encoder to exit, and
// returns ctx.Err().
func (s *ExecSource) Run(ctx context.Context, out func(Frame)) error {
	if out == nil {
		return errors.New("camera: Run: out is nil")
	}
	if !s.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer s.running.Store(false)

	st := &execStamps{start: s.cfg.Clock.Now()}
	attempt := 0
	for ctx.Err() == nil {
		began := s.cfg.Clock.Now()
		frames, err := s.runOnce(ctx, st, out)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if s.cfg.Clock.Now().Sub(began) >= s.cfg.StableAfter {
			attempt = 0
		}
		delay := backoff(attempt, s.cfg.BackoffMin, s.cfg.BackoffMax, rand.Int64N)
		attempt++
		s.log.Warn("camera: encoder stopped; restarting", "err", err, "frames", frames, "restart_in", delay, "attempt", attempt)
		if err := sleep(ctx, s.cfg.Clock, delay); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// backoff returns the delay before restart number attempt (from 0): lo·2^attempt capped at
// hi, jittered to a random point in its upper half. The floor of half the delay keeps a
// command that dies at once from spinning; the jitter keeps a fleet of devices that lost
// their cameras together from restarting in step.
func backoff(attempt int, lo, hi time.Duration, randN func(int64) int64) time.Duration {
	d := hi
	if attempt < 62 && lo <= hi>>attempt {
		d = lo << attempt
	}
	half := d / 2
	return d - half + time.Duration(randN(int64(half)+1))
}

// execStamps is the timestamp state of one Run, shared by its encoder restarts.
type execStamps struct {
	start   time.Time
	seq     uint64
	last    time.Duration
	stamped bool
}

// stamp returns the PTS of a frame arriving at now: the time since Run began, moved forward
// when needed so that it strictly increases by at least one 90 kHz tick.
func (st *execStamps) stamp(now time.Time) time.Duration {
	pts := max(now.Sub(st.start), 0)
	if st.stamped && pts < st.last+minFrameStep {
		pts = st.last + minFrameStep
	}
	st.last, st.stamped = pts, true
	return pts
}

// runOnce runs the encoder once, until its output ends or ctx is done, and returns how many
// frames it sent and why it stopped.
func (s *ExecSource) runOnce(ctx context.Context, st *execStamps, out func(Frame)) (int, error) {
	name := s.cfg.Argv[0]
	// An encoder that is not installed (or not executable) is found out here, without a
	// fork for each retry, with the path's own error. (qemu-user 7.2, which runs the ARM
	// tests, can also hang the parent for good when a child's exec fails.)
	path := name
	if strings.Contains(name, "/") && !filepath.IsAbs(name) && s.cfg.Dir != "" {
		path = filepath.Join(s.cfg.Dir, name) // where the child, started in Dir, finds it
	}
	if _, err := exec.LookPath(path); err != nil {
		return 0, fmt.Errorf("camera: start %s: %w", name, err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return 0, fmt.Errorf("camera: pipe for %s: %w", name, err)
	}
	defer pr.Close()

	stderr := newLineLogger(s.log, s.cfg.Clock, s.cfg.StderrLineMax, s.cfg.StderrPerMinute)
	cmd := exec.Command(name, s.cfg.Argv[1:]...)
	cmd.Env, cmd.Dir = s.cfg.Env, s.cfg.Dir
	cmd.Stdout = pw // an *os.File: the child writes the pipe directly
	cmd.Stderr = stderr
	cmd.SysProcAttr = procAttr()
	// Bounds how long Wait waits for the stderr copy once the encoder has exited, should a
	// straggler outside its process group hold the pipe.
	cmd.WaitDelay = s.cfg.KillGrace
	err = cmd.Start()
	pw.Close() // only the child writes now
	if err != nil {
		return 0, fmt.Errorf("camera: start %s: %w", name, err)
	}
	pid := cmd.Process.Pid
	s.log.Info("camera: encoder started", "pid", pid)

	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	pumpDone := make(chan struct{})
	supervised := make(chan struct{})
	var sent atomic.Uint64 // pictures sent, for the stall watch
	var stalled bool
	go func() {
		defer close(supervised)
		stalled = s.supervise(ctx, pid, pumpDone, exited, pr, &sent)
	}()

	frames, pumpErr := s.pump(ctx, pr, st, out, &sent)
	close(pumpDone)
	<-exited
	<-supervised
	stderr.Close()

	if stalled {
		return frames, fmt.Errorf("camera: %s sent no picture for %v", name, s.cfg.StallTimeout)
	}
	if pumpErr != nil {
		return frames, pumpErr
	}
	if waitErr != nil {
		return frames, fmt.Errorf("camera: %s exited: %w", name, waitErr)
	}
	return frames, fmt.Errorf("camera: %s exited", name)
}

// supervise ends the encoder's process group once the run is over: when ctx is done, the
// output ended, the encoder exited (taking any helpers it left with it), or sent counted no
// new picture for StallTimeout (the encoder hung). It sends SIGTERM, then SIGKILL after
// KillGrace, and if the output is still open a further KillGrace later (held by a process
// that escaped the group), closes the read end so the run can end. It returns when both the
// output reader and the encoder are done, and reports whether the encoder hung.
func (s *ExecSource) supervise(ctx context.Context, pid int, pumpDone, exited <-chan struct{}, pr *os.File, sent *atomic.Uint64) (stalled bool) {
	stall := s.cfg.Clock.NewTimer(s.cfg.StallTimeout)
	var seen uint64
	for over := false; !over; {
		select {
		case <-ctx.Done():
			over = true
		case <-pumpDone:
			over = true
		case <-exited:
			over = true
		case <-stall.C():
			if n := sent.Load(); n != seen {
				seen = n
				stall = s.cfg.Clock.NewTimer(s.cfg.StallTimeout)
				continue
			}
			s.log.Warn("camera: encoder sent no picture; stopping it", "pid", pid, "stall_timeout", s.cfg.StallTimeout)
			stalled, over = true, true
		}
	}
	stall.Stop()
	if err := signalGroup(pid, syscall.SIGTERM); err != nil {
		s.log.Warn("camera: SIGTERM encoder", "pid", pid, "err", err)
	}
	grace := s.cfg.Clock.NewTimer(s.cfg.KillGrace)
	defer func() { grace.Stop() }()
	killed := false
	for pumpDone != nil || exited != nil {
		select {
		case <-pumpDone:
			pumpDone = nil
		case <-exited:
			exited = nil
		case <-grace.C():
			if !killed {
				killed = true
				s.log.Warn("camera: encoder ignored SIGTERM; killing", "pid", pid)
				if err := signalGroup(pid, syscall.SIGKILL); err != nil {
					s.log.Warn("camera: SIGKILL encoder", "pid", pid, "err", err)
				}
				grace = s.cfg.Clock.NewTimer(s.cfg.KillGrace)
				continue
			}
			s.log.Warn("camera: encoder output still open after SIGKILL; closing it", "pid", pid)
			pr.Close()
		}
	}
	return stalled
}

// pump reads access units from the encoder's output and sends each picture to out.
func (s *ExecSource) pump(ctx context.Context, r io.Reader, st *execStamps, out func(Frame), sent *atomic.Uint64) (int, error) {
	sp := h264.NewSplitter(r, s.cfg.MaxAU)
	damaged := &damageLog{log: s.log, budget: newLogBudget(s.cfg.Clock, s.cfg.StderrPerMinute)}
	defer damaged.report()
	frames := 0
	for {
		au, err := sp.Next()
		switch {
		case errors.Is(err, io.EOF):
			return frames, nil
		case errors.Is(err, h264.ErrTooLarge), errors.Is(err, h264.ErrMalformed):
			damaged.note(err)
			continue
		case err != nil:
			return frames, fmt.Errorf("camera: read %s output: %w", s.cfg.Argv[0], err)
		}
		s.noteParams(au)
		if !au.HasPicture() || ctx.Err() != nil {
			continue // keep draining until the encoder is gone
		}
		sent.Add(1)
		out(Frame{AU: au, PTS: st.stamp(s.cfg.Clock.Now()), Seq: st.seq, Discontinuity: frames == 0})
		st.seq++
		frames++
	}
}

// damageLog logs the access units the splitter dropped from an encoder's output within the
// same per-minute budget as its stderr lines, so that an encoder writing garbage cannot flood
// the device's log either; the rest are counted and the count logged.
type damageLog struct {
	log    *slog.Logger
	budget logBudget
}

func (d *damageLog) note(err error) {
	if d.budget.allow(d.reportSuppressed) {
		d.log.Warn("camera: dropped damaged access unit", "err", err)
	}
}

// report logs the count of damaged access units not logged, if any.
func (d *damageLog) report() { d.budget.flush(d.reportSuppressed) }

func (d *damageLog) reportSuppressed(n int) {
	d.log.Warn("camera: damaged access units suppressed", "count", n, "limit_per_minute", d.budget.perWindow)
}

// noteParams updates Info from a new SPS.
func (s *ExecSource) noteParams(au h264.AccessUnit) {
	nal := firstSPS(au)
	if nal == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if bytes.Equal(nal, s.lastSPS) {
		return
	}
	s.lastSPS = append(s.lastSPS[:0], nal...)
	sps, err := h264.ParseSPS(nal)
	if err != nil {
		s.log.Warn("camera: encoder sent a bad SPS", "err", err)
		return
	}
	s.info = infoFromSPS(sps, 0)
	s.log.Info("camera: stream parameters", "profile_level_id", s.info.ProfileLevelID,
		"width", s.info.Width, "height", s.info.Height)
}
