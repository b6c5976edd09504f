/* upstream.c: the DNS-over-TLS client pool (pipelining, ID remap, timeouts,
 * failover, backoff).
 *
 * A pool holds one struct upstream per configured upstream, each with at
 * most one connection (struct uconn) at a time. A request (struct
 * upstream_req) owns a copy of the query already framed with its 2-byte
 * length, so it is written as is and can be re-sent on another connection
 * after patching in a new ID.
 *
 * Every request between upstream_query() and its callback (or cancel) is on
 * the pool's deadline list. Deadlines are uv_now() + query_timeout_ms taken
 * at upstream_query() time, so append order is deadline order and the list
 * is a FIFO whose head is the next to expire; one pool timer serves it.
 * Besides that, a request is on exactly one secondary list, named by its
 * state: a connection's wait list (REQ_QUEUED: connection still
 * handshaking, or too many in flight), a connection's in-flight list
 * (REQ_INFLIGHT: written, its ID's slot points at it), or a failed list
 * (REQ_FAILING: its callback is due with fail_status).
 *
 * IDs: each connection has a 65536-slot table ID -> request. IDs are drawn
 * from gnutls_rnd() and must be free on that connection. A request that
 * times out or is cancelled while in flight leaves a tombstone in its slot,
 * so that a late answer is recognised and dropped silently, and the ID is
 * not reused on that connection (it cannot be given to a new query whose
 * answer the late one would impersonate). Tombstones go with the
 * connection.
 *
 * Callbacks: upstream_query() never calls a callback; a request that cannot
 * be dispatched goes to the pool's failed list, which a zero-delay timer
 * flushes on the next loop turn. Inside a libuv/TLS callback the failed
 * list is flushed before returning. User callbacks may re-enter the pool
 * (upstream_query, upstream_cancel, upstream_pool_close), so the code
 * finishes its bookkeeping before each user callback, pops lists from
 * their head instead of holding iterators, and re-checks p->closing and the
 * connection's state after each one. Pool and connection memory is only
 * freed from libuv close callbacks, i.e. never under a running callback.
 *
 * Failover and backoff: a request goes to the first upstream (config order)
 * it has not failed on and that is not backing off. A failed connect,
 * handshake or verification puts the upstream in backoff (500 ms doubling
 * to 10 s per consecutive failure; the count is reset by the first answer
 * on a connection, not by the handshake alone) and moves the connection's
 * queued requests to the next upstream. When the backoff has expired, the next
 * query tries again, which is how a recovered upstream comes back. A
 * connection that ends with requests in flight has them re-sent once
 * (same upstream allowed); if it ends without having delivered a single
 * answer to what was written, it also counts as a failure for backoff, so a
 * server that accepts and closes does not cause a reconnect storm.
 *
 * Idle: activity only stamps uc->last_active; the idle timer, armed once
 * per connection, re-arms itself for the remainder and closes the
 * connection when nothing is in flight or waiting (tombstones do not
 * count) for idle_timeout_ms. A connection takes about 600 KiB (ID table
 * and a 64 KiB reassembly buffer), at most one per upstream.
 *
 * Besides -ENOMEM, upstream_query returns -EINVAL for a message shorter
 * than a header or longer than 65535, and -ECANCELED once the pool is
 * closing (a callback during upstream_pool_close may try).
 *
 * Limits not handled here yet: write backpressure (queries are small and
 * tls.c queues; tls_conn_write_queue_size is not consulted), and half-open
 * connection detection (a connection that stops answering only produces
 * timeouts until it idles out).
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "log.h"
#include "mem.h"
#include "upstream.h"

#define BACKOFF_MIN_MS 500
#define BACKOFF_MAX_MS 10000
/* In-flight IDs (tombstones included) per connection; more requests wait
 * on the connection. Half the ID space keeps random probing short. */
#define MAX_SLOTS 32768
#define N_IDS 65536
#define RND_N 256

struct link {
	struct link *prev, *next;
};

#define container_of(ptr, type, member) \
	((type *)(void *)((char *)(ptr) - offsetof(type, member)))

static void
list_init(struct link *h)
{
	h->prev = h->next = h;
}

