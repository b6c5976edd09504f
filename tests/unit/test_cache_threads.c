/* test_cache_threads.c: the answer cache used by many threads at once.
 *
 * N_THREADS threads share one cache and each runs N_OPS random operations
 * on an overlapping set of keys: puts, fresh and stale gets, failed
 * refreshes, claims and releases, and now and then a flush, a flush by
 * name, a dump, a stats read and a resize. Each thread has its own clock,
 * a little apart from the others', as each worker's loop has. Checks made
 * inside the threads are recorded (cmocka's asserts may not be called off
 * the main thread) and asserted after the join; then the invariants of
 * the whole: the byte bound, stats that agree with a dump, no claim record
 * left, and only one owner of a key's fetch at any time (the test keeps
 * its own atomic idea of the owner of each key, which a second OWNER would
 * contradict). The run is twice: one shard (every thread on one lock) and
 * 16.
 *
 * The point of the test is as much to be run under ThreadSanitizer as to
 * pass; from the source directory:
 *   mkdir build-tsan && cd build-tsan &&
 *   ../configure CFLAGS="-O1 -g -fsanitize=thread" &&
 *   make tests/unit/test_cache_threads && ./tests/unit/test_cache_threads
 * TSan reports a race and exits non-zero at the end.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <cmocka.h>

#include <uv.h>

#include "cache.h"
#include "dnsmsg.h"

#define N_THREADS 8
#define N_OPS 50000
#define N_KEYS 4096
#define N_HOT 256          /* most operations use these */
#define N_CLAIM 64         /* claims use these, so that they meet */
#define N_HOLD 4           /* fetches a thread owns at once, at most */
#define STALE_S 5
#define BIG (16 * CACHE_MIN_SHARD_BYTES)
#define ANS_MAX 4000
#define TTL_AT 12          /* where each answer has its one TTL field */

static struct cache_key keys[N_KEYS];
static atomic_int owner_of[N_KEYS];    /* per the test: -1 = nobody */

struct worker {
	uv_thread_t tid;
	struct cache *c;
	size_t max_bytes;          /* as made; resized to it or half */
	unsigned id;
	uint64_t rnd;
	uint64_t now;
	unsigned held[N_HOLD];
	unsigned n_held;
	/* the first check that failed, if any */
	int bad_line;
	char bad[120];
	/* what the run did */
	unsigned long hits, stale_hits, puts, owners, waits, busy, woken;
	unsigned long flushes, dumps, dumped;
	unsigned long fresh;       /* test_one_fetch_per_key's FRESH claims */
};

