/* test_query_oom.c: the query path with each allocation failing in turn.
 *
 * The scenario tier's world (query.c, the cache, dnsmsg.c and local.c
 * against fake_upstream.c, as in test_query.c) plays one query mix: cache
 * hits, misses, coalesced misses, a stale answer after an upstream
 * failure, a prefetch, a local name, a malformed message, upstream
 * failures, a cached SERVFAIL, and a shutdown with queries still waiting.
 * It is played with mem_fail_after(n) for n = 0, 1, 2, ... until a run
 * ends without the failure having come (mem_failures() unchanged): every
 * allocation the mix makes after the world is built has failed once.
 *
 * Each run must end with every query accounted for: done callbacks +
 * immediate answers + drops == queries sent, no client called back twice,
 * every answer carrying its client's ID, and every drop (an immediate one,
 * or a done callback without a message) counted in the drop metrics. The
 * sanitizer build checks that nothing crashes or leaks on the way.
 *
 * Time is explicit, as in test_query.c: T0 is the loop's time at the
 * start (the loop is not run before the shutdown), queries and upstream
 * replies are told T0 + n s, and seeded entries are stored before T0.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <uv.h>

#include "cache.h"
#include "conf.h"
#include "dnsmsg.h"
#include "fake_upstream.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "query.h"
#include "upstream.h"
#include "../common/wire.h"

#define N_CLIENTS 32
#define SEC 1000u

struct world {
	uv_loop_t loop;
	struct conf conf;
	struct cache *cache;
	struct metrics m;
	struct upstream_pool *pool;
	struct query_ctx ctx;
	uint64_t t0;
	size_t sent, answered, dropped, done, done_null;
	int calls[N_CLIENTS];
	uint16_t id[N_CLIENTS];
};

/* A query for name/A; with edns, an OPT with DO clear. */
static size_t
build_query(uint8_t *b, uint16_t id, const char *name, int edns)
{
	size_t n = DNS_HDR_LEN;

	memset(b, 0, DNS_HDR_LEN);
	put16(b, id);
	put16(b + 2, DNS_FLAG_RD);
	put16(b + 4, 1);
	n += put_name(b + n, name);
	put16(b + n, DNS_TYPE_A);
	put16(b + n + 2, 1);
	n += 4;
	if (edns) {
		put16(b + 10, 1);
		memcpy(b + n, "\0\0\51\20\0\0\0\0\0\0\0", 11);
		n += 11;
	}
	return n;
}

/* An answer with rcode and, for NOERROR, one A record with TTL ttl. */
static size_t
build_answer(uint8_t *b, const char *name, int rcode, uint32_t ttl)
{
	size_t n = DNS_HDR_LEN;

	memset(b, 0, DNS_HDR_LEN);
	put16(b, 0x5151);
	put16(b + 2, (uint16_t)(DNS_FLAG_QR | DNS_FLAG_RD | DNS_FLAG_RA |
	    rcode));
	put16(b + 4, 1);
	n += put_name(b + n, name);
	put16(b + n, DNS_TYPE_A);
	put16(b + n + 2, 1);
	n += 4;
	if (rcode != DNS_RCODE_NOERROR)
		return n;
	put16(b + 6, 1);
	memcpy(b + n, "\300\14\0\1\0\1", 6);
	b[n + 6] = (uint8_t)(ttl >> 24);
	b[n + 7] = (uint8_t)(ttl >> 16);
	b[n + 8] = (uint8_t)(ttl >> 8);
	b[n + 9] = (uint8_t)ttl;
	memcpy(b + n + 10, "\0\4\300\0\2\1", 6);
	return n + 16;
}

static void
done_cb(void *arg, const void *origin, const uint8_t *msg, size_t len)
{
	struct world *w = arg;
	size_t idx;

	memcpy(&idx, origin, sizeof(idx));
	assert_true(idx < N_CLIENTS);
	assert_int_equal(w->calls[idx], 0);
	w->calls[idx]++;
	w->done++;
	if (msg == NULL) {
		w->done_null++;
		return;
	}
	assert_true(len >= DNS_HDR_LEN);
	assert_int_equal(dnsmsg_get_id(msg), w->id[idx]);
}

