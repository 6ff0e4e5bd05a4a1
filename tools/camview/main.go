// Command camview watches the fleet's cameras: a web page with a WHEP endpoint (camview serve)
// and a recorder (camview record). See tools/camview/cli for its commands.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/camagent/camagent/tools/camview/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "camview:", err)
		os.Exit(1)
	}
}
