/* cachebench.c: throughput of the shared cache under 1 to 16 threads.
 *
 * Usage: cachebench [-n OPS] [-k KEYS] [-t "1 2 4 8 16"] [-s "1 64"]
 *                   [-r REPEAT] [--no-hash]
 *
 * For each shard count and each thread count: a cache of 256 MiB (every
 * key fits: nothing is evicted) with that many shards, filled with KEYS
 * answers (tests/bench/benchans.h: 51-byte A answers); then the threads,
 * started together at a barrier, each do OPS operations on that fixed key
 * set, keys drawn uniformly by a per-thread xorshift: 90 % cache_get
 * (every one must hit; a miss is an error) and 10 % cache_put of the same
 * key's answer (a replacement: one allocation and one free). The clock is
 * fixed, so nothing expires. Printed: operations per second of all the
 * threads together (from the barrier to the last join) and per thread,
 * and the wall time; with -r, the best of REPEAT runs (on a shared
 * machine the other processes only ever slow a run down). Then, unless --no-hash, the cost of hashing a key
 * with cache_key_hash against uthash's default HASH_JEN.
 *
 * The shard lock is what src/cache.c was compiled with: make bench-cache
 * runs four builds of this program, cachebench (glibc's adaptive pthread
 * mutex, the one the daemon uses), cachebench_uvmutex
 * (-DCACHE_LOCK_UVMUTEX: uv_mutex_t, a plain pthread mutex),
 * cachebench_spin (-DCACHE_LOCK_SPIN: pthread spinlock) and
 * cachebench_rwlock (-DCACHE_LOCK_RWLOCK: uv_rwlock_t, write-locked by
 * cache_get since it moves the entry in the LRU list).
 *
 * Read the figures against the number of CPUs printed: with more threads
 * than CPUs the threads take turns, total throughput cannot grow, and what
 * the figures show is what the lock costs when its holder can be
 * preempted (a mutex sleeps, a spinlock burns the waiter's time slice).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "benchans.h"
#include "cache.h"
#include "dnsmsg.h"

/* Only for HASH_JEN, to compare. */
#include <uthash.h>

#if defined(CACHE_LOCK_SPIN)
#define LOCK_KIND "pthread spinlock"
#elif defined(CACHE_LOCK_RWLOCK)
#define LOCK_KIND "uv_rwlock_t (write-locked by cache_get)"
#elif defined(CACHE_LOCK_UVMUTEX)
#define LOCK_KIND "uv_mutex_t"
#else
#define LOCK_KIND "pthread mutex, adaptive (the daemon's)"
#endif

#define MAX_THREADS 64
#define MAX_RUNS 16
#define CACHE_BYTES ((size_t)256 << 20)
#define NOW 1000

struct bench_key {
	struct cache_key key;
	struct dnsmsg_answer_info info;
	uint8_t ans[BENCH_ANS_MAX];
	size_t len;
};

/* Each on its own cache lines, and what a thread changes per operation
 * kept in locals: the threads share nothing but the cache. */
struct thread {
	_Alignas(64) uv_thread_t tid;
	uv_barrier_t *start;
	struct cache *c;
	const struct bench_key *keys;
	unsigned n_keys;
	unsigned long ops;
	uint64_t rnd;
	unsigned long misses;
	unsigned long failures;
};

static uint32_t
rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return (uint32_t)((*s * 0x2545F4914F6CDD1DULL) >> 32);
}

static void
thread_run(void *arg)
{
	struct thread *t = arg;
	const struct bench_key *k;
	uint8_t out[DNS_MAX_MSG];
	unsigned long i, misses = 0, failures = 0;
	uint64_t state = t->rnd;
	uint32_t r;
	size_t n;

	uv_barrier_wait(t->start);
	for (i = 0; i < t->ops; i++) {
		r = rnd(&state);
		k = &t->keys[(r / 10) % t->n_keys];
		if (r % 10 == 0) {
			if (cache_put(t->c, &k->key, k->ans, k->len, &k->info,
			    NOW) != 0)
				failures++;
		} else if (cache_get(t->c, &k->key, NOW, out, sizeof(out), &n,
		    NULL) != 0) {
			misses++;
		}
	}
	t->misses = misses;
	t->failures = failures;
}

/* Parse "1 2 4" into v; returns the count, 0 on a bad list. */
static unsigned
parse_list(const char *s, unsigned *v, unsigned max, unsigned hi)
{
	unsigned n = 0;
	unsigned long x;
	char *end;

	while (*s != '\0') {
		if (*s == ' ' || *s == ',') {
			s++;
			continue;
		}
		x = strtoul(s, &end, 10);
		if (end == s || x == 0 || x > hi || n == max)
			return 0;
		v[n++] = (unsigned)x;
		s = end;
	}
	return n;
}

