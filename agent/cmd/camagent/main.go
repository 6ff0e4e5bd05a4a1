// Command camagent is the camera-side agent. See agent/cli for its commands.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/camagent/camagent/agent/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	env := cli.Env{Notify: sdNotify}
	if len(os.Args) > 1 && os.Args[1] == "run" {
		// Only the service reloads on SIGHUP; other commands keep its default (exit).
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		env.Reload = hup
		wd, err := daemon.SdWatchdogEnabled(false)
		if err != nil {
			fmt.Fprintln(os.Stderr, "camagent: ignoring the watchdog settings:", err)
		}
		env.Watchdog = wd
	}
	err := cli.RunEnv(ctx, os.Args[1:], os.Stdout, os.Stderr, env)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "camagent:", err)
		os.Exit(1)
	}
}

// sdNotify sends state to systemd's NOTIFY_SOCKET; without one it does nothing.
func sdNotify(state string) error {
	_, err := daemon.SdNotify(false, state)
	return err
}
