package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/tools/fleetctl/fleettest"
)

// brokerCopy makes what the broker's host holds of fleet dir: the public files, the broker's
// own key pair and the signers' registry (its directory shared), but no CA key, no root,
// command or grant key, and no operator key.
func brokerCopy(t *testing.T, dir string) string {
	t.Helper()
	pub := filepath.Join(t.TempDir(), "broker-host")
	if err := os.MkdirAll(filepath.Join(pub, "broker"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"fleet.json", "ca.crt", "root.pub", "keyset.json", "broker/server.crt", "broker/server.key"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(pub, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join(dir, "signer"), filepath.Join(pub, "signer")); err != nil {
		t.Fatal(err)
	}
	return pub
}

// The process that faces the network need not hold the fleet CA's key: `fleetctl broker`
// runs from a copy of the fleet directory without it (nor any signing key), admits the fleet,
// carries a rotation the signer (with the key, elsewhere) issues, and refuses the certificate
// the rotation revoked. What needs the key says so.
func TestTheBrokerRunsWithoutTheCAKey(t *testing.T) {
	f, _ := newFleet(t)
	pub := brokerCopy(t, f.Dir)
	addr := fleettest.FreeAddr(t)
	fleettest.Background(t, "broker", "--dir", pub, "--listen", addr, "--revocation-poll", "100ms")
	fleettest.WaitTLS(t, f, addr)
	e := &env{name: "embedded", f: f, url: "mqtts://" + addr, applyCRL: func(testing.TB) {}}
	fleettest.StartSigner(t, f, e.url, "--log-level", "warn")

	dir := enroll(t, f, "cam-0001")
	a := startAgent(t, dir, e.url, fastRotation)
	a.waitConnected(t)
	old := currentCredential(t, dir, a)
	fleetctl(t, "rotate", "--dir", f.Dir, "--broker", e.url, "--device", "cam-0001")
	waitFor(t, 30*time.Second, "the rotation to commit", func() bool { return a.Rotations() == 1 })
	waitFor(t, 20*time.Second, "the broker to refuse the replaced certificate", func() bool { return connectWith(t, e, old) != nil })

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--dir", pub}, "needs the fleet CA's key"},
		{[]string{"crl", "--dir", pub}, "private key is not on this machine"},
	} {
		if out, err := tryFleetctl(tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("fleetctl %s without the CA key: %v, want it to say %q\n%s", tc.args[0], err, tc.want, out)
		}
	}
}
