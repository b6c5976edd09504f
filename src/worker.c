/* worker.c: the workers: a loop per thread, each with its own listeners,
 * upstream pool, query state and counters, over one shared cache.
 *
 * Talking to a worker. Each has an inbox (a list under its own mutex) and
 * a uv_async_t that wakes its loop. Two things arrive there:
 *   - the outcome of another worker's fetch that this one parked a
 *     pending on (query_share.notify, one message per worker told, with a
 *     copy of the answer); the loop hands it to query_remote_done;
 *   - the main loop's call (workers_call): at most one at a time, so it
 *     needs no allocation: the function and argument sit in the worker.
 *     The main thread waits on a condition variable until every worker
 *     has run it; worker 0 shares the main loop and runs it directly.
 * A worker never waits for the main loop, so a call cannot deadlock; a
 * worker that is stuck stops the admin endpoints too, which is what the
 * watchdog is for.
 *
 * Ownership. main.c owns the configuration, the cache and the trust
 * store and keeps them alive until workers_free; each worker owns what
 * it made. Between workers_new and workers_start everything runs on the
 * main thread; after it, a worker's state is touched only from its own
 * loop (the heartbeat is the one word read across threads, atomically).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "listen.h"
#include "log.h"
#include "mem.h"
#include "query.h"
#include "shcache.h"
#include "worker.h"

#define HEARTBEAT_MS 1000

/* Another worker's fetch ended: the outcome for this worker's waiters. */
struct worker_msg {
	struct worker_msg *next;
	struct cache_key key;
	int status;
	struct dnsmsg_answer_info info;
	char upstream[320];           /* "" when none */
	size_t len;
	uint8_t answer[];
};

typedef void (*worker_fn)(struct worker *w, unsigned i, void *arg);

struct worker {
	struct workers *ws;
	unsigned id;
	uv_loop_t own_loop;           /* workers 1..n-1 */
	uv_loop_t *loop;
	uv_thread_t thread;
	int threaded;                 /* thread started, to be joined */
	struct metrics metrics;
	struct upstream_pool *pool;
	struct query_ctx qctx;
	struct query_share share;
	struct shcache *shc;          /* NULL: no shared-cache */
	struct listen *listen;
	uv_async_t wake;
	uv_timer_t beat;
	uint64_t beat_ms;             /* atomic: loop time of the last beat */
	int stopped;                  /* under mu: the inbox is closed */
	/* under mu: */
	uv_mutex_t mu;
	struct worker_msg *head, *tail;
	worker_fn call_fn;
	void *call_arg;
};

struct workers {
	uv_loop_t *main_loop;
	struct cache *cache;
	unsigned n;
	uv_mutex_t mu;                /* calls_left and merges */
	uv_cond_t cv;
	unsigned calls_left;
	struct query_budget budget;   /* every worker's misses (atomics) */
	struct worker *w[];
};

/* ---- the inbox ---- */

static void
call_done(struct workers *ws)
{
	uv_mutex_lock(&ws->mu);
	if (--ws->calls_left == 0)
		uv_cond_signal(&ws->cv);
	uv_mutex_unlock(&ws->mu);
}

static void
wake_cb(uv_async_t *h)
{
	struct worker *w = h->data;
	struct worker_msg *m, *next;
	worker_fn fn;
	void *arg;

	uv_mutex_lock(&w->mu);
	m = w->head;
	w->head = w->tail = NULL;
	fn = w->call_fn;
	arg = w->call_arg;
	w->call_fn = NULL;
	uv_mutex_unlock(&w->mu);
	for (; m != NULL; m = next) {
		next = m->next;
		query_remote_done(&w->qctx, &m->key, m->status,
		    m->status == 0 ? m->answer : NULL, m->len, &m->info,
		    m->upstream[0] != '\0' ? m->upstream : NULL,
		    uv_now(w->loop));
		mem_free(m);
	}
	if (fn != NULL) {
		fn(w, w->id, arg);
		call_done(w->ws);
	}
}

/* query_share.notify: tell every worker in mask how the fetch of key
 * ended. A message that cannot be allocated is lost; the parked pending
 * then ends at its deadline (query_park_due). */
