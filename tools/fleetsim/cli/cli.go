// Package cli is fleetsim's command line: it parses flags into a sim.Config, runs it, and
// prints the report. It never exits the process and never reads the environment (main does
// both).
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/camagent/camagent/tools/fleetsim/proxy"
	"github.com/camagent/camagent/tools/fleetsim/sim"
)

const usage = `usage: fleetsim [flags]

fleetsim runs N simulated cameras in this process — each the real camagent agent with its own
key, certificate, state directory and MQTT connection — against a broker, plays a scenario and
reports time to converge, rotations per second, latency p50/p99, connections per second,
devices not converged and commands lost. It exits non-zero when a device did not converge or
a signed command was not answered.

  fleetsim --embedded --devices 200 --scenario breach
      a throw-away fleet, the embedded broker and a signer, all in this process
  fleetsim --embedded --devices 200 --scenario fault --fault cut --fault-share 0.3 --fault-duration 10s
  fleetsim --embedded --devices 200 --scenario broker-restart
  fleetsim --broker mqtts://127.0.0.1:8883 --fleet ./fleet --signers 2 --devices 1000
      an existing fleet on a running broker (Mosquitto configured by fleetctl mosquitto-config);
      the devices are enrolled into the fleet's registry for good: use a throw-away fleet

scenarios:
  connect-storm   every agent starts at once; connect rate and time until all connected
  breach          a fleet-wide breach notice; time until every device rotated and converged
  broker-restart  breach, and the broker restarts (same port, same persistence)
                  once --restart-at of the devices rotated (--embedded, or --broker
                  with --restart-command)
  fault           breach while --fault hits --fault-share of the devices (through a TCP proxy)
                  for --fault-duration: cut, blackhole or slow (--slow-delay, --slow-rate)
  clock-skew      breach with --skew-share of the device clocks off by --clock-skew (default
                  5m); a device refuses commands issued more than 2 minutes in its future or
                  expired more than 2 minutes in its past (certs.ClockSkew)

--fault and --clock-skew also combine with breach and broker-restart.

--source-addrs N makes the devices dial from N loopback addresses (127.1.0.0 and up) instead of
all from 127.0.0.1, as a real fleet dials from many hosts: a broker that counts connections or
handshakes per source address then sees N hosts, devices behind --fault's proxy included (the
proxy dials the broker from each device's address). It needs a broker on 127.0.0.0/8, and Linux.

Device state goes to --state-dir, by default a new directory on /dev/shm (tmpfs) when there is
one: a real camera fsyncs its own storage, while N simulated ones writing to this machine's one
disk would measure the disk (about 8 atomic writes per rotation each), not the protocol.

flags:
`

