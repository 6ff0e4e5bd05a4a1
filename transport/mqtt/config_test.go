package mqtt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/certs"
)

func validConfig() Config {
	return Config{
		BrokerURL:     "mqtts://broker.example:8883",
		ClientID:      "cam-0001",
		TLS:           certs.ClientTLSConfig(x509.NewCertPool(), "broker.example", certs.NewHolder(nil)),
		Subscriptions: []Subscription{{Filter: "dev/cam-0001/down/#", QoS: 1}, {Filter: "fleet/down/#", QoS: 1}},
		Handler:       func(context.Context, Message) {},
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(*Config)
		field string
	}{
		{"a tcp:// broker URL is refused as plaintext", func(c *Config) { c.BrokerURL = "tcp://broker.example:1883" }, "BrokerURL"},
		{"an mqtt:// broker URL is refused as plaintext", func(c *Config) { c.BrokerURL = "mqtt://broker.example:1883" }, "BrokerURL"},
		{"a ws:// broker URL is refused as plaintext", func(c *Config) { c.BrokerURL = "ws://broker.example/mqtt" }, "BrokerURL"},
		{"a URL without scheme is refused", func(c *Config) { c.BrokerURL = "broker.example:8883" }, "BrokerURL"},
		{"an empty broker URL is refused", func(c *Config) { c.BrokerURL = "" }, "BrokerURL"},
		{"a URL with credentials is refused", func(c *Config) { c.BrokerURL = "mqtts://user:pw@broker.example" }, "BrokerURL"},
		{"a URL with a path is refused", func(c *Config) { c.BrokerURL = "mqtts://broker.example/x" }, "BrokerURL"},
		{"a URL without host is refused", func(c *Config) { c.BrokerURL = "mqtts://:8883" }, "BrokerURL"},
		{"a host that is no name nor address is refused", func(c *Config) { c.BrokerURL = "mqtts://::" }, "BrokerURL"},
		{"a port over 65535 is refused", func(c *Config) { c.BrokerURL = "mqtts://broker.example:88830" }, "BrokerURL"},
		{"a plaintext fallback broker URL is refused", func(c *Config) { c.FallbackBrokerURLs = []string{"mqtts://b.example", "tcp://c.example:1883"} }, "FallbackBrokerURLs[1]"},
		{"an empty fallback broker URL is refused", func(c *Config) { c.FallbackBrokerURLs = []string{""} }, "FallbackBrokerURLs[0]"},
		{"an empty client id is refused", func(c *Config) { c.ClientID = "" }, "ClientID"},
		{"a nil TLS config is refused", func(c *Config) { c.TLS = nil }, "TLS"},
		{"InsecureSkipVerify is refused", func(c *Config) { c.TLS.InsecureSkipVerify = true }, "TLS"},
		{"a TLS config trusting the system roots is refused", func(c *Config) { c.TLS.RootCAs = nil }, "TLS"},
		{"a TLS config without client certificate is refused", func(c *Config) { c.TLS.GetClientCertificate = nil }, "TLS"},
		{"an empty filter is refused", func(c *Config) { c.Subscriptions[0].Filter = "" }, "Subscriptions[0].Filter"},
		{"a # that is not last is refused", func(c *Config) { c.Subscriptions[1].Filter = "fleet/#/cmd" }, "Subscriptions[1].Filter"},
		{"a + inside a level is refused", func(c *Config) { c.Subscriptions[0].Filter = "dev/cam+/down/#" }, "Subscriptions[0].Filter"},
		{"a duplicate filter is refused", func(c *Config) { c.Subscriptions[1].Filter = c.Subscriptions[0].Filter }, "Subscriptions[1].Filter"},
		{"QoS 2 is refused", func(c *Config) { c.Subscriptions[0].QoS = 2 }, "Subscriptions[0].QoS"},
		{"subscriptions without handler are refused", func(c *Config) { c.Handler = nil }, "Handler"},
		{"a negative payload cap is refused", func(c *Config) { c.MaxPayload = -1 }, "MaxPayload"},
		{"a negative queue length is refused", func(c *Config) { c.QueueLength = -1 }, "QueueLength"},
		{"a sub-second keepalive is refused", func(c *Config) { c.KeepAlive = 500 * time.Millisecond }, "KeepAlive"},
		{"a fractional keepalive is refused", func(c *Config) { c.KeepAlive = 1500 * time.Millisecond }, "KeepAlive"},
		{"a negative connect timeout is refused", func(c *Config) { c.ConnectTimeout = -time.Second }, "ConnectTimeout"},
		{"a negative min backoff is refused", func(c *Config) { c.MinBackoff = -time.Second }, "MinBackoff"},
		{"a max backoff below the min is refused", func(c *Config) { c.MinBackoff, c.MaxBackoff = time.Minute, time.Second }, "MaxBackoff"},
		{"an unspecified IPv4 local address is refused", func(c *Config) { c.LocalAddr = netip.IPv4Unspecified() }, "LocalAddr"},
		{"an unspecified IPv6 local address is refused", func(c *Config) { c.LocalAddr = netip.IPv6Unspecified() }, "LocalAddr"},
		{"a multicast local address is refused", func(c *Config) { c.LocalAddr = netip.MustParseAddr("224.0.0.1") }, "LocalAddr"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := validConfig()
			tc.edit(&cfg)
			_, err := New(cfg)
			var ce *ConfigError
			if !errors.As(err, &ce) || !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("New = %v, want a *ConfigError", err)
			}
			if ce.Field != tc.field {
				t.Errorf("error names field %q, want %q (%v)", ce.Field, tc.field, err)
			}
		})
	}
}

