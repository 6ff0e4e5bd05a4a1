#!/usr/bin/env bash
# make demo: a throwaway fleet under ./demo, the embedded broker, one enrolled agent, a viewer
# relay with its own key, a signed ping, a breach. Runs until Ctrl-C, then stops everything. Every step is the real CLI an operator or a
# camera would run.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-bin}
DEMO=${DEMO_DIR:-demo}
PORT=${DEMO_PORT:-18883}
DEV=${DEMO_DEVICE:-cam-0001}
VIEW=${DEMO_VIEW_ADDR:-127.0.0.1:8889}
CLIP=${DEMO_CLIP:-device/camera/testdata/clip.h264}

pids=()
stop() {
  trap - INT TERM EXIT
  if [ ${#pids[@]} -gt 0 ]; then
    echo; echo "== stopping"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  echo "stopped; logs are in $DEMO/*.log"
}
trap stop INT TERM EXIT

rm -rf "$DEMO"; mkdir -p "$DEMO"
step() { echo; echo "== $*"; }

step "fleetctl init: fleet CA, offline root key, signing keys, key set"
"$BIN/fleetctl" init --dir "$DEMO/fleet" --broker "mqtts://127.0.0.1:$PORT" --name "demo fleet"

step "fleetctl broker: embedded mTLS broker on 127.0.0.1:$PORT (log: $DEMO/broker.log)"
"$BIN/fleetctl" broker --dir "$DEMO/fleet" >"$DEMO/broker.log" 2>&1 &
pids+=($!)

step "fleetctl serve: the fleet's certificate signer (log: $DEMO/signer.log)"
"$BIN/fleetctl" serve --dir "$DEMO/fleet" >"$DEMO/signer.log" 2>&1 &
pids+=($!)

step "camagent enroll: the device makes its own key and a CSR"
csr=$("$BIN/camagent" enroll --state "$DEMO/$DEV" --id "$DEV")
echo "CSR: $csr (key: $DEMO/$DEV/device.key, mode $(stat -c %a "$DEMO/$DEV/device.key"))"

step "fleetctl enroll: the fleet signs the CSR into a bundle"
"$BIN/fleetctl" enroll --dir "$DEMO/fleet" --csr "$csr" --out "$DEMO/$DEV.bundle.json"
"$BIN/camagent" enroll --state "$DEMO/$DEV" --bundle "$DEMO/$DEV.bundle.json"

step "camagent run, streaming $CLIP in a loop as its camera (log: $DEMO/agent.log)"
# --video-loopback keeps WebRTC on 127.0.0.1: the demo is watched from this machine.
"$BIN/camagent" run --state "$DEMO/$DEV" --video-file "$CLIP" --video-loopback >"$DEMO/agent.log" 2>&1 &
pids+=($!)

step "camview enroll: the viewer relay makes its own key and a CSR; the fleet signs it (fleetctl viewer)"
"$BIN/camview" enroll --identity "$DEMO/camview" --name web
"$BIN/fleetctl" viewer --dir "$DEMO/fleet" --csr "$DEMO/camview/viewer.csr" --out "$DEMO/viewer-web.bundle.json"
"$BIN/camview" enroll --identity "$DEMO/camview" --bundle "$DEMO/viewer-web.bundle.json"

step "camview serve: the viewer relay and its web page on http://$VIEW/, with no fleet directory (log: $DEMO/camview.log)"
"$BIN/camview" serve --identity "$DEMO/camview" --listen "$VIEW" >"$DEMO/camview.log" 2>&1 &
pids+=($!)

step "fleetctl ping: a signed command and the agent's reply"
"$BIN/fleetctl" ping --dir "$DEMO/fleet" --device "$DEV" --wait 30s --count 3
serial() { "$BIN/fleetctl" ping --dir "$DEMO/fleet" --device "$DEV" | sed -n 's/.*cert_serial=\([0-9a-f]*\).*/\1/p'; }
before=$(serial)
echo "certificate serial before the breach: $before"

step "fleetctl grant: a signed one-hour grant to watch $DEV, as a camview link"
old_link=$("$BIN/fleetctl" grant --dir "$DEMO/fleet" --device "$DEV" --ttl 1h --url "http://$VIEW/")
echo "watch the camera live: $old_link"

step "fleetctl breach: every device rotates key, certificate and token; every grant issued before is void"
"$BIN/fleetctl" breach --dir "$DEMO/fleet" --incident DEMO-2019-12
"$BIN/fleetctl" status --dir "$DEMO/fleet" --wait 60s
after=$(serial)
echo "certificate serial after the breach:  $after"
[ "$before" != "$after" ] || { echo "the certificate did not change" >&2; exit 1; }

step "fleetctl grant: the breach voided the link above (the camera now refuses it); a fresh one"
link=$("$BIN/fleetctl" grant --dir "$DEMO/fleet" --device "$DEV" --ttl 1h --url "http://$VIEW/")
echo "watch the camera live: $link"

echo
echo "The agent, the broker and camview keep running. Open the link above in a browser on this machine."
echo "Try also: $BIN/fleetctl ping --dir $DEMO/fleet --device $DEV"
echo "      or: $BIN/camview record --identity $DEMO/camview --device $DEV --seconds 5 --out $DEMO/rec.h264 --loopback \\"
echo "            --grant-file <($BIN/fleetctl grant --dir $DEMO/fleet --device $DEV)"
echo "Press Ctrl-C to stop."
wait -n "${pids[@]}" || true
echo "a component exited; see $DEMO/*.log"
