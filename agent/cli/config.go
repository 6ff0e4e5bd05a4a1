package cli

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/camagent/camagent/device/gpio"
	"github.com/camagent/camagent/internal/cappedfile"
	"github.com/camagent/camagent/transport/mqtt"
	"github.com/camagent/camagent/transport/webrtc/signal"
)

// runOptions are the settings of `camagent run`, from its flags and the configuration file.
// `camagent selftest` takes the same ones.
type runOptions struct {
	config      string
	state       string
	broker      string
	logLevel    string
	logFormat   string
	videoFile   string
	videoExec   string
	maxViewers  int
	telemetry   time.Duration
	maxBackoff  time.Duration
	loopback    bool
	iceURLs     []string
	iceUser     string
	iceCredFile string
	relayOnly   bool
	ownICE      bool
	crashAfter  string
	pins        gpio.Names

	// fromFile holds, by key, the lines of the configuration file that set a flag (not those
	// the command line overrode, nor empty values), in the file's order: an error about a
	// value names the line it came from. nil: no file, or it set nothing.
	fromFile map[string][]configEntry
}

// runFlags defines the flags of `camagent run` on fs, writing into o. Every flag but --config
// is also a key of the configuration file.
func runFlags(fs *flag.FlagSet, o *runOptions) {
	fs.StringVar(&o.config, "config", "", "read settings from this file of \"key = value\" lines, the keys being these flags' names (see /etc/camagent/camagent.conf); flags on the command line override it; SIGHUP re-reads it")
	fs.StringVar(&o.state, "state", defaultStateDir, "state directory (0700)")
	fs.StringVar(&o.broker, "broker", "", "broker URL (mqtts://host:port); default: the bundle's")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&o.videoFile, "video-file", "", "serve live video from this H.264 Annex B file, looped in real time (constrained baseline for browsers)")
	fs.StringVar(&o.videoExec, "video-exec", "", "serve live video from this command's H.264 Annex B standard output, e.g. \"rpicam-vid -t 0 --inline --codec h264 --profile baseline -o -\" (split on spaces; no shell)")
	fs.IntVar(&o.maxViewers, "max-viewers", 0, "live viewers at most (0: the default, 16)")
	fs.DurationVar(&o.telemetry, "telemetry-interval", 5*time.Minute, "how often to publish telemetry while connected (one report at each connect too); 0: never")
	fs.DurationVar(&o.maxBackoff, "reconnect-max-backoff", mqtt.DefaultMaxBackoff, "cap of the reconnect backoff (from 1s, doubling, full jitter), 1s to 1h: a fleet that lost its broker comes back spread over about this time, so size it to the fleet's devices divided by the connections per second its broker takes (10,000 devices, 400 a second: 30s; the default suits a million devices and 3,300 a second)")
	fs.BoolVar(&o.loopback, "video-loopback", false, "offer ICE candidates on 127.0.0.1 only (a demo or test on one machine)")
	fs.Var(&listFlag{values: &o.iceURLs, max: signal.MaxICEServers}, "video-ice-server", "a STUN or TURN server the camera uses for every viewer, besides those a viewer's offer brings: stun:HOST:PORT, turn:HOST:PORT?transport=udp (or tcp), turns:HOST:PORT; repeat for more, at most 4 (in the configuration file too: one line each). TURN servers take --video-ice-user and --video-ice-credential-file; no credentials in the URL")
	fs.StringVar(&o.iceUser, "video-ice-user", "", "TURN username for every turn: and turns: --video-ice-server")
	fs.StringVar(&o.iceCredFile, "video-ice-credential-file", "", "file holding the TURN credential for every turn: and turns: --video-ice-server, on its first line; not readable by others (a credential on the command line would be visible to every local user). Never logged")
	fs.BoolVar(&o.ownICE, "video-own-ice-servers-only", false, "use the --video-ice-server servers alone and ignore those a viewer's offer names: every TURN server the camera uses sees its address, so with --video-relay-only only yours do (needs a turn: server with --video-relay-only)")
	fs.BoolVar(&o.relayOnly, "video-relay-only", false, "relay every viewer's video through a TURN server (ICE transport policy relay): the camera offers no address of its own; an offer is refused when neither --video-ice-server nor the offer names a TURN server")
	fs.StringVar(&o.crashAfter, "crash-after", "", "fault injection for crash tests: SIGKILL this process right after the named rotation step (pending, requested, issued, switched, confirmed, committed, wiped)")
	fs.StringVar(&o.pins.LED, "led-pin", "", "status LED pin, by the GPIO driver's name (GPIO17 on a Raspberry Pi: the BCM number); lit when high; empty: no LED")
	fs.StringVar(&o.pins.Button, "button-pin", "", "reset button pin, to ground with the internal pull-up: a short press logs the status, held 10 s it resets the device to factory state; empty: no button")
	fs.StringVar(&o.pins.Privacy, "privacy-pin", "", "privacy switch pin, to ground with the internal pull-up: privacy is on (camera off) while the switch is open or disconnected; empty: no switch")
}

