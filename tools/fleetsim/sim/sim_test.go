package sim_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/tools/fleetctl/fleettest"
	"github.com/camagent/camagent/tools/fleetsim/proxy"
	"github.com/camagent/camagent/tools/fleetsim/sim"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// n is the fleet size of these tests: enough for every scenario to have devices on both sides
// of a fault or a skew, small enough for a loaded 2-core machine under the race detector.
const n = 20

// small is a run of n devices on the embedded broker, with the agents tuned to retry fast, so
// a scenario plays out in seconds. Its logs are shown if the test fails.
func small(t *testing.T, s sim.Scenario, tune func(*sim.Config)) sim.Config {
	t.Helper()
	var logs logtest.Buffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agents, broker and signer warnings:\n%s", logs.String())
		}
	})
	c := sim.Config{
		Devices: n, Scenario: s, Embedded: true, StateDir: t.TempDir(),
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond,
		RetryMin: 100 * time.Millisecond, RetryMax: time.Second,
		RequestTimeout: 10 * time.Second, SwitchTimeout: 10 * time.Second,
		FaultDuration: 2 * time.Second,
		Timeout:       90 * time.Second, PingTimeout: 20 * time.Second,
		Log: &logs, LogLevel: slog.LevelWarn, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	}
	if tune != nil {
		tune(&c)
	}
	return c
}

// Two gaps of the agent, found by fleetsim and described in docs/scale-out.md ("What fleetsim
// and the chaos tests found"), are tolerated by these tests when they show, and logged, so that
// the tests fail on anything else; set these to false once the agent is fixed.
const (
	// tolerateStaleState: a device whose agent converged, but whose retained state on the broker
	// is an older one (its state publish on reconnecting overtook the one after its commit).
	tolerateStaleState = false
	// tolerateReplyGap: a command whose reply the device itself could not publish (its
	// connection dropped before the broker acknowledged the reply; the agent does not publish a
	// reply again, and refuses the broker's redelivery as a replay).
	tolerateReplyGap = false
	// tolerateRestartLoss: a ping the embedded broker had acknowledged before its restart that
	// no device answered afterwards (seen once in CI). Explained and fixed: mochi v2.7.9
	// forgot a delivery in flight when the device published with the same packet id
	// (docs/scale-out.md "What fleetsim and the chaos tests found", item 7).
	tolerateRestartLoss = false
)

// runOK runs c and checks that every device converged and every command was answered, but for
// the known gaps above.
func runOK(t *testing.T, c sim.Config) *sim.Report {
	t.Helper()
	return runOKWith(t, c, false)
}

// runOKWith is runOK that, with restartLoss, tolerates (and logs) commands lost across a
// broker restart by devices that all converged (tolerateRestartLoss).
func runOKWith(t *testing.T, c sim.Config, restartLoss bool) *sim.Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r, err := sim.Run(ctx, c)
	if restartLoss && r != nil && r.BrokerRestarts > 0 && r.CommandsLost > 0 && r.NotConvergedCount == 0 && r.LostReplyDropped == 0 {
		t.Logf("KNOWN GAP (broker restart): %d command(s) acknowledged by the broker before its restart were never answered: %v", r.CommandsLost, r.Lost)
		r.CommandsLost = 0
	}
	if tolerateStaleState && r != nil && r.NotConvergedCount > 0 && r.NotConvergedCount == r.StaleRetained {
		t.Logf("KNOWN GAP (agent): converged, but the broker keeps an older retained state: %v", r.NotConvergedDetail)
		r.NotConvergedCount = 0
	}
	if tolerateReplyGap && r != nil && r.CommandsLost > 0 && r.CommandsLost == r.LostReplyDropped {
		t.Logf("KNOWN GAP (agent): %d command(s) ran on the device but their reply was lost with the connection: %v", r.CommandsLost, r.Lost)
		r.CommandsLost = 0
	}
	if r != nil && r.NotConvergedCount == 0 && r.CommandsLost == 0 {
		err, r.OK = nil, true
	}
	if err != nil {
		if r != nil {
			var b bytes.Buffer
			r.WriteText(&b)
			t.Logf("report:\n%s", b.String())
		}
		t.Fatalf("run: %v", err)
	}
	if !r.OK || r.NotConvergedCount != 0 || r.CommandsLost != 0 || r.Devices != n {
		t.Fatalf("report %+v", r)
	}
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	t.Logf("report:\n%s", b.String())
	return r
}

