package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/atomicfile"
	"github.com/camagent/camagent/internal/cappedfile"
	"github.com/camagent/camagent/tools/camview/receiver"
	"github.com/camagent/camagent/tools/camview/relay"
	"github.com/camagent/camagent/tools/camview/whep"
)

// Recording limits.
const (
	// maxGrantFile caps a --grant-file: a grant is at most 4 KiB, 5.4 KiB in base64url.
	maxGrantFile = 16 << 10
	// stallGrace is how much longer than --seconds a recording may take in wall-clock time
	// before it stops with what it has: a camera that stalls does not hold it forever.
	stallGrace = 10 * time.Second
	// pollInterval is how often the recorder looks at the stream's length.
	pollInterval = 50 * time.Millisecond
)

// recordCmd records one camera's live video to an Annex B H.264 file and prints its figures.
func recordCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("record", stderr)
	device := fs.String("device", "", "the camera's device id (required)")
	seconds := fs.Float64("seconds", 10, "seconds of video to record, from the first keyframe (by the stream's own timestamps)")
	out := fs.String("out", "", "the H.264 file to write, Annex B (required); written atomically at the end")
	grantFile := fs.String("grant-file", "", "file holding the grant printed by fleetctl grant")
	grantArg := fs.String("grant", "", "the grant printed by fleetctl grant (other users can see it in the process list: prefer --grant-file)")
	loopback := fs.Bool("loopback", false, "confine ICE to 127.0.0.1, for tests and demos on one machine")
	relayOnly := fs.Bool("relay-only", false, "use only candidates relayed by a TURN server (needs a turn: --ice-server)")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the broker, the camera's answer and then the first keyframe")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := c.ice.parse(); err != nil {
		return fmt.Errorf("record: %w", err)
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("record: unexpected argument %q", fs.Arg(0))
	case *device == "":
		return errors.New("record: --device is required")
	case *out == "":
		return errors.New("record: --out is required")
	case *seconds <= 0 || *seconds > 24*3600:
		return fmt.Errorf("record: --seconds %v out of range (0, 86400]", *seconds)
	case *timeout <= 0:
		return fmt.Errorf("record: --timeout %v must be positive", *timeout)
	case (*grantFile == "") == (*grantArg == ""):
		return errors.New("record: give the grant with exactly one of --grant-file and --grant")
	}
	if err := certs.ValidDeviceID(*device); err != nil {
		return fmt.Errorf("record: --device: %w", err)
	}
	grant, err := loadGrant(*grantFile, *grantArg)
	if err != nil {
		return fmt.Errorf("record: %w", err)
	}
	log, err := c.logger(stderr)
	if err != nil {
		return fmt.Errorf("record: %w", err)
	}
	file, err := newOutput(*out)
	if err != nil {
		return fmt.Errorf("record: %w", err)
	}
	defer file.discard()

	r, err := c.dial(ctx, log, nil)
	if err != nil {
		return fmt.Errorf("record: %w", err)
	}
	defer r.Close()
	wctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	s, err := receiver.Watch(wctx, r, *device, grant, receiver.Options{
		LoopbackOnly: *loopback, RelayOnly: *relayOnly, ICEServers: c.ice.servers, Out: file, Logger: log,
	})
	if err != nil {
		var refused *relay.RefusedError
		if errors.As(err, &refused) {
			return fmt.Errorf("record: camera %s refused: %s", *device, refusalText(refused.Refusal.Reason))
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("record: camera %s did not answer within %v (is it online?)", *device, *timeout)
		}
		return fmt.Errorf("record: %w", err)
	}
	defer s.Close()

	select {
	case <-s.FirstKeyframe():
	case <-s.Done():
		return fmt.Errorf("record: no frame arrived: %w", explainEnd(s.Err(), s.Stats().Packets > 0))
	case <-wctx.Done():
		if ctx.Err() != nil {
			return fmt.Errorf("record: interrupted before the first frame")
		}
		st := s.Stats()
		return fmt.Errorf("record: no frame arrived within %v (%d packets received)", *timeout, st.Packets)
	}

	want := time.Duration(*seconds * float64(time.Second))
	stalled := recordFor(ctx, s, want)
	if err := s.Close(); err != nil {
		log.Warn("record: the camera was not told the session ended; it notices by itself", "err", err)
	}
	ended := s.Err()
	var outErr *receiver.OutputError
	if errors.As(ended, &outErr) {
		return fmt.Errorf("record: %w", outErr)
	}
	if err := file.commit(); err != nil {
		return fmt.Errorf("record: %w", err)
	}
	st := s.Stats()
	printFigures(stdout, st)
	fmt.Fprintf(stderr, "camview: wrote %s: %d bytes, %.2f s of video\n", *out, file.n, st.MediaDuration.Seconds())
	switch {
	case !errors.Is(ended, receiver.ErrClosed):
		return fmt.Errorf("record: the recording ended early: %w", explainEnd(ended, st.Packets > 0))
	case stalled:
		return fmt.Errorf("record: the stream stalled: %.2f s of video in %v", st.MediaDuration.Seconds(), want+stallGrace)
	}
	return nil
}

