package fleet_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/fleettest"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// An operator whose command cannot reach the broker must hear why, and what to do, not only
// that the wait ran out: at 3 a.m. "context deadline exceeded" after 15 s of silence says
// neither that the broker is down nor that --dir names another fleet.
func TestDialSaysWhyItCannotConnect(t *testing.T) {
	f := newFleet(t)
	other := newFleet(t)
	otherURL := mqtttest.StartEmbedded(t, &mqtttest.PKI{CA: other.CA, CAPEM: other.CAPEM, Pool: other.Pool}).URL()
	// A broker that revoked this directory's operator certificate: fleetctl replace operator
	// ran on another copy of the fleet directory.
	opCert, err := f.OperatorCertificate()
	if err != nil {
		t.Fatal(err)
	}
	pki := &mqtttest.PKI{CA: f.CA, CAPEM: f.CAPEM, Pool: f.Pool}
	revokedURL := mqtttest.StartEmbedded(t, pki, mqtttest.WithCRL(pki.CRL(t, mqtttest.Serial(opCert)))).URL()
	for _, tc := range []struct {
		name, broker string
		want         []string
	}{
		{"a broker that is not running is named as such, with the command that starts it", "mqtts://" + fleettest.FreeAddr(t),
			[]string{"nothing accepts connections there", "fleetctl broker --dir " + f.Dir, "connection refused"}},
		{"another fleet's broker is named as such", otherURL,
			[]string{"another CA than this fleet's", "--dir names another fleet"}},
		{"a revoked operator certificate is named as such, with where the new one is", revokedURL,
			[]string{"refuses this fleet directory's operator certificate", "copy its operator/ here"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			op, err := f.Dial(ctx, fleet.OperatorOptions{Broker: tc.broker})
			if err == nil {
				op.Close()
				t.Fatal("Dial succeeded")
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("error %v does not wrap context.DeadlineExceeded", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}