static int
list_empty(const struct link *h)
{
	return h->next == h;
}

static void
list_append(struct link *h, struct link *n)
{
	n->prev = h->prev;
	n->next = h;
	h->prev->next = n;
	h->prev = n;
}

static void
list_remove(struct link *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->prev = n->next = n;
}

/* Move every element of from to the end of to; from ends empty. */
static void
list_move_all(struct link *from, struct link *to)
{
	if (list_empty(from))
		return;
	from->next->prev = to->prev;
	to->prev->next = from->next;
	from->prev->next = to;
	to->prev = from->prev;
	list_init(from);
}

enum req_state {
	REQ_IDLE = 0,   /* on no secondary list (only while being moved) */
	REQ_QUEUED,
	REQ_INFLIGHT,
	REQ_FAILING,
};

struct upstream_req {
	struct upstream_pool *pool;
	struct link dlink;          /* pool's deadline list */
	struct link clink;          /* wait, in-flight or failed list */
	enum req_state state;
	struct uconn *conn;         /* QUEUED, INFLIGHT */
	uint16_t id;                /* INFLIGHT */
	int fail_status;            /* FAILING */
	uint32_t tried;             /* bit i: failed to connect to upstream i */
	int resent;
	uint64_t deadline;
	struct dnsmsg_question q;
	upstream_cb cb;
	void *arg;
	size_t frame_len;           /* 2 + message length */
	uint8_t frame[];            /* length prefix, then the query */
};

/* Slot value of a timed-out or cancelled in-flight request. */
static struct upstream_req tombstone;

enum uconn_state {
	UC_CONNECTING,
	UC_READY,
	UC_CLOSED,
};

struct uconn {
	struct upstream_pool *pool;
	struct upstream *up;
	struct tls_conn *tls;       /* NULL once gone (closed by us or tls.c) */
	enum uconn_state state;
	uv_timer_t idle;
	uint64_t last_active;
	struct link wait;
	struct link inflight;
	size_t n_wait;
	size_t n_live;              /* requests in flight (no tombstones) */
	size_t n_slots;             /* used slots, tombstones included */
	uint64_t n_written;
	uint64_t n_answers;
	size_t rlen;                /* bytes in rbuf */
	uint8_t rbuf[2 + DNS_MAX_MSG];
	struct upstream_req *slot[N_IDS];
};

struct upstream {
	const struct conf_upstream *cu;
	unsigned index;
	char label[64 + 256 + 8];   /* "addr@port (name)" for the log */
	unsigned fail_count;
	uint64_t retry_at;
	struct uconn *conn;
};

struct upstream_pool {
	uv_loop_t *loop;
	const struct conf *conf;
	struct tls_ctx *tls;
	struct metrics *m;
	struct upstream *ups;
	size_t n_ups;
	struct link reqs;           /* deadline order */
	struct link failed;
	uv_timer_t deadline_timer;
	uv_timer_t fail_timer;
	unsigned n_handles;         /* open uv handles; freed at 0 when closing */
	int closing;
	uint16_t rnd[RND_N];
	size_t rnd_pos;
};

static void uconn_connected_cb(void *arg, int status, const char *why);
static void uconn_read_cb(void *arg, const uint8_t *data, size_t len);
static void uconn_closed_cb(void *arg, int status, const char *why);

static const struct tls_conn_cbs uconn_cbs = {
	.connected_cb = uconn_connected_cb,
	.read_cb = uconn_read_cb,
	.closed_cb = uconn_closed_cb,
};

static uint16_t
pool_rnd16(struct upstream_pool *p)
{
	if (p->rnd_pos >= RND_N) {
		if (gnutls_rnd(GNUTLS_RND_NONCE, p->rnd, sizeof(p->rnd)) < 0)
			fatal("gnutls_rnd failed: no randomness for query IDs");
		p->rnd_pos = 0;
	}
	return p->rnd[p->rnd_pos++];
}

/* One of the pool's handles has closed; the last one frees the pool. */
static void
pool_release(struct upstream_pool *p)
{
	if (--p->n_handles == 0 && p->closing) {
		mem_free(p->ups);
		mem_free(p);
	}
}

static void
pool_handle_close_cb(uv_handle_t *h)
{
	pool_release(h->data);
}

