package board_test

import (
	"fmt"
	"os"

	"github.com/camagent/camagent/device/board"
)

// Read takes the root of a file system: "/" on the device (ReadHost), a fixture tree here.
func ExampleRead() {
	id, err := board.Read(os.DirFS("testdata/pizero"))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(id) // the serial stays out of String and logs
	fmt.Println("Raspberry Pi:", id.RaspberryPi(), "serial digits:", len(id.Serial))
	// Output:
	// Raspberry Pi Zero W Rev 1.1 (serial from cpuinfo)
	// Raspberry Pi: true serial digits: 16
}
