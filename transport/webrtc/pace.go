package webrtc

import "time"

// CatchUpFactor is how much faster than the stream's own bitrate a joining viewer is sent the
// cached group of pictures after its keyframe. The keyframe goes at once (it is what the
// viewer waits for); the frames after it, up to a second of video, would otherwise leave in one
// burst of a few hundred packets, more than a receiver's default socket buffer holds (Linux's
// 208 KiB; libwebrtc asks for 256 KiB), and the viewer would lose the picture's references
// until the next keyframe. At 4× a one-second group is caught up in about a quarter second.
const CatchUpFactor = 4

// minCatchUpRate bounds the catch-up rate from below, in bytes per second, for a group too
// short to estimate the stream's bitrate from.
const minCatchUpRate = 256 << 10

// catchUpSchedule returns, for each frame of a cached group (keyframe first), how long after
// the keyframe is sent it may be sent: frame i leaves once the bytes before it, at CatchUpFactor
// times the group's own bitrate, have had time to drain. The first entry is 0.
func catchUpSchedule(group []*frame) []time.Duration {
	due := make([]time.Duration, len(group))
	if len(group) < 2 {
		return due
	}
	total := 0
	for _, fr := range group {
		total += fr.size()
	}
	// The group spans from its keyframe to one frame past its last: estimate a frame's
	// duration from the mean spacing.
	span := float64(group[len(group)-1].ts-group[0].ts) / 90000 * float64(len(group)) / float64(len(group)-1)
	rate := float64(minCatchUpRate)
	if span > 0 {
		rate = max(rate, float64(total)/span*CatchUpFactor)
	}
	sent := 0
	for i, fr := range group {
		due[i] = time.Duration(float64(sent) / rate * float64(time.Second))
		sent += fr.size()
	}
	return due
}

// size is the frame's payload bytes.
func (f *frame) size() int {
	n := 0
	for _, p := range f.payloads {
		n += len(p)
	}
	return n
}
