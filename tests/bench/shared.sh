#!/bin/sh
# tests/bench/shared.sh: what the shared cache in Redis (issue 10) costs and
# saves, measured with the shared bench kit (its Unbound DoT backend and
# dnsperf), everything on 127.0.0.1 (inside a private network namespace
# when one can be made).
#
# Usage, from the build directory: sh tests/bench/shared.sh
# Env: NAMES (30000: distinct names primed and asked), ROUNDS (2),
#      DURATION (5: seconds of each hit-path run), BENCH_KIT (the kit, by
#      default shared/bench beside the repository), BENCH_KEEP=1 keeps the
#      state dir, RESULTS (file to append the RESULT lines to).
#
# One redis-server and three dotproxies, one worker each (pinned like the
# kit's peers: dotproxy on CPU 1, backend, Redis and dnsperf on CPU 0):
#   A  --shared-cache: primed once with one dnsperf pass over NAMES names
#      (each goes upstream and is written to Redis);
#   B  --shared-cache, started fresh each round (empty local cache);
#   C  no shared cache, started fresh each round.
# Each round measures, with dnsperf (-c 8 -q 100, UDP):
#   shared-miss  B, one pass over the NAMES names (-n 1): every query is a
#                local miss answered from Redis (upstream_q should be ~0);
#   upstream     C, the same pass: every query goes upstream over DoT;
#   hit-shc      B again for DURATION s: now all local hits, with the
#                shared cache configured;
#   hit-plain    C again: local hits without it (the hit path must not
#                pay for the feature).
# Prints one RESULT line per run and a table of the means.
# shellcheck shell=bash
# (sh runs this; it re-executes itself with bash, which the kit needs)
if [ -z "${BASH_VERSION:-}" ]; then
	exec bash "$0" "$@"
fi
set -euo pipefail
bin=$(pwd)/dotproxy
[[ -x $bin ]] || { echo "shared.sh: build dotproxy first ($bin)" >&2; exit 1; }
kit=${BENCH_KIT:-$(cd "$(dirname "$0")/../../.." && pwd)/shared/bench}
[[ -f $kit/lib.sh ]] || { echo "shared.sh: no bench kit at $kit (set BENCH_KIT)" >&2; exit 1; }
for t in redis-server redis-cli dnsperf unbound-control; do
	command -v "$t" >/dev/null 2>&1 || {
		echo "shared.sh: $t not found (Debian: redis-server redis-tools" \
			"dnsperf unbound; the kit's setup.sh installs dnsperf)" >&2
		exit 1
	}
done
export BENCH_KIT=$kit
# shellcheck source=/dev/null
source "$kit/lib.sh"
maybe_netns bash "$0" "$@"

NAMES=${NAMES:-30000} ROUNDS=${ROUNDS:-2} DURATION=${DURATION:-5}
CLIENTS=8 OUTSTANDING=100 TIMEOUT=2
PORT_A=15411 PORT_B=15412 PORT_C=15413 RPORT=15420
# A fresh state dir (certificates, zone, logs), removed at the end.
BENCH_RUN=$(mktemp -d "${TMPDIR:-/tmp}/dotproxy-shared.XXXXXX")
export BENCH_RUN
# The backend's zone has nameI for I < N (kit default 100000).
N=${N:-100000}
export N
((NAMES < N)) || die "NAMES ($NAMES) must be below the zone's N ($N)"
PIDS=$BENCH_RUN/shared.pids

cleanup() {
	stop_pids "$BENCH_RUN/b.pids" 2>/dev/null || true
	stop_pids "$BENCH_RUN/c.pids" 2>/dev/null || true
	stop_pids "$PIDS" 2>/dev/null || true
	"$kit/backend.sh" stop >/dev/null 2>&1 || true
	if [[ ${BENCH_KEEP:-0} == 1 ]]; then
		log "kept $BENCH_RUN"
	else
		rm -rf "$BENCH_RUN"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$kit/backend.sh" start >&2
load_backend_env

# Redis: its own log line says when it listens (bounded wait).
spawn "$PIDS" redis "$CPU_BACKEND" redis-server --port "$RPORT" \
	--bind 127.0.0.1 --save '' --appendonly no --daemonize no --logfile ''
rpid=$SPAWNED_PID
for ((i = 0; i < 100; i++)); do
	grep -q 'Ready to accept connections' "$BENCH_RUN/redis.log" && break
	alive "$rpid" || die "redis-server ended; see $BENCH_RUN/redis.log"
	sleep 0.1
done
grep -q 'Ready to accept connections' "$BENCH_RUN/redis.log" ||
	die "redis-server not ready in 10 s"
SHC=redis://127.0.0.1:$RPORT

# No lameduck wait when stopped: a restart between rounds takes no 5 s.
echo 'lameduck 0' >"$BENCH_RUN/dotproxy.conf"

# start_px PIDFILE NAME PORT [ARGS...] : a one-worker dotproxy on PORT,
# ready when it answers (the kit's wait_dns). Sets PX_PID.
start_px() {
	local pidfile=$1 name=$2 port=$3
	shift 3
	spawn "$pidfile" "$name" "$CPU_PEER" "$bin" -d -c "$BENCH_RUN/dotproxy.conf" \
		-l "127.0.0.1@$port" -u "127.0.0.1@$PORT_TLS#$SERVER_NAME" \
		--ca-file "$CA" --workers 1 "$@"
	PX_PID=$SPAWNED_PID
	wait_dns "$port" "$PX_PID" || die "$name did not answer; see $BENCH_RUN/$name.log"
}

names=$BENCH_RUN/names.txt
awk -v n="$NAMES" -v z="$ZONE" \
	'BEGIN { for (i = 1; i <= n; i++) printf "name%d.%s A\n", i, z }' >"$names"

upstream_q() {
	unbound-control -c "$BACKEND_CONF" stats_noreset 2>/dev/null |
		awk -F= '$1 == "total.num.queries" { print $2 + 0; f = 1 } END { if (!f) print 0 }'
}
cputicks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }

