#!/bin/sh
# contrib/run-tests.sh: the whole test suite from a fresh clone (as root):
# installs the Debian packages it needs, builds out of tree in build/ and
# runs "make check" (unit, config golden files, man lint, integration tests
# against the real binary with our DoT test server and Debian's Unbound).
# CFLAGS and BUILD_DIR may be set to vary the build (CI adds -Werror and the
# sanitizers).
set -eu
cd "$(dirname "$0")/.."
contrib/deps.sh --test
autoreconf -fi
top=$(pwd)
build=${BUILD_DIR:-build}
mkdir -p "$build"
cd "$build"
"$top/configure" CFLAGS="${CFLAGS:--O2 -g -Wall -Wextra}" >/dev/null
make -j"$(nproc)"
# The tests run one at a time: several of them check how fast a failure is
# answered, and two suites at once on a small machine only add noise.
status=0
make -j"$(nproc)" check TESTS= >/dev/null
make -j1 check || status=$?
# The summary automake wrote, and the log of every test that failed.
if [ -f test-suite.log ]; then
	sed -n '/^# TOTAL/,/^# ERROR/p' test-suite.log
	[ "$status" = 0 ] || cat test-suite.log
fi
exit "$status"
