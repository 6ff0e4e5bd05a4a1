package sim

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/camagent/camagent/tools/fleetsim/proxy"
)

// Scenario names what a run does once its devices are enrolled and connected.
type Scenario string

// The scenarios.
const (
	// ConnectStorm starts every agent at once and measures how fast the fleet connects.
	ConnectStorm Scenario = "connect-storm"
	// Breach publishes a fleet-wide breach notice and measures the campaign until every
	// device has rotated.
	Breach Scenario = "breach"
	// BrokerRestart is a breach during which the broker is restarted, on the same port with
	// the same persistence, once Config.RestartAt of the devices have rotated: by fleetsim when
	// it runs the broker (Embedded), else by Config.RestartCommand.
	BrokerRestart Scenario = "broker-restart"
	// FaultCampaign is a breach while Config.Fault hits Config.FaultShare of the devices for
	// Config.FaultDuration (cut by default).
	FaultCampaign Scenario = "fault"
	// ClockSkew is a breach with Config.SkewShare of the devices' clocks off by
	// Config.ClockSkew (5 minutes by default).
	ClockSkew Scenario = "clock-skew"
)

// Scenarios lists every scenario, for flags and help.
var Scenarios = []Scenario{ConnectStorm, Breach, BrokerRestart, FaultCampaign, ClockSkew}

