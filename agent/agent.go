package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/camagent/camagent/agent/privacy/egress"
	"github.com/camagent/camagent/agent/privacy/seal"
	"github.com/camagent/camagent/agent/state"
	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/device/camera"
	"github.com/camagent/camagent/internal/clock"
	"github.com/camagent/camagent/transport/mqtt"
	"github.com/camagent/camagent/transport/mqtt/topic"
	"github.com/camagent/camagent/transport/webrtc/signal"
)

// Config configures an Agent. Defaults are applied by New.
type Config struct {
	// StateDir holds the device key, bundle and state (0700). Required.
	StateDir string
	// BrokerURL overrides the bundle's broker (mqtts://host:port); "" uses the bundle's.
	BrokerURL string
	// Firmware is the version string the device reports; "" means "dev".
	Firmware string
	// BuildTime is a time the device's clock has certainly passed (the binary's build time);
	// a clock below it is known to be wrong. Zero means no such floor.
	BuildTime time.Time
	// ClockRetry is how often a clock known to be behind is looked at again; 0 means 15s.
	ClockRetry time.Duration
	// ClockSynchronized reports whether the system says its clock is synchronised (NTP, the
	// kernel's STA_UNSYNC clear). A synchronised clock below the persisted time floor means
	// the floor was saved while the clock ran ahead (a wrong RTC, a time set by hand): the
	// clock wins and the floor comes down, rather than the device waiting, unable to connect,
	// until real time catches up with a mistake. It is asked only then, every ClockRetry. Nil
	// means the agent cannot tell, and the floor holds.
	ClockSynchronized func() bool
	// TimeFloorInterval is how often the time floor is persisted while running; 0 means 1h.
	TimeFloorInterval time.Duration
	// MinBackoff, MaxBackoff and KeepAlive tune the MQTT session; 0 means transport/mqtt's
	// defaults (sized for a large fleet).
	MinBackoff, MaxBackoff, KeepAlive time.Duration
	// LocalAddr is the local address of every connection the agent makes to the broker, its
	// own and the bootstrap identity's (transport/mqtt Config.LocalAddr). The zero value lets
	// the system choose, as a camera should; it is for simulations, where many agents share one
	// host and each is given an address of its own.
	LocalAddr netip.Addr
	// RequestTimeout is how long a rotation waits for the signer's certificate; 0 means 30s.
	RequestTimeout time.Duration
	// SwitchTimeout is how long a rotation waits to connect with its new certificate before it
	// falls back to the old one; 0 means 30s.
	SwitchTimeout time.Duration
	// RetryMin and RetryMax bound the jittered backoff between failed rotation attempts;
	// 0 means 2s and 5min.
	RetryMin, RetryMax time.Duration
	// RenewJitter is the spread of scheduled renewal around two thirds of the certificate's
	// lifetime, as a fraction of the lifetime; 0 means 0.05.
	RenewJitter float64
	// AuthFailuresBeforeBootstrap is how many consecutive refusals of the device's certificate
	// by the broker make the agent recover through its bootstrap identity; 0 means 3.
	AuthFailuresBeforeBootstrap int
	// Video is the camera's H.264 source, shared by every viewer; nil means the agent serves
	// no video.
	Video camera.Source
	// MaxViewers caps live viewers; 0 means transport/webrtc's default.
	MaxViewers int
	// VideoLoopbackOnly confines ICE to 127.0.0.1, for tests and single-machine demos.
	VideoLoopbackOnly bool
	// VideoICEServers are STUN and TURN servers the camera uses for every viewer, besides
	// those each offer brings (transport/webrtc Config.ICEServers); nil means none. TURN
	// credentials here are secret and never logged.
	VideoICEServers []signal.ICEServer
	// VideoRelayOnly makes the camera use relayed candidates only, through VideoICEServers'
	// TURN servers or the offer's (transport/webrtc Config.RelayOnly); offers for which
	// neither has a TURN server are refused.
	VideoRelayOnly bool
	// VideoOwnICEServersOnly ignores the ICE servers offers name and uses VideoICEServers
	// alone (transport/webrtc Config.OwnICEServersOnly): with VideoRelayOnly, no TURN server
	// but the operator's own learns the camera's address.
	VideoOwnICEServersOnly bool
	// Guard is the egress guard every publish passes through (P3): it holds the device's
	// sensitive values and refuses a message carrying one. Nil means the agent makes one from
	// the settings sealed in StateDir (LoadPrivacy). The CLI makes it first, to redact its
	// logs with it too.
	Guard *egress.Guard
	// TelemetryInterval is how often the agent publishes telemetry while connected; 0 means
	// 5 minutes, negative means never.
	TelemetryInterval time.Duration
	// AfterStep, if set, is called after each durable step of a rotation with the step's name
	// (one of the Step constants). It exists for fault injection: the crash tests kill the
	// process there. Nil in production.
	AfterStep func(step string)
	// Clock is the time source; nil means the system clock.
	Clock clock.Clock
	// Logger receives the agent's logs; nil means slog.Default().
	Logger *slog.Logger
}