/* Take r off its secondary list. An in-flight request leaves a tombstone
 * in its slot when tomb is set (it may still be answered), else frees the
 * slot (the answer is here, or the connection goes away). */
static void
req_unlink(struct upstream_req *r, int tomb)
{
	struct uconn *uc = r->conn;

	switch (r->state) {
	case REQ_QUEUED:
		uc->n_wait--;
		break;
	case REQ_INFLIGHT:
		uc->n_live--;
		if (tomb) {
			uc->slot[r->id] = &tombstone;
		} else {
			uc->slot[r->id] = NULL;
			uc->n_slots--;
		}
		break;
	case REQ_FAILING:
	case REQ_IDLE:
		break;
	}
	list_remove(&r->clink);
	r->state = REQ_IDLE;
	r->conn = NULL;
}

/* Complete r: all bookkeeping, free it, then the user's callback, which
 * may re-enter the pool. */
static void
req_finish(struct upstream_req *r, int status, const uint8_t *ans, size_t len,
    const struct dnsmsg_answer_info *info, int tomb)
{
	upstream_cb cb = r->cb;
	void *arg = r->arg;

	req_unlink(r, tomb);
	list_remove(&r->dlink);
	mem_free(r);
	cb(arg, status, ans, len, info);
}

/* Queue r's callback with status for the next flush. */
static void
req_fail(struct upstream_req *r, int status)
{
	struct upstream_pool *p = r->pool;

	req_unlink(r, 0);
	r->state = REQ_FAILING;
	r->fail_status = status;
	list_append(&p->failed, &r->clink);
}

/* Call the callbacks of the requests that failed so far. Only from a
 * callback (never from upstream_query). Requests failed by the callbacks
 * themselves wait for the next flush, so this cannot loop forever. */
static void
pool_flush_failed(struct upstream_pool *p)
{
	struct link batch;
	struct upstream_req *r;

	list_init(&batch);
	list_move_all(&p->failed, &batch);
	/* A callback may cancel a request in batch (list_remove works on any
	 * list) or close the pool, which completes every request. */
	while (!p->closing && !list_empty(&batch)) {
		r = container_of(batch.next, struct upstream_req, clink);
		req_finish(r, r->fail_status, NULL, 0, NULL, 0);
	}
}

static void
pool_fail_timer_cb(uv_timer_t *t)
{
	pool_flush_failed(t->data);
}

static void
pool_arm_fail_timer(struct upstream_pool *p)
{
	if (!uv_is_active((uv_handle_t *)&p->fail_timer))
		uv_timer_start(&p->fail_timer, pool_fail_timer_cb, 0, 0);
}

static void
upstream_backoff(struct upstream *up, uint64_t now, const char *why)
{
	unsigned ms = BACKOFF_MIN_MS;
	unsigned i;

	up->fail_count++;
	for (i = 1; i < up->fail_count && ms < BACKOFF_MAX_MS; i++)
		ms *= 2;
	if (ms > BACKOFF_MAX_MS)
		ms = BACKOFF_MAX_MS;
	up->retry_at = now + ms;
	log_warn("upstream %s: %s (failure %u, retry in %u ms)", up->label,
	    why != NULL ? why : "failed", up->fail_count, ms);
}

static void
uconn_free_cb(uv_handle_t *h)
{
	struct uconn *uc = h->data;
	struct upstream_pool *p = uc->pool;

	mem_free(uc);
	pool_release(p);
}

/* Close uc now: no more TLS callbacks; memory goes in the timer's close
 * callback. The caller has moved uc's live requests elsewhere; tombstones
 * go with it. */
static void
uconn_close(struct uconn *uc)
{
	if (uc->state == UC_CLOSED)
		return;
	uc->state = UC_CLOSED;
	if (uc->up->conn == uc)
		uc->up->conn = NULL;
	if (uc->tls != NULL) {
		tls_conn_close(uc->tls);
		uc->tls = NULL;
	}
	uv_close((uv_handle_t *)&uc->idle, uconn_free_cb);
}