static void
notify_cb(void *arg, uint64_t mask, const struct cache_key *key,
    int status, const uint8_t *answer, size_t len,
    const struct dnsmsg_answer_info *info, const char *upstream)
{
	struct worker *self = arg, *w;
	struct workers *ws = self->ws;
	struct worker_msg *m;
	unsigned i;

	for (i = 0; i < ws->n && mask != 0; i++) {
		if (!(mask & ((uint64_t)1 << i)) || i == self->id)
			continue;
		mask &= ~((uint64_t)1 << i);
		w = ws->w[i];
		m = mem_alloc(sizeof(*m) + (status == 0 ? len : 0));
		if (m == NULL) {
			log_warn("worker %u: out of memory telling worker %u "
			    "an answer", self->id, i);
			continue;
		}
		m->next = NULL;
		m->key = *key;
		m->status = status;
		m->info = *info;
		snprintf(m->upstream, sizeof(m->upstream), "%s",
		    upstream != NULL ? upstream : "");
		m->len = status == 0 ? len : 0;
		if (status == 0)
			memcpy(m->answer, answer, len);
		uv_mutex_lock(&w->mu);
		if (w->stopped) {
			uv_mutex_unlock(&w->mu);
			mem_free(m);
			continue;
		}
		if (w->tail != NULL)
			w->tail->next = m;
		else
			w->head = m;
		w->tail = m;
		/* Under the lock: stop_fn marks the inbox closed under it
		 * before it closes the handle. */
		uv_async_send(&w->wake);
		uv_mutex_unlock(&w->mu);
	}
}

/* ---- calls ---- */

void
workers_call(struct workers *ws, worker_fn fn, void *arg)
{
	unsigned i;

	uv_mutex_lock(&ws->mu);
	ws->calls_left = ws->n - 1;
	uv_mutex_unlock(&ws->mu);
	for (i = 1; i < ws->n; i++) {
		struct worker *w = ws->w[i];

		uv_mutex_lock(&w->mu);
		w->call_fn = fn;
		w->call_arg = arg;
		uv_mutex_unlock(&w->mu);
		uv_async_send(&w->wake);
	}
	fn(ws->w[0], 0, arg);
	uv_mutex_lock(&ws->mu);
	while (ws->calls_left != 0)
		uv_cond_wait(&ws->cv, &ws->mu);
	uv_mutex_unlock(&ws->mu);
}

/* ---- life ---- */

/* Make, change or drop the worker's shared cache client for conf (at
 * start, a reload and its undo). Returns 0, or -1 when out of memory (the
 * worker goes on without one). */
static int
worker_shcache_conf(struct worker *w, const struct conf *conf)
{
	if (!conf->shared_cache.set) {
		query_ctx_set_shcache(&w->qctx, NULL);
		shcache_close(w->shc);
		w->shc = NULL;
		return 0;
	}
	if (w->shc != NULL) {
		shcache_set_conf(w->shc, conf);
		return 0;
	}
	w->shc = shcache_new(w->loop, conf, &w->metrics);
	query_ctx_set_shcache(&w->qctx, w->shc);
	return w->shc != NULL ? 0 : -1;
}

static void
beat_cb(uv_timer_t *t)
{
	struct worker *w = t->data;

	__atomic_store_n(&w->beat_ms, uv_now(w->loop), __ATOMIC_RELAXED);
}

static struct worker *
worker_new(struct workers *ws, unsigned id, const struct conf *conf,
    struct tls_ctx *tls)
{
	struct worker *w = mem_calloc(1, sizeof(*w));

