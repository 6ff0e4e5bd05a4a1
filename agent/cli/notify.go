package cli

import (
	"context"
	"io"
	"os"
	"time"
)

// Env is what main hands the commands from the process's surroundings: the service manager's
// notification socket and watchdog, and the reload signal. The zero Env is a process started
// by hand: no notifications, no watchdog, no reload.
type Env struct {
	// Notify sends one state to the service manager, such as "READY=1" or "STATUS=..."
	// (sd_notify(3)); main wires it to github.com/coreos/go-systemd/v22/daemon.SdNotify. Nil:
	// nothing is sent.
	Notify func(state string) error
	// Watchdog is the service manager's watchdog timeout (WATCHDOG_USEC, from
	// daemon.SdWatchdogEnabled). While the agent is alive, "WATCHDOG=1" is sent every half of
	// it. Zero: no watchdog.
	Watchdog time.Duration
	// Reload receives one value per SIGHUP: `camagent run` re-reads its configuration file.
	// Nil: never.
	Reload <-chan os.Signal
}

// RunEnv runs one camagent command like Run, with env from main.
func RunEnv(ctx context.Context, args []string, stdout, stderr io.Writer, env Env) error {
	return runCommand(ctx, args, stdout, stderr, env)
}

// sd_notify states (sd_notify(3)).
const (
	notifyReady     = "READY=1"
	notifyReloading = "RELOADING=1"
	notifyStopping  = "STOPPING=1"
	notifyWatchdog  = "WATCHDOG=1"
)
