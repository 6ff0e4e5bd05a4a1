// Command fleetctl is the fleet operator's tool. See tools/fleetctl/cli for its commands.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/camagent/camagent/tools/fleetctl/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	env := cli.Env{Notify: sdNotify}
	if len(os.Args) > 1 && (os.Args[1] == "broker" || os.Args[1] == "serve") {
		// The services (fleetctl-broker.service, fleetctl-signer@.service) feed a watchdog.
		wd, err := daemon.SdWatchdogEnabled(false)
		if err != nil {
			fmt.Fprintln(os.Stderr, "fleetctl: ignoring the watchdog settings:", err)
		}
		env.Watchdog = wd
	}
	err := cli.RunEnv(ctx, os.Args[1:], os.Stdout, os.Stderr, env)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleetctl:", err)
		os.Exit(1)
	}
}

// sdNotify sends state to systemd's NOTIFY_SOCKET; without one it does nothing.
func sdNotify(state string) error {
	_, err := daemon.SdNotify(false, state)
	return err
}
