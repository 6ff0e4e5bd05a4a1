// Package cli is camagent's command line: enroll, run and version. It parses arguments and
// calls the agent package; it never exits the process (main does).
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
	"strings"
	"syscall"
	"time"

	"github.com/camagent/camagent/agent"
	"github.com/camagent/camagent/agent/privacy/egress"
	"github.com/camagent/camagent/device/camera"
	"github.com/camagent/camagent/internal/buildinfo"
	"github.com/camagent/camagent/internal/cappedfile"
	"github.com/camagent/camagent/transport/webrtc/signal"
)

const usage = `usage: camagent <command> [flags]

commands:
  enroll --state DIR --id ID      make the device key (once) and a CSR for fleetctl enroll
  enroll --state DIR --bundle F   install the bundle fleetctl enroll wrote for this device
  run --state DIR                 run the agent until SIGINT/SIGTERM
  onboard --state DIR --file F    seal the setup payload a phone app handed the camera (F or - for stdin)
  reset --state DIR --yes         factory reset: wipe keys, token, sealed settings and journal
  version                         print the version

Run 'camagent <command> -h' for a command's flags.
`

// Run runs one camagent command.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch args[0] {
	case "enroll":
		return enroll(args[1:], stdout, stderr)
	case "run":
		return run(ctx, args[1:], stderr)
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

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("camagent run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("state", defaultStateDir, "state directory (0700)")
	broker := fs.String("broker", "", "broker URL (mqtts://host:port); default: the bundle's")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	format := fs.String("log-format", "text", "log format: text or json")
	videoFile := fs.String("video-file", "", "serve live video from this H.264 Annex B file, looped in real time (constrained baseline for browsers)")
	videoExec := fs.String("video-exec", "", "serve live video from this command's H.264 Annex B standard output, e.g. \"rpicam-vid -t 0 --inline --codec h264 --profile baseline -o -\" (split on spaces; no shell)")
	maxViewers := fs.Int("max-viewers", 0, "live viewers at most (0: the default, 16)")
	loopback := fs.Bool("video-loopback", false, "offer ICE candidates on 127.0.0.1 only (a demo or test on one machine)")
	var iceURLs []string
	fs.Func("video-ice-server", "a STUN or TURN server the camera uses for every viewer, besides those a viewer's offer brings: stun:HOST:PORT, turn:HOST:PORT?transport=udp (or tcp), turns:HOST:PORT; repeat for more, at most 4. TURN servers take --video-ice-user and --video-ice-credential-file; no credentials in the URL", func(u string) error {
		iceURLs = append(iceURLs, u)
		return nil
	})
	iceUser := fs.String("video-ice-user", "", "TURN username for every turn: and turns: --video-ice-server")
	iceCredFile := fs.String("video-ice-credential-file", "", "file holding the TURN credential for every turn: and turns: --video-ice-server, on its first line; not readable by others (a credential on the command line would be visible to every local user). Never logged")
	relayOnly := fs.Bool("video-relay-only", false, "relay every viewer's video through a TURN server (ICE transport policy relay): the camera offers no address of its own; an offer is refused when neither --video-ice-server nor the offer names a TURN server")
	crashAfter := fs.String("crash-after", "", "fault injection for crash tests: SIGKILL this process right after the named rotation step (pending, requested, issued, switched, confirmed, committed, wiped)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var afterStep func(string)
	if *crashAfter != "" {
		if !slices.Contains(agent.Steps, *crashAfter) {
			return fmt.Errorf("--crash-after %q: want one of %v", *crashAfter, agent.Steps)
		}
		afterStep = func(step string) {
			if step == *crashAfter {
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
			}
		}
	}
	// The guard holds the values onboarding sealed (network name, passphrase, nickname): it
	// redacts every log line and refuses every publish that carries one.
	guard := egress.New()
	if err := agent.LoadPrivacy(*dir, guard); err != nil {
		return err
	}
	log, err := newLogger(stderr, *level, *format, guard)
	if err != nil {
		return err
	}
	iceServers, err := videoICEServers(iceURLs, *iceUser, *iceCredFile)
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	var src camera.Source
	switch {
	case *videoFile != "" && *videoExec != "":
		return errors.New("run: give --video-file or --video-exec, not both")
	case *videoFile != "":
		if src, err = camera.NewFileSource(camera.FileConfig{Path: *videoFile, Logger: log}); err != nil {
			return fmt.Errorf("run: --video-file: %w", err)
		}
	case *videoExec != "":
		if src, err = camera.NewExecSource(camera.ExecConfig{Argv: strings.Fields(*videoExec), Logger: log}); err != nil {
			return fmt.Errorf("run: --video-exec: %w", err)
		}
	}
	a, err := agent.New(agent.Config{
		Video:             src,
		MaxViewers:        *maxViewers,
		VideoLoopbackOnly: *loopback,
		VideoICEServers:   iceServers,
		VideoRelayOnly:    *relayOnly,
		StateDir:          *dir,
		BrokerURL:         *broker,
		Firmware:          buildinfo.Version(),
		BuildTime:         buildinfo.BuildTime(),
		Logger:            log,
		Guard:             guard,
		AfterStep:         afterStep,
	})
	if err != nil {
		return err
	}
	log.Info("camagent starting", "version", buildinfo.Version(), "state", *dir)
	return a.Run(ctx)
}

// videoICEServers makes the --video-ice-server flags into ICE servers, one per URL, each TURN
// server with the username and the credential read from credFile. Its errors never carry the
// credential.
func videoICEServers(urls []string, user, credFile string) ([]signal.ICEServer, error) {
	if len(urls) > signal.MaxICEServers {
		return nil, fmt.Errorf("--video-ice-server given %d times, at most %d", len(urls), signal.MaxICEServers)
	}
	var cred string
	if credFile != "" {
		fi, err := os.Stat(credFile)
		if err != nil {
			return nil, fmt.Errorf("--video-ice-credential-file: %w", err)
		}
		if fi.Mode().Perm()&0o007 != 0 {
			return nil, fmt.Errorf("--video-ice-credential-file %s is accessible to others (mode %v); make it 0600", credFile, fi.Mode().Perm())
		}
		b, err := cappedfile.Read(credFile, signal.MaxCredentialSize+2)
		if err != nil {
			return nil, fmt.Errorf("--video-ice-credential-file: %w", err)
		}
		cred, _, _ = strings.Cut(string(b), "\n")
		cred = strings.TrimSuffix(cred, "\r")
		if cred == "" {
			return nil, fmt.Errorf("--video-ice-credential-file %s: the first line is empty", credFile)
		}
	}
	var servers []signal.ICEServer
	turn := false
	for i, u := range urls {
		if strings.Contains(u, "@") {
			// Not echoed: it may hold a credential.
			return nil, fmt.Errorf("--video-ice-server #%d has an @: credentials go in --video-ice-user and --video-ice-credential-file, not in the URL", i+1)
		}
		srv := signal.ICEServer{URLs: []string{u}}
		if strings.HasPrefix(u, "turn:") || strings.HasPrefix(u, "turns:") {
			turn = true
			if user == "" || cred == "" {
				return nil, fmt.Errorf("--video-ice-server %s: a TURN server needs --video-ice-user and --video-ice-credential-file", u)
			}
			srv.Username, srv.Credential = user, cred
		}
		if err := srv.Validate(); err != nil {
			return nil, fmt.Errorf("--video-ice-server %s: %w", u, err)
		}
		servers = append(servers, srv)
	}
	if !turn && (user != "" || credFile != "") {
		return nil, errors.New("--video-ice-user and --video-ice-credential-file are for a turn: or turns: --video-ice-server, and none is given")
	}
	return servers, nil
}

func newLogger(w io.Writer, level, format string, guard *egress.Guard) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: l}
	var h slog.Handler
	switch format {
	case "text":
		h = slog.NewTextHandler(w, opts)
	case "json":
		h = slog.NewJSONHandler(w, opts)
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", format)
	}
	return slog.New(egress.NewRedactingHandler(h, guard)), nil
}