// Publisher is what the agent needs to send a message: the MQTT client, or a guard wrapping it.
type Publisher interface {
	Publish(ctx context.Context, topic string, qos byte, retained bool, payload []byte) error
}

// Agent is the device daemon. Create it with New and start it with Run.
type Agent struct {
	cfg    Config
	log    *slog.Logger
	clk    clock.Clock
	id     *identity
	holder *certs.Holder
	store  state.Store
	start  time.Time

	mu       sync.Mutex
	st       state.State
	verifier *certs.Verifier // command and desired-state keys
	// applied holds, per desired-state topic, the last document applied and the verifier it
	// was checked with: the broker delivers the retained copy again on every connect, and the
	// same bytes under the same keys need no second signature check.
	applied    map[string]appliedDesired
	grants     *certs.Verifier // grant keys
	keySet     uint64
	active     *credential // the generation in use
	next       *credential // the generation a rotation is making, or nil
	rotStatus  string      // wire.Rotation* value
	committed  time.Time   // when (by the device clock) this run last committed a rotation
	lastError  string      // wire.ErrCode* value of the last failed rotation step
	epochHook  []func(epoch uint64)
	commitHook []func(epoch uint64) // OnCommit
	// grantEpoch is the grant epoch the hooks last ran for (or the one at start): see
	// GrantEpoch.
	grantEpoch uint64
	// brokers is the broker floor of the key set in force (set with keySet), applied in the
	// handshakes of the operational and the bootstrap connection.
	brokers certs.BrokerFloor

	replies replyCache // replies of recent commands, to send again when lost
	stateMu sync.Mutex // one device-state publish at a time, so the newest arrives last
	guard   *egress.Guard
	privMu  sync.Mutex // serialises privacy changes and claim forwarding
	// privacyUnsaved is privacy mode turned on that could not be saved (a full or failing
	// disk): on all the same, until it is saved or turned off. Guarded by mu.
	privacyUnsaved bool
	secret         *seal.Secret   // nil when never onboarded
	settings       *seal.Settings // nil when never onboarded; guarded by privMu

	client       *mqtt.Client // set by Run
	pub          atomic.Pointer[publisherBox]
	cmdsOK       atomic.Uint64
	cmdsRejected atomic.Uint64
	authFails    atomic.Int32
	connected    chan struct{} // closed at the first successful connect
	connOnce     sync.Once
	provenOnce   sync.Once               // brokerProven
	brokerWon    atomic.Pointer[string]  // the disputed bundle's broker that took a connection
	video        atomic.Pointer[video]   // set by Run when Config.Video is set
	connEv       chan string             // serial of each new connection's certificate
	certResp     chan *wire.CertResponse // signer answers
	wake         chan struct{}           // pokes the reconcile loop
	rotations    atomic.Uint64           // committed rotations, for tests and status
	certV        certVersion             // the reconcile loop's only

	// For Status and Alive (health.go).
	running     atomic.Bool                 // Run has started and not returned
	clockBehind atomic.Bool                 // Run waits for a plausible clock
	mqttc       atomic.Pointer[mqtt.Client] // the client of the running Run
	bootc       atomic.Pointer[mqtt.Client] // the client of the bootstrap session under way, if any
	beat        chan struct{}               // Alive's heartbeat; the waiting loops take it
	busySince   atomic.Int64                // Unix ns a rotation attempt started; 0: none running
}

