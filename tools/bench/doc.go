// Package bench measures camagent's performance figures against their goals and writes
// docs/benchmarks.md. It runs with `make bench` (go test -tags bench); it is not part of
// `make test`, because performance is measured, never asserted by a timed test.
package bench
