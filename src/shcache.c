/* shcache.c: the shared second-level cache in Redis (hiredis async on libuv).
 *
 * One struct shcache per loop holds at most one hiredis async context
 * (s->ac) and three timers: the request timer (the earliest deadline of
 * the requests not yet answered), the connect timer (the TCP connect,
 * which hiredis 0.14 does not bound) and the retry timer (the next
 * connection attempt: at once after a first loss, otherwise after the
 * back-off).
 *
 * Requests. Every command we send has a record (struct shc_req) on one
 * list in send order; hiredis holds it as the privdata of its reply
 * callback and gives it back exactly once, with the reply or with NULL
 * when the context is freed. Only that callback frees a record, so a
 * record is never freed under hiredis. A record's outcome is reported
 * once (r->done): by its reply, by its deadline (SHCACHE_TIMEOUT at once,
 * the record then waits for the late reply, which is ignored), or by
 * shcache_close (SHCACHE_SKIPPED). Every get and set is counted once in
 * shc_requests, when its outcome is reported.
 *
 * Re-entrancy. User callbacks run from our timer, from hiredis's reply
 * callbacks and from shcache_close, and may call anything here, including
 * shcache_close. Freeing the context runs the pending reply callbacks
 * synchronously (or, inside a hiredis callback, right after it returns),
 * which frees records. So a walk over the list that calls out notes
 * s->epoch (bumped by every free) and starts again when it moved, and
 * every caller checks s->closing after calling out. We never call
 * redisAsyncFree on a context that hiredis is freeing itself: a context
 * is detached (s->ac = NULL, ac->data = NULL) before we free it or as
 * soon as we learn that hiredis is freeing it (onConnect with an error,
 * a NULL reply of the current connection, onDisconnect).
 *
 * Failures and the breaker. s->fails counts failures in a row: a request
 * timed out, an error reply other than WRONGTYPE (that is a value of
 * someone else's under our key, not a sick server), a failed connect or
 * handshake, a lost connection (once for the loss, not once per request
 * it took with it). A reply in time (a completed handshake too) resets
 * it; a late one does not (a server that always answers after the
 * timeout is no use). At
 * SHCACHE_BREAKER_FAILS the breaker opens: the connection is dropped,
 * requests are skipped, and after the jittered back-off one connection is
 * made and PINGed; the PONG closes the breaker, any failure reopens it
 * with the back-off doubled.
 *
 * The glue to libuv is ours (ev_*), not hiredis 0.14's adapters/libuv.h:
 * that one drops a poll error (status < 0: EPOLLERR, a connection reset
 * by the peer) on the floor, and hiredis then never learns that the
 * connection is gone; an idle connection stayed "up" for ever. Ours
 * hands an error to redisAsyncHandleRead, whose read fails and frees the
 * context as any lost connection. The poll handle is freed in its close
 * callback, after hiredis let go of it (ev_cleanup).
 *
 * s itself is freed when the three timers have been closed (and no record
 * is left, which holds by then: freeing the context answers them all).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "log.h"
#include "mem.h"
#include "shcache.h"

/* The connect timeout: at least this, else the request timeout. A
 * handshake is a round trip like a request, but nothing waits for it
 * (requests are skipped meanwhile) and it is rare, so a working but slow
 * path gets a little more time than a request would. */
#define SHC_CONNECT_MIN_MS 100
#define SHC_KEY_MAX (CONF_SHC_PREFIX_MAX + CACHE_KEY_MAX)
/* A glob pattern: every byte of prefix and name may need a backslash. */
#define SHC_PATTERN_MAX (2 * CONF_SHC_PREFIX_MAX + 1 + 2 * DNS_MAX_NAME_WIRE + 5)
#define SHC_N_TIMERS 3

enum shc_kind {
	REQ_GET,
	REQ_SET,
	REQ_SELECT,   /* handshake: SELECT db */
	REQ_PING,     /* handshake: the breaker's probe */
	REQ_SCAN,     /* flush */
	REQ_DEL,      /* flush */
};

struct shc_flush;

struct shc_req {
	struct shc_req *prev, *next;   /* s->head .. s->tail, send order */
	struct shcache *s;
	enum shc_kind kind;
	int done;                      /* outcome reported */
	uint64_t gen;                  /* the connection it was sent on */
	uint64_t deadline_ms;          /* on the loop's clock */
	uint64_t sent_ns;
	shcache_get_cb cb;             /* get */
	void *arg;
	struct dnsmsg_question q;      /* get */
	struct shc_flush *flush;       /* scan, del */
};

/* One shcache_flush in progress; freed when no record refers to it. */
struct shc_flush {
	int refs;                      /* records that point here */
	int exact;                     /* one name, not a subtree nor all */
	int subtree;                   /* for the log */
	int stopped;                   /* ended early; logged */
	int fallback_used;             /* DEL by name: the server lacks SCAN */
	unsigned scans;                /* SCAN replies read */
	uint64_t deleted;
	char name[DNS_MAX_NAME_TEXT];  /* for the log */
	uint8_t wire[DNS_MAX_NAME_WIRE];
	size_t wire_len;
	char pattern[SHC_PATTERN_MAX];
	size_t pattern_len;
};

struct shcache {
	uv_loop_t *loop;
	const struct conf *conf;
	struct conf_redis addr;        /* a copy: the old conf may go away */
	struct metrics *m;

	redisAsyncContext *ac;         /* NULL: no connection */
	uint64_t gen;                  /* bumped at each connection attempt */
	int up;                        /* requests may be sent */
	int hs_pending;                /* handshake replies still awaited */
	int circuit_open;
	int retried;                   /* the at-once retry after a loss is used */
	unsigned fails;                /* failures in a row */
	uint64_t backoff_ms;
	uint64_t retry_due_ms;
	uint64_t breaker_opens;
	uint64_t connects;
	uint64_t prng;

	struct shc_req *head, *tail;
	unsigned n_req;
	uint64_t epoch;                /* bumped whenever a record is freed */
	uint64_t timer_due_ms;

