#!/usr/bin/env bash
# tests/container/run.sh: build contrib/Dockerfile with rootful podman and
# test the image for real, with no registry and no traffic off the host.
#
# The base image debian:bookworm-slim is made with debootstrap from the
# Debian mirror apt already uses when podman does not have it (and kept for
# the next run). The container runs with a test config whose upstream is
# 127.0.0.1@8853 inside the container, where nothing listens: localhost. is
# answered locally, every other name gets SERVFAIL at once, and nothing
# leaves the container. Checks: DNS over UDP and TCP through the published
# ports, the process is not uid 0 and holds no capability but
# CAP_NET_BIND_SERVICE, and (unless DOTPROXY_HTTP=0) the image's own config
# passes "dotproxy -n", /health answers 200 and "podman healthcheck run"
# passes. Prints "ok:" or "FAIL:" per check; exits 1 if any failed.
#
# Run as root from anywhere (make check-container does). Environment:
#   DOTPROXY_HTTP=0   skip the HTTP checks (no http-listen in the test config)
#   KEEP_IMAGE=1      keep the dotproxy:test image afterwards
set -uo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
name=dotproxy-test-$$
image=dotproxy:test
base=debian:bookworm-slim
http=${DOTPROXY_HTTP:-1}
failed=0
started=$(date +%s)

ok() { echo "ok: $*"; }
fail() { echo "FAIL: $*"; failed=1; }
elapsed() { echo $(($(date +%s) - started)); }

if [ "$(id -u)" != 0 ]; then
	echo "FAIL: tests/container/run.sh needs root (rootful podman, apt-get)"
	exit 1
fi

# ---- tools (idempotent: apt-get only when one is missing) ----
need=
command -v podman >/dev/null || need="$need podman"
command -v runc >/dev/null || need="$need runc"
command -v debootstrap >/dev/null || need="$need debootstrap"
command -v dig >/dev/null || need="$need bind9-dnsutils"
command -v curl >/dev/null || need="$need curl"
command -v python3 >/dev/null || need="$need python3"
if [ -n "$need" ]; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >/dev/null &&
		# shellcheck disable=SC2086
		apt-get install -y -q $need >/dev/null ||
		{ echo "FAIL: apt-get install$need"; exit 1; }
fi

