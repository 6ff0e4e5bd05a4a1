package h264

import (
	"bytes"
	"io"
	"testing"
)

// BenchmarkSplitter reports the splitter's throughput on the test clip, read as a stream.
func BenchmarkSplitter(b *testing.B) {
	clip := readClip(b)
	b.SetBytes(int64(len(clip)))
	b.ReportAllocs()
	r := bytes.NewReader(clip)
	s := NewSplitter(r, 0)
	for b.Loop() {
		r.Reset(clip)
		s.Reset(r)
		n := 0
		for {
			_, err := s.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			n++
		}
		if n != clipFrames {
			b.Fatalf("%d access units", n)
		}
	}
}

// BenchmarkGOPCache measures one Push per op, and a Snapshot every tenth, as a fan-out with a
// viewer joining now and then would.
func BenchmarkGOPCache(b *testing.B) {
	aus, _ := splitAll(b, bytes.NewReader(readClip(b)), 0)
	c := NewGOPCache(0)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c.Push(aus[i%len(aus)])
		if i%10 == 0 {
			_ = c.Snapshot()
		}
		i++
	}
}

func BenchmarkParseSPS(b *testing.B) {
	nal := buildSPS(spsFields{profile: 100, level: 40, chroma: 1, widthMbs: 120, heightMapUnits: 68, frameMbsOnly: true, crop: [4]uint64{0, 0, 0, 4}, timing: [2]uint64{1001, 60000}})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseSPS(nal); err != nil {
			b.Fatal(err)
		}
	}
}
