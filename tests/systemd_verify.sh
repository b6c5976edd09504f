#!/bin/sh
# systemd_verify.sh: contrib/dotproxy.service and contrib/dotproxy.socket
# must pass "systemd-analyze verify" without a word about them, and carry
# the settings the daemon's systemd integration relies on.
#
# The units are copied to a temporary directory with the binary's path
# replaced by the one just built (verify checks that ExecStart= exists).
# Any message that names one of our units, or a non-zero exit, fails.
# top_srcdir and top_builddir come from automake's test harness and default
# to "." when run by hand from a build directory.

set -u

top_srcdir=${top_srcdir:-.}
top_builddir=${top_builddir:-.}
if ! command -v systemd-analyze >/dev/null 2>&1; then
	echo "systemd_verify.sh: systemd-analyze not found (Debian package: systemd)" >&2
	exit 99
fi
bin=$(cd "$top_builddir" && pwd)/dotproxy
if [ ! -x "$bin" ]; then
	echo "systemd_verify.sh: $bin not built" >&2
	exit 99
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for u in dotproxy.service dotproxy.socket; do
	sed "s|/usr/local/sbin/dotproxy|$bin|g" "$top_srcdir/contrib/$u" >"$tmp/$u"
done

failed=0
# --man=no: the man pages in Documentation= are not installed here.
out=$(cd "$tmp" && systemd-analyze verify --man=no \
	"$tmp/dotproxy.service" "$tmp/dotproxy.socket" 2>&1)
rc=$?
ours=$(printf '%s\n' "$out" | grep -E 'dotproxy\.(service|socket)')
if [ "$rc" -ne 0 ] || [ -n "$ours" ]; then
	echo "FAIL: systemd-analyze verify (exit $rc)"
	printf '%s\n' "$out"
	failed=1
else
	echo "ok: systemd-analyze verify dotproxy.service dotproxy.socket"
fi

# What the daemon's sd_notify, watchdog, reload and socket activation code
# expects of its units.
check() {  # check UNIT LINE: the unit has this exact line
	if grep -qxF "$2" "$top_srcdir/contrib/$1"; then
		echo "ok: $1: $2"
	else
		echo "FAIL: $1 lacks '$2'"
		failed=1
	fi
}
check dotproxy.service 'Type=notify'
check dotproxy.service 'NotifyAccess=main'
check dotproxy.service 'ExecReload=/bin/kill -HUP $MAINPID'
check dotproxy.service 'WatchdogSec=30s'
check dotproxy.service 'DynamicUser=yes'
check dotproxy.service 'RuntimeDirectory=dotproxy'
check dotproxy.socket 'ListenDatagram=127.0.0.1:53'
check dotproxy.socket 'ListenStream=127.0.0.1:53'
check dotproxy.socket 'ListenDatagram=[::1]:53'
check dotproxy.socket 'ListenStream=[::1]:53'
check dotproxy.socket 'BindIPv6Only=ipv6-only'
check dotproxy.socket 'Service=dotproxy.service'
check dotproxy.socket 'WantedBy=sockets.target'
exit "$failed"
