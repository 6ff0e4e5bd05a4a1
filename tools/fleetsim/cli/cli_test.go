package cli

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/camagent/camagent/tools/fleetsim/sim"
)

// --source-addrs needs a broker the devices can reach from 127.1.0.0 and up: one on IPv4
// loopback. Anything else is refused before a device is made, with an error naming the flag.
func TestSourceAddrsWithABrokerOffLoopbackIsRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"an external broker on another host", []string{"--broker", "mqtts://192.0.2.1:8883", "--fleet", t.TempDir()}},
		{"an external broker on IPv6 loopback", []string{"--broker", "mqtts://[::1]:8883", "--fleet", t.TempDir()}},
		{"the embedded broker listening on every address", []string{"--embedded", "--listen", "0.0.0.0:8883"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"--devices", "8", "--source-addrs", "4", "--state-dir", t.TempDir(), "--no-progress"}, tc.args...)
			err := Run(context.Background(), args, &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), "--source-addrs") || !errors.Is(err, sim.ErrConfig) {
				t.Fatalf("Run = %v, want a configuration error naming --source-addrs", err)
			}
			if stdout.Len() > 0 {
				t.Fatalf("a report was printed:\n%s", stdout.String())
			}
		})
	}
}
