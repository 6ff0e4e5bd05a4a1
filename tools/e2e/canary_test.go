package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/camagent/camagent/agent"
	"github.com/camagent/camagent/agent/privacy/onboard"
	"github.com/camagent/camagent/agent/privacy/seal"
	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/fleettest"
	"github.com/camagent/camagent/transport/mqtt"
	"github.com/camagent/camagent/transport/mqtt/broker"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
	"github.com/camagent/camagent/transport/mqtt/topic"
	"github.com/camagent/camagent/transport/webrtc/signal"
)

// The canary checker. It is written here, independently of agent/privacy/egress, so that the
// unit under test does not check itself: it spells each canary every way the issue names and
// searches captured bytes for every spelling.

// canary is a value onboarding gave the device that must never leave it (P2, P4).
type canary struct {
	kind  string // ssid, passphrase or nickname
	value string
}

func canariesOf(s onboard.Setup) []canary {
	return []canary{{"ssid", s.SSID}, {"passphrase", s.Passphrase}, {"nickname", s.Nickname}}
}

// spelling is one way of writing a canary.
type spelling struct {
	kind, encoding string
	text           []byte
	fold           bool // searched for in the case-folded data
}

// canaryHit is a canary found in captured data.
type canaryHit struct {
	kind, encoding, excerpt string
}

// minSpelling keeps every spelling long enough (72 bits of base64 at the least) that it cannot
// occur by chance in megabytes of keys, certificates and database pages.
const minSpelling = 12

type canaryChecker struct{ spellings []spelling }

// newCanaryChecker spells each canary:
//
//   - raw, searched case-folded (so also upper, lower and mixed case);
//   - hex, case-folded (lower, upper and mixed-case digits);
//   - base64 in the standard and URL alphabets, padded or not, at each of the three
//     alignments: for a prefix of 0, 1 or 2 bytes, the characters of base64(prefix+value) that
//     depend on the value's bits alone, which every encoding of data holding the value
//     contains, whatever surrounds it (padding only ever follows the last character, so the
//     padded and unpadded forms share these); the same for the value JSON-escaped, as it is
//     inside a JSON message that a broker stores base64-encoded;
//   - percent-encoded as url.QueryEscape and url.PathEscape write it and with every byte
//     escaped, case-folded (%2d or %2D);
//   - JSON-escaped as encoding/json writes it (with and without HTML escaping, and with '/'
//     written "\/"), and with every character written \uXXXX (surrogate pairs beyond the BMP),
//     case-folded.
func newCanaryChecker(t testing.TB, cs ...canary) *canaryChecker {
	t.Helper()
	c := &canaryChecker{}
	add := func(kind, enc string, text string, fold bool) {
		if len(text) < minSpelling {
			t.Fatalf("canary %s spelt %s is %d bytes: too short to search for without chance matches", kind, enc, len(text))
		}
		b := []byte(text)
		if fold {
			b = bytes.ToLower(b)
		}
		for _, s := range c.spellings {
			if s.fold == fold && bytes.Equal(s.text, b) {
				return
			}
		}
		c.spellings = append(c.spellings, spelling{kind, enc, b, fold})
	}
	for _, cn := range cs {
		v := []byte(cn.value)
		add(cn.kind, "raw", cn.value, true)
		add(cn.kind, "hex", hex.EncodeToString(v), true)
		// The body of the JSON string encoding/json writes, with and without HTML escaping.
		htmlEscaped, _ := json.Marshal(cn.value)
		var plain bytes.Buffer
		enc := json.NewEncoder(&plain)
		enc.SetEscapeHTML(false)
		enc.Encode(cn.value)
		body := func(b []byte) string { b = bytes.TrimSuffix(b, []byte("\n")); return string(b[1 : len(b)-1]) }
		jsonForms := []string{body(htmlEscaped), body(plain.Bytes())}
		// Base64 of the value, and of the value JSON-escaped: a JSON message stored base64
		// (mochi's bbolt records hold payloads so) carries the latter.
		for _, b64 := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			for prefix := range 3 {
				for _, form := range append([]string{cn.value}, jsonForms...) {
					add(cn.kind, "base64", stableBase64(b64, []byte(form), prefix), false)
				}
			}
		}
		add(cn.kind, "percent", url.QueryEscape(cn.value), true)
		add(cn.kind, "percent", url.PathEscape(cn.value), true)
		var all strings.Builder
		for _, b := range v {
			fmt.Fprintf(&all, "%%%02X", b)
		}
		add(cn.kind, "percent", all.String(), true)
		for _, form := range jsonForms {
			add(cn.kind, "json", form, true)
			add(cn.kind, "json", strings.ReplaceAll(form, "/", `\/`), true)
		}
		add(cn.kind, "json", escapeEveryChar(cn.value), true)
	}
	return c
}

