/* query.h: one client query's life, from bytes in to exactly one answer.
 *
 * A listener hands every message it reads to query_handle(). Errors, local
 * names and cache hits are answered at once into the listener's buffer; a
 * miss waits for an upstream answer and ends in exactly one call of the
 * listener's done callback: the answer, a stale answer (RFC 8767) when the
 * upstream fails or is slow, or SERVFAIL. Identical misses in flight share
 * one upstream query (coalescing), and hits near expiry start one
 * background refresh (prefetch).
 *
 * Before anything else a query passes access control (acl.h: deny drops,
 * refuse answers REFUSED) and the per-client rate limit (ratelimit.h:
 * over it, dropped). Misses in flight are bounded (max-pending,
 * max-pending-bytes): beyond the bound a new miss is answered SERVFAIL at
 * once, so memory stays bounded under any flood while cache hits go on
 * being answered.
 */
#ifndef DOTPROXY_QUERY_H
#define DOTPROXY_QUERY_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "cache.h"
#include "conf.h"
#include "metrics.h"
#include "upstream.h"

struct query_pending;
struct query_waiter;
struct shcache;

/* How a worker's queries join misses fetched by other workers (worker.c
 * sets it when there are several; NULL: this loop is alone). A miss first
 * claims its key in the shared cache (cache_claim): the first worker
 * fetches it, the others park a pending on it, and the fetcher's
 * cache_release names the workers to tell. notify(arg, mask, ...) hands
 * them the outcome (the answer as the fetcher's own clients got it, or a
 * failure status); each calls query_remote_done on its own loop. */
/* Clients waiting, upstream queries in flight and the bytes they take,
 * over every worker: what max-pending and max-pending-bytes bound.
 * Updated with atomic adds (misses only; hits never touch it). */
struct query_budget {
	size_t waiting;
	size_t pending;
	size_t bytes;
};

struct query_share {
	unsigned worker;                  /* this loop's index, < 64 */
	struct query_budget *budget;      /* shared; NULL: this loop's own */
	void (*notify)(void *arg, uint64_t mask, const struct cache_key *key,
	    int status, const uint8_t *answer, size_t len,
	    const struct dnsmsg_answer_info *info, const char *upstream);
	void *arg;
};

#define QUERY_ACL_SLOTS 64
struct ratelimit;

/* Everything a query needs, built once by main.c (no globals), and the
 * state shared by queries: the misses in flight and the stale timer. */
struct query_ctx {
	uv_loop_t *loop;
	const struct conf *conf;
	struct cache *cache;
	struct upstream_pool *pool;
	struct metrics *metrics;
	struct shcache *shc;              /* NULL: no shared cache */
	/* private: owned by query.c */
	struct query_pending *inflight;   /* by cache key */
	struct query_waiter *stale_head;  /* waiters that may get a stale
	                                   * answer, in deadline order */
	uv_timer_t stale_timer;
	const struct query_share *share;  /* NULL: no other workers */
	struct query_pending *parked;     /* pendings another worker fetches
	                                   * for, in deadline order */
	uv_timer_t park_timer;
	size_t n_waiting;                 /* clients waiting for an answer */
	size_t n_pending;                 /* upstream queries in flight */
	size_t pending_bytes;             /* what waiters and pendings take */
	struct ratelimit *rl;             /* made when first needed */
	/* Access-control verdicts of recent clients under conf, direct
	 * mapped by address: most queries come from a few clients, and
	 * this spares them the rule walk (query_ctx_set_conf empties it). */
	struct query_acl_slot {
		unsigned char addr[16];
		unsigned char action;     /* enum conf_acl_action */
		unsigned char used;
	} acl_cache[QUERY_ACL_SLOTS];
	int closing;
};

enum query_result {
	QUERY_DROP = 0,    /* nothing to send; the drop has been counted */
	QUERY_ANSWER = 1,  /* the answer is in out, *out_len bytes */
	QUERY_PENDING = 2, /* done_cb will be called exactly once later */
};

/* Called once for a pending query with the origin bytes given to
 * query_handle and the answer (both valid during the call), or msg == NULL
 * when there is nothing to send (already counted). */
