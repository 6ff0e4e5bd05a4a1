package signer

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/clock"
	"github.com/camagent/camagent/tools/fleetctl/registry"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultAbortMin       = 10
	DefaultConfirmTimeout = 5 * time.Minute
	DefaultAbortWindow    = time.Hour
	DefaultCheckInterval  = 5 * time.Second
	DefaultBatchSize      = 64
	DefaultPublishers     = 8
	DefaultPublishTimeout = 10 * time.Second
	DefaultMaxPending     = 512
	// DefaultPresenceEvery is how often a signer says again that it serves; fleetctl status
	// warns when none has said so for three times as long.
	DefaultPresenceEvery  = 30 * time.Second
	DefaultPendingTimeout = 30 * time.Second
	DefaultHoldTimeout    = 25 * time.Second
	// DefaultMaxHeld caps the requests one signer holds while the window is full.
	DefaultMaxHeld = 1 << 16
	// ShareGroup is the MQTT shared-subscription group every signer joins.
	ShareGroup = "signers"
)

// Config configures a Signer. New applies the defaults and validates it.
type Config struct {
	// CA issues the certificates. Required.
	CA *certs.CA
	// Registry is the fleet's log of certificates. Required; the Signer does not close it.
	Registry *registry.Registry
	// RolloutPath is the file holding the rollout state shared by every signer of the fleet
	// directory (see RolloutState). Required.
	RolloutPath string
	// CRLPath, if set, is where the signer writes the fleet's CRL (PEM) when it starts and
	// after every revocation, for Mosquitto's crlfile. Empty writes none.
	CRLPath string
	// Validity is the lifetime of the device certificates it issues. Zero means
	// certs.DefaultDeviceValidity.
	Validity time.Duration

	// BrokerURL is the broker, mqtts://host:port. Required.
	BrokerURL string
	// ClientID is the MQTT client id: stable per signer instance, so that its persistent
	// session (and the requests queued in it) survives a restart. Required.
	ClientID string
	// TLS is the client TLS configuration presenting the signer's certificate
	// (certs.ClientTLSConfig). Required.
	TLS *tls.Config
	// MinBackoff and MaxBackoff shape reconnection; zero means transport/mqtt's defaults.
	MinBackoff, MaxBackoff time.Duration

	// MaxRate caps new certificates per minute, across every signer of the fleet directory.
	// Zero means no cap.
	MaxRate float64
	// Burst is how many certificates may be issued at once when the bucket is full. Zero
	// means ten seconds' worth of MaxRate, at least 1.
	Burst int
	// MaxPending caps the certificates issued and not yet confirmed, across every signer of
	// the fleet directory: a window of rotations in progress. Every rotation ends with the
	// device connecting with its new certificate, so the window bounds how many devices
	// storm the broker with new connections at once; the confirmations clock new issues, so
	// a campaign runs as fast as the broker takes it and no faster. A request that would
	// pass the cap is held (see HoldTimeout) until a confirmation frees a place. A
	// certificate counts for at most PendingTimeout after its issue, so devices that vanish
	// mid-rotation do not stall a campaign. Zero means DefaultMaxPending; negative means no
	// cap.
	MaxPending int
	// PendingTimeout is how long an unconfirmed certificate counts against MaxPending. Zero
	// means DefaultPendingTimeout.
	PendingTimeout time.Duration
	// HoldTimeout is how long a request waits for a place in the window before it is
	// answered wire.ErrCodeRateLimited (the device retries after the hint, or its backoff). Keep it below
	// the agent's request timeout (30 s), so that the device hears back before it gives up.
	// Zero means DefaultHoldTimeout.
	HoldTimeout time.Duration
	// MaxHeld caps the requests this signer holds; beyond it a request is answered
	// wire.ErrCodeRateLimited at once. Zero means DefaultMaxHeld.
	MaxHeld int
	// AbortRatio, if above zero, is the share (0..1) of certificates not confirmed within
	// ConfirmTimeout above which the rollout is aborted. Zero never aborts.
	AbortRatio float64
	// AbortMin is how many certificates must have been issued in the window before the ratio
	// is looked at. Zero means DefaultAbortMin.
	AbortMin int
	// ConfirmTimeout is how long a device has to confirm a certificate before it counts as a
	// failure. Zero means DefaultConfirmTimeout.
	ConfirmTimeout time.Duration
	// AbortWindow is how far back certificates count towards the abort threshold. Zero means
	// DefaultAbortWindow.
	AbortWindow time.Duration
	// CheckInterval is how often the abort threshold is checked when no request comes in.
	// Zero means DefaultCheckInterval.
	CheckInterval time.Duration

	// BatchSize caps the requests decided in one registry transaction. Zero means
	// DefaultBatchSize.
	BatchSize int
	// Publishers is how many answers may be in flight at once. Zero means DefaultPublishers.
	Publishers int
	// PublishTimeout bounds the publication of one answer, reconnections included. Zero means
	// DefaultPublishTimeout.
	PublishTimeout time.Duration

	// Name is the instance's name (fleetctl serve --name, wire.SignerNameRe) in the presence
	// it keeps retained on PresenceTopic(ClientID), so that operators see which signers
	// serve. Empty means the client id's session suffix.
	Name string
	// PresenceEvery is how often the presence is sent again while serving. Zero means
	// DefaultPresenceEvery.
	PresenceEvery time.Duration

	// Clock tells the time for issuing and for the rollout controls. Nil means the system clock.
	Clock clock.Clock
	// Logger receives the signer's decisions (device ids, serials, request ids, error codes;
	// never CSRs, token hashes or certificates). Nil discards them.
	Logger *slog.Logger
}

