package board_test

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/camagent/camagent/device/board"
)

func TestReadFixtures(t *testing.T) {
	for _, tc := range []struct {
		name, dir string
		want      board.Identity
		pi        bool
	}{
		{"a Pi 4 gives its device-tree serial and model", "pi4",
			board.Identity{Model: "Raspberry Pi 4 Model B Rev 1.4", Serial: "10000000a1b2c3d4", Source: board.SourceDeviceTree}, true},
		{"a Pi 5 gives its device-tree serial and model", "pi5",
			board.Identity{Model: "Raspberry Pi 5 Model B Rev 1.0", Serial: "e0d3c1f1a5b29876", Source: board.SourceDeviceTree}, true},
		{"a Pi Zero on old firmware gives the cpuinfo serial, in lower case", "pizero",
			board.Identity{Model: "Raspberry Pi Zero W Rev 1.1", Serial: "00000000e5f6a7b8", Source: board.SourceCPUInfo}, true},
		// The derived serials were computed independently: the first 16 hex digits of
		// HMAC-SHA256(key: the machine-id text, message: "camagent board serial").
		{"a PC is unknown, with a serial derived from its machine-id", "pc",
			board.Identity{Model: board.Unknown, Serial: "37ee72793d523d29", Source: board.SourceMachineID}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := board.Read(os.DirFS("testdata/" + tc.dir))
			if err != nil {
				t.Fatal(err)
			}
			if id != tc.want {
				t.Errorf("Read = %#v\nwant   %#v", id, tc.want)
			}
			if id.RaspberryPi() != tc.pi {
				t.Errorf("RaspberryPi() = %v, want %v", id.RaspberryPi(), tc.pi)
			}
		})
	}
}

func TestMachineIDIsNotExposed(t *testing.T) {
	mid, err := os.ReadFile("testdata/pc/etc/machine-id")
	if err != nil {
		t.Fatal(err)
	}
	id, err := board.Read(os.DirFS("testdata/pc"))
	if err != nil {
		t.Fatal(err)
	}
	if len(id.Serial) != 16 || strings.Contains(string(mid), id.Serial[:8]) {
		t.Errorf("serial %q is not a 16-digit value unrelated to the machine-id", id.Serial)
	}
}

func TestReadFallbacks(t *testing.T) {
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	for _, tc := range []struct {
		name     string
		fs       fstest.MapFS
		want     board.Identity
		noSerial bool
	}{
		{"nothing at all: unknown model and ErrNoSerial", fstest.MapFS{},
			board.Identity{Model: board.Unknown}, true},
		{"an all-zero cpuinfo serial and an uninitialized machine-id: ErrNoSerial", fstest.MapFS{
			"proc/cpuinfo":   file("Serial\t\t: 0000000000000000\n"),
			"etc/machine-id": file("uninitialized\n"),
		}, board.Identity{Model: board.Unknown}, true},
		{"a malformed device-tree serial falls back to cpuinfo", fstest.MapFS{
			"proc/device-tree/serial-number": file("N/A\x00"),
			"proc/cpuinfo":                   file("Serial\t\t: 10000000deadbeef\nModel\t\t: Raspberry Pi 3 Model B Rev 1.2\n"),
		}, board.Identity{Model: "Raspberry Pi 3 Model B Rev 1.2", Serial: "10000000deadbeef", Source: board.SourceCPUInfo}, false},
		{"another ARM board names its model in the device tree", fstest.MapFS{
			"proc/device-tree/model": file("Radxa ROCK Pi 4B\x00"),
			"etc/machine-id":         file("0123456789abcdef0123456789abcdef\n"),
		}, board.Identity{Model: "Radxa ROCK Pi 4B", Serial: "a3f33d36c50847d5", Source: board.SourceMachineID}, false},
		{"a cpuinfo serial of the wrong length is ignored", fstest.MapFS{
			"proc/cpuinfo": file("Serial\t\t: 123\n"),
		}, board.Identity{Model: board.Unknown}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := board.Read(tc.fs)
			if tc.noSerial != errors.Is(err, board.ErrNoSerial) || (!tc.noSerial && err != nil) {
				t.Errorf("err = %v, want ErrNoSerial: %v", err, tc.noSerial)
			}
			if id != tc.want {
				t.Errorf("Read = %#v\nwant   %#v", id, tc.want)
			}
		})
	}
}

func TestSerialStaysOutOfLogs(t *testing.T) {
	id, err := board.Read(os.DirFS("testdata/pi4"))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("board", "board", id)
	for what, s := range map[string]string{"String": id.String(), "log line": buf.String()} {
		if strings.Contains(s, id.Serial) {
			t.Errorf("%s carries the serial: %s", what, s)
		}
		if !strings.Contains(s, "Raspberry Pi 4") {
			t.Errorf("%s lacks the model: %s", what, s)
		}
	}
}

func TestReadHost(t *testing.T) {
	id, err := board.ReadHost()
	if err != nil && !errors.Is(err, board.ErrNoSerial) {
		t.Fatal(err)
	}
	t.Logf("this machine: %v (err %v)", id, err)
	if id.Model == "" {
		t.Error("empty model; want Unknown at least")
	}
}
