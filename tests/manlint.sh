#!/bin/sh
# manlint.sh: the manual pages must pass "mandoc -Tlint -W warning" clean.
#
# Any message at all, or a non-zero exit, fails the test: a warning in a
# man page is a bug in it. top_srcdir comes from automake's test harness
# and defaults to "." when run by hand from the top of the tree.

set -u

top_srcdir=${top_srcdir:-.}
if ! command -v mandoc >/dev/null 2>&1; then
	echo "manlint.sh: mandoc not found (Debian package: mandoc)" >&2
	exit 99
fi

failed=0
for page in "$top_srcdir/man/dotproxy.8" "$top_srcdir/man/dotproxy.conf.5"; do
	if [ ! -f "$page" ]; then
		echo "FAIL: $page is missing"
		failed=1
		continue
	fi
	out=$(mandoc -Tlint -W warning "$page" 2>&1)
	rc=$?
	if [ "$rc" -ne 0 ] || [ -n "$out" ]; then
		echo "FAIL: $page (mandoc exit $rc)"
		printf '%s\n' "$out"
		failed=1
	else
		echo "ok: $page"
	fi
done
exit "$failed"