// stableBase64 returns the characters of enc(prefix zero bytes + v) that encode v's bits and
// nothing else: character i holds bits 6i..6i+5, so it belongs to v when 6i ≥ 8·prefix and
// 6i+6 ≤ 8·(prefix+len(v)).
func stableBase64(enc *base64.Encoding, v []byte, prefix int) string {
	s := enc.EncodeToString(append(make([]byte, prefix), v...))
	return s[(8*prefix+5)/6 : 8*(prefix+len(v))/6]
}

// escapeEveryChar writes s as a JSON string body with every character escaped as \uXXXX.
func escapeEveryChar(s string) string {
	var b strings.Builder
	for _, u := range utf16.Encode([]rune(s)) {
		fmt.Fprintf(&b, `\u%04x`, u)
	}
	return b.String()
}

// find returns every spelling of every canary in data.
func (c *canaryChecker) find(data []byte) []canaryHit {
	var low []byte
	var hits []canaryHit
	for _, s := range c.spellings {
		hay := data
		if s.fold {
			if low == nil {
				low = bytes.ToLower(data)
			}
			hay = low
		}
		if i := bytes.Index(hay, s.text); i >= 0 {
			from, to := max(0, i-32), min(len(hay), i+len(s.text)+32)
			hits = append(hits, canaryHit{s.kind, s.encoding, fmt.Sprintf("%q", hay[from:to])})
		}
	}
	return hits
}