// configFileKey reports whether flag name may be set from the configuration file: not
// --config itself, and not the crash tests' fault injection, which in a service's file would
// kill the agent at the same step of every rotation, restart after restart.
func configFileKey(name string) bool { return name != "config" && name != "crash-after" }

// ConfigKeys returns the keys the configuration file of `camagent run` may set (configFileKey),
// sorted. packaging/camagent.conf must document every one.
func ConfigKeys() []string {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	runFlags(fs, &runOptions{})
	var keys []string
	fs.VisitAll(func(f *flag.Flag) {
		if configFileKey(f.Name) {
			keys = append(keys, f.Name)
		}
	})
	return keys
}

// repeatableFlag is a flag.Value that may be given more than once, each time adding a value to
// those before. The configuration file may give its key on more than one line, too.
type repeatableFlag interface {
	flag.Value
	repeatable()
}

// isRepeatable reports whether the flag f may be given more than once; false for nil.
func isRepeatable(f *flag.Flag) bool {
	if f == nil {
		return false
	}
	_, ok := f.Value.(repeatableFlag)
	return ok
}

// listFlag is a repeatable string flag: each use appends its value to *values, and a use past
// max of them is an error (from the configuration file, one naming the line).
type listFlag struct {
	values *[]string
	max    int
}

var _ repeatableFlag = (*listFlag)(nil)

// String returns the values, space-separated. The flag package calls it on a zero listFlag too.
func (l *listFlag) String() string {
	if l == nil || l.values == nil {
		return ""
	}
	return strings.Join(*l.values, " ")
}

func (l *listFlag) Set(v string) error {
	if len(*l.values) >= l.max {
		return fmt.Errorf("given more than %d times", l.max)
	}
	*l.values = append(*l.values, v)
	return nil
}

func (*listFlag) repeatable() {}

// maxConfigSize caps the configuration file.
const maxConfigSize = 64 << 10

// configEntry is one "key = value" line of a configuration file.
type configEntry struct {
	Key, Value string
	Line       int
}

// ConfigError is a configuration file problem, naming the file and line.
type ConfigError struct {
	File string
	Line int // 0: the file as a whole
	Err  error
}

func (e *ConfigError) Error() string {
	if e.Line == 0 {
		return fmt.Sprintf("%s: %v", e.File, e.Err)
	}
	return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err)
}

func (e *ConfigError) Unwrap() error { return e.Err }

