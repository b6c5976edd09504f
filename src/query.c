/* query.c: one client query's life: parse, local names, cache, upstream,
 * and exactly one answer.
 *
 * The hot path (a cache hit) allocates nothing: the query is parsed in
 * place, the cached answer is copied straight into the listener's buffer
 * and made the client's own (ID, spelling of the name, RD/CD bits, TTLs
 * aged by the cache, an OPT record of its own when the client sent EDNS).
 *
 * A miss becomes a waiter (struct query_waiter, which owns a copy of the
 * client's message and origin) on the one pending upstream query for its
 * cache key (struct query_pending): identical misses in flight share one
 * out-query (RFC 5452 spirit, and kinder to the upstream). What goes
 * upstream is built here from the question and the DO, CD and AD bits
 * alone (dnsmsg_upstream_query: padded, keepalive, no client options),
 * all of which are in the cache key, so sharing it is exact. A hit in
 * the last tenth of its TTL starts a pending with no waiter (prefetch).
 *
 * Across workers (worker.c, when there are several): a new pending first
 * claims its key in the shared cache (cache_claim_miss). The first worker
 * to claim it fetches; one whose claim finds the answer stored since its
 * lookup (the fetch ended in between) answers from the cache; a pending
 * on another worker is parked instead (no
 * out-query, on ctx->parked in deadline order) and its waiters are
 * answered when the fetcher's cache_release names this worker and the
 * outcome arrives through query_remote_done: the answer exactly as the
 * fetcher's own clients got it (already checked, clamped and cached), or
 * its failure, after which stale answers are tried as for a local one. A
 * parked pending that hears nothing by query-timeout + 1 s (a message
 * lost for memory) ends as an upstream timeout would; one parked at
 * close ends with the close. A prefetch never parks: another worker's
 * fetch refreshes the entry for all.
 *
 * DNSSEC bits (RFC 6840 5.7, 5.8): the client's AD, DO and CD go upstream
 * and into the cache key (AD only without DO), so a coalesced miss shares
 * an out-query only with askers of the same bits; the upstream's AD
 * reaches only clients that set AD or DO (dnsmsg_personalize).
 *
 * A query without RD (RFC 1034 4.3.1) is answered from a fresh cache
 * entry or REFUSED: it never goes upstream, starts no prefetch and gets
 * no stale answer. CH and HS class queries are answered by local.c.
 *
 * Serve-stale (RFC 8767): when a miss finds an expired entry still inside
 * its stale window, the waiter also goes on the stale list with a deadline
 * of stale-client-timeout; if the upstream has not answered by then, or
 * fails, the waiter gets the stale answer (TTL 30, EDE 3) while the
 * pending goes on refreshing the cache. A failed refresh holds further
 * attempts off for stale-refresh-interval, and meanwhile stale answers go
 * out at once.
 *
 * Bounds: every waiter and every pending is charged its cost
 * (query_waiter_cost, query_pending_cost) in ctx->pending_bytes while it
 * lives, and in the workers' shared struct query_budget (atomic adds, on
 * misses only) when there are several: the bounds are the process's. A miss that would make the clients waiting more than
 * max-pending, the pendings more than max-pending, or the bytes more than
 * max-pending-bytes is answered SERVFAIL with EDE 0 at once and counted
 * (pending_full); a prefetch beyond them is skipped. The new query is the
 * one refused, not an older waiter: an old one has the upstream's answer
 * nearest, and a flood would evict every good client's miss just as well
 * before its answer came. Cache hits never reach the bound.
 *
 * Shared cache (shcache.h, when configured): a pending that is to fetch
 * for a client asks the shared cache first (its key is claimed and it
 * sits in the in-flight table meanwhile, so later misses coalesce on it
 * as on any fetch). A hit is handled as an upstream answer would be
 * (cached, answered, told to parked workers) but is not written back;
 * a miss, an error, a timeout or a skip sends the query upstream from
 * the callback. An answer fetched upstream by a client's miss or a
 * prefetch is written to the shared cache (fire and forget) when it is
 * cacheable: never SERVFAIL, TC, TTL 0, a stale answer or a local one.
 *
 * Every waiter ends in waiter_finish() (its one done_cb, then freed), and
 * every pending in pending_finish(), reached once: from pending_complete()
 * (called once by the upstream pool), shared_done() on a hit or a failed
 * send, or park_end().
 * The in-flight table is uthash, as in the cache; it is query state, so it
 * lives here.
 *
 * Time: nothing here reads the loop's clock. query_handle gets now_ms from
 * the listener, pending_complete from the upstream pool (its loop time at
 * the callback), and the stale timer's callback, the start of its loop
 * tick, reads uv_now once and hands it to query_stale_due, which a test
 * can call with a time of its own. uv_hrtime() times answers for the
 * duration histogram and the query log only; no decision depends on it.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "acl.h"
#include "local.h"
#include "log.h"
#include "mem.h"
#include "query.h"
#include "ratelimit.h"
#include "shcache.h"

/* As in cache.c: uthash takes its table through our wrapper and reports a
 * failed add (hash_oom) instead of exiting the process. */
#define uthash_malloc(sz) mem_alloc(sz)
#define uthash_free(ptr, sz) mem_free(ptr)
#define HASH_NONFATAL_OOM 1
#define uthash_nonfatal_oom(elt) ((elt)->hash_oom = 1)
#include <uthash.h>
#include <utlist.h>

#define STALE_TTL 30          /* RFC 8767 section 4 */
/* The "upstream" of an answer from the shared cache, in the query log
 * and in what a fetch tells the workers parked on it. */
#define SHARED_LABEL "shared-cache"
#define PREFETCH_FRACTION 10  /* refresh in the last tenth of the TTL */
#define PREFETCH_MIN_TTL 10   /* shorter-lived answers are not worth it */
#define UPSTREAM_QUERY_MAX 512
#define EDE_OTHER 0           /* RFC 8914: max-pending reached */
/* malloc's own per-allocation cost, and what the upstream pool takes per
 * query (its struct upstream_req: a question, links and state, then the
 * framed query), charged to a pending so that the bound is the process's
 * memory, not only ours. An estimate, rounded up. */
