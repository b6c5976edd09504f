#!/bin/sh
# gencerts.sh: make the test PKI for the integration tests with certtool.
#
# Usage: gencerts.sh DIR
#
# Writes into DIR (created if missing):
#   ca.pem ca-key.pem            test CA
#   server.pem server-key.pem    dns.example (+ IP 127.0.0.1), signed by the CA
#   other.pem other-key.pem      other.example, signed by the CA
#   rogue-ca.pem rogue-ca-key.pem, rogue.pem rogue-key.pem
#                                dns.example signed by an unrelated CA
#   expired.pem expired-key.pem  dns.example signed by the CA, expired in 2021
#   notyet.pem notyet-key.pem    dns.example signed by the CA, valid from 2090
#   chain.pem                    server.pem followed by ca.pem (the key is
#                                server-key.pem): a server sending it lets
#                                a pin on the CA's key match
# Idempotent: a file that exists is kept, so running it twice is cheap and
# the certificates stay stable. Quiet on success; on failure certtool's
# output is shown and the exit status is non-zero.
set -eu

if [ $# -ne 1 ]; then
	echo "usage: $0 DIR" >&2
	exit 2
fi
dir=$1
mkdir -p "$dir"
cd "$dir"
command -v certtool >/dev/null 2>&1 || {
	echo "$0: certtool not found (Debian package gnutls-bin)" >&2
	exit 1
}

log=$(mktemp)
trap 'rm -f "$log" ./*.tmpl.$$' EXIT

# run CMD...: run quietly, show the output only if it fails.
run() {
	if ! "$@" >"$log" 2>&1; then
		echo "$0: failed: $*" >&2
		cat "$log" >&2
		exit 1
	fi
}

key() {
	[ -s "$1" ] || run certtool --generate-privkey --key-type=ecdsa \
	    --curve=secp256r1 --outfile "$1.new"
	[ -s "$1" ] || mv "$1.new" "$1"
}

# ca NAME CN: a self-signed CA
ca() {
	key "$1-key.pem"
	[ -s "$1.pem" ] && return 0
	cat >"$1.tmpl.$$" <<EOF
cn = "$2"
organization = "dotproxy tests"
serial = 1
expiration_days = 3650
ca
cert_signing_key
crl_signing_key
EOF
	run certtool --generate-self-signed --load-privkey "$1-key.pem" \
	    --template "$1.tmpl.$$" --outfile "$1.pem.new"
	mv "$1.pem.new" "$1.pem"
}

# leaf NAME CA HOST SERIAL [EXTRA-TEMPLATE-LINES]: a TLS server certificate
leaf() {
	key "$1-key.pem"
	[ -s "$1.pem" ] && return 0
	{
		echo "cn = \"$3\""
		echo "organization = \"dotproxy tests\""
		echo "serial = $4"
		echo "dns_name = \"$3\""
		echo "ip_address = \"127.0.0.1\""
		echo "tls_www_server"
		echo "signing_key"
		echo "encryption_key"
		if [ $# -ge 5 ]; then
			printf '%s\n' "$5"
		else
			echo "expiration_days = 3650"
		fi
	} >"$1.tmpl.$$"
	run certtool --generate-certificate --load-privkey "$1-key.pem" \
	    --load-ca-certificate "$2.pem" --load-ca-privkey "$2-key.pem" \
	    --template "$1.tmpl.$$" --outfile "$1.pem.new"
	mv "$1.pem.new" "$1.pem"
}

ca ca "dotproxy test CA"
ca rogue-ca "unrelated test CA"
leaf server ca dns.example 2
leaf other ca other.example 3
leaf rogue rogue-ca dns.example 4
leaf expired ca dns.example 5 'activation_date = "2020-01-01 00:00:00 UTC"
expiration_date = "2021-01-01 00:00:00 UTC"'
leaf notyet ca dns.example 6 'activation_date = "2090-01-01 00:00:00 UTC"
expiration_date = "2091-01-01 00:00:00 UTC"'
# Rewritten only when it no longer matches its parts (they may be remade).
if ! cat server.pem ca.pem | cmp -s - chain.pem; then
	cat server.pem ca.pem >chain.pem.new
	mv chain.pem.new chain.pem
fi

# Check what the tests rely on, so a certtool change fails here, loudly.
run certtool --verify --load-ca-certificate ca.pem --infile server.pem
run certtool --verify --load-ca-certificate ca.pem --infile other.pem
if certtool --verify --load-ca-certificate ca.pem --infile rogue.pem \
    >"$log" 2>&1; then
	echo "$0: rogue.pem unexpectedly verifies against ca.pem" >&2
	exit 1
fi
if certtool --verify --load-ca-certificate ca.pem --infile expired.pem \
    >"$log" 2>&1; then
	echo "$0: expired.pem unexpectedly verifies (not expired?)" >&2
	exit 1
fi
grep -qi expired "$log" || {
	echo "$0: expired.pem fails for a reason other than expiry:" >&2
	cat "$log" >&2
	exit 1
}
if certtool --verify --load-ca-certificate ca.pem --infile notyet.pem \
    >"$log" 2>&1; then
	echo "$0: notyet.pem unexpectedly verifies (already valid?)" >&2
	exit 1
fi
grep -qi 'not yet valid' "$log" || {
	echo "$0: notyet.pem fails for a reason other than its start date:" >&2
	cat "$log" >&2
	exit 1
}
run certtool --verify --load-ca-certificate ca.pem --infile chain.pem
