#!/usr/bin/env bash
# upstream_probe.sh: integration checks of the upstream pool (src/upstream.c)
# through tests/upstream_probe against real DoT servers on 127.0.0.1:
# Debian's Unbound serving a small auth-zone over TLS, and a fault-injecting
# TLS server (Python stdlib, embedded below) that stays silent, closes,
# sends garbage, answers late, answers with another question, reorders or
# dribbles its answers byte by byte, ignores some names, goes silent on its
# first connection only, sends an RFC 7828 keepalive, or never speaks TLS.
# Besides the old checks: upstream selection (ordered, round-robin,
# fastest), the answer timeout (moving a query, half-open connections),
# jittered capped back-off, connection lifetime (renewed in full, verified
# again), keepalive, SPKI pins, the status API with its per-upstream
# counters and TLS facts, and reconfiguring the upstream list (SIGHUP)
# under load.
#
# Usage: tests/upstream_probe.sh [PROBE]   (or PROBE=... in the environment)
# Exits non-zero when a check fails; the work directory (certs, configs,
# every probe's output and log) is kept then and its path printed.
set -euo pipefail

PROBE=${1:-${PROBE:-${top_builddir:-.}/tests/upstream_probe}}
[[ -x $PROBE ]] || { echo "upstream_probe.sh: no probe at $PROBE" >&2; exit 2; }
for tool in unbound certtool kdig python3; do
	command -v "$tool" >/dev/null || [[ -x /usr/sbin/$tool ]] ||
		{ echo "upstream_probe.sh: $tool is missing" >&2; exit 2; }
done
UNBOUND=$(command -v unbound || echo /usr/sbin/unbound)

T=$(mktemp -d "${TMPDIR:-/tmp}/upstream_probe.XXXXXX")
PIDS=()
FAILED=0
# A sanitizer report must not look like an ordinary "not all answered" (1).
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}exitcode=86
export UBSAN_OPTIONS=${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}halt_on_error=1:exitcode=86:print_stacktrace=1

cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	if ((FAILED)); then
		echo "upstream_probe.sh: FAILED; logs kept in $T" >&2
	else
		rm -rf "$T"
	fi
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; FAILED=1; }
pass() { echo "ok: $*"; }

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

now_ms() { date +%s%3N; }

# ---- certificates: a CA and a server cert for dns.example; a second CA
# that signed nothing we serve (for "unknown CA").
gen_certs() {
	local q=(--no-text --key-type=ecdsa --curve=secp256r1)
	printf 'cn = "upstream_probe CA"\nca\ncert_signing_key\nexpiration_days = 2\n' >"$T/ca.tmpl"
	printf 'cn = "dns.example"\ndns_name = "dns.example"\nip_address = "127.0.0.1"\ntls_www_server\nsigning_key\nexpiration_days = 2\n' >"$T/server.tmpl"
	certtool --generate-privkey "${q[@]}" --outfile "$T/ca.key" 2>/dev/null
	certtool --generate-self-signed --no-text --load-privkey "$T/ca.key" \
		--template "$T/ca.tmpl" --outfile "$T/ca.pem" 2>/dev/null
	certtool --generate-privkey "${q[@]}" --outfile "$T/server.key" 2>/dev/null
	certtool --generate-certificate --no-text --load-privkey "$T/server.key" \
		--load-ca-certificate "$T/ca.pem" --load-ca-privkey "$T/ca.key" \
		--template "$T/server.tmpl" --outfile "$T/server.pem" 2>/dev/null
	certtool --generate-privkey "${q[@]}" --outfile "$T/other.key" 2>/dev/null
	certtool --generate-self-signed --no-text --load-privkey "$T/other.key" \
		--template "$T/ca.tmpl" --outfile "$T/other-ca.pem" 2>/dev/null
}

# ---- Unbound: zone probe.test. with n0..n99 A 10.0.0.I; anything else in
# the zone is NXDOMAIN.
gen_zone() {
	awk 'BEGIN {
		print "$ORIGIN probe.test.\n$TTL 300\n@ SOA ns hostmaster 1 3600 600 86400 60\n@ NS ns\nns A 127.0.0.1"
		for (i = 0; i < 100; i++) printf "n%d A 10.0.%d.%d\n", i, int(i / 256), i % 256
	}' >"$T/zone.db"
}

# start_unbound NAME PORT: Unbound answering DoT on 127.0.0.1@PORT; waits
# until a real TLS query is answered. Sets STARTED_PID.
start_unbound() {
	local name=$1 port=$2 d=$T/$1 i
	mkdir -p "$d"
	cat >"$d/unbound.conf" <<EOF
server:
  num-threads: 1
  interface: 127.0.0.1@$port
  tls-port: $port
  tls-service-key: "$T/server.key"
  tls-service-pem: "$T/server.pem"
  do-daemonize: no
  use-syslog: no
  logfile: "$d/unbound.log"
  verbosity: 1
  username: ""
  chroot: ""
  directory: "$d"
  pidfile: ""
  do-ip6: no
  module-config: "iterator"
  access-control: 127.0.0.0/8 allow
  incoming-num-tcp: 100
  local-zone: "." static
  local-zone: "probe.test." transparent
auth-zone:
  name: "probe.test."
  zonefile: "$T/zone.db"
  for-downstream: yes
  for-upstream: no
  fallback-enabled: no
EOF
	"$UNBOUND" -d -c "$d/unbound.conf" >"$d/stderr.log" 2>&1 </dev/null &
	STARTED_PID=$!
	PIDS+=("$STARTED_PID")
	for ((i = 0; i < 100; i++)); do
		kill -0 "$STARTED_PID" 2>/dev/null || break
		if kdig +time=1 +retry=0 -p "$port" @127.0.0.1 +tls-ca="$T/ca.pem" \
			+tls-hostname=dns.example n0.probe.test A 2>/dev/null | grep -q NOERROR; then
			return 0
		fi
		sleep 0.1
	done
	echo "unbound $name on port $port did not come up; see $d" >&2
	FAILED=1
	exit 1
}