#define MALLOC_OVERHEAD 16
#define UPSTREAM_REQ_COST (sizeof(struct dnsmsg_question) + 160 + 2 + \
	UPSTREAM_QUERY_MAX + MALLOC_OVERHEAD)

struct query_pending {
	UT_hash_handle hh;
	struct query_ctx *ctx;
	struct cache_key key;
	struct dnsmsg_question q;
	struct query_waiter *waiters; /* DL list through prev/next */
	struct query_pending *pprev, *pnext; /* on ctx->parked */
	uint64_t park_deadline_ms;    /* parked: give up waiting then */
	uint8_t hash_oom;             /* set by uthash when the add failed */
	uint8_t parked;               /* another worker fetches key for it */
	uint8_t claimed;              /* this one fetches key for others */
	uint8_t in_shared;            /* asking the shared cache first */
	uint8_t from_shared;          /* answered by it: not written back */
	uint16_t wire_len;            /* the upstream query below */
	uint8_t wire[];               /* kept while the shared cache is
	                               * asked; upstream_query copies it */
};

struct query_waiter {
	struct query_waiter *prev, *next;   /* on the pending */
	uint64_t t0_ns;                     /* uv_hrtime() at receipt */
	struct sockaddr_storage peer;       /* for the query log */
	struct query_waiter *sprev, *snext; /* on ctx->stale_head */
	struct query_pending *p;
	struct dnsmsg_query q;
	int udp;
	int on_stale_list;
	uint64_t stale_at_ms;
	query_done_cb done_cb;
	void *arg;
	size_t len;
	size_t origin_len;
	/* The client's message as received, then the origin bytes, aligned
	 * for a struct sockaddr_storage. */
	uint8_t msg[];
};

#define ORIGIN_ALIGN 16
#define ORIGIN_OFF(len) \
	(((len) + ORIGIN_ALIGN - 1) & ~(size_t)(ORIGIN_ALIGN - 1))

/* How an answer came to be, for its counters and the query log.
 *
 * Time: a query that waits for an upstream is timed from its arrival with
 * uv_hrtime(). One answered while it is read (cache hit, local name,
 * error) takes microseconds of this loop turn: it counts as 0 in the
 * duration histogram (its first bucket, 0.25 ms, holds it either way)
 * unless the query log is on, so that the hit path reads no clock. */
struct answer_src {
	enum metrics_source src;
	const struct sockaddr *peer;  /* NULL: unknown */
	uint64_t t0_ns;               /* uv_hrtime() at arrival; 0: not timed */
	const char *upstream;         /* label of the upstream used, or NULL */
};

/* One line per answered query (log-queries): who asked what, what they
 * got, from where, and how long it took. Off by default; when off this
 * costs one branch. */
static void
log_query(const struct dnsmsg_query *q, const struct answer_src *a,
    unsigned rcode, uint64_t ns)
{
	char name[DNS_MAX_NAME_TEXT + 1], who[64];

	if (q->has_question)
		dnsmsg_name_str(&q->q, name, sizeof(name));
	else
		snprintf(name, sizeof(name), "-");
	log_addr_str(a->peer, who, sizeof(who));
	log_info("query client=%s name=%s type=%s rcode=%s source=%s "
	    "upstream=%s ms=%.3f", who, name, q->has_question ?
	    metrics_type_name(metrics_type_index(q->q.qtype)) : "-",
	    metrics_rcode_name(rcode), metrics_source_name(a->src),
	    a->upstream != NULL ? a->upstream : "-", (double)ns / 1e6);
}

/* Give the answer its client's OPT (with ede) when the client sent EDNS,
 * fit it to a UDP client, count it by rcode and source, time it. Returns
 * the length to send. */
static size_t
finish_answer(struct query_ctx *ctx, const struct dnsmsg_query *q, int udp,
    uint8_t *out, size_t len, int add_opt, int ede,
    const struct answer_src *a)
{
	unsigned rcode;
	uint64_t ns;
	size_t n;

	/* Also for a client without EDNS: the answer's carried Extended
	 * DNS Errors (dnsmsg_strip_opt) must go. */
	if (add_opt && dnsmsg_append_opt(out, len, DNS_MAX_MSG, q, ede,
	    &n) == 0)
		len = n;
	if (udp && len > q->udp_size) {
		n = dnsmsg_truncate(out, len);
		if (n != 0) {
			len = n;
			if (q->edns && dnsmsg_append_opt(out, len, DNS_MAX_MSG,
			    q, EDE_NONE, &n) == 0)
				len = n;
			ctx->metrics->answers_truncated++;
		}
	}
	rcode = DNS_RCODE(dnsmsg_get_flags(out));
	ns = a->t0_ns != 0 ? uv_hrtime() - a->t0_ns : 0;
	ctx->metrics->responses[rcode][a->src]++;
	metrics_hist_add(&ctx->metrics->duration, ns);
	if (ctx->conf->log_queries)
		log_query(q, a, rcode, ns);
	return len;
}

/* An error answer built from the query. Returns the length, or 0 when even
 * that could not be built (then the caller drops). */
static size_t
error_answer(struct query_ctx *ctx, const uint8_t *msg, size_t len,
    const struct dnsmsg_query *q, int rcode, int ede, int udp, uint8_t *out,
    const struct answer_src *a)
{
	size_t out_len = 0;

	if (dnsmsg_error_reply(msg, len, q, rcode, ede, out, DNS_MAX_MSG,
	    &out_len) != 0)
		return 0;
	return finish_answer(ctx, q, udp, out, out_len, 0, EDE_NONE, a);
}

static struct answer_src
waiter_src(const struct query_waiter *w, enum metrics_source src,
    const char *upstream)
{
	struct answer_src a = { src, (const struct sockaddr *)&w->peer,
	    w->t0_ns, upstream };

	return a;
}

/* ---- the bounds ---- */

/* What counts against max-pending and max-pending-bytes: this loop's
 * figures when it is alone, else every worker's together (a snapshot of
 * the shared atomics: two workers may pass the check at once, so the
 * bound can be exceeded by one query per worker at most). */
