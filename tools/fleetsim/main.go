// Command fleetsim simulates a fleet of cameras running the real agent, against the embedded
// broker or any other, through breach campaigns, broker restarts, network faults and skewed
// clocks. See tools/fleetsim/cli for its flags and docs/scale-out.md for what it measures.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/camagent/camagent/tools/fleetsim/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleetsim:", err)
		os.Exit(1)
	}
}