# ---- the fault server
cat >"$T/fault.py" <<'EOF'
# fault.py MODE PORT CERT KEY [ARG]: a DoT server that answers every query
# with its question only (NOERROR, QR|RA), or misbehaves per MODE:
# echo, silent, close (after the first bytes), garbage (a 4-byte frame),
# late ARG (answers after ARG ms), mismatch (answer names another question),
# reorder ARG (holds ARG queries, answers them in reverse), dribble (answers
# written one byte per TLS record), drop (never answers names whose first
# label starts with "drop"), silentfirst (the first connection is silent,
# later ones echo), keepalive ARG (answers carry an edns-tcp-keepalive
# option of ARG * 100 ms), notls (accepts TCP, never answers the TLS
# handshake). Prints "query NAME" for every query read.
import socket, ssl, struct, sys, threading, time

mode, port, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
arg = int(sys.argv[5]) if len(sys.argv) > 5 else 0
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", port))
ls.listen(64)
print("ready", flush=True)
n_conns = 0
out_lock = threading.Lock()

def qname(q):
    i, labels = 12, []
    while q[i] != 0:
        labels.append(q[i + 1:i + 1 + q[i]].decode("ascii", "replace"))
        i += 1 + q[i]
    return ".".join(labels)

def answer(q):
    i = 12
    while q[i] != 0:
        i += 1 + q[i]
    a = bytearray(q[:i + 5])
    a[2] |= 0x80
    a[3] = 0x80
    a[4:12] = b"\x00\x01\x00\x00\x00\x00\x00\x00"
    if mode == "mismatch":
        a[13] ^= 0x01
    if mode == "keepalive":
        # OPT: root, type 41, payload 1232, TTL 0, one option.
        a[10:12] = b"\x00\x01"
        a += b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x06"
        a += struct.pack("!HHH", 11, 2, arg)
    return bytes(a)

def frame(m):
    return struct.pack("!H", len(m)) + m

def send_locked(c, lock, data):
    with lock:
        try:
            c.sendall(data)
        except Exception:
            pass

def serve(c, conn_no):
    buf, held, lock = b"", [], threading.Lock()
    silent = mode == "silent" or (mode == "silentfirst" and conn_no == 1)
    if mode == "notls":
        try:
            while c.recv(65536):
                pass
        except Exception:
            pass
        c.close()
        return
    try:
        c = ctx.wrap_socket(c, server_side=True)
    except Exception as e:
        print("handshake failed:", e, file=sys.stderr, flush=True)
        return
    try:
        while True:
            d = c.recv(65536)
            if not d or mode == "close":
                break
            buf += d
            out = []
            while len(buf) >= 2 and len(buf) >= 2 + struct.unpack("!H", buf[:2])[0]:
                n = struct.unpack("!H", buf[:2])[0]
                out.append(buf[2:2 + n])
                buf = buf[2 + n:]
            with out_lock:
                for q in out:
                    print("query", qname(q), flush=True)
            if mode == "drop":
                out = [q for q in out if not qname(q).startswith("drop")]
            if silent:
                continue
            if mode == "garbage":
                c.sendall(b"\x00\x04abcd")
                continue
            if mode == "late":
                data = b"".join(frame(answer(q)) for q in out)
                threading.Timer(arg / 1000.0, send_locked, (c, lock, data)).start()
                continue
            if mode == "reorder":
                held += out
                if len(held) >= arg:
                    c.sendall(b"".join(frame(answer(q)) for q in reversed(held)))
                    held = []
                continue
            data = b"".join(frame(answer(q)) for q in out)
            if mode == "dribble":
                for i in range(len(data)):
                    c.sendall(data[i:i + 1])
            else:
                c.sendall(data)
    except Exception as e:
        print("conn error:", e, file=sys.stderr, flush=True)
    finally:
        try:
            c.close()
        except Exception:
            pass

while True:
    c, _ = ls.accept()
    n_conns += 1
    threading.Thread(target=serve, args=(c, n_conns), daemon=True).start()
EOF

# start_fault MODE [ARG]: sets FAULT_PORT, and FAULT_OUT (its stdout: a
# "query NAME" line per query read).
start_fault() {
	local mode=$1 arg=${2:-0} i out
	FAULT_PORT=$(free_port)
	out=$T/fault-$mode-$FAULT_PORT
	FAULT_OUT=$out.out
	python3 "$T/fault.py" "$mode" "$FAULT_PORT" "$T/server.pem" "$T/server.key" "$arg" \
		>"$out.out" 2>"$out.err" </dev/null &
	PIDS+=("$!")
	for ((i = 0; i < 100; i++)); do
		grep -q ready "$out.out" 2>/dev/null && return 0
		kill -0 "$!" 2>/dev/null || break
		sleep 0.1
	done
	echo "fault server $mode did not come up; see $out.err" >&2
	FAILED=1
	exit 1
}

# probe NAME ARGS...: run the probe; stdout in $T/NAME.out, log in
# $T/NAME.log, exit status in RC, duration in MS.
probe() {
	local name=$1 t0
	shift
	t0=$(now_ms)
	RC=0
	"$PROBE" "$@" >"$T/$name.out" 2>"$T/$name.log" </dev/null || RC=$?
	MS=$(($(now_ms) - t0))
	OUT=$T/$name.out
	LOG=$T/$name.log
	if ((RC == 86)) || grep -q -e 'Sanitizer' -e 'runtime error' "$LOG"; then
		fail "$name: sanitizer report (see $LOG)"
	fi
}