func TestConnectStormConnectsEveryDevice(t *testing.T) {
	r := runOK(t, small(t, sim.ConnectStorm, nil))
	if r.ConnectSeconds <= 0 || r.PeakConnects == 0 || r.CommandsSent != n {
		t.Fatalf("connect %.2fs, peak %d/s, %d pings", r.ConnectSeconds, r.PeakConnects, r.CommandsSent)
	}
}

func TestBreachRotatesEveryDeviceAndReportsLatency(t *testing.T) {
	r := runOK(t, small(t, sim.Breach, nil))
	if r.Epoch != 1 || r.Rotated != n || r.RotationsPerSecond <= 0 || r.LatencyP50Seconds <= 0 || r.LatencyP99Seconds < r.LatencyP50Seconds {
		t.Fatalf("epoch %d, rotated %d, %.1f/s, p50 %.3fs p99 %.3fs", r.Epoch, r.Rotated, r.RotationsPerSecond, r.LatencyP50Seconds, r.LatencyP99Seconds)
	}
	// The report is machine-readable too.
	var b bytes.Buffer
	if err := r.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var back sim.Report
	if err := json.Unmarshal(b.Bytes(), &back); err != nil || back.Rotated != n || !back.OK {
		t.Fatalf("JSON report: %v\n%s", err, b.String())
	}
}

// The broker restarts, on the same port with its persistence, in the middle of the campaign;
// the pings sent to every device just before it must all be answered after it.
func TestBrokerRestartMidCampaignLosesNothing(t *testing.T) {
	r := runOKWith(t, small(t, sim.BrokerRestart, func(c *sim.Config) { c.RestartDowntime = 500 * time.Millisecond }), tolerateRestartLoss)
	if r.BrokerRestarts != 1 || r.CommandsSent != 2*n || r.Rotated != n {
		t.Fatalf("%d restarts, %d pings, %d rotated", r.BrokerRestarts, r.CommandsSent, r.Rotated)
	}
	if r.NotBack != 0 || r.BackSeconds <= 0 {
		t.Fatalf("%d devices not back; all back %.2f s after the restart", r.NotBack, r.BackSeconds)
	}
}

// With a connection budget on the broker, the storms (the first connections, the return
// after the restart) are spread: no second sees many more connections than the budget, and
// every device is back and converged all the same.
func TestBrokerRestartUnderAConnectionBudget(t *testing.T) {
	const budget = 8
	r := runOK(t, small(t, sim.BrokerRestart, func(c *sim.Config) { c.MaxConnectRate = budget }))
	if r.BrokerRestarts != 1 || r.Rotated != n || r.NotBack != 0 || r.MaxConnectRate != budget {
		t.Fatalf("%d restarts, %d rotated, %d not back, budget %v", r.BrokerRestarts, r.Rotated, r.NotBack, r.MaxConnectRate)
	}
	// The broker starts at most budget+1 handshakes in any second; a device counts its
	// connection a little later, so a second of the timeline may gain a few at its edge.
	if r.PeakConnects > 2*budget {
		t.Fatalf("peak %d connections in one second with a budget of %d/s", r.PeakConnects, budget)
	}
}

