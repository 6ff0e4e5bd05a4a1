package h264_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/camagent/camagent/device/h264"
)

func ExampleParseSPS() {
	// The SPS x264 writes for 320x240 constrained baseline at 30 fps.
	nal, _ := hex.DecodeString("6742c00dd90141fb0110000003001000000303c0f142a480")
	sps, err := h264.ParseSPS(nal)
	if err != nil {
		fmt.Println(err)
		return
	}
	d, _ := sps.FrameInterval()
	fmt.Println(sps.ProfileLevelID(), sps.SDPProfileLevelID(), sps.ConstrainedBaseline())
	fmt.Println(sps.Width, sps.Height, d)
	// Output:
	// 42c00d 42e00d true
	// 320 240 33.333333ms
}

func ExampleSplitter() {
	stream := []byte{
		0, 0, 0, 1, 0x09, 0xf0, // access unit delimiter
		0, 0, 0, 1, 0x65, 0x88, 0x84, // IDR slice, first_mb_in_slice 0
		0, 0, 1, 0x41, 0x9a, 0x02, // non-IDR slice, first_mb_in_slice 0: a new picture
	}
	s := h264.NewSplitter(bytes.NewReader(stream), 0)
	for {
		au, err := s.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Printf("%d NAL units, keyframe %v\n", len(au.NALs), au.Keyframe)
	}
	// Output:
	// 2 NAL units, keyframe true
	// 1 NAL units, keyframe false
}

// types lists the NAL unit types of an access unit.
func types(au h264.AccessUnit) string {
	s := ""
	for i, nal := range au.NALs {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprint(h264.TypeOf(nal))
	}
	return s
}

func ExampleGOPCache() {
	sps, _ := hex.DecodeString("6742c00dd90141fb0110000003001000000303c0f142a480")
	pps := []byte{0x68, 0xce, 0x38, 0x80}
	cache := h264.NewGOPCache(0)
	cache.Push(h264.AccessUnit{NALs: [][]byte{sps, pps}, HasParams: true})
	cache.Push(h264.AccessUnit{NALs: [][]byte{{0x65, 0x88, 0x84}}, Keyframe: true})
	cache.Push(h264.AccessUnit{NALs: [][]byte{{0x41, 0x9a, 0x02}}})

	// A viewer joining now gets the keyframe, with the parameter sets put in front, and the
	// picture after it.
	for _, au := range cache.Snapshot() {
		fmt.Println(types(au))
	}
	// Output:
	// 7 8 5
	// 1
}
