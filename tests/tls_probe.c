/* tls_probe.c: a test client for src/tls.c: connect, verify, echo, close.
 *
 * Usage: tls_probe [-t MS] [-b BYTES] [-x] HOST_IP PORT AUTH_NAME CAFILE
 *        [PAYLOAD]
 *
 * Prints "connected <proto> <cipher>" or "failed <STATUS> <why>". With a
 * PAYLOAD (or -b BYTES of generated data) it writes it and expects the same
 * bytes back (an echo server), prints "echo ok <n> bytes" and closes from
 * inside read_cb, which exercises the re-entrancy contract. -x closes the
 * connection right after starting it and expects no callback at all. -t is
 * the connect+handshake timeout (default 3000 ms); the whole run is bounded
 * by a second timer. Exits 0 on success, 1 on any failure. At the end the
 * loop must have no handle left, so a leaked handle is a failure too.
 * TLS_PROBE_FAIL_AFTER=n makes the (n+1)th allocation through mem.h fail;
 * TLS_PROBE_DEBUG=1 turns on debug logging.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
};

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

static void
usage(void)
{
	fprintf(stderr, "usage: tls_probe [-t MS] [-b BYTES] [-x] HOST_IP "
	    "PORT AUTH_NAME CAFILE [PAYLOAD]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	struct tls_conn_cbs cbs = { connected_cb, read_cb, closed_cb };
	struct probe p;
	struct sockaddr_storage ss;
	struct tls_ctx *ctx = NULL;
	char err[512];
	uint8_t *big = NULL;
	unsigned timeout_ms = 3000;
	size_t nbig = 0, i;
	int close_early = 0, ret, argi = 1;
	long port;

	signal(SIGPIPE, SIG_IGN);
	log_open(getenv("TLS_PROBE_DEBUG") != NULL ? LOGL_DEBUG : LOGL_WARN, 1);
	for (; argi < argc && argv[argi][0] == '-'; argi++) {
		if (strcmp(argv[argi], "-t") == 0 && argi + 1 < argc)
			timeout_ms = (unsigned)strtoul(argv[++argi], NULL, 10);
		else if (strcmp(argv[argi], "-b") == 0 && argi + 1 < argc)
			nbig = strtoul(argv[++argi], NULL, 10);
		else if (strcmp(argv[argi], "-x") == 0)
			close_early = 1;
		else
			usage();
	}
	if (argc - argi != 4 && argc - argi != 5)
		usage();
	port = strtol(argv[argi + 1], NULL, 10);
	if (port <= 0 || port > 65535)
		usage();
	if (uv_ip4_addr(argv[argi], (int)port, (struct sockaddr_in *)&ss) != 0 &&
	    uv_ip6_addr(argv[argi], (int)port, (struct sockaddr_in6 *)&ss) != 0)
		usage();

	memset(&p, 0, sizeof(p));
	p.loop = uv_default_loop();
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
	} else if (argc - argi == 5) {
		p.payload = (const uint8_t *)argv[argi + 4];
		p.payload_len = strlen(argv[argi + 4]);
	}
	p.got = malloc(p.payload_len + 1);
	if (p.got == NULL)
		return 1;

	if (tls_ctx_new(argv[argi + 3], &ctx, err, sizeof(err)) != 0) {
		printf("failed ctx %s\n", err);
		free(p.got);
		free(big);
		return 1;
	}
	/* TLS_PROBE_FAIL_AFTER=n: the (n+1)th allocation in tls.c fails. */
	if (getenv("TLS_PROBE_FAIL_AFTER") != NULL)
		mem_fail_after(strtol(getenv("TLS_PROBE_FAIL_AFTER"), NULL, 10));
	uv_timer_init(p.loop, &p.guard);
	p.guard.data = &p;
	ret = tls_conn_new(p.loop, ctx, (struct sockaddr *)&ss, argv[argi + 2],
	    timeout_ms, &cbs, &p, &p.conn);
	if (ret != 0) {
		printf("failed %s (tls_conn_new)\n", status_name(ret));
		uv_close((uv_handle_t *)&p.guard, NULL);
		p.result = 1;
		goto out;
	}
	/* Nothing may go out before verification. */
	if (tls_conn_write(p.conn, (const uint8_t *)"x", 1) != TLS_E_IO) {
		printf("error: write before handshake accepted\n");
		tls_conn_close(p.conn);
		uv_close((uv_handle_t *)&p.guard, NULL);
		p.result = 1;
		goto out;
	}
	if (close_early) {
		tls_conn_close(p.conn);
		p.conn = NULL;
		printf("closed early\n");
		/* Any callback from now on is a bug the guard would see. */
		uv_timer_start(&p.guard, guard_cb, 200, 0);
	} else {
		uv_timer_start(&p.guard, guard_cb, (uint64_t)timeout_ms * 2 +
		    5000, 0);
	}
	p.result = 1;
out:
	uv_run(p.loop, UV_RUN_DEFAULT);
	if (uv_loop_close(p.loop) != 0) {
		printf("error: handles left open on the loop\n");
		p.result = 1;
	}
	tls_ctx_free(ctx);
	free(p.got);
	free(big);
	return p.result;
}
