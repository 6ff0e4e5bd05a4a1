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
	"github.com/camagent/camagent/device/camera"
	"github.com/camagent/camagent/internal/buildinfo"
	"github.com/camagent/camagent/internal/cappedfile"
)

const usage = `usage: camagent <command> [flags]

commands:
  enroll --state DIR --id ID      make the device key (once) and a CSR for fleetctl enroll
  enroll --state DIR --bundle F   install the bundle fleetctl enroll wrote for this device
  run --state DIR                 run the agent until SIGINT/SIGTERM
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
	log, err := newLogger(stderr, *level, *format)
	if err != nil {
		return err
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
		StateDir:          *dir,
		BrokerURL:         *broker,
		Firmware:          buildinfo.Version(),
		BuildTime:         buildinfo.BuildTime(),
		Logger:            log,
		AfterStep:         afterStep,
	})
	if err != nil {
		return err
	}
	log.Info("camagent starting", "version", buildinfo.Version(), "state", *dir)
	return a.Run(ctx)
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}
