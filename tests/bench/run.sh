#!/bin/sh
# tests/bench/run.sh: measure dotproxy next to its peers with the shared
# bench kit (dnsperf against a local DoT backend, all on 127.0.0.1).
# Run from the build directory (make bench). Extra arguments go to
# compare.sh, e.g. --rounds 3 --duration 5 --peers "unbound dnsdist".
set -eu
kit=${BENCH_KIT:-$(cd "$(dirname "$0")/../../.." && pwd)/shared/bench}
if [ ! -x "$kit/compare.sh" ]; then
	echo "bench: no kit at $kit (set BENCH_KIT)" >&2
	exit 1
fi
bin=$(pwd)/dotproxy
[ -x "$bin" ] || { echo "bench: build dotproxy first ($bin)" >&2; exit 1; }
"$kit/setup.sh"
exec "$kit/compare.sh" "$@" --also dotproxy \
	"$bin -d -l 127.0.0.1@{port} -u 127.0.0.1@{tls_port}#{server_name} --ca-file {ca}"
