/* upstream.c: the DNS-over-TLS connections of the upstream pool
 * (pipelining, ID remap, framing, answer matching, timeouts, liveness,
 * reconfiguration). Which upstream a request goes to, and the health
 * and status that decide it, are upselect.c's; the structs both files
 * use are in upstream_int.h, which says how they hang together.
 *
 * Every request between upstream_query() and its callback (or cancel) is on
 * the pool's deadline list. Deadlines are uv_now() + query_timeout_ms taken
 * at upstream_query() time, so append order is deadline order and the list
 * is a FIFO whose head is the next to expire; one pool timer serves it.
 * (After a reconfigure shortened query_timeout_ms, a new request is
 * inserted before the longer deadlines still pending, which keeps the
 * order.)
 * Besides that, a request is on exactly one secondary list, named by its
 * state: a connection's wait list (REQ_QUEUED: connection still
 * handshaking, or too many in flight), a connection's in-flight list
 * (REQ_INFLIGHT: written, its ID's slot points at it), the failed list
 * (REQ_FAILING: its callback is due with fail_status), or the held list
 * (REQ_HELD: waiting for a probe slot, see upselect.c). A written request
 * is also on the pool's written list until it is answered or has been
 * checked once for the answer timeout: written in loop-time order, so it
 * too is a FIFO served by one timer.
 *
 * IDs: each connection has a 65536-slot table ID -> request. IDs are drawn
 * from gnutls_rnd() and must be free on that connection. A request that
 * times out, is moved away or is cancelled while in flight leaves a
 * tombstone in its slot, so that a late answer is recognised and dropped
 * silently, and the ID is not reused on that connection (it cannot be given
 * to a new query whose answer the late one would impersonate). A tombstone
 * is released after a grace period of query_timeout_ms (by two bitmaps of
 * age, swapped every grace period: it lives one to two of them), so that
 * an upstream that drops queries cannot use up the ID space; an answer
 * later than that is an unknown ID. Tombstones left go with the
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
 * Failover: a connect failure moves the connection's queued requests to
 * the next usable upstream (upselect.c marks the upstream down). A
 * connection that ends with requests in flight has them re-sent once
 * (same upstream allowed).
 *
 * Answer timeout: when the written list's head has waited answer_timeout_ms
 * unanswered, it moves to another usable upstream if there is one (its ID
 * is tombstoned), else it stays until its deadline: a slow answer that
 * comes before the deadline still reaches the client.
 *
 * Probe: if, besides, nothing at all has been answered on its connection
 * since it was written, the connection may be dead (half-open: a NAT or
 * firewall dropped it) or its stream out of step, or the server merely
 * slow. Any bytes do not tell (a desynchronised stream delivers bytes), a
 * matched answer does: the pool sends a probe of its own on the
 * connection, ". NS" built like every query, in an ID slot of its own
 * (at most one per connection; the pool's probe timer and list serve the
 * deadlines). An answer with its ID and question proves it alive. With no
 * answer within answer_timeout_ms / 3 (200 ms to 1 s; 500 ms by default,
 * so a gone connection is found in about 2 s) the connection is presumed
 * dead: it is closed, counts as a failure, and its in-flight requests are
 * re-sent once, to another usable upstream or else on a new connection to
 * the same one (the classic cause is a dropped idle connection, and a
 * reconnect cures it).
 *
 * Broken: frames that match nothing (an unknown ID, another question, a
 * malformed answer) count up per connection, and a good answer resets the
 * count; JUNK_MAX in a row and the connection is treated as dead, like an
 * unanswered probe. A frame shorter than a header closes it at once.
 *
 * Unanswered: requests that time out (or move away) on a connection count
 * up, and an answer resets the count; UNANSWERED_MAX in a row with no
 * answer for a whole query_timeout_ms retire the connection (no new
 * queries, what is in flight finishes; the next query opens a new one)
 * without marking the upstream down. An upstream that answers a share of
 * the queries, as a rate limit does, keeps its connection.
 *
 * Lifetime: a ready connection older than max_conn_lifetime_ms takes no new
 * queries; the next one opens a fresh connection, and the old one closes
 * as soon as nothing is in flight on it. The session data of the latest
 * connection (tls_conn_get_session, tried on each answer until it yields)
 * is kept per upstream for the next handshake, but it is offered only
 * within max_conn_lifetime_ms of the upstream's last full (not resumed)
 * handshake, full_verify_at: a resumed handshake shows no certificate, so
 * without this a server whose certificate was replaced by a wrong one
 * would be resumed into forever. The renewal at the end of a lifetime is
 * therefore always a full handshake (the connection was made at or after
 * the last full verification), with name, chain and pins checked again;
 * reconnects within the lifetime (idle close, loss) still resume.
 *
 * Idle: activity only stamps uc->last_active; the idle timer is (re)armed
 * when a connection becomes idle and closes it when nothing is in flight or
 * waiting (tombstones do not count) for its idle time: idle_timeout_ms, or
 * less when the server's edns-tcp-keepalive (RFC 7828) asks for less. A
 * connection takes about 600 KiB (ID table and a 64 KiB reassembly buffer).
 *
 * Reconfigure (SIGHUP): upstream_pool_reconfigure has upselect.c match the
 * new conf's upstreams against the current ones and allocate the unmatched
 * ones before it changes anything, so -ENOMEM leaves the pool as it was.
 * Then every request's tried bits are remapped to the new indexes (bits of
 * removed upstreams are dropped), matched upstreams move to their new index
 * with cu pointing into the new conf, and each removed one is marked
 * removed, its cu cleared (the old conf may be freed when the call returns)
 * and put on p->removed. A removed upstream takes no request: it is never in
 * p->ups, so neither selection nor a forced probe (upstream_force) reaches
 * it, and its tried bit is none (upstream_bit). What waited on its active
 * connection is re-dispatched to the new set; the active connection, if
 * ready, becomes a retiring one, so queries in flight are answered there and
 * it closes once drained (one still handshaking closes at once: nothing was
 * written on it). With a new tls ctx the credentials those connections were
 * made with may be freed when the call returns, so they close at once
 * instead and their in-flight requests are re-dispatched too (counted as
 * resent, without using up the one resend a loss allows). A removed upstream
 * is freed in the close callback of its last connection (n_conns counts them
 * until then), since the code that closes a connection may still use uc->up
 * afterwards; or at once when it has none. Nothing here calls a user
 * callback: requests that find no upstream fail through the fail timer.
 * Settings are read from p->conf where they are used, so the new values
 * apply from then on; armed timers keep their deadlines, and a written list
 * left over when answer_timeout_ms became 0 is dropped by its timer.
 *
 * Timeouts of 0 switch a mechanism off: answer_timeout_ms (no moving, no
 * half-open detection), max_conn_lifetime_ms (no replacement).
 *
 * Besides -ENOMEM, upstream_query returns -EINVAL for a message shorter
 * than a header or longer than 65535, and -ECANCELED once the pool is
 * closing (a callback during upstream_pool_close may try).
 *
 * Limits not handled here yet: write backpressure (queries are small and
 * tls.c queues; tls_conn_write_queue_size is not consulted).
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <utlist.h>

#include "log.h"
#include "mem.h"
#include "upselect.h"
#include "upstream.h"
#include "upstream_int.h"

/* In-flight IDs (tombstones included) per connection; more requests wait
 * on the connection. Half the ID space keeps random probing short. */
