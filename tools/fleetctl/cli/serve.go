package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/signer"
)

func serveCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, dir := newFlags("serve", stderr)
	name := fs.String("name", "default", "this signer instance's name: its MQTT client id and persistent session; give each instance its own")
	brokerURL := fs.String("broker", "", "broker URL (default: the fleet's)")
	maxRate := fs.Float64("max-rate", 0, "new certificates per minute across every signer of the fleet (0: no limit); beyond it devices are told rate_limited and retry")
	burst := fs.Int("burst", 0, "certificates that may be issued at once (0: ten seconds' worth of --max-rate)")
	maxPending := fs.Int("max-pending", signer.DefaultMaxPending, "certificates issued and not yet confirmed, across every signer of the fleet, beyond which requests wait for a confirmation (a window of rotations in progress: it bounds the reconnections the broker takes at once); -1: no cap")
	abortRatio := fs.Float64("abort-ratio", 0, "abort the rollout when more than this share (0..1) of certificates is not confirmed in time (0: never)")
	abortMin := fs.Int("abort-min", signer.DefaultAbortMin, "certificates issued before --abort-ratio is looked at")
	confirmTimeout := fs.Duration("confirm-timeout", signer.DefaultConfirmTimeout, "how long a device has to confirm its new certificate")
	abortWindow := fs.Duration("abort-window", signer.DefaultAbortWindow, "how far back certificates count towards --abort-ratio")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	retire := fs.Bool("retire", false, "do not serve: discard this instance's persistent session on the broker (and the requests queued in it), for an instance taken out of service for good")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *maxPending == 0 || *maxPending < -1 {
		return fmt.Errorf("serve: --max-pending %d: want a positive count, or -1 for no cap", *maxPending)
	}
	// Flags that would be silently dropped: an operator setting them means something.
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["burst"] && *maxRate == 0 {
		return fmt.Errorf("serve: --burst %d without --max-rate: the burst is of a rate limit, and there is none", *burst)
	}
	if set["abort-min"] && *abortMin < 1 {
		return fmt.Errorf("serve: --abort-min %d: want at least 1 certificate", *abortMin)
	}
	if (set["abort-min"] || set["abort-window"]) && *abortRatio == 0 {
		return fmt.Errorf("serve: --abort-min and --abort-window shape the abort threshold, and there is none: give --abort-ratio too")
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("serve: --log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv}))
	f, err := fleet.Open(*dir)
	if err != nil {
		return err
	}
	if !f.HasCAKey() && !*retire {
		return fmt.Errorf("serve: the signer issues certificates and needs the fleet CA's key, and %s holds no ca.key", f.Dir)
	}
	broker := *brokerURL
	if broker == "" {
		broker = f.Meta.Broker
	}
	host, err := certs.BrokerHost(broker)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	cert, err := f.SignerCertificate()
	if err != nil {
		return err
	}
	if !wire.SignerNameRe.MatchString(*name) {
		return fmt.Errorf("serve: --name %q: letters, digits, '.', '_' and '-', at most 64", *name)
	}
	identity := certs.CertIdentity(cert.Leaf)
	clientID := fleet.SignerClientID(identity, *name)
	holder := certs.NewHolder(cert)
	tlsConf := certs.ClientTLSConfig(f.Pool, host, holder)
	// Each connection presents the certificate the fleet directory holds then: one renewed,
	// or replaced after a break-in (fleetctl replace signer), is used from the next one on.
	tlsConf.GetClientCertificate = fleet.LoadAtHandshake(holder, f.SignerCertificate, log)
	// The signer refuses a broker certificate the key set in force retired, as devices do; a
	// set put in force later applies from the next connection, and watchBrokerFloor makes one.
	guard := f.NewBrokerGuard()
	tlsConf.VerifyConnection = guard.VerifyConnection
	if *retire {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := signer.Retire(rctx, broker, clientID, tlsConf, log); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "signer %q retired: the broker discarded session %s\n", *name, clientID)
		return nil
	}
	// A second `fleetctl serve` of one name (the README's, while fleetctl-signer@default runs)
	// would take the session of the first over, and the first this one's, without end.
	unlock, err := f.LockSignerInstance(*name)
	if errors.Is(err, fleet.ErrSignerRunning) {
		return fmt.Errorf("serve: %w: two instances of one name take each other's broker session over in turn; leave that one serving (systemctl status fleetctl-signer@%s, if it is the service), or give this one another --name", err, *name)
	}
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	defer unlock()
	reg, err := f.OpenRegistry(log)
	if err != nil {
		return err
	}
	defer reg.Close()
	if st, err := signer.LoadRollout(f.RolloutPath()); err != nil {
		return err
	} else if st.Aborted {
		log.Error("serve: the rollout is aborted; no new certificates until fleetctl rollout resume", "reason", st.Reason)
	}
	s, err := signer.New(signer.Config{
		CA:             f.CA,
		Registry:       reg,
		RolloutPath:    f.RolloutPath(),
		CRLPath:        f.CRLPath(),
		Validity:       f.DeviceValidity(),
		BrokerURL:      broker,
		ClientID:       clientID,
		TLS:            tlsConf,
		MinBackoff:     100 * time.Millisecond,
		MaxBackoff:     10 * time.Second,
		MaxRate:        *maxRate,
		Burst:          *burst,
		MaxPending:     *maxPending,
		AbortRatio:     *abortRatio,
		AbortMin:       *abortMin,
		ConfirmTimeout: *confirmTimeout,
		AbortWindow:    *abortWindow,
		Name:           *name,
		Logger:         log.With("signer", *name),
	})
	if err != nil {
		return err
	}
	// Under systemd: ready once set up, whether or not the broker answers yet (Restart=always
	// would only retry what the signer retries by itself); the status says which.
	svc := newService(ctx, log)
	svc.notify("READY=1")
	svc.status("connecting to %s", broker)
	go svc.watchdog(ctx, s.Alive)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	go func() {
		<-ctx.Done()
		svc.notify("STOPPING=1")
	}()
	// The signer runs for months; its certificate lasts 90 days. The next connection presents
	// the renewed one.
	rctx, stopRefresh := context.WithCancel(ctx)
	defer stopRefresh()
	go fleet.Refresh(rctx, fleet.CertificateRefresh, cert, f.SignerCertificate, holder.Set, log)
	go watchBrokerFloor(rctx, guard, keySetRefresh, s.Reconnect, log)
	// WaitConnected returns once connected, or when ctx ends or Run returns.
	if s.WaitConnected(ctx) == nil {
		fmt.Fprintf(stdout, "signer %q serving %s as %s (client id %s)\n", *name, broker, identity, clientID)
		svc.status("serving %s as %s (client id %s)", broker, identity, clientID)
	}
	return <-done
}

// keySetRefresh is how often fleetctl serve reads the fleet directory's key set in force again,
// for a broker floor raised while it runs.
var keySetRefresh = time.Minute

// watchBrokerFloor reads the key set in force again every interval until ctx is done and, when
// a newer one retires the broker certificate of the live connection, logs it and calls
// reconnect: the next handshake then refuses that broker, until it presents a certificate the
// set accepts.
func watchBrokerFloor(ctx context.Context, g *fleet.BrokerGuard, interval time.Duration, reconnect func(), log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		retired, err := g.Reload()
		if err != nil {
			log.Error("serve: cannot read the key set in force again; keeping the broker floor held", "err", err)
			continue
		}
		if retired {
			log.Error("serve: the key set put in force retires the certificate of the broker this signer is connected to; reconnecting, and refusing that broker until it presents its new certificate", "serial", g.Presented().SerialNumber.Text(16))
			reconnect()
		}
	}
}