	uv_timer_t req_timer;
	uv_timer_t conn_timer;
	uv_timer_t retry_timer;
	int open_handles;
	int closing;
	int draining;                  /* shcache_drain: gets are skipped */

	struct shc_flush *fallback;    /* an exact flush waiting for the next
	                                * connection (SCAN lost the last one) */

	uint64_t (*wall_ms)(void *arg);
	void *wall_arg;

	uint8_t buf[DNS_MAX_MSG];      /* a hit's answer, given to the callback */
	uint8_t vbuf[SHCACHE_VALUE_MAX]; /* a value being written (apart from
	                                * buf: a put may pass a hit's answer) */
};

static void conn_start(struct shcache *s);
static void conn_failed(struct shcache *s);
static void reply_cb(redisAsyncContext *ac, void *reply, void *privdata);
static void req_timer_cb(uv_timer_t *t);
static void retry_timer_cb(uv_timer_t *t);
static void conn_timer_cb(uv_timer_t *t);
static void maybe_free(struct shcache *s);
static void flush_unref(struct shcache *s, struct shc_flush *f);
static void flush_fallback(struct shcache *s, struct shc_flush *f);
static void flush_scan_reply(struct shcache *s, struct shc_req *r,
    const redisReply *rep);
static void flush_del_reply(struct shcache *s, struct shc_req *r,
    const redisReply *rep);
static void flush_lost(struct shcache *s, struct shc_req *r, int timeout);

/* ---- names, codec, clock ---- */

const char *
shcache_op_name(enum shcache_op op)
{
	static const char *const names[SHCACHE_N_OPS] = { "get", "set", "del" };

	return (unsigned)op < SHCACHE_N_OPS ? names[op] : "?";
}

const char *
shcache_result_name(enum shcache_result r)
{
	static const char *const names[SHCACHE_N_RESULTS] = {
		"hit", "miss", "error", "timeout", "skipped", "ok",
	};

	return (unsigned)r < SHCACHE_N_RESULTS ? names[r] : "?";
}

size_t
shcache_value_encode(uint8_t *out, size_t cap, uint64_t fetched_ms,
    uint32_t lifetime_s, const uint8_t *answer, size_t len)
{
	int i;

	if (len > DNS_MAX_MSG || cap < SHCACHE_HDR_LEN + len)
		return 0;
	memcpy(out, SHCACHE_MAGIC, 4);
	for (i = 0; i < 8; i++)
		out[4 + i] = (uint8_t)(fetched_ms >> (56 - 8 * i));
	for (i = 0; i < 4; i++)
		out[12 + i] = (uint8_t)(lifetime_s >> (24 - 8 * i));
	memcpy(out + SHCACHE_HDR_LEN, answer, len);
	return SHCACHE_HDR_LEN + len;
}

int
shcache_value_decode(const uint8_t *value, size_t len, uint64_t *fetched_ms,
    uint32_t *lifetime_s, const uint8_t **answer, size_t *answer_len)
{
	uint64_t t = 0;
	uint32_t l = 0;
	int i;

	/* An answer is at least a DNS header; a longer value than any we
	 * write is someone else's (GETRANGE reads one byte more to tell). */
	if (len < SHCACHE_HDR_LEN + DNS_HDR_LEN || len > SHCACHE_VALUE_MAX)
		return -1;
	if (memcmp(value, SHCACHE_MAGIC, 4) != 0)
		return -1;
	for (i = 0; i < 8; i++)
		t = t << 8 | value[4 + i];
	for (i = 0; i < 4; i++)
		l = l << 8 | value[12 + i];
	if (l == 0)
		return -1;
	*fetched_ms = t;
	*lifetime_s = l;
	*answer = value + SHCACHE_HDR_LEN;
	*answer_len = len - SHCACHE_HDR_LEN;
	return 0;
}

