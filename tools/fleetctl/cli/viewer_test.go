package cli_test

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/fleettest"
	"github.com/camagent/camagent/tools/fleetctl/signer"
	"github.com/camagent/camagent/transport/mqtt/broker"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// viewerCert makes a relay key and has `fleetctl viewer --csr` sign it, as camview enroll and
// the operator would; it returns the relay's certificate.
func viewerCert(t *testing.T, f *fleet.Fleet, name string) *tls.Certificate {
	t.Helper()
	key, err := certs.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := certs.NewCSR(key, "viewer:"+name)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	csrPath, out := filepath.Join(dir, "viewer.csr"), filepath.Join(dir, "bundle.json")
	if err := os.WriteFile(csrPath, csr, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := run(t, "viewer", "--dir", f.Dir, "--csr", csrPath, "--out", out); err != nil {
		t.Fatalf("fleetctl viewer --csr: %v\n%s", err, stderr)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	vb, err := certs.ParseViewerBundle(b)
	if err != nil {
		t.Fatal(err)
	}
	v, err := vb.Verify(key, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c, err := certs.TLSCertificate(v.Cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A revoked viewer relay identity is refused by both brokers: the embedded one (as fleetctl
// broker runs it, with the registry deciding) at once, Mosquitto once restarted with the CRL
// that fleetctl viewer --revoke wrote. A relay issued later under the same name gets in.
func TestARevokedViewerIsRefusedByBothBrokers(t *testing.T) {
	f, pki := fleettest.NewFleet(t)
	empty, err := signer.CRL(f.CA, nil, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	// Each broker gets a relay name of its own: the fleet is shared.
	check := func(t *testing.T, name, url string, restart func()) {
		old := viewerCert(t, f, name)
		if _, err := fleettest.TryConnect(t, f, url, old); err != nil {
			t.Fatalf("the viewer relay is refused before its revocation: %v", err)
		}
		stdout, stderr, err := run(t, "viewer", "--dir", f.Dir, "--revoke", name)
		if err != nil || !strings.Contains(stdout, "revoked viewer:"+name+": serial "+old.Leaf.SerialNumber.Text(16)+"\n") {
			t.Fatalf("fleetctl viewer --revoke: %v\n%s%s", err, stdout, stderr)
		}
		// Run again after a run that stopped before it wrote the CRL: the CRL is written.
		if err := os.Remove(f.CRLPath()); err != nil {
			t.Fatal(err)
		}
		if stdout, stderr, err := run(t, "viewer", "--dir", f.Dir, "--revoke", name); err != nil || !strings.Contains(stdout, "nothing to do") {
			t.Fatalf("fleetctl viewer --revoke again: %v\n%s%s", err, stdout, stderr)
		}
		if _, err := os.Stat(f.CRLPath()); err != nil {
			t.Fatalf("the CRL was not written again: %v", err)
		}
		restart()
		if _, err := fleettest.TryConnect(t, f, url, old); err == nil {
			t.Fatal("the revoked viewer relay got in")
		}
		if _, err := fleettest.TryConnect(t, f, url, viewerCert(t, f, name)); err != nil {
			t.Fatalf("a relay issued after the revocation is refused: %v", err)
		}
	}
	t.Run("embedded", func(t *testing.T) {
		reg, err := f.OpenRegistry(nil)
		if err != nil {
			t.Fatal(err)
		}
		defer reg.Close()
		brk, err := broker.New(broker.Config{Addr: "127.0.0.1:0", TLS: pki.ServerTLS(t), Revoked: reg.Revoked})
		if err != nil {
			t.Fatal(err)
		}
		if err := brk.Start(); err != nil {
			t.Fatal(err)
		}
		defer brk.Close()
		check(t, "cloud", brk.URL(), func() {})
	})
	t.Run("mosquitto", func(t *testing.T) {
		m := mqtttest.StartMosquitto(t, pki, mqtttest.WithCRL(empty), mqtttest.WithIdentities("viewer:relay"))
		check(t, "relay", m.URL(), func() {
			// Mosquitto reads its crlfile only when it starts.
			b, err := os.ReadFile(f.CRLPath())
			if err != nil {
				t.Fatal(err)
			}
			m.RestartWithCRL(t, b)
		})
	})
}

func TestViewerArguments(t *testing.T) {
	f, _ := fleettest.NewFleet(t)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"neither", []string{"viewer", "--dir", f.Dir}, "--csr FILE"},
		{"both", []string{"viewer", "--dir", f.Dir, "--csr", "x", "--revoke", "web"}, "--csr FILE"},
		{"a CSR that is not one", []string{"viewer", "--dir", f.Dir, "--csr", "/dev/null"}, "CERTIFICATE REQUEST"},
	} {
		if _, _, err := run(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want it to say %q", tc.name, err, tc.want)
		}
	}
	if stdout, _, err := run(t, "viewer", "--dir", f.Dir, "--revoke", "nobody"); err != nil || !strings.Contains(stdout, "nothing to do") {
		t.Errorf("revoking an identity never issued: %v\n%s", err, stdout)
	}
}
