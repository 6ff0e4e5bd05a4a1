package webrtc

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"

	"github.com/camagent/camagent/device/camera"
	"github.com/camagent/camagent/device/h264"
)

const waitLong = 20 * time.Second

func clipAUs(t testing.TB) []h264.AccessUnit {
	t.Helper()
	f, err := os.Open("../../device/camera/testdata/clip.h264")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sp := h264.NewSplitter(f, 0)
	var aus []h264.AccessUnit
	for {
		au, err := sp.Next()
		if errors.Is(err, io.EOF) {
			return aus
		}
		if err != nil {
			t.Fatal(err)
		}
		aus = append(aus, au)
	}
}

// clipFrame returns frame n of the looped clip at 30 fps.
func clipFrame(aus []h264.AccessUnit, n int) camera.Frame {
	return camera.Frame{AU: aus[n%len(aus)], PTS: time.Duration(n) * time.Second / 30, Seq: uint64(n), Discontinuity: n == 0}
}

// sink is a packetWriter that reassembles frames from packets: one frame per marker bit.
type sink struct {
	mu      sync.Mutex
	block   chan struct{} // if not nil, WriteRTP waits until it is closed
	entered chan struct{} // if not nil, closed when WriteRTP first waits on block
	once    sync.Once
	frames  []sunk
	cur     sunk
	depack  codecs.H264Packet
	lastSeq uint16
	packets int
	changed chan struct{}
}

type sunk struct {
	ts       uint32
	keyframe bool // holds an IDR slice
	params   bool // holds an SPS and a PPS
}

func newSink() *sink { return &sink{changed: make(chan struct{})} }

var _ packetWriter = (*sink)(nil)

func (s *sink) WriteRTP(p *rtp.Packet) error {
	if s.block != nil {
		if s.entered != nil {
			s.once.Do(func() { close(s.entered) })
		}
		<-s.block
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.packets > 0 && p.SequenceNumber != s.lastSeq+1 {
		panic("sequence numbers are not consecutive")
	}
	s.lastSeq = p.SequenceNumber
	s.packets++
	nal, err := s.depack.Unmarshal(p.Payload)
	if err != nil {
		panic(err)
	}
	var sps, pps bool
	for i := 0; i+3 < len(nal); i++ {
		if nal[i] == 0 && nal[i+1] == 0 && nal[i+2] == 1 {
			switch h264.TypeOf(nal[i+3:]) {
			case h264.NALIDR:
				s.cur.keyframe = true
			case h264.NALSPS:
				sps = true
			case h264.NALPPS:
				pps = true
			}
		}
	}
	if sps || pps {
		s.cur.params = true // the test clip sends both together
	}
	s.cur.ts = p.Timestamp
	if p.Marker {
		s.frames = append(s.frames, s.cur)
		s.cur = sunk{}
		close(s.changed)
		s.changed = make(chan struct{})
	}
	return nil
}

func (s *sink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.frames)
}

func (s *sink) waitCount(t *testing.T, n int) {
	t.Helper()
	if err := s.wait(n); err != nil {
		t.Fatal(err)
	}
}

// wait waits until the sink has n frames; it may run on any goroutine.
func (s *sink) wait(n int) error {
	deadline := time.After(waitLong)
	for {
		s.mu.Lock()
		ok, ch := len(s.frames) >= n, s.changed
		s.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-deadline:
			return fmt.Errorf("sink has %d frames, want %d", s.count(), n)
		}
	}
}

// runViewer joins v and plays session.stream's part for it, writing to w: send the group,
// then the queue, until stop is closed.
func runViewer(f *fanout, v *viewer, w packetWriter, stop <-chan struct{}, wg *sync.WaitGroup) {
	snap := f.join(v)
	wg.Add(1)
	go func() {
		defer wg.Done()
		out := newRTPStream(w, 65530, 4294960000) // both wrap during the test
		for _, fr := range snap {
			if out.send(fr) == nil {
				v.sent.Add(1)
			}
		}
		for {
			select {
			case <-stop:
				return
			case fr := <-v.queue:
				if out.send(fr) == nil {
					v.sent.Add(1)
				}
			}
		}
	}()
}