static struct query_budget
budget_now(const struct query_ctx *ctx)
{
	struct query_budget b;
	const struct query_budget *g;

	if (ctx->share == NULL || ctx->share->budget == NULL) {
		b.waiting = ctx->n_waiting;
		b.pending = ctx->n_pending;
		b.bytes = ctx->pending_bytes;
		return b;
	}
	g = ctx->share->budget;
	b.waiting = __atomic_load_n(&g->waiting, __ATOMIC_RELAXED);
	b.pending = __atomic_load_n(&g->pending, __ATOMIC_RELAXED);
	b.bytes = __atomic_load_n(&g->bytes, __ATOMIC_RELAXED);
	return b;
}

static void
budget_add(struct query_ctx *ctx, long dwait, long dpend, long long dbytes)
{
	struct query_budget *g;

	ctx->n_waiting += (size_t)dwait;
	ctx->n_pending += (size_t)dpend;
	ctx->pending_bytes += (size_t)dbytes;
	if (ctx->share == NULL || (g = ctx->share->budget) == NULL)
		return;
	__atomic_add_fetch(&g->waiting, (size_t)dwait, __ATOMIC_RELAXED);
	__atomic_add_fetch(&g->pending, (size_t)dpend, __ATOMIC_RELAXED);
	__atomic_add_fetch(&g->bytes, (size_t)dbytes, __ATOMIC_RELAXED);
}

/* ---- waiters ---- */

static void
waiter_detach(struct query_ctx *ctx, struct query_waiter *w)
{
	if (w->on_stale_list) {
		DL_DELETE2(ctx->stale_head, w, sprev, snext);
		w->on_stale_list = 0;
	}
	if (w->p != NULL) {
		DL_DELETE(w->p->waiters, w);
		w->p = NULL;
	}
}

/* The one end of a waiter: its done_cb, then free. */
static void
waiter_finish(struct query_ctx *ctx, struct query_waiter *w,
    const uint8_t *msg, size_t len)
{
	waiter_detach(ctx, w);
	budget_add(ctx, -1, 0,
	    -(long long)query_waiter_cost(w->len, w->origin_len));
	w->done_cb(w->arg, w->msg + ORIGIN_OFF(w->len), msg, len);
	mem_free(w);
}

/* Answer a waiter with an answer from upstream or cache (no OPT yet). */
static void
waiter_answer(struct query_ctx *ctx, struct query_waiter *w,
    const uint8_t *answer, size_t len, int ede, enum metrics_source src,
    const char *upstream)
{
	struct answer_src a = waiter_src(w, src, upstream);
	uint8_t out[DNS_MAX_MSG];

	memcpy(out, answer, len);
	dnsmsg_personalize(out, len, w->msg, &w->q);
	len = finish_answer(ctx, &w->q, w->udp, out, len, 1, ede, &a);
	waiter_finish(ctx, w, out, len);
}

static void
waiter_fail(struct query_ctx *ctx, struct query_waiter *w, int ede)
{
	struct answer_src a = waiter_src(w, METRICS_SRC_ERROR, NULL);
	uint8_t out[DNS_MAX_MSG];
	size_t len;

	ctx->metrics->upstream_failures++;
	len = error_answer(ctx, w->msg, w->len, &w->q, DNS_RCODE_SERVFAIL, ede,
	    w->udp, out, &a);
	waiter_finish(ctx, w, len ? out : NULL, len);
}

/* Answer a waiter from a stale entry if there is one. Returns 0 when
 * answered (w is gone), -1 when there is no stale answer to give. */
static int
waiter_serve_stale(struct query_ctx *ctx, struct query_waiter *w,
    const struct cache_key *key, uint64_t now_ms)
{
	uint8_t buf[DNS_MAX_MSG];
	struct cache_meta meta;
	size_t len;

	if (!ctx->conf->serve_stale ||
	    cache_get_stale(ctx->cache, key, now_ms, STALE_TTL, buf,
	    sizeof(buf), &len, &meta) != 0 ||
	    meta.rcode == DNS_RCODE_SERVFAIL)
		return -1;
	ctx->metrics->cache_stale_served++;
	waiter_answer(ctx, w, buf, len, EDE_STALE_ANSWER, METRICS_SRC_STALE,
	    NULL);
	return 0;
}

/* ---- the stale timer ---- */

static void stale_timer_cb(uv_timer_t *t);

void
query_stale_due(struct query_ctx *ctx, uint64_t now)
{
	struct query_waiter *w;
	struct cache_key key;

	while (ctx->stale_head != NULL && ctx->stale_head->stale_at_ms <= now) {
		w = ctx->stale_head;
		DL_DELETE2(ctx->stale_head, w, sprev, snext);
		w->on_stale_list = 0;
		/* The upstream is slow: answer from the stale entry while
		 * the pending goes on to refresh it. If the entry is gone
		 * meanwhile, the waiter keeps waiting for the upstream. */
		key = w->p->key;
		(void)waiter_serve_stale(ctx, w, &key, now);
	}
	if (ctx->stale_head != NULL)
		(void)uv_timer_start(&ctx->stale_timer, stale_timer_cb,
		    ctx->stale_head->stale_at_ms - now, 0);
}

/* The start of a loop tick: the one place that reads the clock for it. */
static void
stale_timer_cb(uv_timer_t *t)
{
	struct query_ctx *ctx = t->data;

	query_stale_due(ctx, uv_now(ctx->loop));
}

/* ---- pending upstream queries ---- */

static int
upstream_ede(int status)
{
	return status == UPSTREAM_EUNREACH ? EDE_NO_REACHABLE_AUTHORITY :
	    EDE_NETWORK_ERROR;
}