/* Client idx asks name at T0 + at_ms. */
static void
ask(struct world *w, size_t idx, uint64_t at_ms, const char *name, int edns)
{
	uint8_t q[512], out[DNS_MAX_MSG];
	size_t qn, out_len = 0;
	enum query_result r;

	assert_true(idx < N_CLIENTS);
	w->id[idx] = (uint16_t)(0x7100 + idx);
	qn = build_query(q, w->id[idx], name, edns);
	w->sent++;
	r = query_handle(&w->ctx, q, qn, 1, NULL, w->t0 + at_ms, out, &out_len,
	    done_cb, w, &idx, sizeof(idx));
	assert_int_equal(w->calls[idx], 0);
	switch (r) {
	case QUERY_ANSWER:
		w->answered++;
		assert_true(out_len >= DNS_HDR_LEN);
		assert_int_equal(dnsmsg_get_id(out), w->id[idx]);
		break;
	case QUERY_DROP:
		w->dropped++;
		break;
	case QUERY_PENDING:
		break;
	}
}

/* Seed name in the cache as query.c would store an answer with TTL ttl
 * at stored_at. */
static void
seed(struct world *w, const char *name, uint32_t ttl, uint64_t stored_at)
{
	uint8_t qb[512], ab[512];
	size_t qn = build_query(qb, 1, name, 0);
	size_t an = build_answer(ab, name, DNS_RCODE_NOERROR, ttl);
	struct dnsmsg_query q;
	struct dnsmsg_answer_info info;
	struct cache_key key;

	assert_int_equal(dnsmsg_parse_query(qb, qn, &q), 0);
	assert_int_equal(dnsmsg_parse_answer(ab, an, &q.q, &info), 0);
	cache_key_make(&key, &q);
	assert_int_equal(cache_put(w->cache, &key, ab, an, &info, stored_at),
	    0);
}

static int
is_name(size_t i, const char *name)
{
	uint8_t want[300];
	size_t n = put_name(want, name);
	const struct dnsmsg_question *q = fake_question(i);

	return q != NULL && q->wire_len == n && memcmp(q->wire, want, n) == 0;
}

/* End out-queries that are pending at T0 + at_ms: by name, an answer, a
 * SERVFAIL or a failure. An answer the fake cannot hand over (its copy
 * failed) stays pending for the shutdown. */
static void
upstream_replies(struct world *w, uint64_t at_ms)
{
	uint64_t now = w->t0 + at_ms;
	uint8_t b[512];
	size_t i, n;

	for (i = 0; i < fake_count(); i++) {
		if (fake_state(i) != FAKE_PENDING)
			continue;
		if (is_name(i, "fail.example")) {
			assert_int_equal(fake_fail(i, UPSTREAM_EUNREACH, now), 0);
		} else if (is_name(i, "stale.example")) {
			assert_int_equal(fake_fail(i, UPSTREAM_ETIMEDOUT, now), 0);
		} else if (is_name(i, "sf.example")) {
			n = build_answer(b, "sf.example", DNS_RCODE_SERVFAIL,
			    0);
			(void)fake_answer(i, b, n, now);
		} else if (is_name(i, "wait.example")) {
			continue;      /* until the shutdown */
		} else if (fake_question(i) != NULL) {
			char name[DNS_MAX_NAME_TEXT];

			dnsmsg_name_str(fake_question(i), name, sizeof(name));
			name[strlen(name) - 1] = '\0';   /* trailing dot */
			n = build_answer(b, name, DNS_RCODE_NOERROR, 300);
			(void)fake_answer(i, b, n, now);
		}
	}
}

/* One run of the mix with the (n+1)th allocation failing (n < 0: none).
 * Returns 1 when a failure was injected. */
