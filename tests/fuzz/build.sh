#!/bin/sh
# build.sh SRCDIR OUTDIR: build the libFuzzer targets into OUTDIR.
#
# Each target is compiled from the project's own sources with clang and
# -fsanitize=fuzzer,address,undefined (the autotools build may use gcc,
# and libFuzzer needs clang). fuzz_upstream (the pool: upstream.c and
# upselect.c) takes tests/fuzz/fake_tls.c in place of src/tls.c. FUZZ_CC
# overrides the compiler (default clang).
# Debian 12: apt-get install clang libclang-rt-14-dev.
set -eu
srcdir=$1
out=$2
cc=${FUZZ_CC:-clang}

if ! command -v "$cc" >/dev/null 2>&1; then
	echo "build.sh: $cc not found (apt-get install clang libclang-rt-14-dev)" >&2
	exit 1
fi
mkdir -p "$out"
flags="-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"
flags="$flags -Wall -Wextra -Werror -I$srcdir/src -I$srcdir/tests/fuzz"
flags="$flags -DSYSCONFDIR=\"/etc\""
cares=$(pkg-config --cflags --libs libcares)
uv=$(pkg-config --cflags --libs libuv)
gnutls_cflags=$(pkg-config --cflags gnutls)
s=$srcdir/src
f=$srcdir/tests/fuzz

build() {  # build NAME SOURCES... -- LIBS...
	name=$1
	shift
	echo "  CCLD     $out/$name"
	# shellcheck disable=SC2086
	$cc $flags "$@" -o "$out/$name"
}

build fuzz_dnsmsg "$f/fuzz_dnsmsg.c" "$s/dnsmsg.c" $cares
build fuzz_cache "$f/fuzz_cache.c" "$s/cache.c" "$s/dnsmsg.c" "$s/mem.c" \
	$uv $cares
build fuzz_conf "$f/fuzz_conf.c" "$s/conf.c" "$s/acl.c" "$s/log.c" "$s/mem.c"
build fuzz_upstream $gnutls_cflags "$f/fuzz_upstream.c" "$f/fake_tls.c" \
	"$s/upstream.c" "$s/upselect.c" "$s/conf.c" "$s/acl.c" "$s/dnsmsg.c" \
	"$s/log.c" "$s/mem.c" \
	$uv $cares