	if (w == NULL)
		return NULL;
	w->ws = ws;
	w->id = id;
	if (id == 0) {
		w->loop = ws->main_loop;
	} else {
		if (uv_loop_init(&w->own_loop) != 0) {
			mem_free(w);
			return NULL;
		}
		w->loop = &w->own_loop;
	}
	if (uv_mutex_init(&w->mu) != 0)
		goto fail_loop;
	w->pool = upstream_pool_new(w->loop, conf, tls, &w->metrics);
	if (w->pool == NULL)
		goto fail_mu;
	if (query_ctx_init(&w->qctx, w->loop, conf, ws->cache, w->pool,
	    &w->metrics) != 0)
		goto fail_mu;
	if (ws->n > 1) {
		w->share.worker = id;
		w->share.budget = &ws->budget;
		w->share.notify = notify_cb;
		w->share.arg = w;
		query_ctx_share(&w->qctx, &w->share);
	}
	if (worker_shcache_conf(w, conf) != 0)
		goto fail_mu;
	uv_async_init(w->loop, &w->wake, wake_cb);
	w->wake.data = w;
	uv_timer_init(w->loop, &w->beat);
	w->beat.data = w;
	w->beat_ms = uv_now(w->loop);
	uv_timer_start(&w->beat, beat_cb, HEARTBEAT_MS, HEARTBEAT_MS);
	return w;

fail_mu:
	/* Only out of memory at start, which main treats as fatal: what
	 * the loop holds goes with the process. */
	uv_mutex_destroy(&w->mu);
fail_loop:
	if (id != 0)
		(void)uv_loop_close(&w->own_loop);
	mem_free(w);
	return NULL;
}

int
workers_new(uv_loop_t *main_loop, unsigned n, const struct conf *conf,
    struct cache *cache, struct tls_ctx *tls, struct workers **out)
{
	struct workers *ws;
	unsigned i;

	if (n < 1 || n > WORKERS_MAX)
		return -EINVAL;
	ws = mem_calloc(1, sizeof(*ws) + n * sizeof(ws->w[0]));
	if (ws == NULL)
		return -ENOMEM;
	ws->main_loop = main_loop;
	ws->cache = cache;
	ws->n = n;
	if (uv_mutex_init(&ws->mu) != 0 || uv_cond_init(&ws->cv) != 0)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		ws->w[i] = worker_new(ws, i, conf, tls);
		if (ws->w[i] == NULL)
			return -ENOMEM;
	}
	*out = ws;
	return 0;
}

unsigned
workers_count(const struct workers *ws)
{
	return ws->n;
}

int
workers_listen(struct workers *ws, const struct conf *conf,
    struct sysd_fds *fds, char *err, size_t errlen)
{
	unsigned i;

	for (i = 0; i < ws->n; i++) {
		struct worker *w = ws->w[i];

		if (listen_start(w->loop, conf, fds, ws->n, i == 0,
		    &w->qctx, &w->metrics, &w->listen, err, errlen) != 0)
			return -1;
	}
	return 0;
}

