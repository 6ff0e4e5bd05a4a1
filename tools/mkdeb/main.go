// Command mkdeb builds camagent's Debian packages with nfpm, as a library:
//
//	go run ./tools/mkdeb --version V --arch armhf|arm64|amd64 --bin dist/linux-armv6/camagent \
//		[--bin-fleetctl dist/linux-armv6/fleetctl] [--out dist] [--packaging packaging] [--mtime UNIX]
//
// It writes camagent_V_ARCH.deb (the binary, the systemd unit, the default configuration and
// the maintainer scripts from packaging/) and, given --bin-fleetctl, fleetctl_V_ARCH.deb (the
// operators' tool alone), and prints their paths. See packaging/README.md.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "mkdeb:", err)
		os.Exit(1)
	}
}