static uint64_t
real_wall_ms(void *arg)
{
	struct timespec ts;

	(void)arg;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void
shcache_set_clock(struct shcache *s, uint64_t (*wall_ms)(void *arg),
    void *arg)
{
	s->wall_ms = wall_ms ? wall_ms : real_wall_ms;
	s->wall_arg = wall_ms ? arg : NULL;
}

/* xorshift64*: the jitter only needs to spread the instances of a fleet,
 * and a PRNG of our own keeps rand()'s global state out of it. */
static uint64_t
prng_next(struct shcache *s)
{
	uint64_t x = s->prng;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	s->prng = x;
	return x * 0x2545F4914F6CDD1DULL;
}

/* ms +- 25 %. */
static uint64_t
jitter(struct shcache *s, uint64_t ms)
{
	return ms * (75 + prng_next(s) % 51) / 100;
}

static const char *
url(const struct shcache *s)
{
	return s->addr.url[0] ? s->addr.url :
	    s->addr.is_unix ? s->addr.path : s->addr.host;
}

/* ---- the request list ---- */

static void
count(struct shcache *s, enum shcache_op op, enum shcache_result res)
{
	s->m->shc_requests[op][res]++;
}

static struct shc_req *
req_new(struct shcache *s, enum shc_kind kind)
{
	struct shc_req *r;

	if (s->n_req >= SHCACHE_MAX_OUTSTANDING)
		return NULL;
	r = mem_calloc(1, sizeof(*r));
	if (r == NULL)
		return NULL;
	r->s = s;
	r->kind = kind;
	r->gen = s->gen;
	return r;
}

static void
req_unlink(struct shcache *s, struct shc_req *r)
{
	if (r->prev)
		r->prev->next = r->next;
	else
		s->head = r->next;
	if (r->next)
		r->next->prev = r->prev;
	else
		s->tail = r->prev;
	r->prev = r->next = NULL;
	s->n_req--;
}

static void
req_free(struct shcache *s, struct shc_req *r)
{
	if (r->flush)
		flush_unref(s, r->flush);
	mem_free(r);
	s->epoch++;
}

/* Put r on the list with its deadline and arm the timer for it if it is
 * the earliest (a shorter timeout after a reload can make it so). */
static void
req_track(struct shcache *s, struct shc_req *r)
{
	uint64_t now = uv_now(s->loop), t = s->conf->shared_cache_timeout_ms;

	r->deadline_ms = now + t;
	r->sent_ns = uv_hrtime();
	r->prev = s->tail;
	if (s->tail)
		s->tail->next = r;
	else
		s->head = r;
	s->tail = r;
	s->n_req++;
	if (!uv_is_active((uv_handle_t *)&s->req_timer) ||
	    r->deadline_ms < s->timer_due_ms) {
		s->timer_due_ms = r->deadline_ms;
		uv_timer_start(&s->req_timer, req_timer_cb, t, 0);
	}
}

/* Send a command for r (tracked on success). -1: not sent, r freed. */
static int
req_send(struct shcache *s, struct shc_req *r, int argc, const char **argv,
    const size_t *argvlen)
{
	if (s->ac == NULL || redisAsyncCommandArgv(s->ac, reply_cb, r, argc,
	    argv, argvlen) != REDIS_OK) {
		if (r->flush)
			flush_unref(s, r->flush);
		mem_free(r);
		return -1;
	}
	req_track(s, r);
	return 0;
}

static void
hist_since(struct shcache *s, enum shcache_op op, const struct shc_req *r)
{
	metrics_hist_add(&s->m->shc_duration[op], uv_hrtime() - r->sent_ns);
}

/* ---- hiredis on libuv ---- */

struct shc_ev {
	redisAsyncContext *ac;          /* NULL once hiredis let go */
	uv_poll_t poll;
	int events;
};

static void
ev_poll_cb(uv_poll_t *h, int status, int events)
{
	struct shc_ev *e = h->data;

	if (e->ac == NULL)
		return;
	if (status < 0) {
		/* libuv stopped the handle; the read tells hiredis why. */
		redisAsyncHandleRead(e->ac);
		return;
	}
	if (events & UV_READABLE)
		redisAsyncHandleRead(e->ac);
	if (e->ac != NULL && (events & UV_WRITABLE))
		redisAsyncHandleWrite(e->ac);
}

static void
ev_update(struct shc_ev *e)
{
	if (e->events)
		uv_poll_start(&e->poll, e->events, ev_poll_cb);
	else
		uv_poll_stop(&e->poll);
}

static void
ev_add_read(void *data)
{
	struct shc_ev *e = data;

	e->events |= UV_READABLE;
	ev_update(e);
}

static void
ev_del_read(void *data)
{
	struct shc_ev *e = data;

	e->events &= ~UV_READABLE;
	ev_update(e);
}

static void
ev_add_write(void *data)
{
	struct shc_ev *e = data;

	e->events |= UV_WRITABLE;
	ev_update(e);
}

static void
ev_del_write(void *data)
{
	struct shc_ev *e = data;

	e->events &= ~UV_WRITABLE;
	ev_update(e);
}

static void
ev_closed_cb(uv_handle_t *h)
{
	mem_free(h->data);
}

static void
ev_cleanup(void *data)
{
	struct shc_ev *e = data;

	e->ac = NULL;
	uv_close((uv_handle_t *)&e->poll, ev_closed_cb);
}

static int
ev_attach(redisAsyncContext *ac, uv_loop_t *loop)
{
	struct shc_ev *e = mem_calloc(1, sizeof(*e));

	if (e == NULL)
		return -1;
	if (uv_poll_init(loop, &e->poll, ac->c.fd) != 0) {
		mem_free(e);
		return -1;
	}
	e->poll.data = e;
	e->ac = ac;
	ac->ev.addRead = ev_add_read;
	ac->ev.delRead = ev_del_read;
	ac->ev.addWrite = ev_add_write;
	ac->ev.delWrite = ev_del_write;
	ac->ev.cleanup = ev_cleanup;
	ac->ev.data = e;
	return 0;
}

/* ---- connection ---- */

/* Detach and free the current context, if any. Its pending replies run
 * now (or right after the hiredis callback we are in) with NULL. */
static void
conn_drop(struct shcache *s)
{
	redisAsyncContext *ac = s->ac;

	uv_timer_stop(&s->conn_timer);
	s->up = 0;
	s->hs_pending = 0;
	if (ac == NULL)
		return;
	s->ac = NULL;
	ac->data = NULL;
	redisAsyncFree(ac);
}

static void
retry_in(struct shcache *s, uint64_t ms)
{
	s->retry_due_ms = uv_now(s->loop) + ms;
	uv_timer_start(&s->retry_timer, retry_timer_cb, ms, 0);
}

static void
breaker_open(struct shcache *s)
{
	uint64_t d;

	if (s->circuit_open) {
		s->backoff_ms *= 2;
		if (s->backoff_ms > SHCACHE_BACKOFF_MAX_MS)
			s->backoff_ms = SHCACHE_BACKOFF_MAX_MS;
	} else {
		s->circuit_open = 1;
		s->breaker_opens++;
	}
	d = jitter(s, s->backoff_ms);
	log_warn("shared cache: circuit open for %" PRIu64 " ms after %u "
	    "failures", d, s->fails);
	conn_drop(s);
	retry_in(s, d);
}

/* One failure of a request on a live connection. */
static void
fail(struct shcache *s)
{
	s->fails++;
	if (s->fails >= SHCACHE_BREAKER_FAILS || s->circuit_open)
		breaker_open(s);
}

/* The connection could not be made, its handshake failed, or it was lost:
 * at once once, then after the back-off; the breaker when it is time. */
static void
conn_failed(struct shcache *s)
{
	conn_drop(s);
	s->fails++;
	if (s->circuit_open || s->fails >= SHCACHE_BREAKER_FAILS) {
		breaker_open(s);
		return;
	}
	if (!s->retried) {
		s->retried = 1;
		retry_in(s, 0);
	} else {
		retry_in(s, jitter(s, s->backoff_ms));
	}
}

/* hiredis is freeing the current context by itself (connection lost):
 * let go of it, so that nothing is sent on it nor frees it again. */
static void
conn_detach(struct shcache *s)
{
	if (s->up)
		log_warn("shared cache: lost the connection to %s", url(s));
	if (s->ac)
		s->ac->data = NULL;
	s->ac = NULL;
	s->up = 0;
}

static void
conn_ready(struct shcache *s)
{
	s->up = 1;
	s->retried = 0;
	/* A completed handshake is a reply in time: the failures of an
	 * outage that is over (the loss, refused retries) do not count
	 * toward the next one's breaker. */
	s->fails = 0;
	if (s->circuit_open) {
		s->circuit_open = 0;
		s->backoff_ms = SHCACHE_BACKOFF_MIN_MS;
		log_info("shared cache: connected to %s, circuit closed",
		    url(s));
	} else {
		log_info("shared cache: connected to %s", url(s));
	}
	if (s->fallback) {
		struct shc_flush *f = s->fallback;

		s->fallback = NULL;
		flush_fallback(s, f);
		flush_unref(s, f);
	}
}

static int
handshake_send(struct shcache *s, enum shc_kind kind, const char *cmd)
{
	struct shc_req *r = req_new(s, kind);
	char db[16];
	const char *argv[2] = { cmd, db };
	size_t len[2] = { strlen(cmd), 0 };

	len[1] = (size_t)snprintf(db, sizeof(db), "%u", s->addr.db);
	if (r == NULL || req_send(s, r, kind == REQ_SELECT ? 2 : 1, argv,
	    len) != 0)
		return -1;
	s->hs_pending++;
	return 0;
}

static void
on_connect(const redisAsyncContext *cac, int status)
{
	redisAsyncContext *ac = (redisAsyncContext *)cac;
	struct shcache *s = ac->data;

	if (s == NULL)
		return;
	uv_timer_stop(&s->conn_timer);
	if (status != REDIS_OK) {
		/* hiredis frees ac when we return. */
		log_debug("shared cache: connecting to %s: %s", url(s),
		    ac->errstr);
		ac->data = NULL;
		s->ac = NULL;
		conn_failed(s);
		return;
	}
	if ((s->addr.db != 0 && handshake_send(s, REQ_SELECT, "SELECT") != 0) ||
	    (s->circuit_open && handshake_send(s, REQ_PING, "PING") != 0)) {
		/* Not here: freeing ac inside its connect callback would pull
		 * it from under hiredis (no REDIS_IN_CALLBACK there). The
		 * connect timer fails it on the next loop turn. */
		uv_timer_start(&s->conn_timer, conn_timer_cb, 0, 0);
		return;
	}
	if (s->hs_pending == 0)
		conn_ready(s);
}

static void
on_disconnect(const redisAsyncContext *cac, int status)
{
	redisAsyncContext *ac = (redisAsyncContext *)cac;
	struct shcache *s = ac->data;

	(void)status;
	if (s == NULL || s->ac != ac)
		return;
	conn_detach(s);
	conn_failed(s);
}

static void
conn_timer_cb(uv_timer_t *t)
{
	struct shcache *s = t->data;

	log_debug("shared cache: connecting to %s: timed out", url(s));
	conn_failed(s);
}

static void
retry_timer_cb(uv_timer_t *t)
{
	conn_start(t->data);
}

static void
conn_start(struct shcache *s)
{
	redisAsyncContext *ac;
	uint64_t t = s->conf->shared_cache_timeout_ms;

	if (s->closing || s->ac != NULL)
		return;
	s->gen++;
	s->connects++;
	if (s->addr.is_unix)
		ac = redisAsyncConnectUnix(s->addr.path);
	else
		ac = redisAsyncConnect(s->addr.host, (int)s->addr.port);
	if (ac == NULL)
		goto fail;
	if (ac->err) {
		log_debug("shared cache: connecting to %s: %s", url(s),
		    ac->errstr);
		redisAsyncFree(ac);
		goto fail;
	}
	if (ev_attach(ac, s->loop) != 0) {
		redisAsyncFree(ac);
		goto fail;
	}
	ac->data = s;
	redisAsyncSetConnectCallback(ac, on_connect);
	redisAsyncSetDisconnectCallback(ac, on_disconnect);
	s->ac = ac;
	uv_timer_start(&s->conn_timer, conn_timer_cb,
	    t > SHC_CONNECT_MIN_MS ? t : SHC_CONNECT_MIN_MS, 0);
	return;
fail:
	conn_failed(s);
}

/* ---- replies ---- */

static int
is_wrongtype(const redisReply *rep)
{
	return rep->type == REDIS_REPLY_ERROR && rep->len >= 9 &&
	    memcmp(rep->str, "WRONGTYPE", 9) == 0;
}

/* A get's string reply: hit, miss or invalid (error). On a hit the answer
 * is in s->buf, aged, and *info describes it. */
static enum shcache_result
get_value(struct shcache *s, struct shc_req *r, const redisReply *rep,
    size_t *len, struct dnsmsg_answer_info *info)
{
	const uint8_t *ans;
	uint64_t fetched, now, age;
	uint32_t lifetime;
	size_t n;

	if (rep->len == 0)
		return SHCACHE_MISS;
	if (shcache_value_decode((const uint8_t *)rep->str, rep->len,
	    &fetched, &lifetime, &ans, &n) != 0)
		goto invalid;
	now = s->wall_ms(s->wall_arg);
	age = now > fetched ? (now - fetched) / 1000 : 0;
	if (age >= lifetime)
		goto invalid;
	memcpy(s->buf, ans, n);
	if (dnsmsg_parse_answer(s->buf, n, &r->q, info) != 0 ||
	    !info->cacheable || info->tc ||
	    info->rcode == DNS_RCODE_SERVFAIL)
		goto invalid;
	dnsmsg_age_ttls(s->buf, n, info->ttl_off, info->n_ttl, (uint32_t)age);
	info->ttl = lifetime - (uint32_t)age;
	dnsmsg_clamp_ttls(s->buf, n, info->ttl_off, info->n_ttl, 0, info->ttl);
	*len = n;
	return SHCACHE_HIT;
invalid:
	s->m->shc_invalid++;
	return SHCACHE_ERROR;
}

static void
get_reply(struct shcache *s, struct shc_req *r, const redisReply *rep)
{
	struct dnsmsg_answer_info info;
	enum shcache_result res = SHCACHE_ERROR;
	size_t len = 0;

	hist_since(s, SHCACHE_OP_GET, r);
	if (rep->type == REDIS_REPLY_ERROR) {
		if (!is_wrongtype(rep))
			s->fails++;
		else
			s->fails = 0;
	} else {
		s->fails = 0;
		if (rep->type == REDIS_REPLY_STRING)
			res = get_value(s, r, rep, &len, &info);
	}
	count(s, SHCACHE_OP_GET, res);
	if (res == SHCACHE_HIT)
		r->cb(r->arg, res, s->buf, len, &info);
	else
		r->cb(r->arg, res, NULL, 0, NULL);
}

static void
set_reply(struct shcache *s, struct shc_req *r, const redisReply *rep)
{
	hist_since(s, SHCACHE_OP_SET, r);
	if (rep->type == REDIS_REPLY_STATUS && rep->len == 2 &&
	    memcmp(rep->str, "OK", 2) == 0) {
		s->fails = 0;
		count(s, SHCACHE_OP_SET, SHCACHE_OK);
		return;
	}
	if (rep->type == REDIS_REPLY_ERROR && !is_wrongtype(rep))
		s->fails++;
	count(s, SHCACHE_OP_SET, SHCACHE_ERROR);
}

static void
handshake_reply(struct shcache *s, struct shc_req *r, const redisReply *rep)
{
	if (r->gen != s->gen || s->ac == NULL)
		return;
	if (rep->type != REDIS_REPLY_STATUS) {
		log_warn("shared cache: %s on %s: %s",
		    r->kind == REQ_PING ? "PING" : "SELECT", url(s),
		    rep->type == REDIS_REPLY_ERROR ? rep->str : "bad reply");
		conn_failed(s);
		return;
	}
	if (--s->hs_pending == 0)
		conn_ready(s);
}

/* The reply of r, or NULL when the context is being freed. */
static void
reply_dispatch(struct shcache *s, struct shc_req *r, const redisReply *rep)
{
	switch (r->kind) {
	case REQ_GET:
		get_reply(s, r, rep);
		break;
	case REQ_SET:
		set_reply(s, r, rep);
		break;
	case REQ_SELECT:
	case REQ_PING:
		handshake_reply(s, r, rep);
		break;
	case REQ_SCAN:
		flush_scan_reply(s, r, rep);
		break;
	case REQ_DEL:
		flush_del_reply(s, r, rep);
		break;
	}
	if (s->fails >= SHCACHE_BREAKER_FAILS && s->ac && !s->closing &&
	    !s->circuit_open)
		breaker_open(s);
}

/* The request's connection went away before its reply: the user learns
 * of it now; the loss itself counts once (conn_lost), not per request. */
static void
req_lost(struct shcache *s, struct shc_req *r)
{
	enum shcache_result res = s->closing ? SHCACHE_SKIPPED : SHCACHE_ERROR;

	switch (r->kind) {
	case REQ_GET:
		count(s, SHCACHE_OP_GET, res);
		r->cb(r->arg, res, NULL, 0, NULL);
		break;
	case REQ_SET:
		count(s, SHCACHE_OP_SET, res);
		break;
	case REQ_SCAN:
	case REQ_DEL:
		flush_lost(s, r, 0);
		break;
	default:
		break;
	}
}

static void
reply_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct shc_req *r = privdata;
	struct shcache *s = r->s;
	const redisReply *rep = reply;

	req_unlink(s, r);
	if (rep == NULL && s->ac == ac && ac != NULL && r->gen == s->gen) {
		/* Our current connection is being freed by hiredis: lost.
		 * Requests answered below may ask again; they must be
		 * skipped, not sent on a dying context. */
		conn_detach(s);
		if (!r->done) {
			r->done = 1;
			req_lost(s, r);
		}
		/* unless the callback closed us or reconnected elsewhere */
		if (!s->closing && s->ac == NULL)
			conn_failed(s);
	} else if (!r->done) {
		r->done = 1;
		if (rep == NULL)
			req_lost(s, r);
		else
			reply_dispatch(s, r, rep);
	}
	req_free(s, r);
	maybe_free(s);
}

