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

	// passing is held while a frame is handed to Run's out, so that SetOpen(false) can wait
	// for a frame in flight: the camera learns of the close only after SetOpen returns.
	passing sync.Mutex
}

var _ Source = (*Gate)(nil)

// NewGate returns a Gate in front of src, open or closed.
func NewGate(src Source, open bool) *Gate {
	return &Gate{src: src, open: open, changed: make(chan struct{})}
}

// SetOpen opens or closes the gate. Once closing it returns, no frame is passed on; the
// camera itself stops shortly after (Run waits for it). SetOpen must not be called from Run's
// out.
func (g *Gate) SetOpen(open bool) {
	if !open {
		// Wait out a frame being passed on; later ones see the gate closed.
		g.passing.Lock()
		defer g.passing.Unlock()
	}
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
			g.passing.Lock()
			defer g.passing.Unlock()
			if open, _ := g.state(); !open {
				// The camera has not stopped yet (or the gate closed and opened again
				// before it could): its frames are not passed on, and the next one that is
				// starts a new stream.
				first = true
				return
			}
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
		// A camera stopped because the gate closed is not a failure, even when the gate has
		// opened again since.
		gateStopped := runCtx.Err() != nil
		cancel()
		<-stopped
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if open, _ := g.state(); open && !gateStopped && err != nil {
			return err
		}
	}
}
