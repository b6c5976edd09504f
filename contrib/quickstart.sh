#!/bin/sh
# contrib/quickstart.sh: on a fresh Debian 12 machine (as root), install the
# packages, build dotproxy and start it in the foreground with its defaults:
# listening on 127.0.0.1 and ::1 port 53, forwarding over DNS-over-TLS to
# 1.1.1.1 and 1.0.0.1 (cloudflare-dns.com), certificates checked against the
# system trust store. Stop it with Ctrl-C.
set -eu
cd "$(dirname "$0")/.."
contrib/deps.sh
[ -x configure ] || autoreconf -fi
[ -f Makefile ] || ./configure --sysconfdir=/etc
make -j"$(nproc)"
exec ./dotproxy -d "$@"