/* ---- the request timer ---- */

static void
req_timeout(struct shcache *s, struct shc_req *r)
{
	r->done = 1;
	switch (r->kind) {
	case REQ_GET:
		hist_since(s, SHCACHE_OP_GET, r);
		count(s, SHCACHE_OP_GET, SHCACHE_TIMEOUT);
		r->cb(r->arg, SHCACHE_TIMEOUT, NULL, 0, NULL);
		break;
	case REQ_SET:
		hist_since(s, SHCACHE_OP_SET, r);
		count(s, SHCACHE_OP_SET, SHCACHE_TIMEOUT);
		break;
	case REQ_DEL:
		hist_since(s, SHCACHE_OP_DEL, r);
		count(s, SHCACHE_OP_DEL, SHCACHE_TIMEOUT);
		flush_lost(s, r, 1);
		break;
	case REQ_SCAN:
		flush_lost(s, r, 1);
		break;
	case REQ_SELECT:
	case REQ_PING:
		if (r->gen == s->gen && s->ac) {
			log_warn("shared cache: %s on %s timed out",
			    r->kind == REQ_PING ? "PING" : "SELECT", url(s));
			conn_failed(s);
		}
		return;
	}
	if (!s->closing && s->ac)
		fail(s);
}

static void
req_timer_cb(uv_timer_t *t)
{
	struct shcache *s = t->data;
	struct shc_req *r, *next;
	uint64_t now = uv_now(s->loop), due = 0, epoch;

again:
	due = 0;
	for (r = s->head; r != NULL; r = next) {
		next = r->next;
		if (r->done)
			continue;
		if (r->deadline_ms > now) {
			if (due == 0 || r->deadline_ms < due)
				due = r->deadline_ms;
			continue;
		}
		epoch = s->epoch;
		req_timeout(s, r);
		if (s->closing)
			return;
		if (s->epoch != epoch)
			goto again;
	}
	if (due != 0 && !uv_is_active((uv_handle_t *)&s->req_timer)) {
		s->timer_due_ms = due;
		uv_timer_start(&s->req_timer, req_timer_cb, due - now, 0);
	} else if (due != 0 && due < s->timer_due_ms) {
		s->timer_due_ms = due;
		uv_timer_start(&s->req_timer, req_timer_cb, due - now, 0);
	}
}