// An external broker is restarted by the command fleetsim is given: here a real Mosquitto,
// which the command asks the test to restart (SIGTERM, so it saves its persistence, and start
// again on its port), and which must keep the commands queued across it.
func TestBrokerRestartOfAnExternalBrokerByItsCommand(t *testing.T) {
	f, pki := fleettest.NewFleet(t)
	m := mqtttest.StartMosquitto(t, pki, fleettest.Identities())
	dir := t.TempDir()
	asked, back := filepath.Join(dir, "asked"), filepath.Join(dir, "back")
	restarted := make(chan struct{})
	go func() {
		defer close(restarted)
		deadline := time.Now().Add(3 * time.Minute)
		for {
			if _, err := os.Stat(asked); err == nil {
				break
			}
			if time.Now().After(deadline) {
				return
			}
			time.Sleep(10 * time.Millisecond) // polling for the command's file, with a deadline
		}
		m.Restart(t)
		os.WriteFile(back, nil, 0o600)
	}()
	r := runOK(t, small(t, sim.BrokerRestart, func(c *sim.Config) {
		c.Embedded, c.BrokerURL, c.FleetDir, c.Signers = false, m.URL(), f.Dir, 1
		c.RestartCommand = fmt.Sprintf("touch %s && while [ ! -e %s ]; do sleep 0.05; done", asked, back)
	}))
	<-restarted
	if r.BrokerRestarts != 1 || r.Rotated != n || r.NotBack != 0 {
		t.Fatalf("%d restarts, %d rotated, %d not back", r.BrokerRestarts, r.Rotated, r.NotBack)
	}
}

// With SourceAddrs, the devices reach the broker from that many loopback addresses, 127.1.0.0
// and up, device i from the (i mod SourceAddrs)-th, at every connection: the first and the one
// each makes with its new certificate. A tap in front of the embedded broker sees where every
// connection comes from; the signer and fleetsim's own sessions come from 127.0.0.1.
func TestDevicesDialFromTheirSourceAddresses(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("only Linux has all of 127.0.0.0/8 on the loopback interface")
	}
	const addrs = 4
	f, _ := fleettest.NewFleet(t)
	tap := mqtttest.StartTap(t, fleettest.StartBroker(t, f))
	r := runOK(t, small(t, sim.Breach, func(c *sim.Config) {
		c.Embedded, c.BrokerURL, c.FleetDir, c.Signers = false, tap.URL(), f.Dir, 1
		c.SourceAddrs = addrs
	}))
	if r.SourceAddrs != addrs || r.Rotated != n {
		t.Fatalf("report: %d source addresses, %d rotated", r.SourceAddrs, r.Rotated)
	}
	if checkDeviceSources(t, tap, addrs) == 0 {
		t.Error("no connection from 127.0.0.1: the signer and fleetsim's sessions should dial from the system's choice")
	}
}

// checkDeviceSources checks that the connections tap saw from elsewhere than 127.0.0.1 (the
// signer's and fleetsim's sessions) came from the first addrs source addresses, at least twice
// for each device (before and after its rotation), and returns how many came from 127.0.0.1.
func checkDeviceSources(t *testing.T, tap *mqtttest.Tap, addrs int) int {
	t.Helper()
	perAddr := map[netip.Addr]int{}
	for _, a := range tap.Sources() {
		perAddr[a]++
	}
	t.Logf("connections by source address: %v", perAddr)
	local := perAddr[netip.MustParseAddr("127.0.0.1")]
	delete(perAddr, netip.MustParseAddr("127.0.0.1"))
	if len(perAddr) != addrs {
		t.Errorf("the devices reached the broker from %d addresses, want %d", len(perAddr), addrs)
	}
	for k := range addrs {
		// n/addrs devices each.
		if a := sim.SourceAddr(k); perAddr[a] < 2*n/addrs {
			t.Errorf("%d connections from %v, want at least %d", perAddr[a], a, 2*n/addrs)
		}
	}
	return local
}

// Devices behind the fault proxy reach the broker from their own source addresses too: the
// proxy dials the broker for each from the address the device dialled it from. With every
// device behind a cut, every device connection the tap sees came through the proxy, the first
// ones and those after the cut; were they made from the proxy's address, the tap would see
// them all from 127.0.0.1.
func TestDevicesBehindTheFaultProxyDialFromTheirSourceAddresses(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("only Linux has all of 127.0.0.0/8 on the loopback interface")
	}
	const addrs = 4
	f, _ := fleettest.NewFleet(t)
	tap := mqtttest.StartTap(t, fleettest.StartBroker(t, f))
	r := runOK(t, small(t, sim.FaultCampaign, func(c *sim.Config) {
		c.Embedded, c.BrokerURL, c.FleetDir, c.Signers = false, tap.URL(), f.Dir, 1
		c.SourceAddrs = addrs
		c.Fault, c.FaultShare = proxy.Fault{Mode: proxy.Cut}, 1
	}))
	if r.SourceAddrs != addrs || r.Faulted != n || r.Rotated != n {
		t.Fatalf("report: %d source addresses, %d faulted, %d rotated", r.SourceAddrs, r.Faulted, r.Rotated)
	}
	checkDeviceSources(t, tap, addrs)
}