// The checker finds each canary in each encoding, inside other data, and nothing in data
// without it: the canary suite below can fail.
func TestCanaryCheckerFindsEveryEncoding(t *testing.T) {
	cs := []canary{
		{"ssid", "CanarySSID-" + randHex(t, 4)},
		{"ssid", `Zoë's Wi-Fi, "5G"; <a&b> ` + randHex(t, 4)},
		{"nickname", "Baby's room — crib cam 🎥 / upstairs"},
		{"passphrase", `correct horse: battery\staple% +x`},
	}
	chk := newCanaryChecker(t, cs...)
	pad := func(n int) []byte {
		b := make([]byte, n)
		rand.Read(b)
		return b
	}
	for _, cn := range cs {
		v := []byte(cn.value)
		j, _ := json.Marshal(map[string]string{"k": cn.value})
		forms := map[string][]string{
			"raw":     {cn.value, strings.ToUpper(cn.value), strings.ToLower(cn.value), string(j)},
			"hex":     {hex.EncodeToString(v), strings.ToUpper(hex.EncodeToString(v))},
			"percent": {url.QueryEscape(cn.value), strings.ToLower(url.PathEscape(cn.value))},
			"json":    {escapeEveryChar(cn.value), strings.ToUpper(escapeEveryChar(cn.value))},
		}
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			for prefix := range 6 {
				forms["base64"] = append(forms["base64"], enc.EncodeToString(slices.Concat(pad(prefix), v, pad(prefix%4))))
			}
			forms["base64"] = append(forms["base64"], enc.EncodeToString(j))
		}
		for enc, texts := range forms {
			for _, text := range texts {
				data := slices.Concat([]byte(`{"blob":"`), pad(64), []byte(text), pad(64), []byte(`"}`))
				hits := chk.find(data)
				// A spelling that equals another (percent-encoding of a value with nothing to
				// escape is the value) is reported under the first.
				asRaw := strings.Contains(strings.ToLower(text), strings.ToLower(cn.value))
				if !slices.ContainsFunc(hits, func(h canaryHit) bool {
					return h.kind == cn.kind && (h.encoding == enc || asRaw && h.encoding == "raw" || enc == "raw" && h.encoding == "json")
				}) {
					t.Errorf("%s %q written %s as %q: not found (hits %v)", cn.kind, cn.value, enc, text, hits)
				}
			}
		}
		// One bit changed in the middle: no longer the canary. (A change in the first or last
		// few bits can be invisible to base64 at some alignments: those bits share a
		// character with the surrounding data, so no search can tell.)
		near := []byte(cn.value)
		near[len(near)/2] ^= 1
		for _, text := range []string{string(near), hex.EncodeToString(near), base64.StdEncoding.EncodeToString(near)} {
			if hits := chk.find([]byte(text)); len(hits) > 0 {
				t.Errorf("a near miss of %s %q matched: %v", cn.kind, cn.value, hits)
			}
		}
	}
	// Megabytes of random bytes and a real key and certificate hold none.
	noise := pad(4 << 20)
	k, _ := certs.GenerateKey()
	pem, _ := certs.MarshalKeyPEM(k)
	if hits := chk.find(slices.Concat(noise, pem, []byte(base64.StdEncoding.EncodeToString(noise[:1<<20])))); len(hits) > 0 {
		t.Fatalf("random data matched: %v", hits)
	}
}

func randHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// What is captured.

// record is one piece of captured data: a message, a log, a file.
type record struct {
	source string
	topic  string // for messages
	data   []byte
}

// capture collects records from several goroutines.
type capture struct {
	mu   sync.Mutex
	recs []record
}

func (c *capture) add(source, topic string, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.recs = append(c.recs, record{source, topic, append([]byte(nil), data...)})
}

func (c *capture) all() []record {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.recs)
}

// messages returns the payloads source captured on topic t, in order.
func (c *capture) messages(source, t string) [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out [][]byte
	for _, r := range c.recs {
		if r.source == source && r.topic == t {
			out = append(out, r.data)
		}
	}
	return out
}

