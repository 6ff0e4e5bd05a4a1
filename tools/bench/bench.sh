#!/usr/bin/env bash
# make bench: builds the binaries and the cross builds, then measures every figure and writes
# docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
make --no-print-directory build cross >/dev/null
go test -tags bench -count=1 -timeout 60m -run '^TestReport$' ./tools/bench -args -report "$PWD/docs/benchmarks.md" -runs "${BENCH_RUNS:-5}"
echo "wrote docs/benchmarks.md"