/* Cache a good answer with the configured TTL bounds. */
static void
store_answer(struct query_ctx *ctx, const struct cache_key *key,
    uint8_t *buf, size_t len, struct dnsmsg_answer_info *info, uint64_t now)
{
	const struct conf *cf = ctx->conf;
	uint32_t ttl = info->ttl, lo = 0;

	if (!info->cacheable) {
		ctx->metrics->cache_uncacheable++;
		return;
	}
	if (info->negative) {
		if (ttl > cf->cache_max_negative_ttl)
			ttl = cf->cache_max_negative_ttl;
	} else {
		lo = cf->cache_min_ttl;
		if (ttl < lo)
			ttl = lo;
		if (ttl > cf->cache_max_ttl)
			ttl = cf->cache_max_ttl;
	}
	/* The records say no more than the entry lives, so a client never
	 * holds an answer longer than we would. */
	dnsmsg_clamp_ttls(buf, len, info->ttl_off, info->n_ttl,
	    lo < ttl ? lo : ttl, ttl);
	info->ttl = ttl;
	if (ttl > 0 && cache_put(ctx->cache, key, buf, len, info, now) == 0)
		ctx->metrics->cache_inserts++;
}

/* RFC 2308 section 7: a SERVFAIL may be cached, briefly, so a failing
 * name does not send every client's retry upstream. */
static void
store_servfail(struct query_ctx *ctx, const struct cache_key *key,
    uint8_t *buf, size_t len, const struct dnsmsg_answer_info *info,
    uint64_t now)
{
	struct dnsmsg_answer_info sf = *info;
	uint8_t scratch[DNS_MAX_MSG];
	size_t n;

	/* A prefetch that fails must not replace an answer still fresh. */
	if (ctx->conf->cache_servfail_ttl == 0 ||
	    cache_get(ctx->cache, key, now, scratch, sizeof(scratch), &n,
	    NULL) == 0)
		return;
	sf.cacheable = 1;
	sf.ttl = ctx->conf->cache_servfail_ttl;
	dnsmsg_clamp_ttls(buf, len, sf.ttl_off, sf.n_ttl, 0, sf.ttl);
	if (cache_put(ctx->cache, key, buf, len, &sf, now) == 0)
		ctx->metrics->cache_servfail_cached++;
}

/* Is there a stale answer for key (and so a refresh that failed)? */
static int
stale_exists(struct query_ctx *ctx, const struct cache_key *key,
    uint64_t now_ms)
{
	uint8_t scratch[DNS_MAX_MSG];
	struct cache_meta meta;
	size_t n;

	return ctx->conf->serve_stale &&
	    cache_get_stale(ctx->cache, key, now_ms, STALE_TTL, scratch,
	    sizeof(scratch), &n, &meta) == 0 &&
	    meta.rcode != DNS_RCODE_SERVFAIL;
}

static void
pending_free(struct query_ctx *ctx, struct query_pending *p)
{
	budget_add(ctx, 0, -1, -(long long)query_pending_cost());
	mem_free(p);
}

/* Tell the workers parked on p's key how its fetch ended (p was the
 * fetch: claimed), and let the key go. */
static void
pending_release(struct query_ctx *ctx, struct query_pending *p, int status,
    const uint8_t *answer, size_t len, const struct dnsmsg_answer_info *info,
    const char *upstream)
{
	uint64_t mask;

	if (!p->claimed)
		return;
	p->claimed = 0;
	mask = cache_release(ctx->cache, &p->key, ctx->share->worker);
	if (mask != 0)
		ctx->share->notify(ctx->share->arg, mask, &p->key, status,
		    answer, len, info, upstream);
}

/* The outcome of p's fetch, for its waiters. owner: p fetched it itself
 * (and so caches it and tells the parked workers); otherwise another
 * worker did all that and only the waiters here are left to answer. */
static void
pending_finish(struct query_ctx *ctx, struct query_pending *p, int status,
    uint8_t *buf, size_t len, struct dnsmsg_answer_info *info,
    const char *upstream, uint64_t now, int owner)
{
	struct query_waiter *w;
	int servfail, stale_left = 0;

	servfail = status != 0 || info->rcode == DNS_RCODE_SERVFAIL;
	if (!servfail) {
		if (owner) {
			store_answer(ctx, &p->key, buf, len, info, now);
			/* For the fleet, what we fetched (with the TTLs
			 * store_answer clamped), never what it gave us. */
			if (ctx->shc != NULL && !p->from_shared &&
			    info->cacheable && info->ttl > 0)
				shcache_put(ctx->shc, &p->key, buf, len,
				    info->ttl);
		}
		while (p->waiters != NULL)
			waiter_answer(ctx, p->waiters, buf, len, EDE_NONE,
			    p->from_shared ? METRICS_SRC_SHARED :
			    METRICS_SRC_UPSTREAM, upstream);
		goto out;
	}
	/* The upstream failed or said SERVFAIL. The cache learns it first,
	 * as a good answer is stored before it is sent: a client that asks
	 * again at once, through another worker, finds it there. */
	if (owner) {
		stale_left = stale_exists(ctx, &p->key, now);
		if (stale_left)
			cache_refresh_failed(ctx->cache, &p->key, now +
			    (uint64_t)ctx->conf->stale_refresh_interval * 1000);
		else if (status == 0)
			store_servfail(ctx, &p->key, buf, len, info, now);
	}
	/* Stale beats SERVFAIL. */
	while (p->waiters != NULL) {
		w = p->waiters;
		if (waiter_serve_stale(ctx, w, &p->key, now) == 0)
			continue;
		if (status == 0)
			waiter_answer(ctx, w, buf, len, EDE_NONE,
			    METRICS_SRC_UPSTREAM, upstream);
		else
			waiter_fail(ctx, w, upstream_ede(status));
	}
out:
	if (owner)
		pending_release(ctx, p, status, status == 0 ? buf : NULL,
		    status == 0 ? len : 0, info, upstream);
	pending_free(ctx, p);
}

static void
pending_complete(void *arg, int status, const uint8_t *answer, size_t len,
    const struct dnsmsg_answer_info *uinfo, const char *upstream,
    uint64_t now)
{
	struct query_pending *p = arg;
	struct query_ctx *ctx = p->ctx;
	struct dnsmsg_answer_info info, check;
	uint8_t buf[DNS_MAX_MSG];

	HASH_DEL(ctx->inflight, p);
	memset(&info, 0, sizeof(info));
	info.rcode = DNS_RCODE_SERVFAIL;
	if (status == 0) {
		info = *uinfo;
		memcpy(buf, answer, len);
		len = dnsmsg_strip_opt(buf, len, &info);
		/* An OPT record in the middle of the additional section (only
		 * a hostile upstream sends one) is cut out without rewriting
		 * the compression pointers behind it: what no longer parses
		 * is a bad answer, never cached or relayed. */
		if (dnsmsg_parse_answer(buf, len, &p->q, &check) != 0) {
			ctx->metrics->upstream_malformed++;
			status = UPSTREAM_EBADANSWER;
			upstream = NULL;
		}
	}
	pending_finish(ctx, p, status, buf, len, &info, upstream, now, 1);
}

