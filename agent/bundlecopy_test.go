package agent

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// The bundle is the device's only record of its fleet CA, root key and bootstrap certificate:
// a storage fault that damages or loses it must not leave the camera restarting for good
// (R6). The agent starts from the copy enrollment wrote beside it, and writes the bundle again.
func TestADamagedBundleIsRecoveredFromItsCopy(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	b := mqtttest.StartEmbedded(t, pki)
	for name, damage := range map[string]func(path string) error{
		"truncated": func(p string) error { return os.Truncate(p, 40) },
		"zeroed": func(p string) error {
			fi, err := os.Stat(p)
			if err != nil {
				return err
			}
			return os.WriteFile(p, make([]byte, fi.Size()), 0o600)
		},
		"a byte flipped in its certificate": func(p string) error {
			raw, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			i := bytes.Index(raw, []byte("MII")) + 200
			raw[i] ^= 0x01
			return os.WriteFile(p, raw, 0o600)
		},
		"gone": os.Remove,
	} {
		t.Run(name, func(t *testing.T) {
			dir := enrolledOn(t, pki, b, "cam-0001", time.Now())
			good := mustRead(t, filepath.Join(dir, BundleFile))
			if cp := mustRead(t, filepath.Join(dir, BundleCopyFile)); !bytes.Equal(cp, good) {
				t.Fatal("enrollment wrote no copy of the bundle")
			}
			if err := damage(filepath.Join(dir, BundleFile)); err != nil {
				t.Fatal(err)
			}
			log, rec := logtest.New()
			running(t, Config{StateDir: dir, Logger: log, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
			if got := mustRead(t, filepath.Join(dir, BundleFile)); !bytes.Equal(got, good) {
				t.Errorf("the bundle was not written again from its copy")
			}
			if !strings.Contains(rec.Text(), "starting from its copy") {
				t.Errorf("the agent did not say it started from the copy:\n%s", rec.Text())
			}
		})
	}

	t.Run("a device enrolled before the copy existed gets one", func(t *testing.T) {
		dir := enrolledOn(t, pki, b, "cam-0001", time.Now())
		if err := os.Remove(filepath.Join(dir, BundleCopyFile)); err != nil {
			t.Fatal(err)
		}
		running(t, Config{StateDir: dir, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
		if !bytes.Equal(mustRead(t, filepath.Join(dir, BundleCopyFile)), mustRead(t, filepath.Join(dir, BundleFile))) {
			t.Error("no copy of the bundle written")
		}
	})

	t.Run("both damaged: the agent says which file", func(t *testing.T) {
		dir := enrolledOn(t, pki, b, "cam-0001", time.Now())
		for _, f := range []string{BundleFile, BundleCopyFile} {
			if err := os.Truncate(filepath.Join(dir, f), 40); err != nil {
				t.Fatal(err)
			}
		}
		_, err := New(Config{StateDir: dir})
		if err == nil || !strings.Contains(err.Error(), BundleFile) {
			t.Fatalf("New = %v, want an error naming %s", err, BundleFile)
		}
	})
}

// ReadCredentials, which runs beside a live agent (camagent selftest), reads a damaged bundle's
// copy and writes nothing.
func TestReadCredentialsReadsTheCopyOfADamagedBundleAndWritesNothing(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	b := mqtttest.StartEmbedded(t, pki)
	dir := enrolledOn(t, pki, b, "cam-0001", time.Now())
	if err := os.Truncate(filepath.Join(dir, BundleFile), 40); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadCredentials(dir); err != nil {
		t.Fatalf("ReadCredentials: %v", err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, BundleFile)); fi.Size() != 40 {
		t.Errorf("ReadCredentials wrote the bundle (%d bytes)", fi.Size())
	}
}

// A bundle and its copy that both verify, with the same certificate, differ only where a
// storage fault changed one of them outside every signature: the broker URL. Which one is
// right the agent learns only by connecting. Before, it wrote the copy over from the bundle at
// every start, and when the bundle was the damaged one it destroyed the only record of the
// right broker, leaving a camera that could never connect again. The copy is now written
// again only once the bundle's broker took a connection.
func TestABundleAndItsCopyThatDifferOnlyInTheBrokerAreKeptUntilAConnectionDecides(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	b := mqtttest.StartEmbedded(t, pki)
	// flipPort changes the first digit of the broker's port in the bundle file at p.
	flipPort := func(t *testing.T, p string) {
		t.Helper()
		raw := mustRead(t, p)
		prefix := []byte(`"broker":"` + b.URL()[:strings.LastIndex(b.URL(), ":")+1])
		i := bytes.Index(raw, prefix)
		if i < 0 {
			t.Fatalf("no broker URL in %s", raw)
		}
		raw[i+len(prefix)] ^= 0x01
		if err := os.WriteFile(p, raw, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("the bundle's broker damaged: the good copy stays", func(t *testing.T) {
		dir := enrolledOn(t, pki, b, "cam-0001", time.Now())
		good := mustRead(t, filepath.Join(dir, BundleCopyFile))
		flipPort(t, filepath.Join(dir, BundleFile))
		log, rec := logtest.New()
		startAgent(t, Config{StateDir: dir, Logger: log, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
		rec.WaitFor(t, 5*time.Second, "cannot connect to broker")
		if !bytes.Equal(mustRead(t, filepath.Join(dir, BundleCopyFile)), good) {
			t.Fatal("the copy was written over from the damaged bundle")
		}
		if !strings.Contains(rec.Text(), "hold the same enrollment but differ") {
			t.Errorf("the agent did not say the two differ:\n%s", rec.Text())
		}
	})

	t.Run("the copy's broker damaged: written again once the bundle's broker connects", func(t *testing.T) {
		dir := enrolledOn(t, pki, b, "cam-0001", time.Now())
		flipPort(t, filepath.Join(dir, BundleCopyFile))
		log, rec := logtest.New()
		running(t, Config{StateDir: dir, Logger: log, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
		rec.WaitFor(t, 5*time.Second, "wrote the copy of the enrollment bundle again")
		if !bytes.Equal(mustRead(t, filepath.Join(dir, BundleCopyFile)), mustRead(t, filepath.Join(dir, BundleFile))) {
			t.Fatal("the damaged copy was not written again from the bundle")
		}
	})
}