/* ---- public: life ---- */

struct shcache *
shcache_new(uv_loop_t *loop, const struct conf *conf, struct metrics *m)
{
	struct shcache *s = mem_calloc(1, sizeof(*s));

	if (s == NULL)
		return NULL;
	s->loop = loop;
	s->conf = conf;
	s->addr = conf->shared_cache;
	s->m = m;
	s->backoff_ms = SHCACHE_BACKOFF_MIN_MS;
	s->prng = uv_hrtime() ^ ((uint64_t)getpid() << 32) ^
	    (uint64_t)(uintptr_t)s;
	if (s->prng == 0)
		s->prng = 0x9E3779B97F4A7C15ULL;
	s->wall_ms = real_wall_ms;
	uv_timer_init(loop, &s->req_timer);
	uv_timer_init(loop, &s->conn_timer);
	uv_timer_init(loop, &s->retry_timer);
	s->req_timer.data = s->conn_timer.data = s->retry_timer.data = s;
	s->open_handles = SHC_N_TIMERS;
	conn_start(s);
	return s;
}

static void
maybe_free(struct shcache *s)
{
	if (s->closing && s->open_handles == 0 && s->head == NULL)
		mem_free(s);
}

static void
timer_closed_cb(uv_handle_t *h)
{
	struct shcache *s = h->data;

	s->open_handles--;
	maybe_free(s);
}

