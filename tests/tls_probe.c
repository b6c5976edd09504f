/* tls_probe.c: a test client for src/tls.c: connect, verify, echo, close.
 *
 * Usage: tls_probe [-t MS] [-b BYTES] [-x] [--pin BASE64]...
 *        [--resume [--repin BASE64]...] HOST_IP PORT AUTH_NAME CAFILE
 *        [PAYLOAD]
 *
 * Prints "connected <proto> <cipher>" and "expiry=<epoch>" (the server
 * certificate's notAfter), or "failed <STATUS> <why>". With a PAYLOAD (or
 * -b BYTES of generated data) it writes it and expects the same bytes back
 * (an echo server), prints "echo ok <n> bytes" and closes from inside
 * read_cb, which exercises the re-entrancy contract. -x closes the
 * connection right after starting it and expects no callback at all. -t is
 * the connect+handshake timeout (default 3000 ms); the whole run is bounded
 * by a second timer. AUTH_NAME may be "" when pins alone authenticate;
 * --pin adds a SHA-256 SPKI pin, in base64 with or without certtool's
 * "pin-sha256:" prefix. --resume: after the echo (which lets a TLS 1.3
 * ticket arrive) save the session, close, connect again with it, echo
 * again and print "resumed=1" or "resumed=0" and the expiry; --repin
 * replaces the pins for that second connection. Exits 0 on success, 1 on any
 * failure (resumed=0 is not a failure: the script decides). At the end the
 * loop must have no handle left, so a leaked handle is a failure too.
 * TLS_PROBE_FAIL_AFTER=n makes the (n+1)th allocation through mem.h fail;
 * TLS_PROBE_DEBUG=1 turns on debug logging.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/gnutls.h>
#include <uv.h>

#include "log.h"
#include "mem.h"
#include "tls.h"

struct probe {
	uv_loop_t *loop;
	uv_timer_t guard;
	struct tls_conn *conn;
	const uint8_t *payload;
	size_t payload_len;
	uint8_t *got;
	size_t got_len;
	int result; /* exit code once finished */
	int finished;
	/* What tls_conn_new needs, kept for the second (--resume) round. */
	struct tls_ctx *ctx;
	const struct sockaddr *addr;
	struct tls_peer peer;
	unsigned timeout_ms;
	int resume;        /* --resume given */
	int round;         /* 0: first connection, 1: resuming one */
	uint8_t *session;  /* from tls_conn_get_session, mem_free'd */
	size_t session_len;
	unsigned char (*repins)[32]; /* --repin: pins of round 1 */
	size_t n_repins;
};

static const struct tls_conn_cbs probe_cbs;

static const char *
status_name(int status)
{
	switch (status) {
	case TLS_OK: return "TLS_OK";
	case TLS_E_CONNECT: return "TLS_E_CONNECT";
	case TLS_E_TIMEOUT: return "TLS_E_TIMEOUT";
	case TLS_E_HANDSHAKE: return "TLS_E_HANDSHAKE";
	case TLS_E_VERIFY: return "TLS_E_VERIFY";
	case TLS_E_EOF: return "TLS_E_EOF";
	case TLS_E_IO: return "TLS_E_IO";
	case TLS_E_NOMEM: return "TLS_E_NOMEM";
	}
	return "UNKNOWN";
}

static void
finish(struct probe *p, int result)
{
	if (p->finished)
		return;
	p->finished = 1;
	p->result = result;
	uv_close((uv_handle_t *)&p->guard, NULL);
}

static void
connected_cb(void *arg, int status, const char *why)
{
	struct probe *p = arg;
	char desc[64];
	int ret;

	if (status < 0) {
		printf("failed %s %s\n", status_name(status),
		    why != NULL ? why : "(null)");
		p->conn = NULL; /* gone, per the contract */
		finish(p, 1);
		return;
	}
	if (why != NULL) {
		printf("error: why is set on success: %s\n", why);
		finish(p, 1);
		tls_conn_close(p->conn);
		return;
	}
	printf("connected %s\n", tls_conn_describe(p->conn, desc,
	    sizeof(desc)));
	printf("expiry=%lld\n", (long long)tls_conn_cert_expiry(p->conn));
	if (p->round == 1)
		printf("resumed=%d expiry=%lld\n", tls_conn_resumed(p->conn),
		    (long long)tls_conn_cert_expiry(p->conn));
	else if (tls_conn_resumed(p->conn)) {
		printf("error: first connection claims to be resumed\n");
		tls_conn_close(p->conn);
		p->conn = NULL;
		finish(p, 1);
		return;
	}
	if (p->payload_len == 0) {
		tls_conn_close(p->conn);
		p->conn = NULL;
		finish(p, 0);
		return;
	}
	ret = tls_conn_write(p->conn, p->payload, p->payload_len);
	if (ret != 0) {
		/* The contract: closed_cb follows, from a later loop turn;
		 * the guard timer catches it if it does not. */
		printf("error: tls_conn_write: %s\n", status_name(ret));
		return;
	}
	if (tls_conn_write_queue_size(p->conn) > p->payload_len + 4096 * 8) {
		printf("error: write queue %zu for %zu bytes\n",
		    tls_conn_write_queue_size(p->conn), p->payload_len);
	}
}