// Config configures a run. Zero values select the defaults named in each comment; Run
// validates the rest and names the first bad field.
type Config struct {
	// Devices is how many simulated devices to enroll and run. Required (> 0).
	Devices int
	// Scenario is what to do; "" means Breach.
	Scenario Scenario

	// Embedded runs the embedded broker (`fleetctl broker`) in this process, with its
	// persistence in StateDir; BrokerURL must then be empty. Otherwise BrokerURL names a
	// running broker (Mosquitto configured by `fleetctl mosquitto-config`, or any other).
	Embedded bool
	// BrokerURL is the broker to use when not Embedded (mqtts://host:port).
	BrokerURL string
	// Listen is the embedded broker's address; "" picks a free loopback port below the
	// ephemeral range, so that nothing else takes it while the broker restarts.
	Listen string
	// FleetDir is the fleet directory (CA, operator, signer and key set). "" makes a new fleet
	// in StateDir, which only an Embedded run can use (an external broker would not trust it).
	// The devices fleetsim enrolls stay in the fleet's registry: use a throw-away fleet.
	FleetDir string
	// StateDir holds every device's state directory (and, for an embedded run, the broker's
	// persistence and the fleet when FleetDir is empty). Required; cmd fleetsim defaults it to
	// a temporary directory on /dev/shm.
	StateDir string
	// Prefix starts every device id ("<prefix>00042"); "" means "sim-" and 6 random hex
	// digits, so runs against one fleet never share ids.
	Prefix string
	// Signers is how many `fleetctl serve` instances to run in this process; they share the
	// load through the shared subscription. 0 means 1 when Embedded and none otherwise (the
	// fleet's own signers serve); negative means none.
	Signers int

	// Fault is the network fault the fault proxy applies to FaultShare of the devices for
	// FaultDuration, starting when the campaign starts; Mode Pass (the zero value) means no
	// fault, except that the FaultCampaign scenario defaults to Cut.
	Fault proxy.Fault
	// FaultShare is the share of devices behind the fault proxy, in (0, 1]; 0 means 0.3.
	FaultShare float64
	// FaultDuration is how long the fault lasts; 0 means 10s.
	FaultDuration time.Duration

	// ClockSkew is added to the clock of SkewShare of the devices (negative: behind); 0 means
	// none, except that the ClockSkew scenario defaults to 5 minutes.
	ClockSkew time.Duration
	// SkewShare is the share of devices with a skewed clock, in (0, 1]; 0 means 0.5.
	SkewShare float64

	// RestartAt is the share of devices rotated when BrokerRestart restarts the broker, in
	// [0, 1); 0 means 0.3.
	RestartAt float64
	// RestartDowntime is how long the broker stays down in BrokerRestart; 0 means at once.
	// Embedded only: an external broker is down for as long as RestartCommand takes.
	RestartDowntime time.Duration
	// RestartCommand restarts an external broker in BrokerRestart: a shell command (sh -c)
	// that stops the broker, starts it again with the same persistence, and returns once it
	// listens (e.g. `systemctl restart mosquitto`). Not with Embedded.
	RestartCommand string
	// MaxConnectRate is the embedded broker's connection budget (`fleetctl broker
	// --max-connect-rate`), new connections per second; 0 means no limit. Embedded only.
	MaxConnectRate float64

	// SourceAddrs is how many loopback addresses the devices dial the broker from: device i
	// dials from SourceAddr(i mod SourceAddrs), 127.1.0.0 and up, so that a broker which
	// treats each source address as a host (a per-source connection budget, a firewall's
	// limit) sees a fleet of hosts, as it would in the field, rather than one. Each address
	// also has its own range of ephemeral ports, which a fleet of thousands reconnecting at
	// once can exhaust on one address. 0 means every device dials from the system's choice
	// (127.0.0.1); at most MaxSourceAddrs. The broker must be on IPv4 loopback (127.0.0.0/8, or
	// localhost resolving there), and the host must route the addresses to itself, as Linux
	// does for all of 127.0.0.0/8 without setup (CheckSourceAddrs). Devices behind the fault
	// proxy dial the proxy from their address, and the proxy dials the broker for each from
	// the same (proxy.Config.KeepSource): the broker sees every device at its address, behind
	// the proxy or not. The signers and fleetsim's own sessions dial from the system's choice.
	SourceAddrs int

	// Agent tuning, passed to every agent.Config; 0 means the agent's production default, so
	// a run measures what the fleet does.
	MinBackoff, MaxBackoff, KeepAlive time.Duration
	RetryMin, RetryMax                time.Duration
	RequestTimeout, SwitchTimeout     time.Duration

	// EnrollWorkers is how many devices enroll at once; 0 means 4 per CPU.
	EnrollWorkers int
	// ConnectWorkers bounds how many agents make their first connection at once in the
	// scenarios other than ConnectStorm (which starts them all together); 0 means 256.
	ConnectWorkers int
	// Timeout bounds each wait: every device connected, every device converged; 0 means 5m.
	Timeout time.Duration
	// PingTimeout is how long a device has to answer the final ping, after convergence;
	// 0 means 30s.
	PingTimeout time.Duration

	// Progress, if set, shows a progress bar of each wait (stderr, normally).
	Progress io.Writer
	// Log receives the logs of every agent at LogLevel and above, and the warnings and errors
	// of the broker and the signers, as text; nil discards them.
	Log io.Writer
	// LogLevel is the agents' level for Log; the zero value is slog.LevelInfo, so set it
	// (cmd fleetsim: warn) to keep Log small.
	LogLevel slog.Level
	// Logger receives fleetsim's own progress messages; nil discards them.
	Logger *slog.Logger
}

// Defaults of Config fields, applied by Run.
const (
	DefaultFaultShare     = 0.3
	DefaultFaultDuration  = 10 * time.Second
	DefaultSkewShare      = 0.5
	DefaultScenarioSkew   = 5 * time.Minute
	DefaultRestartAt      = 0.3
	DefaultConnectWorkers = 256
	DefaultTimeout        = 5 * time.Minute
	DefaultPingTimeout    = 30 * time.Second
)

// MaxSourceAddrs is the most loopback addresses Config.SourceAddrs may ask for: 127.1.0.0 to
// 127.16.255.255.
const MaxSourceAddrs = 1 << 20

// firstSourceAddr is SourceAddr(0). It is outside 127.0.0.0/16, where the broker, the proxy
// and anything else on this host listen by default (127.0.0.1).
var firstSourceAddr = netip.AddrFrom4([4]byte{127, 1, 0, 0})