static int
same_addr(const struct conf_redis *a, const struct conf_redis *b)
{
	return a->is_unix == b->is_unix && a->port == b->port &&
	    a->db == b->db && strcmp(a->host, b->host) == 0 &&
	    strcmp(a->path, b->path) == 0;
}

void
shcache_set_conf(struct shcache *s, const struct conf *conf)
{
	s->conf = conf;
	if (same_addr(&s->addr, &conf->shared_cache)) {
		memcpy(s->addr.url, conf->shared_cache.url, sizeof(s->addr.url));
		return;
	}
	/* A new server owes nothing to the old one's failures. */
	s->addr = conf->shared_cache;
	log_info("shared cache: server now %s, reconnecting", url(s));
	conn_drop(s);
	uv_timer_stop(&s->retry_timer);
	s->circuit_open = 0;
	s->fails = 0;
	s->retried = 0;
	s->backoff_ms = SHCACHE_BACKOFF_MIN_MS;
	if (!s->closing)
		conn_start(s);
}

void
shcache_close(struct shcache *s)
{
	struct shc_req *r;
	uint64_t epoch;

	if (s == NULL || s->closing)
		return;
	s->closing = 1;
	s->up = 0;
again:
	for (r = s->head; r != NULL; r = r->next) {
		if (r->done)
			continue;
		r->done = 1;
		epoch = s->epoch;
		req_lost(s, r);
		if (s->epoch != epoch)
			goto again;
	}
	if (s->fallback) {
		flush_unref(s, s->fallback);
		s->fallback = NULL;
	}
	conn_drop(s);
	uv_close((uv_handle_t *)&s->req_timer, timer_closed_cb);
	uv_close((uv_handle_t *)&s->conn_timer, timer_closed_cb);
	uv_close((uv_handle_t *)&s->retry_timer, timer_closed_cb);
}

/* Draining: no client is to wait for the shared cache any more (the
 * listeners are closed and the server waits for the answers in flight):
 * every get still waiting goes upstream now, as a skip, and later gets
 * are skipped; writes go on, so answers fetched meanwhile are shared. */
void
shcache_drain(struct shcache *s)
{
	struct shc_req *r;
	uint64_t epoch;

	if (s == NULL || s->closing || s->draining)
		return;
	s->draining = 1;
again:
	for (r = s->head; r != NULL; r = r->next) {
		if (r->done || r->kind != REQ_GET)
			continue;
		/* The record stays for its late reply, which is ignored. */
		r->done = 1;
		epoch = s->epoch;
		count(s, SHCACHE_OP_GET, SHCACHE_SKIPPED);
		r->cb(r->arg, SHCACHE_SKIPPED, NULL, 0, NULL);
		if (s->closing)
			return;
		if (s->epoch != epoch)
			goto again;
	}
}

/* ---- public: requests ---- */

/* prefix + key into out (SHC_KEY_MAX bytes); its length. */
static size_t
make_key(const struct shcache *s, const uint8_t *key, size_t len,
    char *out)
{
	size_t p = s->conf->shared_cache_prefix_len;

	if (p > CONF_SHC_PREFIX_MAX)
		p = CONF_SHC_PREFIX_MAX;
	if (len > CACHE_KEY_MAX)
		len = CACHE_KEY_MAX;
	memcpy(out, s->conf->shared_cache_prefix, p);
	memcpy(out + p, key, len);
	return p + len;
}

int
shcache_get(struct shcache *s, const struct cache_key *key,
    const struct dnsmsg_question *q, shcache_get_cb cb, void *arg)
{
	char k[SHC_KEY_MAX], end[24];
	const char *argv[4] = { "GETRANGE", k, "0", end };
	size_t len[4] = { 8, 0, 1, 0 };
	struct shc_req *r;

	if (s->closing || s->draining || !s->up)
		goto skip;
	r = req_new(s, REQ_GET);
	if (r == NULL)
		goto skip;
	r->q = *q;
	r->cb = cb;
	r->arg = arg;
	len[1] = make_key(s, key->bytes, key->len, k);
	/* One byte more than any value of ours: a longer one is not ours
	 * (shcache_value_decode), and still costs at most this much. */
	len[3] = (size_t)snprintf(end, sizeof(end), "%d", SHCACHE_VALUE_MAX);
	if (req_send(s, r, 4, argv, len) != 0)
		goto skip;
	return 0;
skip:
	count(s, SHCACHE_OP_GET, SHCACHE_SKIPPED);
	return -1;
}