static uint16_t
uconn_pick_id(struct uconn *uc)
{
	uint16_t id = 0;
	int i;

	/* n_slots < MAX_SLOTS <= half the space: a few draws find a free ID
	 * almost surely; the scan only bounds the worst case. */
	for (i = 0; i < 16; i++) {
		id = pool_rnd16(uc->pool);
		if (uc->slot[id] == NULL)
			return id;
	}
	while (uc->slot[id] != NULL)
		id++;
	return id;
}

/* Write r on the ready connection uc. A write error is followed by
 * closed_cb (tls.h), which re-sends r, so it is only logged here. */
static void
uconn_send(struct uconn *uc, struct upstream_req *r)
{
	struct upstream_pool *p = uc->pool;
	uint16_t id = uconn_pick_id(uc);
	int rc;

	uc->slot[id] = r;
	uc->n_slots++;
	uc->n_live++;
	r->id = id;
	r->conn = uc;
	r->state = REQ_INFLIGHT;
	list_append(&uc->inflight, &r->clink);
	dnsmsg_set_id(r->frame + 2, id);
	p->m->upstream_queries++;
	uc->n_written++;
	uc->last_active = uv_now(p->loop);
	rc = tls_conn_write(uc->tls, r->frame, r->frame_len);
	if (rc < 0)
		log_debug("upstream %s: write failed (%d)", uc->up->label, rc);
}

/* Write waiting requests while there is ID room. */
static void
uconn_pump(struct uconn *uc)
{
	struct upstream_req *r;

	while (uc->state == UC_READY && !list_empty(&uc->wait) &&
	    uc->n_slots < MAX_SLOTS) {
		r = container_of(uc->wait.next, struct upstream_req, clink);
		req_unlink(r, 0);
		uconn_send(uc, r);
	}
}

static void
uconn_submit(struct uconn *uc, struct upstream_req *r)
{
	if (uc->state == UC_READY && uc->n_slots < MAX_SLOTS &&
	    list_empty(&uc->wait)) {
		uconn_send(uc, r);
		return;
	}
	r->conn = uc;
	r->state = REQ_QUEUED;
	uc->n_wait++;
	list_append(&uc->wait, &r->clink);
}

static void
uconn_idle_cb(uv_timer_t *t)
{
	struct uconn *uc = t->data;
	struct upstream_pool *p = uc->pool;
	uint64_t idle_ms = p->conf->idle_timeout_ms;
	uint64_t now = uv_now(p->loop);
	uint64_t quiet = now - uc->last_active;

	/* Activity only stamps last_active (cheaper than re-arming per
	 * query); the timer settles the difference when it fires. */
	if (uc->n_live > 0 || uc->n_wait > 0) {
		uv_timer_start(&uc->idle, uconn_idle_cb, idle_ms, 0);
		return;
	}
	if (quiet < idle_ms) {
		uv_timer_start(&uc->idle, uconn_idle_cb, idle_ms - quiet, 0);
		return;
	}
	log_info("upstream %s: idle for %llu ms, closing", uc->up->label,
	    (unsigned long long)quiet);
	p->m->tls_closed++;
	uconn_close(uc);
}

static int
uconn_new(struct upstream_pool *p, struct upstream *up)
{
	struct uconn *uc;
	int rc;

	uc = mem_calloc(1, sizeof(*uc));
	if (uc == NULL)
		return -ENOMEM;
	uc->pool = p;
	uc->up = up;
	uc->state = UC_CONNECTING;
	list_init(&uc->wait);
	list_init(&uc->inflight);
	rc = tls_conn_new(p->loop, p->tls,
	    (const struct sockaddr *)&up->cu->addr.ss, up->cu->auth_name,
	    p->conf->connect_timeout_ms, &uconn_cbs, uc, &uc->tls);
	if (rc != 0) {
		mem_free(uc);
		return rc;
	}
	uv_timer_init(p->loop, &uc->idle);
	uc->idle.data = uc;
	p->n_handles++;
	up->conn = uc;
	p->m->tls_connects++;
	log_debug("upstream %s: connecting", up->label);
	return 0;
}

/* Give r to the first usable upstream. Returns 0, or -1 when there is none
 * (the caller fails r). Calls no user callback. */