# metric NAME: the value of a counter from the probe's metrics line.
metric() {
	sed -n "s/.*[ ]$1=\([0-9]*\).*/\1/p" "$OUT" | tail -n 1
}

# expect DESC CONDITION...: a check on the last probe run.
expect() {
	local desc=$1
	shift
	if "$@"; then pass "$desc"; else fail "$desc (see $OUT, $LOG)"; fi
}
eq() { [[ $1 == "$2" ]]; }
le() { (($1 <= $2)); }
ge() { (($1 >= $2)); }
# st I FIELD: a field of upstream I's status line (--status).
st() { stt status "$@"; }
# stt TAG I FIELD: the same from the lines tagged TAG (pre1, post1, ...).
stt() {
	awk -v t="$1" -v i="$2" -v k="$3=" '$1 == t && $2 == i {
		for (j = 3; j <= NF; j++)
			if (index($j, k) == 1)
				v = substr($j, length(k) + 1)
	} END { print v }' "$OUT"
}
# served FILE: how many queries a fault server read.
served() { grep -c '^query ' "$1" || true; }
count_lines() { grep -c -e "$1" "$OUT" || true; }

names() { local i; for ((i = 0; i < 100; i++)); do echo "n$i.probe.test"; done; }
mapfile -t NAMES < <(names)

gen_certs
gen_zone
# The SPKI pins (RFC 7469) of the server certificate and of the other CA.
PIN=$(certtool -i --infile "$T/server.pem" | sed -n 's/.*pin-sha256:\([A-Za-z0-9+/=]*\).*/\1/p' | head -n 1)
OTHER_PIN=$(certtool -i --infile "$T/other-ca.pem" | sed -n 's/.*pin-sha256:\([A-Za-z0-9+/=]*\).*/\1/p' | head -n 1)
UB_PORT=$(free_port)
start_unbound ub1 "$UB_PORT"
UB="127.0.0.1@$UB_PORT#dns.example"
CA=(--ca "$T/ca.pem")

# 1. Answers: a name in the zone, an NXDOMAIN.
probe basic "${CA[@]}" -u "$UB" n5.probe.test nx.probe.test
expect "basic: exit 0" eq "$RC" 0
expect "basic: A answer" grep -q '^answer n5.probe.test rcode=0 len=[0-9]* an=1$' "$OUT"
expect "basic: NXDOMAIN answer" grep -q '^answer nx.probe.test rcode=3 ' "$OUT"
expect "basic: connected log line" grep -q "upstream 127.0.0.1@$UB_PORT (dns.example): connected, TLS" "$LOG"

# 2. 1000 queries pipelined on one connection.
probe pipelined --quiet "${CA[@]}" -u "$UB" --count 10 "${NAMES[@]}"
expect "pipelined: exit 0" eq "$RC" 0
expect "pipelined: 1000 answered" grep -q '^round 1 answered=1000 failed=0 ' "$OUT"
expect "pipelined: one connection" eq "$(metric tls_connects)" 1
expect "pipelined: one handshake" eq "$(metric tls_handshakes)" 1
expect "pipelined: 1000 written" eq "$(metric upstream_queries)" 1000
expect "pipelined: 1000 matched" eq "$(metric upstream_answers)" 1000

# 3. Wrong auth name: every query fails fast, the log names the cause.
probe wrongname "${CA[@]}" -u "127.0.0.1@$UB_PORT#wrong.example" --count 2 "${NAMES[@]:0:50}"
expect "wrong name: exit 1" eq "$RC" 1
expect "wrong name: 100 x EUNREACH" eq "$(count_lines '^fail .* status=-2$')" 100
expect "wrong name: verify failure counted" eq "$(metric tls_verify_failures)" 1
expect "wrong name: one connect attempt" eq "$(metric tls_connects)" 1
expect "wrong name: nothing written" eq "$(metric upstream_queries)" 0
expect "wrong name: log names the mismatch" grep -q "upstream 127.0.0.1@$UB_PORT (wrong.example): .*name" "$LOG"
expect "wrong name: fast (${MS} ms)" test "$MS" -lt 1500

# 4. Unknown CA.
probe unknownca --ca "$T/other-ca.pem" -u "$UB" n1.probe.test
expect "unknown CA: EUNREACH" grep -q '^fail n1.probe.test status=-2$' "$OUT"
expect "unknown CA: verify failure counted" eq "$(metric tls_verify_failures)" 1
expect "unknown CA: log names the cause" grep -qi "upstream 127.0.0.1@$UB_PORT (dns.example): .*\(unknown ca\|issuer\)" "$LOG"

# 5. Backend down: fail fast.
DOWN_PORT=$(free_port)
probe down "${CA[@]}" -u "127.0.0.1@$DOWN_PORT#dns.example" "${NAMES[@]}"
expect "down: 100 x EUNREACH" eq "$(count_lines '^fail .* status=-2$')" 100
expect "down: handshake failure counted" eq "$(metric tls_handshake_failures)" 1
expect "down: log says refused" grep -qi "upstream 127.0.0.1@$DOWN_PORT (dns.example): .*refused" "$LOG"
expect "down: fast (${MS} ms)" test "$MS" -lt 1500

# 6. Two upstreams, the first down: answers from the second.
probe failover --quiet --select ordered "${CA[@]}" -u "127.0.0.1@$DOWN_PORT#dns.example" -u "$UB" "${NAMES[@]}"
expect "failover: exit 0" eq "$RC" 0
expect "failover: 100 answered" grep -q '^round 1 answered=100 failed=0 ' "$OUT"
expect "failover: first upstream failed once" eq "$(metric tls_handshake_failures)" 1
expect "failover: second connected once" eq "$(metric tls_handshakes)" 1