// SourceAddr returns the k-th source address of Config.SourceAddrs, counting up from
// 127.1.0.0 across octets (127.1.0.255, then 127.1.1.0), for k in [0, MaxSourceAddrs).
func SourceAddr(k int) netip.Addr {
	b := firstSourceAddr.As4()
	n := binary.BigEndian.Uint32(b[:]) + uint32(k)
	binary.BigEndian.PutUint32(b[:], n)
	return netip.AddrFrom4(b)
}

// CheckSourceAddrs reports whether the devices of c can dial from c.SourceAddrs loopback
// addresses: the count is in range, the broker they dial (BrokerURL, or Listen when Embedded)
// is on IPv4 loopback, and this host lets the first and the last address be bound. It does
// nothing for a SourceAddrs of 0. Its errors match ErrConfig. Run checks it; cmd fleetsim
// calls it first, to name its flag in the error.
func CheckSourceAddrs(ctx context.Context, c Config) error {
	switch {
	case c.SourceAddrs == 0:
		return nil
	case c.SourceAddrs < 0 || c.SourceAddrs > MaxSourceAddrs:
		return bad("SourceAddrs", "%d is outside [0, %d]", c.SourceAddrs, MaxSourceAddrs)
	}
	host := "127.0.0.1" // the embedded broker's default address
	switch {
	case !c.Embedded:
		u, err := url.Parse(c.BrokerURL)
		if err != nil {
			return bad("SourceAddrs", "needs a broker URL: %v", err)
		}
		host = u.Hostname()
	case c.Listen != "":
		h, _, err := net.SplitHostPort(c.Listen)
		if err != nil {
			return bad("SourceAddrs", "needs a listen address: %v", err)
		}
		host = h
	}
	if err := onIPv4Loopback(ctx, host); err != nil {
		return err
	}
	for _, a := range []netip.Addr{SourceAddr(0), SourceAddr(c.SourceAddrs - 1)} {
		ln, err := net.Listen("tcp", netip.AddrPortFrom(a, 0).String())
		if err != nil {
			return bad("SourceAddrs", "needs %s, which cannot be bound (Linux routes all of 127.0.0.0/8 to the loopback interface; other systems need each address added to it): %v", a, err)
		}
		ln.Close()
	}
	return nil
}

