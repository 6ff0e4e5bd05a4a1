// Package cli is camagent's command line: enroll, run and version. It parses arguments and
// calls the agent package; it never exits the process (main does).
//
// run and selftest read a configuration file of "key = value" lines (--config; the format is
// packaging/camagent.conf's header). A line starting with "#" is a comment, and only such a
// line: a "#" after a value is part of the value, as a path or a URL may hold one, so a value
// that holds " #" is warned of, and one that is refused says that comments go on their own
// line. A value refused, when the flag parses it or when run checks its settings, is an
// error naming the file, the line and the key; it never quotes the value of a key that may
// hold a secret (secretKeys).
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/camagent/camagent/agent"
	"github.com/camagent/camagent/agent/privacy/egress"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/device/camera"
	"github.com/camagent/camagent/internal/buildinfo"
	"github.com/camagent/camagent/internal/cappedfile"
	"github.com/camagent/camagent/transport/mqtt"
	"github.com/camagent/camagent/transport/webrtc"
	"github.com/camagent/camagent/transport/webrtc/signal"
)

const usage = `usage: camagent <command> [flags]

commands:
  enroll --state DIR --id ID      make the device key (once) and a CSR for fleetctl enroll
  enroll --state DIR --bundle F   install the bundle fleetctl enroll wrote for this device
  run --config FILE               run the agent until SIGINT/SIGTERM; SIGHUP re-reads FILE
  selftest --config FILE          check clock, credentials, broker, camera and storage (QA)
  onboard --state DIR --file F    seal the setup payload a phone app handed the camera (F or - for stdin)
  reset --state DIR --yes         factory reset: wipe keys, token, sealed settings and journal
  version                         print the version

Run 'camagent <command> -h' for a command's flags.
`

// Run runs one camagent command, with no service manager around it (see RunEnv).
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runCommand(ctx, args, stdout, stderr, Env{})
}

func runCommand(ctx context.Context, args []string, stdout, stderr io.Writer, env Env) error {
	err := dispatch(ctx, args, stdout, stderr, env)
	if errors.Is(err, flag.ErrHelp) {
		return nil // -h: the flag package printed the command's flags
	}
	return err
}