# 7. Cancel every third query; their answers arrive and are dropped.
probe cancel --quiet --debug "${CA[@]}" -u "$UB" --cancel 3 --count 3 --linger-ms 300 "${NAMES[@]}"
N_CANCELLED=$(sed -n 's/^round 1 .* cancelled=\([0-9]*\)$/\1/p' "$OUT")
expect "cancel: exit 0" eq "$RC" 0
expect "cancel: some cancelled in flight (${N_CANCELLED:-none})" test "${N_CANCELLED:-0}" -gt 0
expect "cancel: the others answered" grep -q "^round 1 answered=$((300 - ${N_CANCELLED:-0})) failed=0 " "$OUT"
expect "cancel: no mismatch" eq "$(metric upstream_mismatch)" 0
expect "cancel: late answers dropped silently" eq "$(grep -c 'late answer for ID' "$LOG" || true)" "${N_CANCELLED:-x}"

# 8. Close the pool from inside a callback with queries in flight.
probe closeafter --quiet "${CA[@]}" -u "$UB" --close-after 10 --count 5 "${NAMES[@]}"
expect "close: exit 1 (not all answered)" eq "$RC" 1
expect "close: 490 x ECLOSED" eq "$(metric closed_cbs)" 490
expect "close: 500 callbacks" grep -q '^round 1 answered=10 failed=490 ' "$OUT"

# 9. Idle connection closes.
probe idle --quiet "${CA[@]}" -u "$UB" --idle-ms 200 --linger-ms 700 n1.probe.test
expect "idle: exit 0" eq "$RC" 0
expect "idle: closed" eq "$(metric tls_closed)" 1
expect "idle: log says idle" grep -q "upstream 127.0.0.1@$UB_PORT (dns.example): idle" "$LOG"

# 10. Allocation failures (mem.h hook): an error or a callback, never a
# crash, a leak or a missing callback.
bad=0
for ((n = 0; n < 24; n++)); do
	probe "nomem$n" --quiet --fail-alloc "$n" "${CA[@]}" -u "$UB" "${NAMES[@]:0:3}"
	if ((RC != 0 && RC != 1)); then
		bad=1
		fail "nomem: allocation $n: exit $RC (see $LOG)"
	fi
done
expect "nomem: every allocation failure handled" eq "$bad" 0

# 11. Faults.
start_fault silent
probe silent --quiet "${CA[@]}" -u "127.0.0.1@$FAULT_PORT#dns.example" --timeout-ms 300 "${NAMES[@]}"
expect "silent: 100 x ETIMEDOUT" eq "$(count_lines '^fail .* status=-1$')" 100
expect "silent: timeouts counted" eq "$(metric upstream_timeouts)" 100
expect "silent: within deadline (${MS} ms)" test "$MS" -lt 1500

start_fault late 400
probe late --quiet --debug "${CA[@]}" -u "127.0.0.1@$FAULT_PORT#dns.example" --timeout-ms 200 --linger-ms 800 "${NAMES[@]:0:20}"
expect "late: 20 x ETIMEDOUT" eq "$(count_lines '^fail .* status=-1$')" 20
expect "late: late answers dropped silently" eq "$(grep -c 'late answer for ID' "$LOG" || true)" 20
expect "late: no mismatch counted" eq "$(metric upstream_mismatch)" 0

start_fault mismatch
probe mismatch --quiet --status "${CA[@]}" -u "127.0.0.1@$FAULT_PORT#dns.example" --timeout-ms 300 "${NAMES[@]:0:20}"
# Answers that never match mark the connection broken (8 in a row): it is
# closed and the queries resent once on a new one, which fares the same.
expect "mismatch: answers for another question dropped" eq "$(metric upstream_mismatch)" 16
expect "mismatch: bad answers and resets in the status" eq "$(st 0 err_bad_answer):$(st 0 err_reset)" 16:2
expect "mismatch: connection found broken" grep -q "answers in a row matched nothing, connection presumed dead" "$LOG"
expect "mismatch: 20 failed" eq "$(count_lines '^fail ')" 20

start_fault reorder 100
probe reorder --quiet "${CA[@]}" -u "127.0.0.1@$FAULT_PORT#dns.example" "${NAMES[@]}"
expect "reorder: exit 0 (answers matched out of order)" eq "$RC" 0
expect "reorder: 100 answered" eq "$(metric upstream_answers)" 100

start_fault dribble
probe dribble --quiet "${CA[@]}" -u "127.0.0.1@$FAULT_PORT#dns.example" "${NAMES[@]:0:30}"
expect "dribble: exit 0 (1-byte records reassembled)" eq "$RC" 0

start_fault close
CLOSE_PORT=$FAULT_PORT
probe close "${CA[@]}" -u "127.0.0.1@$CLOSE_PORT#dns.example" "${NAMES[@]:0:20}"
expect "close: resent once" eq "$(metric upstream_resent)" 20
expect "close: no answer -> backoff, EUNREACH" eq "$(count_lines '^fail .* status=-2$')" 20
expect "close: no reconnect storm" eq "$(metric tls_connects)" 1
probe closebackup --quiet --select ordered "${CA[@]}" -u "127.0.0.1@$CLOSE_PORT#dns.example" -u "$UB" "${NAMES[@]:0:20}"
expect "close+backup: exit 0" eq "$RC" 0
expect "close+backup: resent to the second" eq "$(metric upstream_resent)" 20