/* ---- the shared cache, asked before the upstream ---- */

/* The shared cache's answer for p (shcache_get's callback): a hit is p's
 * answer, as an upstream's would be (cached here, given to the waiters
 * and to the workers parked on p); anything else sends p upstream now,
 * having cost at most shared-cache-timeout. */
static void
shared_done(void *arg, int result, uint8_t *answer, size_t len,
    const struct dnsmsg_answer_info *ai)
{
	struct query_pending *p = arg;
	struct query_ctx *ctx = p->ctx;
	struct dnsmsg_answer_info info;
	uint64_t now = uv_now(ctx->loop);

	p->in_shared = 0;
	if (result == SHCACHE_HIT) {
		info = *ai;
		p->from_shared = 1;
		ctx->metrics->shc_answers++;
		HASH_DEL(ctx->inflight, p);
		pending_finish(ctx, p, 0, answer, len, &info, SHARED_LABEL,
		    now, 1);
		return;
	}
	if (ctx->closing || upstream_query(ctx->pool, p->wire, p->wire_len,
	    &p->q, pending_complete, p, NULL) != 0) {
		memset(&info, 0, sizeof(info));
		info.rcode = DNS_RCODE_SERVFAIL;
		HASH_DEL(ctx->inflight, p);
		pending_finish(ctx, p, UPSTREAM_ECLOSED, NULL, 0, &info, NULL,
		    now, 1);
	}
}

/* ---- pendings parked on another worker's fetch ---- */

static void park_timer_cb(uv_timer_t *t);

static void
park_arm(struct query_ctx *ctx, uint64_t now)
{
	if (ctx->parked == NULL)
		uv_timer_stop(&ctx->park_timer);
	else
		(void)uv_timer_start(&ctx->park_timer, park_timer_cb,
		    ctx->parked->park_deadline_ms > now ?
		    ctx->parked->park_deadline_ms - now : 0, 0);
}

static void
park_end(struct query_ctx *ctx, struct query_pending *p, int status,
    const uint8_t *answer, size_t len, const struct dnsmsg_answer_info *ai,
    const char *upstream, uint64_t now)
{
	struct dnsmsg_answer_info info;
	uint8_t buf[DNS_MAX_MSG];

	HASH_DEL(ctx->inflight, p);
	DL_DELETE2(ctx->parked, p, pprev, pnext);
	memset(&info, 0, sizeof(info));
	info.rcode = DNS_RCODE_SERVFAIL;
	if (status == 0) {
		info = *ai;
		memcpy(buf, answer, len);
		/* The fetcher's label says where it got the answer: its
		 * waiters and ours count it under the same source. No
		 * upstream's label (addr@port#name) can be this one. */
		p->from_shared = upstream != NULL &&
		    strcmp(upstream, SHARED_LABEL) == 0;
	} else {
		len = 0;
	}
	pending_finish(ctx, p, status, buf, len, &info, upstream, now, 0);
}

/* The fetcher's word never came (it cannot fail to come but for a lost
 * message when memory ran out): answer as for a timeout, so that no
 * client waits past the query deadline. */
void
query_park_due(struct query_ctx *ctx, uint64_t now)
{
	while (ctx->parked != NULL && ctx->parked->park_deadline_ms <= now)
		park_end(ctx, ctx->parked, UPSTREAM_ETIMEDOUT, NULL, 0, NULL,
		    NULL, now);
	park_arm(ctx, now);
}

static void
park_timer_cb(uv_timer_t *t)
{
	struct query_ctx *ctx = t->data;

	query_park_due(ctx, uv_now(ctx->loop));
}

void
query_remote_done(struct query_ctx *ctx, const struct cache_key *key,
    int status, const uint8_t *answer, size_t len,
    const struct dnsmsg_answer_info *info, const char *upstream,
    uint64_t now_ms)
{
	struct query_pending *p;

	HASH_FIND_BYHASHVALUE(hh, ctx->inflight, key->bytes, key->len,
	    key->hash, p);
	/* Gone (it timed out) or fetched here after all: nothing to do. */
	if (p == NULL || !p->parked)
		return;
	if (status == 0 && (answer == NULL || len > DNS_MAX_MSG))
		status = UPSTREAM_EBADANSWER;
	park_end(ctx, p, status, answer, len, info, upstream, now_ms);
	park_arm(ctx, now_ms);
}

/* Join the fetch another worker has under way for p's key, if there is
 * one. Returns 1 when p is parked on it, 0 when p is to fetch (and has
 * claimed the key), -1 when wait is 0 and another worker fetches (or has
 * refreshed the entry), 2 when wait is 1 and another worker has stored
 * the answer since the caller's lookup: the cache has it now. */
static int
pending_claim(struct query_ctx *ctx, struct query_pending *p, int wait,
    uint64_t now)
{
	int rc;

	if (ctx->share == NULL)
		return 0;
	/* The lookup and this claim are two steps: another worker may have
	 * fetched the key in between. A prefetch is then skipped; a client
	 * is answered from the cache. */
	rc = wait ? cache_claim_miss(ctx->cache, &p->key, ctx->share->worker,
	    now) : cache_claim_refresh(ctx->cache, &p->key,
	    ctx->share->worker, now, PREFETCH_FRACTION);
	if (rc == CACHE_CLAIM_FRESH)
		return 2;
	if (rc == CACHE_CLAIM_OWNER) {
		p->claimed = 1;
		return 0;
	}
	if (rc == CACHE_CLAIM_BUSY)
		return -1;
	p->parked = 1;
	p->park_deadline_ms = now + ctx->conf->query_timeout_ms + 1000;
	DL_APPEND2(ctx->parked, p, pprev, pnext);
	if (ctx->parked == p)
		park_arm(ctx, now);
	return 1;
}