void
shcache_put(struct shcache *s, const struct cache_key *key,
    const uint8_t *answer, size_t len, uint32_t lifetime_s)
{
	char k[SHC_KEY_MAX], px[24];
	const char *argv[5] = { "SET", k, (const char *)s->vbuf, "PX", px };
	size_t alen[5] = { 3, 0, 0, 2, 0 };
	struct shc_req *r;

	if (lifetime_s == 0 || len > DNS_MAX_MSG)
		return;
	if (s->closing || !s->up)
		goto skip;
	r = req_new(s, REQ_SET);
	if (r == NULL)
		goto skip;
	alen[1] = make_key(s, key->bytes, key->len, k);
	alen[2] = shcache_value_encode(s->vbuf, sizeof(s->vbuf),
	    s->wall_ms(s->wall_arg), lifetime_s, answer, len);
	alen[4] = (size_t)snprintf(px, sizeof(px), "%llu",
	    (unsigned long long)lifetime_s * 1000);
	if (req_send(s, r, 5, argv, alen) != 0)
		goto skip;
	return;
skip:
	count(s, SHCACHE_OP_SET, SHCACHE_SKIPPED);
}

void
shcache_get_state(const struct shcache *s, struct shcache_state *st)
{
	uint64_t now = uv_now(s->loop);

	memset(st, 0, sizeof(*st));
	st->up = s->up;
	st->circuit_open = s->circuit_open;
	st->outstanding = s->n_req;
	st->breaker_opens = s->breaker_opens;
	st->connects = s->connects;
	if (s->circuit_open && uv_is_active((const uv_handle_t *)&s->retry_timer))
		st->retry_in_ms = s->retry_due_ms > now ?
		    s->retry_due_ms - now : 0;
}

/* ---- flush ---- */

/* The cache's flag byte (cache_key_make): DO 1, CD 2, and AD 4 only
 * without DO. */
static const uint8_t flush_flags[] = { 0, 1, 2, 3, 4, 6 };
static const uint16_t flush_types[] = {
	1, 2, 5, 6, 12, 15, 16, 28, 33, 43, 48, 65, 64, 257, 35,
};
#define FLUSH_N_KEYS (sizeof(flush_types) / sizeof(flush_types[0]) * \
    sizeof(flush_flags))

/* Backslash before each byte special to Redis's glob. */
static size_t
glob_escape(char *out, const uint8_t *in, size_t len)
{
	size_t i, n = 0;

	for (i = 0; i < len; i++) {
		if (in[i] == '*' || in[i] == '?' || in[i] == '[' ||
		    in[i] == ']' || in[i] == '\\')
			out[n++] = '\\';
		out[n++] = (char)in[i];
	}
	return n;
}

static void
flush_unref(struct shcache *s, struct shc_flush *f)
{
	(void)s;
	if (--f->refs > 0)
		return;
	if (!f->stopped)
		log_info("shared cache: flush of %s%s deleted %" PRIu64
		    " keys%s", f->name, f->subtree ? " and below" : "",
		    f->deleted, f->fallback_used ? " (only the "
		    "common types: the server has no SCAN)" : "");
	mem_free(f);
}

static int
flush_scan_send(struct shcache *s, struct shc_flush *f, const char *cursor,
    size_t cursor_len)
{
	struct shc_req *r = req_new(s, REQ_SCAN);
	const char *argv[6] = { "SCAN", cursor, "MATCH", f->pattern, "COUNT",
	    "1000" };
	size_t len[6] = { 4, cursor_len, 5, f->pattern_len, 5, 4 };

	if (r == NULL)
		return -1;
	r->flush = f;
	f->refs++;
	return req_send(s, r, 6, argv, len);
}

/* DEL of n keys (argv[1..n]; argv[0] is set here). */
static int
flush_del_send(struct shcache *s, struct shc_flush *f, int n,
    const char **argv, size_t *len)
{
	struct shc_req *r = req_new(s, REQ_DEL);

	if (r == NULL) {
		count(s, SHCACHE_OP_DEL, SHCACHE_SKIPPED);
		return -1;
	}
	argv[0] = "DEL";
	len[0] = 3;
	r->flush = f;
	f->refs++;
	if (req_send(s, r, n + 1, argv, len) != 0) {
		count(s, SHCACHE_OP_DEL, SHCACHE_SKIPPED);
		return -1;
	}
	return 0;
}

static void
flush_stop(struct shc_flush *f, const char *why)
{
	if (f->stopped)
		return;
	f->stopped = 1;
	log_warn("shared cache: flush of %s%s stopped after %" PRIu64
	    " keys: %s", f->name, f->subtree ? " and below" : "", f->deleted,
	    why);
}

/* Without SCAN (twemproxy), the keys of one name can still be named: the
 * common types, class IN, every flag byte the cache makes. */
static void
flush_fallback(struct shcache *s, struct shc_flush *f)
{
	const char **argv = NULL;
	size_t *len = NULL, i, j, n = 0;
	char *keys = NULL;
	struct cache_key key;

	if (!f->exact) {
		flush_stop(f, "the server has no SCAN (twemproxy?), and a "
		    "subtree or everything cannot be deleted without it");
		return;
	}
	if (!s->up) {
		flush_stop(f, "no connection");
		return;
	}
	argv = mem_alloc((FLUSH_N_KEYS + 1) * sizeof(*argv));
	len = mem_alloc((FLUSH_N_KEYS + 1) * sizeof(*len));
	keys = mem_alloc(FLUSH_N_KEYS * SHC_KEY_MAX);
	if (argv == NULL || len == NULL || keys == NULL) {
		flush_stop(f, "out of memory");
		goto out;
	}
	memcpy(key.bytes, f->wire, f->wire_len);
	key.len = f->wire_len + 5;
	for (i = 0; i < sizeof(flush_types) / sizeof(flush_types[0]); i++) {
		for (j = 0; j < sizeof(flush_flags); j++) {
			key.bytes[f->wire_len] = (uint8_t)(flush_types[i] >> 8);
			key.bytes[f->wire_len + 1] = (uint8_t)flush_types[i];
			key.bytes[f->wire_len + 2] = 0;
			key.bytes[f->wire_len + 3] = 1;   /* IN */
			key.bytes[f->wire_len + 4] = flush_flags[j];
			n++;
			argv[n] = keys + (n - 1) * SHC_KEY_MAX;
			len[n] = make_key(s, key.bytes, key.len,
			    keys + (n - 1) * SHC_KEY_MAX);
		}
	}
	f->fallback_used = 1;
	if (flush_del_send(s, f, (int)n, argv, len) != 0)
		flush_stop(f, "could not send DEL");
out:
	mem_free(argv);
	mem_free(len);
	mem_free(keys);
}