static int start_conn(struct probe *p);

static void
read_cb(void *arg, const uint8_t *data, size_t len)
{
	struct probe *p = arg;

	if (p->got_len + len > p->payload_len) {
		printf("error: got %zu bytes, expected %zu\n",
		    p->got_len + len, p->payload_len);
		goto fail;
	}
	memcpy(p->got + p->got_len, data, len);
	p->got_len += len;
	if (p->got_len < p->payload_len)
		return;
	if (memcmp(p->got, p->payload, p->payload_len) != 0) {
		printf("error: echo differs\n");
		goto fail;
	}
	if (p->payload_len <= 200)
		printf("echo ok %zu bytes: %.*s\n", p->got_len,
		    (int)p->got_len, (const char *)p->got);
	else
		printf("echo ok %zu bytes\n", p->got_len);
	if (p->resume && p->round == 0) {
		/* The echo came after the server's ticket, if any. */
		if (tls_conn_get_session(p->conn, &p->session,
		    &p->session_len) != 0) {
			printf("error: no session data to resume with\n");
			goto fail;
		}
		printf("session %zu bytes\n", p->session_len);
		tls_conn_close(p->conn);
		p->conn = NULL;
		p->round = 1;
		p->got_len = 0;
		p->peer.session = p->session;
		p->peer.session_len = p->session_len;
		if (p->n_repins > 0) {
			p->peer.pins = (const unsigned char (*)[32])p->repins;
			p->peer.n_pins = p->n_repins;
		}
		if (start_conn(p) != 0)
			finish(p, 1);
		return;
	}
	/* Close from inside read_cb: tls.c must stop delivering. */
	tls_conn_close(p->conn);
	p->conn = NULL;
	finish(p, 0);
	return;

fail:
	tls_conn_close(p->conn);
	p->conn = NULL;
	finish(p, 1);
}

static void
closed_cb(void *arg, int status, const char *why)
{
	struct probe *p = arg;

	printf("closed %s %s (after %zu of %zu bytes)\n", status_name(status),
	    why != NULL ? why : "(null)", p->got_len, p->payload_len);
	p->conn = NULL;
	finish(p, 1);
}

static void
guard_cb(uv_timer_t *t)
{
	struct probe *p = t->data;

	if (p->conn == NULL) {
		/* -x: no callback came in time, which is what we wanted. */
		finish(p, 0);
		return;
	}
	printf("error: probe timed out\n");
	tls_conn_close(p->conn);
	p->conn = NULL;
	finish(p, 1);
}

static const struct tls_conn_cbs probe_cbs = {
	connected_cb, read_cb, closed_cb
};

/* Start p->conn with p->peer. Returns 0, or 1 after printing why. */
static int
start_conn(struct probe *p)
{
	int ret;

	ret = tls_conn_new(p->loop, p->ctx, p->addr, &p->peer, p->timeout_ms,
	    &probe_cbs, p, &p->conn);
	if (ret != 0) {
		printf("failed %s (tls_conn_new)\n", status_name(ret));
		p->conn = NULL;
		return 1;
	}
	/* Nothing may go out before verification. */
	if (tls_conn_write(p->conn, (const uint8_t *)"x", 1) != TLS_E_IO) {
		printf("error: write before handshake accepted\n");
		tls_conn_close(p->conn);
		p->conn = NULL;
		return 1;
	}
	return 0;
}

static void
usage(void)
{
	fprintf(stderr, "usage: tls_probe [-t MS] [-b BYTES] [-x] "
	    "[--pin BASE64]... [--resume [--repin BASE64]...] HOST_IP PORT AUTH_NAME CAFILE "
	    "[PAYLOAD]\n");
	exit(2);
}

/* Decode one pin (base64 of 32 bytes, certtool's "pin-sha256:" prefix
 * allowed) into out. Returns 0, or -1 if it is not one. */
static int
parse_pin(const char *text, unsigned char out[32])
{
	gnutls_datum_t in, raw = { NULL, 0 };
	int rc = -1;

	if (strncmp(text, "pin-sha256:", 11) == 0)
		text += 11;
	in.data = (unsigned char *)(uintptr_t)text;
	in.size = (unsigned)strlen(text);
	if (gnutls_base64_decode2(&in, &raw) == 0 && raw.size == 32) {
		memcpy(out, raw.data, 32);
		rc = 0;
	}
	gnutls_free(raw.data);
	return rc;
}

#define MAX_PINS 8