static int
req_dispatch(struct upstream_pool *p, struct upstream_req *r, uint64_t now)
{
	struct upstream *up;
	size_t i;
	int rc;

	for (i = 0; i < p->n_ups; i++) {
		up = &p->ups[i];
		if (r->tried & (1u << i))
			continue;
		if (up->conn == NULL) {
			if (up->retry_at > now)
				continue;
			rc = uconn_new(p, up);
			if (rc == -ENOMEM || rc == TLS_E_NOMEM) {
				/* Not the upstream's fault: no backoff. */
				log_warn("upstream %s: out of memory",
				    up->label);
				continue;
			}
			if (rc != 0) {
				p->m->tls_handshake_failures++;
				upstream_backoff(up, now,
				    "cannot start connection");
				continue;
			}
		}
		uconn_submit(up->conn, r);
		return 0;
	}
	return -1;
}

/* Re-dispatch the requests in l (taken off a connection that is gone).
 * In-flight ones count their one resend; failures go to the failed list. */
static void
reqs_redispatch(struct upstream_pool *p, struct link *l, uint32_t tried,
    uint64_t now)
{
	struct upstream_req *r;
	int was_inflight;

	while (!list_empty(l)) {
		r = container_of(l->next, struct upstream_req, clink);
		was_inflight = r->state == REQ_INFLIGHT;
		/* The connection is being dropped: neither slots nor counts
		 * need maintaining, only r's own links. */
		list_remove(&r->clink);
		r->state = REQ_IDLE;
		r->conn = NULL;
		r->tried |= tried;
		if (was_inflight) {
			if (r->resent) {
				req_fail(r, UPSTREAM_ELOST);
				continue;
			}
			r->resent = 1;
			p->m->upstream_resent++;
		}
		if (req_dispatch(p, r, now) != 0)
			req_fail(r, UPSTREAM_EUNREACH);
	}
}

static void
uconn_connected_cb(void *arg, int status, const char *why)
{
	struct uconn *uc = arg;
	struct upstream_pool *p = uc->pool;
	struct upstream *up = uc->up;
	uint64_t now = uv_now(p->loop);
	struct link moved;
	char desc[128];

	if (status == 0) {
		/* fail_count is reset by the first answer, not here: a
		 * server that verifies and then closes keeps failing and
		 * its backoff keeps growing. */
		uc->state = UC_READY;
		up->retry_at = 0;
		p->m->tls_handshakes++;
		log_info("upstream %s: connected, %s", up->label,
		    tls_conn_describe(uc->tls, desc, sizeof(desc)));
		uc->last_active = now;
		uv_timer_start(&uc->idle, uconn_idle_cb,
		    p->conf->idle_timeout_ms, 0);
		uconn_pump(uc);
		return;
	}
	uc->tls = NULL; /* tls.c has freed it */
	p->m->tls_handshake_failures++;
	if (status == TLS_E_VERIFY)
		p->m->tls_verify_failures++;
	upstream_backoff(up, now, why);
	list_init(&moved);
	list_move_all(&uc->wait, &moved);
	uc->n_wait = 0;
	uconn_close(uc);
	reqs_redispatch(p, &moved, 1u << up->index, now);
	pool_flush_failed(p);
}

/* The established connection uc ended (tls already gone or not): move its
 * requests on, close it. */
static void
uconn_lost(struct uconn *uc, const char *why)
{
	struct upstream_pool *p = uc->pool;
	struct upstream *up = uc->up;
	uint64_t now = uv_now(p->loop);
	struct link moved;

	p->m->tls_closed++;
	if (uc->n_answers == 0 && uc->n_written > 0)
		upstream_backoff(up, now, why);
	else if (uc->n_live > 0 || uc->n_wait > 0)
		log_warn("upstream %s: connection lost with %zu in flight: %s",
		    up->label, uc->n_live, why);
	else
		log_info("upstream %s: connection closed: %s", up->label, why);
	list_init(&moved);
	list_move_all(&uc->inflight, &moved);
	list_move_all(&uc->wait, &moved);
	uc->n_wait = uc->n_live = 0;
	uconn_close(uc);
	reqs_redispatch(p, &moved, 0, now);
}

