package signer

import (
	"testing"
	"time"
)

// A CRL write that took long makes the next one wait ten times as long, so that writing it,
// under the registry's lock every signer decides under, keeps to a tenth of a signer's time;
// a quick one waits crlInterval.
func TestALongCRLWritePutsTheNextOneOff(t *testing.T) {
	for _, tc := range []struct{ took, want time.Duration }{
		{0, crlInterval},
		{50 * time.Millisecond, crlInterval},
		{100 * time.Millisecond, crlInterval},
		{400 * time.Millisecond, 4 * time.Second},
		{2 * time.Second, 20 * time.Second},
	} {
		if got := crlPause(tc.took); got != tc.want {
			t.Errorf("after a write of %v: next in %v, want %v", tc.took, got, tc.want)
		}
	}
}