// onIPv4Loopback reports why the devices cannot dial host from 127.1.0.0 and up, or nil: it
// must be an address in 127.0.0.0/8, or localhost resolving only there. An IPv6 address of
// localhost does not matter: a dialer bound to an IPv4 address dials only IPv4 ones.
func onIPv4Loopback(ctx context.Context, host string) error {
	notLoopback := func(why string) error {
		return bad("SourceAddrs", "needs a broker on IPv4 loopback (127.0.0.0/8, or localhost), the only one the devices can reach from 127.1.0.0 and up; its host %q %s", host, why)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if a = a.Unmap(); !a.Is4() || !a.IsLoopback() {
			return notLoopback("is not in 127.0.0.0/8")
		}
		return nil
	}
	if !strings.EqualFold(host, "localhost") {
		return notLoopback("is a name other than localhost")
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip4", host)
	if err != nil {
		return notLoopback(fmt.Sprintf("has no IPv4 address (%v)", err))
	}
	for _, a := range addrs {
		if !a.Unmap().IsLoopback() {
			return notLoopback(fmt.Sprintf("resolves to %s, outside 127.0.0.0/8", a))
		}
	}
	return nil
}

func bad(field, format string, args ...any) error {
	return fmt.Errorf("%w: Config.%s %s", ErrConfig, field, fmt.Sprintf(format, args...))
}

// withDefaults validates c and fills in its defaults.
func (c Config) withDefaults(cpus int) (Config, error) {
	if c.Devices <= 0 {
		return c, bad("Devices", "must be positive, is %d", c.Devices)
	}
	if c.Scenario == "" {
		c.Scenario = Breach
	}
	known := false
	for _, s := range Scenarios {
		known = known || s == c.Scenario
	}
	if !known {
		return c, bad("Scenario", "%q is not one of %v", c.Scenario, Scenarios)
	}
	switch {
	case c.Embedded && c.BrokerURL != "":
		return c, bad("BrokerURL", "must be empty for an embedded run")
	case !c.Embedded && c.BrokerURL == "":
		return c, bad("BrokerURL", "is required unless Embedded")
	case !c.Embedded && c.FleetDir == "":
		return c, bad("FleetDir", "is required with an external broker: it must trust the fleet's CA")
	case !c.Embedded && c.Scenario == BrokerRestart && c.RestartCommand == "":
		return c, bad("Scenario", "%s with an external broker needs RestartCommand, the command that restarts it", BrokerRestart)
	case c.Embedded && c.RestartCommand != "":
		return c, bad("RestartCommand", "is for an external broker: fleetsim restarts the embedded one itself")
	case !c.Embedded && c.RestartDowntime != 0:
		return c, bad("RestartDowntime", "needs Embedded: an external broker is down for as long as RestartCommand takes")
	case c.StateDir == "":
		return c, bad("StateDir", "is required")
	case c.MaxConnectRate < 0 || c.MaxConnectRate != c.MaxConnectRate:
		return c, bad("MaxConnectRate", "%v is not a rate", c.MaxConnectRate)
	case !c.Embedded && c.MaxConnectRate != 0:
		return c, bad("MaxConnectRate", "needs Embedded: it configures the broker fleetsim runs")
	}
	if c.Signers == 0 && c.Embedded {
		c.Signers = 1
	}
	if c.Scenario == FaultCampaign && c.Fault.Mode == proxy.Pass {
		c.Fault.Mode = proxy.Cut
	}
	if c.Scenario == ClockSkew && c.ClockSkew == 0 {
		c.ClockSkew = DefaultScenarioSkew
	}
	if c.FaultShare == 0 {
		c.FaultShare = DefaultFaultShare
	}
	if c.FaultShare < 0 || c.FaultShare > 1 {
		return c, bad("FaultShare", "%v is outside (0, 1]", c.FaultShare)
	}
	if c.FaultDuration == 0 {
		c.FaultDuration = DefaultFaultDuration
	}
	if c.Fault.Delay < 0 || c.Fault.Rate < 0 || c.FaultDuration < 0 {
		return c, bad("Fault", "negative delay, rate or duration")
	}
	if c.SkewShare == 0 {
		c.SkewShare = DefaultSkewShare
	}
	if c.SkewShare < 0 || c.SkewShare > 1 {
		return c, bad("SkewShare", "%v is outside (0, 1]", c.SkewShare)
	}
	if c.RestartAt == 0 {
		c.RestartAt = DefaultRestartAt
	}
	if c.RestartAt < 0 || c.RestartAt >= 1 {
		return c, bad("RestartAt", "%v is outside [0, 1)", c.RestartAt)
	}
	if c.EnrollWorkers == 0 {
		c.EnrollWorkers = 4 * cpus
	}
	if c.ConnectWorkers == 0 {
		c.ConnectWorkers = DefaultConnectWorkers
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.PingTimeout == 0 {
		c.PingTimeout = DefaultPingTimeout
	}
	for name, d := range map[string]time.Duration{"MinBackoff": c.MinBackoff, "MaxBackoff": c.MaxBackoff, "KeepAlive": c.KeepAlive,
		"RetryMin": c.RetryMin, "RetryMax": c.RetryMax, "RequestTimeout": c.RequestTimeout, "SwitchTimeout": c.SwitchTimeout,
		"RestartDowntime": c.RestartDowntime, "Timeout": c.Timeout, "PingTimeout": c.PingTimeout} {
		if d < 0 {
			return c, bad(name, "is negative")
		}
	}
	if c.EnrollWorkers < 0 || c.ConnectWorkers < 0 {
		return c, bad("EnrollWorkers", "and ConnectWorkers must not be negative")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// inShare reports whether device i is in a share: the share's devices are spread evenly
// over the ids (for a share of 0.3: 3 of every 10).
func inShare(i int, share float64) bool {
	return int(float64(i+1)*share) > int(float64(i)*share)
}