type publisherBox struct{ Publisher }

// appliedDesired is a desired-state document the agent verified and applied.
type appliedDesired struct {
	payload  []byte
	verifier *certs.Verifier
}

// New loads the device's identity and state from cfg.StateDir. A corrupt state file is
// quarantined and replaced with safe values (the command high-water mark jumps to now, so no
// command issued before can be replayed); New fails only when the device is not enrolled or its
// files are unusable.
func New(cfg Config) (*Agent, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("agent: Config.StateDir is required")
	}
	if cfg.Firmware == "" {
		cfg.Firmware = "dev"
	}
	if cfg.ClockRetry == 0 {
		cfg.ClockRetry = 15 * time.Second
	}
	if cfg.TimeFloorInterval == 0 {
		cfg.TimeFloorInterval = time.Hour
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 30 * time.Second
	}
	if cfg.SwitchTimeout == 0 {
		cfg.SwitchTimeout = 30 * time.Second
	}
	if cfg.RetryMin == 0 {
		cfg.RetryMin = 2 * time.Second
	}
	if cfg.RetryMax == 0 {
		cfg.RetryMax = 5 * time.Minute
	}
	if cfg.RenewJitter == 0 {
		cfg.RenewJitter = 0.05
	}
	if cfg.AuthFailuresBeforeBootstrap == 0 {
		cfg.AuthFailuresBeforeBootstrap = 3
	}
	if cfg.TelemetryInterval == 0 {
		cfg.TelemetryInterval = 5 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	id, err := loadIdentity(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	if cfg.BrokerURL != "" {
		if _, err := certs.BrokerHost(cfg.BrokerURL); err != nil {
			return nil, fmt.Errorf("agent: Config.BrokerURL: %w", err)
		}
	}
	if err := mqtt.CheckLocalAddr(cfg.LocalAddr); err != nil {
		return nil, fmt.Errorf("agent: Config.LocalAddr: %w", err)
	}
	a := &Agent{
		cfg:       cfg,
		log:       cfg.Logger.With("device", id.bundle.Bundle.DeviceID),
		clk:       cfg.Clock,
		id:        id,
		holder:    new(certs.Holder),
		store:     state.NewFileStore(filepath.Join(cfg.StateDir, StateFile), cfg.Clock.Now),
		start:     cfg.Clock.Now(),
		rotStatus: wire.RotationIdle,
		connected: make(chan struct{}),
		connEv:    make(chan string, 16),
		certResp:  make(chan *wire.CertResponse, 8),
		wake:      make(chan struct{}, 1),
		beat:      make(chan struct{}),
	}
	a.repairBundle()
	st, err := a.store.Load()
	var ce *state.CorruptError
	corrupt := errors.As(err, &ce)
	marked := privacyMarked(cfg.StateDir)
	lost := err == nil && stateLost(cfg.StateDir)
	orphaned := err == nil && !lost && journalOrphaned(cfg.StateDir, st)
	switch {
	case corrupt || lost || orphaned:
		// Recover with values that cannot be abused: no command sequence below now (fleetctl
		// sequences are Unix nanoseconds) is accepted again, and the credentials on disk
		// that still load make the journal (recoverCred).
		was := st
		st = state.State{CommandHWM: uint64(max(cfg.Clock.Now().UnixNano(), 0)), Cred: a.recoverCred()}
		switch {
		case lost:
			a.log.Error("state file is gone, though the device wrote it before; recovered", "active_generation", st.Cred.Active, "phase", st.Cred.Phase, "next_generation", st.Cred.Next)
		case orphaned:
			a.log.Error("the state file names an active generation that is not on disk; recovered from the generations that are", "named", was.Cred.Active, "active_generation", st.Cred.Active, "phase", st.Cred.Phase, "next_generation", st.Cred.Next)
		default:
			a.log.Error("state file was corrupt; quarantined it and recovered", "quarantined", ce.Quarantined, "err", ce.Err, "active_generation", st.Cred.Active, "phase", st.Cred.Phase, "next_generation", st.Cred.Next)
			was.Privacy = ce.Privacy
		}
		// Privacy mode the owner turned on stays on: a damaged value elsewhere in the file,
		// or a file gone or moved aside whole, must not make the camera stream again.
		st.Privacy = was.Privacy || marked
		// Grants from before the last breach stay void, and its dropped keys untrusted.
		a.recoverFloor(&st)
		if err := a.store.Save(st); err != nil {
			// A full or failing disk. The corrupt file stays where it is (state.Store), so the
			// next start recovers the same way; failing here instead would keep the camera off
			// line, restarting, for as long as the disk stays full.
			a.log.Error("could not save the recovered state; running on it, and the next start recovers again", "err", err)
		}
	case err != nil:
		return nil, fmt.Errorf("agent: %w", err)
	default:
		a.keepFloor(st) // a state written before the floor file was
		if marked && !st.Privacy {
			// Killed between saving "off" and removing the marker, or the marker of a
			// camera rolled back to an agent without it: on is the safe side.
			a.log.Warn("privacy mode marker present though the state says off; privacy mode stays on until it is turned off", "file", PrivacyMarkerFile)
			st.Privacy = true
		}
	}
	if st.Privacy && !marked {
		// A state from before the marker, or a marker lost: write it now.
		if err := markPrivacy(cfg.StateDir); err != nil {
			a.log.Error("privacy mode is on, but its marker could not be written", "file", PrivacyMarkerFile, "err", err)
		}
	}
	a.st = st
	a.grantEpoch = a.grantEpochLocked()
	var se *SettingsError
	a.secret, a.settings, err = loadSettings(cfg.StateDir, true)
	switch {
	case errors.As(err, &se):
		a.log.Error("the sealed settings cannot be used; running without them: the egress guard knows no network name, passphrase or nickname and no claim token is forwarded until the camera is onboarded again",
			"wiped", se.Wiped, "err", se.Err)
	case err != nil:
		return nil, err
	}
	a.guard = cfg.Guard
	if a.guard == nil {
		a.guard = egress.New()
		if a.settings != nil {
			setGuard(a.guard, *a.settings)
		}
	}
	if err := a.loadKeySet(); err != nil {
		return nil, err
	}
	if err := a.loadCredentials(); err != nil {
		return nil, err
	}
	return a, nil
}

// DeviceID returns the device's id.
func (a *Agent) DeviceID() string { return a.id.bundle.Bundle.DeviceID }

// Certificate returns the client certificate currently presented to the broker.
func (a *Agent) Certificate() *x509.Certificate { return a.holder.Get().Leaf }

// Epoch returns the device's credential and grant epoch.
func (a *Agent) Epoch() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st.Cred.Epoch
}