func TestStalledViewerNeverHoldsUpTheSourceOrTheOthers(t *testing.T) {
	const frames = 300
	aus := clipAUs(t)
	var keyframeRequests atomic.Int64
	f := newFanout(0, func() { keyframeRequests.Add(1) })
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() { close(stop); wg.Wait() }()

	healthy := make([]*sink, 4)
	for i := range healthy {
		healthy[i] = newSink()
		runViewer(f, newViewer(8), healthy[i], stop, &wg)
	}
	stalled := newSink()
	stalled.block, stalled.entered = make(chan struct{}), make(chan struct{})
	stalledViewer := newViewer(8)
	runViewer(f, stalledViewer, stalled, stop, &wg)

	// The source: each push must return without waiting for any viewer. The healthy viewers
	// are waited for between pushes, as a camera's frame interval would.
	pushed := make(chan error, 1)
	go func() {
		for n := range frames {
			f.push(clipFrame(aus, n))
			if n == 0 {
				<-stalled.entered // the stalled viewer now holds frame 0 and sends nothing more
			}
			for _, s := range healthy {
				if err := s.wait(n + 1); err != nil {
					pushed <- err
					return
				}
			}
		}
		pushed <- nil
	}()
	select {
	case err := <-pushed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(waitLong):
		t.Fatal("the source was held up")
	}

	for i, s := range healthy {
		if s.count() != frames {
			t.Errorf("healthy viewer %d got %d frames, want %d", i, s.count(), frames)
		}
	}
	if got, want := stalledViewer.dropped.Load(), uint64(frames-1-8); got != want {
		t.Errorf("stalled viewer dropped %d frames, want %d: all but the one it holds and the 8 queued", got, want)
	}
	if keyframeRequests.Load() == 0 {
		t.Error("no keyframe was requested for the stalled viewer")
	}

	// Released, the stalled viewer drains its queue and then resumes at a keyframe.
	before := stalledViewer.dropped.Load()
	close(stalled.block)
	stalled.waitCount(t, 9)
	for n := frames + 1; n <= frames+45; n++ { // frame 301 is no keyframe; 330 is
		f.push(clipFrame(aus, n))
		for _, s := range healthy {
			s.waitCount(t, n)
		}
		if n >= 330 {
			stalled.waitCount(t, 9+n-329)
		}
	}
	stalled.mu.Lock()
	got := stalled.frames[9]
	stalled.mu.Unlock()
	if !got.keyframe || !got.params || got.ts != stalled.frames[0].ts+330*3000 {
		t.Fatalf("after its loss the viewer resumed with %+v, want keyframe 330 with its parameter sets", got)
	}
	if d := stalledViewer.dropped.Load() - before; d != 29 {
		t.Errorf("dropped %d frames before the keyframe, want 29", d)
	}
}