/* One run; returns its wall time in seconds. */
static double
run(const struct bench_key *keys, unsigned n_keys, unsigned shards,
    unsigned threads, unsigned long ops)
{
	static struct thread t[MAX_THREADS];
	struct cache_stats st;
	uv_barrier_t start;
	struct cache *c;
	unsigned long misses = 0, failures = 0;
	uint64_t t0, t1;
	unsigned i;

	c = cache_new_shards(CACHE_BYTES, 0, shards);
	if (c == NULL) {
		fprintf(stderr, "cachebench: no memory for the cache\n");
		exit(1);
	}
	for (i = 0; i < n_keys; i++)
		if (cache_put(c, &keys[i].key, keys[i].ans, keys[i].len,
		    &keys[i].info, NOW) != 0) {
			fprintf(stderr, "cachebench: warm-up put failed\n");
			exit(1);
		}
	cache_get_stats(c, &st);
	if (st.shards != shards || st.entries != n_keys) {
		fprintf(stderr, "cachebench: %u shards, %zu entries?\n",
		    st.shards, st.entries);
		exit(1);
	}
	if (uv_barrier_init(&start, threads + 1) != 0)
		exit(1);
	for (i = 0; i < threads; i++) {
		memset(&t[i], 0, sizeof(t[i]));
		t[i].start = &start;
		t[i].c = c;
		t[i].keys = keys;
		t[i].n_keys = n_keys;
		t[i].ops = ops;
		t[i].rnd = 0x9e3779b97f4a7c15ULL * (i + 1);
		if (uv_thread_create(&t[i].tid, thread_run, &t[i]) != 0) {
			fprintf(stderr, "cachebench: no thread\n");
			exit(1);
		}
	}
	uv_barrier_wait(&start);
	t0 = uv_hrtime();
	for (i = 0; i < threads; i++) {
		uv_thread_join(&t[i].tid);
		misses += t[i].misses;
		failures += t[i].failures;
	}
	t1 = uv_hrtime();
	uv_barrier_destroy(&start);
	cache_free(c);
	if (misses != 0 || failures != 0) {
		fprintf(stderr, "cachebench: %lu misses, %lu failed puts\n",
		    misses, failures);
		exit(1);
	}
	return (double)(t1 - t0) / 1e9;
}

static void
report(const struct bench_key *keys, unsigned n_keys, unsigned shards,
    unsigned threads, unsigned long ops, unsigned repeat)
{
	double secs = 0, s, total;
	unsigned i;

	for (i = 0; i < repeat; i++) {
		s = run(keys, n_keys, shards, threads, ops);
		if (i == 0 || s < secs)
			secs = s;
	}
	total = (double)ops * threads / secs;
	printf("%6u %7u %14.2f %14.2f %8.2f\n", shards, threads, total / 1e6,
	    total / threads / 1e6, secs);
	fflush(stdout);
}

/* ns per hash of the keys, by cache_key_hash (in place: it stores the
 * same value again) and by HASH_JEN. */
static void
hash_bench(struct bench_key *keys, unsigned n_keys)
{
	volatile uint32_t sink = 0;
	unsigned long rounds = 50000000, i;
	uint64_t t0, t1, t2;
	struct cache_key *k;
	unsigned h;

	t0 = uv_hrtime();
	for (i = 0; i < rounds; i++) {
		k = &keys[i % n_keys].key;
		cache_key_hash(k);
		sink ^= k->hash;
	}
	t1 = uv_hrtime();
	for (i = 0; i < rounds; i++) {
		k = &keys[i % n_keys].key;
		HASH_JEN(k->bytes, k->len, h);
		sink ^= h;
	}
	t2 = uv_hrtime();
	(void)sink;
	printf("\nhash of a %zu-byte key: cache_key_hash %.1f ns, HASH_JEN "
	    "%.1f ns\n", keys[0].key.len, (double)(t1 - t0) / rounds,
	    (double)(t2 - t1) / rounds);
}

int
main(int argc, char **argv)
{
	unsigned thr[MAX_RUNS] = { 1, 2, 4, 8, 16 }, shr[MAX_RUNS] = { 1, 64 };
	unsigned n_thr = 5, n_shr = 2, n_keys = 10000, repeat = 1, i, j;
	unsigned long ops = 2000000;
	struct bench_key *keys;
	int hash = 1;

	for (i = 1; i < (unsigned)argc; i++) {
		if (strcmp(argv[i], "-n") == 0 && i + 1 < (unsigned)argc)
			ops = strtoul(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "-k") == 0 && i + 1 < (unsigned)argc)
			n_keys = (unsigned)strtoul(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "-t") == 0 && i + 1 < (unsigned)argc)
			n_thr = parse_list(argv[++i], thr, MAX_RUNS,
			    MAX_THREADS);
		else if (strcmp(argv[i], "-s") == 0 && i + 1 < (unsigned)argc)
			n_shr = parse_list(argv[++i], shr, MAX_RUNS,
			    CACHE_MAX_SHARDS);
		else if (strcmp(argv[i], "-r") == 0 && i + 1 < (unsigned)argc)
			repeat = (unsigned)strtoul(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--no-hash") == 0)
			hash = 0;
		else
			n_thr = 0;
		if (n_thr == 0 || n_shr == 0 || ops == 0 || n_keys == 0 ||
		    repeat == 0) {
			fprintf(stderr, "usage: cachebench [-n OPS] [-k KEYS] "
			    "[-t \"1 2 4 8 16\"] [-s \"1 64\"] [-r REPEAT] "
			    "[--no-hash]\n");
			return 2;
		}
	}
	keys = calloc(n_keys, sizeof(*keys));
	if (keys == NULL)
		return 1;
	for (i = 0; i < n_keys; i++)
		bench_answer(i, &keys[i].key, keys[i].ans, &keys[i].len,
		    &keys[i].info);

	printf("cachebench: lock %s; %u keys of %zu-byte answers; %lu "
	    "operations a thread, 90 %% cache_get (hits), 10 %% cache_put; "
	    "best of %u; %u CPUs\n", LOCK_KIND, n_keys, keys[0].len, ops,
	    repeat, uv_available_parallelism());
	printf("%6s %7s %14s %14s %8s\n", "shards", "threads", "Mops/s total",
	    "Mops/s/thread", "wall s");
	for (i = 0; i < n_shr; i++)
		for (j = 0; j < n_thr; j++)
			report(keys, n_keys, shr[i], thr[j], ops, repeat);
	if (hash)
		hash_bench(keys, n_keys);
	free(keys);
	return 0;
}