// CheckSourceAddrs takes only a broker on IPv4 loopback, which devices dialling from
// 127.1.0.0 and up can reach, and a count the range 127.1.0.0 to 127.16.255.255 holds.
func TestSourceAddrsNeedABrokerOnIPv4Loopback(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("only Linux has all of 127.0.0.0/8 on the loopback interface")
	}
	external := func(url string, addrs int) sim.Config {
		return sim.Config{Devices: 1, StateDir: "x", BrokerURL: url, FleetDir: "f", SourceAddrs: addrs}
	}
	for _, tc := range []struct {
		name string
		cfg  sim.Config
		ok   bool
	}{
		{"no source addresses need nothing", external("mqtts://broker.example:8883", 0), true},
		{"a broker on 127.0.0.1 is taken", external("mqtts://127.0.0.1:8883", 4), true},
		{"a broker elsewhere in 127.0.0.0/8 is taken", external("mqtts://127.9.9.9:8883", 4), true},
		{"a broker on localhost is taken", external("mqtts://localhost:8883", 4), true},
		{"the embedded broker on its default address is taken", sim.Config{Devices: 1, Embedded: true, StateDir: "x", SourceAddrs: sim.MaxSourceAddrs}, true},
		{"a broker on another host is refused", external("mqtts://192.0.2.1:8883", 4), false},
		{"a broker on IPv6 loopback is refused", external("mqtts://[::1]:8883", 4), false},
		{"a broker named other than localhost is refused", external("mqtts://broker.example:8883", 4), false},
		{"the embedded broker on every address is refused", sim.Config{Devices: 1, Embedded: true, StateDir: "x", Listen: "0.0.0.0:8883", SourceAddrs: 4}, false},
		{"a negative count is refused", external("mqtts://127.0.0.1:8883", -1), false},
		{"more addresses than the range holds are refused", external("mqtts://127.0.0.1:8883", sim.MaxSourceAddrs+1), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := sim.CheckSourceAddrs(context.Background(), tc.cfg)
			switch {
			case tc.ok && err != nil:
				t.Fatalf("CheckSourceAddrs = %v, want nil", err)
			case !tc.ok && (!errors.Is(err, sim.ErrConfig) || !strings.Contains(err.Error(), "SourceAddrs")):
				t.Fatalf("CheckSourceAddrs = %v, want ErrConfig naming SourceAddrs", err)
			}
		})
	}
	// Run refuses it too, before it makes anything.
	c := external("mqtts://192.0.2.1:8883", 4)
	c.StateDir = filepath.Join(t.TempDir(), "state")
	if _, err := sim.Run(context.Background(), c); !errors.Is(err, sim.ErrConfig) {
		t.Fatalf("Run = %v, want ErrConfig", err)
	}
	if _, err := os.Stat(c.StateDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Run made its state directory before refusing: %v", err)
	}
}

func TestFaultsOnAShareOfDevicesEndConverged(t *testing.T) {
	for _, f := range []proxy.Fault{
		{Mode: proxy.Cut},
		{Mode: proxy.Blackhole},
		{Mode: proxy.Slow, Delay: 100 * time.Millisecond, Rate: 8 << 10},
	} {
		t.Run(f.Mode.String(), func(t *testing.T) {
			r := runOK(t, small(t, sim.FaultCampaign, func(c *sim.Config) {
				c.Fault = f
				// A blackholed connection is noticed by the MQTT keepalive.
				c.KeepAlive = time.Second
			}))
			want := int(n * sim.DefaultFaultShare)
			if r.Faulted != want || r.CommandsSent != n+want || r.Rotated != n || !strings.HasPrefix(r.Fault, f.Mode.String()) {
				t.Fatalf("%d faulted (want %d), fault %q, %d pings, %d rotated", r.Faulted, want, r.Fault, r.CommandsSent, r.Rotated)
			}
		})
	}
}