// Rotations returns how many rotations this agent committed since it started.
func (a *Agent) Rotations() uint64 { return a.rotations.Load() }

// OnCommit registers f to run after each committed rotation, with the credential epoch it
// reached (Epoch), on the rotation's goroutine: the moment the device holds its new key,
// certificate and token for good. Fleet tooling that counts converged devices uses it; a
// breach notice alone raises the grant epoch (OnEpoch) long before. Register before Run.
func (a *Agent) OnCommit(f func(epoch uint64)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.commitHook = append(a.commitHook, f)
}

// OnEpoch registers f to run after each rise of the grant epoch (GrantEpoch), on the goroutine
// that raised it: the one that applied a desired state, or the rotation's; the video layer
// closes every live viewer session there (S7). It is not a rotation's commit (OnCommit): a
// breach notice raises the grant epoch as soon as the device has it. Register before Run.
func (a *Agent) OnEpoch(f func(epoch uint64)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.epochHook = append(a.epochHook, f)
}

// GrantEpoch returns the epoch below which grants are refused: the higher of the device's
// credential epoch and the epoch an accepted desired state asked for. A breach notice voids
// the grants issued before it as soon as the device has it, not once its rotation commits,
// which a signer that is down or a rollout's rate limit can delay for hours; grants issued
// since (fleetctl grant signs at the epoch the device is told to reach) are honoured already.
func (a *Agent) GrantEpoch() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.grantEpochLocked()
}