#define MAX_SLOTS 32768
/* Connection health (see "Probe", "Broken" and "Unanswered" above). */
#define PROBE_MIN_MS 200
#define PROBE_MAX_MS 1000
#define JUNK_MAX 8
#define UNANSWERED_MAX 64

/* Slot value of a timed-out, moved or cancelled in-flight request. */
static struct upstream_req tombstone;
/* Slot value of the connection's own liveness probe. */
static struct upstream_req probe_slot;

static void uconn_connected_cb(void *arg, int status, const char *why);
static void uconn_read_cb(void *arg, const uint8_t *data, size_t len);
static void uconn_closed_cb(void *arg, int status, const char *why);
static void uconn_idle_cb(uv_timer_t *t);

static const struct tls_conn_cbs uconn_cbs = {
	.connected_cb = uconn_connected_cb,
	.read_cb = uconn_read_cb,
	.closed_cb = uconn_closed_cb,
};

uint16_t
pool_rnd16(struct upstream_pool *p)
{
	if (p->rnd_pos >= RND_N) {
		if (gnutls_rnd(GNUTLS_RND_NONCE, p->rnd, sizeof(p->rnd)) < 0)
			fatal("gnutls_rnd failed: no randomness for query IDs");
		p->rnd_pos = 0;
	}
	return p->rnd[p->rnd_pos++];
}

uint32_t
pool_rnd32(struct upstream_pool *p)
{
	uint32_t hi = pool_rnd16(p);

	return hi << 16 | pool_rnd16(p);
}

/* One of the pool's handles has closed; the last one frees the pool. */
static void
pool_release(struct upstream_pool *p)
{
	size_t i;

	if (--p->n_handles == 0 && p->closing) {
		for (i = 0; i < p->n_ups; i++)
			upstream_free(p, p->ups[i]);
		/* Removed upstreams went with their last connection. */
		while (p->removed != NULL)
			upstream_free(p, p->removed);
		mem_free(p);
	}
}

/* The bit of up in a request's tried mask; none for a removed upstream
 * (it takes no requests anyway). */
static uint32_t
upstream_bit(const struct upstream *up)
{
	return up->removed ? 0 : 1u << up->index;
}

/* up as the last resort of req_dispatch, unless it has been removed. */
static struct upstream *
upstream_force(struct upstream *up)
{
	return up->removed ? NULL : up;
}

static void
pool_handle_close_cb(uv_handle_t *h)
{
	pool_release(h->data);
}

/* Release the tombstones made before the current epoch once it is a
 * grace period (query_timeout_ms) old: each has then waited at least that
 * long for its late answer; the newer ones wait for the next turn. So a
 * tombstone lives between one and two grace periods (longer only while
 * nothing on the connection calls this: a send, a tombstone, a probe). */
static void
uconn_tombs_age(struct uconn *uc, uint64_t now)
{
	struct upstream_pool *p = uc->pool;
	uint64_t grace = p->conf->query_timeout_ms;
	uint64_t *old, w;
	size_t i, id, freed = 0;

	if (uc->n_tombs == 0) {
		uc->tomb_epoch = now;
		return;
	}
	if (now - uc->tomb_epoch < grace)
		return;
	old = uc->tomb[!uc->tomb_cur];
	for (i = 0; i < TOMB_WORDS; i++) {
		for (w = old[i]; w != 0; w &= w - 1) {
			id = i * 64 + (size_t)__builtin_ctzll(w);
			if (uc->slot[id] != &tombstone)
				continue;   /* cannot happen: bits follow slots */
			uc->slot[id] = NULL;
			freed++;
		}
		old[i] = 0;
	}
	uc->n_slots -= freed;
	uc->n_tombs -= freed;
	p->m->upstream_ids_released += freed;
	uc->tomb_cur = !uc->tomb_cur;
	uc->tomb_epoch = now;
}

/* Put a tombstone in slot id (in use until now, still counted). */
static void
uconn_tomb_add(struct uconn *uc, uint16_t id)
{
	uconn_tombs_age(uc, uv_now(uc->pool->loop));
	uc->slot[id] = &tombstone;
	uc->n_tombs++;
	uc->tomb[uc->tomb_cur][id / 64] |= (uint64_t)1 << (id % 64);
}

/* The late answer for tombstone id came: its slot is free again. */
static void
uconn_tomb_clear(struct uconn *uc, uint16_t id)
{
	uint64_t bit = ~((uint64_t)1 << (id % 64));

	uc->tomb[0][id / 64] &= bit;
	uc->tomb[1][id / 64] &= bit;
	uc->slot[id] = NULL;
	uc->n_slots--;
	uc->n_tombs--;
}

/* Take r off the written list, if it is on it. */
static void
req_unwrite(struct upstream_req *r)
{
	if (!r->on_written)
		return;
	DL_DELETE2(r->pool->written, r, wprev, wnext);
	r->on_written = 0;
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
		DL_DELETE2(uc->wait, r, cprev, cnext);
		break;
	case REQ_INFLIGHT:
		uc->n_live--;
		if (tomb) {
			uconn_tomb_add(uc, r->id);
		} else {
			uc->slot[r->id] = NULL;
			uc->n_slots--;
		}
		req_unwrite(r);
		DL_DELETE2(uc->inflight, r, cprev, cnext);
		break;
	case REQ_FAILING:
		DL_DELETE2(r->pool->failed, r, cprev, cnext);
		break;
	case REQ_HELD:
		DL_DELETE2(r->pool->held, r, cprev, cnext);
		break;
	case REQ_IDLE:
		break;
	}
	r->state = REQ_IDLE;
	r->conn = NULL;
}

/* Complete r: all bookkeeping, free it, then the user's callback, which
 * may re-enter the pool. */
static void
req_finish(struct upstream_req *r, int status, const uint8_t *ans, size_t len,
    const struct dnsmsg_answer_info *info, int tomb, const char *who)
{
	upstream_cb cb = r->cb;
	void *arg = r->arg;
	uint64_t now = uv_now(r->pool->loop);

	req_unlink(r, tomb);
	DL_DELETE2(r->pool->reqs, r, dprev, dnext);
	mem_free(r);
	cb(arg, status, ans, len, info, who, now);
}