func TestNewAcceptsTLSSchemesAndAppliesDefaults(t *testing.T) {
	for _, tc := range []struct {
		name, url, host string
	}{
		{"mqtts:// with a port is accepted", "mqtts://broker.example:18883", "broker.example:18883"},
		{"ssl:// is accepted", "ssl://broker.example:8883", "broker.example:8883"},
		{"tls:// is accepted", "tls://broker.example:8883", "broker.example:8883"},
		{"the port defaults to 8883", "mqtts://broker.example", "broker.example:8883"},
		{"the scheme is case-insensitive", "MQTTS://broker.example", "broker.example:8883"},
		{"an IPv6 address is accepted", "mqtts://[::1]:8883", "[::1]:8883"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := validConfig()
			cfg.BrokerURL = tc.url
			c, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if c.brokers[0].url.Host != tc.host {
				t.Errorf("dials %q, want %q", c.brokers[0].url.Host, tc.host)
			}
		})
	}

	t.Run("each broker address is verified under its own host name unless one is set", func(t *testing.T) {
		cfg := validConfig()
		cfg.TLS.ServerName = ""
		cfg.BrokerURL = "mqtts://a.example:1"
		cfg.FallbackBrokerURLs = []string{"mqtts://b.example:2", "mqtts://a.example:3"}
		c, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		for i, want := range []string{"a.example", "b.example", "a.example"} {
			if got := c.brokers[i].tls.ServerName; got != want {
				t.Errorf("address %d (%s) is verified as %q, want %q", i, c.brokers[i].url.Host, got, want)
			}
		}
		cfg.TLS.ServerName = "pinned.example"
		if c, err = New(cfg); err != nil {
			t.Fatal(err)
		}
		for i := range c.brokers {
			if got := c.brokers[i].tls.ServerName; got != "pinned.example" {
				t.Errorf("address %d is verified as %q, want the configured pinned.example", i, got)
			}
		}
	})

	t.Run("zero fields get their documented defaults", func(t *testing.T) {
		cfg := validConfig()
		cfg.TLS.ServerName = ""
		cfg.TLS.MinVersion = tls.VersionTLS10
		cfg.TLS.CipherSuites = nil
		cfg.TLS.ClientSessionCache = tls.NewLRUClientSessionCache(4)
		c, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		got := c.cfg
		if got.MaxPayload != 64<<10 || got.QueueLength != 1024 || got.KeepAlive != 30*time.Second ||
			got.ConnectTimeout != 10*time.Second || got.MinBackoff != time.Second || got.MaxBackoff != 5*time.Minute {
			t.Errorf("defaults = payload %d, queue %d, keepalive %v, connect %v, backoff %v..%v",
				got.MaxPayload, got.QueueLength, got.KeepAlive, got.ConnectTimeout, got.MinBackoff, got.MaxBackoff)
		}
		if got.Rand == nil || got.Clock == nil || got.Logger == nil {
			t.Error("Rand, Clock or Logger left nil")
		}
		if got.TLS == cfg.TLS {
			t.Error("the TLS config was not cloned")
		}
		if got.TLS.ServerName != "broker.example" || got.TLS.MinVersion != tls.VersionTLS12 {
			t.Errorf("TLS ServerName %q, MinVersion %x; want the URL host and TLS 1.2", got.TLS.ServerName, got.TLS.MinVersion)
		}
		if len(got.TLS.CipherSuites) == 0 {
			t.Error("nil CipherSuites left to Go's defaults")
		}
		if got.TLS.ClientSessionCache != nil {
			t.Error("TLS session resumption left on: a swapped certificate would not be presented")
		}
	})

	t.Run("OnSessionTicket is told of tickets and no session is ever resumed", func(t *testing.T) {
		cfg := validConfig()
		cfg.TLS.ClientSessionCache = tls.NewLRUClientSessionCache(4)
		told := 0
		cfg.OnSessionTicket = func() { told++ }
		c, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		cache := c.cfg.TLS.ClientSessionCache
		if cache == nil {
			t.Fatal("no session cache: the client would ignore the tickets it is given")
		}
		cache.Put("broker.example:8883", &tls.ClientSessionState{})
		cache.Put("broker.example:8883", nil) // crypto/tls removing an entry
		if told != 1 {
			t.Errorf("OnSessionTicket called %d times for one ticket, want 1", told)
		}
		if cs, ok := cache.Get("broker.example:8883"); ok || cs != nil {
			t.Error("the cache gave back a session: a connection would resume and skip the client certificate")
		}
	})

	t.Run("a publish-only client needs no handler", func(t *testing.T) {
		cfg := validConfig()
		cfg.Subscriptions, cfg.Handler = nil, nil
		if _, err := New(cfg); err != nil {
			t.Fatal(err)
		}
	})
}