// parseConfig parses a configuration file (packaging/camagent.conf documents the format):
// "key = value" lines, the value being the rest of the line after the first "=" with the
// spaces around it removed; empty lines and lines starting with "#" are skipped. A "#" after a
// value is part of the value (a path or a URL may hold one): comments go on lines of their own.
// A key that known rejects, a line without "=", a repeated key and a line that is not UTF-8 or
// holds a control character are errors naming the line. A key that repeatable accepts (a
// repeatable flag's) may be given on any number of lines; the entries are in the file's order.
// name is the file's name for errors.
func parseConfig(b []byte, name string, known, repeatable func(key string) bool) ([]configEntry, error) {
	if len(b) > maxConfigSize {
		return nil, &ConfigError{File: name, Err: fmt.Errorf("over %d bytes", maxConfigSize)}
	}
	var entries []configEntry
	seen := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), maxConfigSize+1)
	for n := 1; sc.Scan(); n++ {
		raw := strings.TrimSuffix(sc.Text(), "\r")
		bad := func(format string, args ...any) error {
			return &ConfigError{File: name, Line: n, Err: fmt.Errorf(format, args...)}
		}
		if !utf8.ValidString(raw) {
			return nil, bad("not UTF-8")
		}
		if strings.ContainsFunc(raw, func(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f }) {
			return nil, bad("control character")
		}
		line := strings.TrimSpace(raw)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, bad("want \"key = value\", got %q", line)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch {
		case k == "":
			return nil, bad("no key before \"=\"")
		case !known(k):
			return nil, bad("unknown key %q", k)
		}
		switch first, dup := seen[k]; {
		case !dup:
			seen[k] = n
		case !repeatable(k):
			return nil, bad("key %q given twice (first on line %d)", k, first)
		}
		entries = append(entries, configEntry{Key: k, Value: v, Line: n})
	}
	if err := sc.Err(); err != nil {
		return nil, &ConfigError{File: name, Err: err}
	}
	return entries, nil
}

// applyConfigFile reads the configuration file at path and sets, on fs, every flag it gives a
// non-empty value that the command line did not set, and returns the entries it set by key.
// keys are the flags the file may set. A repeatable flag's lines are set in the file's order,
// and none of them when the command line gave the flag. A value the flag refuses is a
// *ConfigError naming the line and the key (fileValueError).
func applyConfigFile(fs *flag.FlagSet, path string, keys map[string]bool) (map[string][]configEntry, error) {
	b, err := cappedfile.Read(path, maxConfigSize)
	if err != nil {
		return nil, &ConfigError{File: path, Err: err}
	}
	entries, err := parseConfig(b, path,
		func(k string) bool { return keys[k] },
		func(k string) bool { return isRepeatable(fs.Lookup(k)) })
	if err != nil {
		return nil, err
	}
	onCommandLine := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })
	var set map[string][]configEntry
	for _, e := range entries {
		if e.Value == "" || onCommandLine[e.Key] {
			continue // the default, or overridden
		}
		if err := fs.Set(e.Key, e.Value); err != nil {
			return nil, &ConfigError{File: path, Line: e.Line, Err: fileValueError(e, err.Error())}
		}
		if set == nil {
			set = map[string][]configEntry{}
		}
		set[e.Key] = append(set[e.Key], e)
	}
	return set, nil
}

// secretKeys are the configuration file's keys whose values may carry a secret: the broker's
// and the ICE servers' URLs (a user name and password in the URL: the agent refuses an ICE
// server's, but the mistake is made), the TURN user name (half of a TURN credential; the
// credential itself is in its own file, by design, and only that file's name is here), and the
// video command (an RTSP URL with a password on it). An error never quotes their values.
var secretKeys = map[string]bool{"broker": true, "video-ice-server": true, "video-ice-user": true, "video-exec": true}

// commentRule is said when a refused value holds what looks like a comment after it.
const commentRule = `comments go on a line of their own, starting with "#": a "#" after a value is part of the value`

// inlineComment reports whether v holds a "#" after a space or a tab, as a comment after the
// value would: the value keeps it (a path or URL may hold a "#"), so it only explains a value
// that is refused, or is warned about (commentedValues).
func inlineComment(v string) bool {
	return strings.Contains(v, " #") || strings.Contains(v, "\t#")
}

