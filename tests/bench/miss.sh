#!/bin/sh
# tests/bench/miss.sh: cache misses (every query goes upstream over DoT),
# dotproxy next to Unbound, in runs long enough to read, with what each of
# the two CPUs was doing meanwhile. The shared kit's compare.sh asks at
# most 45000 new names per round, about one second of dnsperf at these
# rates: too short for a steady p99, and too short to see which core is
# the ceiling. Here each round asks MISS_COUNT names (default 130000,
# about 4 s) and /proc/stat is sampled every 0.25 s during the run.
#
# Usage, from the build directory: sh tests/bench/miss.sh
# Env: ROUNDS (3), MISS_COUNT (130000), BENCH_KIT (the kit, by default
#      shared/bench beside the repository), BENCH_KEEP=1 keeps the state
#      dir, RESULTS (file to append the RESULT lines to).
#
# Pinned as the kit pins its peers: the target on CPU 1, the backend (one
# Unbound thread serving the zone over DoT) and dnsperf on CPU 0. Each
# RESULT line gets cpu0= and cpu1=: the busy share of each CPU (user,
# system, irq and softirq) from the run's first sample to its last, and
# steal=, the share of both that the hypervisor gave to other guests.
# When cpu0 is near 100 % and the target's own core is not, the backend
# and dnsperf set the rate, not the target.
# shellcheck shell=bash
# (sh runs this; it re-executes itself with bash, which the kit needs)
if [ -z "${BASH_VERSION:-}" ]; then
	exec bash "$0" "$@"
fi
set -euo pipefail
bin=$(pwd)/dotproxy
[[ -x $bin ]] || { echo "miss.sh: build dotproxy first ($bin)" >&2; exit 1; }
kit=${BENCH_KIT:-$(cd "$(dirname "$0")/../../.." && pwd)/shared/bench}
[[ -f $kit/lib.sh ]] || { echo "miss.sh: no bench kit at $kit (set BENCH_KIT)" >&2; exit 1; }
for t in dnsperf unbound unbound-control; do
	command -v "$t" >/dev/null 2>&1 || {
		echo "miss.sh: $t not found (the kit's setup.sh installs it)" >&2
		exit 1
	}
done
export BENCH_KIT=$kit
# shellcheck source=/dev/null
source "$kit/lib.sh"
maybe_netns bash "$0" "$@"

ROUNDS=${ROUNDS:-3} MISS_COUNT=${MISS_COUNT:-130000}
# Every round of each target asks names it never asked: the zone must
# hold them all (the kit's run.sh starts at name5000).
N=$((5000 + ROUNDS * MISS_COUNT))
BENCH_RUN=$(mktemp -d "${TMPDIR:-/tmp}/dotproxy-miss.XXXXXX")
export BENCH_RUN N MISS_COUNT WORKLOADS=miss-udp
OUT=$BENCH_RUN/results.txt
SAMPLES=$BENCH_RUN/cpu.txt
SAMPLER=''

cleanup() {
	[[ -z $SAMPLER ]] || kill "$SAMPLER" 2>/dev/null || true
	"$kit/peers.sh" stop >/dev/null 2>&1 || true
	"$kit/backend.sh" stop >/dev/null 2>&1 || true
	if [[ -n ${RESULTS:-} && -f $OUT ]]; then cat "$OUT" >>"$RESULTS"; fi
	if [[ ${BENCH_KEEP:-0} == 1 ]]; then log "kept $BENCH_RUN"; else rm -rf "$BENCH_RUN"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# One line per 0.25 s: milliseconds since the epoch, then for cpu0 and
# cpu1 the busy, stolen and total jiffies (cumulative; differences are
# taken later). Busy is user, nice, system, irq and softirq; stolen is
# time the hypervisor gave to another guest (this is a shared machine).
# Bash builtins only, no process per sample: a sampler that ran awk and
# date four times a second cut both targets' q/s by a third on this VM.
# Bounded: it ends with the script (cleanup) or after an hour.
sample() {
	local i cpu u n s id io irq si st rest t line
	local -A busy steal all
	exec 3<> <(:)    # read -t on it is a sleep without a process
	for ((i = 0; i < 14400; i++)); do
		t=${EPOCHREALTIME/[.,]/}
		while read -r cpu u n s id io irq si st rest; do
			case $cpu in
			cpu0 | cpu1)
				busy[$cpu]=$((u + n + s + irq + si))
				steal[$cpu]=$st
				all[$cpu]=$((u + n + s + id + io + irq + si + st))
				;;
			intr) break ;;
			esac
		done </proc/stat
		line="$((t / 1000)) ${busy[cpu0]} ${steal[cpu0]} ${all[cpu0]}"
		echo "$line ${busy[cpu1]} ${steal[cpu1]} ${all[cpu1]}"
		read -r -t 0.25 -u 3 || true
	done
}