func (a *Agent) grantEpochLocked() uint64 { return max(a.st.Cred.Epoch, a.st.DesiredEpoch) }

// raiseGrantEpoch runs the OnEpoch hooks if the grant epoch rose since they last ran.
func (a *Agent) raiseGrantEpoch() {
	a.mu.Lock()
	g := a.grantEpochLocked()
	if g <= a.grantEpoch {
		a.mu.Unlock()
		return
	}
	a.grantEpoch = g
	hooks := slices.Clone(a.epochHook)
	a.mu.Unlock()
	a.log.Info("grant epoch raised: grants from earlier epochs are refused and live viewers closed", "grant_epoch", g)
	for _, h := range hooks {
		h(g)
	}
}

// Connected returns a channel closed once the agent has connected to the broker.
func (a *Agent) Connected() <-chan struct{} { return a.connected }

func (a *Agent) brokerURL() string {
	if a.cfg.BrokerURL != "" {
		return a.cfg.BrokerURL
	}
	return a.id.bundle.Bundle.Broker
}

// Run waits for a plausible clock, then holds the MQTT session and serves commands until ctx
// is cancelled. It returns nil on cancel; it does not return on broker or network errors, which
// it logs and retries with backoff.
func (a *Agent) Run(ctx context.Context) error {
	a.running.Store(true)
	defer a.running.Store(false)
	if !a.waitForClock(ctx) {
		return nil
	}
	broker, fallbacks, err := a.brokerURLs()
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	// ServerName "": each address is verified under its own host.
	tlsConf := certs.ClientTLSConfig(a.id.bundle.Pool, "", a.holder)
	tlsConf.Time = a.clk.Now
	tlsConf.VerifyConnection = a.brokers.VerifyConnection
	id := a.DeviceID()
	client, err := mqtt.New(mqtt.Config{
		BrokerURL:          broker,
		FallbackBrokerURLs: fallbacks,
		ClientID:           id,
		TLS:                tlsConf,
		CleanSession:       false,
		Subscriptions: []mqtt.Subscription{
			{Filter: topic.DeviceDownFilter(id), QoS: 1},
			{Filter: topic.FleetDownFilter(topic.FleetShard(id)), QoS: 1},
		},
		Handler:        a.handleMessage,
		OnConnect:      a.onConnect,
		OnConnectError: a.onConnectError,
		MinBackoff:     a.cfg.MinBackoff,
		MaxBackoff:     a.cfg.MaxBackoff,
		KeepAlive:      a.cfg.KeepAlive,
		LocalAddr:      a.cfg.LocalAddr,
		Logger:         a.log,
	})
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	a.client = client
	a.mqttc.Store(client)
	a.pub.Store(&publisherBox{egress.Wrap(client, a.guard)})

	var wg sync.WaitGroup
	videoDone := make(chan struct{})
	if a.cfg.Video != nil {
		v, err := a.startVideo(ctx)
		if err != nil {
			return fmt.Errorf("agent: video: %w", err)
		}
		a.video.Store(v)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(videoDone)
			if err := v.s.Run(ctx); err != nil && ctx.Err() == nil {
				a.log.Error("video stopped", "err", err)
			}
			v.wg.Wait()
		}()
	} else {
		close(videoDone)
	}
	// The broker connection outlives ctx until the video sessions have ended, for at most
	// shutdownGrace: their byes ("shutdown") reach the viewers, who otherwise see the
	// connection go quiet and fail seconds later.
	clientCtx, stopClient := context.WithCancel(context.WithoutCancel(ctx))
	defer stopClient()
	clientDone := make(chan struct{})
	defer close(clientDone)
	go func() {
		select {
		case <-ctx.Done():
		case <-clientDone:
			return
		}
		t := time.NewTimer(shutdownGrace)
		defer t.Stop()
		select {
		case <-videoDone:
		case <-t.C:
		case <-clientDone:
		}
		stopClient()
	}()
	wg.Add(3)
	go func() {
		defer wg.Done()
		a.timeFloorLoop(ctx)
	}()
	go func() {
		defer wg.Done()
		a.telemetryLoop(ctx)
	}()
	go func() {
		defer wg.Done()
		a.reconcile(ctx)
	}()
	err = client.Run(clientCtx)
	stopClient() // when the client ended on its own
	wg.Wait()
	a.raiseTimeFloor()
	return err
}

