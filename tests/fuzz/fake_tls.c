/* fake_tls.c: tls.h without sockets or GnuTLS, for the upstream fuzzer and
 * the upstream allocation-failure test.
 *
 * Linked in place of src/tls.c (its object comes before libdotproxy.a, or
 * the fuzz build compiles it instead of tls.c). A connection is one struct
 * with one timer, the only handle: tls_conn_new arms it at 0 ms so that
 * connected_cb comes on the next loop turn, as the real handshake's does,
 * and a failed write arms it to report closed_cb from a later turn, as
 * tls.c's write_failed does. Bytes reach the pool only through
 * fake_tls_feed, which calls read_cb at once: the caller (a fuzzer, a
 * test) is the server, deciding what arrives and in which chunks.
 *
 * The callback contract of tls.h is kept and checked: tls_conn_new
 * calls no callback; a failed connected_cb is the last callback and the
 * connection is freed after it; after closed_cb, or after tls_conn_close,
 * nothing more is called and the memory goes once libuv has closed the
 * timer. A pool that closes or writes to a connection that is gone
 * aborts here, so that a fuzzer reports it.
 *
 * Randomness: upstream.c draws its query IDs and back-off jitter from
 * gnutls_rnd. This file defines gnutls_rnd (the program's definition
 * comes before GnuTLS's in symbol lookup), a xorshift generator restarted
 * by fake_tls_reset, so that one fuzz input always replays the same IDs.
 * Only the programs that link this file get it.
 *
 * Allocation: the connection itself and the session data come from
 * mem_calloc/mem_alloc, as in tls.c, so that mem_fail_after reaches them;
 * the frame record is fixed-size and allocates nothing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "fake_tls.h"
#include "mem.h"

enum fc_state {
	FC_CONNECTING,
	FC_ESTABLISHED,
	FC_FAILING,     /* a write failed: closed_cb is due */
	FC_GONE,        /* ended or closed: no more callbacks, not listed */
};

struct tls_conn {
	uv_loop_t *loop;
	uv_timer_t timer;
	struct tls_conn_cbs cbs;
	void *arg;
	enum fc_state state;
	enum fake_tls_outcome outcome;
	enum tls_failure failure;  /* reported during a failed connected_cb */
	int fail_next_write;
	int got_data;
	size_t n_written;
	size_t frame_len[FAKE_TLS_FRAMES];
	uint8_t frame[FAKE_TLS_FRAMES][FAKE_TLS_FRAME_MAX];
	struct tls_conn *next;     /* the list of live connections */
};

static struct tls_conn *conns;
static enum fake_tls_outcome next_outcome;
static size_t n_created;
static uint32_t rnd_state = 1;

int
gnutls_rnd(gnutls_rnd_level_t level, void *data, size_t len)
{
	uint8_t *p = data;
	size_t i;

	(void)level;
	for (i = 0; i < len; i++) {
		rnd_state ^= rnd_state << 13;
		rnd_state ^= rnd_state >> 17;
		rnd_state ^= rnd_state << 5;
		p[i] = (uint8_t)(rnd_state >> 8);
	}
	return 0;
}

void
fake_tls_reset(uint32_t seed)
{
	if (conns != NULL)
		abort();   /* a connection outlived its pool */
	next_outcome = FAKE_TLS_OK;
	n_created = 0;
	rnd_state = seed != 0 ? seed : 1;
}

void
fake_tls_set_outcome(enum fake_tls_outcome o)
{
	next_outcome = o < FAKE_TLS_N_OUTCOMES ? o : FAKE_TLS_OK;
}

