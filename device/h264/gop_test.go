package h264

import (
	"bytes"
	"fmt"
	"slices"
	"sync"
	"testing"
)

// au builds an access unit from NAL units, with the flags the splitter would set.
func au(nals ...[]byte) AccessUnit {
	a := AccessUnit{NALs: nals}
	var sps, pps bool
	for _, n := range nals {
		switch TypeOf(n) {
		case NALIDR:
			a.Keyframe = true
		case NALSPS:
			sps = true
		case NALPPS:
			pps = true
		}
	}
	a.HasParams = sps && pps
	return a
}

// types lists the NAL unit types of each access unit, for comparing.
func types(aus []AccessUnit) string {
	var b bytes.Buffer
	for i, a := range aus {
		if i > 0 {
			b.WriteByte('|')
		}
		for j, n := range a.NALs {
			if j > 0 {
				b.WriteByte(',')
			}
			fmt.Fprint(&b, TypeOf(n))
		}
	}
	return b.String()
}

func TestGOPCache(t *testing.T) {
	sps, pps := testSPS(), testPPS
	sps2 := append(slices.Clone(sps), 0x80) // a different SPS
	idr := slice(NALIDR, 0, 1)
	p := slice(NALSlice, 0, 2)
	tests := []struct {
		name   string
		pushes []AccessUnit
		want   string // NAL types of the snapshot
	}{
		{"empty cache has no snapshot", nil, ""},
		{"pictures before the first keyframe are not kept", []AccessUnit{au(p), au(p)}, ""},
		{"a keyframe with its parameters starts the group", []AccessUnit{au(p), au(sps, pps, idr), au(p), au(p)}, "7,8,5|1|1"},
		{"a new keyframe replaces the group", []AccessUnit{au(sps, pps, idr), au(p), au(sps, pps, idr), au(p)}, "7,8,5|1"},
		{"parameters seen earlier are put before a bare keyframe", []AccessUnit{au(sps, pps, idr), au(p), au(idr), au(p)}, "7,8,5|1"},
		{"they go after an access unit delimiter", []AccessUnit{au(sps), au(pps), au(testAUD, testSEI, idr)}, "9,7,8,6,5"},
		{"a missing PPS goes after the keyframe's own SPS", []AccessUnit{au(pps), au(testAUD, sps, testSEI, idr)}, "9,7,8,6,5"},
		{"a missing SPS goes before the keyframe's own PPS", []AccessUnit{au(sps), au(pps, idr)}, "7,8,5"},
		{"without known parameters the keyframe is left as it is", []AccessUnit{au(idr), au(p)}, "5|1"},
		{"the latest SPS wins", []AccessUnit{au(sps, pps, idr), au(sps2), au(idr)}, "7,8,5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewGOPCache(0)
			for _, a := range tt.pushes {
				c.Push(a)
			}
			snap := c.Snapshot()
			if got := types(snap); got != tt.want {
				t.Fatalf("snapshot %q, want %q", got, tt.want)
			}
			if len(snap) > 0 && (!snap[0].Keyframe || (!snap[0].HasParams && bytes.Contains([]byte(tt.want), []byte("7,8")))) {
				t.Errorf("first access unit: Keyframe %v HasParams %v", snap[0].Keyframe, snap[0].HasParams)
			}
		})
	}
}

func TestGOPCacheLatestSPSIsUsed(t *testing.T) {
	sps2 := append(testSPS(), 0x80)
	c := NewGOPCache(0)
	c.Push(au(testSPS(), testPPS, slice(NALIDR, 0)))
	c.Push(au(sps2))
	c.Push(au(slice(NALIDR, 0)))
	if got := c.Snapshot()[0].NALs[0]; !bytes.Equal(got, sps2) {
		t.Errorf("snapshot starts with %x, want the latest SPS %x", got, sps2)
	}
}

func TestGOPCacheBudget(t *testing.T) {
	idr := au(testSPS(), testPPS, slice(NALIDR, 0, bytes.Repeat([]byte{1}, 400)...))
	p := au(slice(NALSlice, 0, bytes.Repeat([]byte{2}, 200)...))
	c := NewGOPCache(1000)
	c.Push(idr)
	c.Push(p)
	if n := len(c.Snapshot()); n != 2 {
		t.Fatalf("snapshot of %d access units, want 2", n)
	}
	c.Push(p)
	c.Push(p) // over budget: the group is dropped
	if snap := c.Snapshot(); snap != nil || c.Bytes() != 0 {
		t.Fatalf("over budget: snapshot of %d access units, %d bytes; want none", len(snap), c.Bytes())
	}
	c.Push(p) // still waiting for a keyframe
	if c.Snapshot() != nil {
		t.Fatal("a picture after the overflow started a group")
	}
	c.Push(au(slice(NALIDR, 0, 3)))
	if got := types(c.Snapshot()); got != "7,8,5" {
		t.Fatalf("after the next keyframe: %q, want the kept parameters and the keyframe", got)
	}
	c.Reset()
	if c.Snapshot() != nil {
		t.Fatal("snapshot after Reset")
	}
	c.Push(au(slice(NALIDR, 0, 3)))
	if got := types(c.Snapshot()); got != "5" {
		t.Fatalf("after Reset: %q, want no remembered parameters", got)
	}
}

func TestGOPCacheParamsDoNotPinAccessUnits(t *testing.T) {
	kf := au(testSPS(), testPPS, slice(NALIDR, 0, 1))
	c := NewGOPCache(0)
	c.Push(kf)
	if &c.sps[0] == &kf.NALs[0][0] {
		t.Error("the cache keeps the SPS inside the access unit's array")
	}
}

func TestGOPCacheConcurrent(t *testing.T) {
	aus, _ := splitAll(t, bytes.NewReader(readClip(t)), 0)
	c := NewGOPCache(0)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 200 {
				snap := c.Snapshot()
				if len(snap) > 0 && (!snap[0].Keyframe || !snap[0].HasParams) {
					t.Error("snapshot does not start with a keyframe and parameters")
					return
				}
			}
		})
	}
	for range 3 {
		for _, a := range aus {
			c.Push(a)
		}
	}
	wg.Wait()
	if n := len(c.Snapshot()); n != clipGOP {
		t.Errorf("final snapshot of %d access units, want %d", n, clipGOP)
	}
}
