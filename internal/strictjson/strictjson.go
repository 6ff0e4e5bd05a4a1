// Package strictjson decodes JSON from outside the process strictly: exactly one value, no
// unknown fields, no trailing data. Every parser of outside JSON in camagent goes through it.
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
)

// ErrTrailingData reports bytes after the JSON value.
var ErrTrailingData = errors.New("strictjson: trailing data after JSON value")

// Unmarshal decodes exactly one JSON value from b into v, refusing unknown fields and
// trailing data.
func Unmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return ErrTrailingData
	}
	return nil
}