static int
run_mix(long n)
{
	struct world *w = calloc(1, sizeof(*w));
	char err[CONF_ERR_MAX];
	unsigned long before;
	uint64_t drops;
	uint8_t junk[5] = { 1, 2, 3, 4, 5 };
	uint8_t out[DNS_MAX_MSG];
	size_t idx = N_CLIENTS - 1, out_len, i;

	assert_non_null(w);
	assert_int_equal(uv_loop_init(&w->loop), 0);
	w->t0 = uv_now(&w->loop);
	conf_init(&w->conf);
	assert_int_equal(conf_set(&w->conf, "upstream",
	    "127.0.0.1@853#dns.test", "test", err, sizeof(err)), 0);
	assert_int_equal(conf_finish(&w->conf, err, sizeof(err)), 0);
	w->cache = cache_new(w->conf.cache_size, w->conf.stale_max_age);
	assert_non_null(w->cache);
	w->pool = upstream_pool_new(&w->loop, &w->conf, NULL, &w->m);
	assert_non_null(w->pool);
	assert_int_equal(query_ctx_init(&w->ctx, &w->loop, &w->conf,
	    w->cache, w->pool, &w->m), 0);
	assert_true(w->t0 > 200 * SEC);
	seed(w, "stale.example", 1, w->t0 - 2 * SEC);    /* stale at T0 */
	seed(w, "pf.example", 100, w->t0 - 91 * SEC);    /* prefetch due */
	seed(w, "hit.example", 300, w->t0);

	before = mem_failures();
	mem_fail_after(n);

	ask(w, 0, 0, "miss.example", 1);
	ask(w, 1, 0, "MISS.example", 0);           /* coalesced */
	ask(w, 2, 0, "miss.Example", 1);           /* coalesced */
	ask(w, 3, 0, "hit.example", 1);
	ask(w, 4, 0, "pf.example", 0);             /* hit + prefetch */
	ask(w, 5, 0, "stale.example", 1);          /* waits, stale-ok */
	ask(w, 6, 0, "fail.example", 1);
	ask(w, 7, 0, "sf.example", 0);
	ask(w, 8, 0, "localhost", 1);
	ask(w, 9, 0, "wait.example", 1);
	ask(w, 10, 0, "wait.example", 0);
	w->sent++;
	out_len = 0;
	if (query_handle(&w->ctx, junk, sizeof(junk), 1, NULL, w->t0, out,
	    &out_len, done_cb, w, &idx, sizeof(idx)) == QUERY_DROP)
		w->dropped++;
	else
		fail_msg("a 5-byte message was not dropped");

	upstream_replies(w, 0);
	/* Repeats: from the cache where the answers got in, else anew. */
	ask(w, 11, 1 * SEC, "miss.example", 0);
	ask(w, 12, 1 * SEC, "stale.example", 1);  /* stale at once */
	ask(w, 13, 1 * SEC, "sf.example", 1);     /* cached SERVFAIL */
	ask(w, 14, 1 * SEC, "fail.example", 0);
	ask(w, 15, 2 * SEC, "pf.example", 1);
	upstream_replies(w, 2 * SEC);
	ask(w, 16, 3 * SEC, "new.example", 1);

	/* main.c's order: the pool completes every waiting query. */
	upstream_pool_close(w->pool);
	query_ctx_close(&w->ctx);
	assert_int_equal(uv_run(&w->loop, UV_RUN_DEFAULT), 0);
	mem_fail_after(-1);

	assert_int_equal(w->done + w->answered + w->dropped, w->sent);
	for (i = 0; i < N_CLIENTS; i++)
		assert_true(w->calls[i] <= 1);
	drops = w->m.drops_malformed + w->m.drops_client_gone +
	    w->m.drops_send_failed + w->m.drops_overload;
	/* Overload drops answered with SERVFAIL count in drops too. */
	assert_true(drops >= w->dropped + w->done_null);
	assert_int_equal(w->m.drops_malformed, 1);

	assert_int_equal(uv_loop_close(&w->loop), 0);
	cache_free(w->cache);
	free(w);
	return mem_failures() != before;
}

static void
test_each_allocation_fails(void **state)
{
	long n;

	(void)state;
	/* Without failures first: the mix itself must be sound. */
	assert_int_equal(run_mix(-1), 0);
	for (n = 0; run_mix(n); n++)
		assert_true(n < 10000);
	/* It really went through allocations. */
	assert_true(n > 5);
	print_message("query mix: %ld allocations failed in turn\n", n);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_each_allocation_fails),
	};

	log_open(LOGL_ERR, 1);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
