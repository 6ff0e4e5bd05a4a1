package board

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strings"
)

// Unknown is the model of a board that does not say what it is.
const Unknown = "unknown"

// Source says where a serial number came from.
type Source string

// The sources of a serial number, best first.
const (
	SourceDeviceTree Source = "device-tree" // /proc/device-tree/serial-number
	SourceCPUInfo    Source = "cpuinfo"     // the "Serial" line of /proc/cpuinfo
	SourceMachineID  Source = "machine-id"  // derived from /etc/machine-id (not a Raspberry Pi)
)

// Paths read, relative to the root given to Read.
const (
	dtModelPath  = "proc/device-tree/model"
	dtSerialPath = "proc/device-tree/serial-number"
	cpuinfoPath  = "proc/cpuinfo"
	machineID    = "etc/machine-id"
)

// Size caps of the files read; anything longer is cut (the kernel's files are far smaller).
const (
	maxSmallFile = 4 << 10
	maxCPUInfo   = 256 << 10
)

// machineIDKey is the message of the HMAC that derives a serial from the machine-id.
const machineIDKey = "camagent board serial"

// Identity is what the board says it is.
type Identity struct {
	// Model is the board's model, such as "Raspberry Pi 4 Model B Rev 1.4", or Unknown.
	Model string
	// Serial is the hardware serial number in lower-case hex, such as "10000000a1b2c3d4".
	// Device-local: see the package documentation. Empty only with ErrNoSerial.
	Serial string
	// Source says where Serial came from.
	Source Source
}

// RaspberryPi reports whether the board is a Raspberry Pi.
func (id Identity) RaspberryPi() bool { return strings.HasPrefix(id.Model, "Raspberry Pi") }

// String returns the model and the source of the serial, never the serial itself.
func (id Identity) String() string {
	return fmt.Sprintf("%s (serial from %s)", id.Model, id.Source)
}

// LogValue logs the model and the source of the serial, never the serial itself.
func (id Identity) LogValue() slog.Value {
	return slog.GroupValue(slog.String("model", id.Model), slog.String("serial_source", string(id.Source)))
}

var (
	_ fmt.Stringer   = Identity{}
	_ slog.LogValuer = Identity{}
)

// ReadHost reads the identity of the machine the agent runs on.
func ReadHost() (Identity, error) { return Read(os.DirFS("/")) }

// Read reads the identity of the system whose root directory is root. It returns ErrNoSerial,
// with the model filled in, when no serial can be found; a file it cannot read counts as absent.
func Read(root fs.FS) (Identity, error) {
	cpu := parseCPUInfo(readCapped(root, cpuinfoPath, maxCPUInfo))
	id := Identity{Model: Unknown}
	if m := cleanDT(readCapped(root, dtModelPath, maxSmallFile)); m != "" {
		id.Model = m
	} else if cpu.model != "" {
		id.Model = cpu.model
	}
	switch dt := validSerial(cleanDT(readCapped(root, dtSerialPath, maxSmallFile))); {
	case dt != "":
		id.Serial, id.Source = dt, SourceDeviceTree
	case cpu.serial != "":
		id.Serial, id.Source = cpu.serial, SourceCPUInfo
	default:
		mid := strings.TrimSpace(string(readCapped(root, machineID, maxSmallFile)))
		if !validMachineID(mid) {
			return id, ErrNoSerial
		}
		id.Serial, id.Source = serialFromMachineID(mid), SourceMachineID
	}
	return id, nil
}

// readCapped returns the first max bytes of the file, or nil when it cannot be read.
func readCapped(root fs.FS, name string, max int64) []byte {
	f, err := root.Open(name)
	if err != nil {
		return nil
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max))
	if err != nil && !errors.Is(err, io.EOF) {
		return nil
	}
	return b
}

// cleanDT returns a device-tree string property: NUL-terminated, perhaps several strings.
// It keeps the first string, trimmed.
func cleanDT(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return strings.TrimSpace(string(b))
}

// cpuInfo is what /proc/cpuinfo says about the board.
type cpuInfo struct {
	serial string // valid, or empty
	model  string
}

// parseCPUInfo reads the "Serial" and "Model" lines of /proc/cpuinfo ("Serial\t\t: 1000...").
// Lines it does not know are ignored; an all-zero serial, which some kernels report for boards
// without one, counts as none.
func parseCPUInfo(b []byte) cpuInfo {
	var c cpuInfo
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), maxCPUInfo)
	for sc.Scan() {
		key, value, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(key) {
		case "Serial":
			c.serial = validSerial(strings.TrimSpace(value))
		case "Model":
			c.model = strings.TrimSpace(value)
		}
	}
	return c
}

// validSerial returns s in lower case if it is 8 to 32 hex digits and not all zeros, and ""
// otherwise.
func validSerial(s string) string {
	if len(s) < 8 || len(s) > 32 {
		return ""
	}
	if _, err := hex.DecodeString(strings.Repeat("0", len(s)%2) + s); err != nil {
		return ""
	}
	if strings.Trim(s, "0") == "" {
		return ""
	}
	return strings.ToLower(s)
}

// validMachineID reports whether s is a machine-id: 32 lower-case hex digits, not all zeros
// (an image not yet booted has "uninitialized" or an empty file).
func validMachineID(s string) bool {
	if len(s) != 32 || strings.ToLower(s) != s || strings.Trim(s, "0") == "" {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// serialFromMachineID derives a stable serial that does not reveal the machine-id.
func serialFromMachineID(mid string) string {
	m := hmac.New(sha256.New, []byte(mid))
	m.Write([]byte(machineIDKey))
	return hex.EncodeToString(m.Sum(nil)[:8])
}
