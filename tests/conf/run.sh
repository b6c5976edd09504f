#!/bin/sh
# run.sh: golden tests for the configuration, through "dotproxy -n".
#
# For every NAME.conf here there is either NAME.ok, the exact stdout of
# "dotproxy -n -c NAME.conf" (exit 0), or NAME.err, its exact stderr (exit 2,
# nothing on stdout). The file is passed by its bare name from this
# directory so that the "NAME.conf:LINE:" in messages does not depend on
# where the tree is. Each .ok is also fed back to -n and must print itself:
# the printout is a config file that reads back to the same value. The
# shipped contrib/dotproxy.conf.example is checked against example.ok, and
# /dev/zero against dev-zero.err. ca.pem is the trust anchor full.conf and
# its printout name (-n loads a ca-file as the start does).
#
# top_srcdir and top_builddir come from automake's test harness; run by
# hand from the top of the tree they default to ".".

set -u

top_srcdir=${top_srcdir:-.}
top_builddir=${top_builddir:-.}
srcdir=$(cd "$top_srcdir" && pwd) || exit 99
builddir=$(cd "$top_builddir" && pwd) || exit 99
dotproxy=$builddir/dotproxy
if [ ! -x "$dotproxy" ]; then
	echo "run.sh: $dotproxy is missing; build it first" >&2
	exit 99
fi
tmp=$(mktemp -d) || exit 99
trap 'rm -rf "$tmp"' EXIT
cd "$srcdir/tests/conf" || exit 99

pass=0
failed=0

# run FILE: dotproxy -n on FILE, bounded in time; sets rc, output in tmp.
run() {
	timeout 10 "$dotproxy" -n -c "$1" >"$tmp/out" 2>"$tmp/err"
	rc=$?
}

# bad NAME WHY: report a failure with what dotproxy printed.
bad() {
	echo "FAIL: $1: $2"
	echo "--- stdout:"
	cat "$tmp/out"
	echo "--- stderr:"
	cat "$tmp/err"
	failed=$((failed + 1))
}

# check_ok NAME FILE EXPECTED: FILE must give exit 0 and EXPECTED on stdout.
check_ok() {
	run "$2"
	if [ "$rc" -ne 0 ]; then
		bad "$1" "exit status $rc, expected 0"
	elif ! cmp -s "$3" "$tmp/out"; then
		bad "$1" "stdout differs from $3"
		diff -u "$3" "$tmp/out"
	else
		pass=$((pass + 1))
	fi
}

# check_err NAME FILE EXPECTED: exit 2, EXPECTED on stderr, empty stdout.
check_err() {
	run "$2"
	if [ "$rc" -ne 2 ]; then
		bad "$1" "exit status $rc, expected 2"
	elif [ -s "$tmp/out" ]; then
		bad "$1" "unexpected output on stdout"
	elif ! cmp -s "$3" "$tmp/err"; then
		bad "$1" "stderr differs from $3"
		diff -u "$3" "$tmp/err"
	else
		pass=$((pass + 1))
	fi
}

for conf in *.conf; do
	name=${conf%.conf}
	if [ -f "$name.ok" ] && [ -f "$name.err" ]; then
		echo "FAIL: $name: both $name.ok and $name.err exist"
		failed=$((failed + 1))
	elif [ -f "$name.ok" ]; then
		check_ok "$name" "$conf" "$name.ok"
		# The printout reads back to itself.
		cp "$name.ok" "$tmp/reread.conf"
		check_ok "$name (reread)" "$tmp/reread.conf" "$name.ok"
	elif [ -f "$name.err" ]; then
		check_err "$name" "$conf" "$name.err"
	else
		echo "FAIL: $name: neither $name.ok nor $name.err exists"
		failed=$((failed + 1))
	fi
done

# An expectation without its .conf would silently test nothing.
for want in *.ok *.err; do
	name=${want%.*}
	[ "$name" = example ] || [ "$name" = dev-zero ] && continue
	if [ ! -f "$name.conf" ]; then
		echo "FAIL: $want has no $name.conf"
		failed=$((failed + 1))
	fi
done

check_ok example "$srcdir/contrib/dotproxy.conf.example" example.ok
# Endless NUL bytes and no newline: the read is bounded, not endless.
check_err dev-zero /dev/zero dev-zero.err

echo "conf tests: $pass passed, $failed failed"
[ "$failed" -eq 0 ]
