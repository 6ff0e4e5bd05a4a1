#!/usr/bin/env bash
# make scale: the 10,000-device runs of docs/scale-out.md ("Ten thousand devices on one 2-core
# machine"), each with the broker and the signers in processes of their own, as a deployment
# runs them, and fleetsim's agents in its process:
#
#   breach    Mosquitto (the configuration fleetctl mosquitto-config writes), SCALE_SIGNERS fleetctl serve
#   restart   fleetctl broker --max-connect-rate SCALE_RATE, SCALE_SIGNERS fleetctl serve; the broker is
#             stopped (SIGTERM), down 2 s and started again on its port with its data while a
#             breach campaign runs; the devices' reconnect backoff is capped at
#             SCALE_MAX_BACKOFF (reconnect-max-backoff, sized as docs/scale-out.md says)
#
# In both, each device dials the broker from a loopback address of its own (fleetsim
# --source-addrs, 127.1.0.0 and up), as a real fleet does from a host of its own: a broker that
# counts connections per source address then sees SCALE_SOURCES hosts, not one, and the
# reconnections are not all drawn from the ephemeral ports of 127.0.0.1.
#
# Usage: tools/fleetsim/scale.sh [breach|restart]... (default: both). SCALE_N devices
# (10000), SCALE_RATE connections a second (400), SCALE_MAX_BACKOFF (30s), SCALE_SOURCES
# source addresses (SCALE_N; 0: every device from 127.0.0.1, as before), SCALE_SIGNERS
# signers (2), SCALE_OPENSSL_CONF Mosquitto's OPENSSL_CONF (the openssl.cnf fleetctl
# mosquitto-config writes; /etc/ssl/openssl.cnf: OpenSSL's defaults, session tickets
# included). Each run prints fleetsim's report and fails if a device did not converge or a
# command was lost. It needs SCALE_N + 1,000 open files (ulimit -n) in each process and
# Mosquitto for the breach run.
set -euo pipefail
cd "$(dirname "$0")/../.."

n=${SCALE_N:-10000}
rate=${SCALE_RATE:-400}
backoff=${SCALE_MAX_BACKOFF:-30s}
sources=${SCALE_SOURCES:-$n}
nsigners=${SCALE_SIGNERS:-2}
runs=("$@")
[ ${#runs[@]} -gt 0 ] || runs=(breach restart)

need=$((n + 1000))
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$need" ]; then
	echo "scale: $n devices need $need open files; the hard limit here is $(ulimit -Hn) (set SCALE_N lower)" >&2
	exit 1
fi
ulimit -n "$need"

work=$(mktemp -d)
pids=()
# stopall stops every process a run started.
stopall() {
	for p in "${pids[@]}" $(cat "$work"/*.pid 2>/dev/null); do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -f "$work"/*.pid
	pids=()
}
trap 'stopall; rm -rf "$work"' EXIT

go build -o "$work/fleetctl" ./tools/fleetctl
go build -o "$work/fleetsim" ./tools/fleetsim

# port prints a loopback TCP port nothing listens on.
port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 20000))
		if ! (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return
		fi
	done
}

# waitport waits until something listens on 127.0.0.1:$1.
waitport() {
	for _ in $(seq 1 200); do
		if (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
		sleep 0.05
	done
	echo "scale: nothing listens on 127.0.0.1:$1" >&2
	return 1
}

# signers starts SCALE_SIGNERS fleetctl serve processes for fleet directory $1.
signers() {
	for s in $(seq -f s%g 1 "$nsigners"); do
		"$work/fleetctl" serve --dir "$1" --name "$s" --log-level warn >>"$work/serve-$s.log" 2>&1 &
		pids+=($!)
	done
	sleep 2
}

breach() {
	if ! command -v mosquitto >/dev/null; then
		echo "scale: the breach run needs Mosquitto (apt-get install mosquitto)" >&2
		return 1
	fi
	local p dir=$work/mq user=()
	p=$(port)
	[ "$(id -u)" != 0 ] || user=(--user root)
	"$work/fleetctl" init --dir "$dir" --broker "mqtts://127.0.0.1:$p" >/dev/null
	"$work/fleetctl" mosquitto-config --dir "$dir" --out "$dir/mosquitto" --port "$p" "${user[@]}" >/dev/null
	# As fleetctl mosquitto-config says: no TLS session tickets (a third of each handshake).
	OPENSSL_CONF=${SCALE_OPENSSL_CONF-$dir/mosquitto/openssl.cnf} mosquitto -c "$dir/mosquitto/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
	pids+=($!)
	waitport "$p"
	signers "$dir"
	echo "== breach: $n devices (--source-addrs $sources), Mosquitto $(mosquitto -h | head -1 | awk '{print $3}'), $nsigners fleetctl serve; load $(cut -d' ' -f1-3 /proc/loadavg)"
	"$work/fleetsim" --broker "mqtts://127.0.0.1:$p" --fleet "$dir" --devices "$n" --source-addrs "$sources" --scenario breach 2>/dev/null
}

restart() {
	local p dir=$work/eb
	p=$(port)
	"$work/fleetctl" init --dir "$dir" --broker "mqtts://127.0.0.1:$p" >/dev/null
	# The broker in its own process, restarted by fleetsim through this script; "broker.sh stop"
	# only stops it (SIGTERM, and waits until it is gone).
	cat >"$work/broker.sh" <<-EOF
		#!/usr/bin/env bash
		running() { [ -e "/proc/\$1" ] && ! grep -q '^State:.*Z' "/proc/\$1/status" 2>/dev/null; }
		if [ -f "$work/broker.pid" ]; then
		  pid=\$(cat "$work/broker.pid")
		  kill -TERM "\$pid"
		  while running "\$pid"; do sleep 0.05; done
		  rm -f "$work/broker.pid"
		  [ "\${1:-}" != stop ] || exit 0
		  sleep 2
		fi
		"$work/fleetctl" broker --dir "$dir" --listen "127.0.0.1:$p" --data "$dir/broker-data" \\
		  --max-connect-rate $rate >>"$work/broker.log" 2>&1 &
		echo \$! >"$work/broker.pid"
		for _ in \$(seq 1 200); do
		  if (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then exit 0; fi
		  sleep 0.05
		done
		echo "broker did not come back" >&2; exit 1
	EOF
	chmod +x "$work/broker.sh"
	"$work/broker.sh"
	signers "$dir"
	echo "== restart: $n devices (--source-addrs $sources), fleetctl broker --max-connect-rate $rate, $nsigners fleetctl serve, device backoff cap $backoff; load $(cut -d' ' -f1-3 /proc/loadavg)"
	local rc=0
	"$work/fleetsim" --broker "mqtts://127.0.0.1:$p" --fleet "$dir" --devices "$n" --source-addrs "$sources" --scenario broker-restart \
		--restart-command "$work/broker.sh" --max-backoff "$backoff" 2>/dev/null || rc=$?
	# The broker's own account, also when the run failed: it says what the budget did.
	echo "   broker peak RSS: $(awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' "/proc/$(cat "$work/broker.pid")/status")"
	"$work/broker.sh" stop
	echo "   since it came back, $(grep -a 'broker stopped' "$work/broker.log" | tail -1 | sed 's/^broker stopped: m/m/')"
	grep -a 'gives its queued turns' "$work/broker.log" | head -3 | sed 's/^/   /' || true
	return "$rc"
}

for r in "${runs[@]}"; do
	case $r in
	breach | restart) "$r" ;;
	*)
		echo "scale: unknown run $r (breach, restart)" >&2
		exit 2
		;;
	esac
	stopall
done
