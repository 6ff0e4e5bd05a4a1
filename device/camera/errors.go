package camera

import (
	"errors"
	"fmt"
)

// Sentinel errors.
var (
	// ErrUnsupported is returned by RequestKeyframe when the source cannot make its encoder
	// produce a keyframe on demand. It also matches errors.ErrUnsupported. New viewers then
	// start from the keyframe the fan-out caches (h264.GOPCache).
	ErrUnsupported = fmt.Errorf("camera: keyframe request: %w", errors.ErrUnsupported)
	// ErrRunning is returned by Run when the source is already running.
	ErrRunning = errors.New("camera: source already running")
	// ErrNoPictures reports a file a FileSource cannot loop: one that does not start with a
	// keyframe and its parameter sets, or one with no picture at all.
	ErrNoPictures = errors.New("camera: no playable pictures")
)
