#!/bin/bash
# tls_probe.sh: src/tls.c against real TLS servers on loopback.
#
# Makes a throw-away PKI with certtool (a CA, a second unrelated CA, server
# certificates that are good, expired and not yet valid), starts gnutls-serv
# in echo mode and small python3 servers (a silent TCP listener, a TCP
# listener that hangs up, a TLS server that closes after one read), runs
# tests/tls_probe against each and checks its exit code and output: name
# verification, SPKI pins (alone and with a name, on the leaf and on a CA
# sent in the chain), session resumption (TLS 1.3 and 1.2) and the
# certificate expiry the probe reports against certtool's. Every
# server is stopped by its PID; the temporary directory is removed unless
# KEEP=1. Exits non-zero if any case fails, and prints the logs of the
# failing case.
#
# Environment: TLS_PROBE (the binary; default $top_builddir/tests/tls_probe),
# PYTHON3 (default python3).
set -u

top_builddir=${top_builddir:-.}
PROBE=${TLS_PROBE:-$top_builddir/tests/tls_probe}
PYTHON3=${PYTHON3:-python3}
# A sanitizer report must fail the case even where the probe itself is
# expected to exit 1.
export ASAN_OPTIONS=${ASAN_OPTIONS:-exitcode=86:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:exitcode=87:print_stacktrace=1}

for tool in certtool gnutls-serv "$PYTHON3"; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "tls_probe.sh: $tool not found (gnutls-bin, python3)" >&2
		exit 1
	fi
done
if [ ! -x "$PROBE" ]; then
	echo "tls_probe.sh: $PROBE not built" >&2
	exit 1
fi

DIR=$(mktemp -d "${TMPDIR:-/tmp}/tls_probe.XXXXXX") || exit 1
PIDS=""
FAILED=0
CASES=0