func TestPublishRefusesBadArgumentsAndOfflineCalls(t *testing.T) {
	c, err := New(validConfig())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		topic string
		qos   byte
		want  error
	}{
		{"publishing while offline fails at once", "dev/cam-0001/up/state", 1, ErrNotConnected},
		{"QoS 2 is refused", "dev/cam-0001/up/state", 2, ErrInvalidQoS},
		{"a wildcard topic is refused", "dev/+/up/state", 0, ErrInvalidTopic},
		{"a multi-level wildcard topic is refused", "dev/#", 0, ErrInvalidTopic},
		{"an empty topic is refused", "", 0, ErrInvalidTopic},
		{"a topic with NUL is refused", "dev/\x00", 0, ErrInvalidTopic},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := c.Publish(ctx, tc.topic, tc.qos, false, []byte("x")); !errors.Is(err, tc.want) {
				t.Errorf("Publish = %v, want %v", err, tc.want)
			}
		})
	}
	if got := c.Stats().PublishErrors; got != 6 {
		t.Errorf("PublishErrors = %d, want 6", got)
	}
	if c.Connected() {
		t.Error("Connected before Run")
	}
}

func TestCheckGrantedRefusesAnythingButA311Grant(t *testing.T) {
	subs := []Subscription{{Filter: "a/#", QoS: 1}, {Filter: "b", QoS: 1}}
	log := slog.New(slog.DiscardHandler)
	tests := []struct {
		name    string
		granted map[string]byte
		ok      bool
	}{
		{"both granted", map[string]byte{"a/#": 1, "b": 1}, true},
		{"a lower QoS is a grant", map[string]byte{"a/#": 0, "b": 1}, true},
		{"0x80 is a refusal", map[string]byte{"a/#": 1, "b": 0x80}, false},
		{"a missing filter is a refusal", map[string]byte{"a/#": 1}, false},
		{"an MQTT 5 reason code is no grant", map[string]byte{"a/#": 0x91, "b": 1}, false},
		{"0x03 is no grant", map[string]byte{"a/#": 1, "b": 3}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkGranted(subs, tt.granted, log)
			if tt.ok != (err == nil) || (err != nil && !errors.Is(err, ErrSubscribeRefused)) {
				t.Fatalf("checkGranted(%v) = %v", tt.granted, err)
			}
		})
	}
}

// An optional subscription the broker refuses (a viewer relay's fleet/keyset, on a broker whose
// ACL predates it) is logged and the session goes on; a required one refused still fails.
func TestCheckGrantedLetsAnOptionalSubscriptionBeRefused(t *testing.T) {
	subs := []Subscription{{Filter: "a/#", QoS: 0}, {Filter: "k", QoS: 1, Optional: true}}
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(&logs, nil))
	for _, granted := range []map[string]byte{{"a/#": 0, "k": 0x80}, {"a/#": 0}, {"a/#": 0, "k": 0x87}} {
		logs.Reset()
		if err := checkGranted(subs, granted, log); err != nil {
			t.Fatalf("checkGranted(%v) = %v, want the optional refusal let through", granted, err)
		}
		if !strings.Contains(logs.String(), "refused an optional subscription") || !strings.Contains(logs.String(), "filter=k") {
			t.Fatalf("checkGranted(%v) logged %q", granted, logs.String())
		}
	}
	if err := checkGranted(subs, map[string]byte{"a/#": 0x80, "k": 1}, log); !errors.Is(err, ErrSubscribeRefused) {
		t.Fatalf("a required filter refused beside a granted optional one: %v", err)
	}
}
