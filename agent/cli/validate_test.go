package cli

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"periph.io/x/conn/v3/gpio/gpiotest"

	camgpio "github.com/camagent/camagent/device/gpio"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// writeConf writes a configuration file and returns its path.
func writeConf(t *testing.T, text string) string {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "camagent.conf")
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return conf
}

// A max-viewers the video streamer refuses must be refused when the configuration is read,
// naming the key: found only when the agent starts its video, it stopped the service (a crash
// loop under Restart=always) and made a reload drop the configuration that worked.
func TestMaxViewersOutOfRangeIsRefusedNamingTheKey(t *testing.T) {
	dir := t.TempDir()
	for _, v := range []string{"-1", "1001"} {
		conf := writeConf(t, "state = "+dir+"\nvideo-file = "+clip+"\nmax-viewers = "+v+"\n")
		o, err := parseRunArgs("camagent run", []string{"--config", conf}, io.Discard, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := o.build(io.Discard); err == nil || !strings.Contains(err.Error(), "max-viewers") {
			t.Errorf("max-viewers = %s: build error %v, want one naming max-viewers", v, err)
		}
	}
	for _, v := range []string{"0", "1", "1000"} {
		o, err := parseRunArgs("camagent run", []string{"--state", dir, "--max-viewers", v}, io.Discard, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := o.build(io.Discard); err != nil {
			t.Errorf("max-viewers = %s: %v", v, err)
		}
	}
}

func TestAReloadToAnOutOfRangeMaxViewersKeepsTheAgent(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	dir := enrollDevice(t, pki, "", "cam-0001", closedBroker(t), time.Now(), 0)
	conf := writeConf(t, "state = "+dir+"\nvideo-file = "+clip+"\n")
	h := startService(t, []string{"--config", conf}, camgpio.Pins{LED: &gpiotest.Pin{N: "GPIO17"}}, nil)
	i := h.notes.waitFor(t, 0, notifyReady)
	first := h.agentNow()
	h.waitUntil("the first agent runs", func() bool { return first.Status().Running })

	if err := os.WriteFile(conf, []byte("state = "+dir+"\nvideo-file = "+clip+"\nmax-viewers = 5000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.reload <- nil
	i = h.notes.waitFor(t, i, notifyReloading)
	h.notes.waitFor(t, i, notifyReady)
	h.log.waitFor(t, "reload failed; keeping the configuration in use", "max-viewers")
	select {
	case err := <-h.done:
		h.cancel = nil
		t.Fatalf("the service stopped: %v", err)
	default:
	}
	if a := h.agentNow(); a != first || !first.Status().Running {
		t.Fatal("the agent was replaced or stopped after a refused reload")
	}
}

// camagent selftest must refuse a configuration camagent run refuses: a QA engineer who sees
// every check pass would otherwise start a service that exits at once, again and again.
func TestSelftestFailsOnAConfigurationRunRefuses(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	b := mqtttest.StartEmbedded(t, pki)
	dir := enrollDevice(t, pki, "", "cam-0001", b.URL(), time.Now(), 0)
	for _, line := range []string{
		"log-level = verbose",
		"log-format = xml",
		"reconnect-max-backoff = 2h",
		"video-ice-user = alice",
	} {
		t.Run(line, func(t *testing.T) {
			conf := writeConf(t, "state = "+dir+"\n"+line+"\n")
			// camagent run builds its configuration first of all (service.run).
			o, err := parseRunArgs("camagent run", []string{"--config", conf}, io.Discard, nil)
			if err == nil {
				_, err = o.build(io.Discard)
			}
			if err == nil {
				t.Fatal("camagent run accepts it")
			}
			key, _, _ := strings.Cut(line, " =")
			rep, _, err := selftestRun(t, synced, nil, "--config", conf)
			if err == nil || rep.OK {
				t.Fatalf("selftest passed: %+v", rep)
			}
			res, det := results(rep)
			if res["config"] != resultFail || !strings.Contains(det["config"], key) {
				t.Fatalf("config: %s (%s)", res["config"], det["config"])
			}
		})
	}
}

// The shipped camagent.conf says to keep the TURN credential file root-owned, group camagent,
// mode 0640. The error for a file others can read must not tell the QA engineer to make it
// 0600: on that root-owned file it would lock the service's own user out of it.
func TestICECredentialFileModeErrorAgreesWithTheConfigFile(t *testing.T) {
	credFile := filepath.Join(t.TempDir(), "turn-credential")
	if err := os.WriteFile(credFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(credFile, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := videoICEServers([]string{"turn:turn.example.net:3478?transport=udp"}, "alice", credFile)
	if err == nil {
		t.Fatal("a credential file others can read was accepted")
	}
	if msg := err.Error(); !strings.Contains(msg, "0640") || !strings.Contains(msg, "group camagent") {
		t.Errorf("error %q does not say how the service user keeps reading it (0640, group camagent)", msg)
	}
	if err := os.Chmod(credFile, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := videoICEServers([]string{"turn:turn.example.net:3478?transport=udp"}, "alice", credFile); err != nil {
		t.Errorf("mode 0640: %v", err)
	}
}