start_fault garbage
probe garbage --quiet --select ordered "${CA[@]}" -u "127.0.0.1@$FAULT_PORT#dns.example" -u "$UB" "${NAMES[@]:0:20}"
expect "garbage: exit 0 (moved to the second upstream)" eq "$RC" 0
expect "garbage: malformed counted" eq "$(metric upstream_malformed)" 1

# 12. Recovery without restart: the upstream is down for round 1, comes up,
# and later rounds are answered once its backoff has expired.
REC_PORT=$(free_port)
mkfifo "$T/ctl"
"$PROBE" --quiet "${CA[@]}" -u "127.0.0.1@$REC_PORT#dns.example" --pause-stdin \
	--until-ok 15000 "${NAMES[@]:0:10}" <"$T/ctl" >"$T/recover.out" 2>"$T/recover.log" &
REC_PID=$!
PIDS+=("$REC_PID")
exec 3>"$T/ctl"
for ((i = 0; i < 100; i++)); do
	grep -q '^round 1 ' "$T/recover.out" 2>/dev/null && break
	kill -0 "$REC_PID" 2>/dev/null || break
	sleep 0.1
done
start_unbound ub2 "$REC_PORT"
echo go >&3
exec 3>&-
RC=0
wait "$REC_PID" || RC=$?
OUT=$T/recover.out LOG=$T/recover.log
expect "recover: round 1 failed" grep -q '^round 1 answered=0 failed=10 ' "$OUT"
expect "recover: answered later (exit $RC)" eq "$RC" 0
expect "recover: connected" grep -q "upstream 127.0.0.1@$REC_PORT (dns.example): connected" "$LOG"

# 13. Selection policies, counted at the two servers.
start_fault echo
E1=$FAULT_PORT E1_OUT=$FAULT_OUT
start_fault echo
E2=$FAULT_PORT E2_OUT=$FAULT_OUT
TWO=(-u "127.0.0.1@$E1#dns.example" -u "127.0.0.1@$E2#dns.example")
probe ordered --quiet --select ordered "${CA[@]}" "${TWO[@]}" "${NAMES[@]}"
expect "ordered: exit 0" eq "$RC" 0
expect "ordered: all to the first" eq "$(served "$E1_OUT"):$(served "$E2_OUT")" 100:0
probe roundrobin --quiet --select round-robin --status "${CA[@]}" "${TWO[@]}" "${NAMES[@]}"
expect "round-robin: exit 0" eq "$RC" 0
expect "round-robin: 50 each" eq "$(served "$E1_OUT"):$(served "$E2_OUT")" 150:50
expect "round-robin: per-upstream counters" eq "$(st 0 queries):$(st 1 queries):$(st 0 answers):$(st 1 answers)" 50:50:50:50

# Fastest: A answers after 60 ms, B at once. Before any sample the
# queries spread at random; once A's RTT is known it gets none.
start_fault late 60
SLOW=$FAULT_PORT SLOW_OUT=$FAULT_OUT
start_fault echo
FAST=$FAULT_PORT FAST_OUT=$FAULT_OUT
probe fastest --quiet --status --rounds 5 "${CA[@]}" -u "127.0.0.1@$SLOW#dns.example" \
	-u "127.0.0.1@$FAST#dns.example" "${NAMES[@]:0:20}"
expect "fastest: exit 0" eq "$RC" 0
expect "fastest: slow one only in round 1 ($(served "$SLOW_OUT"))" le "$(served "$SLOW_OUT")" 20
expect "fastest: fast one took the rest ($(served "$FAST_OUT"))" ge "$(served "$FAST_OUT")" 80
expect "fastest: status srtt of the slow one ($(st 0 srtt_ms))" test "$(st 0 srtt_ms)" -ge 50 -o "$(st 0 queries)" -eq 0

# 14. Status API after answers from a 50 ms server.
start_fault late 50
probe status --quiet --status --count 3 "${CA[@]}" -u "127.0.0.1@$FAULT_PORT#dns.example" "${NAMES[@]:0:10}"
expect "status: exit 0" eq "$RC" 0
expect "status: name" eq "$(st 0 name)" "127.0.0.1@$FAULT_PORT#dns.example"
expect "status: connected, healthy, no failures" eq "$(st 0 connected):$(st 0 healthy):$(st 0 fail_count)" 1:1:0
expect "status: srtt ($(st 0 srtt_ms) ms)" test "$(st 0 srtt_ms)" -ge 40 -a "$(st 0 srtt_ms)" -lt 1000
expect "status: verified" eq "$(st 0 verified)" 1
expect "status: certificate expiry in the future" test "$(st 0 cert_expiry)" -gt "$(date +%s)"
expect "status: 30 queries, 30 answers, no timeouts" eq "$(st 0 queries):$(st 0 answers):$(st 0 timeouts)" 30:30:0
expect "status: no error" grep -q '^status 0 .* last_error=""$' "$OUT"
probe statusdown --quiet --status "${CA[@]}" -u "127.0.0.1@$DOWN_PORT#dns.example" n1.probe.test
expect "status down: unhealthy, one failure" eq "$(st 0 connected):$(st 0 healthy):$(st 0 fail_count)" 0:0:1
expect "status down: no handshake yet" eq "$(st 0 verified)" -1
expect "status down: next probe within 500 ms ($(st 0 retry_in))" test "$(st 0 retry_in)" -gt 0 -a "$(st 0 retry_in)" -le 500
expect "status down: last error" grep -qi '^status 0 .* last_error=".*refused.*"$' "$OUT"
expect "status down: a connect failure, no handshake" eq "$(st 0 err_connect):$(st 0 err_handshake):$(st 0 last_handshake)" 1:0:0
probe statusbad --quiet --status "${CA[@]}" -u "127.0.0.1@$UB_PORT#wrong.example" n1.probe.test
expect "status bad name: verified 0" eq "$(st 0 verified)" 0
expect "status bad name: a verify failure" eq "$(st 0 err_verify):$(st 0 err_pin):$(st 0 err_connect)" 1:0:0
expect "status bad name: last verify error" grep -q '^status 0 .* last_verify_error=".*name mismatch.*" last_error=' "$OUT"
expect "status bad name: what the server presented" eq "$(st 0 pin)" "$PIN"
expect "status bad name: when" test "$(st 0 last_handshake)" -ge $(($(date +%s) - 60))
start_fault notls
probe statusnotls --quiet --status --connect-timeout-ms 300 "${CA[@]}" -u "127.0.0.1@$FAULT_PORT#dns.example" n1.probe.test
expect "status no TLS: a handshake failure (timeout after connect)" eq "$(st 0 err_handshake):$(st 0 err_connect)" 1:0