#define CHECK(w, cond) \
	check((w), (cond), __LINE__, #cond)

static void
check(struct worker *w, int ok, int line, const char *what)
{
	if (ok || w->bad_line != 0)
		return;
	w->bad_line = line;
	snprintf(w->bad, sizeof(w->bad), "%s", what);
}

static uint32_t
rnd(struct worker *w)
{
	w->rnd ^= w->rnd >> 12;
	w->rnd ^= w->rnd << 25;
	w->rnd ^= w->rnd >> 27;
	return (uint32_t)((w->rnd * 0x2545F4914F6CDD1DULL) >> 32);
}

/* Key i: "kNNNNN" padded with x to a length that varies with i. */
static void
keys_init(void)
{
	struct dnsmsg_query q;
	uint8_t wire[64];
	size_t lab;
	unsigned i;

	for (i = 0; i < N_KEYS; i++) {
		lab = 6 + i % 40;
		memset(wire, 'x', sizeof(wire));
		wire[0] = (uint8_t)lab;
		snprintf((char *)wire + 1, 7, "k%05u", i);
		wire[7] = 'x';
		wire[1 + lab] = 0;
		memset(&q, 0, sizeof(q));
		q.has_question = 1;
		memcpy(q.q.wire, wire, lab + 2);
		q.q.wire_len = lab + 2;
		q.q.qtype = DNS_TYPE_A;
		q.q.qclass = 1;
		cache_key_make(&keys[i], &q);
		atomic_init(&owner_of[i], -1);
	}
}

/* Key i's answer is always the same bytes, whoever puts it, so that any
 * hit can be checked: a length and a pattern from i, and one TTL field. */
static size_t
answer_of(unsigned i, uint8_t *buf)
{
	size_t len = 40 + (i * 37) % (ANS_MAX - 40), j;

	for (j = 0; j < len; j++)
		buf[j] = (uint8_t)(i * 13 + j * 7);
	buf[3] = 0x80;    /* RA, NOERROR */
	buf[TTL_AT] = 0;
	buf[TTL_AT + 1] = 0;
	buf[TTL_AT + 2] = 0;
	buf[TTL_AT + 3] = 60;
	return len;
}

static void
check_copy(struct worker *w, unsigned i, const uint8_t *out, size_t len,
    int stale)
{
	uint8_t want[ANS_MAX];
	size_t n = answer_of(i, want);

	CHECK(w, len == n);
	if (len != n)
		return;
	CHECK(w, memcmp(out, want, TTL_AT) == 0);
	CHECK(w, memcmp(out + TTL_AT + 4, want + TTL_AT + 4,
	    n - TTL_AT - 4) == 0);
	if (stale)
		CHECK(w, out[TTL_AT + 3] == 30 && out[TTL_AT + 2] == 0);
	else
		CHECK(w, out[TTL_AT + 3] <= 60 && out[TTL_AT + 2] == 0);
}

static unsigned
pick(struct worker *w)
{
	return rnd(w) % 4 != 0 ? rnd(w) % N_HOT : rnd(w) % N_KEYS;
}

static int
dump_cb(void *arg, const struct cache_entry_info *e)
{
	struct worker *w = arg;

	CHECK(w, e->name[0] == 'k' && e->qtype == DNS_TYPE_A && e->bytes > 0);
	w->dumped++;
	return 0;
}

/* End the fetch of held[j]: the test forgets the owner first, so that
 * the next owner, who may come as soon as the record is gone, finds the
 * key free. */
static void
release_held(struct worker *w, unsigned j)
{
	unsigned i = w->held[j];
	uint64_t mask;
	int me = (int)w->id;

	CHECK(w, atomic_compare_exchange_strong(&owner_of[i], &me, -1));
	mask = cache_release(w->c, &keys[i], w->id);
	CHECK(w, (mask & (uint64_t)1 << w->id) == 0);
	CHECK(w, mask >> N_THREADS == 0);
	w->woken += (unsigned long)__builtin_popcountll(mask);
	w->held[j] = w->held[--w->n_held];
}

static void
op_claim(struct worker *w)
{
	unsigned i = rnd(w) % N_CLAIM, j;
	int rc, me = (int)w->id, nobody = -1, held = 0;

	for (j = 0; j < w->n_held; j++)
		held |= w->held[j] == i;
	if (!held && w->n_held == N_HOLD)
		release_held(w, 0);
	rc = cache_claim(w->c, &keys[i], w->id, (int)(rnd(w) & 1));
	switch (rc) {
	case CACHE_CLAIM_OWNER:
		w->owners++;
		if (held) {
			CHECK(w, atomic_load(&owner_of[i]) == me);
			break;
		}
		/* Nobody else may think they own it. */
		CHECK(w, atomic_compare_exchange_strong(&owner_of[i], &nobody,
		    me));
		w->held[w->n_held++] = i;
		break;
	case CACHE_CLAIM_WAIT:
		CHECK(w, !held);
		w->waits++;
		break;
	case CACHE_CLAIM_BUSY:
		CHECK(w, !held);
		w->busy++;
		break;
	default:
		CHECK(w, 0 && "claim result");
	}
}

static void
worker_run(void *arg)
{
	struct worker *w = arg;
	struct dnsmsg_answer_info info;
	struct cache_stats st;
	uint8_t buf[ANS_MAX], out[ANS_MAX];
	size_t len, n;
	unsigned op, i, j, k;
	int rc;

	memset(&info, 0, sizeof(info));
	info.cacheable = 1;
	info.n_ttl = 1;
	info.ttl_off[0] = TTL_AT;
	for (k = 0; k < N_OPS; k++) {
		w->now += rnd(w) % 13;
		op = rnd(w) % 1000;
		i = pick(w);
		if (op < 400) {
			rc = cache_get(w->c, &keys[i], w->now, out, sizeof(out),
			    &n, NULL);
			CHECK(w, rc == 0 || rc == -ENOENT);
			if (rc == 0) {
				check_copy(w, i, out, n, 0);
				w->hits++;
			}
		} else if (op < 500) {
			rc = cache_get_stale(w->c, &keys[i], w->now, 30, out,
			    sizeof(out), &n, NULL);
			CHECK(w, rc == 0 || rc == -ENOENT);
			if (rc == 0) {
				check_copy(w, i, out, n, 1);
				w->stale_hits++;
			}
		} else if (op < 700) {
			len = answer_of(i, buf);
			info.ttl = 1 + rnd(w) % 10;
			CHECK(w, cache_put(w->c, &keys[i], buf, len, &info,
			    w->now) == 0);
			w->puts++;
		} else if (op < 720) {
			cache_refresh_failed(w->c, &keys[i], w->now + 1000);
		} else if (op < 900) {
			op_claim(w);
		} else if (op < 980) {
			if (w->n_held > 0)
				release_held(w, rnd(w) % w->n_held);
			/* Not the owner of a key it holds no claim on. */
			i = rnd(w) % N_CLAIM;
			for (j = 0; j < w->n_held && w->held[j] != i; j++)
				continue;
			if (j == w->n_held)
				CHECK(w, cache_release(w->c, &keys[i], w->id) ==
				    0);
		} else if (op < 990) {
			cache_get_stats(w->c, &st);
			CHECK(w, st.bytes <= st.max_bytes);
			/* Only one shard's count is a snapshot: across shards
			 * the stats are read one lock after another, and a
			 * record released behind the reader and another made
			 * ahead of it are both counted. */
			if (st.shards == 1)
				CHECK(w, st.inflight <=
				    (size_t)N_THREADS * N_HOLD);
		} else if (rnd(w) % 16 == 0) {
			/* An operator's request now and then. */
			switch (rnd(w) % 4) {
			case 0:
				(void)cache_flush(w->c);
				w->flushes++;
				break;
			case 1:
				(void)cache_flush_name(w->c, keys[i].bytes,
				    keys[i].len - 5, rnd(w) & 1);
				w->flushes++;
				break;
			case 2:
				CHECK(w, cache_dump(w->c, w->now, dump_cb, w) ==
				    0);
				w->dumps++;
				break;
			default:
				cache_resize(w->c, rnd(w) & 1 ? w->max_bytes :
				    w->max_bytes / 2);
				break;
			}
		}
	}
	while (w->n_held > 0)
		release_held(w, 0);
}

struct dump_sum {
	size_t n;
	size_t bytes;
};

static int
sum_cb(void *arg, const struct cache_entry_info *e)
{
	struct dump_sum *d = arg;

	d->n++;
	d->bytes += e->bytes;
	return 0;
}

static void
run(unsigned shards, size_t max_bytes)
{
	static struct worker w[N_THREADS];
	struct cache_stats st;
	struct dump_sum d;
	struct cache *c;
	unsigned long hits = 0, stale_hits = 0, owners = 0, waits = 0;
	unsigned long busy = 0, woken = 0, dumped = 0;
	unsigned i;

	keys_init();
	c = cache_new_shards(max_bytes, STALE_S, shards);
	assert_non_null(c);
	cache_get_stats(c, &st);
	assert_int_equal(st.shards, shards);
	memset(w, 0, sizeof(w));
	for (i = 0; i < N_THREADS; i++) {
		w[i].c = c;
		w[i].max_bytes = max_bytes;
		w[i].id = i;
		w[i].rnd = 0x9e3779b97f4a7c15ULL * (i + 1);
		w[i].now = 1000 + i * 150;    /* clocks a little apart */
		assert_int_equal(uv_thread_create(&w[i].tid, worker_run, &w[i]),
		    0);
	}
	for (i = 0; i < N_THREADS; i++)
		assert_int_equal(uv_thread_join(&w[i].tid), 0);

	for (i = 0; i < N_THREADS; i++) {
		if (w[i].bad_line != 0)
			fail_msg("thread %u, line %d: %s", i, w[i].bad_line,
			    w[i].bad);
		hits += w[i].hits;
		stale_hits += w[i].stale_hits;
		owners += w[i].owners;
		waits += w[i].waits;
		busy += w[i].busy;
		woken += w[i].woken;
		dumped += w[i].dumped;
	}
	cache_get_stats(c, &st);
	printf("%u shards: %lu hits, %lu stale hits, %lu owners, %lu waits, "
	    "%lu busy, %lu woken; %zu entries, %zu bytes of %zu, "
	    "%llu evictions, %llu expired, %llu flushes, %lu dumped\n",
	    shards, hits, stale_hits, owners, waits, busy, woken, st.entries,
	    st.bytes, st.max_bytes, (unsigned long long)st.evictions,
	    (unsigned long long)st.expired, (unsigned long long)st.flushes,
	    dumped);
	/* Every claim was released, and a waiter is woken at most once per
	 * wait (two waits on one record are one bit). */
	assert_int_equal(st.inflight, 0);
	assert_true(woken <= waits);
	for (i = 0; i < N_CLAIM; i++)
		assert_int_equal(atomic_load(&owner_of[i]), -1);
	/* The bound holds; the stats agree with what is there (at time 0
	 * every entry is fresh: none is skipped as dead). */
	assert_true(st.bytes <= st.max_bytes);
	memset(&d, 0, sizeof(d));
	assert_int_equal(cache_dump(c, 0, sum_cb, &d), 0);
	assert_int_equal(d.n, st.entries);
	assert_int_equal(d.bytes, st.bytes);
	/* The run did what it is meant to. */
	assert_true(hits > 1000);
	assert_true(stale_hits > 100);
	assert_true(owners > 1000);
	assert_true(waits > 100);
	assert_true(busy > 100);
	assert_true(woken > 0);
	assert_true(st.evictions > 0);
	assert_true(st.expired > 0);
	assert_true(st.flushes > 0);
	cache_free(c);
}

static void
test_one_shard(void **state)
{
	(void)state;
	run(1, 1 << 20);
}

static void
test_16_shards(void **state)
{
	(void)state;
	run(16, BIG);
}

/* ---- one fetch per key: the client's miss path of every worker ----
 *
 * Each thread walks the same keys in the same order, as workers do when
 * clients ask them all for the same new names: look up; on a miss claim
 * with cache_claim_miss; the owner "fetches" (counts it), puts the answer
 * and releases; a waiter would be woken by that release; a claim that
 * finds the answer already there must find it with cache_get. Every key is
 * fetched exactly once. A plain cache_claim fails this: a thread that
 * missed before another's put and claims after its release finds no
 * record and fetches again. */

#define F_KEYS 1024
#define F_PASSES 8

static atomic_int fetches[F_KEYS];

static void
fetcher_run(void *arg)
{
	struct worker *f = arg;
	struct dnsmsg_answer_info info;
	uint8_t buf[ANS_MAX], out[ANS_MAX];
	uint64_t now = 1000;    /* one clock: nothing expires */
	size_t len, n;
	unsigned i, pass;
	int rc;

	memset(&info, 0, sizeof(info));
	info.cacheable = 1;
	info.n_ttl = 1;
	info.ttl_off[0] = TTL_AT;
	info.ttl = 300;
	for (pass = 0; pass < F_PASSES; pass++) {
		for (i = pass * (F_KEYS / F_PASSES); i < (pass + 1) *
		    (F_KEYS / F_PASSES); i++) {
			if (cache_get(f->c, &keys[i], now, out, sizeof(out),
			    &n, NULL) == 0) {
				f->hits++;
				continue;
			}
			rc = cache_claim_miss(f->c, &keys[i], f->id, now);
			if (rc == CACHE_CLAIM_WAIT) {
				f->waits++;
			} else if (rc == CACHE_CLAIM_FRESH) {
				f->fresh++;
				CHECK(f, cache_get(f->c, &keys[i], now, out,
				    sizeof(out), &n, NULL) == 0);
			} else {
				CHECK(f, rc == CACHE_CLAIM_OWNER);
				f->owners++;
				atomic_fetch_add(&fetches[i], 1);
				len = answer_of(i, buf);
				CHECK(f, cache_put(f->c, &keys[i], buf, len,
				    &info, now) == 0);
				(void)cache_release(f->c, &keys[i], f->id);
			}
		}
	}
}

static void
test_one_fetch_per_key(void **state)
{
	static struct worker f[N_THREADS];
	struct cache_stats st;
	unsigned long owners = 0, waits = 0, fresh = 0, hits = 0;
	struct cache *c;
	unsigned i;

	(void)state;
	keys_init();
	/* Room for every answer: an evicted key may rightly be fetched
	 * again. */
	c = cache_new_shards((size_t)64 << 20, 0, 16);
	assert_non_null(c);
	memset(f, 0, sizeof(f));
	for (i = 0; i < F_KEYS; i++)
		atomic_init(&fetches[i], 0);
	for (i = 0; i < N_THREADS; i++) {
		f[i].c = c;
		f[i].id = i;
		assert_int_equal(uv_thread_create(&f[i].tid, fetcher_run,
		    &f[i]), 0);
	}
	for (i = 0; i < N_THREADS; i++)
		assert_int_equal(uv_thread_join(&f[i].tid), 0);
	for (i = 0; i < N_THREADS; i++) {
		if (f[i].bad_line != 0)
			fail_msg("thread %u, line %d: %s", i, f[i].bad_line,
			    f[i].bad);
		owners += f[i].owners;
		waits += f[i].waits;
		fresh += f[i].fresh;
		hits += f[i].hits;
	}
	printf("one fetch per key: %lu owners, %lu waits, %lu fresh at the "
	    "claim, %lu hits\n", owners, waits, fresh, hits);
	for (i = 0; i < F_KEYS; i++)
		if (atomic_load(&fetches[i]) != 1)
			fail_msg("key %u fetched %d times", i,
			    atomic_load(&fetches[i]));
	assert_int_equal(owners, F_KEYS);
	cache_get_stats(c, &st);
	assert_int_equal(st.inflight, 0);
	assert_int_equal(st.entries, F_KEYS);
	cache_free(c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_one_shard),
		cmocka_unit_test(test_16_shards),
		cmocka_unit_test(test_one_fetch_per_key),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