int
main(int argc, char **argv)
{
	struct probe p;
	struct sockaddr_storage ss;
	struct tls_ctx *ctx = NULL;
	unsigned char pins[MAX_PINS][32], repins[MAX_PINS][32];
	const char *pos[5];
	char err[512];
	uint8_t *big = NULL;
	size_t nbig = 0, npins = 0, i;
	int close_early = 0, npos = 0, argi;
	long port;

	signal(SIGPIPE, SIG_IGN);
	log_open(getenv("TLS_PROBE_DEBUG") != NULL ? LOGL_DEBUG : LOGL_WARN, 1);
	memset(&p, 0, sizeof(p));
	p.timeout_ms = 3000;
	/* Options anywhere; "" (a pin-only AUTH_NAME) is positional. */
	for (argi = 1; argi < argc; argi++) {
		if (strcmp(argv[argi], "-t") == 0 && argi + 1 < argc)
			p.timeout_ms = (unsigned)strtoul(argv[++argi], NULL, 10);
		else if (strcmp(argv[argi], "-b") == 0 && argi + 1 < argc)
			nbig = strtoul(argv[++argi], NULL, 10);
		else if (strcmp(argv[argi], "-x") == 0)
			close_early = 1;
		else if (strcmp(argv[argi], "--resume") == 0)
			p.resume = 1;
		else if (strcmp(argv[argi], "--pin") == 0 && argi + 1 < argc) {
			if (npins == MAX_PINS ||
			    parse_pin(argv[++argi], pins[npins]) != 0)
				usage();
			npins++;
		} else if (strcmp(argv[argi], "--repin") == 0 &&
		    argi + 1 < argc) {
			if (p.n_repins == MAX_PINS ||
			    parse_pin(argv[++argi], repins[p.n_repins]) != 0)
				usage();
			p.n_repins++;
		} else if (argv[argi][0] == '-' && argv[argi][1] != '\0')
			usage();
		else if (npos < 5)
			pos[npos++] = argv[argi];
		else
			usage();
	}
	if (npos != 4 && npos != 5)
		usage();
	port = strtol(pos[1], NULL, 10);
	if (port <= 0 || port > 65535)
		usage();
	if (uv_ip4_addr(pos[0], (int)port, (struct sockaddr_in *)&ss) != 0 &&
	    uv_ip6_addr(pos[0], (int)port, (struct sockaddr_in6 *)&ss) != 0)
		usage();

	p.loop = uv_default_loop();
	p.addr = (const struct sockaddr *)&ss;
	p.peer.auth_name = pos[2];
	p.peer.pins = npins > 0 ? (const unsigned char (*)[32])pins : NULL;
	p.peer.n_pins = npins;
	p.repins = repins;
	if (nbig > 0) {
		big = malloc(nbig);
		if (big == NULL)
			return 1;
		/* Lines, for echo servers that work line by line. */
		for (i = 0; i < nbig; i++)
			big[i] = (uint8_t)(i % 64 == 63 || i + 1 == nbig ?
			    '\n' : 'a' + i % 26);
		p.payload = big;
		p.payload_len = nbig;
	} else if (npos == 5) {
		p.payload = (const uint8_t *)pos[4];
		p.payload_len = strlen(pos[4]);
	} else if (p.resume) {
		/* A round trip, so that a TLS 1.3 ticket has arrived. */
		p.payload = (const uint8_t *)"ping\n";
		p.payload_len = 5;
	}
	p.got = malloc(p.payload_len + 1);
	if (p.got == NULL)
		return 1;

	if (tls_ctx_new(pos[3], &ctx, err, sizeof(err)) != 0) {
		printf("failed ctx %s\n", err);
		free(p.got);
		free(big);
		return 1;
	}
	p.ctx = ctx;
	/* TLS_PROBE_FAIL_AFTER=n: the (n+1)th allocation in tls.c fails. */
	if (getenv("TLS_PROBE_FAIL_AFTER") != NULL)
		mem_fail_after(strtol(getenv("TLS_PROBE_FAIL_AFTER"), NULL, 10));
	uv_timer_init(p.loop, &p.guard);
	p.guard.data = &p;
	p.result = 1;
	if (start_conn(&p) != 0) {
		uv_close((uv_handle_t *)&p.guard, NULL);
		goto out;
	}
	if (close_early) {
		tls_conn_close(p.conn);
		p.conn = NULL;
		printf("closed early\n");
		/* Any callback from now on is a bug the guard would see. */
		uv_timer_start(&p.guard, guard_cb, 200, 0);
	} else {
		uv_timer_start(&p.guard, guard_cb, (uint64_t)p.timeout_ms * 4 +
		    5000, 0);
	}
out:
	uv_run(p.loop, UV_RUN_DEFAULT);
	if (uv_loop_close(p.loop) != 0) {
		printf("error: handles left open on the loop\n");
		p.result = 1;
	}
	tls_ctx_free(ctx);
	mem_free(p.session);
	free(p.got);
	free(big);
	return p.result;
}