# 15. Answer timeout with the connection alive: "drop*" gets no answer
# from the first upstream (which answers the rest), so it moves to the
# second; with no second it waits for its deadline.
start_fault drop
DROP=$FAULT_PORT
probe moved --select ordered --answer-timeout-ms 300 "${CA[@]}" -u "127.0.0.1@$DROP#dns.example" \
	-u "$UB" drop1.probe.test n1.probe.test
expect "moved: exit 0" eq "$RC" 0
expect "moved: answered by the second (NXDOMAIN)" grep -q '^answer drop1.probe.test rcode=3 ' "$OUT"
expect "moved: counted" eq "$(metric upstream_moved)" 1
expect "moved: no half-open" eq "$(metric upstream_half_open)" 0
expect "moved: in about the answer timeout (${MS} ms)" test "$MS" -lt 1500
probe stays --select ordered --answer-timeout-ms 300 --timeout-ms 1000 --status "${CA[@]}" \
	-u "127.0.0.1@$DROP#dns.example" drop1.probe.test n1.probe.test
expect "stays: the other answered" grep -q '^answer n1.probe.test rcode=0 ' "$OUT"
expect "stays: times out at its deadline" grep -q '^fail drop1.probe.test status=-1$' "$OUT"
expect "stays: not moved, no half-open" eq "$(metric upstream_moved):$(metric upstream_half_open)" 0:0
expect "stays: one connection" eq "$(metric tls_connects)" 1
expect "stays: (${MS} ms) not before the deadline" test "$MS" -ge 1000
expect "stays: timeout in the status" eq "$(st 0 timeouts)" 1

# 16. Half-open: a connection that answers nothing for answer_timeout_ms
# gets a probe; its queries move to the second upstream at once...
start_fault silent
probe halfopen --quiet --select ordered --answer-timeout-ms 300 "${CA[@]}" \
	-u "127.0.0.1@$FAULT_PORT#dns.example" -u "$UB" "${NAMES[@]:0:10}"
expect "half-open: exit 0" eq "$RC" 0
expect "half-open: probed" eq "$(metric upstream_probes)" 1
expect "half-open: 10 moved" eq "$(metric upstream_moved)" 10
expect "half-open: fast (${MS} ms)" test "$MS" -lt 1500
# ... or, with no other upstream, on a new connection (a server that went
# silent on its first connection only).
start_fault silentfirst
probe halfopen1 --quiet --answer-timeout-ms 300 --status "${CA[@]}" \
	-u "127.0.0.1@$FAULT_PORT#dns.example" "${NAMES[@]:0:5}"
expect "half-open alone: exit 0" eq "$RC" 0
expect "half-open alone: log line" grep -q "upstream 127.0.0.1@$FAULT_PORT (dns.example): no answer in [0-9]* ms, connection presumed dead" "$LOG"
expect "half-open alone: a new handshake" eq "$(metric tls_handshakes)" 2
expect "half-open alone: 5 resent" eq "$(metric upstream_resent)" 5
expect "half-open alone: up again" grep -q "upstream 127.0.0.1@$FAULT_PORT (dns.example): up again" "$LOG"
expect "half-open alone: healthy after" eq "$(st 0 healthy):$(st 0 fail_count)" 1:0
expect "half-open alone: a reset in the status" eq "$(st 0 err_reset)" 1

# 17. Back-off: every probe of a dead upstream draws its wait from
# [b/2, b], b doubling from 500 ms to the cap (1000 ms here).
probe backoff --quiet --backoff-max-ms 1000 --until-ok 4000 "${CA[@]}" \
	-u "127.0.0.1@$DOWN_PORT#dns.example" n1.probe.test
