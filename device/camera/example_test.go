package camera_test

import (
	"context"
	"log/slog"
	"os"

	"github.com/camagent/camagent/device/camera"
	"github.com/camagent/camagent/device/h264"
)

// A Raspberry Pi camera as a Source, feeding a GOP cache the way the WebRTC fan-out does.
func ExampleExecSource() {
	src, err := camera.NewExecSource(camera.ExecConfig{
		Argv: []string{"rpicam-vid", "-t", "0", "-n", "--inline", "--codec", "h264",
			"--profile", "baseline", "--intra", "30", "--width", "1280", "--height", "720",
			"--framerate", "30", "-o", "-"},
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)),
	})
	if err != nil {
		return
	}
	gop := h264.NewGOPCache(0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_ = src.Run(ctx, func(f camera.Frame) {
		if f.Discontinuity {
			gop.Reset()
		}
		gop.Push(f.AU)
		// ... hand f to each viewer's queue, without blocking.
	})
}
