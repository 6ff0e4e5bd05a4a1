package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/atomicfile"
	"github.com/camagent/camagent/internal/cappedfile"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/registry"
	"github.com/camagent/camagent/tools/fleetctl/signer"
	"github.com/camagent/camagent/transport/mqtt/broker"
	"github.com/camagent/camagent/transport/mqtt/mosquitto"
	"github.com/camagent/camagent/transport/mqtt/topic"
)

const usage = `usage: fleetctl <command> [flags]

commands:
  init              create a fleet: CA, offline root key, signing keys, key set, operator, signer and broker certificates
  enroll            sign a device's enrollment request (device and bootstrap CSRs) and write its bundle
  broker            run the embedded mTLS MQTT broker; it refuses revoked certificates at once
  mosquitto-config  write a Mosquitto configuration, ACL and CRL for the fleet
  serve             run the fleet's certificate signer (several instances share the load)
  rotate            make one device (--device ID) or every device (--all) rotate its credentials
  breach            breach response: every device rotates, every grant issued before is void
  status            rotation status of every enrolled device: counts and a per-device table
  keys rotate       make the next root-signed key set (needs the offline root key)
  crl               write the fleet's certificate revocation list
  check             look at the fleet directory and say what needs doing (expiries, revoked copies, a stale CRL, keys that should be offline)
  rollout resume    let the signer issue again after it aborted a rollout
  ping              send a signed ping to a device and print its reply and the round-trip time
  grant             sign a grant to watch one device's live video (for camview), valid until it expires or the next rotation
  retire            take devices out of the fleet for good (broken, sold, stolen): revoke them, refuse them new certificates, clear their retained state
  replace           give the operator or signer identity a new key and certificate and revoke every earlier one (a lost laptop, a broken-into signer host); broker: a new broker key and certificate, retired by keys rotate --retire-brokers
  viewer            sign the CSR of a camview that made its own key into its viewer bundle (camview --identity); --revoke NAME

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
		"serve":            serveCmd,
		"rotate":           rotateCmd,
		"retire":           retireCmd,
		"breach":           breachCmd,
		"status":           statusCmd,
		"keys":             keysCmd,
		"crl":              crlCmd,
		"rollout":          rolloutCmd,
		"ping":             pingCmd,
		"grant":            grantCmd,
		"viewer":           viewerCmd,
		"replace":          replaceCmd,
		"check":            checkCmd,
	}
	if c, ok := cmds[args[0]]; ok {
		err := c(ctx, args[1:], stdout, stderr)
		if errors.Is(err, flag.ErrHelp) {
			return nil // -h: the flag package printed the command's flags
		}
		return err
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

// subcommand returns the name of a two-word command's subcommand ("keys rotate") and the
// remaining arguments.
func subcommand(cmd string, args []string, subs ...string) (string, []string, error) {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return "", nil, fmt.Errorf("%s: want a subcommand: %s", cmd, strings.Join(subs, ", "))
	}
	for _, s := range subs {
		if args[0] == s {
			return s, args[1:], nil
		}
	}
	return "", nil, fmt.Errorf("%s: unknown subcommand %q; want %s", cmd, args[0], strings.Join(subs, ", "))
}

func initCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs, dir := newFlags("init", stderr)
	name := fs.String("name", "", "fleet name (CA common name)")
	brokerURL := fs.String("broker", "mqtts://127.0.0.1:8883", "broker URL written into device bundles")
	hosts := fs.String("broker-hosts", "", "comma-separated names/addresses for the broker certificate (default: localhost,127.0.0.1,::1 and the broker URL's host)")
	validity := fs.Duration("device-validity", certs.DefaultDeviceValidity, "device certificate lifetime")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *validity <= 0 || *validity%time.Second != 0 {
		return fmt.Errorf("init: --device-validity %v: want a positive whole number of seconds", *validity)
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
	csrPath := fs.String("csr", "", "the device's enrollment request: its device and bootstrap CSRs (from camagent enroll --id)")
	out := fs.String("out", "", "where to write the device bundle (default <device-id>.bundle.json)")
	reinstate := fs.Bool("reinstate", false, "enroll a device that was retired (fleetctl retire) again: a camera back from repair, with new keys")
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
	csr, err := cappedfile.Read(*csrPath, fleet.MaxEnrollmentSize)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("enroll: --csr: %w (camagent enroll --id writes device.csr in the camera's --state directory, /var/lib/camagent by default)", err)
	}
	if err != nil {
		return fmt.Errorf("enroll: %w", err)
	}
	defer f.Close()
	if *reinstate {
		id, err := fleet.EnrollmentDevice(csr)
		if err != nil {
			return err
		}
		was, err := f.Reinstate(id, time.Now())
		if err != nil {
			return err
		}
		if was {
			fmt.Fprintf(stdout, "reinstated %s: it was retired; its old certificates stay revoked\n", id)
		}
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
	fmt.Fprintf(stdout, "enrolled %s: certificate serial %s valid until %s, and its bootstrap identity; bundle written to %s\n",
		certs.CertIdentity(c), c.SerialNumber.Text(16), c.NotAfter.UTC().Format(time.RFC3339), path)
	fmt.Fprintf(stdout, "With Mosquitto, run fleetctl mosquitto-config again and send it SIGHUP so the ACL knows bootstrap:%s.\n", certs.CertIdentity(c))
	return nil
}

func brokerCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, dir := newFlags("broker", stderr)
	listen := fs.String("listen", "", "listen address host:port (default: the fleet's broker URL)")
	data := fs.String("data", "", "persistence directory for sessions and retained messages (default <dir>/broker/data)")
	poll := fs.Duration("revocation-poll", signer.DefaultEnforceInterval, "how often to look for newly revoked certificates, to cut their live sessions")
	connRate := fs.Float64("max-connect-rate", 0, "budget of new connections per second (TLS handshakes answered), shared fairly between source addresses; a connection whose turn would come more than 5 s later is closed and its client retries with backoff; 0: no limit")
	sessionExpiry := fs.Duration("session-expiry", broker.DefaultSessionExpiry, "how long the persistent session of a client that is away is kept, with what is queued for it; a device away longer subscribes again and converges from the retained desired state (whole seconds)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the broker to this file when it stops (SIGTERM or SIGINT), for go tool pprof")
	maxSessions := fs.Int("max-sessions-per-identity", broker.DefaultMaxSessionsPerIdentity, "sessions, connected or kept, one operator, signer, viewer or bootstrap identity may hold (a device holds one); negative: no cap")
	deviceLimit := publishLimitFlag(fs, "device-publish-limit", broker.DefaultDevicePublishLimit, "messages a second:burst each device and bootstrap identity may publish; over it a message is acknowledged and dropped; off: no limit")
	viewerLimit := publishLimitFlag(fs, "viewer-publish-limit", broker.DefaultViewerPublishLimit, "messages a second:burst each viewer relay may publish; off: no limit")
	floodCut := fs.Duration("publish-flood-cut", broker.DefaultPublishFloodCut, "disconnect a client still over its publish limit this long after its first dropped message; negative: never")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *maxSessions == 0 {
		return errors.New("broker: --max-sessions-per-identity 0 would refuse every operator: give at least 1, or a negative number for no cap")
	}
	if *floodCut == 0 {
		return errors.New("broker: --publish-flood-cut 0 would cut at the first dropped message: give a duration, or a negative one for never")
	}
	if *cpuProfile != "" {
		pf, err := os.Create(*cpuProfile)
		if err != nil {
			return fmt.Errorf("broker: %w", err)
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return fmt.Errorf("broker: %w", err)
		}
		defer pprof.StopCPUProfile()
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
	log := logger(stderr)
	reg, err := f.OpenRegistry(log)
	if err != nil {
		return err
	}
	defer reg.Close()
	// Revocations made before the broker starts are refused at CONNECT; the enforcer only
	// needs to cut sessions for the ones that come after.
	before := len(reg.Revocations())
	// The CRL is the revocations' second copy: a serial the log lost to damage stays refused.
	crl := signer.NewCRLFile(f.CRLPath(), f.CA.Cert, log)
	// The broker runs for months: its certificate is renewed while it runs (fleet.Refresh),
	// and each handshake presents the one in the holder.
	serverCert := certs.NewHolder(sc)
	tlsConf := certs.ServerTLSConfig(f.Pool, sc)
	tlsConf.Certificates, tlsConf.GetCertificate = nil, serverCert.GetCertificate
	rctx, stopRefresh := context.WithCancel(ctx)
	defer stopRefresh()
	go fleet.Refresh(rctx, fleet.CertificateRefresh, sc, f.ServerCertificate, serverCert.Set, log)
	b, err := broker.New(broker.Config{
		Addr:           addr,
		TLS:            tlsConf,
		DataDir:        *data,
		Revoked:        func(serial *big.Int) bool { return reg.Revoked(serial) || crl.Listed(serial) },
		Logger:         log,
		MaxConnectRate: *connRate,
		SessionExpiry:  *sessionExpiry,

		MaxSessionsPerIdentity: *maxSessions,
		DevicePublishLimit:     *deviceLimit,
		ViewerPublishLimit:     *viewerLimit,
		PublishFloodCut:        *floodCut,
	})
	if err != nil {
		return err
	}
	if err := b.Start(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "broker listening on %s (mTLS, fleet CA %q, %d revoked serials)\n", b.URL(), f.Meta.Name, before)
	// Revoked refuses a revoked certificate at CONNECT; the enforcer cuts the sessions that
	// were live when it was revoked. Its passes over the registry are the watchdog's sign of
	// life: a broker that cannot read revocations any more should be restarted.
	enf := &signer.Enforcer{Registry: reg, Broker: b, From: before, Interval: *poll, Logger: log}
	svc := newService(ctx, log)
	svc.notify("READY=1")
	svc.status("listening on %s", b.URL())
	go svc.watchdog(ctx, enf.Alive)
	err = enf.Run(ctx)
	svc.notify("STOPPING=1")
	err = errors.Join(err, b.Close())
	if *connRate > 0 {
		fmt.Fprintf(stdout, "broker stopped: most connections admitted in one second %d (budget %g a second); closed over the budget %d, of which turns taken by a source that weighed less %d; closed before their TLS ClientHello, too many waiting for one %d; gone before their turn, the turn passed on %d\n",
			b.PeakAdmitted(), *connRate, b.Throttled(), b.TakenTurns(), b.RefusedEarly(), b.SkippedGone())
	}
	if n, c, r := b.PublishesDropped(), b.FloodCuts(), b.SessionsRefused(); n+c+r > 0 {
		fmt.Fprintf(stdout, "broker stopped: publishes dropped over a client's limit %d; clients cut for flooding %d; sessions refused over an identity's cap %d\n", n, c, r)
	}
	return err
}

// publishLimitFlag defines a flag RATE:BURST (or "off") for a broker.PublishLimit.
func publishLimitFlag(fs *flag.FlagSet, name string, def broker.PublishLimit, usage string) *broker.PublishLimit {
	l := def
	fs.Func(name, fmt.Sprintf("%s (default %g:%d)", usage, def.Rate, def.Burst), func(s string) error {
		if s == "off" {
			l = broker.PublishLimit{Rate: -1}
			return nil
		}
		r, b, ok := strings.Cut(s, ":")
		rate, rerr := strconv.ParseFloat(r, 64)
		burst, berr := strconv.Atoi(b)
		if !ok || rerr != nil || berr != nil || rate <= 0 || burst < 1 || math.IsInf(rate, 0) {
			return fmt.Errorf("want RATE:BURST (a positive rate a second, a burst of at least 1), or off; got %q", s)
		}
		l = broker.PublishLimit{Rate: rate, Burst: burst}
		return nil
	})
	return &l
}

func mosquittoCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs, dir := newFlags("mosquitto-config", stderr)
	out := fs.String("out", "mosquitto", "directory to write mosquitto.conf, acl and openssl.cnf into")
	port := fs.Int("port", 8883, "listener port")
	bind := fs.String("bind", "127.0.0.1", "listener address")
	sessionExpiry := fs.Duration("session-expiry", mosquitto.DefaultSessionExpiry, "persistent_client_expiration: how long Mosquitto keeps the persistent session of a client that is away, with what is queued for it (whole hours)")
	user := fs.String("user", "", "account Mosquitto runs as when started as root (it must be able to read the broker key and the CRL in the fleet directory); empty: Mosquitto's default, mosquitto")
	viewers := []string{fleet.DefaultViewer}
	fs.Func("viewer", "name of a viewer relay identity (camview --name) to allow besides "+fleet.DefaultViewer+" and those the fleet has issued; repeatable", func(n string) error {
		if _, _, err := certs.ParseIdentity("viewer:" + n); err != nil {
			return err
		}
		viewers = append(viewers, n)
		return nil
	})
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
	reg, err := f.OpenRegistry(logger(stderr))
	if err != nil {
		return err
	}
	defer reg.Close()
	// Mosquitto has no roles: every non-device identity needs its own user block, including
	// each device's bootstrap identity.
	identities := []string{"operator:" + fleet.DefaultOperator, "signer:" + fleet.DefaultSigner}
	issued, err := f.ViewerNames()
	if err != nil {
		return err
	}
	for _, n := range append(viewers, issued...) {
		identities = append(identities, "viewer:"+n)
	}
	for _, id := range reg.Devices() {
		for _, c := range reg.DeviceCerts(id) {
			if c.Role == certs.RoleBootstrap && !c.IsRevoked() {
				identities = append(identities, "bootstrap:"+id)
				break
			}
		}
	}
	// Mosquitto refuses to start without its crlfile, and reads it only then: write a fresh
	// one now, under the registry lock so a signer's newer one is not overwritten.
	var w signer.CRLWritten
	if err := reg.Update(func(tx *registry.Tx) (err error) {
		w, err = signer.WriteCRL(f.CRLPath(), f.CA, tx, time.Now())
		return err
	}); err != nil {
		return err
	}
	w.Log(logger(stderr), f.CRLPath())
	// Renew the broker's certificate first if it is due: Mosquitto reads the files again on
	// SIGHUP, so running this command now and then (and sending SIGHUP) keeps it valid.
	if _, err := f.ServerCertificate(); err != nil {
		return err
	}
	ca, crt, key := f.ServerFiles()
	abs := func(p string) string { a, _ := filepath.Abs(p); return a }
	acl := filepath.Join(abs(*out), "acl")
	// Atomically: Mosquitto reads both again on SIGHUP, and a half-written ACL would lock
	// identities out until this command ran again.
	if err := atomicfile.WriteFile(acl, mosquitto.RenderACL(identities), 0o644); err != nil {
		return err
	}
	mc := mosquitto.Conf{
		Bind: *bind, Port: *port,
		CAFile: abs(ca), CertFile: abs(crt), KeyFile: abs(key),
		CRLFile:        abs(f.CRLPath()),
		ACLFile:        acl,
		PersistenceDir: filepath.Join(abs(*out), "data") + "/",
		User:           *user,
		SessionExpiry:  *sessionExpiry,
	}
	if err := mc.Validate(); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(*out, "mosquitto.conf"), mosquitto.RenderConf(mc), 0o644); err != nil {
		return err
	}
	osslConf := filepath.Join(abs(*out), mosquitto.OpenSSLConfFile)
	if err := atomicfile.WriteFile(osslConf, mosquitto.RenderOpenSSLConf(), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s and %s (%d identities besides devices); crlfile %s\n", filepath.Join(*out, "mosquitto.conf"), acl, len(identities), abs(f.CRLPath()))
	fmt.Fprintf(stdout, "Run Mosquitto with OPENSSL_CONF=%s (systemd: Environment=OPENSSL_CONF=%s): no TLS session tickets, which no fleet client uses and which cost a third of every handshake.\n", osslConf, osslConf)
	fmt.Fprintln(stdout, "Mosquitto reads the CRL only when it starts (SIGHUP reloads the ACL and certificates, not the CRL): restart it after revocations.")
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
	if err := certs.ValidDeviceID(*device); err != nil {
		return fmt.Errorf("ping: --device: %w", err)
	}
	// As rotate and breach do: a copy of the fleet directory whose signing keys the devices no
	// longer trust (a key set rotated elsewhere) would send a ping every device refuses. Only
	// the desired state that may carry a newer key set is read (the fleet-wide one on the
	// device's shard, as the device reads it), not the whole fleet's state.
	st, err := readRetained(ctx, f, operatorFlags{broker: brokerURL, timeout: timeout}, stderr,
		[]string{topic.FleetDesired(topic.FleetShard(*device)), topic.DeviceDesired(*device)}, false)
	if err != nil {
		return err
	}
	op := st.op
	defer op.Close()
	if st.staleKeys != nil {
		return fmt.Errorf("ping: %w; nothing was sent", st.staleKeys)
	}
	if *wait > 0 {
		if err := waitForReply(ctx, op, *device, *wait); err != nil {
			return err
		}
	}
	for i := 0; i < *count; i++ {
		pctx, cancel := context.WithTimeout(ctx, *timeout)
		r, rtt, err := op.Ping(pctx, *device)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return fmt.Errorf("ping: %s did not answer within %s (--timeout): it is off or cannot reach the broker; fleetctl status --dir %s shows when it last published its state (%w)", *device, *timeout, *dir, err)
		}
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