/* Start the one upstream query for key, or park on another worker's
 * (wait: a prefetch does not). Returns it, or NULL; NULL with *fresh set
 * (when fresh is not NULL) when another worker stored key's answer since
 * the caller's lookup, so that the cache answers. */
static struct query_pending *
pending_new(struct query_ctx *ctx, const struct dnsmsg_query *q,
    const struct cache_key *key, int wait, uint64_t now, int *fresh)
{
	static const struct dnsmsg_answer_info none = {
		.rcode = DNS_RCODE_SERVFAIL };
	struct query_pending *p;
	uint8_t wire[UPSTREAM_QUERY_MAX];
	size_t len;
	int rc;

	if (ctx->closing ||
	    dnsmsg_upstream_query(q, wire, sizeof(wire), &len) != 0)
		return NULL;
	/* Only a client's miss asks the shared cache: a prefetch refreshes
	 * an entry near its end, which the others hold as old as we do,
	 * and what it fetches goes to them. */
	p = mem_calloc(1, sizeof(*p) + (ctx->shc != NULL && wait ? len : 0));
	if (p == NULL)
		return NULL;
	p->ctx = ctx;
	p->key = *key;
	p->q = q->q;
	/* Listed first: the add may fail for memory, and upstream_query
	 * calls no callback, so there is nothing to undo but the add. */
	HASH_ADD_KEYPTR_BYHASHVALUE(hh, ctx->inflight, p->key.bytes,
	    p->key.len, p->key.hash, p);
	if (p->hash_oom) {
		mem_free(p);
		return NULL;
	}
	rc = pending_claim(ctx, p, wait, now);
	if (rc == 2) {
		/* Nothing claimed, nothing parked: only the add to undo. */
		HASH_DEL(ctx->inflight, p);
		mem_free(p);
		if (fresh != NULL)
			*fresh = 1;
		return NULL;
	}
	if (rc == 0 && ctx->shc != NULL && wait) {
		memcpy(p->wire, wire, len);
		p->wire_len = (uint16_t)len;
		if (shcache_get(ctx->shc, &p->key, &p->q, shared_done, p) == 0)
			p->in_shared = 1;
	}
	if (rc < 0 || (rc == 0 && !p->in_shared && upstream_query(ctx->pool,
	    wire, len, &p->q, pending_complete, p, NULL) != 0)) {
		HASH_DEL(ctx->inflight, p);
		/* Workers that parked on it meanwhile must not wait. */
		pending_release(ctx, p, UPSTREAM_ECLOSED, NULL, 0, &none,
		    NULL);
		mem_free(p);
		return NULL;
	}
	budget_add(ctx, 0, 1, (long long)query_pending_cost());
	return p;
}


/* Is there room for one more waiter of cost bytes (and a new pending when
 * new_pending)? */
static int
pending_room(const struct query_ctx *ctx, size_t cost, int new_pending)
{
	const struct conf *cf = ctx->conf;

	if (new_pending) {
		if (budget_now(ctx).pending >= cf->max_pending)
			return 0;
		cost += query_pending_cost();
	}
	return budget_now(ctx).bytes + cost <= cf->max_pending_bytes;
}

/* A hit in the last tenth of its TTL: refresh it now, once, so that
 * popular names never expire for clients. */
static void
maybe_prefetch(struct query_ctx *ctx, const struct dnsmsg_query *q,
    const struct cache_key *key, const struct cache_meta *meta,
    uint64_t now)
{
	struct query_pending *p;
	uint32_t left;

	if (!ctx->conf->prefetch || meta->ttl < PREFETCH_MIN_TTL ||
	    meta->rcode == DNS_RCODE_SERVFAIL)
		return;
	left = meta->age < meta->ttl ? meta->ttl - meta->age : 0;
	if ((uint64_t)left * PREFETCH_FRACTION > meta->ttl)
		return;
	HASH_FIND_BYHASHVALUE(hh, ctx->inflight, key->bytes, key->len,
	    key->hash, p);
	if (p != NULL || !pending_room(ctx, 0, 1))
		return;
	if (pending_new(ctx, q, key, 0, now, NULL) != NULL)
		ctx->metrics->cache_prefetches++;
}

/* The answer from the cache when key's entry is fresh at now_ms, made the
 * client's (its ID, its spelling, its OPT) in out: returns 1 and sets
 * *out_len (and *meta when meta is not NULL); 0 on a miss. */
static int
cache_answer(struct query_ctx *ctx, const uint8_t *msg,
    const struct dnsmsg_query *q, const struct cache_key *key, int udp,
    uint64_t now_ms, uint8_t *out, size_t *out_len, struct cache_meta *meta,
    struct answer_src *a)
{
	size_t n;

	if (cache_get(ctx->cache, key, now_ms, out, DNS_MAX_MSG, &n,
	    meta) != 0)
		return 0;
	a->src = METRICS_SRC_CACHE;
	/* Personalized with its OPT in one: finish_answer's add_opt would
	 * walk the question again. */
	(void)dnsmsg_personalize_opt(out, &n, DNS_MAX_MSG, msg, q, EDE_NONE);
	*out_len = finish_answer(ctx, q, udp, out, n, 0, EDE_NONE, a);
	return 1;
}

/* A miss: wait on the pending upstream query for key, starting it if
 * there is none. stale_ok: an expired entry can answer if it is slow. */