// Run runs fleetsim with args, printing the report on stdout and progress on stderr.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fleetsim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	var c sim.Config
	fs.IntVar(&c.Devices, "devices", 100, "number of simulated devices")
	scenario := fs.String("scenario", string(sim.Breach), "scenario: "+scenarioList())
	fs.BoolVar(&c.Embedded, "embedded", false, "run the embedded broker (fleetctl broker) and the signers in this process")
	fs.StringVar(&c.BrokerURL, "broker", "", "an external broker's URL (mqtts://host:port); needs --fleet")
	fs.StringVar(&c.FleetDir, "fleet", "", "fleet directory (fleetctl init); with --embedded, default: a new fleet in --state-dir")
	fs.StringVar(&c.Listen, "listen", "", "the embedded broker's address (default: a free port on 127.0.0.1)")
	fs.IntVar(&c.Signers, "signers", 0, "fleetctl serve instances to run in this process (default: 1 with --embedded, else 0: the fleet's own signers serve)")
	stateDir := fs.String("state-dir", "", "directory for the devices' state (default: a new temporary directory, on /dev/shm when there is one)")
	keep := fs.Bool("keep", false, "keep --state-dir's temporary default after the run")
	fs.StringVar(&c.Prefix, "prefix", "", "device id prefix (default: sim-<6 random hex>-)")

	fault := fs.String("fault", "", "network fault for --fault-share of the devices: cut, blackhole or slow")
	fs.Float64Var(&c.FaultShare, "fault-share", sim.DefaultFaultShare, "share of devices behind the fault proxy")
	fs.DurationVar(&c.FaultDuration, "fault-duration", sim.DefaultFaultDuration, "how long the fault lasts")
	fs.DurationVar(&c.Fault.Delay, "slow-delay", 200*time.Millisecond, "--fault slow: latency added each way")
	fs.IntVar(&c.Fault.Rate, "slow-rate", 16<<10, "--fault slow: bytes per second each way per connection (0: no cap)")
	fs.DurationVar(&c.ClockSkew, "clock-skew", 0, "move the clocks of --skew-share of the devices by this much (negative: behind)")
	fs.Float64Var(&c.SkewShare, "skew-share", sim.DefaultSkewShare, "share of devices with a skewed clock")
	fs.Float64Var(&c.RestartAt, "restart-at", sim.DefaultRestartAt, "broker-restart: restart once this share of devices rotated")
	fs.DurationVar(&c.RestartDowntime, "restart-downtime", 0, "broker-restart: how long the broker stays down (--embedded)")
	fs.StringVar(&c.RestartCommand, "restart-command", "", "broker-restart with --broker: a shell command that restarts the broker with its persistence and returns once it listens (e.g. 'systemctl restart mosquitto')")
	fs.Float64Var(&c.MaxConnectRate, "max-connect-rate", 0, "the embedded broker's budget of new connections per second (fleetctl broker --max-connect-rate); 0: no limit")
	fs.IntVar(&c.SourceAddrs, "source-addrs", 0, "devices dial the broker from this many loopback addresses, 127.1.0.0 and up, device i from number i mod N (at most 1048576), so that a broker limiting each source address sees N hosts, not one; the broker must be on 127.0.0.0/8 or localhost (Linux routes all of 127.0.0.0/8 to lo); devices behind --fault's proxy dial it from their address and it dials the broker from the same, so the broker sees each device's address with or without the proxy; 0: the system's choice for all")

	fs.DurationVar(&c.MinBackoff, "min-backoff", 0, "agent reconnect backoff of the first retry (default: the agent's, 1s)")
	fs.DurationVar(&c.MaxBackoff, "max-backoff", 0, "agent reconnect backoff cap (default: the agent's, 5m)")
	fs.DurationVar(&c.KeepAlive, "keepalive", 0, "agent MQTT keepalive (default: the agent's, 30s)")
	fs.DurationVar(&c.RetryMin, "retry-min", 0, "agent backoff after a failed rotation step (default: the agent's, 2s)")
	fs.DurationVar(&c.RetryMax, "retry-max", 0, "agent backoff cap after failed rotation steps (default: the agent's, 5m)")
	fs.DurationVar(&c.RequestTimeout, "request-timeout", 0, "agent wait for the signer's certificate (default: the agent's, 30s)")
	fs.DurationVar(&c.SwitchTimeout, "switch-timeout", 0, "agent wait to connect with a new certificate (default: the agent's, 30s)")

	fs.IntVar(&c.EnrollWorkers, "enroll-workers", 0, "devices enrolled at once (default: 4 per CPU)")
	fs.IntVar(&c.ConnectWorkers, "connect-workers", sim.DefaultConnectWorkers, "first connections at once, except in connect-storm")
	fs.DurationVar(&c.Timeout, "timeout", sim.DefaultTimeout, "bound on each wait: all connected, all converged")
	fs.DurationVar(&c.PingTimeout, "ping-timeout", sim.DefaultPingTimeout, "how long devices have to answer the final pings")
	asJSON := fs.Bool("json", false, "print the report as JSON on stdout")
	noProgress := fs.Bool("no-progress", false, "no progress bar on stderr")
	logFile := fs.String("log", "", "write the agents' logs at --log-level, and the warnings and errors of the broker and signers, to this file")
	logLevel := fs.String("log-level", "warn", "the agents' log level for --log: debug, info, warn, error")
	verbose := fs.Bool("v", false, "log fleetsim's steps on stderr")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run (agents, and the broker and signers when they run in this process) to this file, for go tool pprof")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	c.Scenario = sim.Scenario(*scenario)
	if *fault != "" {
		m, err := proxy.ParseMode(*fault)
		if err != nil {
			return err
		}
		c.Fault.Mode = m
	}
	if c.Fault.Mode != proxy.Slow {
		c.Fault.Delay, c.Fault.Rate = 0, 0
	}
	if c.BrokerURL == "" && !c.Embedded {
		return errors.New("give --embedded, or --broker URL with --fleet DIR")
	}
	if err := sim.CheckSourceAddrs(ctx, c); err != nil {
		return fmt.Errorf("--source-addrs %d: %w", c.SourceAddrs, err)
	}
	c.StateDir = *stateDir
	if c.StateDir == "" {
		dir, err := tempStateDir()
		if err != nil {
			return err
		}
		c.StateDir = dir
		if *keep {
			fmt.Fprintf(stderr, "fleetsim: state in %s (kept)\n", dir)
		} else {
			defer os.RemoveAll(dir)
		}
	}
	if *logFile != "" {
		lf, err := os.OpenFile(*logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		defer lf.Close()
		c.Log = lf
		if err := c.LogLevel.UnmarshalText([]byte(*logLevel)); err != nil {
			return fmt.Errorf("--log-level: %w", err)
		}
	}
	if !*noProgress {
		c.Progress = stderr
	}
	if *verbose {
		c.Logger = slog.New(slog.NewTextHandler(stderr, nil))
	}
	if *cpuProfile != "" {
		pf, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	rep, err := sim.Run(ctx, c)
	if rep == nil {
		return err
	}
	var perr error
	if *asJSON {
		perr = rep.WriteJSON(stdout)
	} else {
		perr = rep.WriteText(stdout)
	}
	return errors.Join(err, perr)
}

func scenarioList() string {
	var s []string
	for _, sc := range sim.Scenarios {
		s = append(s, string(sc))
	}
	return strings.Join(s, ", ")
}

// tempStateDir makes a temporary directory for the devices' state, on /dev/shm when it
// exists (see usage).
func tempStateDir() (string, error) {
	base := ""
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		base = "/dev/shm"
	}
	dir, err := os.MkdirTemp(base, "fleetsim-")
	if err != nil && base != "" {
		dir, err = os.MkdirTemp("", "fleetsim-")
	}
	if err != nil {
		return "", fmt.Errorf("state dir: %w", err)
	}
	return dir, nil
}
