// Package cappedfile reads files from outside the process (bundles, enrollment requests, key
// sets) with a size cap, so a huge or endless file is refused instead of read into memory.
package cappedfile

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// ErrTooLarge reports a file over the cap.
var ErrTooLarge = errors.New("cappedfile: file too large")

// Read returns the contents of path, or ErrTooLarge if it holds more than max bytes.
func Read(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%w: %s is over %d bytes", ErrTooLarge, path, max)
	}
	return b, nil
}
