package mqtt

import (
	"errors"
	"net"
	"testing"
)

// CheckBrokerURL reads a broker address from the enrollment bundle or its copy, which a
// storage fault may have changed anywhere: it must never panic, must name the field it refuses,
// and an address it takes must be one New takes and dials as a host and port.
func FuzzCheckBrokerURL(f *testing.F) {
	for _, s := range []string{
		"mqtts://broker.example:8883", "ssl://10.0.0.1:8883", "tls://[::1]:8883", "MQTTS://b.example",
		"mqtts://localhost:18?83", "mqtts://localhost:1/", "mqtts://u:p@b.example:1", "tcp://b.example:1883",
		"mqtts://:8883", "mqtts://b.example:1#x", "", "mqtts://%zz", "mqtts://b.example:99999",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := CheckBrokerURL(s)
		if err != nil {
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field != "BrokerURL" || ce.Reason == "" {
				t.Fatalf("CheckBrokerURL(%q) = %v, want a ConfigError naming BrokerURL and why", s, err)
			}
			return
		}
		cfg := validConfig()
		cfg.BrokerURL = s
		cfg.FallbackBrokerURLs = []string{s}
		c, err := New(cfg)
		if err != nil {
			t.Fatalf("CheckBrokerURL(%q) took it, New refuses it: %v", s, err)
		}
		for _, b := range c.brokers {
			host, port, err := net.SplitHostPort(b.url.Host)
			if err != nil || host == "" || port == "" || !brokerSchemes[b.url.Scheme] {
				t.Fatalf("%q dials %q (%s): %v", s, b.url.Host, b.url.Scheme, err)
			}
			if b.tls.ServerName == "" {
				t.Fatalf("%q is verified under no name", s)
			}
		}
		// The reduced address is one it takes too, and reduces to itself.
		again, reason := parseBrokerURL(c.brokers[0].url.String())
		if reason != "" || again.String() != c.brokers[0].url.String() {
			t.Fatalf("%q reduces to %q, which reduces to %v (%s)", s, c.brokers[0].url, again, reason)
		}
	})
}