# cpu_share FROM_MS TO_MS: "cpu0=P% cpu1=Q% steal=S%" over the samples in
# the window (steal: both CPUs').
cpu_share() {
	awk -v from="$1" -v to="$2" '
		$1 >= from && $1 <= to {
			if (n++ == 0) for (f = 2; f <= 7; f++) a[f] = $f
			for (f = 2; f <= 7; f++) b[f] = $f
		}
		END {
			if (n < 2 || b[4] == a[4] || b[7] == a[7]) {
				print "cpu0=? cpu1=? steal=?"
				exit
			}
			all = b[4] - a[4] + b[7] - a[7]
			printf "cpu0=%d%% cpu1=%d%% steal=%d%%\n",
			    100 * (b[2] - a[2]) / (b[4] - a[4]),
			    100 * (b[5] - a[5]) / (b[7] - a[7]),
			    100 * (b[3] - a[3] + b[6] - a[6]) / all
		}
	' "$SAMPLES"
}

# measure LABEL PORT ROUND: one run.sh miss-udp run, its RESULT line with
# the CPU shares of the run's time (less 0.3 s at each end for dnsperf's
# start and the kit's bookkeeping) appended.
measure() {
	local label=$1 port=$2 round=$3 t0 t1 line
	: >"$BENCH_RUN/one.txt"
	t0=$(date +%s%3N)
	ROUND=$round RESULTS=$BENCH_RUN/one.txt "$kit/run.sh" "$port" "$label" >/dev/null 2>&1 ||
		log "run.sh failed for $label"
	t1=$(date +%s%3N)
	line=$(grep '^RESULT' "$BENCH_RUN/one.txt" | tail -n 1) || return 0
	line="$line $(cpu_share $((t0 + 300)) $((t1 - 300)))"
	echo "$line" | tee -a "$OUT"
}

log "zone of $N names, $ROUNDS rounds of $MISS_COUNT misses per target"
"$kit/backend.sh" start >&2
sample >"$SAMPLES" &
SAMPLER=$!
for ((r = 1; r <= ROUNDS; r++)); do
	"$kit/peers.sh" start unbound >&2
	measure unbound 15401 "$r"
	"$kit/peers.sh" stop >&2
	"$kit/peers.sh" add dotproxy "$bin -d -c /dev/null -l 127.0.0.1@{port} -u 127.0.0.1@{tls_port}#{server_name} --ca-file {ca}" 15410 >&2
	measure dotproxy 15410 "$r"
	"$kit/peers.sh" stop >&2
done

# The means per target, from the RESULT lines.
awk '
	{
		for (f = 1; f <= NF; f++) {
			split($f, kv, "=")
			v[kv[1]] = kv[2]
		}
		l = v["label"]; sub(/%/, "", v["peer_cpu"])
		sub(/%/, "", v["cpu0"]); sub(/%/, "", v["cpu1"])
		sub(/%/, "", v["steal"]); st[l] += v["steal"]
		n[l]++; q[l] += v["qps"]; p[l] += v["p99_ms"]; pc[l] += v["peer_cpu"]
		c0[l] += v["cpu0"]; c1[l] += v["cpu1"]
		if (!(l in seen)) { seen[l] = 1; order[++k] = l }
	}
	END {
		printf "%-9s %9s %8s %6s %6s %6s %6s %9s\n", "target",
		    "qps mean", "p99 ms", "cpu%", "cpu0%", "cpu1%", "steal%",
		    "qps/core"
		for (i = 1; i <= k; i++) {
			l = order[i]
			printf "%-9s %9d %8.2f %6d %6d %6d %6d %9d\n", l,
			    q[l] / n[l], p[l] / n[l], pc[l] / n[l], c0[l] / n[l],
			    c1[l] / n[l], st[l] / n[l],
			    (pc[l] > 0 ? q[l] / (pc[l] / 100) : 0)
		}
	}
' "$OUT"
