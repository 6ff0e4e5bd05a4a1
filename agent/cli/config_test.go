package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/transport/mqtt"
	"github.com/camagent/camagent/transport/webrtc/signal"
)

// runKeys returns, for parseConfig, which keys of `camagent run` the configuration file may set
// and which of them it may repeat.
func runKeys(t *testing.T) (known, repeatable func(key string) bool) {
	t.Helper()
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	runFlags(fs, &runOptions{})
	keys, repeat := map[string]bool{}, map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) {
		if configFileKey(f.Name) {
			keys[f.Name] = true
			repeat[f.Name] = isRepeatable(f)
		}
	})
	return func(k string) bool { return keys[k] }, func(k string) bool { return repeat[k] }
}

func TestTheShippedConfigFileParsesWithEveryKeyKnown(t *testing.T) {
	path := filepath.Join("..", "..", "packaging", "camagent.conf")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	known, repeatable := runKeys(t)
	if _, err := parseConfig(b, path, known, repeatable); err != nil {
		t.Fatalf("the shipped file does not parse: %v", err)
	}
	// Every key it documents, commented out, is one of run's flags: uncomment them all.
	var documented []string
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if k, _, ok := strings.Cut(strings.TrimPrefix(l, "# "), " ="); ok && strings.HasPrefix(l, "# ") && !strings.Contains(k, " ") {
			documented = append(documented, k)
			lines = append(lines, strings.TrimPrefix(l, "# "))
		}
	}
	if len(documented) < 10 {
		t.Fatalf("found only %d documented keys: %v", len(documented), documented)
	}
	entries, err := parseConfig([]byte(strings.Join(lines, "\n")), path, known, repeatable)
	if err != nil {
		t.Fatalf("the documented keys, uncommented: %v", err)
	}
	if len(entries) != len(documented) {
		t.Fatalf("parsed %d entries from %d documented keys", len(entries), len(documented))
	}
	// And the documented values are accepted by the flags (the file's defaults are valid).
	dir := t.TempDir()
	conf := filepath.Join(dir, "all.conf")
	if err := os.WriteFile(conf, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := parseRunArgs("camagent run", []string{"--config", conf}, io.Discard, nil)
	if err != nil {
		t.Fatalf("the documented values are refused: %v", err)
	}
	if o.state != "/var/lib/camagent" || !strings.HasPrefix(o.videoExec, "rpicam-vid ") || o.logLevel != "info" {
		t.Errorf("parsed %+v", o)
	}
}

func TestConfigFileErrorsNameTheLine(t *testing.T) {
	known := func(k string) bool { return k == "state" || k == "broker" }
	repeatable := func(k string) bool { return k == "broker" }
	for _, tt := range []struct {
		name, text string
		line       int
		says       string
	}{
		{"an unknown key", "# c\nstate = /x\nbrokr = mqtts://b:8883\n", 3, `unknown key "brokr"`},
		{"a line without =", "\n\nstate /x\n", 3, `want "key = value"`},
		{"a repeated key", "state = /a\n# again\nstate = /b\n", 3, `given twice (first on line 1)`},
		{"a repeated key among a repeatable one's lines", "broker = a\nstate = /a\nbroker = b\nstate = /b\n", 4, `key "state" given twice (first on line 2)`},
		{"an empty key", "= /a\n", 1, "no key"},
		{"a control character", "state = /a\x00b\n", 1, "control character"},
		{"a line that is not UTF-8", "broker = \xff\n", 1, "not UTF-8"},
		{"the config key itself", "config = /etc/other.conf\n", 1, `unknown key "config"`},
		{"the crash tests' fault injection", "state = /x\ncrash-after = issued\n", 2, `unknown key "crash-after"`},
	} {
		t.Run("refuses "+tt.name, func(t *testing.T) {
			_, err := parseConfig([]byte(tt.text), "test.conf", known, repeatable)
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want a *ConfigError", err)
			}
			if ce.Line != tt.line || !strings.HasPrefix(err.Error(), "test.conf:") || !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("err = %q, want line %d saying %q", err, tt.line, tt.says)
			}
		})
	}
	t.Run("reads a repeatable key's lines in the file's order, empty ones too", func(t *testing.T) {
		got, err := parseConfig([]byte("broker = b1\nstate = /s\nbroker =\n# b3\nbroker = b3\n"), "t.conf", known, repeatable)
		if err != nil {
			t.Fatal(err)
		}
		want := []configEntry{{"broker", "b1", 1}, {"state", "/s", 2}, {"broker", "", 3}, {"broker", "b3", 5}}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	})
	t.Run("reads comments, blank lines, spaces and values with = and spaces", func(t *testing.T) {
		got, err := parseConfig([]byte("# comment\n\n   # indented comment\r\n  state\t=  /var/lib/my cam  \r\nbroker=mqtts://h:1?a=b\nstate2 =\n"), "t.conf",
			func(k string) bool { return k == "state" || k == "broker" || k == "state2" }, func(string) bool { return false })
		if err != nil {
			t.Fatal(err)
		}
		want := []configEntry{{"state", "/var/lib/my cam", 4}, {"broker", "mqtts://h:1?a=b", 5}, {"state2", "", 6}}
		if len(got) != len(want) {
			t.Fatalf("got %v", got)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("entry %d = %+v, want %+v", i, got[i], want[i])
			}
		}
	})
}

