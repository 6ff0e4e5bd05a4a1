package agent

import (
	"bytes"
	"context"
	"log/slog"
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
// right the agent learns only by connecting: it tries the bundle's broker and then the
// copy's, and the first that takes a connection decides which record is written over the
// other. Before, it wrote the copy over from the bundle at every start, and when the bundle
// was the damaged one it destroyed the only record of the right broker; later it kept both
// but dialled only the bundle's broker, and the camera stayed offline until someone installed
// the copy by hand.
func TestABundleAndItsCopyThatDifferOnlyInTheBrokerAreKeptUntilAConnectionDecides(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	b := mqtttest.StartEmbedded(t, pki)
	portDigit := func(t *testing.T, p string, k int, edit func(byte) byte) { brokerPortDigit(t, b, p, k, edit) }
	flipPort := func(t *testing.T, p string) { portDigit(t, p, 0, func(c byte) byte { return c ^ 0x01 }) }
	fast := func(log *slog.Logger, dir string) Config {
		return Config{StateDir: dir, Logger: log, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}
	}

	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, p string)
		// refused: the damaged URL is one the MQTT client refuses outright, so it is never
		// dialled.
		refused bool
	}{
		{name: "the bundle's broker damaged: connects through the copy's and writes the bundle again from it", damage: flipPort},
		{
			name: "the bundle's broker damaged into a URL the client refuses: the same",
			// A port digit become '?' (one bit of '7') still parses, as a port and a query.
			damage:  func(t *testing.T, p string) { portDigit(t, p, 1, func(byte) byte { return '?' }) },
			refused: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := enrolledOn(t, pki, b, "cam-0001", time.Now())
			good := mustRead(t, filepath.Join(dir, BundleCopyFile))
			tc.damage(t, filepath.Join(dir, BundleFile))
			if _, _, err := readBundle(filepath.Join(dir, BundleFile)); err != nil {
				t.Fatalf("the damaged bundle does not load, so this is not the case under test: %v", err)
			}
			log, rec := logtest.New()
			a, stop := runFor(t, fast(log, dir))
			rec.WaitFor(t, 5*time.Second, "wrote the enrollment bundle again from its copy")
			// A later client (a bootstrap session) dials only the broker that won.
			if broker, fallbacks, err := a.brokerURLs(); broker != b.URL() || len(fallbacks) != 0 || err != nil {
				t.Errorf("after the copy's broker took a connection, new clients dial %q then %q (%v), want only %q", broker, fallbacks, err, b.URL())
			}
			// And so does the running client, after a failed attempt.
			if got := a.mqttc.Load().Brokers(); len(got) != 1 || got[0] != b.URL() {
				t.Errorf("after the copy's broker took a connection, the running client may still dial %q, want only %q", got, b.URL())
			}
			if !bytes.Equal(mustRead(t, filepath.Join(dir, BundleFile)), good) {
				t.Fatal("the bundle was not written again from its good copy")
			}
			if !bytes.Equal(mustRead(t, filepath.Join(dir, BundleCopyFile)), good) {
				t.Fatal("the good copy was written over")
			}
			if !tc.refused && !strings.Contains(rec.Text(), "cannot connect") {
				t.Errorf("the agent did not try the bundle's broker first:\n%s", rec.Text())
			}
			if !strings.Contains(rec.Text(), "hold the same enrollment but differ") {
				t.Errorf("the agent did not say the two differ:\n%s", rec.Text())
			}
			stop()

			// The next start has one record again and connects at once.
			log, rec = logtest.New()
			running(t, fast(log, dir))
			if strings.Contains(rec.Text(), "differ") || strings.Contains(rec.Text(), "cannot connect") {
				t.Errorf("after the repair:\n%s", rec.Text())
			}
		})
	}

	t.Run("the copy's broker damaged: written again once the bundle's broker connects", func(t *testing.T) {
		dir := enrolledOn(t, pki, b, "cam-0001", time.Now())
		bundle := mustRead(t, filepath.Join(dir, BundleFile))
		flipPort(t, filepath.Join(dir, BundleCopyFile))
		log, rec := logtest.New()
		running(t, fast(log, dir))
		rec.WaitFor(t, 5*time.Second, "wrote the copy of the enrollment bundle again")
		if !bytes.Equal(mustRead(t, filepath.Join(dir, BundleCopyFile)), bundle) {
			t.Fatal("the damaged copy was not written again from the bundle")
		}
		if !bytes.Equal(mustRead(t, filepath.Join(dir, BundleFile)), bundle) {
			t.Fatal("the good bundle was written over")
		}
	})
}

// brokerPortDigit changes digit k of b's port in the broker URL of the bundle file at p with
// edit.
func brokerPortDigit(t *testing.T, b mqtttest.Broker, p string, k int, edit func(byte) byte) {
	t.Helper()
	raw := mustRead(t, p)
	prefix := []byte(`"broker":"` + b.URL()[:strings.LastIndex(b.URL(), ":")+1])
	i := bytes.Index(raw, prefix)
	if i < 0 {
		t.Fatalf("no broker URL in %s", raw)
	}
	raw[i+len(prefix)+k] = edit(raw[i+len(prefix)+k])
	if err := os.WriteFile(p, raw, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A camera whose own certificate no longer gets it in (expired offline, revoked, damaged)
// reaches the broker only as its bootstrap identity. When its bundle and the copy dispute the
// broker's address, that connection decides as well as one of the device's own, and the
// bootstrap session dials only the address that won from then on. Before, only Run's client
// settled a dispute, so the bootstrap session went on trying the losing address after every
// failed attempt.
func TestABootstrapConnectionSettlesADisputedBundle(t *testing.T) {
	const id = "cam-0001"
	pki := mqtttest.NewPKI(t)
	b := mqtttest.StartEmbedded(t, pki)
	dir := enrolledWithBootstrap(t, pki, b.URL(), id, time.Now(), 0)
	good := mustRead(t, filepath.Join(dir, BundleCopyFile))
	brokerPortDigit(t, b, filepath.Join(dir, BundleFile), 0, func(c byte) byte { return c ^ 0x01 })
	log, rec := logtest.New()
	a, err := New(Config{StateDir: dir, Logger: log, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Run is not running: only the bootstrap session connects.
	bs, err := a.bootstrapSession(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rec.WaitFor(t, 5*time.Second, "wrote the enrollment bundle again from its copy")
	if !bytes.Equal(mustRead(t, filepath.Join(dir, BundleFile)), good) {
		t.Error("the bundle was not written again from its good copy")
	}
	if got := bs.client.Brokers(); len(got) != 1 || got[0] != b.URL() {
		t.Errorf("the bootstrap session may still dial %q, want only %q", got, b.URL())
	}
	if a.bootc.Load() != bs.client {
		t.Error("the bootstrap session's client is not known to the agent while it runs")
	}
	bs.stop()
	if a.bootc.Load() != nil {
		t.Error("the agent still knows the bootstrap session's client after it stopped")
	}
}
