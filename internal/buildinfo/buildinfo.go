// Package buildinfo holds the version and build time stamped into binaries by the Makefile
// (-ldflags -X). Unstamped builds report "dev" and no build time.
package buildinfo

import "time"

// Set by -ldflags "-X github.com/camagent/camagent/internal/buildinfo.version=... -X ...buildTime=<unix seconds>".
var (
	version   = "dev"
	buildTime = ""
)

// Version returns the stamped version, or "dev".
func Version() string { return version }

// BuildTime returns the stamped build time, or the zero time.
func BuildTime() time.Time {
	var sec int64
	for _, c := range buildTime {
		if c < '0' || c > '9' {
			return time.Time{}
		}
		sec = sec*10 + int64(c-'0')
	}
	if sec == 0 {
		return time.Time{}
	}
	return time.Unix(sec, 0)
}