static void
uconn_closed_cb(void *arg, int status, const char *why)
{
	struct uconn *uc = arg;
	struct upstream_pool *p = uc->pool;

	(void)status;
	uc->tls = NULL; /* tls.c frees it after this callback */
	uconn_lost(uc, why != NULL ? why : "closed");
	pool_flush_failed(p);
}

/* One framed message from the upstream. */
static void
uconn_frame(struct uconn *uc, const uint8_t *msg, size_t len)
{
	struct upstream_pool *p = uc->pool;
	struct dnsmsg_answer_info info;
	struct upstream_req *r;
	uint16_t id;
	int rc;

	if (len < DNS_HDR_LEN) {
		p->m->upstream_malformed++;
		uconn_lost(uc, "malformed frame (shorter than a header)");
		return;
	}
	id = dnsmsg_get_id(msg);
	r = uc->slot[id];
	if (r == NULL) {
		p->m->upstream_mismatch++;
		log_debug("upstream %s: answer with unknown ID %u dropped",
		    uc->up->label, id);
		return;
	}
	uc->last_active = uv_now(p->loop);
	if (r == &tombstone) {
		/* The late answer of a timed-out or cancelled query. */
		log_debug("upstream %s: late answer for ID %u dropped",
		    uc->up->label, id);
		uc->slot[id] = NULL;
		uc->n_slots--;
		uconn_pump(uc);
		return;
	}
	rc = dnsmsg_parse_answer(msg, len, &r->q, &info);
	if (rc == DNSMSG_EMISMATCH) {
		/* RFC 5452: not the answer to what was asked; keep waiting. */
		p->m->upstream_mismatch++;
		log_debug("upstream %s: answer for ID %u with another question "
		    "dropped", uc->up->label, id);
		return;
	}
	if (uc->n_answers++ == 0)
		uc->up->fail_count = 0;
	req_unlink(r, 0);
	uconn_pump(uc);
	if (rc != 0) {
		p->m->upstream_malformed++;
		log_debug("upstream %s: malformed answer for ID %u",
		    uc->up->label, id);
		req_finish(r, UPSTREAM_EBADANSWER, NULL, 0, NULL, 0);
		return;
	}
	p->m->upstream_answers++;
	req_finish(r, 0, msg, len, &info, 0);
}

static void
uconn_read_cb(void *arg, const uint8_t *data, size_t len)
{
	struct uconn *uc = arg;
	struct upstream_pool *p = uc->pool;
	size_t flen, take;

	/* uconn_frame may close uc (malformed frame, or a user callback
	 * closing the pool): uc stays allocated until the loop runs its
	 * close callback, so its state can be checked here. */
	while (len > 0 && uc->state == UC_READY) {
		if (uc->rlen < 2) {
			uc->rbuf[uc->rlen++] = *data++;
			len--;
			continue;
		}
		flen = (size_t)uc->rbuf[0] << 8 | uc->rbuf[1];
		if (uc->rlen == 2 && len >= flen) {
			/* A whole frame in this chunk: no copy. */
			uc->rlen = 0;
			uconn_frame(uc, data, flen);
			data += flen;
			len -= flen;
			continue;
		}
		take = flen + 2 - uc->rlen;
		if (take > len)
			take = len;
		memcpy(uc->rbuf + uc->rlen, data, take);
		uc->rlen += take;
		data += take;
		len -= take;
		if (uc->rlen == flen + 2) {
			uc->rlen = 0;
			uconn_frame(uc, uc->rbuf + 2, flen);
		}
	}
	pool_flush_failed(p);
}

static void
pool_deadline_cb(uv_timer_t *t)
{
	struct upstream_pool *p = t->data;
	uint64_t now = uv_now(p->loop);
	struct upstream_req *r;

	while (!p->closing && !list_empty(&p->reqs)) {
		r = container_of(p->reqs.next, struct upstream_req, dlink);
		if (r->deadline > now) {
			uv_timer_start(&p->deadline_timer, pool_deadline_cb,
			    r->deadline - now, 0);
			break;
		}
		p->m->upstream_timeouts++;
		req_finish(r, UPSTREAM_ETIMEDOUT, NULL, 0, NULL, 1);
	}
	pool_flush_failed(p);
}