// addFiles captures every regular file under dir.
func (c *capture) addFiles(t testing.TB, source, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		c.add(source+" "+rel, "", b)
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Sources of captured records.
const (
	srcSubscriber = "operator subscriber"
	srcHook       = "embedded broker hook"
)

// dialCapture subscribes as the fleet's operator to dev/# and fleet/#, everything an operator
// may read, and captures each message. The bootstrap identities' boot/# is not readable by an
// operator; on the embedded broker the hook sees it.
func dialCapture(t testing.TB, f *fleet.Fleet, brokerURL string, c *capture) *mqtt.Client {
	t.Helper()
	cert, err := f.OperatorCertificate()
	if err != nil {
		t.Fatal(err)
	}
	host, _ := certs.BrokerHost(brokerURL)
	cl, err := mqtt.New(mqtt.Config{
		BrokerURL:     brokerURL,
		ClientID:      fleet.ClientID("operator:" + fleet.DefaultOperator),
		TLS:           certs.ClientTLSConfig(f.Pool, host, certs.NewHolder(cert)),
		CleanSession:  true,
		Subscriptions: []mqtt.Subscription{{Filter: "dev/#", QoS: 1}, {Filter: "fleet/#", QoS: 1}},
		Handler:       func(_ context.Context, m mqtt.Message) { c.add(srcSubscriber, m.Topic, m.Payload) },
		MinBackoff:    50 * time.Millisecond,
		MaxBackoff:    500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cl.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	wctx, wc := context.WithTimeout(ctx, 20*time.Second)
	defer wc()
	if err := cl.WaitConnected(wctx); err != nil {
		t.Fatal(err)
	}
	return cl
}

// canaryEnv is a fleet, its broker and signer, and what is captured from them.
type canaryEnv struct {
	env
	c      *capture
	hooked bool // the broker's own hook captures every publish it accepts
	// stop stops the broker and signer and captures their logs, the broker's persistence
	// files and every file of the fleet directory.
	stop func(t *testing.T)
}

// forEachCanaryBroker runs fn against the embedded broker (transport/mqtt/broker as `fleetctl
// broker` runs it, with the fleet's server certificate, plus the OnPublish hook that
// `fleetctl broker` does not expose) and a real Mosquitto, each with a `fleetctl serve` signer
// logging at debug.
func forEachCanaryBroker(t *testing.T, device string, fn func(t *testing.T, e *canaryEnv)) {
	signer := func(t *testing.T, e *canaryEnv) *fleettest.Output {
		out := fleettest.Background(t, "serve", "--dir", e.f.Dir, "--broker", e.url, "--log-level", "debug")
		out.WaitFor(t, "serving")
		return out
	}
	t.Run("embedded", func(t *testing.T) {
		f, _ := newFleet(t)
		c := new(capture)
		sc, err := f.ServerCertificate()
		if err != nil {
			t.Fatal(err)
		}
		data := filepath.Join(t.TempDir(), "broker-data")
		blog := new(logtest.Buffer)
		b, err := broker.New(broker.Config{
			Addr:    "127.0.0.1:0",
			TLS:     certs.ServerTLSConfig(f.Pool, sc),
			DataDir: data,
			Logger:  slog.New(slog.NewTextHandler(blog, &slog.HandlerOptions{Level: slog.LevelDebug})),
			OnPublish: func(clientID, tp string, payload []byte, _ bool) {
				c.add(srcHook, tp, payload)
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		e := &canaryEnv{env: env{name: "embedded", f: f, url: b.URL(), applyCRL: func(testing.TB) {}}, c: c, hooked: true}
		out := signer(t, e)
		e.stop = func(t *testing.T) {
			if err := b.Close(); err != nil {
				t.Error(err)
			}
			if c.addFiles(t, "broker persistence", data) == 0 {
				t.Error("the embedded broker persisted nothing")
			}
			c.add("broker log", "", []byte(blog.String()))
			c.add("signer log", "", []byte(out.String()))
			c.addFiles(t, "fleet directory", f.Dir)
		}
		fn(t, e)
	})
	t.Run("mosquitto", func(t *testing.T) {
		f, pki := newFleet(t)
		c := new(capture)
		m := mqtttest.StartMosquitto(t, pki, mqtttest.WithIdentities("operator:"+fleet.DefaultOperator, "signer:"+fleet.DefaultSigner, "viewer:test", "bootstrap:"+device))
		e := &canaryEnv{env: env{name: "mosquitto", f: f, url: m.URL(), applyCRL: func(testing.TB) {}}, c: c}
		out := signer(t, e)
		e.stop = func(t *testing.T) {
			m.Stop(t) // SIGTERM: Mosquitto writes its persistence database
			if c.addFiles(t, "broker persistence", filepath.Join(m.Dir(), "data")) == 0 {
				t.Error("Mosquitto persisted nothing")
			}
			b, _ := os.ReadFile(filepath.Join(m.Dir(), "mosquitto.log"))
			c.add("broker log", "", b)
			c.add("signer log", "", []byte(out.String()))
			c.addFiles(t, "fleet directory", f.Dir)
		}
		fn(t, e)
	})
}

// leakTopic is where the checker's own sanity test publishes canaries on purpose.
const leakTopic = "dev/canary-leak/up/"

// Onboard a camera with canary values, then run it through everything it does — connect,
// forward the claim, stream to a viewer, rotate, survive a breach, answer a ping and the
// owner's privacy command, report telemetry — and capture everything the broker receives and
// keeps, every log line of the agent, signer and broker, and every file of the fleet: no
// canary may appear in any of them in any encoding (P2, P4, S6). Only the claim token leaves,
// once per onboarding, in its typed message. At rest the canaries are sealed (P3).
func TestCanaryValuesNeverLeaveTheDevice(t *testing.T) {
	const id = "cam-canary"
	clip, err := filepath.Abs(filepath.Join("..", "..", "device", "camera", "testdata", "clip.h264"))
	if err != nil {
		t.Fatal(err)
	}
	forEachCanaryBroker(t, id, func(t *testing.T, e *canaryEnv) {
		tag := randHex(t, 4)
		// What a phone app really sends: spaces, punctuation, the characters the QR format
		// escapes, non-ASCII; the tag makes each value unique.
		setupA := onboard.Setup{
			SSID:       `Zoë's Wi-Fi, "5G"; ` + tag,
			Passphrase: `correct horse: battery\staple; ` + tag,
			Nickname:   "Baby's room — crib cam (upstairs) " + tag,
			Claim:      "ClaimA_" + tag + "_" + randHex(t, 8),
			TimeZone:   "Europe/Paris",
		}
		// Later the owner moves the camera to another network: plain unique strings.
		setupB := onboard.Setup{
			SSID:       "CanarySSID-" + tag,
			Passphrase: "CanaryPass-" + tag,
			Nickname:   "CanaryNick-" + tag,
			Claim:      "ClaimB_" + tag + "_" + randHex(t, 8),
		}
		chk := newCanaryChecker(t, slices.Concat(canariesOf(setupA), canariesOf(setupB))...)
		c := e.c
		capClient := dialCapture(t, e.f, e.url, c)
		dir := enroll(t, e.f, id)

		// Phase 1: the real camagent binary, every stderr line captured.
		c.add("camagent onboard output", "", []byte(onboardProc(t, dir, setupA)))
		p := startProc(t, dir, e.url, "--video-file", clip, "--video-loopback")
		pingOK(t, &e.env, id)
		waitFor(t, 20*time.Second, "the claim token", func() bool { return len(c.messages(srcSubscriber, topic.Claim(id))) == 1 })
		waitFor(t, 20*time.Second, "telemetry", func() bool { return len(c.messages(srcSubscriber, topic.Telemetry(id))) >= 1 })

		r := dialRelay(t, e.f, e.url)
		v, ans := watchLive(t, r, id, signGrant(t, e.f, id, 0))
		// The broker carries the answer sealed to the viewer; the checker reads it opened too.
		c.add("the camera's answer, opened by its viewer", "", []byte(ans.SDP))
		fleetctl(t, "rotate", "--dir", e.f.Dir, "--broker", e.url, "--device", id)
		if bye, ok := r.await(t, v.offer.Session).(signal.Bye); !ok || bye.Reason != signal.ByeRevoked {
			t.Fatalf("after the rotation: %#v, want bye revoked", bye)
		}
		converged(t, &e.env, id, dir, 1)
		fleetctl(t, "breach", "--dir", e.f.Dir, "--broker", e.url, "--incident", "INC-CANARY")
		converged(t, &e.env, id, dir, 2)
		if rep := privacyCmd(t, &e.env, id, true, signGrant(t, e.f, id, 2)); rep.Error != wire.ErrCodeGrant {
			t.Fatalf("privacy with a view grant: %+v", rep)
		}
		for _, on := range []bool{true, false} {
			if rep := privacyCmd(t, &e.env, id, on, ownerGrant(t, e.f, id, 2)); !rep.OK {
				t.Fatalf("privacy %v with the owner's grant: %+v", on, rep)
			}
		}
		pingOK(t, &e.env, id)
		stopProc(t, p)
		c.add("camagent run log", "", []byte(p.log.String()))

		// Phase 2: onboarded again, the agent in process with telemetry every 100 ms.
		c.add("camagent onboard output", "", []byte(onboardProc(t, dir, setupB)))
		before := len(c.messages(srcSubscriber, topic.Telemetry(id)))
		a := startAgent(t, dir, e.url, func(cfg *agent.Config) {
			fastRotation(cfg)
			cfg.TelemetryInterval = 100 * time.Millisecond
		})
		a.waitConnected(t)
		waitFor(t, 20*time.Second, "the second claim token", func() bool { return len(c.messages(srcSubscriber, topic.Claim(id))) == 2 })
		waitFor(t, 20*time.Second, "three telemetry reports", func() bool { return len(c.messages(srcSubscriber, topic.Telemetry(id))) >= before+3 })
		pingOK(t, &e.env, id)
		a.stop(t)
		// The in-process agent's log is not redacted: a value the agent itself logged would
		// show here even though camagent run's logger would have hidden it.
		c.add("in-process agent log (unredacted)", "", []byte(a.log.Text()))

		// The checker's sanity: canaries an operator publishes on purpose are caught.
		leaks := []struct {
			kind, encoding string
			payload        string
		}{
			{"ssid", "json", `{"ssid":` + mustJSON(setupA.SSID) + `}`},
			{"nickname", "base64", base64.StdEncoding.EncodeToString([]byte("x" + setupB.Nickname))},
			{"passphrase", "hex", strings.ToUpper(hex.EncodeToString([]byte(setupA.Passphrase)))},
			{"ssid", "percent", "name=" + url.QueryEscape(setupA.SSID)},
			{"nickname", "raw", strings.ToUpper(setupA.Nickname)},
			{"passphrase", "json", `"` + escapeEveryChar(setupB.Passphrase) + `"`},
			{"ssid", "base64", base64.RawURLEncoding.EncodeToString([]byte("ab" + setupB.SSID))},
		}
		for i, l := range leaks {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := capClient.Publish(ctx, fmt.Sprintf("%sleak%d", leakTopic, i), 0, false, []byte(l.payload)); err != nil {
				t.Fatal(err)
			}
			cancel()
		}
		sources := []string{srcSubscriber}
		if e.hooked {
			sources = append(sources, srcHook)
		}
		for _, src := range sources {
			for i, l := range leaks {
				tp := fmt.Sprintf("%sleak%d", leakTopic, i)
				waitFor(t, 10*time.Second, src+" to capture "+tp, func() bool { return len(c.messages(src, tp)) == 1 })
				hits := chk.find(c.messages(src, tp)[0])
				if !slices.ContainsFunc(hits, func(h canaryHit) bool { return h.kind == l.kind && h.encoding == l.encoding }) {
					t.Errorf("the checker missed a deliberate leak of the %s as %s through the %s: hits %v", l.kind, l.encoding, src, hits)
				}
			}
		}

		e.stop(t)
		state := new(capture)
		if state.addFiles(t, "state directory", dir) == 0 {
			t.Fatal("empty state directory")
		}

		t.Run("no canary anywhere the broker, signer or logs hold", func(t *testing.T) {
			n := 0
			for _, r := range c.all() {
				if strings.HasPrefix(r.topic, leakTopic) {
					continue
				}
				n++
				for _, h := range chk.find(r.data) {
					t.Errorf("%s leaked as %s in %s %s: %s", h.kind, h.encoding, r.source, r.topic, h.excerpt)
				}
			}
			t.Logf("%d records checked (%d messages through the operator subscriber, %d through the hook)", n, countSource(c, srcSubscriber), countSource(c, srcHook))
			t.Logf("by source and topic: %s", summary(c))
		})
		t.Run("the claim token reached the broker once per onboarding, in its typed message", func(t *testing.T) {
			for _, src := range sources {
				var got []string
				for _, b := range c.messages(src, topic.Claim(id)) {
					var cl wire.Claim
					if err := wire.Decode(b, &cl); err != nil {
						t.Fatalf("%s: claim message %s: %v", src, b, err)
					}
					got = append(got, cl.Claim)
				}
				if !slices.Equal(got, []string{setupA.Claim, setupB.Claim}) {
					t.Errorf("%s saw claims %q, want %q then %q", src, got, setupA.Claim, setupB.Claim)
				}
			}
			// Nowhere else: not in another message, a log, the broker's files or the fleet's.
			for _, r := range c.all() {
				if r.topic == topic.Claim(id) {
					continue
				}
				for _, cl := range []string{setupA.Claim, setupB.Claim} {
					if bytes.Contains(r.data, []byte(cl)) {
						t.Errorf("the claim token is in the %s %s", r.source, r.topic)
					}
				}
			}
		})
		t.Run("telemetry carries a network tag that follows the network", func(t *testing.T) {
			tags := map[string]bool{}
			for _, b := range c.messages(srcSubscriber, topic.Telemetry(id)) {
				var tel wire.Telemetry
				if err := wire.Decode(b, &tel); err != nil {
					t.Fatalf("telemetry %s: %v", b, err)
				}
				tags[tel.NetworkTag] = true
			}
			if len(tags) != 2 || tags[""] {
				t.Fatalf("network tags %v: want one per network the camera was onboarded to", tags)
			}
		})
		t.Run("the captures are not empty", func(t *testing.T) {
			// The retained device state is in the broker's persistence, found by the same
			// checker: the persistence check above looked at real data.
			states := c.messages(srcSubscriber, topic.State(id))
			var ds wire.DeviceState
			if len(states) == 0 || wire.Decode(states[len(states)-1], &ds) != nil {
				t.Fatal("no device state captured")
			}
			serial := newCanaryChecker(t, canary{"serial", ds.CertSerial})
			found := false
			for _, r := range c.all() {
				if strings.HasPrefix(r.source, "broker persistence") && len(serial.find(r.data)) > 0 {
					found = true
				}
			}
			if !found {
				t.Errorf("the device's retained state (serial %s) is not in the broker's persistence files", ds.CertSerial)
			}
			for _, want := range []string{"level=DEBUG", "forwarded the owner's claim token", "command accepted", "viewer"} {
				if !strings.Contains(p.log.String(), want) {
					t.Errorf("camagent's log has no %q", want)
				}
			}
		})
		t.Run("the canaries are sealed at rest", func(t *testing.T) {
			for _, r := range state.all() {
				for _, h := range chk.find(r.data) {
					t.Errorf("%s in plaintext (%s) in %s: %s", h.kind, h.encoding, r.source, h.excerpt)
				}
			}
			sec, err := seal.LoadSecret(dir)
			if err != nil {
				t.Fatal(err)
			}
			st, err := seal.LoadSettings(dir, sec)
			if err != nil || st.SSID != setupB.SSID || st.Nickname != setupB.Nickname || st.Claim != "" {
				t.Fatalf("sealed settings %v, %v: want setup B without its forwarded claim", st, err)
			}
		})
	})
}

// summary counts the records by source and topic.
func summary(c *capture) string {
	n := map[string]int{}
	for _, r := range c.all() {
		k := r.source
		if r.topic != "" {
			k += " " + r.topic
		}
		n[k]++
	}
	var out []string
	for _, k := range slices.Sorted(maps.Keys(n)) {
		out = append(out, fmt.Sprintf("%s ×%d", k, n[k]))
	}
	return strings.Join(out, "; ")
}

func countSource(c *capture, src string) int {
	n := 0
	for _, r := range c.all() {
		if r.source == src {
			n++
		}
	}
	return n
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}