tmp=$(mktemp -d /tmp/dotproxy-container.XXXXXX)
chmod 755 "$tmp"
cleanup() {
	if [ "$failed" != 0 ] && podman container exists "$name" 2>/dev/null; then
		echo "--- podman logs $name"
		podman logs "$name" 2>&1 | tail -n 40
	fi
	podman rm -f -t 2 "$name" >/dev/null 2>&1
	[ "${KEEP_IMAGE:-0}" = 1 ] || podman rmi -f "$image" >/dev/null 2>&1
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# crun cannot start containers on this kind of host (hybrid cgroup v1/v2),
# runc can. Our own containers.conf, so /etc/containers stays as it is;
# nofile and nproc limits no higher than our hard limits (podman's defaults
# are higher, and raising a hard limit needs CAP_SYS_RESOURCE, which root
# may not have here).
limit() {  # limit HARD CAP: the smaller of the two
	if [ "$1" = unlimited ] || [ "$1" -gt "$2" ]; then echo "$2"; else echo "$1"; fi
}
nofile=$(limit "$(ulimit -Hn)" 65536)
nproc=$(limit "$(ulimit -Hu)" 4096)
cat >"$tmp/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
runtime = "runc"
EOF
export CONTAINERS_CONF=$tmp/containers.conf

# ---- base image ----
# The Debian mirror apt uses: the first "deb" line for bookworm, or the
# first URIs of a deb822 stanza whose Suites has bookworm.
mirror() {
	local f
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		awk '$1 == "deb" && $0 ~ / bookworm / {
			for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' "$f"
	done
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		awk 'BEGIN { RS = ""; FS = "\n" }
			/(^|\n)Suites:[^\n]* bookworm( |\n|$)/ && /(^|\n)Types:[^\n]*deb( |\n|$)/ {
			for (i = 1; i <= NF; i++) if ($i ~ /^URIs:/) {
				split($i, w, " "); print w[2]; exit } }' "$f"
	done
}
if podman image exists "$base"; then
	ok "base image $base present"
else
	url=$(mirror | head -n 1)
	if [ -z "$url" ]; then
		echo "FAIL: no bookworm mirror in /etc/apt/sources.list{,.d}"
		exit 1
	fi
	echo "making $base with debootstrap from $url"
	# Without the downloaded .debs, which debootstrap leaves in the cache.
	if timeout 600 debootstrap --variant=minbase bookworm "$tmp/rootfs" "$url" \
		>"$tmp/debootstrap.log" 2>&1 &&
		rm -f "$tmp/rootfs"/var/cache/apt/archives/*.deb &&
		tar -C "$tmp/rootfs" -c . | podman import - "$base" >/dev/null; then
		ok "base image $base made with debootstrap ($(elapsed) s)"
	else
		tail -n 20 "$tmp/debootstrap.log"
		echo "FAIL: debootstrap or podman import"
		exit 1
	fi
	rm -rf "$tmp/rootfs"
fi

# ---- build ----
# --pull=never: the base image is the local one, no registry is asked.
t0=$(date +%s)
if timeout 900 podman build --pull=never --format docker -f "$top/contrib/Dockerfile" \
	-t "$image" "$top" >"$tmp/build.log" 2>&1; then
	ok "podman build ($(($(date +%s) - t0)) s)"
else
	tail -n 40 "$tmp/build.log"
	echo "FAIL: podman build (log above)"
	exit 1
fi

# ---- the image's own config ----
if [ "$http" != 0 ]; then
	# (podman's own complaints about systemd timers are left out.)
	if out=$(timeout 30 podman run --rm --health-interval=disable "$image" \
		dotproxy -n 2>&1); then
		ok "the image's /etc/dotproxy.conf passes dotproxy -n"
	else
		fail "the image's /etc/dotproxy.conf: $(printf '%s\n' "$out" | grep -v 'level=')"
	fi
fi

# ---- run ----
# Free ports on the host's loopback for DNS and HTTP.
read -r port hport < <(python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
{
	echo "# tests/container/run.sh: the upstream is the container's own"
	echo "# loopback, where nothing listens, so no query leaves it."
	echo "listen 0.0.0.0@53"
	[ "$http" != 0 ] && echo "http-listen 0.0.0.0@9253"
	echo "upstream 127.0.0.1@8853#dns.example"
	echo "connect-timeout 1s"
	echo "log-level debug"
} >"$tmp/test.conf"
chmod 644 "$tmp/test.conf"
# --health-interval=disable: no systemd timer (there may be no systemd);
# "podman healthcheck run" below runs the image's check by hand.
if timeout 60 podman run -d --name "$name" --health-interval=disable \
	-p "127.0.0.1:$port:53/udp" -p "127.0.0.1:$port:53/tcp" \
	-p "127.0.0.1:$hport:9253/tcp" \
	-v "$tmp/test.conf:/etc/dotproxy.conf:ro" "$image" >/dev/null 2>"$tmp/run.err"; then
	ok "container started (DNS on 127.0.0.1:$port, HTTP on 127.0.0.1:$hport)"
else
	cat "$tmp/run.err"
	fail "podman run"
	exit 1
fi

dq() { dig +time=2 +tries=1 @127.0.0.1 -p "$port" "$@"; }

# Ready when localhost. is answered; at most 20 s.
ready=
for _ in $(seq 1 40); do
	if [ "$(podman inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" != true ]; then
		break
	fi
	if [ "$(dq +short localhost A 2>/dev/null)" = 127.0.0.1 ]; then
		ready=1
		break
	fi
	sleep 0.5
done
[ -n "$ready" ] || fail "no answer for localhost. within 20 s (container running: $(podman inspect -f '{{.State.Running}}' "$name" 2>&1))"

if [ -n "$ready" ]; then
	a=$(dq +short localhost A 2>&1)
	[ "$a" = 127.0.0.1 ] && ok "UDP: localhost. A is 127.0.0.1" ||
		fail "UDP: localhost. A: '$a'"
	a=$(dq +tcp +short localhost A 2>&1)
	[ "$a" = 127.0.0.1 ] && ok "TCP: localhost. A is 127.0.0.1" ||
		fail "TCP: localhost. A: '$a'"
	# The upstream refuses the connection: SERVFAIL, well before the 3 s
	# query timeout.
	t0=$(date +%s%N)
	out=$(dq example.com A 2>&1)
	ms=$((($(date +%s%N) - t0) / 1000000))
	if printf '%s\n' "$out" | grep -q 'status: SERVFAIL' && [ "$ms" -lt 2500 ]; then
		ok "example.com. gets SERVFAIL in $ms ms (upstream refused)"
	else
		fail "example.com. with a refusing upstream (${ms} ms): $(printf '%s' "$out" | grep -E 'status:|timed out|refused' | head -n 1)"
	fi
	a=$(dq +tcp example.com A 2>&1 | grep -o 'status: [A-Z]*')
	[ "$a" = "status: SERVFAIL" ] && ok "TCP: example.com. gets SERVFAIL" ||
		fail "TCP: example.com.: '$a'"
fi

# PID 1 is dotproxy (exec form CMD); its uids and capabilities.
st=$(timeout 20 podman exec "$name" cat /proc/1/status 2>&1)
cmd=$(printf '%s\n' "$st" | awk '$1 == "Name:" { print $2 }')
uids=$(printf '%s\n' "$st" | awk '$1 == "Uid:" { print $2, $3, $4, $5 }')
capeff=$(printf '%s\n' "$st" | awk '$1 == "CapEff:" { print $2 }')
if [ "$cmd" = dotproxy ] && [ -n "$uids" ] && ! printf ' %s ' "$uids" | grep -q ' 0 '; then
	ok "dotproxy runs as uid $uids (not 0)"
else
	fail "process 1 is '$cmd' with uids '$uids'"
fi
# CAP_NET_BIND_SERVICE is bit 10; nothing else may be effective (after a
# privilege drop, nothing at all).
if [ -n "$capeff" ] && [ $((0x$capeff & ~0x400)) = 0 ]; then
	ok "effective capabilities $capeff (CAP_NET_BIND_SERVICE at most)"
else
	fail "effective capabilities '$capeff'"
fi

if [ "$http" != 0 ]; then
	code=$(curl -s -o "$tmp/health" -w '%{http_code}' --max-time 5 \
		"http://127.0.0.1:$hport/health" 2>&1)
	[ "$code" = 200 ] && ok "GET /health: 200 $(head -c 20 "$tmp/health")" ||
		fail "GET /health: '$code'"
	if timeout 30 podman healthcheck run "$name" >"$tmp/hc.out" 2>&1; then
		ok "podman healthcheck run"
	else
		fail "podman healthcheck run: $(cat "$tmp/hc.out")"
	fi
else
	echo "skipped: HTTP checks (DOTPROXY_HTTP=0)"
fi

if [ "$(podman inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" = true ]; then
	ok "container still running"
else
	fail "container exited"
fi

echo "container test: $(elapsed) s"
exit "$failed"