func TestCommandLineFlagsOverrideTheConfigFile(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "camagent.conf")
	if err := os.WriteFile(conf, []byte("state = /from/file\nbroker = mqtts://file:8883\nlog-level = debug\nmax-viewers = 3\nled-pin = GPIO17\nvideo-loopback = true\nvideo-file =\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := parseRunArgs("camagent run", []string{"--config", conf, "--broker", "mqtts://flag:8883"}, io.Discard, nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.state != "/from/file" || o.broker != "mqtts://flag:8883" || o.logLevel != "debug" || o.maxViewers != 3 ||
		o.pins.LED != "GPIO17" || !o.loopback || o.videoFile != "" || o.logFormat != "text" {
		t.Fatalf("options = %+v", o)
	}

	t.Run("the reconnect backoff cap reaches the agent, within its bounds", func(t *testing.T) {
		for arg, want := range map[string]time.Duration{"": mqtt.DefaultMaxBackoff, "30s": 30 * time.Second, "1h": time.Hour, "999ms": 0, "61m": 0} {
			args := []string{"--state", dir}
			if arg != "" {
				args = append(args, "--reconnect-max-backoff", arg)
			}
			o, err := parseRunArgs("camagent run", args, io.Discard, nil)
			if err != nil {
				t.Fatal(err)
			}
			b, err := o.build(io.Discard)
			if want == 0 {
				if err == nil || !strings.Contains(err.Error(), "--reconnect-max-backoff "+o.maxBackoff.String()) {
					t.Errorf("%s: err = %v, want one naming the flag and the value", arg, err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s: %v", arg, err)
			}
			if b.cfg.MaxBackoff != want {
				t.Errorf("%s: agent MaxBackoff = %v, want %v", arg, b.cfg.MaxBackoff, want)
			}
		}
	})
	t.Run("a bad value names the line", func(t *testing.T) {
		bad := filepath.Join(dir, "bad.conf")
		os.WriteFile(bad, []byte("# x\nmax-viewers = many\n"), 0o600)
		_, err := parseRunArgs("camagent run", []string{"--config", bad}, io.Discard, nil)
		if err == nil || !strings.Contains(err.Error(), bad+":2: max-viewers") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("a missing file is an error naming it", func(t *testing.T) {
		_, err := parseRunArgs("camagent run", []string{"--config", filepath.Join(dir, "none.conf")}, io.Discard, nil)
		if err == nil || !strings.Contains(err.Error(), "none.conf") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("selftest's own flags are not config keys", func(t *testing.T) {
		st := filepath.Join(dir, "st.conf")
		os.WriteFile(st, []byte("timeout = 5s\n"), 0o600)
		_, err := parseRunArgs("camagent selftest", []string{"--config", st}, io.Discard, func(fs *flag.FlagSet) { fs.Duration("timeout", 0, "") })
		if err == nil || !strings.Contains(err.Error(), `st.conf:1: unknown key "timeout"`) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestRepeatableFlagsRepeatInTheConfigFile(t *testing.T) {
	dir := t.TempDir()
	credFile := filepath.Join(dir, "turn-credential")
	if err := os.WriteFile(credFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const (
		turnURL = "turn:127.0.0.1:3478?transport=udp"
		stunURL = "stun:127.0.0.1:3479"
	)
	write := func(t *testing.T, text string) string {
		t.Helper()
		conf := filepath.Join(t.TempDir(), "camagent.conf")
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return conf
	}
	twoServers := "video-ice-server = " + turnURL + "\nvideo-ice-user = cam\n# empty: skipped\nvideo-ice-server =\n" +
		"video-ice-server = " + stunURL + "\nvideo-ice-credential-file = " + credFile + "\n"

	t.Run("two video-ice-server lines give two servers, in the file's order", func(t *testing.T) {
		o, err := parseRunArgs("camagent run", []string{"--config", write(t, twoServers), "--state", dir}, io.Discard, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, err := o.build(io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		want := []signal.ICEServer{
			{URLs: []string{turnURL}, Username: "cam", Credential: "s3cret"},
			{URLs: []string{stunURL}},
		}
		if !reflect.DeepEqual(b.cfg.VideoICEServers, want) {
			t.Fatalf("VideoICEServers = %+v, want %+v", b.cfg.VideoICEServers, want)
		}
	})
	t.Run("relay-only with the camera's own servers only needs a TURN server of its own", func(t *testing.T) {
		stunOnly := "video-ice-server = " + stunURL + "\nvideo-relay-only = true\nvideo-own-ice-servers-only = true\n"
		o, err := parseRunArgs("camagent run", []string{"--config", write(t, stunOnly), "--state", dir}, io.Discard, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := o.build(io.Discard); err == nil || !strings.Contains(err.Error(), "--video-own-ice-servers-only") {
			t.Fatalf("build = %v, want an error naming --video-own-ice-servers-only", err)
		}
		o, err = parseRunArgs("camagent run", []string{"--config", write(t, twoServers+"video-relay-only = true\nvideo-own-ice-servers-only = true\n"), "--state", dir}, io.Discard, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, err := o.build(io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if !b.cfg.VideoRelayOnly || !b.cfg.VideoOwnICEServersOnly {
			t.Fatalf("config %+v", b.cfg)
		}
	})
	t.Run("a --video-ice-server on the command line replaces all of the file's", func(t *testing.T) {
		o, err := parseRunArgs("camagent run", []string{"--config", write(t, twoServers), "--video-ice-server", "stun:127.0.0.1:9"}, io.Discard, nil)
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"stun:127.0.0.1:9"}; !slices.Equal(o.iceURLs, want) {
			t.Fatalf("iceURLs = %q, want %q", o.iceURLs, want)
		}
		if o.iceUser != "cam" || o.iceCredFile != credFile {
			t.Errorf("the file's other keys were not applied: %+v", o)
		}
	})
	t.Run("another key given twice is still an error naming both lines", func(t *testing.T) {
		conf := write(t, twoServers+"state = /a\n# again\nstate = /b\n")
		_, err := parseRunArgs("camagent run", []string{"--config", conf}, io.Discard, nil)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Line != 9 || !strings.Contains(err.Error(), conf+`:9: key "state" given twice (first on line 7)`) {
			t.Fatalf("err = %v, want one naming lines 9 and 7", err)
		}
	})
	t.Run("a fifth video-ice-server line is an error naming it", func(t *testing.T) {
		var lines []string
		for i := range 5 {
			lines = append(lines, fmt.Sprintf("video-ice-server = stun:127.0.0.1:%d", 3478+i))
		}
		four := write(t, "# four servers\n"+strings.Join(lines[:4], "\n")+"\n")
		if o, err := parseRunArgs("camagent run", []string{"--config", four}, io.Discard, nil); err != nil || len(o.iceURLs) != 4 {
			t.Fatalf("four servers are refused: %v", err)
		}
		conf := write(t, "# five servers\n"+strings.Join(lines, "\n")+"\n")
		_, err := parseRunArgs("camagent run", []string{"--config", conf}, io.Discard, nil)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Line != 6 || !strings.Contains(err.Error(), conf+":6: video-ice-server: given more than 4 times") {
			t.Fatalf("err = %v, want one naming line 6", err)
		}
	})
}

// FuzzParseConfig feeds arbitrary files to the configuration parser: it never panics, and what
// it accepts is well formed: known keys, each once but for a repeatable flag's, values without
// control characters or surrounding spaces, on increasing lines.
func FuzzParseConfig(f *testing.F) {
	if b, err := os.ReadFile(filepath.Join("..", "..", "packaging", "camagent.conf")); err == nil {
		f.Add(b)
	}
	f.Add([]byte("state = /var/lib/camagent\nbroker = mqtts://broker.example:8883\n"))
	f.Add([]byte("# comment\n\nled-pin=GPIO17\r\nvideo-exec = rpicam-vid -t 0 -o -\n"))
	f.Add([]byte("state\n"))
	f.Add([]byte("state = a\nstate = b\n"))
	f.Add([]byte("video-ice-server = stun:a:1\nstate = a\nvideo-ice-server =\nvideo-ice-server = turn:b:2\n"))
	keys, repeat := map[string]bool{}, map[string]bool{}
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	runFlags(fs, &runOptions{})
	fs.VisitAll(func(fl *flag.Flag) { keys[fl.Name], repeat[fl.Name] = configFileKey(fl.Name), isRepeatable(fl) })
	if !repeat["video-ice-server"] {
		f.Fatal("video-ice-server is not repeatable")
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		entries, err := parseConfig(b, "fuzz.conf", func(k string) bool { return keys[k] }, func(k string) bool { return repeat[k] })
		if err != nil {
			var ce *ConfigError
			if !errors.As(err, &ce) || !strings.HasPrefix(err.Error(), "fuzz.conf") {
				t.Fatalf("error %q is not a *ConfigError naming the file", err)
			}
			return
		}
		if len(b) > maxConfigSize {
			t.Fatalf("accepted %d bytes", len(b))
		}
		seen := map[string]bool{}
		last := 0
		for _, e := range entries {
			if !keys[e.Key] || seen[e.Key] && !repeat[e.Key] {
				t.Fatalf("accepted key %q (known %v, seen %v)", e.Key, keys[e.Key], seen[e.Key])
			}
			seen[e.Key] = true
			if e.Line <= last {
				t.Fatalf("line %d after line %d", e.Line, last)
			}
			last = e.Line
			if strings.TrimSpace(e.Value) != e.Value || strings.ContainsFunc(e.Value, func(r rune) bool { return r < 0x20 && r != '\t' }) {
				t.Fatalf("accepted value %q", e.Value)
			}
		}
	})
}

// buildConf reads a configuration file of text and builds it as camagent run does at start.
func buildConf(t *testing.T, text string, args ...string) (*runOptions, error) {
	t.Helper()
	conf := writeConf(t, text)
	o, err := parseRunArgs("camagent run", append([]string{"--config", conf}, args...), io.Discard, nil)
	if err == nil {
		_, err = o.build(io.Discard)
	}
	return o, err
}

// A value from the configuration file that camagent run refuses, when the flag parses it or
// when the agent's settings are checked at start, is reported by the file, the line and the
// key, as the line a person must edit. A value of a key that may carry a secret is never
// quoted. A value that seems to carry a comment after it says where comments go.
func TestConfigFileValuesRefusedAtStartNameTheLine(t *testing.T) {
	dir := t.TempDir()
	credFile := filepath.Join(t.TempDir(), "turn-credential")
	if err := os.WriteFile(credFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, line string
		says       []string
		secret     string // must not be in the error
	}{
		{"a number that is not one", "max-viewers = ten", []string{`max-viewers = "ten": `}, ""},
		{"a number out of range", "max-viewers = 2000", []string{`max-viewers = "2000": want 1 to 1000`}, ""},
		{"a duration out of range", "reconnect-max-backoff = 2h", []string{`reconnect-max-backoff = "2h": want 1s to 1h`}, ""},
		{"a duration that is not one", "telemetry-interval = 5 minutes", []string{`telemetry-interval = "5 minutes": `}, ""},
		{"an unknown log level", "log-level = verbose", []string{`log-level = "verbose": want debug, info, warn or error`}, ""},
		{"an unknown log format", "log-format = xml", []string{`log-format = "xml": want text or json`}, ""},
		{"a missing video file", "video-file = /nonexistent/clip.h264", []string{`video-file = "/nonexistent/clip.h264": `, "no such file"}, ""},
		{"a broker URL that is not TLS", "broker = http://broker.example:1883", []string{"broker: ", "not TLS"}, "broker.example"},
		{"a broker URL with a password", "broker = mqtts://admin:hunter2@broker.example", []string{"broker: not a usable broker URL"}, "hunter2"},
		{"an ICE server URL with a password", "video-ice-server = turn:alice:hunter2@turn.example:3478", []string{"video-ice-server: has an @"}, "hunter2"},
		{"a TURN user without a TURN server", "video-ice-user = alice-4f9a", []string{"video-ice-user: no turn: or turns: --video-ice-server"}, "alice-4f9a"},
		{"a credential file others can read", "video-ice-server = turn:turn.example:3478\nvideo-ice-user = alice\nvideo-ice-credential-file = " + filepath.Join(dir, "none"),
			[]string{`video-ice-credential-file = "` + filepath.Join(dir, "none") + `": `}, "s3cret"},
	} {
		t.Run("refuses "+tt.name, func(t *testing.T) {
			text := "# camagent\nstate = " + dir + "\n" + tt.line + "\n"
			_, err := buildConf(t, text)
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want a *ConfigError", err)
			}
			line := strings.Count(text, "\n") // the last line
			if ce.Line != line || !strings.Contains(err.Error(), fmt.Sprintf("camagent.conf:%d: ", line)) {
				t.Errorf("err = %q, want it to name line %d", err, line)
			}
			for _, s := range tt.says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("err = %q, want it to say %q", err, s)
				}
			}
			if tt.secret != "" && strings.Contains(err.Error(), tt.secret) {
				t.Errorf("err = %q quotes %q", err, tt.secret)
			}
			if strings.Contains(err.Error(), "comments go") {
				t.Errorf("err = %q speaks of comments for a value without one", err)
			}
		})
	}
	for _, tt := range []struct{ key, line, secret string }{
		{"max-viewers", "max-viewers = 4 # at most four", ""},
		{"telemetry-interval", "telemetry-interval = 10m  # every ten minutes", ""},
		{"log-level", "log-level = debug\t# while testing", ""},
		{"video-loopback", "video-loopback = true # demo", ""},
		{"broker", "broker = mqtts://broker.example:8883 # production", "broker.example"},
		{"broker", "broker = mqtts://admin:hunter2@broker.example:8883 # production", "hunter2"},
		{"video-ice-user", "video-ice-user = alice-4f9a # our TURN account", "alice-4f9a"},
	} {
		t.Run("says comments go on their own line: "+tt.line, func(t *testing.T) {
			_, err := buildConf(t, "state = "+dir+"\n"+tt.line+"\n")
			if err == nil || !strings.Contains(err.Error(), "camagent.conf:2: "+tt.key) || !strings.Contains(err.Error(), commentRule) {
				t.Fatalf("err = %v, want one naming line 2 and %s and saying %q", err, tt.key, commentRule)
			}
			if tt.secret != "" && strings.Contains(err.Error(), tt.secret) {
				t.Errorf("err = %q quotes %q", err, tt.secret)
			}
		})
	}
	t.Run("a value the command line gives is named by its flag", func(t *testing.T) {
		_, err := buildConf(t, "state = "+dir+"\nmax-viewers = 2\n", "--max-viewers", "2000")
		if err == nil || !strings.HasPrefix(err.Error(), "--max-viewers 2000: want 1 to 1000") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("the nth ICE server names its own line", func(t *testing.T) {
		_, err := buildConf(t, "state = "+dir+"\nvideo-ice-server = stun:stun.example:3478\n# the relay\nvideo-ice-server = turn:turn.example:3478\n")
		if err == nil || !strings.Contains(err.Error(), "camagent.conf:4: video-ice-server: a TURN server needs") {
			t.Fatalf("err = %v", err)
		}
	})
}

// A "#" in a value the flag accepts stays part of the value, as it always did: a path or a URL
// may hold one. Only what looks like a comment after a value (" #") is pointed out.
func TestConfigFileValuesKeepTheirHash(t *testing.T) {
	state := filepath.Join(t.TempDir(), "cam #1")
	o, err := buildConf(t, "state = "+state+"\nvideo-file = "+clip+"\nlog-level=info\n")
	if err != nil {
		t.Fatal(err)
	}
	if o.state != state {
		t.Fatalf("state = %q, want %q", o.state, state)
	}
	if c := o.commentedValues(); len(c) != 1 || c[0].Key != "state" || c[0].Line != 1 {
		t.Fatalf("commented values %+v, want the state line", c)
	}
	o, err = buildConf(t, "state = "+t.TempDir()+"/a#b\n")
	if err != nil || len(o.commentedValues()) != 0 || !strings.HasSuffix(o.state, "/a#b") {
		t.Fatalf("state %q, %v, commented %v", o.state, err, o.commentedValues())
	}
}