// withDefaults validates cfg and applies the defaults, in one place.
func withDefaults(cfg Config) (Config, error) {
	bad := func(field, format string, args ...any) (Config, error) {
		return Config{}, fmt.Errorf("signer: Config.%s: %s", field, fmt.Sprintf(format, args...))
	}
	switch {
	case cfg.CA == nil:
		return bad("CA", "required")
	case cfg.Registry == nil:
		return bad("Registry", "required")
	case cfg.RolloutPath == "":
		return bad("RolloutPath", "required")
	case cfg.BrokerURL == "":
		return bad("BrokerURL", "required")
	case cfg.ClientID == "":
		return bad("ClientID", "required")
	case cfg.TLS == nil:
		return bad("TLS", "required")
	case cfg.Validity < 0:
		return bad("Validity", "negative")
	case cfg.MaxRate < 0 || math.IsNaN(cfg.MaxRate) || math.IsInf(cfg.MaxRate, 0):
		return bad("MaxRate", "%v; want a rate per minute, 0 for none", cfg.MaxRate)
	case cfg.Burst < 0:
		return bad("Burst", "negative")
	case cfg.AbortRatio < 0 || cfg.AbortRatio >= 1 || math.IsNaN(cfg.AbortRatio):
		return bad("AbortRatio", "%v; want 0 (never) or a share below 1", cfg.AbortRatio)
	case cfg.AbortMin < 0:
		return bad("AbortMin", "negative")
	case cfg.ConfirmTimeout < 0, cfg.AbortWindow < 0, cfg.CheckInterval < 0, cfg.PublishTimeout < 0:
		return bad("ConfirmTimeout, AbortWindow, CheckInterval and PublishTimeout", "must not be negative")
	case cfg.PendingTimeout < 0, cfg.HoldTimeout < 0, cfg.MaxHeld < 0:
		return bad("PendingTimeout, HoldTimeout and MaxHeld", "must not be negative")
	case cfg.BatchSize < 0, cfg.Publishers < 0:
		return bad("BatchSize and Publishers", "must not be negative")
	}
	if cfg.Validity == 0 {
		cfg.Validity = certs.DefaultDeviceValidity
	}
	if cfg.Burst == 0 && cfg.MaxRate > 0 {
		cfg.Burst = max(1, int(math.Round(cfg.MaxRate/6)))
	}
	if cfg.MaxPending == 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	if cfg.PendingTimeout == 0 {
		cfg.PendingTimeout = DefaultPendingTimeout
	}
	if cfg.HoldTimeout == 0 {
		cfg.HoldTimeout = DefaultHoldTimeout
	}
	if cfg.MaxHeld == 0 {
		cfg.MaxHeld = DefaultMaxHeld
	}
	if cfg.AbortMin == 0 {
		cfg.AbortMin = DefaultAbortMin
	}
	if cfg.ConfirmTimeout == 0 {
		cfg.ConfirmTimeout = DefaultConfirmTimeout
	}
	if cfg.AbortWindow == 0 {
		cfg.AbortWindow = DefaultAbortWindow
	}
	if cfg.CheckInterval == 0 {
		cfg.CheckInterval = DefaultCheckInterval
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.Name == "" {
		cfg.Name = certs.ClientIDSession(cfg.ClientID)
	}
	if !wire.SignerNameRe.MatchString(cfg.Name) {
		return bad("Name", "%q: letters, digits, '.', '_' and '-', at most 64", cfg.Name)
	}
	switch {
	case cfg.PresenceEvery == 0:
		cfg.PresenceEvery = DefaultPresenceEvery
	case cfg.PresenceEvery < time.Second || cfg.PresenceEvery > wire.MaxSignerPresenceEvery*time.Second:
		return bad("PresenceEvery", "%v: between 1s and %ds", cfg.PresenceEvery, wire.MaxSignerPresenceEvery)
	}
	if cfg.Publishers == 0 {
		cfg.Publishers = DefaultPublishers
	}
	if cfg.PublishTimeout == 0 {
		cfg.PublishTimeout = DefaultPublishTimeout
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg, nil
}