typedef void (*query_done_cb)(void *arg, const void *origin,
    const uint8_t *msg, size_t len);

/* Set up ctx for the given modules (which must outlive it). Returns 0 or
 * a libuv error. */
int query_ctx_init(struct query_ctx *ctx, uv_loop_t *loop,
    const struct conf *conf, struct cache *cache, struct upstream_pool *pool,
    struct metrics *m);

/* Use conf from now on (a reload); conf must outlive ctx or the next
 * call. Verdicts cached under the old one are forgotten. */
void query_ctx_set_conf(struct query_ctx *ctx, const struct conf *conf);

/* Ask shc (the loop's shared cache client, NULL: none) on misses from
 * now on; it must outlive ctx or the next call. */
void query_ctx_set_shcache(struct query_ctx *ctx, struct shcache *shc);

/* Join other workers' fetches through share (NULL: stop); share must
 * outlive ctx. */
void query_ctx_share(struct query_ctx *ctx, const struct query_share *share);

/* Another worker's fetch of key ended (share->notify): give its outcome
 * (status 0 and the answer, or an UPSTREAM_E* failure) to the waiters of
 * the pending parked on key, if there still is one. answer is already
 * checked, cached and clamped by that worker; nothing is stored again. */
void query_remote_done(struct query_ctx *ctx, const struct cache_key *key,
    int status, const uint8_t *answer, size_t len,
    const struct dnsmsg_answer_info *info, const char *upstream,
    uint64_t now_ms);

/* Clients waiting for an answer now (draining waits for 0). */
size_t query_waiting(const struct query_ctx *ctx);

/* Upstream queries in flight now (prefetches included), and the bytes
 * that waiters and pending queries are charged with, as max-pending and
 * max-pending-bytes count them. */
size_t query_pending(const struct query_ctx *ctx);
size_t query_pending_bytes(const struct query_ctx *ctx);

/* The bytes a waiter for a message of len bytes (with origin_len origin
 * bytes) and a pending upstream query are charged with: the allocation,
 * an allowance for malloc's own overhead, and for a pending the upstream
 * pool's request. dotproxy(8) quotes these to bound memory. */
size_t query_waiter_cost(size_t len, size_t origin_len);
size_t query_pending_cost(void);

/* Give a stale answer (RFC 8767) to every waiter whose
 * stale-client-timeout has passed at now_ms, and set the stale timer for
 * the next one. The stale timer calls this with the loop's time at the
 * start of its tick; a test calls it with a time of its own. A waiter
 * whose stale entry is gone meanwhile goes on waiting for the upstream.
 * Answered waiters get their done_cb from within this call. */
void query_stale_due(struct query_ctx *ctx, uint64_t now_ms);

/* Give up on pendings parked on another worker's fetch whose deadline
 * (query-timeout + 1 s) is past at now_ms: their waiters are answered as
 * for an upstream timeout. The park timer calls it; a test may too. */
void query_park_due(struct query_ctx *ctx, uint64_t now_ms);

/* Stop: close the stale timer, free the rate limit table. Call after
 * upstream_pool_close, which has completed every pending query. */
void query_ctx_close(struct query_ctx *ctx);

/* Handle one client message read at now_ms (the loop's clock). udp says
 * whether the answer must fit the client's UDP payload size (it is then
 * truncated with TC set). peer is the client's address, for access
 * control, the rate limit and the query log; it is copied, not kept.
 * NULL (a caller of our own, such as a test) skips access control and
 * the rate limit; an address of another family than IPv4 or IPv6 is
 * refused. out must hold DNS_MAX_MSG bytes. origin
 * (origin_len bytes, e.g. the client's address) is copied into a pending
 * query and handed back to done_cb, so a listener needs no allocation of
 * its own per query. Returns a query_result; QUERY_PENDING means
 * done_cb(arg, origin, ...) follows, never before this call returns. */
enum query_result query_handle(struct query_ctx *ctx, const uint8_t *msg,
    size_t len, int udp, const struct sockaddr *peer, uint64_t now_ms,
    uint8_t *out, size_t *out_len, query_done_cb done_cb, void *arg,
    const void *origin, size_t origin_len);

#endif