// shutdownGrace bounds how long a stopping agent keeps its broker connection for the byes of
// its video sessions.
const shutdownGrace = 2 * time.Second

// waitForClock blocks while the clock is below the certificate's NotBefore, the persisted time
// floor or the build time (a Raspberry Pi boots with no RTC, R5). It says why, looks again every
// ClockRetry, and returns false if ctx ends first. It answers Alive meanwhile.
func (a *Agent) waitForClock(ctx context.Context) bool {
	defer a.clockBehind.Store(false)
	for {
		now := a.clk.Now()
		floor, why, persisted := a.clockFloor()
		if !now.Before(floor) {
			return true
		}
		if persisted && a.cfg.ClockSynchronized != nil && a.cfg.ClockSynchronized() {
			a.lowerTimeFloor(now)
			continue
		}
		a.clockBehind.Store(true)
		a.log.Warn("device clock is behind; waiting for time sync before connecting",
			"clock", now.UTC().Format(time.RFC3339), "must_be_after", floor.UTC().Format(time.RFC3339), "because", why, "retry_in", a.cfg.ClockRetry)
		if !a.await(ctx, a.clk.After(a.cfg.ClockRetry)) {
			return false
		}
	}
}

// clockFloor returns the time the clock must have passed and why; persisted reports that the
// persisted time floor is what holds it back.
func (a *Agent) clockFloor() (floor time.Time, why string, persisted bool) {
	a.mu.Lock()
	floor = time.Unix(a.st.TimeFloor, 0)
	a.mu.Unlock()
	why, persisted = "the persisted time floor (the clock was seen later than this before)", true
	if nb := a.activeCred().cert.NotBefore; nb.After(floor) {
		floor, why, persisted = nb, "the device certificate is not valid before then", false
	}
	if a.cfg.BuildTime.After(floor) {
		floor, why, persisted = a.cfg.BuildTime, "the agent was built after then", false
	}
	return floor, why, persisted
}

// lowerTimeFloor brings the persisted time floor down to now, the time of a synchronised
// clock (Config.ClockSynchronized).
func (a *Agent) lowerTimeFloor(now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	was := time.Unix(a.st.TimeFloor, 0)
	st := a.st
	st.TimeFloor = now.Unix()
	if err := a.store.Save(st); err != nil {
		// Trusted for this run all the same (the next state write carries it); the next
		// start asks the system again.
		a.log.Error("could not persist the lowered time floor", "err", err)
	}
	a.st = st
	a.log.Warn("the persisted time floor is ahead of the clock, which the system says is synchronised: the floor was saved while the clock ran ahead; trusting the clock",
		"clock", now.UTC().Format(time.RFC3339), "floor_was", was.UTC().Format(time.RFC3339))
}

func (a *Agent) timeFloorLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.clk.After(a.cfg.TimeFloorInterval):
			a.raiseTimeFloor()
		}
	}
}

// timeFloorSlack is how far behind the clock the persisted floor may lag before a connect
// writes it again. The floor only guards against a clock far behind (R5), and every state
// write carries the time anyway (save): a rotation's reconnection, a few seconds after its
// journal writes, need not write the state once more for it.
const timeFloorSlack = time.Minute

// raiseTimeFloor persists the current time as the floor if it is later by timeFloorSlack.
func (a *Agent) raiseTimeFloor() {
	now := a.clk.Now().Unix()
	a.mu.Lock()
	defer a.mu.Unlock()
	if now < a.st.TimeFloor+int64(timeFloorSlack/time.Second) {
		return
	}
	st := a.st
	st.TimeFloor = now
	if err := a.store.Save(st); err != nil {
		a.log.Error("could not persist time floor", "err", err)
		return
	}
	a.st = st
}

