package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/camagent/camagent/agent/privacy/onboard"
	"github.com/camagent/camagent/agent/privacy/seal"
	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/internal/clock/clocktest"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/transport/mqtt/topic"
)

// wirelessHeader is the two header lines of /proc/net/wireless.
const wirelessHeader = "Inter-| sta-|   Quality        |   Discarded packets               | Missed | WE\n" +
	" face | tus | link level noise |  nwid  crypt   frag  retry   misc | beacon | 22\n"

func TestWiFiSignal(t *testing.T) {
	for _, tt := range []struct {
		name string
		in   string
		want int
		ok   bool
	}{
		{"an updated level is read from the first interface", wirelessHeader + " wlan0: 0000   70.  -40.  -256        0      0      0      0      0        0\n", -40, true},
		{"a level not updated since the last read ends in a space", wirelessHeader + " wlan0: 0000   70   -67   -256        0      0      0      0      0        0\n", -67, true},
		{"the first interface wins", wirelessHeader + " wlan0: 0000   70.  -55.  -256 0 0 0 0 0 0\n wlan1: 0000   70.  -30.  -256 0 0 0 0 0 0\n", -55, true},
		{"the weakest plausible level is taken", wirelessHeader + " wlan0: 0000    1.  -120.  -256 0 0 0 0 0 0\n", -120, true},
		{"a level of 0 dBm is taken", wirelessHeader + " wlan0: 0000   70.    0.  -256 0 0 0 0 0 0\n", 0, true},
		{"a file without interfaces has no level", wirelessHeader, 0, false},
		{"an empty file has no level", "", 0, false},
		{"a level below -120 dBm (no measurement) is refused", wirelessHeader + " wlan0: 0000    0   -256   -256 0 0 0 0 0 0\n", 0, false},
		{"a positive level (not in dBm) is refused", wirelessHeader + " wlan0: 0000   70.   200.  -256 0 0 0 0 0 0\n", 0, false},
		{"a truncated line is refused", wirelessHeader + " wlan0: 0000   70.\n", 0, false},
		{"NaN is refused", wirelessHeader + " wlan0: 0000   70.  NaN.  -256 0 0 0 0 0 0\n", 0, false},
		{"infinity is refused", wirelessHeader + " wlan0: 0000   70.  -Inf.  -256 0 0 0 0 0 0\n", 0, false},
		{"a fraction is refused", wirelessHeader + " wlan0: 0000   70.  -40.5  -256 0 0 0 0 0 0\n", 0, false},
		{"a hexadecimal float is refused", wirelessHeader + " wlan0: 0000   70.  -0x1p6  -256 0 0 0 0 0 0\n", 0, false},
		{"a header line with a colon is skipped", "a: b | c\n wlan0: 0000   70.  -48.  -256 0 0 0 0 0 0\n", -48, true},
		{"CRLF line ends are read", strings.ReplaceAll(wirelessHeader+" wlan0: 0000   70.  -61.  -256 0 0 0 0 0 0\n", "\n", "\r\n"), -61, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := wifiSignal([]byte(tt.in))
			if got != tt.want || ok != tt.ok {
				t.Fatalf("wifiSignal = %d, %v; want %d, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

// FuzzWiFiSignal feeds the /proc/net/wireless parser arbitrary bytes: it never panics, and
// whatever it reports is a level the telemetry schema accepts, so a strange kernel line can
// never make the whole health report invalid.
func FuzzWiFiSignal(f *testing.F) {
	f.Add([]byte(wirelessHeader + " wlan0: 0000   70.  -40.  -256        0      0      0      0      0        0\n"))
	f.Add([]byte(wirelessHeader + " wlan0: 0000   70   -67   -256 0 0 0 0 0 0\n wlan1: 0000 1. -2. -3.\n"))
	f.Add([]byte(wirelessHeader))
	f.Add([]byte(" wlan0: 0000 70. NaN. -256\n"))
	f.Add([]byte(" wlan0: 0000 70. 1e1000. -256\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, ok := wifiSignal(b)
		if !ok {
			if v != 0 {
				t.Fatalf("no level, but %d", v)
			}
			return
		}
		dbm := v
		tel := wire.Telemetry{V: wire.Version, Firmware: "dev", WiFiSignalDBm: &dbm}
		if err := tel.Validate(); err != nil {
			t.Fatalf("level %d from %q makes invalid telemetry: %v", v, b, err)
		}
	})
}

// pubRecorder is a Publisher that keeps every message, or fails with err.
type pubRecorder struct {
	mu   sync.Mutex
	msgs []published
	err  error
	sent chan published
}

type published struct {
	topic    string
	qos      byte
	retained bool
	payload  []byte
}

var _ Publisher = (*pubRecorder)(nil)

func newPubRecorder() *pubRecorder { return &pubRecorder{sent: make(chan published, 64)} }

func (p *pubRecorder) Publish(_ context.Context, t string, qos byte, retained bool, payload []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return p.err
	}
	m := published{t, qos, retained, append([]byte(nil), payload...)}
	p.msgs = append(p.msgs, m)
	select {
	case p.sent <- m:
	default:
	}
	return nil
}

func (p *pubRecorder) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.err = err
}

func (p *pubRecorder) on(t string) []published {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []published
	for _, m := range p.msgs {
		if m.topic == t {
			out = append(out, m)
		}
	}
	return out
}

// testSetup is an onboarding payload with values that can only match themselves.
func testSetup(tag string) onboard.Setup {
	return onboard.Setup{
		SSID:       "CanarySSID-" + tag,
		Passphrase: "CanaryPass-" + tag + " horse; battery",
		Claim:      "ClaimToken_" + tag + "_0123456789",
		Nickname:   "Zoë's room, cam " + tag,
		TimeZone:   "Europe/Paris",
	}
}

// telemetryKeys are the fields telemetry may carry: each is listed with its reason in
// docs/privacy.md. A field added to wire.Telemetry fails this test until it is listed here,
// and so reviewed.
var telemetryKeys = []string{
	"v", "fw", "uptime_s", "cert_serial", "epoch", "privacy", "viewers", "sessions",
	"frames_captured", "wifi_signal_dbm", "network_tag", "egress_refusals", "updated",
}

// Telemetry is a typed report that validates, carries only its listed fields, nothing the
// owner typed, and a network tag that says "this network" without being comparable across
// devices (issue 5, Build 2).
func TestTelemetryIsTypedAndCarriesNothingPersonal(t *testing.T) {
	now := time.Now()
	newAgent := func(id string, s *onboard.Setup) *Agent {
		t.Helper()
		f := enrolled(t, id, now, closedPort(t))
		if s != nil {
			if err := Onboard(f.dir, *s); err != nil {
				t.Fatal(err)
			}
		}
		log, _ := logtest.New()
		a, err := New(Config{StateDir: f.dir, Logger: log, Firmware: "1.4.2+rpi"})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	s := testSetup("7f3a9c")
	a := newAgent("cam-0001", &s)
	b := newAgent("cam-0002", &s) // the same home network, another camera
	never := newAgent("cam-0003", nil)

	decode := func(a *Agent) (wire.Telemetry, map[string]json.RawMessage, []byte) {
		t.Helper()
		raw, err := wire.Encode(a.telemetry())
		if err != nil {
			t.Fatalf("telemetry does not validate: %v", err)
		}
		var tel wire.Telemetry
		if err := wire.Decode(raw, &tel); err != nil {
			t.Fatalf("telemetry does not decode strictly: %v\n%s", err, raw)
		}
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(raw, &fields); err != nil {
			t.Fatal(err)
		}
		return tel, fields, raw
	}

	t.Run("every field is a listed one", func(t *testing.T) {
		for _, ag := range []*Agent{a, never} {
			_, fields, raw := decode(ag)
			for k := range fields {
				if !slices.Contains(telemetryKeys, k) {
					t.Errorf("unlisted telemetry field %q in %s", k, raw)
				}
			}
		}
	})
	t.Run("no value the owner gave appears", func(t *testing.T) {
		_, _, raw := decode(a)
		low := strings.ToLower(string(raw))
		for _, v := range []string{s.SSID, s.Passphrase, s.Nickname, s.Claim, s.TimeZone, "zo\\u00eb"} {
			if strings.Contains(low, strings.ToLower(v)) {
				t.Errorf("telemetry carries %q: %s", v, raw)
			}
		}
		if err := a.guard.Check(raw); err != nil {
			t.Errorf("the agent's own guard refuses its telemetry: %v", err)
		}
	})
	t.Run("the network tag is keyed per device", func(t *testing.T) {
		ta, _, _ := decode(a)
		tb, _, _ := decode(b)
		tn, fields, _ := decode(never)
		if len(ta.NetworkTag) != 2*seal.NetworkTagSize || ta.NetworkTag != seal.NetworkTag(a.secret, s.SSID, "") {
			t.Fatalf("network tag %q, want the keyed tag of the onboarded network", ta.NetworkTag)
		}
		if ta.NetworkTag == tb.NetworkTag {
			t.Fatal("two devices on one network report the same tag: the cloud could join them")
		}
		if _, ok := fields["network_tag"]; ok || tn.NetworkTag != "" {
			t.Fatalf("a device never onboarded reports network tag %q", tn.NetworkTag)
		}
	})
	t.Run("it describes the device", func(t *testing.T) {
		tel, _, _ := decode(a)
		if tel.Firmware != "1.4.2+rpi" || tel.CertSerial != serialHex(a.Certificate()) || tel.Epoch != 0 || tel.Privacy || tel.UptimeS < 0 {
			t.Fatalf("telemetry %+v", tel)
		}
	})
}

// The loop publishes once connected and then every TelemetryInterval, at QoS 0 and never
// retained, through the guard; a negative interval turns it off.
func TestTelemetryLoopPublishesOnConnectThenEveryInterval(t *testing.T) {
	now := time.Now()
	f := enrolled(t, "cam-0001", now, closedPort(t))
	clk := clocktest.New(now)
	log, _ := logtest.New()
	a, err := New(Config{StateDir: f.dir, Logger: log, Clock: clk, TelemetryInterval: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	pub := newPubRecorder()
	a.pub.Store(&publisherBox{pub})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.telemetryLoop(ctx)
	}()
	next := func(what string) published {
		t.Helper()
		select {
		case m := <-pub.sent:
			return m
		case <-time.After(10 * time.Second):
			t.Fatalf("no telemetry %s", what)
			return published{}
		}
	}
	select {
	case m := <-pub.sent:
		t.Fatalf("telemetry before the first connect: %s", m.payload)
	default:
	}
	a.connOnce.Do(func() { close(a.connected) })
	for i := range 3 {
		m := next(fmt.Sprintf("report %d", i))
		if m.topic != topic.Telemetry("cam-0001") || m.qos != 0 || m.retained {
			t.Fatalf("report %d on %s qos %d retained %v", i, m.topic, m.qos, m.retained)
		}
		var tel wire.Telemetry
		if err := wire.Decode(m.payload, &tel); err != nil {
			t.Fatal(err)
		}
		if want := int64(i * 60); tel.UptimeS != want {
			t.Fatalf("report %d: uptime %d, want %d", i, tel.UptimeS, want)
		}
		select {
		case <-clk.Waiting(): // the loop sleeps on the clock
		case <-time.After(10 * time.Second):
			t.Fatalf("the loop did not wait for the interval after report %d", i)
		}
		clk.Advance(time.Minute)
	}
	cancel()
	<-done

	t.Run("a negative interval publishes nothing", func(t *testing.T) {
		b, err := New(Config{StateDir: f.dir, Logger: log, TelemetryInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		pub := newPubRecorder()
		b.pub.Store(&publisherBox{pub})
		b.connOnce.Do(func() { close(b.connected) })
		b.telemetryLoop(context.Background()) // returns at once
		if n := len(pub.on(topic.Telemetry("cam-0001"))); n != 0 {
			t.Fatalf("%d reports with telemetry off", n)
		}
	})
}