struct upstream_pool *
upstream_pool_new(uv_loop_t *loop, const struct conf *conf,
    struct tls_ctx *tls, struct metrics *m)
{
	struct upstream_pool *p;
	struct upstream *up;
	char addr[64];
	size_t i;

	p = mem_calloc(1, sizeof(*p));
	if (p == NULL)
		goto fail;
	p->ups = mem_calloc(conf->n_upstream, sizeof(*p->ups));
	if (p->ups == NULL)
		goto fail;
	p->loop = loop;
	p->conf = conf;
	p->tls = tls;
	p->m = m;
	p->n_ups = conf->n_upstream;
	if (p->n_ups > CONF_MAX_UPSTREAM)
		p->n_ups = CONF_MAX_UPSTREAM;
	for (i = 0; i < p->n_ups; i++) {
		up = &p->ups[i];
		up->cu = &conf->upstream[i];
		up->index = i;
		conf_addr_str(&up->cu->addr, addr, sizeof(addr));
		snprintf(up->label, sizeof(up->label), "%s (%s)", addr,
		    up->cu->auth_name);
	}
	list_init(&p->reqs);
	list_init(&p->failed);
	p->rnd_pos = RND_N;
	uv_timer_init(loop, &p->deadline_timer);
	p->deadline_timer.data = p;
	uv_timer_init(loop, &p->fail_timer);
	p->fail_timer.data = p;
	p->n_handles = 2;
	return p;

fail:
	if (p != NULL)
		mem_free(p->ups);
	mem_free(p);
	return NULL;
}

int
upstream_query(struct upstream_pool *p, const uint8_t *query, size_t len,
    const struct dnsmsg_question *q, upstream_cb cb, void *arg,
    struct upstream_req **reqp)
{
	struct upstream_req *r;
	uint64_t now;

	if (p->closing)
		return -ECANCELED;
	if (len < DNS_HDR_LEN || len > DNS_MAX_MSG)
		return -EINVAL;
	r = mem_alloc(sizeof(*r) + 2 + len);
	if (r == NULL)
		return -ENOMEM;
	memset(r, 0, sizeof(*r));
	now = uv_now(p->loop);
	r->pool = p;
	r->q = *q;
	r->cb = cb;
	r->arg = arg;
	r->deadline = now + p->conf->query_timeout_ms;
	r->frame_len = 2 + len;
	r->frame[0] = (uint8_t)(len >> 8);
	r->frame[1] = (uint8_t)len;
	memcpy(r->frame + 2, query, len);
	list_init(&r->clink);
	list_append(&p->reqs, &r->dlink);
	if (!uv_is_active((uv_handle_t *)&p->deadline_timer))
		uv_timer_start(&p->deadline_timer, pool_deadline_cb,
		    p->conf->query_timeout_ms, 0);
	if (req_dispatch(p, r, now) != 0) {
		/* libuv's rule: the callback comes later, not from here. */
		req_fail(r, UPSTREAM_EUNREACH);
		pool_arm_fail_timer(p);
	}
	if (reqp != NULL)
		*reqp = r;
	return 0;
}

void
upstream_cancel(struct upstream_req *r)
{
	if (r == NULL)
		return;
	req_unlink(r, 1);
	list_remove(&r->dlink);
	mem_free(r);
}

void
upstream_pool_close(struct upstream_pool *p)
{
	struct upstream_req *r;
	struct uconn *uc;
	size_t i;

	if (p == NULL || p->closing)
		return;
	p->closing = 1;
	/* Callbacks may cancel other requests: always take the head. */
	while (!list_empty(&p->reqs)) {
		r = container_of(p->reqs.next, struct upstream_req, dlink);
		req_finish(r, UPSTREAM_ECLOSED, NULL, 0, NULL, 0);
	}
	for (i = 0; i < p->n_ups; i++) {
		uc = p->ups[i].conn;
		if (uc == NULL)
			continue;
		if (uc->state == UC_READY)
			p->m->tls_closed++;
		uconn_close(uc);
	}
	uv_close((uv_handle_t *)&p->deadline_timer, pool_handle_close_cb);
	uv_close((uv_handle_t *)&p->fail_timer, pool_handle_close_cb);
}