static void
flush_scan_reply(struct shcache *s, struct shc_req *r, const redisReply *rep)
{
	struct shc_flush *f = r->flush;
	const redisReply *cur, *keys;
	const char **argv = NULL;
	size_t *len = NULL, i;

	if (rep->type == REDIS_REPLY_ERROR) {
		/* twemproxy answers an error for a command it lacks. */
		s->fails = 0;
		if (!f->stopped && f->scans == 0)
			flush_fallback(s, f);
		else
			flush_stop(f, rep->str);
		return;
	}
	f->scans++;
	if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
	    rep->element[0]->type != REDIS_REPLY_STRING ||
	    rep->element[1]->type != REDIS_REPLY_ARRAY) {
		flush_stop(f, "SCAN's reply is not a SCAN reply");
		return;
	}
	s->fails = 0;
	if (f->stopped)
		return;
	cur = rep->element[0];
	keys = rep->element[1];
	if (keys->elements > 0) {
		argv = mem_alloc((keys->elements + 1) * sizeof(*argv));
		len = mem_alloc((keys->elements + 1) * sizeof(*len));
		if (argv == NULL || len == NULL) {
			flush_stop(f, "out of memory");
			goto out;
		}
		for (i = 0; i < keys->elements; i++) {
			argv[i + 1] = keys->element[i]->str;
			len[i + 1] = keys->element[i]->len;
		}
		if (flush_del_send(s, f, (int)keys->elements, argv, len) != 0) {
			flush_stop(f, "could not send DEL");
			goto out;
		}
	}
	if (cur->len == 1 && cur->str[0] == '0')
		goto out;
	if (flush_scan_send(s, f, cur->str, cur->len) != 0)
		flush_stop(f, "could not send SCAN");
out:
	mem_free(argv);
	mem_free(len);
}

static void
flush_del_reply(struct shcache *s, struct shc_req *r, const redisReply *rep)
{
	hist_since(s, SHCACHE_OP_DEL, r);
	if (rep->type == REDIS_REPLY_INTEGER) {
		s->fails = 0;
		r->flush->deleted += rep->integer > 0 ?
		    (uint64_t)rep->integer : 0;
		count(s, SHCACHE_OP_DEL, SHCACHE_OK);
		return;
	}
	count(s, SHCACHE_OP_DEL, SHCACHE_ERROR);
	flush_stop(r->flush, rep->type == REDIS_REPLY_ERROR ? rep->str :
	    "DEL's reply is not a number");
}

/* r's connection is gone (timeout 0) or r timed out. */
static void
flush_lost(struct shcache *s, struct shc_req *r, int timeout)
{
	struct shc_flush *f = r->flush;

	if (r->kind == REQ_DEL && !timeout)
		count(s, SHCACHE_OP_DEL, s->closing ? SHCACHE_SKIPPED :
		    SHCACHE_ERROR);
	if (timeout) {
		flush_stop(f, "timed out");
		return;
	}
	/* twemproxy closes the connection on a command it lacks: an exact
	 * flush whose first SCAN took the connection down deletes by name
	 * once the connection is back. */
	if (r->kind == REQ_SCAN && f->scans == 0 && f->exact &&
	    !f->stopped && !s->closing && s->fallback == NULL) {
		f->refs++;
		s->fallback = f;
		return;
	}
	if (r->kind == REQ_SCAN && f->scans == 0 && !s->closing)
		flush_stop(f, "the connection closed on SCAN (twemproxy has "
		    "no SCAN: a subtree or everything cannot be flushed "
		    "through it)");
	else
		flush_stop(f, s->closing ? "closing" : "connection lost");
}

int
shcache_flush(struct shcache *s, const uint8_t *name_wire, size_t name_len,
    int subtree)
{
	struct shc_flush *f;
	struct dnsmsg_question q;
	size_t n;

	if (s->closing || !s->up)
		return -1;
	if (name_wire != NULL && (name_len == 0 ||
	    name_len > DNS_MAX_NAME_WIRE))
		return -1;
	f = mem_calloc(1, sizeof(*f));
	if (f == NULL)
		return -1;
	n = glob_escape(f->pattern, (const uint8_t *)s->conf->shared_cache_prefix,
	    s->conf->shared_cache_prefix_len);
	if (name_wire == NULL) {
		snprintf(f->name, sizeof(f->name), "everything");
		f->pattern[n++] = '*';
	} else {
		memcpy(q.wire, name_wire, name_len);
		q.wire_len = name_len;
		dnsmsg_name_str(&q, f->name, sizeof(f->name));
		if (subtree) {
			/* '*' also matches nothing: the name itself too. */
			f->pattern[n++] = '*';
			f->subtree = 1;
		} else {
			f->exact = 1;
		}
		n += glob_escape(f->pattern + n, name_wire, name_len);
		memcpy(f->pattern + n, "?????", 5);   /* type, class, flags */
		n += 5;
		memcpy(f->wire, name_wire, name_len);
		f->wire_len = name_len;
	}
	f->pattern_len = n;
	f->refs = 1;   /* ours, until the first SCAN is sent */
	if (flush_scan_send(s, f, "0", 1) != 0) {
		f->stopped = 1;
		flush_unref(s, f);
		return -1;
	}
	flush_unref(s, f);
	return 0;
}