/* Queue r's callback with status for the next flush. */
void
req_fail(struct upstream_req *r, int status)
{
	struct upstream_pool *p = r->pool;

	req_unlink(r, 0);
	r->state = REQ_FAILING;
	r->fail_status = status;
	r->fail_seq = ++p->fail_seq;
	DL_APPEND2(p->failed, r, cprev, cnext);
}

/* Call the callbacks of the requests that failed so far. Only from a
 * callback (never from upstream_query). Requests failed by the callbacks
 * themselves wait for the next flush, so this cannot loop forever. */
void
pool_flush_failed(struct upstream_pool *p)
{
	uint64_t last = p->fail_seq;
	struct upstream_req *r;

	/* The batch is what failed up to last, at the head of the list. A
	 * callback may cancel a request in it (taking it off the list) or
	 * close the pool, which completes every request. */
	while (!p->closing && p->failed != NULL &&
	    p->failed->fail_seq <= last) {
		r = p->failed;
		req_finish(r, r->fail_status, NULL, 0, NULL, 0, NULL);
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
uconn_free_cb(uv_handle_t *h)
{
	struct uconn *uc = h->data;
	struct upstream_pool *p = uc->pool;
	struct upstream *up = uc->up;

	mem_free(uc);
	/* Only now is nothing left that points at a removed upstream: the
	 * code that closed uc may have used uc->up after uconn_close. */
	if (--up->n_conns == 0 && up->removed)
		upstream_free(p, up);
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
	if (uc->retiring)
		DL_DELETE2(uc->up->retiring, uc, uprev, unext);
	if (uc->probe_due != 0) {
		/* A probe out dies with it. */
		DL_DELETE2(uc->pool->probing, uc, prprev, prnext);
		uc->probe_due = 0;
	}
	if (uc->tls != NULL) {
		tls_conn_close(uc->tls);
		uc->tls = NULL;
	}
	uv_close((uv_handle_t *)&uc->idle, uconn_free_cb);
}

/* Called whenever uc may have become idle: a drained retiring connection
 * closes, an idle active one starts counting its idle time. */
static void
uconn_settle(struct uconn *uc)
{
	if (uc->state != UC_READY || uc->n_live > 0 || uc->n_wait > 0)
		return;
	if (uc->retiring) {
		log_debug("upstream %s: retired connection drained, closing",
		    uc->up->label);
		uc->pool->m->tls_closed++;
		uconn_close(uc);
		return;
	}
	uv_timer_start(&uc->idle, uconn_idle_cb, uc->idle_ms, 0);
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

static void pool_answer_timer_cb(uv_timer_t *t);

/* Write r on the ready connection uc. A write error is followed by
 * closed_cb (tls.h), which re-sends r, so it is only logged here. */
static void
uconn_send(struct uconn *uc, struct upstream_req *r)
{
	struct upstream_pool *p = uc->pool;
	uint64_t now = uv_now(p->loop);
	uint16_t id = uconn_pick_id(uc);
	int rc;

	uc->slot[id] = r;
	uc->n_slots++;
	uc->n_live++;
	r->id = id;
	r->conn = uc;
	r->state = REQ_INFLIGHT;
	r->written_at = now;
	DL_APPEND2(uc->inflight, r, cprev, cnext);
	if (p->conf->answer_timeout_ms > 0) {
		/* Appended at now, so the list stays in write order and the
		 * armed timer (for the head) is never late. */
		DL_APPEND2(p->written, r, wprev, wnext);
		r->on_written = 1;
		if (!uv_is_active((uv_handle_t *)&p->answer_timer))
			uv_timer_start(&p->answer_timer, pool_answer_timer_cb,
			    p->conf->answer_timeout_ms, 0);
	}
	dnsmsg_set_id(r->frame + 2, id);
	p->m->upstream_queries++;
	uc->up->n_queries++;
	uc->n_written++;
	uc->last_active = now;
	rc = tls_conn_write(uc->tls, r->frame, r->frame_len);
	if (rc < 0)
		log_debug("upstream %s: write failed (%d)", uc->up->label, rc);
}

/* Write waiting requests while there is ID room. */
static void
uconn_pump(struct uconn *uc)
{
	struct upstream_req *r;

	while (uc->state == UC_READY && uc->wait != NULL &&
	    uc->n_slots < MAX_SLOTS) {
		r = uc->wait;
		req_unlink(r, 0);
		uconn_send(uc, r);
	}
}

static void
uconn_submit(struct uconn *uc, struct upstream_req *r)
{
	if (uc->state == UC_READY && uc->n_slots >= MAX_SLOTS) {
		/* Out of IDs: old tombstones may have served their time. */
		uconn_tombs_age(uc, uv_now(uc->pool->loop));
		uconn_pump(uc);
	}
	if (uc->state == UC_READY && uc->n_slots < MAX_SLOTS &&
	    uc->wait == NULL) {
		uconn_send(uc, r);
		return;
	}
	r->conn = uc;
	r->state = REQ_QUEUED;
	uc->n_wait++;
	DL_APPEND2(uc->wait, r, cprev, cnext);
}

static void
uconn_idle_cb(uv_timer_t *t)
{
	struct uconn *uc = t->data;
	struct upstream_pool *p = uc->pool;
	uint64_t now = uv_now(p->loop);
	uint64_t quiet = now - uc->last_active;
	uint64_t again;

	if (uc->n_live > 0 || uc->n_wait > 0) {
		/* uconn_settle re-arms when it drains; this is only a
		 * safety net, so it need not follow a short keepalive. */
		again = p->conf->idle_timeout_ms;
		if (again < 1000)
			again = 1000;
		uv_timer_start(&uc->idle, uconn_idle_cb, again, 0);
		return;
	}
	if (uc->retiring) {
		uconn_settle(uc);
		return;
	}
	if (quiet < uc->idle_ms) {
		uv_timer_start(&uc->idle, uconn_idle_cb, uc->idle_ms - quiet,
		    0);
		return;
	}
	log_info("upstream %s: idle for %llu ms, closing", uc->up->label,
	    (unsigned long long)quiet);
	p->m->tls_closed++;
	uconn_close(uc);
}

/* Whether a new connection to up may offer its saved session. Only
 * within max_conn_lifetime_ms of the last full verification: a resumed
 * handshake shows no certificate, so at least once per lifetime the
 * server must present one and have it verified (name, chain, pins) again.
 * A session too old for that is dropped, so that a connection made in
 * full is never followed by one resuming what came before it. */
static int
upstream_may_resume(struct upstream_pool *p, struct upstream *up,
    uint64_t now)
{
	uint64_t life = p->conf->max_conn_lifetime_ms;

	if (up->session == NULL)
		return 0;
	if (life == 0 || (up->has_full_verify &&
	    now - up->full_verify_at < life))
		return 1;
	if (up->has_full_verify)
		log_info("upstream %s: certificate last verified %llu ms ago "
		    "(lifetime %llu ms), handshaking in full", up->label,
		    (unsigned long long)(now - up->full_verify_at),
		    (unsigned long long)life);
	mem_free(up->session);
	up->session = NULL;
	up->session_len = 0;
	return 0;
}

static int
uconn_new(struct upstream_pool *p, struct upstream *up)
{
	struct tls_peer peer;
	struct uconn *uc;
	int rc;

	uc = mem_calloc(1, sizeof(*uc));
	if (uc == NULL)
		return -ENOMEM;
	uc->pool = p;
	uc->up = up;
	uc->state = UC_CONNECTING;
	uc->idle_ms = p->conf->idle_timeout_ms;
	memset(&peer, 0, sizeof(peer));
	peer.auth_name = up->cu->auth_name;
	peer.pins = (const unsigned char (*)[32])up->cu->pins;
	peer.n_pins = up->cu->n_pins;
	if (upstream_may_resume(p, up, uv_now(p->loop))) {
		peer.session = up->session;
		peer.session_len = up->session_len;
	}
	rc = tls_conn_new(p->loop, p->tls,
	    (const struct sockaddr *)&up->cu->addr.ss, &peer,
	    p->conf->connect_timeout_ms, &uconn_cbs, uc, &uc->tls);
	if (rc != 0) {
		mem_free(uc);
		return rc;
	}
	uv_timer_init(p->loop, &uc->idle);
	uc->idle.data = uc;
	p->n_handles++;
	up->n_conns++;
	up->conn = uc;
	p->m->tls_connects++;
	log_debug("upstream %s: connecting%s", up->label,
	    up->session != NULL ? " (with a session to resume)" : "");
	return 0;
}

/* The connection of up that takes a new request, opening one if needed
 * (and retiring the active one when it is past its lifetime). Returns 0
 * and *out, or the error of uconn_new. */
static int
upstream_conn(struct upstream_pool *p, struct upstream *up, uint64_t now,
    struct uconn **out)
{
	struct uconn *old = up->conn;
	uint64_t life = p->conf->max_conn_lifetime_ms;
	struct upstream_req *r;
	int rc;

	*out = NULL;
	if (old != NULL && (old->state != UC_READY || life == 0 ||
	    now - old->established < life)) {
		*out = old;
		return 0;
	}
	rc = uconn_new(p, up);
	if (rc != 0)
		return rc;   /* old, if any, stays active */
	*out = up->conn;
	if (old == NULL)
		return 0;
	log_info("upstream %s: connection is %llu ms old, replacing it "
	    "(%zu in flight)", up->label,
	    (unsigned long long)(now - old->established), old->n_live);
	old->retiring = 1;
	DL_APPEND2(up->retiring, old, uprev, unext);
	/* What waited for ID room goes to the new connection. */
	while (old->wait != NULL) {
		r = old->wait;
		req_unlink(r, 0);
		uconn_submit(up->conn, r);
	}
	uconn_settle(old);
	return 0;
}

/* Give r to a usable upstream by the selection policy; when none is left
 * and force is not NULL, to force regardless of its back-off (a probe).
 * Returns 0, or -1 when there is none (the caller fails r). Calls no user
 * callback. */
int
req_dispatch(struct upstream_pool *p, struct upstream_req *r, uint64_t now,
    struct upstream *force)
{
	uint32_t skip = r->tried;
	struct upstream *up;
	struct uconn *uc;
	int rc;

	/* Each turn either returns or adds a bit to skip (or uses up
	 * force), so this ends. */
	for (;;) {
		up = upstream_select(p, skip, now);
		if (up == NULL) {
			up = force;
			force = NULL;
			if (up == NULL)
				return -1;
		}
		rc = upstream_conn(p, up, now, &uc);
		if (rc == 0) {
			uconn_submit(uc, r);
			return 0;
		}
		skip |= upstream_bit(up);
		if (rc == -ENOMEM || rc == TLS_E_NOMEM) {
			/* Not the upstream's fault: no backoff. */
			log_warn("upstream %s: out of memory", up->label);
			continue;
		}
		p->m->tls_handshake_failures++;
		upstream_mark_down(p, up, now, "cannot start connection");
	}
}

/* Re-dispatch the requests on the list l (taken off a connection that is
 * gone; their states still say where they were). In-flight ones count
 * their one resend; failures go to the failed list. */
static void
reqs_redispatch(struct upstream_pool *p, struct upstream_req *l,
    uint32_t tried, uint64_t now, struct upstream *force)
{
	struct upstream_req *r;
	int was_inflight;

	while (l != NULL) {
		r = l;
		was_inflight = r->state == REQ_INFLIGHT;
		/* The connection is being dropped: neither slots nor counts
		 * need maintaining, only r's own links. */
		DL_DELETE2(l, r, cprev, cnext);
		req_unwrite(r);
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
		if (req_dispatch(p, r, now, force) != 0)
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
	int resumed;
	struct upstream_req *moved;
	char desc[128];

	if (status == 0) {
		/* fail_count is reset by the first answer, not here: a
		 * server that verifies and then closes keeps failing and
		 * its backoff keeps growing. */
		uc->state = UC_READY;
		uc->established = now;
		up->retry_at = 0;
		up->verified = 1;
		up->cert_expiry = tls_conn_cert_expiry(uc->tls);
		p->m->tls_handshakes++;
		resumed = tls_conn_resumed(uc->tls);
		up->n_handshakes++;
		if (resumed)
			up->n_resumed++;
		up->resumed = resumed;
		if (!resumed) {
			/* The server sent its certificate and it verified. */
			up->has_full_verify = 1;
			up->full_verify_at = now;
		}
		snprintf(up->tls_version, sizeof(up->tls_version), "%s",
		    tls_conn_version(uc->tls));
		upstream_note_chain(up, uc->tls);
		up->last_verify_error[0] = '\0';
		/* Wall clock on purpose: operators read these as dates. */
		up->last_handshake = up->last_verify_ok = (int64_t)time(NULL);
		log_info("upstream %s: connected%s, %s", up->label,
		    resumed ? " (resumed)" : "",
		    tls_conn_describe(uc->tls, desc, sizeof(desc)));
		uc->last_active = now;
		uv_timer_start(&uc->idle, uconn_idle_cb, uc->idle_ms, 0);
		uconn_pump(uc);
		return;
	}
	/* tls.c frees the connection after this callback; its getters
	 * still answer until then (tls.h). */
	upstream_count_failure(up, uc->tls, status, why);
	uc->tls = NULL;
	p->m->tls_handshake_failures++;
	if (status == TLS_E_VERIFY)
		p->m->tls_verify_failures++;
	if (status == TLS_E_VERIFY || status == TLS_E_HANDSHAKE) {
		up->verified = 0;
		/* The session may be what the server refused. */
		mem_free(up->session);
		up->session = NULL;
		up->session_len = 0;
	}
	upstream_mark_down(p, up, now, why);
	moved = uc->wait;
	uc->wait = NULL;
	uc->n_wait = 0;
	uconn_close(uc);
	reqs_redispatch(p, moved, upstream_bit(up), now, NULL);
	pool_flush_failed(p);
}

/* Take the in-flight and then the waiting requests off uc, which is
 * about to close, as one list for reqs_redispatch. */
static struct upstream_req *
uconn_drop_reqs(struct uconn *uc)
{
	struct upstream_req *moved = uc->inflight;

	DL_CONCAT2(moved, uc->wait, cprev, cnext);
	uc->inflight = uc->wait = NULL;
	uc->n_wait = uc->n_live = 0;
	return moved;
}

/* The established connection uc ended (tls already gone or not): move its
 * requests on, close it. */
static void
uconn_lost(struct uconn *uc, const char *why)
{
	struct upstream_pool *p = uc->pool;
	struct upstream *up = uc->up;
	uint64_t now = uv_now(p->loop);
	struct upstream_req *moved;

	p->m->tls_closed++;
	if (uc->n_answers == 0 && uc->n_written > 0) {
		if (uc->n_live > 0)
			up->err_reset++;
		upstream_mark_down(p, up, now, why);
	} else if (uc->n_live > 0 || uc->n_wait > 0) {
		up->err_reset++;
		snprintf(up->last_error, sizeof(up->last_error), "%s", why);
		log_warn("upstream %s: connection lost with %zu in flight: %s",
		    up->label, uc->n_live, why);
	} else {
		log_info("upstream %s: connection closed: %s", up->label, why);
	}
	moved = uconn_drop_reqs(uc);
	uconn_close(uc);
	reqs_redispatch(p, moved, 0, now, NULL);
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

/* uc is dead (its probe went unanswered: half-open, or its stream out of
 * step) or broken (answers that match nothing): count a failure, close
 * it, and re-send what it had (once) elsewhere or on a new connection to
 * the same upstream. Calls no user callback. */
static void
uconn_broken(struct uconn *uc, uint64_t now, const char *why)
{
	struct upstream_pool *p = uc->pool;
	struct upstream *up = uc->up;
	struct upstream_req *moved;

	log_warn("upstream %s: %s, connection presumed dead", up->label, why);
	p->m->tls_closed++;
	up->n_timeouts += uc->n_live;
	up->err_reset++;
	upstream_mark_down(p, up, now, why);
	moved = uconn_drop_reqs(uc);
	uconn_close(uc);
	reqs_redispatch(p, moved, upstream_bit(up), now,
	    upstream_force(up));
}

static void
pool_alive_timer_cb(uv_timer_t *t)
{
	struct upstream_pool *p = t->data;
	uint64_t now = uv_now(p->loop);
	struct uconn *uc;
	char why[64];

	/* Each turn takes the head off the list (uconn_broken closes it). */
	while (!p->closing && p->probing != NULL) {
		uc = p->probing;
		if (uc->probe_due > now) {
			uv_timer_start(&p->alive_timer, pool_alive_timer_cb,
			    uc->probe_due - now, 0);
			break;
		}
		p->m->upstream_half_open++;
		snprintf(why, sizeof(why), "no answer in %llu ms",
		    (unsigned long long)(now - uc->probe_since));
		uconn_broken(uc, now, why);
	}
	pool_flush_failed(p);
}

/* Nothing has been answered on uc since a query written at since, which
 * has waited answer_timeout_ms: slow, or dead? Ask the upstream something
 * it answers at once (". NS", padded like every query, with an ID of its
 * own); if that is not answered within the probe time, uc is dead. At
 * most one probe is out per connection. */
static void
uconn_probe(struct uconn *uc, uint64_t now, uint64_t since)
{
	struct upstream_pool *p = uc->pool;
	uint64_t ms = p->conf->answer_timeout_ms / 3;
	uint8_t frame[sizeof(p->probe_frame)];
	uint16_t id;

	if (uc->probe_due != 0 || uc->state != UC_READY)
		return;
	if (ms < PROBE_MIN_MS)
		ms = PROBE_MIN_MS;
	if (ms > PROBE_MAX_MS)
		ms = PROBE_MAX_MS;
	id = uconn_pick_id(uc);
	uc->slot[id] = &probe_slot;
	uc->n_slots++;
	uc->probe_id = id;
	uc->probe_due = now + ms;
	uc->probe_since = since;
	DL_APPEND2(p->probing, uc, prprev, prnext);
	if (!uv_is_active((uv_handle_t *)&p->alive_timer))
		uv_timer_start(&p->alive_timer, pool_alive_timer_cb, ms, 0);
	memcpy(frame, p->probe_frame, p->probe_len);
	dnsmsg_set_id(frame + 2, id);
	p->m->upstream_probes++;
	log_debug("upstream %s: nothing answered in %llu ms, probing "
	    "(ID %u)", uc->up->label, (unsigned long long)(now - since), id);
	/* A write error is followed by closed_cb. */
	(void)tls_conn_write(uc->tls, frame, p->probe_len);
}

/* The probe came back: uc is alive. */
static void
uconn_probe_answered(struct uconn *uc)
{
	uc->slot[uc->probe_id] = NULL;
	uc->n_slots--;
	uc->probe_due = 0;
	DL_DELETE2(uc->pool->probing, uc, prprev, prnext);
	log_debug("upstream %s: probe answered, connection alive",
	    uc->up->label);
}

/* uc answers, but UNANSWERED_MAX queries in a row were not: retire it
 * like a connection past its lifetime (it takes no new queries, finishes
 * what is in flight, then closes) so that the next query opens a new
 * one. The upstream is not marked down: it does answer. */
static void
uconn_retire(struct uconn *uc, uint64_t now)
{
	struct upstream_pool *p = uc->pool;
	struct upstream *up = uc->up;
	struct upstream_req *moved;

	if (uc->retiring || uc->state != UC_READY)
		return;
	log_warn("upstream %s: %u queries in a row unanswered, replacing "
	    "the connection", up->label, uc->unanswered);
	p->m->upstream_retired++;
	uc->retiring = 1;
	if (up->conn == uc)
		up->conn = NULL;
	DL_APPEND2(up->retiring, uc, uprev, unext);
	moved = uc->wait;
	uc->wait = NULL;
	uc->n_wait = 0;
	reqs_redispatch(p, moved, 0, now, NULL);
	uconn_settle(uc);
}

/* A query in flight on uc timed out or moved away unanswered. Many in a
 * row, and none answered for a whole query timeout: retire uc. (An
 * upstream that answers a share of the queries, as a rate limit does,
 * keeps its connection: a new one would fare no better.) */
static void
uconn_unanswered(struct uconn *uc, uint64_t now)
{
	uint64_t last = uc->last_answer > uc->established ?
	    uc->last_answer : uc->established;

	if (++uc->unanswered >= UNANSWERED_MAX &&
	    now - last >= uc->pool->conf->query_timeout_ms)
		uconn_retire(uc, now);
}

/* The head of the written list has waited answer_timeout_ms. */
static void
pool_answer_timer_cb(uv_timer_t *t)
{
	struct upstream_pool *p = t->data;
	uint64_t at = p->conf->answer_timeout_ms;
	uint64_t now = uv_now(p->loop);
	struct upstream_req *r;
	struct upstream *up;
	struct uconn *uc;
	size_t i;
	int other;

	if (at == 0) {
		/* Switched off by a reconfigure since these were written. */
		while (p->written != NULL)
			req_unwrite(p->written);
		return;
	}

	/* No user callback runs in this loop (failures are deferred to the
	 * flush below); each turn takes the head off the list or stops. */
	while (!p->closing && p->written != NULL) {
		r = p->written;
		if (r->written_at + at > now) {
			uv_timer_start(&p->answer_timer, pool_answer_timer_cb,
			    r->written_at + at - now, 0);
			break;
		}
		uc = r->conn;
		up = uc->up;
		/* r is checked once. Nothing answered on uc since r was
		 * written: slow, or dead? A probe tells, without r. */
		req_unwrite(r);
		if (uc->last_good < r->written_at)
			uconn_probe(uc, now, r->written_at);
		other = 0;
		for (i = 0; i < p->n_ups && !other; i++)
			other = p->ups[i] != up &&
			    !(r->tried & (1u << i)) &&
			    upstream_usable(p->ups[i], now);
		if (!other)
			continue;   /* it waits for its deadline here */
		log_debug("upstream %s: no answer for ID %u in %llu ms, "
		    "moving the query", up->label, r->id,
		    (unsigned long long)(now - r->written_at));
		p->m->upstream_moved++;
		up->n_timeouts++;
		up->err_timeout++;
		req_unlink(r, 1);
		uconn_unanswered(uc, now);
		r->tried |= upstream_bit(up);
		/* Should the others fail to connect at once, r goes back to
		 * up (with a new ID), where it at least has a live
		 * connection. */
		if (req_dispatch(p, r, now, upstream_force(up)) != 0)
			req_fail(r, UPSTREAM_EUNREACH);
		uconn_settle(uc);
	}
	pool_flush_failed(p);
}

/* An answer arrived on uc: learn what it tells about the upstream and the
 * connection. */
static void
uconn_answered(struct uconn *uc, struct upstream_req *r,
    const struct dnsmsg_answer_info *info, uint64_t now)
{
	struct upstream *up = uc->up;
	uint64_t keep;
	uint8_t *data;
	size_t len;

	up->n_answers++;
	upstream_rtt_sample(up, now - r->written_at);
	upstream_rtt_histogram(up, now - r->written_at);
	if (!uc->have_session &&
	    tls_conn_get_session(uc->tls, &data, &len) == 0) {
		/* The newest ticket replaces the older one: TLS 1.3 tickets
		 * are meant for one use. */
		mem_free(up->session);
		up->session = data;
		up->session_len = len;
		uc->have_session = 1;
	}
	if (info->has_keepalive) {
		/* RFC 7828: never hold an idle connection longer than the
		 * server allows. Applied when uc next becomes idle. */
		keep = info->keepalive_ms;
		if (keep > uc->pool->conf->idle_timeout_ms)
			keep = uc->pool->conf->idle_timeout_ms;
		if (keep != uc->idle_ms)
			log_debug("upstream %s: keepalive %llu ms",
			    up->label, (unsigned long long)keep);
		uc->idle_ms = keep;
	}
}

/* A frame on uc matched nothing (unknown ID, another question, not a
 * message): JUNK_MAX of them in a row, with no good answer between, mean
 * the stream is out of step or the server broken. Returns 1 when uc was
 * closed for it. */
static int
uconn_junk(struct uconn *uc, uint64_t now)
{
	char why[64];

	if (++uc->junk < JUNK_MAX)
		return 0;
	uc->pool->m->upstream_broken++;
	snprintf(why, sizeof(why), "%u answers in a row matched nothing",
	    uc->junk);
	uconn_broken(uc, now, why);
	return 1;
}

/* One framed message from the upstream. */
static void
uconn_frame(struct uconn *uc, const uint8_t *msg, size_t len)
{
	struct upstream_pool *p = uc->pool;
	struct dnsmsg_answer_info info;
	struct upstream_req *r;
	uint64_t now = uv_now(p->loop);
	uint16_t id;
	int rc;

	if (len < DNS_HDR_LEN) {
		p->m->upstream_malformed++;
		uc->up->err_bad_answer++;
		uconn_lost(uc, "malformed frame (shorter than a header)");
		return;
	}
	id = dnsmsg_get_id(msg);
	r = uc->slot[id];
	if (r == NULL) {
		p->m->upstream_mismatch++;
		uc->up->err_bad_answer++;
		log_debug("upstream %s: answer with unknown ID %u dropped",
		    uc->up->label, id);
		(void)uconn_junk(uc, now);
		return;
	}
	uc->last_active = now;
	if (r == &tombstone) {
		/* The late answer of a timed-out, moved or cancelled query. */
		log_debug("upstream %s: late answer for ID %u dropped",
		    uc->up->label, id);
		uconn_tomb_clear(uc, id);
		uconn_pump(uc);
		return;
	}
	memset(&info, 0, sizeof(info));
	if (r == &probe_slot) {
		/* Any rcode will do, but it must be the probe's answer. */
		if (dnsmsg_parse_answer(msg, len, &p->probe_q, &info) != 0) {
			p->m->upstream_mismatch++;
			uc->up->err_bad_answer++;
			(void)uconn_junk(uc, now);
			return;
		}
		uc->junk = 0;
		uc->last_good = now;
		uconn_probe_answered(uc);
		uconn_pump(uc);
		uconn_settle(uc);
		return;
	}
	rc = dnsmsg_parse_answer(msg, len, &r->q, &info);
	if (rc == DNSMSG_EMISMATCH) {
		/* RFC 5452: not the answer to what was asked; keep waiting. */
		p->m->upstream_mismatch++;
		uc->up->err_bad_answer++;
		log_debug("upstream %s: answer for ID %u with another question "
		    "dropped", uc->up->label, id);
		(void)uconn_junk(uc, now);
		return;
	}
	if (uc->n_answers++ == 0)
		upstream_mark_up(uc->up, now);
	if (rc == 0) {
		uconn_answered(uc, r, &info, now);
		uc->junk = 0;
		uc->unanswered = 0;
		uc->last_good = uc->last_answer = now;
	}
	req_unlink(r, 0);
	uconn_pump(uc);
	uconn_settle(uc);
	if (rc != 0) {
		p->m->upstream_malformed++;
		uc->up->err_bad_answer++;
		log_debug("upstream %s: malformed answer for ID %u",
		    uc->up->label, id);
		/* Before the callback, which may close the pool. */
		(void)uconn_junk(uc, now);
		req_finish(r, UPSTREAM_EBADANSWER, NULL, 0, NULL, 0, NULL);
		return;
	}
	p->m->upstream_answers++;
	req_finish(r, 0, msg, len, &info, 0, uc->up->name);
}

static void
uconn_read_cb(void *arg, const uint8_t *data, size_t len)
{
	struct uconn *uc = arg;
	struct upstream_pool *p = uc->pool;
	size_t flen, take;

	/* uconn_frame may close uc (malformed frame, a drained retiring
	 * connection, or a user callback closing the pool): uc stays
	 * allocated until the loop runs its close callback, so its state can
	 * be checked here. */
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
	struct uconn *uc;
	int was_inflight;

	while (!p->closing && p->reqs != NULL) {
		r = p->reqs;
		if (r->deadline > now) {
			uv_timer_start(&p->deadline_timer, pool_deadline_cb,
			    r->deadline - now, 0);
			break;
		}
		p->m->upstream_timeouts++;
		uc = r->conn;
		if (uc != NULL) {
			uc->up->n_timeouts++;
			uc->up->err_timeout++;
			was_inflight = r->state == REQ_INFLIGHT;
			req_unlink(r, 1);
			if (was_inflight)
				uconn_unanswered(uc, now);
			uconn_settle(uc);
		}
		req_finish(r, UPSTREAM_ETIMEDOUT, NULL, 0, NULL, 1, NULL);
	}
	pool_flush_failed(p);
}

/* The probe query, ". NS" with RD, built like every query (EDNS, padded):
 * a resolver answers it from its cache or hints at once. */
static void
pool_probe_init(struct upstream_pool *p)
{
	struct dnsmsg_query q;
	size_t len = 0;

	memset(&q, 0, sizeof(q));
	q.has_question = 1;
	q.q.wire[0] = 0;
	q.q.wire_len = 1;
	q.q.qtype = 2;      /* NS */
	q.q.qclass = 1;     /* IN */
	q.q.end = DNS_HDR_LEN + 1 + 4;
	if (dnsmsg_upstream_query(&q, p->probe_frame + 2,
	    sizeof(p->probe_frame) - 2, &len) != 0)
		fatal("cannot build the upstream probe query");
	p->probe_frame[0] = (uint8_t)(len >> 8);
	p->probe_frame[1] = (uint8_t)len;
	p->probe_len = 2 + len;
	p->probe_q = q.q;
}

struct upstream_pool *
upstream_pool_new(uv_loop_t *loop, const struct conf *conf,
    struct tls_ctx *tls, struct metrics *m)
{
	struct upstream_pool *p;
	size_t i, n;

	p = mem_calloc(1, sizeof(*p));
	if (p == NULL)
		return NULL;
	n = conf->n_upstream;
	if (n > CONF_MAX_UPSTREAM)
		n = CONF_MAX_UPSTREAM;
	for (i = 0; i < n; i++) {
		p->ups[i] = upstream_new(&conf->upstream[i], i);
		if (p->ups[i] == NULL)
			goto fail;
	}
	p->n_ups = n;
	p->loop = loop;
	p->conf = conf;
	p->tls = tls;
	p->m = m;
	p->rnd_pos = RND_N;
	uv_timer_init(loop, &p->deadline_timer);
	p->deadline_timer.data = p;
	uv_timer_init(loop, &p->fail_timer);
	p->fail_timer.data = p;
	uv_timer_init(loop, &p->answer_timer);
	p->answer_timer.data = p;
	uv_timer_init(loop, &p->probe_timer);
	p->probe_timer.data = p;
	uv_timer_init(loop, &p->alive_timer);
	p->alive_timer.data = p;
	pool_probe_init(p);
	p->n_handles = 5;
	return p;

fail:
	while (i-- > 0)
		upstream_free(p, p->ups[i]);
	mem_free(p);
	return NULL;
}

/* Put r on the deadline list, keeping it sorted. Appending does that
 * while query_timeout_ms stays the same; after a reconfigure shortened
 * it, the new deadline goes before the longer ones still pending. */
static void
pool_add_deadline(struct upstream_pool *p, struct upstream_req *r,
    uint64_t now)
{
	/* From the tail (the head's prev) back to the last deadline not
	 * later than r's. */
	struct upstream_req *at = p->reqs != NULL ? p->reqs->dprev : NULL;

	while (at != NULL && at->deadline > r->deadline)
		at = at == p->reqs ? NULL : at->dprev;
	if (at == NULL)
		DL_PREPEND2(p->reqs, r, dprev, dnext);
	else
		DL_APPEND_ELEM2(p->reqs, at, r, dprev, dnext);
	if (p->reqs == r ||
	    !uv_is_active((uv_handle_t *)&p->deadline_timer))
		uv_timer_start(&p->deadline_timer, pool_deadline_cb,
		    r->deadline - now, 0);
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
	pool_add_deadline(p, r, now);
	if (req_dispatch(p, r, now, NULL) != 0 &&
	    upstream_probe_on_demand(p, r, now) != 0) {
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
	struct uconn *uc;

	if (r == NULL)
		return;
	uc = r->conn;
	req_unlink(r, 1);
	DL_DELETE2(r->pool->reqs, r, dprev, dnext);
	mem_free(r);
	/* No callback is running on uc's behalf that would mind: every loop
	 * over a connection re-checks its state. */
	if (uc != NULL)
		uconn_settle(uc);
}

/* ---- reconfigure ---- */

/* Take every request off uc, which is about to close, onto *to (state
 * REQ_IDLE): its slots and counts go with it. In-flight ones count as
 * resent, but this does not use up their one resend after a loss. */
static void
uconn_take_reqs(struct upstream_pool *p, struct uconn *uc,
    struct upstream_req **to)
{
	struct upstream_req *r;

	while (uc->inflight != NULL) {
		r = uc->inflight;
		DL_DELETE2(uc->inflight, r, cprev, cnext);
		req_unwrite(r);
		r->state = REQ_IDLE;
		r->conn = NULL;
		p->m->upstream_resent++;
		DL_APPEND2(*to, r, cprev, cnext);
	}
	uc->n_live = 0;
	while (uc->wait != NULL) {
		r = uc->wait;
		req_unlink(r, 0);
		DL_APPEND2(*to, r, cprev, cnext);
	}
}

/* Take up out of service. Its waiting requests go onto to, for the new
 * set. With close_now (the credentials changed) its connections close
 * at once and their in-flight requests go onto to as well; otherwise
 * they finish what is in flight, as retiring connections do, and close
 * when drained. up is freed with its last connection (uconn_free_cb), or
 * here when it has none. Calls no user callback. */
static void
upstream_remove(struct upstream_pool *p, struct upstream *up, int close_now,
    struct upstream_req **to)
{
	struct uconn *uc = up->conn, *next;
	struct upstream_req *r;
	size_t inflight = 0;

	up->removed = 1;
	up->cu = NULL;   /* it pointed into the old conf */
	DL_APPEND2(p->removed, up, pprev, pnext);
	if (uc != NULL && (close_now || uc->state != UC_READY)) {
		uconn_take_reqs(p, uc, to);
		if (uc->state == UC_READY)
			p->m->tls_closed++;
		uconn_close(uc);
	} else if (uc != NULL) {
		up->conn = NULL;
		uc->retiring = 1;
		DL_APPEND2(up->retiring, uc, uprev, unext);
		while (uc->wait != NULL) {
			r = uc->wait;
			req_unlink(r, 0);
			DL_APPEND2(*to, r, cprev, cnext);
		}
	}
	/* uconn_settle and uconn_close take uc off the retiring list. */
	DL_FOREACH_SAFE2(up->retiring, uc, next, unext) {
		if (close_now) {
			uconn_take_reqs(p, uc, to);
			p->m->tls_closed++;
			uconn_close(uc);
		} else {
			inflight += uc->n_live;
			uconn_settle(uc);
		}
	}
	log_info("upstream %s: removed%s", up->label,
	    close_now ? " (new credentials), connections closed" :
	    inflight > 0 ? ", its connection finishes what is in flight" : "");
	if (up->n_conns == 0)
		upstream_free(p, up);
}

int
upstream_pool_reconfigure(struct upstream_pool *p,
    const struct conf *newconf, struct tls_ctx *tls)
{
	struct upstream *next[CONF_MAX_UPSTREAM];
	int fresh[CONF_MAX_UPSTREAM];
	int remap[CONF_MAX_UPSTREAM];
	struct upstream_req *r, *moved = NULL;
	uint64_t now = uv_now(p->loop);
	uint32_t tried;
	size_t i, j, n, kept = 0, n_moved = 0;
	int same_tls = tls == p->tls;

	if (p->closing)
		return -ECANCELED;
	n = newconf->n_upstream;
	if (n > CONF_MAX_UPSTREAM)
		n = CONF_MAX_UPSTREAM;
	/* Nothing is changed until every allocation has succeeded. */
	if (upstream_match(p, newconf, n, same_tls, next, fresh, remap) != 0)
		return -ENOMEM;

	/* Commit. A request's tried bits follow the upstreams they name;
	 * bits of removed upstreams go (they take no requests). */
	DL_FOREACH2(p->reqs, r, dnext) {
		tried = 0;
		for (i = 0; i < p->n_ups; i++)
			if ((r->tried & (1u << i)) && remap[i] >= 0)
				tried |= 1u << remap[i];
		r->tried = tried;
	}
	for (i = 0; i < p->n_ups; i++) {
		if (remap[i] < 0)
			upstream_remove(p, p->ups[i], !same_tls, &moved);
		p->ups[i] = NULL;
	}
	for (j = 0; j < n; j++) {
		next[j]->cu = &newconf->upstream[j];
		next[j]->index = (unsigned)j;
		p->ups[j] = next[j];
		kept += !fresh[j];
	}
	p->n_ups = n;
	p->conf = newconf;
	p->tls = tls;
	/* What the removed upstreams had waiting (or, with new credentials,
	 * in flight) goes to the new set now; failures are called back from
	 * the next loop turn, never from here. */
	while (moved != NULL) {
		r = moved;
		DL_DELETE2(moved, r, cprev, cnext);
		n_moved++;
		if (req_dispatch(p, r, now, NULL) != 0)
			req_fail(r, UPSTREAM_EUNREACH);
	}
	log_info("upstreams reconfigured: %zu kept, %zu new, %zu queries "
	    "moved to them", kept, n - kept, n_moved);
	/* Held queries may find a new upstream usable at once. */
	upstream_release_held(p);
	if (p->failed != NULL)
		pool_arm_fail_timer(p);
	return 0;
}

/* Close every connection of up (its requests are completed already). */
static void
upstream_close_conns(struct upstream_pool *p, struct upstream *up)
{
	struct uconn *uc = up->conn;

	if (uc != NULL) {
		if (uc->state == UC_READY)
			p->m->tls_closed++;
		uconn_close(uc);
	}
	while (up->retiring != NULL) {
		uc = up->retiring;
		p->m->tls_closed++;
		uconn_close(uc);
	}
}

void
upstream_pool_close(struct upstream_pool *p)
{
	struct upstream_req *r;
	struct upstream *up;
	size_t i;

	if (p == NULL || p->closing)
		return;
	p->closing = 1;
	/* Callbacks may cancel other requests: always take the head. */
	while (p->reqs != NULL) {
		r = p->reqs;
		req_finish(r, UPSTREAM_ECLOSED, NULL, 0, NULL, 0, NULL);
	}
	for (i = 0; i < p->n_ups; i++)
		upstream_close_conns(p, p->ups[i]);
	/* Removed upstreams stay listed until their last connection's
	 * close callback frees them. */
	DL_FOREACH2(p->removed, up, pnext)
		upstream_close_conns(p, up);
	uv_close((uv_handle_t *)&p->deadline_timer, pool_handle_close_cb);
	uv_close((uv_handle_t *)&p->fail_timer, pool_handle_close_cb);
	uv_close((uv_handle_t *)&p->answer_timer, pool_handle_close_cb);
	uv_close((uv_handle_t *)&p->probe_timer, pool_handle_close_cb);
	uv_close((uv_handle_t *)&p->alive_timer, pool_handle_close_cb);
}
