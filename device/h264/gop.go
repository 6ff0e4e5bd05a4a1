package h264

import (
	"bytes"
	"sync"
)

// DefaultGOPBytes is the GOPCache budget NewGOPCache uses when given zero or less.
const DefaultGOPBytes = 4 << 20

// GOPCache keeps what a viewer joining mid-stream needs to start decoding at once: the latest
// SPS and PPS, and every access unit since the latest keyframe.
//
// It holds at most its budget of access unit bytes. When a group of pictures outgrows the
// budget, the cache drops it whole (a partial group would not decode) and keeps only the
// parameter sets until the next keyframe; new viewers then wait for that keyframe.
//
// Only the latest SPS and PPS are kept, whatever their ids: camera encoders use one of each.
//
// A GOPCache is safe for concurrent use. It keeps the access units it is given, so their
// bytes must not change afterwards (see AccessUnit).
type GOPCache struct {
	maxBytes int

	mu       sync.Mutex
	sps, pps []byte       // latest parameter sets, copied
	aus      []AccessUnit // keyframe first, then every later access unit
	bytes    int          // sum of aus' sizes
	overflow bool         // the current group outgrew maxBytes; wait for a keyframe
}

// NewGOPCache returns an empty cache holding at most maxBytes of access units. maxBytes <= 0
// means DefaultGOPBytes.
func NewGOPCache(maxBytes int) *GOPCache {
	if maxBytes <= 0 {
		maxBytes = DefaultGOPBytes
	}
	return &GOPCache{maxBytes: maxBytes}
}

// Push adds the next access unit of the stream. A keyframe starts a new group; an access
// unit before the first keyframe, or after the group outgrew the budget, only updates the
// parameter sets.
func (c *GOPCache) Push(au AccessUnit) {
	size := au.Size()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, nal := range au.NALs {
		switch TypeOf(nal) {
		case NALSPS:
			if !bytes.Equal(c.sps, nal) {
				// Copy: the NAL unit shares its array with the whole access unit, which the
				// cache would otherwise keep alive.
				c.sps = append([]byte(nil), nal...)
			}
		case NALPPS:
			if !bytes.Equal(c.pps, nal) {
				c.pps = append([]byte(nil), nal...)
			}
		}
	}
	switch {
	case au.Keyframe:
		clear(c.aus) // let the old group's bytes go
		c.aus = c.aus[:0]
		c.bytes = 0
		c.overflow = false
	case c.overflow || len(c.aus) == 0:
		return
	}
	if c.bytes+size > c.maxBytes {
		clear(c.aus)
		c.aus = c.aus[:0]
		c.bytes = 0
		c.overflow = true
		return
	}
	c.aus = append(c.aus, au)
	c.bytes += size
}

// Snapshot returns the cached group of pictures, keyframe first, or nil when there is none
// (no keyframe yet, or the group outgrew the budget). If the keyframe's access unit lacks the
// SPS or PPS, the latest ones are inserted into it where a decoder expects them: after an
// access unit delimiter, SPS before PPS, both before the slices. The returned slice is the
// caller's; the access units' bytes are shared and must not be modified.
func (c *GOPCache) Snapshot() []AccessUnit {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.aus) == 0 {
		return nil
	}
	out := make([]AccessUnit, len(c.aus))
	copy(out, c.aus)
	out[0] = withParams(out[0], c.sps, c.pps)
	return out
}

// Reset forgets everything, parameter sets included. Call it when the stream restarts with
// possibly different parameters (camera.Frame.Discontinuity).
func (c *GOPCache) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.aus)
	c.aus = c.aus[:0]
	c.bytes = 0
	c.overflow = false
	c.sps, c.pps = nil, nil
}

// Bytes returns the size of the cached access units.
func (c *GOPCache) Bytes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}

// withParams returns au with sps and pps inserted if it lacks them and they are known. The
// NAL list is copied; the NAL units are shared.
func withParams(au AccessUnit, sps, pps []byte) AccessUnit {
	var hasSPS, hasPPS bool
	for _, nal := range au.NALs {
		switch TypeOf(nal) {
		case NALSPS:
			hasSPS = true
		case NALPPS:
			hasPPS = true
		}
	}
	needSPS := !hasSPS && sps != nil
	needPPS := !hasPPS && pps != nil
	if !needSPS && !needPPS {
		return au
	}
	nals := make([][]byte, 0, len(au.NALs)+2)
	rest := au.NALs
	if len(rest) > 0 && TypeOf(rest[0]) == NALAUD {
		nals = append(nals, rest[0])
		rest = rest[1:]
	}
	if needSPS {
		nals = append(nals, sps)
	}
	// Keep the access unit's own SPS (and its extensions) ahead of the PPS that refers to it.
	for len(rest) > 0 {
		if t := TypeOf(rest[0]); t != NALSPS && t != NALSPSExt {
			break
		}
		nals = append(nals, rest[0])
		rest = rest[1:]
	}
	if needPPS {
		nals = append(nals, pps)
	}
	nals = append(nals, rest...)
	au.NALs = nals
	au.HasParams = (hasSPS || needSPS) && (hasPPS || needPPS)
	return au
}