func TestJoinHandsOverTheGroupThenTheQueueWithoutGapOrDuplicate(t *testing.T) {
	aus := clipAUs(t)
	f := newFanout(0, func() {})
	for n := range 35 { // keyframe 30 and four more
		f.push(clipFrame(aus, n))
	}
	v := newViewer(64)
	snap := f.join(v)
	if len(snap) != 5 || !snap[0].keyframe || snap[0].ts != 30*3000 {
		t.Fatalf("snapshot of %d frames starting at ts %d", len(snap), snap[0].ts)
	}
	f.push(clipFrame(aus, 35))
	if fr := <-v.queue; fr.ts != 35*3000 {
		t.Fatalf("first queued frame has ts %d, want %d", fr.ts, 35*3000)
	}

	t.Run("a viewer joining before any keyframe starts at the first", func(t *testing.T) {
		f := newFanout(0, func() {})
		f.push(camera.Frame{AU: aus[1], PTS: 0, Discontinuity: true}) // a P frame first
		v := newViewer(64)
		if snap := f.join(v); snap != nil {
			t.Fatalf("snapshot of %d frames without a keyframe", len(snap))
		}
		f.push(camera.Frame{AU: aus[2], PTS: time.Second / 30})
		f.push(camera.Frame{AU: aus[0], PTS: 2 * time.Second / 30})
		if len(v.queue) != 1 || !(<-v.queue).keyframe {
			t.Fatal("the viewer did not start at the keyframe")
		}
		if v.dropped.Load() != 1 {
			t.Fatalf("dropped %d frames before the keyframe, want 1", v.dropped.Load())
		}
	})
	t.Run("a discontinuity empties the group", func(t *testing.T) {
		f := newFanout(0, func() {})
		f.push(clipFrame(aus, 0))
		f.push(camera.Frame{AU: aus[1], PTS: time.Second, Discontinuity: true})
		if snap := f.join(newViewer(1)); snap != nil {
			t.Fatalf("snapshot of %d frames across a discontinuity", len(snap))
		}
	})
	t.Run("a group over the budget is not offered", func(t *testing.T) {
		f := newFanout(aus[0].Size()+aus[1].Size(), func() {})
		for n := range 5 {
			f.push(clipFrame(aus, n))
		}
		if snap := f.join(newViewer(1)); snap != nil {
			t.Fatalf("snapshot of %d frames over the budget", len(snap))
		}
	})
}

func TestPacketsFitTheMTUAndRebuildTheAccessUnit(t *testing.T) {
	aus := clipAUs(t)
	fr := newFrame(aus[0], 0, new([]byte))
	if len(fr.payloads) < 2 {
		t.Fatalf("a %d-byte keyframe in %d packets", aus[0].Size(), len(fr.payloads))
	}
	var depack codecs.H264Packet
	var annexB []byte
	for _, p := range fr.payloads {
		if len(p)+12 > rtpMTU {
			t.Fatalf("payload of %d bytes exceeds the MTU", len(p))
		}
		b, err := depack.Unmarshal(p)
		if err != nil {
			t.Fatal(err)
		}
		annexB = append(annexB, b...)
	}
	var want []byte
	for _, nal := range aus[0].NALs {
		if h264.TypeOf(nal) != h264.NALAUD {
			want = h264.AppendAnnexB(want, h264.AccessUnit{NALs: [][]byte{nal}})
		}
	}
	if string(annexB) != string(want) {
		t.Fatal("depacketized access unit differs from the original")
	}
}

// BenchmarkFanOut measures the camera side of the fan-out for one frame of the test clip:
// packetizing it once, queueing it for every viewer, and every viewer's goroutine numbering
// its packets and handing them on (to a writer that discards them, where pion would encrypt
// and send them). Each iteration waits until every viewer has the frame, as frames spaced by a
// camera's frame interval would.
func BenchmarkFanOut(b *testing.B) {
	for _, viewers := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("%dviewers", viewers), func(b *testing.B) {
			aus := clipAUs(b)
			f := newFanout(0, func() {})
			stop := make(chan struct{})
			var wg sync.WaitGroup
			delivered := make(chan struct{}, viewers)
			for range viewers {
				runViewer(f, newViewer(DefaultQueueLength), countingWriter{delivered}, stop, &wg)
			}
			bytes := 0
			b.ReportAllocs()
			b.ResetTimer()
			for n := range b.N {
				fr := clipFrame(aus, n)
				bytes += fr.AU.Size()
				f.push(fr)
				for range viewers {
					<-delivered
				}
			}
			b.StopTimer()
			close(stop)
			wg.Wait()
			b.SetBytes(int64(bytes / max(b.N, 1)))
		})
	}
}

// countingWriter discards packets and reports each whole frame.
type countingWriter struct{ delivered chan<- struct{} }

func (c countingWriter) WriteRTP(p *rtp.Packet) error {
	if p.Marker {
		c.delivered <- struct{}{}
	}
	return nil
}
