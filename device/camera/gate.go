package camera

import (
	"context"
	"sync"
	"time"
)

// Gate is a Source that runs another Source only while the gate is open. Privacy mode closes
// it: the camera itself stops (an ExecSource's encoder process ends, a FileSource stops
// reading), so no picture is taken at all, not merely none sent. Opening the gate starts the
// camera again.
//
// Across a close and a reopen the Gate keeps its own stream continuous for its consumer: PTS
// strictly increases, Seq counts on, and the first frame after the reopen is marked
// Discontinuity.
type Gate struct {
	src Source

	mu      sync.Mutex
	open    bool
	changed chan struct{} // closed and replaced when open changes
}

var _ Source = (*Gate)(nil)

// NewGate returns a Gate in front of src, open or closed.
func NewGate(src Source, open bool) *Gate {
	return &Gate{src: src, open: open, changed: make(chan struct{})}
}

// SetOpen opens or closes the gate. Closing it returns at once; the camera stops shortly after
// (Run waits for it).
func (g *Gate) SetOpen(open bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.open == open {
		return
	}
	g.open = open
	close(g.changed)
	g.changed = make(chan struct{})
}

// IsOpen reports whether the gate is open.
func (g *Gate) IsOpen() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.open
}

func (g *Gate) state() (bool, <-chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.open, g.changed
}

// Info returns the camera's stream info.
func (g *Gate) Info() StreamInfo { return g.src.Info() }

// RequestKeyframe passes the request to the camera.
func (g *Gate) RequestKeyframe() error { return g.src.RequestKeyframe() }

// Run runs the camera while the gate is open and waits while it is closed, until ctx is done.
// A camera that fails while the gate is open ends Run with its error; one that ends because
// the gate closed does not.
func (g *Gate) Run(ctx context.Context, out func(Frame)) error {
	var (
		seq     uint64
		last    time.Duration // PTS of the last frame passed on
		offset  time.Duration // added to the camera's PTS in this run of it
		started bool          // a frame has been passed on
	)
	for {
		open, changed := g.state()
		if !open {
			select {
			case <-changed:
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		runCtx, cancel := context.WithCancel(ctx)
		stopped := make(chan struct{})
		go func() {
			defer close(stopped)
			for {
				select {
				case <-changed:
					if open, c := g.state(); open {
						changed = c
						continue
					}
					cancel()
					return
				case <-runCtx.Done():
					return
				}
			}
		}()
		first := true
		err := g.src.Run(runCtx, func(f Frame) {
			if first {
				first = false
				offset = 0
				if started {
					offset = last + minFrameStep - f.PTS
				}
				f.Discontinuity = true
			}
			f.PTS += offset
			if started && f.PTS <= last {
				f.PTS = last + minFrameStep
			}
			f.Seq = seq
			seq++
			last, started = f.PTS, true
			out(f)
		})
		cancel()
		<-stopped
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if open, _ := g.state(); open && err != nil {
			return err
		}
	}
}