// fileValueError says why the configuration file's entry e is refused: the key, the value
// quoted unless the key is a secretKey (and then, the value is taken out of why too), the
// reason, and commentRule when the value seems to carry a comment.
func fileValueError(e configEntry, why string) error {
	shown := ""
	if secretKeys[e.Key] {
		// Taken out of why: the value as it is, as Go quotes it, and its part before a "#"
		// (a URL parser stops there).
		v := []string{e.Value, strconv.Quote(e.Value)}
		v[1] = v[1][1 : len(v[1])-1]
		if i := strings.Index(e.Value, "#"); i > 0 {
			v = append(v, strings.TrimSpace(e.Value[:i]))
		}
		for _, s := range v {
			if len(s) >= 4 { // shorter, it would only garble the message
				why = strings.ReplaceAll(why, s, "(value not shown)")
			}
		}
	} else {
		shown = " = " + strconv.Quote(e.Value)
	}
	if inlineComment(e.Value) {
		why += "; " + commentRule
	}
	return fmt.Errorf("%s%s: %s", e.Key, shown, why)
}

// settingError is a value of one flag that build refuses. Error is the message for the command
// line; a value that came from the configuration file is reported by fileError instead.
type settingError struct {
	Flag  string // the flag's name, without the dashes
	Nth   int    // for a repeatable flag, which of its values, from 1; 0: the flag as a whole
	Shown string // the value as the command-line message shows it; "": not shown
	Why   string // what is wrong with the value; never the value of a secretKey
}

// refuse returns a settingError for flag: shown is the value as the message shows it ("": not
// shown), why what is wrong.
func refuse(flag, shown, why string) *settingError {
	return &settingError{Flag: flag, Shown: shown, Why: why}
}

func (e *settingError) Error() string {
	if e.Shown == "" {
		return "--" + e.Flag + ": " + e.Why
	}
	return "--" + e.Flag + " " + e.Shown + ": " + e.Why
}

// fileError returns err as a *ConfigError naming the file, the line and the key when err is a
// settingError about a value the configuration file gave; otherwise err as it is.
func (o *runOptions) fileError(err error) error {
	var se *settingError
	if !errors.As(err, &se) {
		return err
	}
	entries := o.fromFile[se.Flag]
	i := max(se.Nth-1, 0)
	if i >= len(entries) {
		return err // from the command line, or the default
	}
	e := entries[i]
	return &ConfigError{File: o.config, Line: e.Line, Err: fileValueError(e, se.Why)}
}

// commentedValues returns the configuration file's entries in use whose values hold what looks
// like a comment (inlineComment), in the file's order: accepted, they are kept as they are,
// and camagent run and selftest warn about them.
func (o *runOptions) commentedValues() []configEntry {
	var c []configEntry
	for _, es := range o.fromFile {
		for _, e := range es {
			if inlineComment(e.Value) {
				c = append(c, e)
			}
		}
	}
	slices.SortFunc(c, func(a, b configEntry) int { return a.Line - b.Line })
	return c
}

// parseRunArgs parses the arguments of `camagent run` (or of a command taking the same
// settings: extra defines its own flags on the same set), then the configuration file named
// by --config. The file may set only run's flags.
func parseRunArgs(name string, args []string, stderr io.Writer, extra func(*flag.FlagSet)) (*runOptions, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &runOptions{}
	runFlags(fs, o)
	keys := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) {
		if configFileKey(f.Name) {
			keys[f.Name] = true
		}
	})
	if extra != nil {
		extra(fs)
	}
	err := fs.Parse(args)
	if err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("%s: unexpected argument %q", name, fs.Arg(0))
	}
	if o.config != "" {
		if o.fromFile, err = applyConfigFile(fs, o.config, keys); err != nil {
			return nil, err
		}
	}
	return o, nil
}