func (a *Agent) onConnect(ctx context.Context) {
	// Decided before the rotation hears of the connection (connEv): from then on it may
	// commit, and a.next is gone, before this goroutine gets to the state publish.
	rotations := a.switching()
	a.connOnce.Do(func() { close(a.connected) })
	a.authFails.Store(0)
	select {
	case a.connEv <- serialHex(a.Certificate()):
	default:
	}
	a.poke()
	a.log.Info("connected to broker", "broker", mqtt.ConnectedBroker(ctx), "cert_serial", serialHex(a.Certificate()))
	a.raiseTimeFloor()
	a.brokerProven(ctx)
	// A connection a rotation made to try its new certificate is followed at once by the
	// rotation's own state publish (committed, or failed), which would replace this one.
	if !rotations {
		if err := a.publishState(ctx); err != nil {
			a.log.Warn("could not publish device state", "err", err)
		}
	}
	a.forwardClaim(ctx)
	a.flushReplies(ctx)
}

// switching reports whether the certificate in use is the one a rotation under way is
// switching to: the connection is the rotation's, and the rotation publishes the state.
func (a *Agent) switching() bool {
	a.mu.Lock()
	next := a.next
	a.mu.Unlock()
	return next != nil && next.cert != nil && serialHex(next.cert) == serialHex(a.Certificate())
}

// codeBrokerRetired is the code logged when a broker presents a certificate the key set in
// force retired.
const codeBrokerRetired = "broker_retired"

func (a *Agent) onConnectError(err error) {
	var inv x509.CertificateInvalidError
	var ae tls.AlertError
	// Only refusals of the active certificate count toward the bootstrap identity: an issued
	// one a rotation tries (switching) may be refused without the active one being so.
	if refusedCredential(err) && !a.switching() {
		if int(a.authFails.Add(1)) >= a.cfg.AuthFailuresBeforeBootstrap {
			a.poke()
		}
	}
	switch {
	case errors.As(err, &inv) && inv.Reason == x509.Expired:
		a.log.Warn("cannot connect: the broker's certificate is not valid at this device's clock; is the clock right?", "clock", a.clk.Now().UTC().Format(time.RFC3339), "err", err)
	case errors.As(err, &ae) && ae == 45: // certificate_expired, RFC 8446 §6.2
		a.log.Warn("cannot connect: the broker refused this device's certificate as expired", "not_after", a.Certificate().NotAfter.UTC().Format(time.RFC3339), "err", err)
	case errors.Is(err, certs.ErrRetiredBroker):
		// Retried with the usual backoff: the broker is accepted again once it presents a
		// certificate issued since (fleetctl replace broker).
		a.log.Warn("cannot connect: the broker presents a certificate the fleet's key set retired; retrying until it presents a newer one", "code", codeBrokerRetired, "err", err)
	default:
		a.log.Warn("cannot connect to broker", "err", err) // err names the address dialled
	}
}

func (a *Agent) publish(ctx context.Context, t string, retained bool, m interface{ Validate() error }) error {
	b, err := wire.Encode(m)
	if err != nil {
		return fmt.Errorf("agent: encode %s: %w", t, err)
	}
	box := a.pub.Load()
	if box == nil {
		return fmt.Errorf("agent: publish %s: not running", t)
	}
	return box.Publish(ctx, t, 1, retained, b)
}

func (a *Agent) publishState(ctx context.Context) error {
	// The snapshot and its publish happen under one lock: otherwise an older snapshot (taken
	// by the connect handler) could reach the broker after a newer one and stay retained.
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	c := a.Certificate()
	a.mu.Lock()
	ds := &wire.DeviceState{
		V:            wire.Version,
		Firmware:     a.cfg.Firmware,
		CertSerial:   serialHex(c),
		CertNotAfter: c.NotAfter.Unix(),
		KeySet:       a.keySet,
		Epoch:        a.st.Cred.Epoch,
		Rotation:     a.rotStatus,
		LastError:    a.lastError,
		Privacy:      a.privacyLocked(),
		Updated:      a.clk.Now().Unix(),
	}
	a.mu.Unlock()
	return a.publish(ctx, topic.State(a.DeviceID()), true, ds)
}

func serialHex(c *x509.Certificate) string { return c.SerialNumber.Text(16) }
