/* worker.h: N event loops serving DNS, one per thread, and the one way
 * the main loop talks to them.
 *
 * A worker is one libuv loop with everything a query needs of its own:
 * its listeners (SO_REUSEPORT sockets, so that the kernel spreads clients
 * over the workers), its upstream pool (at most one TLS connection per
 * upstream per worker), its query state and its counters. Only the cache
 * (sharded, locked per shard) and the TLS trust store (read-only) are
 * shared. Worker 0 runs on the main loop, the others on threads of their
 * own, so `workers 1` is the single-loop server it always was.
 *
 * The main loop (signals, HTTP, reload, drain) never touches a worker's
 * state: it asks the worker to act on its own thread (workers_call) and
 * waits for every answer. Misses that several workers take at once are
 * fetched once (query_share, cache_claim): the fetcher tells the others
 * through their inboxes.
 */
#ifndef DOTPROXY_WORKER_H
#define DOTPROXY_WORKER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "cache.h"
#include "conf.h"
#include "metrics.h"
#include "sysd.h"
#include "tls.h"
#include "upstream.h"

#define WORKERS_MAX 64     /* a bit each in a cache claim's mask */

struct workers;
struct worker;

/* What the admin endpoints show of every worker together. */
struct workers_view {
	struct metrics metrics;       /* summed */
	size_t n_upstream;
	struct upstream_status up[CONF_MAX_UPSTREAM]; /* merged */
	unsigned tcp_connections;
	unsigned n_workers;
	uint64_t worker_queries[WORKERS_MAX]; /* read by each, UDP and TCP:
	                                       * how the kernel spreads them */
	/* shared cache: each worker has a client (shc_workers of them, 0
	 * when off); how many are up, how many have the breaker open */
	unsigned shc_workers;
	unsigned shc_up;
	unsigned shc_open;
	unsigned shc_outstanding;
	uint64_t shc_breaker_opens;
	uint64_t shc_connects;
	uint64_t shc_retry_in_ms;     /* the longest wait to a probe */
};

/* Make n workers (1..WORKERS_MAX) for conf, sharing cache and tls; worker 0
 * uses main_loop. Nothing listens yet. Returns 0 or -ENOMEM. */
int workers_new(uv_loop_t *main_loop, unsigned n, const struct conf *conf,
    struct cache *cache, struct tls_ctx *tls, struct workers **out);

unsigned workers_count(const struct workers *ws);

/* Bind every worker's listeners (on the caller's thread, before the
 * threads run and before privileges are dropped). Returns 0, or -1 with
 * the reason in err. */
int workers_listen(struct workers *ws, const struct conf *conf,
    struct sysd_fds *fds, char *err, size_t errlen);

/* Start the threads of workers 1..n-1. Returns 0 or a libuv error. */
int workers_start(struct workers *ws);

/* Run fn(w, arg) on every worker's own thread (worker 0 here, at once)
 * and return when all have run it. fn must not wait for the main loop. */
void workers_call(struct workers *ws,
    void (*fn)(struct worker *w, unsigned i, void *arg), void *arg);

/* Switch every worker to nc (and tls): listeners first, on every worker,
 * then the upstream pools and the query state. Returns 0, or -1 with the
 * reason in err and every worker back on old. */
int workers_reload(struct workers *ws, const struct conf *old,
    struct tls_ctx *old_tls, const struct conf *nc, struct tls_ctx *tls,
    char *err, size_t errlen);

/* Gather what the admin endpoints show. */
void workers_collect(struct workers *ws, struct workers_view *v);

/* The loop time of the least recent worker heartbeat (each worker's loop
 * stamps one every second): /health says a stalled worker is a stalled
 * server. Reads atomics only, so it works when a worker is stuck. */
uint64_t workers_oldest_beat(const struct workers *ws);

/* Clients waiting for an answer, on every worker. */
size_t workers_waiting(struct workers *ws);

/* Delete name_wire (and with subtree the names below it; NULL: every key)
 * from the shared cache, in the background, through worker 0's
 * connection (call on the main loop). Returns 0 when started, -1 when
 * there is no shared cache or no connection now. */
int workers_shcache_flush(struct workers *ws, const uint8_t *name_wire,
    size_t name_len, int subtree);

/* The host's network changed: every pool forgets its back-off. */
void workers_reset_backoff(struct workers *ws);

/* Draining: every worker stops reading and accepting. */
void workers_quiesce(struct workers *ws);

/* Close every worker's pool, queries and listeners (in that order, so
 * that each pending query is answered while it can still be sent); the
 * threads' loops then end. */
void workers_stop(struct workers *ws);

/* After workers_stop and the main loop's end: join the threads, free. */
void workers_free(struct workers *ws);

/* Close whatever is still open on a loop whose run has ended and run it
 * until the closes are done, so that uv_loop_close can succeed. For the
 * main loop and every worker's. */
void loop_close_handles(uv_loop_t *loop);

#endif