// recordFor waits until the session holds want of video (by its RTP timestamps), the session
// ends, ctx ends (an interrupt keeps what was recorded), or want+stallGrace has passed in
// wall-clock time, which it reports as a stall.
func recordFor(ctx context.Context, s *receiver.Session, want time.Duration) (stalled bool) {
	guard := time.NewTimer(want + stallGrace)
	defer guard.Stop()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			if s.Stats().MediaDuration >= want {
				return false
			}
		case <-s.Done():
			return false
		case <-ctx.Done():
			return false
		case <-guard.C:
			return true
		}
	}
}

// printFigures prints the recording's figures, one per line. Rates are over the stream's own
// timeline (RTP timestamps), which a camera's start-up burst of buffered frames does not skew.
func printFigures(w io.Writer, st receiver.Stats) {
	dur := st.MediaDuration.Seconds()
	var fps, kbps float64
	if dur > 0 {
		fps = float64(st.Frames-1) / dur
		kbps = float64(st.Bytes) * 8 / 1000 / dur
	}
	var lossPct float64
	if expected := st.Packets - st.Duplicates + st.Lost; expected > 0 {
		lossPct = 100 * float64(st.Lost) / float64(expected)
	}
	fmt.Fprintf(w, "time to first frame: %d ms\n", st.TimeToFirstFrame.Milliseconds())
	fmt.Fprintf(w, "frames: %d\n", st.Frames)
	fmt.Fprintf(w, "frames per second: %.1f\n", fps)
	fmt.Fprintf(w, "bitrate: %.1f kb/s\n", kbps)
	fmt.Fprintf(w, "packets: %d\n", st.Packets)
	fmt.Fprintf(w, "packet loss: %d (%.2f%%)\n", st.Lost, lossPct)
	fmt.Fprintf(w, "resolution: %dx%d\n", st.Width, st.Height)
}

// loadGrant reads the grant from a file or the flag's value: base64url as fleetctl grant
// prints it.
func loadGrant(path, value string) ([]byte, error) {
	if path != "" {
		b, err := cappedfile.Read(path, maxGrantFile)
		if err != nil {
			return nil, fmt.Errorf("--grant-file: %w", err)
		}
		g, err := whep.DecodeGrant(strings.TrimSpace(string(b)))
		if err != nil {
			return nil, fmt.Errorf("--grant-file: %w", err)
		}
		return g, nil
	}
	g, err := whep.DecodeGrant(strings.TrimSpace(value))
	if err != nil {
		return nil, fmt.Errorf("--grant: %w", err)
	}
	return g, nil
}

// output is the recording: a temporary file beside the target, 0600 (it is video), renamed
// over the target by commit once complete, so the target never holds half a recording.
type output struct {
	path string
	f    *os.File
	w    *bufio.Writer
	n    int64
	done bool
}

func newOutput(path string) (*output, error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, err
	}
	return &output{path: path, f: f, w: bufio.NewWriterSize(f, 256<<10)}, nil
}

// Write is called by the receiver's reader goroutine only; commit after the session closed.
func (o *output) Write(p []byte) (int, error) {
	n, err := o.w.Write(p)
	o.n += int64(n)
	return n, err
}

// commit flushes, fsyncs and renames the file over the target, and fsyncs the directory.
func (o *output) commit() error {
	if err := o.w.Flush(); err != nil {
		return fmt.Errorf("write %s: %w", o.path, err)
	}
	if err := o.f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", o.f.Name(), err)
	}
	if err := o.f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", o.f.Name(), err)
	}
	if err := os.Rename(o.f.Name(), o.path); err != nil {
		return err
	}
	o.done = true
	return atomicfile.SyncDir(filepath.Dir(o.path))
}

// discard removes the temporary file unless commit succeeded.
func (o *output) discard() {
	if o.done {
		return
	}
	o.f.Close()
	os.Remove(o.f.Name())
}