static void
unlist(struct tls_conn *c)
{
	struct tls_conn **pp;

	for (pp = &conns; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	c->next = NULL;
}

static void
free_cb(uv_handle_t *h)
{
	mem_free(h->data);
}

/* c has made its last callback (or will make none): free it. */
static void
conn_release(struct tls_conn *c)
{
	c->state = FC_GONE;
	unlist(c);
	uv_close((uv_handle_t *)&c->timer, free_cb);
}

static void
timer_cb(uv_timer_t *t)
{
	struct tls_conn *c = t->data;
	int status = 0;

	switch (c->state) {
	case FC_CONNECTING:
		switch (c->outcome) {
		case FAKE_TLS_OK:
			c->state = FC_ESTABLISHED;
			c->cbs.connected_cb(c->arg, 0, NULL);
			return;
		case FAKE_TLS_CONNECT_FAIL:
			status = TLS_E_CONNECT;
			c->failure = TLS_FAIL_CONNECT;
			break;
		case FAKE_TLS_TIMEOUT:
			status = TLS_E_TIMEOUT;
			c->failure = TLS_FAIL_HANDSHAKE;
			break;
		case FAKE_TLS_VERIFY_FAIL:
			status = TLS_E_VERIFY;
			c->failure = TLS_FAIL_VERIFY;
			break;
		case FAKE_TLS_PIN_FAIL:
			status = TLS_E_VERIFY;
			c->failure = TLS_FAIL_PIN;
			break;
		case FAKE_TLS_HANDSHAKE_FAIL:
		default:
			status = TLS_E_HANDSHAKE;
			c->failure = TLS_FAIL_HANDSHAKE;
			break;
		}
		/* Unlisted before the call, freed after it (tls.h). */
		unlist(c);
		c->cbs.connected_cb(c->arg, status, "fake failure");
		conn_release(c);
		return;
	case FC_FAILING:
		unlist(c);
		c->state = FC_GONE;
		c->cbs.closed_cb(c->arg, TLS_E_IO, "fake write failure");
		conn_release(c);
		return;
	case FC_ESTABLISHED:
	case FC_GONE:
		return;
	}
}

int
tls_conn_new(uv_loop_t *loop, struct tls_ctx *ctx,
    const struct sockaddr *addr, const struct tls_peer *peer,
    unsigned timeout_ms, const struct tls_conn_cbs *cbs, void *arg,
    struct tls_conn **out)
{
	struct tls_conn *c;

	(void)ctx;
	(void)addr;
	(void)timeout_ms;
	*out = NULL;
	if (peer == NULL || ((peer->auth_name == NULL ||
	    peer->auth_name[0] == '\0') && peer->n_pins == 0))
		abort();   /* the pool must always authenticate */
	if (next_outcome == FAKE_TLS_REFUSE)
		return TLS_E_CONNECT;
	c = mem_calloc(1, sizeof(*c));
	if (c == NULL)
		return TLS_E_NOMEM;
	c->loop = loop;
	c->cbs = *cbs;
	c->arg = arg;
	c->outcome = next_outcome;
	c->state = FC_CONNECTING;
	uv_timer_init(loop, &c->timer);
	c->timer.data = c;
	uv_timer_start(&c->timer, timer_cb, 0, 0);
	c->next = conns;
	conns = c;
	n_created++;
	*out = c;
	return 0;
}

int
tls_ctx_new(const char *ca_file, struct tls_ctx **out, char *err,
    size_t errlen)
{
	static char dummy;

	(void)ca_file;
	(void)err;
	(void)errlen;
	*out = (struct tls_ctx *)(void *)&dummy;
	return 0;
}

void
tls_ctx_free(struct tls_ctx *ctx)
{
	(void)ctx;
}

/* Oldest first: the list is pushed at its head. */
size_t
fake_tls_count(void)
{
	const struct tls_conn *c;
	size_t n = 0;

	for (c = conns; c != NULL; c = c->next)
		n++;
	return n;
}

struct tls_conn *
fake_tls_conn(size_t i)
{
	struct tls_conn *c;
	size_t n = fake_tls_count();

	if (i >= n)
		return NULL;
	for (c = conns, i = n - 1 - i; i > 0; i--)
		c = c->next;
	return c;
}

int
fake_tls_established(const struct tls_conn *c)
{
	return c != NULL && c->state == FC_ESTABLISHED;
}

size_t
fake_tls_created(void)
{
	return n_created;
}

size_t
fake_tls_written(const struct tls_conn *c)
{
	return c->n_written;
}

const uint8_t *
fake_tls_frame(const struct tls_conn *c, size_t k, size_t *len)
{
	size_t kept = c->n_written < FAKE_TLS_FRAMES ? c->n_written :
	    FAKE_TLS_FRAMES;
	size_t slot;

	if (k >= kept)
		return NULL;
	slot = (c->n_written - kept + k) % FAKE_TLS_FRAMES;
	*len = c->frame_len[slot];
	return c->frame[slot];
}

void
fake_tls_feed(struct tls_conn *c, const uint8_t *data, size_t len)
{
	if (c->state != FC_ESTABLISHED)
		abort();
	c->got_data = 1;
	c->cbs.read_cb(c->arg, data, len);
}

void
fake_tls_peer_close(struct tls_conn *c, int status)
{
	if (c->state == FC_GONE)
		abort();
	if (c->state == FC_CONNECTING) {
		/* Before the handshake ended, a close is a failed attempt. */
		unlist(c);
		c->state = FC_GONE;
		c->failure = TLS_FAIL_CONNECT;
		c->cbs.connected_cb(c->arg, TLS_E_CONNECT, "fake reset");
		conn_release(c);
		return;
	}
	unlist(c);
	c->state = FC_GONE;
	c->cbs.closed_cb(c->arg, status, "fake peer close");
	conn_release(c);
}

void
fake_tls_fail_next_write(struct tls_conn *c)
{
	c->fail_next_write = 1;
}

int
tls_conn_write(struct tls_conn *c, const uint8_t *data, size_t len)
{
	size_t slot;

	if (c->state == FC_GONE)
		abort();   /* written after close: a use after free in tls.c */
	if (c->state != FC_ESTABLISHED)
		return TLS_E_IO;
	if (c->fail_next_write) {
		c->fail_next_write = 0;
		c->state = FC_FAILING;
		uv_timer_start(&c->timer, timer_cb, 0, 0);
		return TLS_E_IO;
	}
	slot = c->n_written % FAKE_TLS_FRAMES;
	c->frame_len[slot] = len < FAKE_TLS_FRAME_MAX ? len :
	    FAKE_TLS_FRAME_MAX;
	memcpy(c->frame[slot], data, c->frame_len[slot]);
	c->n_written++;
	return 0;
}

size_t
tls_conn_write_queue_size(const struct tls_conn *c)
{
	(void)c;
	return 0;
}

void
tls_conn_close(struct tls_conn *c)
{
	if (c == NULL)
		return;
	if (c->state == FC_GONE)
		abort();   /* closed twice, or after its last callback */
	conn_release(c);
}

const char *
tls_conn_describe(struct tls_conn *c, char *buf, size_t cap)
{
	(void)c;
	snprintf(buf, cap, "FAKE1.0");
	return buf;
}

int
tls_conn_get_session(struct tls_conn *c, uint8_t **data, size_t *len)
{
	/* As with TLS 1.3 tickets, there is none before data was read. */
	if (c->state == FC_GONE || !c->got_data)
		return -1;
	*data = mem_alloc(16);
	if (*data == NULL)
		return -1;
	memset(*data, 0x5e, 16);
	*len = 16;
	return 0;
}

int
tls_conn_resumed(const struct tls_conn *c)
{
	(void)c;
	return 0;
}

int64_t
tls_conn_cert_expiry(const struct tls_conn *c)
{
	(void)c;
	return 2000000000;
}

const char *
tls_conn_version(const struct tls_conn *c)
{
	return c->state == FC_ESTABLISHED ? "FAKE1.0" : "";
}

int64_t
tls_conn_chain_min_not_after(const struct tls_conn *c)
{
	(void)c;
	return 2000000000;
}

int
tls_conn_leaf_pin(const struct tls_conn *c, char *buf, size_t cap)
{
	static const char pin[] =
	    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

	(void)c;
	if (cap < sizeof(pin)) {
		if (cap > 0)
			buf[0] = '\0';
		return -1;
	}
	memcpy(buf, pin, sizeof(pin));
	return 0;
}

int
tls_conn_pin_state(const struct tls_conn *c)
{
	return c->failure == TLS_FAIL_PIN ? 0 : -1;
}

enum tls_failure
tls_conn_failure(const struct tls_conn *c)
{
	return c->failure;
}