static enum query_result
query_wait(struct query_ctx *ctx, const uint8_t *msg, size_t len,
    const struct dnsmsg_query *q, const struct cache_key *key, int udp,
    int stale_ok, uint64_t now_ms, uint8_t *out, size_t *out_len,
    query_done_cb done_cb, void *arg, const void *origin, size_t origin_len,
    const struct answer_src *a)
{
	struct answer_src err = *a;
	struct query_pending *p;
	struct query_waiter *w;
	size_t cost = query_waiter_cost(len, origin_len);
	int fresh = 0, tries = 0;

	HASH_FIND_BYHASHVALUE(hh, ctx->inflight, key->bytes, key->len,
	    key->hash, p);
	if (budget_now(ctx).waiting >= ctx->conf->max_pending ||
	    !pending_room(ctx, cost, p == NULL))
		goto full;
	w = mem_alloc(sizeof(*w) + ORIGIN_OFF(len) + origin_len);
	if (w == NULL)
		goto overload;
	if (p != NULL)
		ctx->metrics->queries_coalesced++;
	/* Another worker's answer landed between our lookup and our claim
	 * (fresh): it is this client's, as if we had waited for it. Twice
	 * at most: the entry may be flushed or evicted before we read it. */
	while (p == NULL && tries++ < 2) {
		fresh = 0;
		p = pending_new(ctx, q, key, 1, now_ms, &fresh);
		if (p != NULL && p->parked)
			ctx->metrics->queries_coalesced++;
		if (fresh && cache_answer(ctx, msg, q, key, udp, now_ms, out,
		    out_len, NULL, &err)) {
			ctx->metrics->queries_coalesced++;
			mem_free(w);
			return QUERY_ANSWER;
		}
		if (!fresh)
			break;
	}
	if (p == NULL) {
		mem_free(w);
		goto overload;
	}
	memset(w, 0, sizeof(*w));
	w->p = p;
	w->q = *q;
	w->udp = udp;
	w->t0_ns = a->t0_ns != 0 ? a->t0_ns : uv_hrtime();
	if (a->peer != NULL)
		memcpy(&w->peer, a->peer, a->peer->sa_family == AF_INET6 ?
		    sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
	w->done_cb = done_cb;
	w->arg = arg;
	w->len = len;
	w->origin_len = origin_len;
	memcpy(w->msg, msg, len);
	if (origin_len != 0)
		memcpy(w->msg + ORIGIN_OFF(len), origin, origin_len);
	DL_APPEND(p->waiters, w);
	budget_add(ctx, 1, 0, (long long)cost);
	if (stale_ok) {
		/* Every waiter gets the same delay, so appending keeps the
		 * list in deadline order. */
		w->stale_at_ms = now_ms + ctx->conf->stale_client_timeout_ms;
		w->on_stale_list = 1;
		DL_APPEND2(ctx->stale_head, w, sprev, snext);
		if (ctx->stale_head == w)
			(void)uv_timer_start(&ctx->stale_timer, stale_timer_cb,
			    ctx->conf->stale_client_timeout_ms, 0);
	}
	return QUERY_PENDING;

full:
	/* Too many misses in flight: this one is refused, at once. */
	ctx->metrics->pending_full++;
	err.src = METRICS_SRC_ERROR;
	*out_len = error_answer(ctx, msg, len, q, DNS_RCODE_SERVFAIL,
	    EDE_OTHER, udp, out, &err);
	return *out_len ? QUERY_ANSWER : QUERY_DROP;

overload:
	/* Out of memory or closing: say so to the client, not silence. */
	ctx->metrics->drops_overload++;
	err.src = METRICS_SRC_ERROR;
	*out_len = error_answer(ctx, msg, len, q, DNS_RCODE_SERVFAIL, EDE_NONE,
	    udp, out, &err);
	return *out_len ? QUERY_ANSWER : QUERY_DROP;
}

/* acl_match for addr, remembered per client in a small direct-mapped
 * table: the rule walk costs about a tenth of a cache hit. */
static enum conf_acl_action
acl_verdict(struct query_ctx *ctx, const unsigned char addr[16])
{
	struct query_acl_slot *slot;
	unsigned h;

	/* The low bytes differ most between clients, v4-mapped or v6. */
	h = (unsigned)(addr[15] ^ addr[14] * 31u ^ addr[13] * 131u ^
	    addr[7] * 7u) % QUERY_ACL_SLOTS;
	slot = &ctx->acl_cache[h];
	if (slot->used && memcmp(slot->addr, addr, 16) == 0)
		return (enum conf_acl_action)slot->action;
	memcpy(slot->addr, addr, 16);
	slot->action = (unsigned char)acl_match(ctx->conf, addr);
	slot->used = 1;
	return (enum conf_acl_action)slot->action;
}

/* Access control and the rate limit, before the query costs anything.
 * Returns the client's action; for a deny or a query over the limit the
 * drop has been counted. */
static enum conf_acl_action
query_admit(struct query_ctx *ctx, const struct sockaddr *peer,
    uint64_t now_ms)
{
	const struct conf *cf = ctx->conf;
	unsigned char addr[16];
	enum conf_acl_action act;

	if (peer == NULL)
		return CONF_ACL_ALLOW;
	if (acl_addr16(peer, addr) != 0)
		return CONF_ACL_REFUSE;
	act = acl_verdict(ctx, addr);
	if (act == CONF_ACL_DENY) {
		ctx->metrics->drops_acl_deny++;
		return act;
	}
	if (cf->ratelimit_per_client == 0)
		return act;
	if (ctx->rl == NULL) {
		/* Out of memory: no limit rather than no service; the next
		 * query tries again. */
		ctx->rl = ratelimit_new(RATELIMIT_ENTRIES);
		if (ctx->rl == NULL)
			return act;
	}
	if (!ratelimit_allow(ctx->rl, addr, cf->ratelimit_per_client,
	    now_ms)) {
		ctx->metrics->drops_ratelimit++;
		return CONF_ACL_DENY;
	}
	return act;
}

enum query_result
query_handle(struct query_ctx *ctx, const uint8_t *msg, size_t len, int udp,
    const struct sockaddr *peer, uint64_t now_ms, uint8_t *out,
    size_t *out_len, query_done_cb done_cb, void *arg, const void *origin,
    size_t origin_len)
{
	struct answer_src a = { METRICS_SRC_ERROR, peer,
	    ctx->conf->log_queries ? uv_hrtime() : 0, NULL };
	struct dnsmsg_query q;
	struct cache_key key;
	struct cache_meta meta;
	enum conf_acl_action act;
	size_t n;
	int rc, stale_ok = 0;

	rc = dnsmsg_parse_query(msg, len, &q);
	dnsmsg_query_cap_udp(&q, (uint16_t)ctx->conf->max_udp_size);
	ctx->metrics->requests[udp ? METRICS_UDP : METRICS_TCP]
	    [rc == 0 || q.has_question ? metrics_type_index(q.q.qtype) :
	    METRICS_N_TYPES - 1]++;
	act = query_admit(ctx, peer, now_ms);
	if (act == CONF_ACL_DENY)
		return QUERY_DROP;
	if (act == CONF_ACL_REFUSE && rc >= 0) {
		*out_len = error_answer(ctx, msg, len, &q, DNS_RCODE_REFUSED,
		    EDE_NONE, udp, out, &a);
		if (*out_len != 0)
			return QUERY_ANSWER;
		rc = -1;
	}
	if (rc < 0) {
		ctx->metrics->drops_malformed++;
		return QUERY_DROP;
	}
	if (rc > 0) {
		*out_len = error_answer(ctx, msg, len, &q, rc, EDE_NONE, udp,
		    out, &a);
		if (*out_len == 0) {
			ctx->metrics->drops_malformed++;
			return QUERY_DROP;
		}
		return QUERY_ANSWER;
	}
	/* CHAOS and Hesiod ask about this server: never forwarded. */
	if (local_chaos_answer(msg, len, &q, ctx->conf->identity,
	    ctx->conf->version, out, DNS_MAX_MSG, &n) == 1 ||
	    (ctx->conf->local_zones &&
	    local_answer(msg, len, &q, out, DNS_MAX_MSG, &n) == 1)) {
		ctx->metrics->local_answers++;
		a.src = METRICS_SRC_LOCAL;
		*out_len = finish_answer(ctx, &q, udp, out, n, 0, EDE_NONE,
		    &a);
		return QUERY_ANSWER;
	}
	cache_key_make(&key, &q);
	if (cache_answer(ctx, msg, &q, &key, udp, now_ms, out, out_len, &meta,
	    &a)) {
		ctx->metrics->cache_hits++;
		/* A query without RD causes no upstream traffic. */
		if (q.flags & DNS_FLAG_RD)
			maybe_prefetch(ctx, &q, &key, &meta, now_ms);
		return QUERY_ANSWER;
	}
	ctx->metrics->cache_misses++;
	/* RFC 1034 4.3.1: without RD the client asks for what we hold, not
	 * for recursion: a fresh cache entry or nothing. REFUSED, as Unbound
	 * answers clients it does not let snoop. */
	if (!(q.flags & DNS_FLAG_RD)) {
		*out_len = error_answer(ctx, msg, len, &q, DNS_RCODE_REFUSED,
		    EDE_NONE, udp, out, &a);
		return *out_len ? QUERY_ANSWER : QUERY_DROP;
	}
	if (ctx->conf->serve_stale &&
	    cache_get_stale(ctx->cache, &key, now_ms, STALE_TTL, out,
	    DNS_MAX_MSG, &n, &meta) == 0 && meta.rcode != DNS_RCODE_SERVFAIL) {
		if (meta.refresh_after_ms > now_ms) {
			/* A refresh failed moments ago: answer stale now
			 * rather than make the client wait for another. */
			ctx->metrics->cache_stale_served++;
			a.src = METRICS_SRC_STALE;
			dnsmsg_personalize(out, n, msg, &q);
			*out_len = finish_answer(ctx, &q, udp, out, n, 1,
			    EDE_STALE_ANSWER, &a);
			return QUERY_ANSWER;
		}
		stale_ok = 1;
	}
	return query_wait(ctx, msg, len, &q, &key, udp, stale_ok, now_ms, out,
	    out_len, done_cb, arg, origin, origin_len, &a);
}

int
query_ctx_init(struct query_ctx *ctx, uv_loop_t *loop,
    const struct conf *conf, struct cache *cache, struct upstream_pool *pool,
    struct metrics *m)
{
	memset(ctx, 0, sizeof(*ctx));
	ctx->loop = loop;
	ctx->conf = conf;
	ctx->cache = cache;
	ctx->pool = pool;
	ctx->metrics = m;
	ctx->stale_timer.data = ctx;
	ctx->park_timer.data = ctx;
	if (uv_timer_init(loop, &ctx->stale_timer) != 0)
		return -1;
	return uv_timer_init(loop, &ctx->park_timer);
}

void
query_ctx_share(struct query_ctx *ctx, const struct query_share *share)
{
	ctx->share = share;
}

void
query_ctx_set_shcache(struct query_ctx *ctx, struct shcache *shc)
{
	ctx->shc = shc;
}

void
query_ctx_set_conf(struct query_ctx *ctx, const struct conf *conf)
{
	ctx->conf = conf;
	memset(ctx->acl_cache, 0, sizeof(ctx->acl_cache));
}

size_t
query_waiting(const struct query_ctx *ctx)
{
	return ctx->n_waiting;
}

size_t
query_pending(const struct query_ctx *ctx)
{
	return ctx->n_pending;
}

size_t
query_pending_bytes(const struct query_ctx *ctx)
{
	return ctx->pending_bytes;
}

size_t
query_waiter_cost(size_t len, size_t origin_len)
{
	return sizeof(struct query_waiter) + ORIGIN_OFF(len) + origin_len +
	    MALLOC_OVERHEAD;
}

size_t
query_pending_cost(void)
{
	return sizeof(struct query_pending) + MALLOC_OVERHEAD +
	    UPSTREAM_REQ_COST;
}

void
query_ctx_close(struct query_ctx *ctx)
{
	uint64_t now = uv_now(ctx->loop);

	ctx->closing = 1;
	/* Parked waiters would hear from another worker that is closing
	 * too: they get their SERVFAIL (or stale answer) now. */
	while (ctx->parked != NULL)
		park_end(ctx, ctx->parked, UPSTREAM_ECLOSED, NULL, 0, NULL,
		    NULL, now);
	ratelimit_free(ctx->rl);
	ctx->rl = NULL;
	uv_timer_stop(&ctx->stale_timer);
	uv_close((uv_handle_t *)&ctx->stale_timer, NULL);
	uv_timer_stop(&ctx->park_timer);
	uv_close((uv_handle_t *)&ctx->park_timer, NULL);
}
