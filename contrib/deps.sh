#!/bin/sh
# contrib/deps.sh: install the Debian 12 packages dotproxy needs.
#   contrib/deps.sh          build and run dependencies
#   contrib/deps.sh --test   also what the test suite needs (real clients,
#                            certtool, Unbound as a second DoT backend,
#                            ldns-keygen/ldns-signzone and dnspython for
#                            the protocol tier)
# Run as root. Uses apt-get only; everything comes from Debian's archive.
set -eu
BUILD="build-essential autoconf automake pkg-config libuv1-dev libgnutls28-dev
libc-ares-dev uthash-dev libsystemd-dev libcap-ng-dev libmicrohttpd-dev
libhiredis-dev ca-certificates"
TEST="libcmocka-dev mandoc gnutls-bin bind9-dnsutils knot-dnsutils unbound
python3 python3-yaml procps iproute2 util-linux curl openssl
python3-prometheus-client python3-dnspython systemd ldnsutils
redis-server redis-tools nutcracker"
pkgs=$BUILD
[ "${1:-}" = "--test" ] && pkgs="$BUILD $TEST"
if [ "$(id -u)" != 0 ]; then
	echo "contrib/deps.sh: run as root (apt-get install)" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Keep maintainer scripts from starting unbound on port 53 during install.
made_policy=
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
	chmod +x /usr/sbin/policy-rc.d
	made_policy=1
fi
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $pkgs
[ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d
exit 0