mapfile -t WAITS < <(sed -n 's/.*: \(still \)\{0,1\}down (.*), next probe in \([0-9]*\) ms$/\2/p' "$LOG")
bad=0 capped=()
for ((k = 0; k < ${#WAITS[@]}; k++)); do
	b=$((k == 0 ? 500 : 1000))
	if ((WAITS[k] < b / 2 || WAITS[k] > b)); then
		bad=1
	fi
	((k == 0)) || capped+=("${WAITS[k]}")
done
expect "backoff: several probes (${#WAITS[@]})" ge "${#WAITS[@]}" 4
expect "backoff: each wait within [b/2, b], capped (${WAITS[*]})" eq "$bad" 0
expect "backoff: jittered, not a fixed interval (${capped[*]})" test "$(printf '%s\n' "${capped[@]}" | sort -u | wc -l)" -gt 1
expect "backoff: one connect per probe, no storm" eq "$(metric tls_connects)" "${#WAITS[@]}"
expect "backoff: logged down once" eq "$(grep -c ': down (' "$LOG" || true)" 1

# 18. Lifetime: a connection older than --lifetime-ms is replaced by a
# new one while queries keep being answered; the old one closes once
# drained. The new one is a full handshake (the certificate is verified
# again), not a resumption.
probe lifetime --quiet --debug --status --lifetime-ms 250 --rounds 6 --interval-ms 100 --count 5 \
	"${CA[@]}" -u "$UB" "${NAMES[@]:0:10}"
H=$(metric tls_handshakes)
expect "lifetime: exit 0 (every round answered)" eq "$RC" 0
expect "lifetime: 300 answered" eq "$(metric upstream_answers)" 300
expect "lifetime: replaced ($H handshakes)" test "$H" -ge 2 -a "$H" -le 4
expect "lifetime: log says replacing" grep -q "upstream 127.0.0.1@$UB_PORT (dns.example): connection is [0-9]* ms old, replacing it" "$LOG"
expect "lifetime: retired ones closed when drained" eq "$(grep -c 'retired connection drained, closing' "$LOG" || true)" $((H - 1))
expect "lifetime: renewals are full handshakes" eq "$(grep -c 'connected (resumed)' "$LOG" || true)" 0
expect "lifetime: renewals say why" eq "$(grep -c 'handshaking in full' "$LOG" || true)" $((H - 1))
# The status API's TLS facts and counters (once, here: several handshakes,
# none resumed, 300 answers).
NOW=$(date +%s)
expect "status: handshakes and resumed ones ($(st 0 handshakes), $(st 0 handshakes_resumed))" \
	eq "$(st 0 handshakes):$(st 0 handshakes_resumed)" "$H:0"
expect "status: the last handshake was in full" eq "$(st 0 resumed)" 0
expect "status: TLS version ($(st 0 tls_version))" grep -q '^status 0 .* tls_version=TLS1\.[23] ' "$OUT"
expect "status: leaf pin is certtool's ($(st 0 pin))" eq "$(st 0 pin)" "$PIN"
expect "status: unpinned" eq "$(st 0 pin_state)" -1
expect "status: chain notAfter in the future, as the leaf's" \
	test "$(st 0 chain_min_not_after)" -gt "$NOW" -a "$(st 0 chain_min_not_after)" -eq "$(st 0 cert_expiry)"
expect "status: verified and handshaken recently" \
	test "$(st 0 last_verify_ok)" -ge $((NOW - 60)) -a "$(st 0 last_handshake)" -eq "$(st 0 last_verify_ok)"
expect "status: address and name" eq "$(st 0 addr)/$(st 0 auth_name)" "127.0.0.1@$UB_PORT/dns.example"
expect "status: nothing in flight, no errors" \
	eq "$(st 0 inflight):$(st 0 err_connect):$(st 0 err_handshake):$(st 0 err_verify):$(st 0 err_pin):$(st 0 err_timeout):$(st 0 err_reset):$(st 0 err_bad_answer)" 0:0:0:0:0:0:0:0
expect "status: RTT histogram has every answer ($(st 0 rtt_count), $(st 0 rtt_buckets))" \
	eq "$(st 0 rtt_count):$(st 0 rtt_buckets | tr ',' '\n' | awk '{ s += $1 } END { print s }')" 300:300

# A retiring connection with queries in flight finishes them first: the
# server answers after 300 ms, queries go out 100 ms apart, so the first
# connection is replaced while two or three are in flight on it.
start_fault late 300
probe lifetime2 --quiet --debug --lifetime-ms 200 --stagger-ms 100 "${CA[@]}" \
	-u "127.0.0.1@$FAULT_PORT#dns.example" "${NAMES[@]:0:6}"
expect "lifetime in flight: exit 0" eq "$RC" 0
# On a loaded machine the 200 ms lifetime may run out twice: at least two
# handshakes, and the first replacement comes before the first drain.
expect "lifetime in flight: replaced ($(metric tls_handshakes) handshakes)" ge "$(metric tls_handshakes)" 2
expect "lifetime in flight: nothing resent or lost" eq "$(metric upstream_resent)" 0
expect "lifetime in flight: the old one drained after the replacement" \
	eq "$(grep -o -e 'replacing it' -e 'retired connection drained' "$LOG" | uniq | head -n 2 | tr '\n' ,)" "replacing it,retired connection drained,"
expect "lifetime in flight: replaced with queries in flight" \
	grep -q "connection is [0-9]* ms old, replacing it ([1-9][0-9]* in flight)" "$LOG"

# 19. RFC 7828: the server allows 300 ms of idleness, we would wait 5 s.
start_fault keepalive 3
probe keepalive --quiet --idle-ms 5000 --linger-ms 1500 "${CA[@]}" -u "127.0.0.1@$FAULT_PORT#dns.example" n1.probe.test
expect "keepalive: exit 0" eq "$RC" 0
expect "keepalive: closed while lingering" eq "$(metric tls_closed)" 1
expect "keepalive: after the server's 300 ms" grep -q "upstream 127.0.0.1@$FAULT_PORT (dns.example): idle for 3[0-9][0-9] ms, closing" "$LOG"

# 20. SPKI pins (RFC 7858 4.2).
probe pin --status "${CA[@]}" -u "$UB" --pin "$PIN" n1.probe.test
expect "pin: right pin answered" eq "$RC" 0
expect "pin: status pin state matched" eq "$(st 0 pin_state):$(st 0 pin)" "1:$PIN"
probe badpin --status "${CA[@]}" -u "$UB" --pin "$OTHER_PIN" n1.probe.test
expect "pin: wrong pin refused" grep -q '^fail n1.probe.test status=-2$' "$OUT"
expect "pin: log says pin mismatch" grep -q "upstream 127.0.0.1@$UB_PORT (dns.example): down (.*pin mismatch" "$LOG"
expect "pin: counted as a pin failure, not verify" eq "$(st 0 err_pin):$(st 0 err_verify):$(st 0 handshakes)" 1:0:0
expect "pin: status shows the mismatch and the presented leaf's pin" eq "$(st 0 pin_state):$(st 0 pin)" "0:$PIN"
expect "pin: last verify error" grep -q '^status 0 .* last_verify_error=".*pin mismatch.*" last_error=' "$OUT"

# 21. Reconfigure (SIGHUP reload). Round 1 warms up [A, B]; in round 2,
# while A has queries in flight, the list becomes [B, C]; round 3 warms up
# C; in round 4, while C has queries in flight, the same list comes with
# new credentials; round 5 runs on that. A answers after 400 ms, C after
# 300 ms, B at once; round-robin spreads every round. The probe frees each
# old conf (and the old credentials) right after the call, and first tries
# each reconfigure with an allocation failing.
start_fault late 400
P_A=$FAULT_PORT A_OUT=$FAULT_OUT
start_fault echo
P_B=$FAULT_PORT B_OUT=$FAULT_OUT
start_fault late 300
P_C=$FAULT_PORT C_OUT=$FAULT_OUT
probe reconf --quiet --status --select round-robin --rounds 5 "${CA[@]}" \
	-u "127.0.0.1@$P_A#dns.example" -u "127.0.0.1@$P_B#dns.example" \
	--reconf-u "127.0.0.1@$P_B#dns.example" --reconf-u "127.0.0.1@$P_C#dns.example" \
	--reconf-round 2 --reconf-new-tls 4 --reconf-nomem "${NAMES[@]:0:20}"
# rmetric R NAME: a counter from the metrics line printed after round R.
rmetric() {
	awk -v r="$1" -v k="$2=" '$1 == "roundmetrics" && $2 == r {
		for (j = 3; j <= NF; j++)
			if (index($j, k) == 1)
				print substr($j, length(k) + 1)
	}' "$OUT"
}
expect "reconf: exit 0 (every round answered)" eq "$RC" 0
expect "reconf: both reconfigures succeeded" eq "$(grep -c '^reconfigure [12] rc=0$' "$OUT")" 2
expect "reconf: out of memory first, -ENOMEM" eq "$(grep -c '^reconfigure [12] nomem rc=-12$' "$OUT")" 2
# Lines equal but for the tag: the same upstreams in the same state.
nomem_same() { diff <(sed -n "s/^pre$1 //p" "$OUT") <(sed -n "s/^nomem$1 //p" "$OUT") >/dev/null; }
expect "reconf: -ENOMEM left the pool unchanged" nomem_same 1
expect "reconf: -ENOMEM left the pool unchanged (new credentials)" nomem_same 2
expect "reconf: every query exactly one callback" \
	eq "$(grep -c '^round [1-5] answered=20 failed=0 ' "$OUT"):$(grep -c -e BUG -e '^wrong' "$OUT" || true)" 5:0
A_INFLIGHT=$(stt pre1 0 inflight)
A_QUERIES=$(stt pre1 0 queries)
expect "reconf: A had queries in flight at the reconfigure ($A_INFLIGHT)" ge "${A_INFLIGHT:-0}" 1
expect "reconf: B kept its connection, now first; C not connected yet" \
	eq "$(stt post1 0 name):$(stt post1 0 connected):$(stt post1 0 handshakes):$(stt post1 1 name):$(stt post1 1 connected)" \
	"127.0.0.1@$P_B#dns.example:1:1:127.0.0.1@$P_C#dns.example:0"
expect "reconf: B's counters survived" eq "$(stt post1 0 queries)" "$(stt pre1 1 queries)"
expect "reconf: A's in-flight queries answered there, not resent" eq "$(rmetric 2 upstream_resent)" 0
expect "reconf: A's connection closed once drained" eq "$(rmetric 2 tls_closed)" 1
expect "reconf: no new handshake for B" eq "$(rmetric 2 tls_handshakes):$(rmetric 2 tls_connects)" 2:2
expect "reconf: A's removal logged" \
	grep -q "upstream 127.0.0.1@$P_A (dns.example): removed, its connection finishes what is in flight" "$LOG"
expect "reconf: then only C connected" eq "$(rmetric 3 tls_handshakes):$(rmetric 3 tls_connects)" 3:3
expect "reconf: B still on its first handshake at the second reconfigure" \
	eq "$(stt pre2 0 handshakes):$(stt pre2 1 handshakes)" 1:1
C_INFLIGHT=$(stt pre2 1 inflight)
expect "reconf: C had queries in flight at the second reconfigure ($C_INFLIGHT)" ge "${C_INFLIGHT:-0}" 1
expect "reconf: new credentials: old connections closed at once, C's queries resent" \
	eq "$(rmetric 4 upstream_resent):$(rmetric 4 tls_closed)" "$C_INFLIGHT:3"
expect "reconf: new credentials: every upstream starts afresh" \
	eq "$(stt post2 0 handshakes):$(stt post2 0 queries):$(stt post2 1 handshakes)" 0:0:0
expect "reconf: B reconnected with the new credentials" eq "$(st 0 handshakes):$(st 0 verified)" 1:1
expect "reconf: 5 handshakes in all (A, B, C, B, C)" eq "$(metric tls_handshakes):$(metric tls_connects)" 5:5
expect "reconf: A got nothing after round 2 ($(served "$A_OUT") = $A_QUERIES)" eq "$(served "$A_OUT")" "$A_QUERIES"
expect "reconf: B and C took the rest" \
	eq "$(($(served "$B_OUT") + $(served "$C_OUT")))" $((100 - A_QUERIES + C_INFLIGHT))

if ((FAILED)); then
	exit 1
fi
echo "upstream_probe.sh: all checks passed"
