#!/bin/sh
# run.sh SRCDIR OUTDIR SECONDS: run each fuzz target built in OUTDIR for
# SECONDS, seeded from SRCDIR/tests/fuzz/corpus/<target>/ (read only: new
# inputs go to OUTDIR/corpus-<target>/). Prints "PASS: fuzz_x" or
# "FAIL: fuzz_x" per target and exits 1 if any failed. A failure leaves
# the crashing input as OUTDIR/crash-* (or leak-*, timeout-*, oom-*) and
# the log as OUTDIR/fuzz_x.log; replay with OUTDIR/fuzz_x OUTDIR/crash-...
set -u
srcdir=$1
out=$2
secs=$3
rc=0
# A smaller quarantine than ASan's 256 MB keeps a long run's RSS down;
# use-after-free is still caught (freed memory is poisoned until reused).
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=64"
export ASAN_OPTIONS

for t in dnsmsg upstream conf cache; do
	bin=$out/fuzz_$t
	mkdir -p "$out/corpus-$t"
	echo "  FUZZ     fuzz_$t for ${secs}s"
	if "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
	    -max_len=8192 -print_final_stats=1 \
	    -artifact_prefix="$out/" "$out/corpus-$t" \
	    "$srcdir/tests/fuzz/corpus/$t" >"$out/fuzz_$t.log" 2>&1; then
		echo "PASS: fuzz_$t ($(grep -o 'stat::number_of_executed_units: *[0-9]*' \
		    "$out/fuzz_$t.log" | grep -o '[0-9]*$') runs)"
	else
		tail -n 60 "$out/fuzz_$t.log"
		echo "FAIL: fuzz_$t (log: $out/fuzz_$t.log)"
		rc=1
	fi
done
exit $rc
