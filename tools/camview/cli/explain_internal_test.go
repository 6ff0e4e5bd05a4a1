package cli

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/camagent/camagent/tools/camview/receiver"
	"github.com/camagent/camagent/transport/webrtc/signal"
)

// A session that ends before its time is explained in words with what to do: a connection
// that never carried video points at the network path (--loopback, a TURN server), one lost
// after video flowed at the camera going away, and the camera's own reasons are named.
func TestASessionsEndIsExplained(t *testing.T) {
	bye := func(r signal.ByeReason) error { return fmt.Errorf("receiver: %w", &receiver.ByeError{Reason: r}) }
	for _, tc := range []struct {
		name   string
		err    error
		flowed bool
		says   string
	}{
		{"a connection that never worked names the path", receiver.ErrICEFailed, false, "--loopback"},
		{"the camera failing it before video names the path", bye(signal.ByeFailed), false, "--ice-server"},
		{"a connection lost after video says the camera went away", receiver.ErrICEFailed, true, "did it go offline"},
		{"the camera failing it after video says the camera went away", bye(signal.ByeFailed), true, "did it go offline"},
		{"privacy mode is named", bye(signal.ByePrivacy), true, "privacy mode on"},
		{"an expired grant says to get a new one", bye(signal.ByeExpired), true, "fleetctl grant"},
		{"a rotation says to get a new grant", bye(signal.ByeRevoked), true, "rotated"},
		{"a camera stopping says to try again", bye(signal.ByeShutdown), true, "try again"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := explainEnd(tc.err, tc.flowed)
			if !strings.Contains(got.Error(), tc.says) || strings.Contains(got.Error(), "receiver:") {
				t.Errorf("explainEnd = %q, want it to say %q and no error chain", got, tc.says)
			}
			if !errors.Is(got, receiver.ErrICEFailed) && !errors.As(got, new(*receiver.ByeError)) {
				t.Errorf("explainEnd = %v does not unwrap to the receiver's error", got)
			}
		})
	}
	if err := errors.New("other"); explainEnd(err, true) != err {
		t.Error("explainEnd changed an error it has nothing to say about")
	}
}