PIN=()
[[ -z $CPU_CLIENT ]] || PIN=(taskset -c "$CPU_CLIENT")
# perf LABEL ROUND PID PORT DNSPERF_ARGS... : one bounded dnsperf run over
# the names; prints a RESULT line (qps, p99 from the per-query latencies).
perf() {
	local label=$1 round=$2 pid=$3 port=$4 raw u0 u1 c0 c1 s0 s1 line
	shift 4
	raw=$BENCH_RUN/raw.$label.$round
	u0=$(upstream_q) c0=$(cputicks "$pid") s0=$(date +%s.%N)
	timeout 120 "${PIN[@]}" dnsperf -s 127.0.0.1 -p "$port" -d "$names" \
		-c "$CLIENTS" -q "$OUTSTANDING" -t "$TIMEOUT" -v "$@" >"$raw" 2>&1 || true
	u1=$(upstream_q) c1=$(cputicks "$pid") s1=$(date +%s.%N)
	line=$(awk -v label="$label" -v round="$round" -v up=$((u1 - u0)) \
		-v cpu=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" \
		-v wall="$(awk "BEGIN { print $s1 - $s0 }")" '
	$1 == ">" && $NF ~ /^[0-9.]+$/ { b = int($NF * 1e5); h[b]++; n++; if (b > mx) mx = b; next }
	/Queries sent:/ { sent = $3 } /Queries lost:/ { lost = $3 }
	/Queries per second:/ { qps = $4 }
	END {
		for (i = 0; i <= mx; i++) { s += h[i]; if (s >= n * 0.99) { p99 = (i + 1) / 100; break } }
		printf "RESULT workload=%s round=%s qps=%.0f p99_ms=%.2f sent=%d lost=%d upstream_q=%d peer_cpu=%.0f%%\n",
			label, round, qps, p99, sent, lost, up, 100 * cpu / hz / wall
	}' "$raw")
	echo "$line"
	[[ -z ${RESULTS:-} ]] || echo "$line" >>"$RESULTS"
	echo "$line" >>"$BENCH_RUN/results"
}

log "priming A with $NAMES names (one pass, upstream, written to Redis)"
start_px "$PIDS" dotproxy-A "$PORT_A" --shared-cache "$SHC"
perf prime-A 0 "$PX_PID" "$PORT_A" -n 1 -l 120
# The writes are fire and forget: wait (bounded) until Redis stops growing.
prev=-1
for ((i = 0; i < 50; i++)); do
	keys=$(redis-cli -p "$RPORT" dbsize)
	[[ $keys == "$prev" ]] && break
	prev=$keys
	sleep 0.2
done
log "redis holds $keys keys"

for ((round = 1; round <= ROUNDS; round++)); do
	log "round $round/$ROUNDS"
	start_px "$BENCH_RUN/b.pids" dotproxy-B "$PORT_B" --shared-cache "$SHC"
	bpid=$PX_PID
	start_px "$BENCH_RUN/c.pids" dotproxy-C "$PORT_C"
	cpid=$PX_PID
	perf shared-miss "$round" "$bpid" "$PORT_B" -n 1 -l 120
	perf upstream "$round" "$cpid" "$PORT_C" -n 1 -l 120
	perf hit-shc "$round" "$bpid" "$PORT_B" -l "$DURATION"
	perf hit-plain "$round" "$cpid" "$PORT_C" -l "$DURATION"
	stop_pids "$BENCH_RUN/b.pids"
	stop_pids "$BENCH_RUN/c.pids"
done

echo
printf '%-12s %-28s %9s %9s %13s %10s %8s\n' workload 'qps per round' 'mean qps' \
	'p99 ms' 'lost/sent' 'upstr q' 'cpu%'
for wl in shared-miss upstream hit-shc hit-plain; do
	awk -v wl="$wl" '
	$2 == "workload=" wl {
		for (i = 3; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
		r = r (r == "" ? "" : " ") v["qps"]; q += v["qps"]; p += v["p99_ms"]
		lost += v["lost"]; sent += v["sent"]; up += v["upstream_q"]
		sub(/%/, "", v["peer_cpu"]); cpu += v["peer_cpu"]; n++
	}
	END { if (n) printf "%-12s %-28s %9.0f %9.2f %13s %10d %7.0f%%\n", wl, r, q / n, p / n,
		lost "/" sent, up, cpu / n }' "$BENCH_RUN/results"
done
echo "(shared-miss: B, local misses answered from Redis; upstream: C without"
echo " shared cache, every query over DoT; hit-*: local hits, B with and C"
echo " without the shared cache configured; one worker each, $NAMES names)"