// A clock within certs.ClockSkew of the operator's is tolerated for everything; a clock five
// minutes behind still rotates (desired state carries no time), but refuses every signed
// command as issued in its future, and the run says so and fails.
func TestClockSkewWithinAndBeyondTheTolerance(t *testing.T) {
	t.Run("90s ahead and behind", func(t *testing.T) {
		for _, skew := range []time.Duration{90 * time.Second, -90 * time.Second} {
			r := runOK(t, small(t, sim.ClockSkew, func(c *sim.Config) { c.ClockSkew = skew }))
			if r.Skewed != n/2 || r.CommandsRefused != 0 {
				t.Fatalf("skew %s: %d skewed, %d refused", skew, r.Skewed, r.CommandsRefused)
			}
		}
	})
	t.Run("5m behind", func(t *testing.T) {
		c := small(t, sim.ClockSkew, func(c *sim.Config) { c.ClockSkew = -5 * time.Minute; c.PingTimeout = 5 * time.Second })
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		r, err := sim.Run(ctx, c)
		if r == nil || !errors.Is(err, sim.ErrCommandsLost) {
			t.Fatalf("run: %v; want commands lost", err)
		}
		if tolerateStaleState && r.NotConvergedCount > 0 && r.NotConvergedCount == r.StaleRetained {
			t.Logf("KNOWN GAP (agent): converged, but the broker keeps an older retained state: %v", r.NotConvergedDetail)
			r.NotConvergedCount = 0
		}
		if r.OK || r.NotConvergedCount != 0 || r.Rotated != n || r.CommandsLost != n/2 || r.CommandsRefused != uint64(n/2) {
			t.Fatalf("%d not converged, %d rotated, %d lost, %d refused", r.NotConvergedCount, r.Rotated, r.CommandsLost, r.CommandsRefused)
		}
	})
}

func TestConfigIsValidated(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  sim.Config
	}{
		{"no devices", sim.Config{Embedded: true, StateDir: "x"}},
		{"an unknown scenario", sim.Config{Devices: 1, Embedded: true, StateDir: "x", Scenario: "meteor"}},
		{"neither embedded nor a broker", sim.Config{Devices: 1, StateDir: "x"}},
		{"both embedded and a broker", sim.Config{Devices: 1, StateDir: "x", Embedded: true, BrokerURL: "mqtts://127.0.0.1:1"}},
		{"an external broker without its fleet", sim.Config{Devices: 1, StateDir: "x", BrokerURL: "mqtts://127.0.0.1:1"}},
		{"a broker restart of an external broker without a restart command", sim.Config{Devices: 1, StateDir: "x", BrokerURL: "mqtts://127.0.0.1:1", FleetDir: "f", Scenario: sim.BrokerRestart}},
		{"a restart command for the embedded broker", sim.Config{Devices: 1, Embedded: true, StateDir: "x", Scenario: sim.BrokerRestart, RestartCommand: "true"}},
		{"a downtime for an external broker", sim.Config{Devices: 1, StateDir: "x", BrokerURL: "mqtts://127.0.0.1:1", FleetDir: "f", Scenario: sim.BrokerRestart, RestartCommand: "true", RestartDowntime: time.Second}},
		{"no state directory", sim.Config{Devices: 1, Embedded: true}},
		{"a share over 1", sim.Config{Devices: 1, Embedded: true, StateDir: "x", FaultShare: 1.5}},
		{"a negative timeout", sim.Config{Devices: 1, Embedded: true, StateDir: "x", Timeout: -1}},
		{"a negative connection budget", sim.Config{Devices: 1, Embedded: true, StateDir: "x", MaxConnectRate: -1}},
		{"a connection budget for a broker fleetsim does not run", sim.Config{Devices: 1, StateDir: "x", BrokerURL: "mqtts://127.0.0.1:1", FleetDir: "f", MaxConnectRate: 10}},
	} {
		t.Run(tc.name+" is refused", func(t *testing.T) {
			if _, err := sim.Run(context.Background(), tc.cfg); !errors.Is(err, sim.ErrConfig) {
				t.Fatalf("err %v, want ErrConfig", err)
			}
		})
	}
}
