// Package cli is fleetctl's command line. It parses arguments, calls the fleet package and
// prints results; it never exits the process (main does).
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/transport/mqtt/broker"
	"github.com/camagent/camagent/transport/mqtt/mosquitto"
)

const usage = `usage: fleetctl <command> [flags]

commands:
  init              create a fleet: CA, offline root key, signing keys, key set, operator and broker certificates
  enroll            sign a device CSR and write its bundle
  broker            run the embedded mTLS MQTT broker
  mosquitto-config  write a Mosquitto configuration and ACL for the fleet
  ping              send a signed ping to a device and print its reply and the round-trip time

Every command takes --dir, the fleet directory (default ./fleet).
Run 'fleetctl <command> -h' for a command's flags.
`

// Run runs one fleetctl command.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	cmds := map[string]func(context.Context, []string, io.Writer, io.Writer) error{
		"init":             initCmd,
		"enroll":           enrollCmd,
		"broker":           brokerCmd,
		"mosquitto-config": mosquittoCmd,
		"ping":             pingCmd,
	}
	if c, ok := cmds[args[0]]; ok {
		return c(ctx, args[1:], stdout, stderr)
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

func newFlags(name string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("fleetctl "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs, fs.String("dir", "fleet", "fleet directory")
}

func logger(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

func initCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs, dir := newFlags("init", stderr)
	name := fs.String("name", "", "fleet name (CA common name)")
	brokerURL := fs.String("broker", "mqtts://127.0.0.1:8883", "broker URL written into device bundles")
	hosts := fs.String("broker-hosts", "", "comma-separated names/addresses for the broker certificate (default: localhost,127.0.0.1,::1 and the broker URL's host)")
	validity := fs.Duration("device-validity", certs.DefaultDeviceValidity, "device certificate lifetime")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o := fleet.InitOptions{Name: *name, Broker: *brokerURL, DeviceValidity: *validity}
	if *hosts != "" {
		o.BrokerHosts = strings.Split(*hosts, ",")
	}
	f, err := fleet.Init(*dir, o)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "fleet %q created in %s\n  CA serial %s\n  key set version %d\n  broker %s\nMove %s off this machine once you have made any key sets you need.\n",
		f.Meta.Name, f.Dir, f.CA.Cert.SerialNumber.Text(16), f.KeySet().Version, f.Meta.Broker, filepath.Join(f.Dir, "offline"))
	return nil
}

func enrollCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs, dir := newFlags("enroll", stderr)
	csrPath := fs.String("csr", "", "device CSR (from camagent enroll --id)")
	out := fs.String("out", "", "where to write the device bundle (default <device-id>.bundle.json)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *csrPath == "" {
		return errors.New("enroll: --csr is required")
	}
	f, err := fleet.Open(*dir)
	if err != nil {
		return err
	}
	csr, err := os.ReadFile(*csrPath)
	if err != nil {
		return fmt.Errorf("enroll: %w", err)
	}
	b, c, err := f.Enroll(csr, time.Now())
	if err != nil {
		return err
	}
	path := *out
	if path == "" {
		path = certs.CertIdentity(c) + ".bundle.json"
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("enroll: %w", err)
	}
	fmt.Fprintf(stdout, "enrolled %s: certificate serial %s valid until %s; bundle written to %s\n",
		certs.CertIdentity(c), c.SerialNumber.Text(16), c.NotAfter.UTC().Format(time.RFC3339), path)
	return nil
}

func brokerCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, dir := newFlags("broker", stderr)
	listen := fs.String("listen", "", "listen address host:port (default: the fleet's broker URL)")
	data := fs.String("data", "", "persistence directory for sessions and retained messages (default <dir>/broker/data)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	f, err := fleet.Open(*dir)
	if err != nil {
		return err
	}
	addr := *listen
	if addr == "" {
		u, err := url.Parse(f.Meta.Broker)
		if err != nil {
			return fmt.Errorf("broker: %w", err)
		}
		addr = u.Host
	}
	if *data == "" {
		*data = filepath.Join(f.Dir, "broker", "data")
	}
	sc, err := f.ServerCertificate()
	if err != nil {
		return err
	}
	b, err := broker.New(broker.Config{
		Addr:    addr,
		TLS:     certs.ServerTLSConfig(f.Pool, sc),
		DataDir: *data,
		Logger:  logger(stderr),
	})
	if err != nil {
		return err
	}
	if err := b.Start(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "broker listening on %s (mTLS, fleet CA %q)\n", b.URL(), f.Meta.Name)
	<-ctx.Done()
	return b.Close()
}

func mosquittoCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs, dir := newFlags("mosquitto-config", stderr)
	out := fs.String("out", "mosquitto", "directory to write mosquitto.conf and acl into")
	port := fs.Int("port", 8883, "listener port")
	bind := fs.String("bind", "127.0.0.1", "listener address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	f, err := fleet.Open(*dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	ca, crt, key := f.ServerFiles()
	abs := func(p string) string { a, _ := filepath.Abs(p); return a }
	acl := filepath.Join(abs(*out), "acl")
	if err := os.WriteFile(acl, mosquitto.RenderACL([]string{"operator:" + fleet.DefaultOperator}), 0o644); err != nil {
		return err
	}
	conf := mosquitto.RenderConf(mosquitto.Conf{
		Bind: *bind, Port: *port,
		CAFile: abs(ca), CertFile: abs(crt), KeyFile: abs(key),
		ACLFile:        acl,
		PersistenceDir: filepath.Join(abs(*out), "data") + "/",
	})
	if err := os.WriteFile(filepath.Join(*out, "mosquitto.conf"), conf, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s and %s\n", filepath.Join(*out, "mosquitto.conf"), acl)
	return nil
}

func pingCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, dir := newFlags("ping", stderr)
	device := fs.String("device", "", "device id")
	count := fs.Int("count", 1, "number of pings")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for each reply")
	brokerURL := fs.String("broker", "", "broker URL (default: the fleet's)")
	wait := fs.Duration("wait", 0, "keep pinging every second until the device first answers, for at most this long (for a device that is still starting)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *device == "" {
		return errors.New("ping: --device is required")
	}
	f, err := fleet.Open(*dir)
	if err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, *timeout)
	op, err := f.Dial(dctx, fleet.OperatorOptions{Broker: *brokerURL})
	cancel()
	if err != nil {
		return err
	}
	defer op.Close()
	if *wait > 0 {
		if err := waitForReply(ctx, op, *device, *wait); err != nil {
			return err
		}
	}
	for i := 0; i < *count; i++ {
		pctx, cancel := context.WithTimeout(ctx, *timeout)
		r, rtt, err := op.Ping(pctx, *device)
		cancel()
		if err != nil {
			return err
		}
		s := r.Status
		fmt.Fprintf(stdout, "reply from %s: seq=%d time=%.2f ms fw=%s cert_serial=%s cert_not_after=%s keyset=%d uptime=%ds cmds_ok=%d cmds_rejected=%d\n",
			*device, r.Seq, float64(rtt.Microseconds())/1000, s.Firmware, s.CertSerial,
			time.Unix(s.CertNotAfter, 0).UTC().Format(time.RFC3339), s.KeySet, s.UptimeS, s.CmdsOK, s.CmdsRejected)
	}
	return nil
}

// waitForReply pings every second until device answers once or wait has passed.
func waitForReply(ctx context.Context, op *fleet.Operator, device string, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		_, _, err := op.Ping(pctx, device)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ping: %s did not answer within %s: %w", device, wait, err)
		}
	}
}