static void
close_walk_cb(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

void
loop_close_handles(uv_loop_t *loop)
{
	uv_walk(loop, close_walk_cb, NULL);
	uv_run(loop, UV_RUN_DEFAULT);
}

static void
thread_main(void *arg)
{
	struct worker *w = arg;
	int rc;

	uv_run(w->loop, UV_RUN_DEFAULT);
	/* Anything still open (there should be nothing) is closed here so
	 * that the loop can be. */
	loop_close_handles(w->loop);
	rc = uv_loop_close(w->loop);
	if (rc != 0)
		log_warn("worker %u: loop close: %s", w->id, uv_strerror(rc));
}

int
workers_start(struct workers *ws)
{
	unsigned i;
	int rc;

	for (i = 1; i < ws->n; i++) {
		/* After daemon(): the loops were made in the parent. */
		rc = uv_loop_fork(ws->w[i]->loop);
		if (rc != 0 && rc != UV_ENOSYS)
			return rc;
		rc = uv_thread_create(&ws->w[i]->thread, thread_main,
		    ws->w[i]);
		if (rc != 0)
			return rc;
		ws->w[i]->threaded = 1;
	}
	return 0;
}

/* ---- what the main loop asks ---- */

struct reload_call {
	const struct conf *conf;
	struct tls_ctx *tls;
	int *failed;                  /* per worker */
	char *err;                    /* the first failure's reason */
	size_t errlen;
};

static void
reload_listen_fn(struct worker *w, unsigned i, void *arg)
{
	struct reload_call *rc = arg;
	char err[CONF_ERR_MAX];

	rc->failed[i] = listen_update(w->listen, rc->conf, err,
	    sizeof(err)) != 0;
	if (rc->failed[i]) {
		uv_mutex_lock(&w->ws->mu);
		if (rc->err[0] == '\0')
			snprintf(rc->err, rc->errlen, "%s", err);
		uv_mutex_unlock(&w->ws->mu);
	}
}

static void
reload_pool_fn(struct worker *w, unsigned i, void *arg)
{
	struct reload_call *rc = arg;

	rc->failed[i] = upstream_pool_reconfigure(w->pool, rc->conf,
	    rc->tls) != 0;
	if (!rc->failed[i]) {
		query_ctx_set_conf(&w->qctx, rc->conf);
		rc->failed[i] = worker_shcache_conf(w, rc->conf) != 0;
	}
}

/* Back to old: the pool where it took the new configuration (failed[i]
 * clear), the listeners everywhere. */
static void
reload_undo_fn(struct worker *w, unsigned i, void *arg)
{
	struct reload_call *rc = arg;
	char err[CONF_ERR_MAX];

	if (!rc->failed[i]) {
		(void)upstream_pool_reconfigure(w->pool, rc->conf, rc->tls);
		query_ctx_set_conf(&w->qctx, rc->conf);
		(void)worker_shcache_conf(w, rc->conf);
	}
	(void)listen_update(w->listen, rc->conf, err, sizeof(err));
}

int
workers_reload(struct workers *ws, const struct conf *old,
    struct tls_ctx *old_tls, const struct conf *nc, struct tls_ctx *tls,
    char *err, size_t errlen)
{
	struct reload_call rc = { nc, tls, NULL, err, errlen };
	unsigned i, bad = 0;

	rc.failed = mem_calloc(ws->n, sizeof(int));
	if (rc.failed == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	err[0] = '\0';
	workers_call(ws, reload_listen_fn, &rc);
	for (i = 0; i < ws->n; i++)
		bad += (unsigned)rc.failed[i];
	if (bad != 0) {
		/* A worker that bound the new addresses gives them back;
		 * no pool has changed yet. */
		for (i = 0; i < ws->n; i++)
			rc.failed[i] = 1;
		rc.conf = old;
		workers_call(ws, reload_undo_fn, &rc);
		mem_free(rc.failed);
		return -1;
	}
	workers_call(ws, reload_pool_fn, &rc);
	for (i = 0; i < ws->n; i++)
		bad += (unsigned)rc.failed[i];
	if (bad != 0) {
		rc.conf = old;
		rc.tls = old_tls;
		workers_call(ws, reload_undo_fn, &rc);
		snprintf(err, errlen, "out of memory reconfiguring upstreams");
		mem_free(rc.failed);
		return -1;
	}
	mem_free(rc.failed);
	return 0;
}

static void
collect_fn(struct worker *w, unsigned i, void *arg)
{
	struct workers_view *v = arg;
	struct upstream_status st;
	struct shcache_state sh;
	size_t j, n = upstream_count(w->pool);

	if (w->shc != NULL)
		shcache_get_state(w->shc, &sh);
	uv_mutex_lock(&w->ws->mu);
	if (w->shc != NULL) {
		v->shc_workers++;
		v->shc_up += (unsigned)(sh.up != 0);
		v->shc_open += (unsigned)(sh.circuit_open != 0);
		v->shc_outstanding += sh.outstanding;
		v->shc_breaker_opens += sh.breaker_opens;
		v->shc_connects += sh.connects;
		if (sh.circuit_open && sh.retry_in_ms > v->shc_retry_in_ms)
			v->shc_retry_in_ms = sh.retry_in_ms;
	}
	v->n_workers = w->ws->n;
	v->worker_queries[i] = w->metrics.queries_udp + w->metrics.queries_tcp;
	metrics_add(&v->metrics, &w->metrics);
	v->tcp_connections += listen_tcp_connections(w->listen);
	for (j = 0; j < n && j < CONF_MAX_UPSTREAM; j++) {
		upstream_get_status(w->pool, j, &st);
		if (j >= v->n_upstream)
			v->up[j] = st;
		else
			upstream_status_merge(&v->up[j], &st);
	}
	if (n > v->n_upstream)
		v->n_upstream = n < CONF_MAX_UPSTREAM ? n : CONF_MAX_UPSTREAM;
	uv_mutex_unlock(&w->ws->mu);
}

void
workers_collect(struct workers *ws, struct workers_view *v)
{
	memset(v, 0, sizeof(*v));
	workers_call(ws, collect_fn, v);
}

uint64_t
workers_oldest_beat(const struct workers *ws)
{
	uint64_t b, oldest = UINT64_MAX;
	unsigned i;

	for (i = 0; i < ws->n; i++) {
		b = __atomic_load_n(&ws->w[i]->beat_ms, __ATOMIC_RELAXED);
		if (b < oldest)
			oldest = b;
	}
	return oldest;
}

static void
waiting_fn(struct worker *w, unsigned i, void *arg)
{
	size_t n = query_waiting(&w->qctx);

	(void)i;
	uv_mutex_lock(&w->ws->mu);
	*(size_t *)arg += n;
	uv_mutex_unlock(&w->ws->mu);
}

size_t
workers_waiting(struct workers *ws)
{
	size_t n = 0;

	workers_call(ws, waiting_fn, &n);
	return n;
}

static void
reset_fn(struct worker *w, unsigned i, void *arg)
{
	(void)i;
	(void)arg;
	upstream_pool_reset_backoff(w->pool);
}

int
workers_shcache_flush(struct workers *ws, const uint8_t *name_wire,
    size_t name_len, int subtree)
{
	struct worker *w = ws->w[0];

	/* Worker 0 runs on the main loop, the caller's: its connection does
	 * it, and one is enough for the fleet. */
	if (w->shc == NULL)
		return -1;
	return shcache_flush(w->shc, name_wire, name_len, subtree);
}

void
workers_reset_backoff(struct workers *ws)
{
	workers_call(ws, reset_fn, NULL);
}

static void
quiesce_fn(struct worker *w, unsigned i, void *arg)
{
	(void)i;
	(void)arg;
	listen_quiesce(w->listen);
	/* What waits for Redis goes upstream now: draining waits for the
	 * answers in flight, and a shared-cache-timeout longer than the
	 * drain would hold them to its deadline. */
	shcache_drain(w->shc);
}

void
workers_quiesce(struct workers *ws)
{
	workers_call(ws, quiesce_fn, NULL);
}

static void
stop_fn(struct worker *w, unsigned i, void *arg)
{
	struct worker_msg *m, *next;

	(void)i;
	(void)arg;
	/* The shared cache first: the misses asking it go upstream, then
	 * the upstreams: each pending query gets its answer or SERVFAIL
	 * while the listeners can still send it. */
	query_ctx_set_shcache(&w->qctx, NULL);
	shcache_close(w->shc);
	w->shc = NULL;
	upstream_pool_close(w->pool);
	query_ctx_close(&w->qctx);
	if (w->listen != NULL)
		listen_close(w->listen);
	uv_mutex_lock(&w->mu);
	w->stopped = 1;
	m = w->head;
	w->head = w->tail = NULL;
	uv_mutex_unlock(&w->mu);
	for (; m != NULL; m = next) {
		next = m->next;
		mem_free(m);
	}
	uv_close((uv_handle_t *)&w->wake, NULL);
	uv_close((uv_handle_t *)&w->beat, NULL);
}

void
workers_stop(struct workers *ws)
{
	workers_call(ws, stop_fn, NULL);
}

void
workers_free(struct workers *ws)
{
	unsigned i;
	int rc;

	if (ws == NULL)
		return;
	for (i = 0; i < ws->n; i++) {
		struct worker *w = ws->w[i];

		if (w == NULL)
			continue;
		if (w->threaded) {
			rc = uv_thread_join(&w->thread);
			if (rc != 0)
				log_warn("worker %u: join: %s", i,
				    uv_strerror(rc));
		}
		uv_mutex_destroy(&w->mu);
		mem_free(w);
	}
	uv_cond_destroy(&ws->cv);
	uv_mutex_destroy(&ws->mu);
	mem_free(ws);
}