cleanup() {
	for pid in $PIDS; do
		kill "$pid" 2>/dev/null
	done
	for pid in $PIDS; do
		wait "$pid" 2>/dev/null
	done
	PIDS=""
	if [ "${KEEP:-0}" = 1 ]; then
		echo "tls_probe.sh: kept $DIR"
	else
		rm -rf "$DIR"
	fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

die() {
	echo "tls_probe.sh: $*" >&2
	exit 1
}

# ---- PKI ----

# gen_key NAME
gen_key() {
	certtool --generate-privkey --key-type=ecdsa --outfile "$DIR/$1.key" \
	    >"$DIR/certtool.log" 2>&1 || die "certtool key $1 failed"
}

# gen_ca NAME CN
gen_ca() {
	gen_key "$1"
	cat >"$DIR/$1.tmpl" <<EOF
cn = "$2"
ca
cert_signing_key
expiration_days = 30
EOF
	certtool --generate-self-signed --load-privkey "$DIR/$1.key" \
	    --template "$DIR/$1.tmpl" --outfile "$DIR/$1.pem" \
	    >"$DIR/certtool.log" 2>&1 || die "certtool CA $1 failed"
}

# gen_server NAME DNSNAME CA VALIDITY-TEMPLATE-LINES
gen_server() {
	gen_key "$1"
	cat >"$DIR/$1.tmpl" <<EOF
cn = "$2"
dns_name = "$2"
tls_www_server
signing_key
encryption_key
$4
EOF
	certtool --generate-certificate --load-privkey "$DIR/$1.key" \
	    --load-ca-certificate "$DIR/$3.pem" \
	    --load-ca-privkey "$DIR/$3.key" \
	    --template "$DIR/$1.tmpl" --outfile "$DIR/$1.pem" \
	    >"$DIR/certtool.log" 2>&1 || die "certtool server $1 failed"
}

gen_ca ca "dotproxy test CA"
gen_ca otherca "some other CA"
gen_server good dns.example ca "expiration_days = 30"
gen_server expired dns.example ca 'activation_date = "2001-01-01 00:00:00"
expiration_date = "2002-01-01 00:00:00"'
gen_server notyet dns.example ca 'activation_date = "2090-01-01 00:00:00"
expiration_date = "2091-01-01 00:00:00"'
: >"$DIR/empty.pem"

# ---- servers ----

# A port nobody listens on right now (the race with other programs
# taking it in between is accepted for a test).
free_port() {
	"$PYTHON3" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# wait_for FILE PATTERN: until the server wrote it, bounded (10 s).
wait_for() {
	local i
	for i in $(seq 1 200); do
		if grep -q "$2" "$1" 2>/dev/null; then
			return 0
		fi
		sleep 0.05
	done
	cat "$1" >&2
	die "timed out waiting for '$2' in $1"
}

# start_gnutls_serv NAME CERT [extra options]: sets PORT, adds the PID.
start_gnutls_serv() {
	local name=$1 cert=$2
	shift 2
	PORT=$(free_port) || die "no free port"
	gnutls-serv --echo -a -p "$PORT" --x509keyfile "$DIR/$cert.key" \
	    --x509certfile "$DIR/$cert.pem" "$@" >"$DIR/$name.log" 2>&1 &
	PIDS="$PIDS $!"
	wait_for "$DIR/$name.log" "listening on IPv4.*$PORT"
}

# A python helper server: MODE is "silent" (listen, never accept: the
# kernel completes the TCP handshake, no byte ever comes back), "full"
# (the accept queue is full: the TCP handshake never completes), "hangup"
# (accept and close at once), "tlsclose" (TLS handshake, read once, send
# close_notify) or "tlsdrop" (same, then close TCP without close_notify).
cat >"$DIR/server.py" <<'EOF'
import os, socket, ssl, sys, time
mode, portfile = sys.argv[1], sys.argv[2]
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(0 if mode == "full" else 8)
port = s.getsockname()[1]
if mode == "full":
    # Fill the accept queue (backlog 0 holds one) so that the kernel
    # drops further SYNs: a connect to this port hangs.
    first = socket.socket()
    first.connect(("127.0.0.1", port))
    extra = socket.socket()
    extra.setblocking(False)
    try:
        extra.connect(("127.0.0.1", port))
    except BlockingIOError:
        pass
with open(portfile + ".tmp", "w") as f:
    f.write("port %d\n" % port)
os.rename(portfile + ".tmp", portfile)
if mode in ("silent", "full"):
    while True:
        time.sleep(3600)
while True:
    c, _ = s.accept()
    if mode == "hangup":
        c.close()
        continue
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[3], sys.argv[4])
    try:
        t = ctx.wrap_socket(c, server_side=True)
        t.recv(100)
        if mode == "tlsclose":
            try:
                t.unwrap()
            except (OSError, ssl.SSLError):
                pass
        t.close()
    except (OSError, ssl.SSLError) as e:
        print("server:", e, flush=True)
        c.close()
EOF

# start_py NAME MODE: sets PORT, adds the PID.
start_py() {
	"$PYTHON3" "$DIR/server.py" "$2" "$DIR/$1.port" "$DIR/good.pem" \
	    "$DIR/good.key" >"$DIR/$1.log" 2>&1 &
	PIDS="$PIDS $!"
	wait_for "$DIR/$1.port" "^port "
	PORT=$(sed -n 's/^port //p' "$DIR/$1.port")
}

# ---- cases ----

# expect NAME EXIT PATTERN [probe args...]: run the probe, check the exit
# status and that PATTERN (fixed string) is in its output, and that no
# sanitizer spoke.
expect() {
	local name=$1 want=$2 pattern=$3 got
	shift 3
	CASES=$((CASES + 1))
	"$PROBE" "$@" >"$DIR/case.out" 2>"$DIR/case.err"
	got=$?
	if [ "$got" != "$want" ] || ! grep -qF -- "$pattern" "$DIR/case.out" ||
	    grep -qE 'Sanitizer|runtime error' "$DIR/case.err"; then
		echo "FAIL $name: exit $got (want $want), want output: $pattern"
		echo "  cmd: $PROBE $*"
		sed 's/^/  out: /' "$DIR/case.out"
		sed 's/^/  err: /' "$DIR/case.err"
		FAILED=$((FAILED + 1))
		return 1
	fi
	echo "ok   $name: $(grep -F -- "$pattern" "$DIR/case.out" | head -n 1)"
	return 0
}

start_gnutls_serv good good
GOOD=$PORT
start_gnutls_serv good12 good --priority "NORMAL:-VERS-ALL:+VERS-TLS1.2"
GOOD12=$PORT
start_gnutls_serv expired expired
EXPIRED=$PORT
start_gnutls_serv notyet notyet
NOTYET=$PORT
start_gnutls_serv tls11 good --priority "NORMAL:-VERS-ALL:+VERS-TLS1.1:+VERS-TLS1.0"
TLS11=$PORT
start_py silent silent
SILENT=$PORT
start_py full full
FULL=$PORT
start_py hangup hangup
HANGUP=$PORT
start_py tlsclose tlsclose
TLSCLOSE=$PORT
start_py tlsdrop tlsdrop
TLSDROP=$PORT
REFUSED=$(free_port)

# (a) good certificate, TLS 1.3 and 1.2, echo
expect good 0 "connected TLS1.3" 127.0.0.1 "$GOOD" dns.example "$DIR/ca.pem"
# gnutls-serv echoes line by line: payloads end with a newline.
expect echo 0 "echo ok 14 bytes: hello, world!" \
    127.0.0.1 "$GOOD" dns.example "$DIR/ca.pem" $'hello, world!\n'
expect echo-big 0 "echo ok 200000 bytes" \
    -b 200000 127.0.0.1 "$GOOD" dns.example "$DIR/ca.pem"
expect tls12 0 "connected TLS1.2" 127.0.0.1 "$GOOD12" dns.example "$DIR/ca.pem"
expect echo-tls12 0 "echo ok 100000 bytes" \
    -b 100000 127.0.0.1 "$GOOD12" dns.example "$DIR/ca.pem"
expect close-early 0 "closed early" -x 127.0.0.1 "$GOOD" dns.example "$DIR/ca.pem"
# (b) name mismatch
expect name 1 "failed TLS_E_VERIFY certificate verification failed for other.example: name mismatch (The certificate is NOT trusted. The name in the certificate does not match the expected." \
    127.0.0.1 "$GOOD" other.example "$DIR/ca.pem"
# (c) unknown CA
expect unknown-ca 1 "failed TLS_E_VERIFY certificate verification failed for dns.example: unknown CA" \
    127.0.0.1 "$GOOD" dns.example "$DIR/otherca.pem"
# (d) expired, not yet valid
expect expired 1 "failed TLS_E_VERIFY certificate verification failed for dns.example: certificate expired" \
    127.0.0.1 "$EXPIRED" dns.example "$DIR/ca.pem"
expect notyet 1 "failed TLS_E_VERIFY certificate verification failed for dns.example: certificate not yet valid" \
    127.0.0.1 "$NOTYET" dns.example "$DIR/ca.pem"
# (e) nothing listening
expect refused 1 "failed TLS_E_CONNECT connect: connection refused" \
    127.0.0.1 "$REFUSED" dns.example "$DIR/ca.pem"
# (f) a listener that never answers: within the timeout, not much later
start_ms=$(date +%s%3N)
expect silent 1 "failed TLS_E_TIMEOUT handshake timeout after 500 ms" \
    -t 500 127.0.0.1 "$SILENT" dns.example "$DIR/ca.pem"
elapsed=$(($(date +%s%3N) - start_ms))
CASES=$((CASES + 1))
if [ "$elapsed" -lt 450 ] || [ "$elapsed" -gt 3000 ]; then
	echo "FAIL silent-timing: took $elapsed ms for a 500 ms timeout"
	FAILED=$((FAILED + 1))
else
	echo "ok   silent-timing: $elapsed ms"
fi
expect connect-timeout 1 "failed TLS_E_TIMEOUT connect timeout after 500 ms" \
    -t 500 127.0.0.1 "$FULL" dns.example "$DIR/ca.pem"
expect close-early-silent 0 "closed early" \
    -x 127.0.0.1 "$SILENT" dns.example "$DIR/ca.pem"
# handshake failures: peer hangs up, no common protocol version
expect hangup 1 "failed TLS_E_HANDSHAKE handshake with dns.example:" \
    127.0.0.1 "$HANGUP" dns.example "$DIR/ca.pem"
expect tls11 1 "failed TLS_E_HANDSHAKE handshake with dns.example:" \
    127.0.0.1 "$TLS11" dns.example "$DIR/ca.pem"
# the established connection ends: close_notify, then a bare TCP close
expect tlsclose 1 "closed TLS_E_EOF peer closed the TLS session" \
    127.0.0.1 "$TLSCLOSE" dns.example "$DIR/ca.pem" "hello"
expect tlsdrop 1 "closed TLS_E_EOF peer closed the connection" \
    127.0.0.1 "$TLSDROP" dns.example "$DIR/ca.pem" "hello"
# trust store errors
expect ca-missing 1 "failed ctx ca-file $DIR/nonexistent.pem: No such file or directory" \
    127.0.0.1 "$GOOD" dns.example "$DIR/nonexistent.pem"
expect ca-empty 1 "failed ctx ca-file $DIR/empty.pem: no certificate found" \
    127.0.0.1 "$GOOD" dns.example "$DIR/empty.pem"

# ---- pins (RFC 7858 4.2), resumption, expiry ----

# pin_of NAME: certtool's "pin-sha256:BASE64" of NAME.pem's public key.
pin_of() {
	local pin
	pin=$(certtool -i --infile "$DIR/$1.pem" |
	    sed -n 's/^[[:space:]]*\(pin-sha256:[A-Za-z0-9+/=]*\)$/\1/p')
	[ -n "$pin" ] || die "no pin for $1"
	echo "$pin"
}
PIN_GOOD=$(pin_of good)
PIN_CA=$(pin_of ca)
PIN_OTHER=$(pin_of otherca)
PIN_EXPIRED=$(pin_of expired)
# The probe accepts the bare base64 too.
PIN_GOOD_BARE=${PIN_GOOD#pin-sha256:}
# A server that sends its chain (leaf, then the CA), so that a pin on the
# CA's key has something to match; GOOD sends the leaf alone.
cat "$DIR/good.pem" "$DIR/ca.pem" >"$DIR/goodchain.pem"
cp "$DIR/good.key" "$DIR/goodchain.key"
start_gnutls_serv goodchain goodchain
CHAIN=$PORT
start_gnutls_serv noresume good --noticket --nodb
NORESUME=$PORT
start_gnutls_serv noresume12 good --noticket --nodb \
    --priority "NORMAL:-VERS-ALL:+VERS-TLS1.2"
NORESUME12=$PORT

# pins alone: no name, no chain check (even an untrusted CA file)
expect pin-only 0 "echo ok 5 bytes" \
    --pin "$PIN_GOOD" 127.0.0.1 "$GOOD" "" "$DIR/ca.pem" $'ping\n'
expect pin-only-bare 0 "connected TLS1.3" \
    --pin "$PIN_GOOD_BARE" 127.0.0.1 "$GOOD" "" "$DIR/ca.pem"
expect pin-only-tls12 0 "connected TLS1.2" \
    --pin "$PIN_GOOD" 127.0.0.1 "$GOOD12" "" "$DIR/ca.pem"
expect pin-only-untrusted-ca 0 "connected TLS1.3" \
    --pin "$PIN_GOOD" 127.0.0.1 "$GOOD" "" "$DIR/otherca.pem"
# like stubby: with pins alone the validity period is not checked either
expect pin-only-expired 0 "connected TLS1.3" \
    --pin "$PIN_EXPIRED" 127.0.0.1 "$EXPIRED" "" "$DIR/ca.pem"
expect pin-only-wrong 1 "failed TLS_E_VERIFY certificate verification failed for 127.0.0.1: pin mismatch" \
    --pin "$PIN_OTHER" 127.0.0.1 "$GOOD" "" "$DIR/ca.pem"
# one matching pin among several is enough
expect pin-one-of-two 0 "connected TLS1.3" \
    --pin "$PIN_OTHER" --pin "$PIN_GOOD" 127.0.0.1 "$GOOD" "" "$DIR/ca.pem"
# name and pins: both must hold
expect name-pin-ok 0 "echo ok 5 bytes" \
    --pin "$PIN_GOOD" 127.0.0.1 "$GOOD" dns.example "$DIR/ca.pem" $'ping\n'
expect name-pin-wrong 1 "failed TLS_E_VERIFY certificate verification failed for dns.example: pin mismatch" \
    --pin "$PIN_OTHER" 127.0.0.1 "$GOOD" dns.example "$DIR/ca.pem"
expect name-wrong-pin-ok 1 "failed TLS_E_VERIFY certificate verification failed for other.example: name mismatch" \
    --pin "$PIN_GOOD" 127.0.0.1 "$GOOD" other.example "$DIR/ca.pem"
expect name-pin-expired 1 "failed TLS_E_VERIFY certificate verification failed for dns.example: certificate expired" \
    --pin "$PIN_EXPIRED" 127.0.0.1 "$EXPIRED" dns.example "$DIR/ca.pem"
# a pin on the CA matches when the server sends the CA in its chain, and
# not when it sends the leaf alone: the pins are checked against what
# the server presents
expect pin-ca-chain 0 "connected TLS1.3" \
    --pin "$PIN_CA" 127.0.0.1 "$CHAIN" "" "$DIR/ca.pem"
expect name-pin-ca-chain 0 "connected TLS1.3" \
    --pin "$PIN_CA" 127.0.0.1 "$CHAIN" dns.example "$DIR/ca.pem"
expect pin-ca-leaf-only 1 "failed TLS_E_VERIFY certificate verification failed for 127.0.0.1: pin mismatch" \
    --pin "$PIN_CA" 127.0.0.1 "$GOOD" "" "$DIR/ca.pem"
# neither a name nor a pin: refused before any I/O
expect no-auth 1 "failed TLS_E_CONNECT (tls_conn_new)" \
    127.0.0.1 "$GOOD" "" "$DIR/ca.pem"

# expiry: the leaf's notAfter, as certtool reads it
not_after=$(certtool -i --infile "$DIR/good.pem" |
    sed -n 's/^[[:space:]]*Not After: //p')
WANT_EXPIRY=$(date -u -d "$not_after" +%s) || die "cannot parse '$not_after'"
expect expiry 0 "expiry=$WANT_EXPIRY" \
    127.0.0.1 "$GOOD" dns.example "$DIR/ca.pem"
expect expiry-chain 0 "expiry=$WANT_EXPIRY" \
    127.0.0.1 "$CHAIN" dns.example "$DIR/ca.pem"
expect expiry-pin-only 0 "expiry=$WANT_EXPIRY" \
    --pin "$PIN_GOOD" 127.0.0.1 "$GOOD12" "" "$DIR/ca.pem"

# resumption: TLS 1.3 tickets, TLS 1.2 tickets and session IDs
# (gnutls-serv keeps a session cache and issues tickets by default)
expect resume-tls13 0 "resumed=1" \
    --resume 127.0.0.1 "$GOOD" dns.example "$DIR/ca.pem"
expect resume-tls12 0 "resumed=1" \
    --resume 127.0.0.1 "$GOOD12" dns.example "$DIR/ca.pem"
expect resume-pin-only 0 "resumed=1" \
    --resume --pin "$PIN_GOOD" 127.0.0.1 "$GOOD" "" "$DIR/ca.pem"
# the resumed connection still knows the certificate's expiry
expect resume-expiry 0 "resumed=1 expiry=$WANT_EXPIRY" \
    --resume 127.0.0.1 "$GOOD" dns.example "$DIR/ca.pem"
expect resume-expiry-tls12 0 "resumed=1 expiry=$WANT_EXPIRY" \
    --resume 127.0.0.1 "$GOOD12" dns.example "$DIR/ca.pem"
# a resumed session is checked against the current pins: session data
# cannot carry a connection past a changed pin set
expect resume-repin-wrong 1 "failed TLS_E_VERIFY certificate verification failed for 127.0.0.1: pin mismatch" \
    --resume --pin "$PIN_GOOD" --repin "$PIN_OTHER" \
    127.0.0.1 "$GOOD" "" "$DIR/ca.pem"
expect resume-repin-wrong-tls12 1 "failed TLS_E_VERIFY certificate verification failed for dns.example: pin mismatch" \
    --resume --repin "$PIN_OTHER" 127.0.0.1 "$GOOD12" dns.example "$DIR/ca.pem"
expect resume-repin-ok 0 "resumed=1" \
    --resume --pin "$PIN_GOOD" --repin "$PIN_OTHER" --repin "$PIN_GOOD" \
    127.0.0.1 "$GOOD" "" "$DIR/ca.pem"
# TLS 1.3 without tickets: there is nothing to resume with
expect resume-no-ticket 1 "error: no session data to resume with" \
    --resume 127.0.0.1 "$NORESUME" dns.example "$DIR/ca.pem"
# TLS 1.2 without tickets or cache: the server refuses, full handshake
expect resume-refused-tls12 0 "resumed=0" \
    --resume 127.0.0.1 "$NORESUME12" dns.example "$DIR/ca.pem"

# Allocation failures in tls.c, one at a time: the probe may fail, but
# through a callback or an error code, with no crash, leak or hang.
for n in $(seq 0 20); do
	CASES=$((CASES + 1))
	TLS_PROBE_FAIL_AFTER=$n "$PROBE" -b 40000 127.0.0.1 "$GOOD" \
	    dns.example "$DIR/ca.pem" >"$DIR/case.out" 2>"$DIR/case.err"
	got=$?
	if { [ "$got" != 0 ] && [ "$got" != 1 ]; } ||
	    grep -qE 'Sanitizer|runtime error' "$DIR/case.err" ||
	    grep -q 'probe timed out' "$DIR/case.out"; then
		echo "FAIL nomem-$n: exit $got"
		sed 's/^/  out: /' "$DIR/case.out"
		sed 's/^/  err: /' "$DIR/case.err"
		FAILED=$((FAILED + 1))
	else
		echo "ok   nomem-$n: exit $got: $(tail -n 1 "$DIR/case.out")"
	fi
done

# The same with pins and resumption (their copies, the session data).
for n in $(seq 0 30); do
	CASES=$((CASES + 1))
	TLS_PROBE_FAIL_AFTER=$n "$PROBE" --resume --pin "$PIN_GOOD" \
	    127.0.0.1 "$GOOD" dns.example "$DIR/ca.pem" \
	    >"$DIR/case.out" 2>"$DIR/case.err"
	got=$?
	if { [ "$got" != 0 ] && [ "$got" != 1 ]; } ||
	    grep -qE 'Sanitizer|runtime error' "$DIR/case.err" ||
	    grep -q 'probe timed out' "$DIR/case.out"; then
		echo "FAIL nomem-resume-$n: exit $got"
		sed 's/^/  out: /' "$DIR/case.out"
		sed 's/^/  err: /' "$DIR/case.err"
		FAILED=$((FAILED + 1))
	else
		echo "ok   nomem-resume-$n: exit $got: $(tail -n 1 "$DIR/case.out")"
	fi
done

echo "tls_probe.sh: $((CASES - FAILED))/$CASES passed"
if [ "$FAILED" -ne 0 ]; then
	for f in "$DIR"/*.log; do
		sed "s|^|  $(basename "$f"): |" "$f"
	done
	exit 1
fi
exit 0