// dispatch runs the command args names.
func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer, env Env) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch args[0] {
	case "enroll":
		return enroll(args[1:], stdout, stderr)
	case "run":
		return run(ctx, args[1:], stderr, env)
	case "selftest":
		return selftestCmd(ctx, args[1:], stdout, stderr)
	case "onboard":
		return onboardCmd(args[1:], os.Stdin, stdout, stderr)
	case "reset":
		return resetCmd(args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "camagent", buildinfo.Version())
		return nil
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

const defaultStateDir = "/var/lib/camagent"

func enroll(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("camagent enroll", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("state", defaultStateDir, "state directory (0700)")
	id := fs.String("id", "", "device id to request a certificate for")
	bundle := fs.String("bundle", "", "bundle file from fleetctl enroll to install")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *bundle != "" || *id != "" {
		// Not under a running agent: it would keep using the files this replaces.
		l, err := agent.LockState(*dir)
		if err != nil {
			return fmt.Errorf("enroll: %w", err)
		}
		defer l.Unlock()
	}
	switch {
	case *bundle != "" && *id != "":
		return errors.New("enroll: give either --id or --bundle, not both")
	case *bundle != "":
		b, err := cappedfile.Read(*bundle, 64<<10)
		if err != nil {
			return fmt.Errorf("enroll: %w", err)
		}
		vb, err := agent.InstallBundle(*dir, b, time.Now())
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "installed bundle for %s (certificate serial %s, valid until %s, broker %s)\n",
			vb.Bundle.DeviceID, vb.Cert.SerialNumber.Text(16), vb.Cert.NotAfter.UTC().Format(time.RFC3339), vb.Bundle.Broker)
		return nil
	case *id != "":
		if _, err := agent.Enroll(*dir, *id); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s\n", filepath.Join(*dir, agent.CSRFile))
		return nil
	}
	return errors.New("enroll: --id or --bundle is required")
}

func run(ctx context.Context, args []string, stderr io.Writer, env Env) error {
	o, err := parseRunArgs("camagent run", args, stderr, nil)
	if err != nil {
		return err
	}
	s := &service{args: args, stderr: stderr, env: env, opts: o}
	return s.run(ctx)
}

// built is what runOptions make for one agent: its logger, its egress guard and its
// configuration, validated.
type built struct {
	log   *slog.Logger
	guard *egress.Guard
	cfg   agent.Config
}

// build checks the options and makes the logger, the guard and the agent's configuration.
// It starts nothing and changes nothing on disk, so a reload can check a new configuration
// while the agent runs on the old one. A value it refuses is named by its flag, or, when it
// came from the configuration file, by the file, the line and the key (a *ConfigError).
func (o *runOptions) build(stderr io.Writer) (*built, error) {
	b, err := o.assemble(stderr)
	if err != nil {
		return nil, o.fileError(err)
	}
	return b, nil
}

// assemble is build but for naming the configuration file's lines.
func (o *runOptions) assemble(stderr io.Writer) (*built, error) {
	var afterStep func(string)
	if o.crashAfter != "" {
		if !slices.Contains(agent.Steps, o.crashAfter) {
			return nil, fmt.Errorf("--crash-after %q: want one of %v", o.crashAfter, agent.Steps)
		}
		step := o.crashAfter
		afterStep = func(s string) {
			if s == step {
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
			}
		}
	}
	if o.maxBackoff < mqtt.DefaultMinBackoff || o.maxBackoff > maxReconnectBackoff {
		return nil, refuse("reconnect-max-backoff", o.maxBackoff.String(), fmt.Sprintf("want %v to %v", mqtt.DefaultMinBackoff, maxReconnectBackoff))
	}
	// The streamer checks it only when the video starts: by then a reload has stopped the
	// agent that worked, and a start has nothing to go back to.
	if o.maxViewers < 0 || o.maxViewers > webrtc.MaxMaxViewers {
		return nil, refuse("max-viewers", strconv.Itoa(o.maxViewers), fmt.Sprintf("want 1 to %d, or 0 for the default (%d)", webrtc.MaxMaxViewers, webrtc.DefaultMaxViewers))
	}
	if o.broker != "" {
		if _, err := certs.BrokerHost(o.broker); err != nil {
			if strings.Contains(o.broker, "@") {
				// Not echoed: the part before the @ may be a password.
				return nil, refuse("broker", "", "not a usable broker URL (not shown: it has an @, which may hold a password; the device signs in with its certificate alone): want mqtts://HOST:PORT")
			}
			return nil, refuse("broker", "", err.Error())
		}
	}
	// The guard holds the values onboarding sealed (network name, passphrase, nickname): it
	// redacts every log line and refuses every publish that carries one.
	guard := egress.New()
	// Settings that cannot be used are the agent's to wipe and log (agent.New): the camera
	// runs on without them.
	if err := agent.LoadPrivacy(o.state, guard); err != nil && !errors.As(err, new(*agent.SettingsError)) {
		return nil, err
	}
	log, err := newLogger(stderr, o.logLevel, o.logFormat, guard)
	if err != nil {
		return nil, err
	}
	iceServers, err := videoICEServers(o.iceURLs, o.iceUser, o.iceCredFile)
	if err != nil {
		return nil, fmt.Errorf("run: %w", err)
	}
	if o.ownICE && o.relayOnly && !slices.ContainsFunc(o.iceURLs, isTURNURL) {
		return nil, errors.New("run: --video-relay-only with --video-own-ice-servers-only needs a turn: or turns: --video-ice-server: no offer's server would be used")
	}
	src, err := o.videoSource(log)
	if err != nil {
		return nil, fmt.Errorf("run: %w", err)
	}
	return &built{log: log, guard: guard, cfg: agent.Config{
		Video:                  src,
		MaxViewers:             o.maxViewers,
		TelemetryInterval:      telemetryInterval(o.telemetry),
		MaxBackoff:             o.maxBackoff,
		VideoLoopbackOnly:      o.loopback,
		VideoICEServers:        iceServers,
		VideoRelayOnly:         o.relayOnly,
		VideoOwnICEServersOnly: o.ownICE,
		StateDir:               o.state,
		BrokerURL:              o.broker,
		Firmware:               buildinfo.Version(),
		BuildTime:              buildinfo.BuildTime(),
		ClockSynchronized:      kernelClockSynchronized,
		Logger:                 log,
		Guard:                  guard,
		AfterStep:              afterStep,
	}}, nil
}

// videoSource makes the camera source of --video-file or --video-exec; nil when neither is
// given.
func (o *runOptions) videoSource(log *slog.Logger) (camera.Source, error) {
	switch {
	case o.videoFile != "" && o.videoExec != "":
		return nil, errors.New("give --video-file or --video-exec, not both")
	case o.videoFile != "":
		src, err := camera.NewFileSource(camera.FileConfig{Path: o.videoFile, Logger: log})
		if err != nil {
			return nil, refuse("video-file", "", err.Error())
		}
		return src, nil
	case o.videoExec != "":
		src, err := camera.NewExecSource(camera.ExecConfig{Argv: strings.Fields(o.videoExec), Logger: log})
		if err != nil {
			return nil, refuse("video-exec", "", err.Error())
		}
		return src, nil
	}
	return nil, nil
}

// videoICEServers makes the --video-ice-server flags into ICE servers, one per URL, each TURN
// server with the username and the credential read from credFile. Its errors never carry the
// credential; those about one flag's value are *settingErrors.
func videoICEServers(urls []string, user, credFile string) ([]signal.ICEServer, error) {
	if len(urls) > signal.MaxICEServers {
		return nil, fmt.Errorf("--video-ice-server given %d times, at most %d", len(urls), signal.MaxICEServers)
	}
	var cred string
	if credFile != "" {
		fi, err := os.Stat(credFile)
		if err != nil {
			return nil, refuse("video-ice-credential-file", "", err.Error())
		}
		if fi.Mode().Perm()&0o007 != 0 {
			return nil, refuse("video-ice-credential-file", credFile, fmt.Sprintf("accessible to others (mode %v): make it 0640, owner root, group camagent (or 0600, owned by the user camagent runs as)", fi.Mode().Perm()))
		}
		b, err := cappedfile.Read(credFile, signal.MaxCredentialSize+2)
		if err != nil {
			return nil, refuse("video-ice-credential-file", "", err.Error())
		}
		cred, _, _ = strings.Cut(string(b), "\n")
		cred = strings.TrimSuffix(cred, "\r")
		if cred == "" {
			return nil, refuse("video-ice-credential-file", credFile, "the first line is empty")
		}
	}
	var servers []signal.ICEServer
	turn := false
	for i, u := range urls {
		if strings.Contains(u, "@") {
			// Not echoed: it may hold a credential.
			return nil, &settingError{Flag: "video-ice-server", Nth: i + 1, Shown: fmt.Sprintf("#%d", i+1),
				Why: "has an @: credentials go in --video-ice-user and --video-ice-credential-file, not in the URL"}
		}
		srv := signal.ICEServer{URLs: []string{u}}
		if strings.HasPrefix(u, "turn:") || strings.HasPrefix(u, "turns:") {
			turn = true
			if user == "" || cred == "" {
				return nil, &settingError{Flag: "video-ice-server", Nth: i + 1, Shown: u, Why: "a TURN server needs --video-ice-user and --video-ice-credential-file"}
			}
			srv.Username, srv.Credential = user, cred
		}
		if err := srv.Validate(); err != nil {
			return nil, &settingError{Flag: "video-ice-server", Nth: i + 1, Shown: u, Why: err.Error()}
		}
		servers = append(servers, srv)
	}
	if !turn && (user != "" || credFile != "") {
		which := "video-ice-user"
		if user == "" {
			which = "video-ice-credential-file"
		}
		return nil, refuse(which, "", "no turn: or turns: --video-ice-server is given: --video-ice-user and --video-ice-credential-file are for TURN servers")
	}
	return servers, nil
}

func newLogger(w io.Writer, level, format string, guard *egress.Guard) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, refuse("log-level", strconv.Quote(level), "want debug, info, warn or error")
	}
	opts := &slog.HandlerOptions{Level: l}
	var h slog.Handler
	switch format {
	case "text":
		h = slog.NewTextHandler(w, opts)
	case "json":
		h = slog.NewJSONHandler(w, opts)
	default:
		return nil, refuse("log-format", strconv.Quote(format), "want text or json")
	}
	return slog.New(egress.NewRedactingHandler(h, guard)), nil
}

// maxReconnectBackoff bounds --reconnect-max-backoff: a device longer than an hour away from
// a broker that is back would look dead to its owner.
const maxReconnectBackoff = time.Hour

// telemetryInterval maps --telemetry-interval to agent.Config: 0 there means the default, so
// "never" is negative.
func telemetryInterval(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}

// isTURNURL reports whether u is a turn: or turns: URL (RFC 7065).
func isTURNURL(u string) bool {
	u = strings.ToLower(u)
	return strings.HasPrefix(u, "turn:") || strings.HasPrefix(u, "turns:")
}
