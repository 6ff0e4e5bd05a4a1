package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"strconv"
	"strings"

	"github.com/camagent/camagent/agent/privacy/seal"
	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/transport/mqtt/topic"
)

// wirelessFile is where Linux reports Wi-Fi signal levels.
const wirelessFile = "/proc/net/wireless"

// telemetryLoop publishes telemetry once connected, then every TelemetryInterval.
func (a *Agent) telemetryLoop(ctx context.Context) {
	if a.cfg.TelemetryInterval < 0 {
		return
	}
	select {
	case <-a.connected:
	case <-ctx.Done():
		return
	}
	for {
		if err := a.publishTelemetry(ctx); err != nil && ctx.Err() == nil {
			a.log.Debug("could not publish telemetry", "err", err)
		}
		// Not a.sleep: that takes Alive's heartbeat, which only the loops Alive vouches
		// for may take, or a wedged reconcile loop would look alive.
		select {
		case <-ctx.Done():
			return
		case <-a.clk.After(a.cfg.TelemetryInterval):
		}
	}
}

// telemetry builds the device's health report. Every field is listed with its reason in
// docs/privacy.md.
func (a *Agent) telemetry() *wire.Telemetry {
	c := a.Certificate()
	a.mu.Lock()
	epoch, privacy := a.st.Cred.Epoch, a.privacyLocked()
	a.mu.Unlock()
	t := &wire.Telemetry{
		V:              wire.Version,
		Firmware:       a.cfg.Firmware,
		UptimeS:        int64(a.clk.Now().Sub(a.start).Seconds()),
		CertSerial:     serialHex(c),
		Epoch:          epoch,
		Privacy:        privacy,
		EgressRefusals: a.guard.Refusals(),
		Updated:        a.clk.Now().Unix(),
	}
	if v := a.video.Load(); v != nil {
		st := v.s.Stats()
		t.Viewers, t.Sessions, t.FramesCaptured = st.Viewers, st.PeerConnections, st.FramesIn
	}
	if b, err := os.ReadFile(wirelessFile); err == nil {
		if dbm, ok := wifiSignal(b); ok {
			t.WiFiSignalDBm = &dbm
		}
	}
	a.privMu.Lock()
	if a.settings != nil && a.settings.SSID != "" {
		t.NetworkTag = seal.NetworkTag(a.secret, a.settings.SSID, "")
	}
	a.privMu.Unlock()
	return t
}

func (a *Agent) publishTelemetry(ctx context.Context) error {
	box := a.pub.Load()
	if box == nil {
		return errors.New("agent: not running")
	}
	b, err := wire.Encode(a.telemetry())
	if err != nil {
		return err
	}
	// QoS 0: a report that misses its broker is replaced by the next one.
	return box.Publish(ctx, topic.Telemetry(a.DeviceID()), 0, false, b)
}

// wifiSignal reads the signal level of the first interface in /proc/net/wireless, in dBm:
//
//	Inter-| sta-|   Quality        |   Discarded packets               | Missed | WE
//	 face | tus | link level noise |  nwid  crypt   frag  retry   misc | beacon | 22
//	 wlan0: 0000   70.  -40.  -256        0      0      0      0      0        0
//
// The kernel prints the level as a decimal integer followed by '.' when it was updated since
// the last read, or by a space (net/wireless/wext-proc.c). It reports false when there is no
// interface or the level is not a plausible dBm figure (an integer from -120 to 0).
func wifiSignal(b []byte) (int, bool) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		_, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.Contains(rest, "|") {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 3 {
			return 0, false
		}
		// An integer, not ParseFloat: that would take "NaN", which passes every range
		// check and converts to a nonsense int that makes the whole report invalid.
		v, err := strconv.Atoi(strings.TrimSuffix(f[2], "."))
		if err != nil || v < -120 || v > 0 {
			return 0, false
		}
		return v, true
	}
	return 0, false
}
