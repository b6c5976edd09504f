/* test_cache.c: unit tests of the answer cache (src/cache.c).
 *
 * Answers and their dnsmsg_answer_info are built by hand (TTL fields placed
 * at known offsets in a fake answer buffer), so these tests do not depend on
 * dnsmsg_parse_answer. Time is a literal: the cache never reads a clock.
 * The byte accounting is checked against a model: an entry's cost is a
 * fixed overhead plus key, answer and 2 bytes per TTL offset, the fixed part
 * being measured once from a real entry. The stale window (RFC 8767) is
 * checked at its edges with literal times and, in the randomized test,
 * against the model's idea of each entry's phase.
 *
 * Every test of the first list runs twice: on caches of one shard and on
 * caches asked for 16 (test_shards). A cache whose bound does not matter
 * to the test is made BIG, which is enough for 16 shards; one whose bound
 * is a few entries gets one shard either way (cache_new_shards keeps a
 * shard at CACHE_MIN_SHARD_BYTES or more), so the exact LRU expectations
 * hold in both runs. The second list is about shards, the key hash and the
 * claim records.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <cmocka.h>

#include "cache.h"
#include "dnsmsg.h"
#include "mem.h"

#define NAME_EXAMPLE "\7example\3com" /* the literal's NUL is the root label */

/* A bound that gives 16 shards their minimum share each. */
#define BIG (16 * CACHE_MIN_SHARD_BYTES)

static unsigned test_shards = 1;

static struct cache *
new_cache(size_t max_bytes, uint32_t stale_max_s)
{
	return cache_new_shards(max_bytes, stale_max_s, test_shards);
}

static void
put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint32_t
get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | p[3];
}

static void
query_init(struct dnsmsg_query *q, const uint8_t *wire, size_t wire_len,
    uint16_t qtype, int do_bit, int cd_bit)
{
	memset(q, 0, sizeof(*q));
	q->id = 0x1234;
	q->flags = DNS_FLAG_RD;
	q->has_question = 1;
	memcpy(q->q.wire, wire, wire_len);
	q->q.wire_len = wire_len;
	q->q.qtype = qtype;
	q->q.qclass = 1;
	q->q.end = DNS_HDR_LEN + wire_len + 4;
	q->edns = do_bit;
	q->udp_size = 512;
	q->do_bit = do_bit;
	q->cd_bit = cd_bit;
}

static void
key_for(struct cache_key *k, const char *wire, size_t wire_len,
    uint16_t qtype, int do_bit, int cd_bit)
{
	struct dnsmsg_query q;

	query_init(&q, (const uint8_t *)wire, wire_len, qtype, do_bit, cd_bit);
	cache_key_make(k, &q);
}

/* A key per index, with name lengths that vary with it. */
static void
key_idx(struct cache_key *k, unsigned idx)
{
	uint8_t wire[64];
	size_t lab = 6 + idx % 40;
	struct dnsmsg_query q;

	memset(wire, 'x', sizeof(wire));
	wire[0] = (uint8_t)lab;
	snprintf((char *)wire + 1, 7, "k%05u", idx % 100000);
	wire[7] = 'x';    /* snprintf's NUL */
	wire[1 + lab] = 0;
	query_init(&q, wire, lab + 2, DNS_TYPE_A, 0, 0);
	cache_key_make(k, &q);
}

static void
info_init(struct dnsmsg_answer_info *info, uint32_t ttl,
    const uint16_t *offs, size_t n)
{
	memset(info, 0, sizeof(*info));
	info->rcode = DNS_RCODE_NOERROR;
	info->cacheable = 1;
	info->ttl = ttl;
	info->n_ttl = n;
	if (n > 0)
		memcpy(info->ttl_off, offs, n * sizeof(uint16_t));
}

static void
fill(uint8_t *buf, size_t len, unsigned seed)
{
	size_t i;

	for (i = 0; i < len; i++)
		buf[i] = (uint8_t)(seed * 31 + i * 7);
}

static void
stats(struct cache *c, struct cache_stats *st)
{
	memset(st, 0xa5, sizeof(*st));
	cache_get_stats(c, st);
}

/* Put a len-byte answer without TTL fields (patterned by seed) at now. */
static int
put_plain(struct cache *c, const struct cache_key *k, size_t len,
    unsigned seed, uint32_t ttl, uint64_t now)
{
	static uint8_t buf[4096];
	struct dnsmsg_answer_info info;

	assert_true(len <= sizeof(buf));
	fill(buf, len, seed);
	info_init(&info, ttl, NULL, 0);
	return cache_put(c, k, buf, len, &info, now);
}

/* 1: the entry is there with the content put_plain gave it. */
static int
has_plain(struct cache *c, const struct cache_key *k, size_t len,
    unsigned seed, uint64_t now)
{
	uint8_t want[4096], out[4096];
	size_t out_len = 0;
	int rc;

	rc = cache_get(c, k, now, out, sizeof(out), &out_len, NULL);
	if (rc == -ENOENT)
		return 0;
	assert_int_equal(rc, 0);
	assert_int_equal(out_len, len);
	fill(want, len, seed);
	assert_memory_equal(out, want, len);
	return 1;
}

/* The accounted size of one entry of this shape, as the cache reports it. */
static size_t
measure_cost(const struct cache_key *k, size_t len, size_t n_ttl)
{
	static uint8_t buf[4096];
	struct dnsmsg_answer_info info;
	struct cache_stats st;
	struct cache *c;
	uint16_t offs[8] = { 0 };

	assert_true(n_ttl <= 8 && len <= sizeof(buf) && len >= 4);
	c = cache_new(1 << 20, 0);
	assert_non_null(c);
	info_init(&info, 60, offs, n_ttl);
	memset(buf, 0, len);
	assert_int_equal(cache_put(c, k, buf, len, &info, 0), 0);
	stats(c, &st);
	assert_int_equal(st.entries, 1);
	cache_free(c);
	return st.bytes;
}

static void
test_new_free(void **state)
{
	struct cache_stats st;
	struct cache *c;
	long n;

	(void)state;
	cache_free(NULL);
	c = new_cache(12345, 0);
	assert_non_null(c);
	stats(c, &st);
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.bytes, 0);
	assert_int_equal(st.max_bytes, 12345);
	assert_int_equal(st.evictions, 0);
	assert_int_equal(st.expired, 0);
	assert_int_equal(st.flushes, 0);
	cache_free(c);

	/* The cache, then its shards: either failing fails it all. */
	for (n = 0; n < 2; n++) {
		mem_fail_after(n);
		c = new_cache(BIG, 0);
		mem_fail_after(-1);
		assert_null(c);
	}
	c = new_cache(BIG, 0);
	assert_non_null(c);
	stats(c, &st);
	assert_int_equal(st.shards, test_shards);
	assert_int_equal(st.max_bytes, BIG);
	assert_int_equal(st.inflight, 0);
	cache_free(c);
}

static void
test_accounting(void **state)
{
	struct cache_key k1, k2;
	size_t a, b, c3, d;

	(void)state;
	key_idx(&k1, 0);    /* label 6 */
	key_idx(&k2, 10);   /* label 16 */
	a = measure_cost(&k1, 100, 0);
	b = measure_cost(&k1, 300, 0);
	c3 = measure_cost(&k1, 100, 3);
	d = measure_cost(&k2, 100, 0);
	assert_true(a > k1.len + 100);
	assert_int_equal(b - a, 200);
	assert_int_equal(c3 - a, 3 * sizeof(uint16_t));
	assert_int_equal(d - a, k2.len - k1.len);
}

static void
test_hit_miss(void **state)
{
	struct cache_key ka, kb;
	struct cache_stats st;
	struct cache *c;
	uint8_t out[16];
	size_t out_len = 99;

	(void)state;
	c = new_cache(BIG, 0);
	assert_non_null(c);
	key_for(&ka, NAME_EXAMPLE, sizeof(NAME_EXAMPLE), DNS_TYPE_A, 0, 0);
	key_for(&kb, NAME_EXAMPLE, sizeof(NAME_EXAMPLE), DNS_TYPE_AAAA, 0, 0);

	assert_int_equal(cache_get(c, &ka, 0, out, sizeof(out), &out_len, NULL),
	    -ENOENT);
	assert_int_equal(out_len, 99);
	assert_int_equal(put_plain(c, &ka, 200, 1, 300, 1000), 0);
	assert_true(has_plain(c, &ka, 200, 1, 1000));
	assert_true(has_plain(c, &ka, 200, 1, 2000));
	assert_false(has_plain(c, &kb, 200, 1, 1000));
	stats(c, &st);
	assert_int_equal(st.entries, 1);
	assert_true(st.bytes > 200);
	assert_int_equal(st.expired, 0);
	assert_int_equal(st.evictions, 0);
	cache_free(c);
}

static void
test_ttl_aging(void **state)
{
	static const uint16_t offs[] = { 30, 50, 70 };
	struct dnsmsg_answer_info info;
	struct cache_key k;
	struct cache *c;
	uint8_t ans[100], out[100], want[100];
	size_t out_len;

	(void)state;
	c = new_cache(BIG, 0);
	assert_non_null(c);
	key_for(&k, NAME_EXAMPLE, sizeof(NAME_EXAMPLE), DNS_TYPE_A, 0, 0);
	fill(ans, sizeof(ans), 7);
	put_u32(ans + 30, 300);
	put_u32(ans + 50, 3600);
	put_u32(ans + 70, 300);
	info_init(&info, 300, offs, 3);
	assert_int_equal(cache_put(c, &k, ans, sizeof(ans), &info, 1000), 0);

	/* 42.5 s in the cache: 42 whole seconds off every TTL field. */
	assert_int_equal(cache_get(c, &k, 1000 + 42500, out, sizeof(out),
	    &out_len, NULL), 0);
	assert_int_equal(out_len, sizeof(ans));
	assert_int_equal(get_u32(out + 30), 258);
	assert_int_equal(get_u32(out + 50), 3558);
	assert_int_equal(get_u32(out + 70), 258);
	memcpy(want, ans, sizeof(ans));
	put_u32(want + 30, 258);
	put_u32(want + 50, 3558);
	put_u32(want + 70, 258);
	assert_memory_equal(out, want, sizeof(want));

	/* The stored copy is not aged: a second read at the same time agrees,
	 * and the seconds are counted from the insert, not the last read. */
	assert_int_equal(cache_get(c, &k, 1000 + 42500, out, sizeof(out),
	    &out_len, NULL), 0);
	assert_int_equal(get_u32(out + 30), 258);
	assert_int_equal(cache_get(c, &k, 1000 + 42999, out, sizeof(out),
	    &out_len, NULL), 0);
	assert_int_equal(get_u32(out + 30), 258);
	assert_int_equal(cache_get(c, &k, 1000 + 43000, out, sizeof(out),
	    &out_len, NULL), 0);
	assert_int_equal(get_u32(out + 30), 257);
	assert_int_equal(get_u32(out + 50), 3557);
	/* At insert time nothing is taken off. */
	assert_int_equal(cache_get(c, &k, 1000, out, sizeof(out), &out_len, NULL),
	    0);
	assert_memory_equal(out, ans, sizeof(ans));
	cache_free(c);
}

static void
test_expiry_at_ttl(void **state)
{
	static const uint16_t offs[] = { 20 };
	struct dnsmsg_answer_info info;
	struct cache_stats st;
	struct cache_key k;
	struct cache *c;
	uint8_t ans[64], out[64];
	size_t out_len;

	(void)state;
	c = new_cache(BIG, 0);
	assert_non_null(c);
	key_for(&k, NAME_EXAMPLE, sizeof(NAME_EXAMPLE), DNS_TYPE_A, 0, 0);
	fill(ans, sizeof(ans), 3);
	put_u32(ans + 20, 300);
	info_init(&info, 300, offs, 1);
	assert_int_equal(cache_put(c, &k, ans, sizeof(ans), &info, 1000), 0);

	/* One millisecond before the end: still there, one second left. */
	assert_int_equal(cache_get(c, &k, 1000 + 300000 - 1, out, sizeof(out),
	    &out_len, NULL), 0);
	assert_int_equal(get_u32(out + 20), 1);
	stats(c, &st);
	assert_int_equal(st.entries, 1);

	assert_int_equal(cache_get(c, &k, 1000 + 300000, out, sizeof(out),
	    &out_len, NULL), -ENOENT);
	stats(c, &st);
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.bytes, 0);
	assert_int_equal(st.expired, 1);
	assert_int_equal(st.evictions, 0);

	/* Gone, not expired a second time. */
	assert_int_equal(cache_get(c, &k, 1000 + 300001, out, sizeof(out),
	    &out_len, NULL), -ENOENT);
	stats(c, &st);
	assert_int_equal(st.expired, 1);
	cache_free(c);
}

static void
test_negative_ttl(void **state)
{
	static const uint16_t offs[] = { 40 };
	struct dnsmsg_answer_info info;
	struct cache_stats st;
	struct cache_key k;
	struct cache *c;
	uint8_t ans[80], out[80];
	size_t out_len;

	(void)state;
	c = new_cache(BIG, 0);
	assert_non_null(c);
	key_for(&k, NAME_EXAMPLE, sizeof(NAME_EXAMPLE), DNS_TYPE_AAAA, 1, 0);
	fill(ans, sizeof(ans), 9);
	put_u32(ans + 40, 3600);    /* SOA TTL above the negative TTL */
	info_init(&info, 60, offs, 1);
	info.rcode = DNS_RCODE_NXDOMAIN;
	info.negative = 1;
	assert_int_equal(cache_put(c, &k, ans, sizeof(ans), &info, 5000), 0);

	assert_int_equal(cache_get(c, &k, 5000 + 59999, out, sizeof(out),
	    &out_len, NULL), 0);
	assert_int_equal(get_u32(out + 40), 3600 - 59);
	assert_int_equal(cache_get(c, &k, 5000 + 60000, out, sizeof(out),
	    &out_len, NULL), -ENOENT);
	stats(c, &st);
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.expired, 1);
	cache_free(c);
}

static void
test_key_make(void **state)
{
	static const uint8_t want_tail[] = { 0, 28, 0, 1, 0x01 };
	struct dnsmsg_query q1, q2;
	struct cache_key k1, k2, kdo, kcd, kboth, ktype;
	struct cache_stats st;
	struct cache *c;

	(void)state;
	/* Two queries with the same lowercased name (the clients spelled it
	 * differently, which dnsmsg has already folded) but different IDs,
	 * header flags and payload sizes make the same key. */
	query_init(&q1, (const uint8_t *)NAME_EXAMPLE, sizeof(NAME_EXAMPLE),
	    DNS_TYPE_AAAA, 1, 0);
	query_init(&q2, (const uint8_t *)NAME_EXAMPLE, sizeof(NAME_EXAMPLE),
	    DNS_TYPE_AAAA, 1, 0);
	q2.id = 0xbeef;
	q2.flags = 0;
	q2.udp_size = 4096;
	q2.q.end = 99;
	memset(&k1, 0x11, sizeof(k1));
	memset(&k2, 0x22, sizeof(k2));
	cache_key_make(&k1, &q1);
	cache_key_make(&k2, &q2);
	assert_int_equal(k1.len, sizeof(NAME_EXAMPLE) + 5);
	assert_int_equal(k2.len, k1.len);
	assert_memory_equal(k1.bytes, k2.bytes, k1.len);
	assert_memory_equal(k1.bytes, NAME_EXAMPLE, sizeof(NAME_EXAMPLE));
	assert_memory_equal(k1.bytes + sizeof(NAME_EXAMPLE), want_tail, 5);

	q2.do_bit = 0;
	cache_key_make(&kdo, &q2);
	q2.do_bit = 1;
	q2.cd_bit = 1;
	cache_key_make(&kboth, &q2);
	assert_int_equal(kboth.bytes[kboth.len - 1], 0x03);
	q2.do_bit = 0;
	cache_key_make(&kcd, &q2);
	assert_int_equal(kcd.bytes[kcd.len - 1], 0x02);
	q2.cd_bit = 0;
	q2.do_bit = 1;
	q2.q.qtype = DNS_TYPE_A;
	cache_key_make(&ktype, &q2);

	c = new_cache(BIG, 0);
	assert_non_null(c);
	assert_int_equal(put_plain(c, &k1, 50, 1, 60, 0), 0);
	assert_true(has_plain(c, &k2, 50, 1, 0));
	/* Putting under the other query's key replaces, it does not add. */
	assert_int_equal(put_plain(c, &k2, 60, 2, 60, 0), 0);
	stats(c, &st);
	assert_int_equal(st.entries, 1);
	assert_true(has_plain(c, &k1, 60, 2, 0));

	/* DO, CD and qtype each make a different entry. */
	assert_false(has_plain(c, &kdo, 60, 2, 0));
	assert_false(has_plain(c, &kcd, 60, 2, 0));
	assert_false(has_plain(c, &kboth, 60, 2, 0));
	assert_false(has_plain(c, &ktype, 60, 2, 0));
	assert_int_equal(put_plain(c, &kdo, 70, 3, 60, 0), 0);
	assert_int_equal(put_plain(c, &kcd, 80, 4, 60, 0), 0);
	assert_int_equal(put_plain(c, &ktype, 90, 5, 60, 0), 0);
	stats(c, &st);
	assert_int_equal(st.entries, 4);
	assert_true(has_plain(c, &k1, 60, 2, 0));
	assert_true(has_plain(c, &kdo, 70, 3, 0));
	assert_true(has_plain(c, &kcd, 80, 4, 0));
	assert_true(has_plain(c, &ktype, 90, 5, 0));
	cache_free(c);
}

static void
test_replace(void **state)
{
	struct cache_key k;
	struct cache_stats st;
	struct cache *c;

	(void)state;
	key_idx(&k, 3);
	c = new_cache(BIG, 0);
	assert_non_null(c);
	assert_int_equal(put_plain(c, &k, 100, 1, 10, 0), 0);
	assert_int_equal(put_plain(c, &k, 200, 2, 10, 5000), 0);
	stats(c, &st);
	assert_int_equal(st.entries, 1);
	assert_int_equal(st.bytes, measure_cost(&k, 200, 0));
	assert_int_equal(st.evictions, 0);
	/* The new entry's life counts from its own insert: the first would
	 * have expired at 10000. */
	assert_true(has_plain(c, &k, 200, 2, 12000));
	assert_false(has_plain(c, &k, 200, 2, 15000));
	stats(c, &st);
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.bytes, 0);
	cache_free(c);
}

static void
test_eviction_lru(void **state)
{
	struct cache_key ka, kb, kc, kd, kk, ki;
	struct cache_stats st;
	struct cache *c;
	size_t cost;
	unsigned i;

	(void)state;
	/* Same label length (idx % 40 equal) so every entry costs the same. */
	key_idx(&ka, 40);
	key_idx(&kb, 80);
	key_idx(&kc, 120);
	key_idx(&kd, 160);
	cost = measure_cost(&ka, 300, 0);
	c = new_cache(3 * cost, 0);
	assert_non_null(c);
	assert_int_equal(put_plain(c, &ka, 300, 1, 60, 0), 0);
	assert_int_equal(put_plain(c, &kb, 300, 2, 60, 0), 0);
	assert_int_equal(put_plain(c, &kc, 300, 3, 60, 0), 0);
	stats(c, &st);
	assert_int_equal(st.entries, 3);
	assert_int_equal(st.bytes, 3 * cost);
	assert_true(has_plain(c, &ka, 300, 1, 10));   /* a is now the MRU */
	assert_int_equal(put_plain(c, &kd, 300, 4, 60, 20), 0);
	stats(c, &st);
	assert_int_equal(st.entries, 3);
	assert_int_equal(st.evictions, 1);
	assert_true(st.bytes <= st.max_bytes);
	assert_false(has_plain(c, &kb, 300, 2, 30));  /* b was the LRU */
	assert_true(has_plain(c, &ka, 300, 1, 30));
	assert_true(has_plain(c, &kc, 300, 3, 30));
	assert_true(has_plain(c, &kd, 300, 4, 30));
	cache_free(c);

	/* Room for ten. One key is read after every put and so survives
	 * 200 puts of others; the rest go oldest first. */
	c = new_cache(10 * cost, 0);
	assert_non_null(c);
	key_idx(&kk, 40000);    /* apart from the 40 * (i + 1) below */
	assert_int_equal(put_plain(c, &kk, 300, 99, 3600, 0), 0);
	for (i = 0; i < 200; i++) {
		key_idx(&ki, 40 * (i + 1));
		assert_int_equal(put_plain(c, &ki, 300, i, 3600, i), 0);
		stats(c, &st);
		assert_true(st.bytes <= st.max_bytes);
		assert_int_equal(st.entries, i + 2 < 10 ? i + 2 : 10);
		assert_int_equal(st.bytes, st.entries * cost);
		assert_true(has_plain(c, &kk, 300, 99, i));
	}
	stats(c, &st);
	assert_int_equal(st.evictions, 201 - 10);
	for (i = 0; i < 200; i++) {
		key_idx(&ki, 40 * (i + 1));
		assert_int_equal(has_plain(c, &ki, 300, i, 1000), i >= 191);
	}
	cache_free(c);

	/* A big entry pushes out as many as it needs, oldest first. */
	c = new_cache(10 * cost, 0);
	assert_non_null(c);
	for (i = 0; i < 10; i++) {
		key_idx(&ki, 40 * (i + 1));
		assert_int_equal(put_plain(c, &ki, 300, i, 3600, 0), 0);
	}
	assert_int_equal(put_plain(c, &kk, 300 + 2 * cost, 7, 3600, 0), 0);
	stats(c, &st);
	assert_int_equal(st.entries, 8);
	assert_int_equal(st.evictions, 3);
	assert_true(st.bytes <= st.max_bytes);
	for (i = 0; i < 10; i++) {
		key_idx(&ki, 40 * (i + 1));
		assert_int_equal(has_plain(c, &ki, 300, i, 1), i >= 3);
	}
	cache_free(c);
}

static void
test_e2big(void **state)
{
	struct cache_key k, kbig;
	struct cache_stats st, st2;
	struct cache *c;
	size_t base;

	(void)state;
	key_idx(&k, 1);
	key_idx(&kbig, 2);
	c = new_cache(4096, 0);
	assert_non_null(c);
	assert_int_equal(put_plain(c, &k, 100, 1, 60, 0), 0);
	stats(c, &st);
	assert_int_equal(put_plain(c, &kbig, 4000, 2, 60, 0), -E2BIG);
	stats(c, &st2);
	assert_memory_equal(&st, &st2, sizeof(st));
	assert_true(has_plain(c, &k, 100, 1, 0));

	/* The bound covers the overhead too: an entry of exactly max_bytes
	 * fits (alone), one byte more does not. */
	base = measure_cost(&kbig, 100, 0) - 100;
	assert_int_equal(put_plain(c, &kbig, 4096 - base + 1, 2, 60, 0),
	    -E2BIG);
	stats(c, &st2);
	assert_memory_equal(&st, &st2, sizeof(st));
	assert_int_equal(put_plain(c, &kbig, 4096 - base, 2, 60, 0), 0);
	stats(c, &st2);
	assert_int_equal(st2.entries, 1);
	assert_int_equal(st2.bytes, 4096);
	assert_int_equal(st2.evictions, 1);
	assert_true(has_plain(c, &kbig, 4096 - base, 2, 0));
	cache_free(c);

	c = new_cache(0, 0);
	assert_non_null(c);
	assert_int_equal(put_plain(c, &k, 1, 1, 60, 0), -E2BIG);
	cache_free(c);
}

static void
test_uncacheable(void **state)
{
	struct dnsmsg_answer_info info;
	struct cache_key k, k2;
	struct cache_stats st;
	struct cache *c;
	uint8_t ans[50];

	(void)state;
	key_idx(&k, 1);
	key_idx(&k2, 2);
	fill(ans, sizeof(ans), 1);
	c = new_cache(BIG, 0);
	assert_non_null(c);

	info_init(&info, 60, NULL, 0);
	info.cacheable = 0;
	info.rcode = DNS_RCODE_SERVFAIL;
	assert_int_equal(cache_put(c, &k, ans, sizeof(ans), &info, 0), 0);
	info_init(&info, 0, NULL, 0);
	assert_int_equal(cache_put(c, &k, ans, sizeof(ans), &info, 0), 0);
	stats(c, &st);
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.bytes, 0);
	assert_false(has_plain(c, &k, 50, 1, 0));

	/* It does nothing, which includes leaving an older entry alone. */
	assert_int_equal(put_plain(c, &k2, 40, 5, 60, 0), 0);
	info_init(&info, 60, NULL, 0);
	info.cacheable = 0;
	assert_int_equal(cache_put(c, &k2, ans, sizeof(ans), &info, 0), 0);
	assert_true(has_plain(c, &k2, 40, 5, 0));
	cache_free(c);
}

static void
test_enospc(void **state)
{
	struct cache_key k;
	struct cache_stats st;
	struct cache *c;
	uint8_t out[200];
	size_t out_len = 7;

	(void)state;
	key_idx(&k, 1);
	c = new_cache(BIG, 0);
	assert_non_null(c);
	assert_int_equal(put_plain(c, &k, 200, 1, 60, 0), 0);
	assert_int_equal(cache_get(c, &k, 0, out, 199, &out_len, NULL), -ENOSPC);
	assert_int_equal(out_len, 7);
	assert_int_equal(cache_get(c, &k, 0, out, 0, &out_len, NULL), -ENOSPC);
	stats(c, &st);
	assert_int_equal(st.entries, 1);
	assert_int_equal(cache_get(c, &k, 0, out, 200, &out_len, NULL), 0);
	assert_int_equal(out_len, 200);
	cache_free(c);
}

static void
test_enomem(void **state)
{
	struct cache_key ka, kb, kf;
	struct cache_stats st, st2;
	struct cache *c;
	size_t cost;
	long n;
	unsigned i;

	(void)state;
	key_idx(&ka, 40);
	key_idx(&kb, 80);
	c = new_cache(BIG, 0);
	assert_non_null(c);
	/* On the empty cache the entry, the table and its buckets are the
	 * first three allocations: each failing leaves the cache empty. */
	for (n = 0; n < 3; n++) {
		mem_fail_after(n);
		assert_int_equal(put_plain(c, &ka, 100, 1, 60, 0), -ENOMEM);
		mem_fail_after(-1);
		stats(c, &st);
		assert_int_equal(st.entries, 0);
		assert_int_equal(st.bytes, 0);
		assert_false(has_plain(c, &ka, 100, 1, 0));
	}
	assert_int_equal(put_plain(c, &ka, 100, 1, 60, 0), 0);
	stats(c, &st);

	mem_fail_after(0);
	assert_int_equal(put_plain(c, &kb, 100, 2, 60, 0), -ENOMEM);
	mem_fail_after(-1);
	stats(c, &st2);
	assert_memory_equal(&st, &st2, sizeof(st));
	assert_false(has_plain(c, &kb, 100, 2, 0));

	/* A failed replacement keeps the old answer. */
	mem_fail_after(0);
	assert_int_equal(put_plain(c, &ka, 300, 3, 60, 0), -ENOMEM);
	mem_fail_after(-1);
	stats(c, &st2);
	assert_memory_equal(&st, &st2, sizeof(st));
	assert_true(has_plain(c, &ka, 100, 1, 0));
	cache_free(c);

	/* A full cache: a failed put evicts nothing. */
	cost = measure_cost(&ka, 100, 0);
	c = new_cache(2 * cost, 0);
	assert_non_null(c);
	assert_int_equal(put_plain(c, &ka, 100, 1, 60, 0), 0);
	assert_int_equal(put_plain(c, &kb, 100, 2, 60, 0), 0);
	stats(c, &st);
	key_idx(&kf, 120);
	mem_fail_after(0);
	assert_int_equal(put_plain(c, &kf, 100, 3, 60, 0), -ENOMEM);
	mem_fail_after(-1);
	stats(c, &st2);
	assert_memory_equal(&st, &st2, sizeof(st));
	assert_true(has_plain(c, &ka, 100, 1, 0));
	assert_true(has_plain(c, &kb, 100, 2, 0));
	cache_free(c);

	/* The table grows its bucket array as it fills; make the second
	 * allocation of every put fail, which is that growth when it happens:
	 * the put fails cleanly and succeeds when retried. */
	c = new_cache(1 << 24, 0);
	assert_non_null(c);
	n = 0;
	for (i = 0; i < 3000; i++) {
		key_idx(&kf, i);
		stats(c, &st);
		mem_fail_after(1);
		if (put_plain(c, &kf, 16, i, 60, 0) == -ENOMEM) {
			mem_fail_after(-1);
			if (i > 0)    /* i = 0 fails on the table itself */
				n++;
			stats(c, &st2);
			assert_memory_equal(&st, &st2, sizeof(st));
			assert_false(has_plain(c, &kf, 16, i, 0));
			assert_int_equal(put_plain(c, &kf, 16, i, 60, 0), 0);
		}
		mem_fail_after(-1);
	}
	assert_true(n >= 1);
	stats(c, &st);
	assert_int_equal(st.entries, 3000);
	for (i = 0; i < 3000; i++) {
		key_idx(&kf, i);
		assert_true(has_plain(c, &kf, 16, i, 0));
	}
	cache_free(c);
}

/* A 100-byte answer with three TTL fields (300, 3600, 300) at known
 * offsets and flags byte 3 as given (its low 4 bits are the rcode). */
#define STD_LEN 100
static const uint16_t std_offs[] = { 30, 50, 70 };

static void
std_answer(uint8_t *ans, uint8_t flags_lo, struct dnsmsg_answer_info *info,
    uint32_t ttl)
{
	fill(ans, STD_LEN, 7);
	ans[3] = flags_lo;
	put_u32(ans + 30, 300);
	put_u32(ans + 50, 3600);
	put_u32(ans + 70, 300);
	info_init(info, ttl, std_offs, 3);
}

/* out is ans with every TTL field equal to ttl. */
static void
assert_ttls_set(const uint8_t *out, const uint8_t *ans, uint32_t ttl)
{
	uint8_t want[STD_LEN];
	size_t i;

	memcpy(want, ans, STD_LEN);
	for (i = 0; i < 3; i++)
		put_u32(want + std_offs[i], ttl);
	assert_memory_equal(out, want, STD_LEN);
}

static void
test_meta_fresh(void **state)
{
	struct dnsmsg_answer_info info;
	struct cache_meta meta, untouched;
	struct cache_key k, k2;
	struct cache *c;
	uint8_t ans[STD_LEN], out[STD_LEN];
	size_t out_len;

	(void)state;
	c = new_cache(BIG, 600);
	assert_non_null(c);
	key_for(&k, NAME_EXAMPLE, sizeof(NAME_EXAMPLE), DNS_TYPE_A, 0, 0);
	key_for(&k2, NAME_EXAMPLE, sizeof(NAME_EXAMPLE), DNS_TYPE_AAAA, 0, 0);
	std_answer(ans, 0x83, &info, 300);    /* RA, NXDOMAIN */
	info.rcode = DNS_RCODE_NXDOMAIN;
	assert_int_equal(cache_put(c, &k, ans, sizeof(ans), &info, 1000), 0);

	memset(&meta, 0xa5, sizeof(meta));
	assert_int_equal(cache_get(c, &k, 1000 + 42500, out, sizeof(out),
	    &out_len, &meta), 0);
	assert_int_equal(meta.ttl, 300);
	assert_int_equal(meta.age, 42);
	assert_int_equal(meta.stale, 0);
	assert_int_equal(meta.refresh_after_ms, 0);
	assert_int_equal(meta.rcode, DNS_RCODE_NXDOMAIN);
	assert_int_equal(get_u32(out + 30), 258);

	/* The last fresh millisecond: age 299, and a clock that went back
	 * before the insert reads as age 0. */
	assert_int_equal(cache_get(c, &k, 1000 + 299999, out, sizeof(out),
	    &out_len, &meta), 0);
	assert_int_equal(meta.age, 299);
	assert_int_equal(cache_get(c, &k, 0, out, sizeof(out), &out_len,
	    &meta), 0);
	assert_int_equal(meta.age, 0);
	assert_memory_equal(out, ans, sizeof(ans));

	/* Only the low 4 bits of byte 3 are the rcode. */
	std_answer(ans, 0xf5, &info, 60);    /* RA, Z, AD, CD, REFUSED */
	info.rcode = DNS_RCODE_REFUSED;
	assert_int_equal(cache_put(c, &k2, ans, sizeof(ans), &info, 0), 0);
	assert_int_equal(cache_get(c, &k2, 0, out, sizeof(out), &out_len,
	    &meta), 0);
	assert_int_equal(meta.rcode, DNS_RCODE_REFUSED);
	assert_int_equal(meta.ttl, 60);
	std_answer(ans, 0x80, &info, 60);
	assert_int_equal(cache_put(c, &k2, ans, sizeof(ans), &info, 0), 0);
	assert_int_equal(cache_get(c, &k2, 0, out, sizeof(out), &out_len,
	    &meta), 0);
	assert_int_equal(meta.rcode, DNS_RCODE_NOERROR);

	/* A miss, a stale entry and a short buffer leave meta alone. */
	memset(&meta, 0x5a, sizeof(meta));
	memcpy(&untouched, &meta, sizeof(meta));
	key_idx(&k2, 77);
	assert_int_equal(cache_get(c, &k2, 0, out, sizeof(out), &out_len,
	    &meta), -ENOENT);
	assert_int_equal(cache_get(c, &k, 1000 + 300000, out, sizeof(out),
	    &out_len, &meta), -ENOENT);
	assert_int_equal(cache_get(c, &k, 1000, out, sizeof(out) - 1,
	    &out_len, &meta), -ENOSPC);
	assert_memory_equal(&meta, &untouched, sizeof(meta));
	cache_free(c);
}

/* Expired at T: cache_get misses, cache_get_stale serves it with TTL 30
 * until T + window, where both miss and it is gone, counted once. */
static void
test_stale_window(void **state)
{
	struct dnsmsg_answer_info info;
	struct cache_meta meta;
	struct cache_stats st;
	struct cache_key k, k2;
	struct cache *c;
	uint8_t ans[STD_LEN], out[STD_LEN];
	size_t out_len;
	const uint64_t t = 1000 + 300000, win = 120000;
	unsigned round;

	(void)state;
	key_for(&k, NAME_EXAMPLE, sizeof(NAME_EXAMPLE), DNS_TYPE_A, 0, 0);
	key_idx(&k2, 5);
	std_answer(ans, 0x82, &info, 300);    /* SERVFAIL bits, to see them */
	/* Round 0 ends the entry by cache_get_stale, round 1 by cache_get. */
	for (round = 0; round < 2; round++) {
		c = new_cache(BIG, 120);
		assert_non_null(c);
		assert_int_equal(cache_put(c, &k, ans, sizeof(ans), &info,
		    1000), 0);
		assert_int_equal(put_plain(c, &k2, 50, 1, 3600, 1000), 0);

		assert_int_equal(cache_get(c, &k, t - 1, out, sizeof(out),
		    &out_len, NULL), 0);
		assert_int_equal(get_u32(out + 30), 1);

		out_len = 0;
		assert_int_equal(cache_get(c, &k, t, out, sizeof(out),
		    &out_len, NULL), -ENOENT);
		assert_int_equal(out_len, 0);
		stats(c, &st);
		assert_int_equal(st.entries, 2);
		assert_int_equal(st.expired, 0);

		memset(&meta, 0xa5, sizeof(meta));
		memset(out, 0, sizeof(out));
		assert_int_equal(cache_get_stale(c, &k, t, 30, out,
		    sizeof(out), &out_len, &meta), 0);
		assert_int_equal(out_len, sizeof(ans));
		assert_ttls_set(out, ans, 30);
		assert_int_equal(meta.stale, 1);
		assert_int_equal(meta.ttl, 300);
		assert_int_equal(meta.age, 300);
		assert_int_equal(meta.refresh_after_ms, 0);
		assert_int_equal(meta.rcode, DNS_RCODE_SERVFAIL);

		/* Reading stale does not change what is stored: fresh reads
		 * still miss, a later stale read with another TTL agrees. */
		assert_int_equal(cache_get(c, &k, t + 1000, out, sizeof(out),
		    &out_len, &meta), -ENOENT);
		assert_int_equal(cache_get_stale(c, &k, t + win - 1, 7, out,
		    sizeof(out), &out_len, &meta), 0);
		assert_ttls_set(out, ans, 7);
		assert_int_equal(meta.age, 300 + 119);
		assert_int_equal(cache_get_stale(c, &k, t + win - 1, 30, out,
		    sizeof(out), &out_len, NULL), 0);
		assert_ttls_set(out, ans, 30);

		/* Too small a buffer: -ENOSPC, nothing written, still there. */
		out_len = 3;
		assert_int_equal(cache_get_stale(c, &k, t, 30, out,
		    sizeof(out) - 1, &out_len, &meta), -ENOSPC);
		assert_int_equal(out_len, 3);
		stats(c, &st);
		assert_int_equal(st.entries, 2);
		assert_int_equal(st.expired, 0);

		if (round == 0) {
			assert_int_equal(cache_get_stale(c, &k, t + win, 30,
			    out, sizeof(out), &out_len, &meta), -ENOENT);
			assert_int_equal(cache_get(c, &k, t + win, out,
			    sizeof(out), &out_len, &meta), -ENOENT);
		} else {
			assert_int_equal(cache_get(c, &k, t + win, out,
			    sizeof(out), &out_len, &meta), -ENOENT);
			assert_int_equal(cache_get_stale(c, &k, t + win, 30,
			    out, sizeof(out), &out_len, &meta), -ENOENT);
		}
		stats(c, &st);
		assert_int_equal(st.entries, 1);
		assert_int_equal(st.bytes, measure_cost(&k2, 50, 0));
		assert_int_equal(st.expired, 1);
		assert_int_equal(st.evictions, 0);
		/* Gone: a lookup at any time, even back in the window, misses
		 * without counting again. */
		assert_int_equal(cache_get_stale(c, &k, t, 30, out,
		    sizeof(out), &out_len, &meta), -ENOENT);
		assert_int_equal(cache_get(c, &k, 1000, out, sizeof(out),
		    &out_len, &meta), -ENOENT);
		stats(c, &st);
		assert_int_equal(st.expired, 1);
		assert_true(has_plain(c, &k2, 50, 1, t + win));
		cache_free(c);
	}
}

static void
test_stale_on_fresh(void **state)
{
	struct cache_key ka, kb, kc, kx;
	struct cache_meta meta, untouched;
	struct cache_stats st;
	struct cache *c;
	uint8_t out[400];
	size_t out_len = 5, cost;

	(void)state;
	key_idx(&ka, 40);
	key_idx(&kb, 80);
	key_idx(&kc, 120);
	key_idx(&kx, 160);
	cost = measure_cost(&ka, 300, 0);
	c = new_cache(2 * cost, 3600);
	assert_non_null(c);
	assert_int_equal(put_plain(c, &ka, 300, 1, 60, 0), 0);
	assert_int_equal(put_plain(c, &kb, 300, 2, 60, 0), 0);

	memset(&meta, 0x5a, sizeof(meta));
	memcpy(&untouched, &meta, sizeof(meta));
	/* Fresh, up to its last millisecond: not for cache_get_stale. */
	assert_int_equal(cache_get_stale(c, &ka, 0, 30, out, sizeof(out),
	    &out_len, &meta), -ENOENT);
	assert_int_equal(cache_get_stale(c, &ka, 59999, 30, out, sizeof(out),
	    &out_len, &meta), -ENOENT);
	assert_int_equal(cache_get_stale(c, &kx, 60000, 30, out, sizeof(out),
	    &out_len, &meta), -ENOENT);
	assert_int_equal(out_len, 5);
	assert_memory_equal(&meta, &untouched, sizeof(meta));
	stats(c, &st);
	assert_int_equal(st.entries, 2);
	assert_int_equal(st.expired, 0);

	/* Those misses did not use a: it is still the LRU and goes first. */
	assert_int_equal(put_plain(c, &kc, 300, 3, 60, 0), 0);
	assert_false(has_plain(c, &ka, 300, 1, 0));
	assert_true(has_plain(c, &kc, 300, 3, 0));
	assert_true(has_plain(c, &kb, 300, 2, 0));

	/* Nor does a cache_get that misses on a stale entry: it was not
	 * served. Now b (read last) would stay, c go. */
	assert_int_equal(cache_get(c, &kc, 60000, out, sizeof(out), &out_len,
	    NULL), -ENOENT);
	assert_int_equal(put_plain(c, &ka, 300, 1, 60, 60000), 0);
	stats(c, &st);
	assert_int_equal(st.evictions, 2);
	assert_int_equal(cache_get_stale(c, &kc, 60000, 30, out, sizeof(out),
	    &out_len, NULL), -ENOENT);
	assert_int_equal(cache_get_stale(c, &kb, 60000, 30, out, sizeof(out),
	    &out_len, NULL), 0);
	cache_free(c);
}

/* stale_max_s 0: no stale phase, the entry ends at its TTL. */
static void
test_stale_zero(void **state)
{
	struct dnsmsg_answer_info info;
	struct cache_stats st;
	struct cache_key k;
	struct cache *c;
	uint8_t ans[STD_LEN], out[STD_LEN];
	size_t out_len;

	(void)state;
	key_idx(&k, 9);
	std_answer(ans, 0x80, &info, 300);
	c = new_cache(BIG, 0);
	assert_non_null(c);
	assert_int_equal(cache_put(c, &k, ans, sizeof(ans), &info, 0), 0);
	assert_int_equal(cache_get_stale(c, &k, 299999, 30, out, sizeof(out),
	    &out_len, NULL), -ENOENT);
	stats(c, &st);
	assert_int_equal(st.entries, 1);
	assert_int_equal(cache_get_stale(c, &k, 300000, 30, out, sizeof(out),
	    &out_len, NULL), -ENOENT);
	stats(c, &st);
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.bytes, 0);
	assert_int_equal(st.expired, 1);
	assert_int_equal(cache_get(c, &k, 300000, out, sizeof(out), &out_len,
	    NULL), -ENOENT);
	stats(c, &st);
	assert_int_equal(st.expired, 1);
	cache_free(c);

	/* A one-second window is the smallest: [T, T + 1 s). */
	c = new_cache(BIG, 1);
	assert_non_null(c);
	assert_int_equal(cache_put(c, &k, ans, sizeof(ans), &info, 0), 0);
	assert_int_equal(cache_get_stale(c, &k, 300999, 30, out, sizeof(out),
	    &out_len, NULL), 0);
	assert_int_equal(cache_get_stale(c, &k, 301000, 30, out, sizeof(out),
	    &out_len, NULL), -ENOENT);
	stats(c, &st);
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.expired, 1);
	cache_free(c);
}

static void
test_refresh_failed(void **state)
{
	struct dnsmsg_answer_info info;
	struct cache_meta meta;
	struct cache_stats st, st2;
	struct cache_key k, kx;
	struct cache *c;
	uint8_t ans[STD_LEN], out[STD_LEN];
	size_t out_len;

	(void)state;
	key_idx(&k, 11);
	key_idx(&kx, 12);
	std_answer(ans, 0x80, &info, 60);
	c = new_cache(BIG, 600);
	assert_non_null(c);

	/* Not cached: no effect, nothing created. */
	cache_refresh_failed(c, &k, 5000);
	stats(c, &st);
	assert_int_equal(st.entries, 0);

	assert_int_equal(cache_put(c, &k, ans, sizeof(ans), &info, 0), 0);
	assert_int_equal(put_plain(c, &kx, 40, 3, 60, 0), 0);
	assert_int_equal(cache_get(c, &k, 1000, out, sizeof(out), &out_len,
	    &meta), 0);
	assert_int_equal(meta.refresh_after_ms, 0);

	stats(c, &st);
	cache_refresh_failed(c, &k, 65000);
	stats(c, &st2);
	assert_memory_equal(&st, &st2, sizeof(st));
	assert_int_equal(cache_get(c, &k, 2000, out, sizeof(out), &out_len,
	    &meta), 0);
	assert_int_equal(meta.refresh_after_ms, 65000);
	assert_memory_equal(out + 4, ans + 4, 26);    /* the answer is kept */
	/* Only that key's entry carries it. */
	assert_int_equal(cache_get(c, &kx, 2000, out, sizeof(out), &out_len,
	    &meta), 0);
	assert_int_equal(meta.refresh_after_ms, 0);

	/* The stale read reports it too, and a later failure moves it. */
	assert_int_equal(cache_get_stale(c, &k, 60000, 30, out, sizeof(out),
	    &out_len, &meta), 0);
	assert_int_equal(meta.refresh_after_ms, 65000);
	cache_refresh_failed(c, &k, 125000);
	assert_int_equal(cache_get_stale(c, &k, 61000, 30, out, sizeof(out),
	    &out_len, &meta), 0);
	assert_int_equal(meta.refresh_after_ms, 125000);

	/* A successful refresh (put) replaces the entry: fresh, reset. */
	assert_int_equal(cache_put(c, &k, ans, sizeof(ans), &info, 62000), 0);
	assert_int_equal(cache_get(c, &k, 62000, out, sizeof(out), &out_len,
	    &meta), 0);
	assert_int_equal(meta.refresh_after_ms, 0);
	assert_int_equal(meta.age, 0);
	assert_int_equal(meta.stale, 0);

	/* The record goes with its entry: flushed, then put again, the key
	 * starts with none. */
	cache_refresh_failed(c, &k, 200000);
	assert_int_equal(cache_get(c, &k, 63000, out, sizeof(out), &out_len,
	    &meta), 0);
	assert_int_equal(meta.refresh_after_ms, 200000);
	assert_int_equal(cache_flush(c), 2);
	assert_int_equal(cache_put(c, &k, ans, sizeof(ans), &info, 64000), 0);
	assert_int_equal(cache_get(c, &k, 64000, out, sizeof(out), &out_len,
	    &meta), 0);
	assert_int_equal(meta.refresh_after_ms, 0);
	cache_free(c);
}

/* Insert times are 32-bit milliseconds from a per-shard epoch, which moves
 * when the clock runs 2^32 ms past it: a process up for months keeps
 * correct ages, and entries dead for weeks do not come back to life when
 * the 32 bits wrap. */
static void
test_long_uptime(void **state)
{
	struct dnsmsg_answer_info info, info_week;
	struct cache_meta meta;
	struct cache_stats st;
	struct cache_key ka, kb, kc;
	struct cache *c;
	uint8_t ans[STD_LEN], ans_week[STD_LEN], out[STD_LEN];
	const uint64_t wrap = (uint64_t)1 << 32, day = 86400000;
	uint64_t t0 = 1000, tb = t0 + wrap - day, tc = t0 + wrap + 5000;
	size_t out_len;

	(void)state;
	key_idx(&ka, 21);
	key_idx(&kb, 22);
	key_idx(&kc, 23);
	std_answer(ans, 0x80, &info, 60);
	std_answer(ans_week, 0x80, &info_week, 604800);
	c = new_cache(BIG, 600);
	assert_non_null(c);

	/* A, 60 s, is long dead when B (a week) arrives a day before the 32
	 * bits would wrap; nothing read A since. */
	assert_int_equal(cache_put(c, &ka, ans, sizeof(ans), &info, t0), 0);
	assert_int_equal(cache_put(c, &kb, ans_week, sizeof(ans_week),
	    &info_week, tb), 0);
	/* C's put is past the wrap. In C's shard the epoch moves and a dead
	 * entry goes as expired; A (read as 32 bits it would be 4 seconds old
	 * and fresh) is gone, by that or by the lookup; B stays. */
	assert_int_equal(cache_put(c, &kc, ans, sizeof(ans), &info, tc), 0);
	assert_int_equal(cache_get(c, &ka, tc, out, sizeof(out), &out_len,
	    &meta), -ENOENT);
	assert_int_equal(cache_get_stale(c, &ka, tc, 30, out, sizeof(out),
	    &out_len, &meta), -ENOENT);
	stats(c, &st);
	assert_int_equal(st.expired, 1);
	assert_int_equal(st.entries, 2);
	/* B is a day and 5 s old, and ages from there. */
	assert_int_equal(cache_get(c, &kb, tc, out, sizeof(out), &out_len,
	    &meta), 0);
	assert_int_equal(meta.age, 86405);
	assert_int_equal(cache_get(c, &kc, tc + 2000, out, sizeof(out),
	    &out_len, &meta), 0);
	assert_int_equal(meta.age, 2);
	/* and both end on time. */
	assert_int_equal(cache_get(c, &kb, tb + 604800000, out, sizeof(out),
	    &out_len, &meta), -ENOENT);
	assert_int_equal(cache_get(c, &kc, tc + 60000, out, sizeof(out),
	    &out_len, &meta), -ENOENT);
	cache_free(c);

	/* A lifetime longer than the cache keeps (2^20 - 1 s) is shortened,
	 * never lengthened. */
	c = new_cache(BIG, 0);
	assert_non_null(c);
	std_answer(ans_week, 0x80, &info_week, 0x7fffffff);
	assert_int_equal(cache_put(c, &kb, ans_week, sizeof(ans_week),
	    &info_week, t0), 0);
	assert_int_equal(cache_get(c, &kb, t0, out, sizeof(out), &out_len,
	    &meta), 0);
	assert_int_equal(meta.ttl, CACHE_TTL_MAX);
	assert_int_equal(cache_get(c, &kb, t0 + (uint64_t)meta.ttl * 1000,
	    out, sizeof(out), &out_len, &meta), -ENOENT);
	cache_free(c);
}

/* Stale entries sit on the LRU list like any other: the least recently
 * used goes first whether it is stale or fresh, and serving a stale entry
 * counts as a use. Evicting a stale entry is an eviction, not an expiry. */
static void
test_eviction_stale(void **state)
{
	struct cache_key ka, kb, kc, kd, ke;
	struct cache_stats st;
	struct cache *c;
	uint8_t out[400];
	size_t out_len, cost;

	(void)state;
	key_idx(&ka, 40);
	key_idx(&kb, 80);
	key_idx(&kc, 120);
	key_idx(&kd, 160);
	key_idx(&ke, 200);
	cost = measure_cost(&ka, 300, 0);
	c = new_cache(3 * cost, 3600);
	assert_non_null(c);
	assert_int_equal(put_plain(c, &ka, 300, 1, 3600, 0), 0);
	assert_int_equal(put_plain(c, &kb, 300, 2, 10, 0), 0);
	assert_int_equal(put_plain(c, &kc, 300, 3, 10, 0), 0);

	/* At 20 s b and c are stale, a is fresh and the LRU: a goes. */
	assert_int_equal(put_plain(c, &kd, 300, 4, 3600, 20000), 0);
	stats(c, &st);
	assert_int_equal(st.entries, 3);
	assert_int_equal(st.evictions, 1);
	assert_false(has_plain(c, &ka, 300, 1, 20000));

	/* Serve b stale: c is now the LRU, stale, and goes next. */
	assert_int_equal(cache_get_stale(c, &kb, 20000, 30, out, sizeof(out),
	    &out_len, NULL), 0);
	assert_int_equal(put_plain(c, &ke, 300, 5, 3600, 20000), 0);
	stats(c, &st);
	assert_int_equal(st.entries, 3);
	assert_int_equal(st.evictions, 2);
	assert_int_equal(st.expired, 0);
	assert_int_equal(st.bytes, 3 * cost);
	assert_int_equal(cache_get_stale(c, &kc, 20000, 30, out, sizeof(out),
	    &out_len, NULL), -ENOENT);
	assert_int_equal(cache_get_stale(c, &kb, 20000, 30, out, sizeof(out),
	    &out_len, NULL), 0);
	assert_true(has_plain(c, &kd, 300, 4, 20000));
	assert_true(has_plain(c, &ke, 300, 5, 20000));
	stats(c, &st);
	assert_int_equal(st.expired, 0);
	cache_free(c);
}

/* Randomized: puts, fresh and stale gets and failed refreshes of random
 * keys, sizes and TTLs against a model of the LRU list, the three phases
 * of an entry (fresh, stale, dead), the meta reported and the accounting,
 * checked after every operation. */
#define RND_KEYS 400
#define RND_BOUND (64 * 1024)
#define RND_PUTS 20000
#define RND_STALE_S 10
#define RND_STALE_TTL 30
#define RND_RECENT 32    /* reads favour keys put lately */

struct model_ent {
	int present;
	size_t len;
	size_t cost;
	size_t n_ttl;
	uint32_t ttl;
	uint64_t inserted;
	uint64_t expiry;
	uint64_t refresh;
	uint64_t used;     /* larger = more recently used */
	unsigned seed;
};

static uint64_t rnd_state;

static uint32_t
rnd(void)
{
	/* xorshift64*: the same sequence on every libc. */
	rnd_state ^= rnd_state >> 12;
	rnd_state ^= rnd_state << 25;
	rnd_state ^= rnd_state >> 27;
	return (uint32_t)((rnd_state * 0x2545F4914F6CDD1DULL) >> 32);
}

static void
rnd_fill(uint8_t *buf, size_t len, unsigned seed)
{
	size_t i;

	for (i = 0; i < len; i++)
		buf[i] = (uint8_t)(seed * 131 + i * 13 + (i >> 8));
}

static void
test_random_bound(void **state)
{
	static struct model_ent m[RND_KEYS];
	static uint8_t ans[RND_BOUND + 100], out[RND_BOUND + 100];
	static uint8_t want[RND_BOUND + 100];
	static const uint16_t offs[4] = { 0, 0, 0, 0 };
	unsigned recent[RND_RECENT] = { 0 };
	struct dnsmsg_answer_info info;
	struct cache_meta meta;
	struct cache_stats st;
	struct cache_key k;
	struct cache *c;
	size_t fixed, len, n_ttl, cost, out_len, bytes = 0, entries = 0;
	uint64_t now = 0, used = 0, evictions = 0, expired = 0, retry;
	unsigned i, j, idx, victim, op, seed = 0;
	unsigned n_hit = 0, n_big = 0, n_stale_hit = 0, n_stale_miss = 0;
	unsigned n_fresh_miss = 0, n_refresh = 0;
	int rc, stale, want_hit;

	(void)state;
	memset(m, 0, sizeof(m));
	rnd_state = 0x9e3779b97f4a7c15ULL;
	key_idx(&k, 0);
	fixed = measure_cost(&k, 100, 0) - k.len - 100;
	c = new_cache(RND_BOUND, RND_STALE_S);
	assert_non_null(c);

	for (i = 0; i < RND_PUTS; i++) {
		now += rnd() % 1500;
		idx = rnd() % RND_KEYS;
		recent[i % RND_RECENT] = idx;
		key_idx(&k, idx);
		len = 12 + rnd() % 4000;
		if (rnd() % 500 == 0)
			len = RND_BOUND - 8 + rnd() % 16;  /* around the edge */
		n_ttl = rnd() % 5;
		seed++;
		rnd_fill(ans, len, seed);
		info_init(&info, 1 + rnd() % 30, offs, n_ttl);
		if (rnd() % 20 == 0)
			info.cacheable = 0;
		rc = cache_put(c, &k, ans, len, &info, now);

		cost = fixed + k.len + len + n_ttl * sizeof(uint16_t);
		if (!info.cacheable) {
			assert_int_equal(rc, 0);
		} else if (cost > RND_BOUND) {
			assert_int_equal(rc, -E2BIG);
			n_big++;
		} else {
			assert_int_equal(rc, 0);
			if (m[idx].present) {
				bytes -= m[idx].cost;
				entries--;
			}
			m[idx].present = 1;
			m[idx].len = len;
			m[idx].cost = cost;
			m[idx].n_ttl = n_ttl;
			m[idx].ttl = info.ttl;
			m[idx].inserted = now;
			m[idx].expiry = now + (uint64_t)info.ttl * 1000;
			m[idx].refresh = 0;
			m[idx].used = ++used;
			m[idx].seed = seed;
			bytes += cost;
			entries++;
			/* Plain LRU over every entry, stale and dead ones
			 * included. */
			while (bytes > RND_BOUND) {
				victim = RND_KEYS;
				for (j = 0; j < RND_KEYS; j++)
					if (m[j].present && (victim == RND_KEYS ||
					    m[j].used < m[victim].used))
						victim = j;
				assert_true(victim != idx);
				m[victim].present = 0;
				bytes -= m[victim].cost;
				entries--;
				evictions++;
			}
		}
		stats(c, &st);
		assert_true(st.bytes <= st.max_bytes);
		assert_int_equal(st.bytes, bytes);
		assert_int_equal(st.entries, entries);
		assert_int_equal(st.evictions, evictions);

		/* A read now and then moves entries up the LRU list: half of
		 * them fresh reads, the rest stale reads, and now and then a
		 * failed refresh instead. */
		op = rnd() % 16;
		if (op >= 8)
			continue;
		/* Uniform reads mostly miss; reads of keys put lately see
		 * entries in every phase. */
		if (rnd() % 2 == 0)
			idx = rnd() % RND_KEYS;
		else
			idx = recent[rnd() % RND_RECENT];
		key_idx(&k, idx);
		if (op == 7) {
			retry = now + 1 + rnd() % 60000;
			cache_refresh_failed(c, &k, retry);
			if (m[idx].present) {
				m[idx].refresh = retry;
				n_refresh++;
			}
			stats(c, &st);
			assert_int_equal(st.bytes, bytes);
			assert_int_equal(st.entries, entries);
			assert_int_equal(st.expired, expired);
			continue;
		}
		stale = op >= 4;
		memset(&meta, 0xa5, sizeof(meta));
		if (stale)
			rc = cache_get_stale(c, &k, now, RND_STALE_TTL, out,
			    sizeof(out), &out_len, &meta);
		else
			rc = cache_get(c, &k, now, out, sizeof(out), &out_len,
			    &meta);
		want_hit = 0;
		if (!m[idx].present) {
			/* nothing to find */
		} else if (now >= m[idx].expiry + RND_STALE_S * 1000) {
			m[idx].present = 0;
			bytes -= m[idx].cost;
			entries--;
			expired++;
		} else if (now >= m[idx].expiry) {
			want_hit = stale;
			if (!stale)
				n_stale_miss++;    /* kept, not used */
		} else {
			want_hit = !stale;
			if (stale)
				n_fresh_miss++;
		}
		if (!want_hit) {
			assert_int_equal(rc, -ENOENT);
		} else {
			assert_int_equal(rc, 0);
			assert_int_equal(out_len, m[idx].len);
			rnd_fill(want, m[idx].len, m[idx].seed);
			/* The TTL fields are all at offset 0; the rest is
			 * the answer as stored. */
			assert_memory_equal(out + 4, want + 4, m[idx].len - 4);
			if (stale && m[idx].n_ttl > 0)
				assert_int_equal(get_u32(out), RND_STALE_TTL);
			else if (stale)
				assert_memory_equal(out, want, 4);
			assert_int_equal(meta.stale, stale);
			assert_int_equal(meta.ttl, m[idx].ttl);
			assert_int_equal(meta.age,
			    (now - m[idx].inserted) / 1000);
			assert_int_equal(meta.refresh_after_ms, m[idx].refresh);
			assert_int_equal(meta.rcode, want[3] & 0x0f);
			m[idx].used = ++used;
			if (stale)
				n_stale_hit++;
			else
				n_hit++;
		}
		stats(c, &st);
		assert_int_equal(st.bytes, bytes);
		assert_int_equal(st.entries, entries);
		assert_int_equal(st.expired, expired);
	}
	/* The run covered what it is meant to cover. */
	printf("random: %llu evictions, %llu expired, %u hits, %u stale hits, "
	    "%u stale misses, %u fresh misses, %u refresh, %u big\n",
	    (unsigned long long)evictions, (unsigned long long)expired, n_hit,
	    n_stale_hit, n_stale_miss, n_fresh_miss, n_refresh, n_big);
	assert_true(evictions > 1000);
	assert_true(expired > 100);
	assert_true(n_hit > 100);
	assert_true(n_stale_hit > 100);
	assert_true(n_stale_miss > 100);
	assert_true(n_fresh_miss > 100);
	assert_true(n_refresh > 10);
	assert_true(n_big > 0);
	cache_free(c);
}

/* ---- control operations: flush, flush by name, dump, resize ---- */

/* A key for a wire name given as a literal (its NUL is the root label). */
#define KEY_LIT(k, lit, qtype) \
	key_for((k), (lit), sizeof(lit), (qtype), 0, 0)

/* Like key_for, in another class (CH). */
static void
key_class(struct cache_key *k, const char *wire, size_t wire_len,
    uint16_t qtype, uint16_t qclass)
{
	struct dnsmsg_query q;

	query_init(&q, (const uint8_t *)wire, wire_len, qtype, 0, 0);
	q.q.qclass = qclass;
	cache_key_make(k, &q);
}

static void
test_flush_all(void **state)
{
	struct cache_key ka, kb, kc;
	struct cache_stats st;
	struct cache *c;
	uint8_t out[400];
	size_t out_len;

	(void)state;
	key_idx(&ka, 1);
	key_idx(&kb, 2);
	key_idx(&kc, 3);
	c = new_cache(BIG, 600);
	assert_non_null(c);
	assert_int_equal(put_plain(c, &ka, 100, 1, 60, 0), 0);
	assert_int_equal(put_plain(c, &kb, 200, 2, 60, 0), 0);
	assert_int_equal(put_plain(c, &kc, 300, 3, 1, 0), 0);

	/* Fresh and stale (c at 5 s) alike. */
	assert_int_equal(cache_flush(c), 3);
	stats(c, &st);
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.bytes, 0);
	assert_int_equal(st.max_bytes, BIG);
	assert_int_equal(st.flushes, 1);
	assert_int_equal(st.evictions, 0);
	assert_int_equal(st.expired, 0);
	assert_false(has_plain(c, &ka, 100, 1, 5000));
	assert_false(has_plain(c, &kb, 200, 2, 5000));
	assert_int_equal(cache_get_stale(c, &kc, 5000, 30, out, sizeof(out),
	    &out_len, NULL), -ENOENT);

	/* An empty cache: nothing removed, still one operation. */
	assert_int_equal(cache_flush(c), 0);
	stats(c, &st);
	assert_int_equal(st.flushes, 2);

	/* It works as before afterwards. */
	assert_int_equal(put_plain(c, &ka, 100, 4, 60, 6000), 0);
	assert_true(has_plain(c, &ka, 100, 4, 6000));
	stats(c, &st);
	assert_int_equal(st.entries, 1);
	assert_int_equal(st.bytes, measure_cost(&ka, 100, 0));
	cache_free(c);
}

/* The names the flush tests put, each under type A; example.com. also
 * under other types, flags and class. */
#define W_EXAMPLE "\7example\3com"
#define W_WWW "\3www\7example\3com"
#define W_DEEP "\1a\1b\7example\3com"
#define W_BAD "\12badexample\3com"
#define W_ORG "\7example\3org"
#define W_COM "\3com"
#define W_EVIL "\7example\3com\4evil"
#define W_ROOT ""

static const char *const flush_names[] = {
	W_EXAMPLE, W_WWW, W_DEEP, W_BAD, W_ORG, W_COM, W_EVIL, W_ROOT,
};
#define N_FLUSH_NAMES (sizeof(flush_names) / sizeof(flush_names[0]))

/* Put every name of flush_names under A, and example.com. under AAAA,
 * DO, CD and class CH too: 12 entries. */
static void
flush_fill(struct cache *c)
{
	struct cache_key k;
	struct cache_stats st;
	size_t i;

	for (i = 0; i < N_FLUSH_NAMES; i++) {
		key_for(&k, flush_names[i], strlen(flush_names[i]) + 1,
		    DNS_TYPE_A, 0, 0);
		assert_int_equal(put_plain(c, &k, 50, (unsigned)i, 60, 0), 0);
	}
	KEY_LIT(&k, W_EXAMPLE, DNS_TYPE_AAAA);
	assert_int_equal(put_plain(c, &k, 50, 100, 60, 0), 0);
	key_for(&k, W_EXAMPLE, sizeof(W_EXAMPLE), DNS_TYPE_A, 1, 0);
	assert_int_equal(put_plain(c, &k, 50, 101, 60, 0), 0);
	key_for(&k, W_EXAMPLE, sizeof(W_EXAMPLE), DNS_TYPE_A, 0, 1);
	assert_int_equal(put_plain(c, &k, 50, 102, 60, 0), 0);
	key_class(&k, W_EXAMPLE, sizeof(W_EXAMPLE), DNS_TYPE_TXT, 3);
	assert_int_equal(put_plain(c, &k, 50, 103, 60, 0), 0);
	stats(c, &st);
	assert_int_equal(st.entries, N_FLUSH_NAMES + 4);
}

/* 1 when name's A entry (from flush_fill) is still there. */
static int
has_name(struct cache *c, const char *wire)
{
	struct cache_key k;
	size_t i;

	for (i = 0; i < N_FLUSH_NAMES; i++)
		if (strcmp(flush_names[i], wire) == 0)
			break;
	assert_true(i < N_FLUSH_NAMES);
	key_for(&k, wire, strlen(wire) + 1, DNS_TYPE_A, 0, 0);
	return has_plain(c, &k, 50, (unsigned)i, 1000);
}

static void
test_flush_name(void **state)
{
	static const uint8_t upper[] = "\7EXAMPLE\3Com";
	struct cache_key k;
	struct cache_stats st;
	struct cache *c;
	uint8_t wire[DNS_MAX_NAME_WIRE];
	size_t len, bytes;

	(void)state;
	c = new_cache(BIG, 0);
	assert_non_null(c);
	flush_fill(c);

	/* Spelled in another case, it takes every type, flag and class of
	 * example.com. and nothing else: not the names below it, not
	 * badexample.com. (same suffix, not below), not example.com.evil. */
	assert_int_equal(cache_flush_name(c, upper, sizeof(upper), 0), 5);
	stats(c, &st);
	assert_int_equal(st.entries, N_FLUSH_NAMES - 1);
	assert_int_equal(st.flushes, 1);
	assert_int_equal(st.evictions, 0);
	assert_int_equal(st.expired, 0);
	assert_false(has_name(c, W_EXAMPLE));
	KEY_LIT(&k, W_EXAMPLE, DNS_TYPE_AAAA);
	assert_false(has_plain(c, &k, 50, 100, 1000));
	assert_true(has_name(c, W_WWW));
	assert_true(has_name(c, W_DEEP));
	assert_true(has_name(c, W_BAD));
	assert_true(has_name(c, W_ORG));
	assert_true(has_name(c, W_COM));
	assert_true(has_name(c, W_EVIL));
	assert_true(has_name(c, W_ROOT));
	bytes = st.bytes;

	/* Again, from text: nothing left to remove, still counted. */
	assert_int_equal(cache_name_from_text("Example.COM.", wire,
	    sizeof(wire), &len), 0);
	assert_int_equal(cache_flush_name(c, wire, len, 0), 0);
	stats(c, &st);
	assert_int_equal(st.flushes, 2);
	assert_int_equal(st.bytes, bytes);

	/* A name alone is not its parent: com. leaves example.org. */
	assert_int_equal(cache_name_from_text("com", wire, sizeof(wire), &len),
	    0);
	assert_int_equal(cache_flush_name(c, wire, len, 0), 1);
	assert_false(has_name(c, W_COM));
	assert_true(has_name(c, W_ORG));

	/* The root without subtree is only the root's own entry. */
	assert_int_equal(cache_flush_name(c, (const uint8_t *)"", 1, 0), 1);
	assert_false(has_name(c, W_ROOT));
	stats(c, &st);
	assert_int_equal(st.entries, N_FLUSH_NAMES - 3);
	assert_int_equal(st.flushes, 4);

	/* Not wire names: nothing removed, nothing counted. */
	assert_int_equal(cache_flush_name(c, upper, sizeof(upper) - 1, 0), 0);
	assert_int_equal(cache_flush_name(c, upper, sizeof(upper) + 1, 0), 0);
	assert_int_equal(cache_flush_name(c, upper, 0, 1), 0);
	assert_int_equal(cache_flush_name(c, (const uint8_t *)"\100x", 3, 1),
	    0);
	assert_int_equal(cache_flush_name(c, NULL, 1, 1), 0);
	stats(c, &st);
	assert_int_equal(st.entries, N_FLUSH_NAMES - 3);
	assert_int_equal(st.flushes, 4);
	cache_free(c);
}

static void
test_flush_subtree(void **state)
{
	struct cache_stats st;
	struct cache *c;
	uint8_t wire[DNS_MAX_NAME_WIRE];
	size_t len;

	(void)state;
	c = new_cache(BIG, 0);
	assert_non_null(c);
	flush_fill(c);

	/* example.com. and below: its 5 entries, www and a.b. Label-wise:
	 * badexample.com. ends in the same bytes "example\3com" but not at
	 * a label boundary, and example.com.evil. is above, not below. */
	assert_int_equal(cache_name_from_text("EXAMPLE.com", wire,
	    sizeof(wire), &len), 0);
	assert_int_equal(cache_flush_name(c, wire, len, 1), 7);
	assert_false(has_name(c, W_EXAMPLE));
	assert_false(has_name(c, W_WWW));
	assert_false(has_name(c, W_DEEP));
	assert_true(has_name(c, W_BAD));
	assert_true(has_name(c, W_ORG));
	assert_true(has_name(c, W_COM));
	assert_true(has_name(c, W_EVIL));
	assert_true(has_name(c, W_ROOT));
	stats(c, &st);
	assert_int_equal(st.entries, 5);
	assert_int_equal(st.flushes, 1);

	/* com. and below: itself and badexample.com. */
	assert_int_equal(cache_flush_name(c, (const uint8_t *)W_COM,
	    sizeof(W_COM), 1), 2);
	assert_false(has_name(c, W_BAD));
	assert_false(has_name(c, W_COM));
	assert_true(has_name(c, W_ORG));
	assert_true(has_name(c, W_EVIL));

	/* The root with subtree is everything, the root's entry included. */
	assert_int_equal(cache_name_from_text(".", wire, sizeof(wire), &len),
	    0);
	assert_int_equal(cache_flush_name(c, wire, len, 1), 3);
	stats(c, &st);
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.bytes, 0);
	assert_int_equal(st.flushes, 3);
	assert_int_equal(st.evictions, 0);

	/* And a full cache, in one step. */
	flush_fill(c);
	assert_int_equal(cache_flush_name(c, (const uint8_t *)"", 1, 1),
	    N_FLUSH_NAMES + 4);
	stats(c, &st);
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.bytes, 0);
	cache_free(c);
}

/* What cache_dump reported, in order. */
#define DUMP_MAX 8
struct dump_seen {
	struct cache_entry_info e[DUMP_MAX];
	size_t n;
	size_t stop_after;    /* return 7 after this many; 0 = never */
};

static int
dump_cb(void *arg, const struct cache_entry_info *e)
{
	struct dump_seen *d = arg;

	assert_true(d->n < DUMP_MAX);
	d->e[d->n++] = *e;
	return d->stop_after != 0 && d->n == d->stop_after ? 7 : 0;
}

/* With more than one shard the dump goes shard by shard: most recently
 * used first holds only within a shard. Put what it reported in the order
 * of names (each must be there exactly once), so that the checks of the
 * entries' contents apply to both. */
static void
dump_order(struct dump_seen *d, const char *const *names, size_t n)
{
	struct cache_entry_info sorted[DUMP_MAX];
	size_t i, j, found;

	assert_int_equal(d->n, n);
	for (i = 0; i < n; i++) {
		found = n;
		for (j = 0; j < n; j++) {
			if (strcmp(d->e[j].name, names[i]) != 0)
				continue;
			assert_int_equal(found, n);
			found = j;
		}
		assert_true(found < n);
		sorted[i] = d->e[found];
	}
	memcpy(d->e, sorted, n * sizeof(sorted[0]));
}

static int
dump_unreached_cb(void *arg, const struct cache_entry_info *e)
{
	(void)arg;
	(void)e;
	fail_msg("called on an empty cache");
	return 1;
}

static void
test_dump(void **state)
{
	/* A '.' and an unprintable byte inside labels. */
	static const char odd[] = "\3a.b\2\001z";
	static const char *const order1[] = { "a\\.b.\\001z.",
	    "www.example.com.", "example.com." };
	static const char *const order2[] = { "k00005xxxxx.",
	    "example.com.", "www.example.com." };
	struct dnsmsg_answer_info info;
	struct cache_key kex, kwww, kodd, klong;
	struct cache_stats st, st2;
	struct dump_seen d, d2;
	struct cache *c;
	uint8_t ans[STD_LEN];
	size_t i, sum;

	(void)state;
	c = new_cache(BIG, 600);
	assert_non_null(c);
	assert_int_equal(cache_dump(c, 0, dump_unreached_cb, NULL), 0);

	key_for(&kex, W_EXAMPLE, sizeof(W_EXAMPLE), DNS_TYPE_A, 0, 0);
	key_for(&kwww, W_WWW, sizeof(W_WWW), DNS_TYPE_AAAA, 1, 0);
	key_class(&kodd, odd, sizeof(odd), DNS_TYPE_TXT, 3);
	kodd.bytes[kodd.len - 1] = 0x02;    /* CD */
	cache_key_hash(&kodd);
	key_idx(&klong, 5);
	std_answer(ans, 0x83, &info, 300);   /* NXDOMAIN */
	assert_int_equal(cache_put(c, &kex, ans, sizeof(ans), &info, 0), 0);
	assert_int_equal(put_plain(c, &kwww, 60, 1, 60, 1000), 0);
	assert_int_equal(put_plain(c, &kodd, 70, 2, 10, 0), 0);

	/* At 30.5 s: example.com. has aged 30 s of 300, www 29 of 60, the
	 * odd one is 20 s past its 10 s life (stale, window 600 s). Most
	 * recently used first: the order of the puts, reversed. */
	memset(&d, 0, sizeof(d));
	assert_int_equal(cache_dump(c, 30500, dump_cb, &d), 0);
	assert_int_equal(d.n, 3);
	stats(c, &st);
	if (st.shards > 1)
		dump_order(&d, order1, 3);

	assert_string_equal(d.e[0].name, "a\\.b.\\001z.");
	assert_int_equal(d.e[0].qtype, DNS_TYPE_TXT);
	assert_int_equal(d.e[0].qclass, 3);
	assert_int_equal(d.e[0].do_bit, 0);
	assert_int_equal(d.e[0].cd_bit, 1);
	assert_int_equal(d.e[0].stale, 1);
	assert_int_equal(d.e[0].ttl_left, 0);
	assert_int_equal(d.e[0].stale_for, 20);
	assert_int_equal(d.e[0].bytes, measure_cost(&kodd, 70, 0));

	assert_string_equal(d.e[1].name, "www.example.com.");
	assert_int_equal(d.e[1].qtype, DNS_TYPE_AAAA);
	assert_int_equal(d.e[1].qclass, 1);
	assert_int_equal(d.e[1].do_bit, 1);
	assert_int_equal(d.e[1].cd_bit, 0);
	assert_int_equal(d.e[1].stale, 0);
	assert_int_equal(d.e[1].ttl_left, 31);
	assert_int_equal(d.e[1].stale_for, 0);

	assert_string_equal(d.e[2].name, "example.com.");
	assert_int_equal(d.e[2].qtype, DNS_TYPE_A);
	assert_int_equal(d.e[2].qclass, 1);
	assert_int_equal(d.e[2].do_bit, 0);
	assert_int_equal(d.e[2].cd_bit, 0);
	assert_int_equal(d.e[2].stale, 0);
	assert_int_equal(d.e[2].ttl_left, 270);
	assert_int_equal(d.e[2].stale_for, 0);
	assert_int_equal(d.e[2].rcode, DNS_RCODE_NXDOMAIN);
	assert_int_equal(d.e[2].bytes, measure_cost(&kex, STD_LEN, 3));

	/* The bytes are the accounted ones. */
	stats(c, &st);
	for (sum = 0, i = 0; i < d.n; i++)
		sum += d.e[i].bytes;
	assert_int_equal(sum, st.bytes);

	/* A dump changes nothing: the same again, the same counters. */
	memset(&d2, 0, sizeof(d2));
	assert_int_equal(cache_dump(c, 30500, dump_cb, &d2), 0);
	if (st.shards > 1)
		dump_order(&d2, order1, 3);
	assert_memory_equal(&d, &d2, sizeof(d));
	stats(c, &st2);
	assert_memory_equal(&st, &st2, sizeof(st));

	/* A use moves example.com. to the front; a non-zero return stops. */
	assert_true(cache_get(c, &kex, 31000, ans, sizeof(ans), &i, NULL) == 0);
	memset(&d, 0, sizeof(d));
	d.stop_after = 2;
	assert_int_equal(cache_dump(c, 31000, dump_cb, &d), 7);
	assert_int_equal(d.n, 2);
	if (st.shards == 1) {
		assert_string_equal(d.e[0].name, "example.com.");
		assert_string_equal(d.e[1].name, "a\\.b.\\001z.");
	}

	/* At 611 s the odd one is past its window: not listed, and not
	 * removed either; example.com. is stale, www too. A long-lived
	 * entry is fresh. */
	assert_int_equal(put_plain(c, &klong, 40, 3, 3600, 0), 0);
	memset(&d, 0, sizeof(d));
	assert_int_equal(cache_dump(c, 611000, dump_cb, &d), 0);
	assert_int_equal(d.n, 3);
	if (st.shards > 1)
		dump_order(&d, order2, 3);
	assert_string_equal(d.e[1].name, "example.com.");
	assert_int_equal(d.e[1].stale, 1);
	assert_int_equal(d.e[1].stale_for, 311);
	assert_int_equal(d.e[0].stale, 0);
	assert_int_equal(d.e[0].ttl_left, 3600 - 611);
	assert_string_equal(d.e[2].name, "www.example.com.");
	assert_int_equal(d.e[2].stale_for, 611 - 61);
	stats(c, &st);
	assert_int_equal(st.entries, 4);
	assert_int_equal(st.expired, 0);
	cache_free(c);
}

static void
test_resize(void **state)
{
	struct cache_key ka, kb, kc, kd, ke, kf;
	struct cache_stats st;
	struct cache *c;
	size_t cost;

	(void)state;
	/* Same label length (idx % 40 equal): every entry costs the same. */
	key_idx(&ka, 40);
	key_idx(&kb, 80);
	key_idx(&kc, 120);
	key_idx(&kd, 160);
	key_idx(&ke, 200);
	key_idx(&kf, 240);
	cost = measure_cost(&ka, 300, 0);
	c = new_cache(4 * cost, 0);
	assert_non_null(c);
	assert_int_equal(put_plain(c, &ka, 300, 1, 60, 0), 0);
	assert_int_equal(put_plain(c, &kb, 300, 2, 60, 1), 0);
	assert_int_equal(put_plain(c, &kc, 300, 3, 60, 2), 0);
	assert_int_equal(put_plain(c, &kd, 300, 4, 60, 3), 0);
	assert_true(has_plain(c, &ka, 300, 1, 4));    /* MRU: a, d, c, b */

	/* Growing keeps everything. */
	cache_resize(c, 8 * cost);
	stats(c, &st);
	assert_int_equal(st.entries, 4);
	assert_int_equal(st.max_bytes, 8 * cost);
	assert_int_equal(st.evictions, 0);

	/* Shrinking to two takes the two least recently used, b then c. */
	cache_resize(c, 2 * cost);
	stats(c, &st);
	assert_int_equal(st.entries, 2);
	assert_int_equal(st.bytes, 2 * cost);
	assert_int_equal(st.max_bytes, 2 * cost);
	assert_int_equal(st.evictions, 2);
	assert_int_equal(st.expired, 0);
	assert_int_equal(st.flushes, 0);
	assert_false(has_plain(c, &kb, 300, 2, 5));
	assert_false(has_plain(c, &kc, 300, 3, 5));
	assert_true(has_plain(c, &kd, 300, 4, 5));    /* MRU: d, a */
	assert_true(has_plain(c, &ka, 300, 1, 6));    /* MRU: a, d */

	/* A size between two entries: one fits. Then the bound holds for
	 * new puts, which push out the LRU. */
	cache_resize(c, cost + cost / 2);
	assert_false(has_plain(c, &kd, 300, 4, 7));
	assert_int_equal(put_plain(c, &ke, 300, 5, 60, 8), 0);
	stats(c, &st);
	assert_int_equal(st.entries, 1);
	assert_int_equal(st.evictions, 4);
	assert_true(st.bytes <= st.max_bytes);
	assert_false(has_plain(c, &ka, 300, 1, 9));
	assert_true(has_plain(c, &ke, 300, 5, 9));
	assert_int_equal(put_plain(c, &kf, 300 + cost, 6, 60, 9), -E2BIG);

	/* Zero empties it; nothing fits until it grows again. */
	cache_resize(c, 0);
	stats(c, &st);
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.bytes, 0);
	assert_int_equal(st.evictions, 5);
	assert_int_equal(put_plain(c, &ka, 300, 1, 60, 10), -E2BIG);
	cache_resize(c, 3 * cost);
	assert_int_equal(put_plain(c, &ka, 300, 1, 60, 10), 0);
	assert_int_equal(put_plain(c, &kb, 300, 2, 60, 10), 0);
	assert_int_equal(put_plain(c, &kc, 300, 3, 60, 10), 0);
	assert_int_equal(put_plain(c, &kd, 300, 4, 60, 10), 0);
	stats(c, &st);
	assert_int_equal(st.entries, 3);
	assert_int_equal(st.bytes, 3 * cost);
	assert_int_equal(st.evictions, 6);
	assert_false(has_plain(c, &ka, 300, 1, 11));
	cache_free(c);
}

/* cache_name_from_text gives want (wire, want_len) for text. */
static void
assert_name(const char *text, const char *want, size_t want_len)
{
	uint8_t wire[DNS_MAX_NAME_WIRE];
	size_t len = 0;

	memset(wire, 0xa5, sizeof(wire));
	assert_int_equal(cache_name_from_text(text, wire, sizeof(wire), &len),
	    0);
	assert_int_equal(len, want_len);
	assert_memory_equal(wire, want, want_len);
}

static void
assert_not_name(const char *text)
{
	uint8_t wire[DNS_MAX_NAME_WIRE], untouched[DNS_MAX_NAME_WIRE];
	size_t len = 77;

	memset(wire, 0xa5, sizeof(wire));
	memset(untouched, 0xa5, sizeof(untouched));
	assert_int_equal(cache_name_from_text(text, wire, sizeof(wire), &len),
	    -EINVAL);
	assert_int_equal(len, 77);
	assert_memory_equal(wire, untouched, sizeof(wire));
}

static void
test_name_from_text(void **state)
{
	char text[400], want[DNS_MAX_NAME_WIRE];
	uint8_t wire[DNS_MAX_NAME_WIRE];
	size_t len = 77, i;
	struct cache_key k;
	struct cache *c;
	struct dump_seen d;

	(void)state;
	assert_name("example.com", W_EXAMPLE, sizeof(W_EXAMPLE));
	assert_name("example.com.", W_EXAMPLE, sizeof(W_EXAMPLE));
	assert_name("EXAMPLE.Com", W_EXAMPLE, sizeof(W_EXAMPLE));
	assert_name("www.example.com.", W_WWW, sizeof(W_WWW));
	assert_name(".", "", 1);
	assert_name("com", W_COM, sizeof(W_COM));
	/* Escapes: a dot inside a label, \DDD (lowercased after decoding,
	 * as the key's bytes would be), any other character as itself. */
	assert_name("a\\.b.\\001Z", "\3a.b\2\001z", 8);
	assert_name("\\065\\066c", "\3abc", 5);
	assert_name("\\ex\\\\.", "\3ex\\", 5);
	assert_name("\\000", "\1\0", 3);

	/* Label and name bounds: 63 is a label, 64 is not; 255 bytes of
	 * wire (root label included) is a name, 256 is not. */
	memset(text, 'a', 63);
	text[63] = '\0';
	want[0] = 63;
	memset(want + 1, 'a', 63);
	want[64] = 0;
	assert_name(text, want, 65);
	text[63] = 'a';
	text[64] = '\0';
	assert_not_name(text);
	/* 63.63.63.61: 3 * 64 + 62 + 1 = 255 */
	memset(text, 'b', sizeof(text));
	text[63] = text[127] = text[191] = '.';
	text[253] = '\0';
	assert_int_equal(cache_name_from_text(text, wire, sizeof(wire), &len),
	    0);
	assert_int_equal(len, 255);
	assert_int_equal(wire[192], 61);
	assert_int_equal(wire[254], 0);
	text[253] = '.';
	text[254] = '\0';
	assert_int_equal(cache_name_from_text(text, wire, sizeof(wire), &len),
	    0);    /* the trailing dot adds nothing */
	assert_int_equal(len, 255);
	text[253] = 'b';
	assert_not_name(text);    /* 256 */
	/* Escapes count as the byte they stand for. */
	memset(text, 'b', sizeof(text));
	for (i = 0; i < 63; i++)
		memcpy(text + 4 * i, "\\098", 4);
	text[4 * 63] = '\0';
	assert_int_equal(cache_name_from_text(text, wire, sizeof(wire), &len),
	    0);
	assert_int_equal(len, 65);
	text[4 * 63] = 'b';
	text[4 * 63 + 1] = '\0';
	assert_not_name(text);

	/* Empty labels, except the root alone; broken escapes. */
	assert_not_name("");
	assert_not_name("..");
	assert_not_name(".com");
	assert_not_name("a..b");
	assert_not_name("example.com..");
	assert_not_name("a\\");
	assert_not_name("\\25");
	assert_not_name("\\2x5");
	assert_not_name("\\256");
	assert_not_name(NULL);

	/* Too small a buffer: -ENOSPC, nothing written. */
	memset(wire, 0xa5, sizeof(wire));
	len = 77;
	assert_int_equal(cache_name_from_text("example.com", wire,
	    sizeof(W_EXAMPLE) - 1, &len), -ENOSPC);
	assert_int_equal(len, 77);
	assert_int_equal(wire[0], 0xa5);
	assert_int_equal(cache_name_from_text("example.com", wire,
	    sizeof(W_EXAMPLE), &len), 0);
	assert_int_equal(len, sizeof(W_EXAMPLE));

	/* What the dump prints reads back as the same key name. */
	assert_int_equal(cache_name_from_text("A\\.b.\\001z.", wire,
	    sizeof(wire), &len), 0);
	key_for(&k, (const char *)wire, len, DNS_TYPE_A, 0, 0);
	c = new_cache(BIG, 0);
	assert_non_null(c);
	assert_int_equal(put_plain(c, &k, 20, 1, 60, 0), 0);
	memset(&d, 0, sizeof(d));
	assert_int_equal(cache_dump(c, 0, dump_cb, &d), 0);
	assert_int_equal(d.n, 1);
	assert_int_equal(cache_name_from_text(d.e[0].name, wire, sizeof(wire),
	    &len), 0);
	assert_int_equal(len, k.len - 5);
	assert_memory_equal(wire, k.bytes, len);
	cache_free(c);
}

/* What a dump saw, in sum. */
struct dump_sum {
	size_t n;
	size_t bytes;
};

static int
dump_sum_cb(void *arg, const struct cache_entry_info *e)
{
	struct dump_sum *d = arg;

	d->n++;
	d->bytes += e->bytes;
	return 0;
}

/* An answer as an upstream sends it: the header, the question as the key
 * has it (name, type A, class IN), then rest_len more bytes with a TTL
 * field (300) at their start. Returns its length. */
static size_t
echo_answer(uint8_t *ans, const struct cache_key *k, size_t rest_len,
    struct dnsmsg_answer_info *info)
{
	size_t q = k->len - 1;
	uint16_t off = (uint16_t)(DNS_HDR_LEN + q);

	fill(ans, DNS_HDR_LEN + q + rest_len, 5);
	ans[2] = 0x81;
	ans[3] = 0x80;
	memcpy(ans + DNS_HDR_LEN, k->bytes, q);
	put_u32(ans + off, 300);
	info_init(info, 300, &off, 1);
	return DNS_HDR_LEN + q + rest_len;
}

/* The question of an answer is the key's name, type and class: it is kept
 * once (cost smaller by that much), and every copy out is still byte for
 * byte the answer put, aged or stale. An answer whose question differs
 * (here by the case of one letter), or that is too short to hold it, is
 * kept whole and comes back unchanged too. */
static void
test_question_once(void **state)
{
	struct dnsmsg_answer_info info;
	struct dump_sum sum;
	struct cache_stats st;
	struct cache_key k, k2;
	struct cache *c;
	uint8_t ans[200], out[200], want[200];
	size_t len, q, out_len, whole, once;

	(void)state;
	key_for(&k, W_WWW, sizeof(W_WWW), DNS_TYPE_A, 1, 0);
	key_for(&k2, W_EXAMPLE, sizeof(W_EXAMPLE), DNS_TYPE_A, 0, 0);
	q = k.len - 1;
	whole = measure_cost(&k, 100, 1);
	c = new_cache(BIG, 600);
	assert_non_null(c);

	len = echo_answer(ans, &k, 60, &info);
	assert_int_equal(cache_put(c, &k, ans, len, &info, 1000), 0);
	stats(c, &st);
	once = st.bytes;
	assert_int_equal(once, measure_cost(&k, len, 1) - q);
	assert_int_equal(measure_cost(&k, len, 1), whole + len - 100);
	assert_int_equal(cache_get(c, &k, 1000, out, sizeof(out), &out_len,
	    NULL), 0);
	assert_int_equal(out_len, len);
	assert_memory_equal(out, ans, len);
	/* Aged 10 s: only the TTL field differs. */
	assert_int_equal(cache_get(c, &k, 11000, out, sizeof(out), &out_len,
	    NULL), 0);
	memcpy(want, ans, len);
	put_u32(want + DNS_HDR_LEN + q, 290);
	assert_memory_equal(out, want, len);
	/* A buffer one byte short is still -ENOSPC: the answer's length. */
	assert_int_equal(cache_get(c, &k, 11000, out, len - 1, &out_len, NULL),
	    -ENOSPC);
	/* Stale: every TTL set, nothing else. */
	assert_int_equal(cache_get_stale(c, &k, 301000, 30, out, sizeof(out),
	    &out_len, NULL), 0);
	put_u32(want + DNS_HDR_LEN + q, 30);
	assert_memory_equal(out, want, len);

	/* One letter of the question in upper case: kept whole. */
	len = echo_answer(ans, &k2, 60, &info);
	ans[DNS_HDR_LEN + 1] = 'E';
	assert_int_equal(cache_put(c, &k2, ans, len, &info, 1000), 0);
	stats(c, &st);
	assert_int_equal(st.bytes - once, measure_cost(&k2, len, 1));
	assert_int_equal(cache_get(c, &k2, 1000, out, sizeof(out), &out_len,
	    NULL), 0);
	assert_int_equal(out_len, len);
	assert_memory_equal(out, ans, len);

	/* The dump reports what is accounted. */
	memset(&sum, 0, sizeof(sum));
	assert_int_equal(cache_dump(c, 1000, dump_sum_cb, &sum), 0);
	assert_int_equal(sum.n, 2);
	assert_int_equal(sum.bytes, st.bytes);

	/* Too short to hold the question: kept whole, as given. */
	len = DNS_HDR_LEN + q - 1;
	fill(ans, len, 9);
	memcpy(ans + DNS_HDR_LEN, k.bytes, q - 1);
	info_init(&info, 60, NULL, 0);
	assert_int_equal(cache_put(c, &k, ans, len, &info, 2000), 0);
	stats(c, &st);
	assert_int_equal(st.entries, 2);
	assert_int_equal(cache_get(c, &k, 2000, out, sizeof(out), &out_len,
	    NULL), 0);
	assert_int_equal(out_len, len);
	assert_memory_equal(out, ans, len);
	cache_free(c);
}

/* ---- shards, the key hash, claim records ---- */

static void
test_shard_count(void **state)
{
	static const struct {
		size_t max;
		unsigned want, got;
	} cases[] = {
		{ BIG, 16, 16 },
		{ BIG, 9, 16 },          /* rounded up to a power of two */
		{ BIG, 3, 4 },
		{ BIG, 17, 16 },         /* 32 would be 128 KiB each */
		{ BIG, 1, 1 },
		{ BIG, 0, 1 },
		{ BIG + 7, 16, 16 },     /* the 7 bytes go to shards 0-6 */
		{ BIG - 1, 16, 8 },
		{ 64 << 20, 17, 32 },
		{ (size_t)1 << 30, 256, 256 },
		{ (size_t)1 << 30, 1000, 256 },
		{ (size_t)1 << 30, 1u << 31, 256 },
		{ 1 << 20, 16, 4 },
		{ 2 * CACHE_MIN_SHARD_BYTES, 2, 2 },
		{ 2 * CACHE_MIN_SHARD_BYTES - 1, 2, 1 },
		{ 0, 16, 1 },
		{ 12345, 64, 1 },
	};
	struct cache_stats st;
	struct cache *c;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		c = cache_new_shards(cases[i].max, 0, cases[i].want);
		assert_non_null(c);
		stats(c, &st);
		assert_int_equal(st.shards, cases[i].got);
		/* The shares sum to the bound, whatever the remainder. */
		assert_int_equal(st.max_bytes, cases[i].max);
		/* A resize shares out the same way and keeps the count. */
		cache_resize(c, 12345);
		stats(c, &st);
		assert_int_equal(st.shards, cases[i].got);
		assert_int_equal(st.max_bytes, 12345);
		cache_free(c);
	}
	c = cache_new(BIG, 0);
	assert_non_null(c);
	stats(c, &st);
	assert_int_equal(st.shards, 1);
	cache_free(c);
}

/* 16 shards of a 4 MiB bound, filled with far more: every shard evicts
 * on its own, the bound holds for the whole, the stats are the sums of the
 * shards (a dump agrees), and each shard keeps its most recent entries:
 * the last puts all hit. */
#define SB_PUTS 30000
#define SB_LEN 300

static void
test_shard_bound(void **state)
{
	struct cache_stats st, st2;
	struct dump_sum d;
	struct cache_key k;
	struct cache *c;
	size_t cost_max;
	unsigned i;

	(void)state;
	key_idx(&k, 39);    /* the longest name key_idx makes */
	cost_max = measure_cost(&k, SB_LEN, 0);
	c = cache_new_shards(BIG, 600, 16);
	assert_non_null(c);
	for (i = 0; i < SB_PUTS; i++) {
		key_idx(&k, i);
		assert_int_equal(put_plain(c, &k, SB_LEN, i, 3600, i), 0);
		if (i % 1000 == 0) {
			stats(c, &st);
			assert_true(st.bytes <= BIG);
		}
	}
	stats(c, &st);
	assert_int_equal(st.shards, 16);
	assert_int_equal(st.max_bytes, BIG);
	assert_true(st.bytes <= BIG);
	assert_int_equal(st.entries + st.evictions, SB_PUTS);
	/* Every shard had to evict, and stopped as soon as the entry fit:
	 * none is short of its share by as much as one entry. */
	assert_true(st.bytes > BIG - 16 * cost_max);
	memset(&d, 0, sizeof(d));
	assert_int_equal(cache_dump(c, SB_PUTS, dump_sum_cb, &d), 0);
	assert_int_equal(d.n, st.entries);
	assert_int_equal(d.bytes, st.bytes);
	/* 1000 entries are about 30 KiB a shard, far below 256 KiB. */
	for (i = SB_PUTS - 1000; i < SB_PUTS; i++) {
		key_idx(&k, i);
		assert_true(has_plain(c, &k, SB_LEN, i, SB_PUTS));
	}
	/* The first, never read again, was the LRU of its shard long ago. */
	key_idx(&k, 0);
	assert_false(has_plain(c, &k, SB_LEN, 0, SB_PUTS));

	/* Shrinking evicts in every shard; the count is unchanged. */
	cache_resize(c, 1 << 20);
	stats(c, &st2);
	assert_int_equal(st2.shards, 16);
	assert_int_equal(st2.max_bytes, 1 << 20);
	assert_true(st2.bytes <= 1 << 20);
	assert_true(st2.bytes > (1 << 20) - 16 * cost_max);
	assert_int_equal(st.entries - st2.entries, st2.evictions - st.evictions);
	for (i = SB_PUTS - 100; i < SB_PUTS; i++) {
		key_idx(&k, i);
		assert_true(has_plain(c, &k, SB_LEN, i, SB_PUTS));
	}
	memset(&d, 0, sizeof(d));
	assert_int_equal(cache_dump(c, SB_PUTS, dump_sum_cb, &d), 0);
	assert_int_equal(d.n, st2.entries);
	assert_int_equal(d.bytes, st2.bytes);

	/* A flush empties every shard and counts once. */
	assert_int_equal(cache_flush(c), st2.entries);
	stats(c, &st);
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.bytes, 0);
	assert_int_equal(st.flushes, 1);
	cache_resize(c, 0);
	key_idx(&k, 1);
	assert_int_equal(put_plain(c, &k, SB_LEN, 1, 60, 0), -E2BIG);
	cache_resize(c, BIG);
	assert_int_equal(put_plain(c, &k, SB_LEN, 1, 60, 0), 0);
	assert_true(has_plain(c, &k, SB_LEN, 1, 0));
	cache_free(c);
}

/* cache_key_make hashes; cache_key_hash agrees and must follow a change
 * by hand; the hash spreads names that differ in a digit or two evenly
 * over both the shards (top bits) and the buckets (low bits). */
static void
test_key_hash(void **state)
{
	static unsigned shard[16], bucket[1024];
	struct cache_key k, k2;
	struct cache *c;
	uint32_t h;
	unsigned i;

	(void)state;
	key_idx(&k, 1);
	h = k.hash;
	cache_key_hash(&k);
	assert_int_equal(k.hash, h);
	k2 = k;
	k2.bytes[1] = 'K';
	cache_key_hash(&k2);
	assert_int_not_equal(k2.hash, h);
	k2.bytes[1] = 'k';
	k2.len--;
	cache_key_hash(&k2);
	assert_int_not_equal(k2.hash, h);

	/* 65536 keys: 4096 a shard (sd 62) and 64 a bucket (sd 8) expected;
	 * the bounds are more than 6 sd away. */
	for (i = 0; i < 65536; i++) {
		key_idx(&k, i);
		shard[k.hash >> 28]++;
		bucket[k.hash & 1023]++;
	}
	for (i = 0; i < 16; i++)
		assert_true(shard[i] > 4096 - 400 && shard[i] < 4096 + 400);
	for (i = 0; i < 1024; i++)
		assert_true(bucket[i] > 64 - 50 && bucket[i] < 64 + 50);

	/* A key changed by hand and not rehashed is looked for with the old
	 * hash, and misses; rehashed, it hits. */
	c = cache_new_shards(BIG, 0, 16);
	assert_non_null(c);
	key_for(&k, NAME_EXAMPLE, sizeof(NAME_EXAMPLE), DNS_TYPE_A, 0, 1);
	assert_int_equal(put_plain(c, &k, 50, 1, 60, 0), 0);
	key_for(&k2, NAME_EXAMPLE, sizeof(NAME_EXAMPLE), DNS_TYPE_A, 0, 0);
	k2.bytes[k2.len - 1] = 0x02;    /* CD, as k */
	assert_memory_equal(k2.bytes, k.bytes, k.len);
	assert_false(has_plain(c, &k2, 50, 1, 0));
	cache_key_hash(&k2);
	assert_int_equal(k2.hash, k.hash);
	assert_true(has_plain(c, &k2, 50, 1, 0));
	cache_free(c);
}

static size_t
inflight(struct cache *c)
{
	struct cache_stats st;

	stats(c, &st);
	return st.inflight;
}

static void
test_claim(void **state)
{
	struct cache_key ka, kb, kbad;
	struct cache_stats st;
	struct cache *c;

	(void)state;
	key_idx(&ka, 1);
	key_idx(&kb, 2);
	c = cache_new_shards(BIG, 0, 16);
	assert_non_null(c);

	/* Nobody fetches a: worker 3 owns it. Claiming again, with or
	 * without wait, changes nothing. */
	assert_int_equal(cache_claim(c, &ka, 3, 1), CACHE_CLAIM_OWNER);
	assert_int_equal(inflight(c), 1);
	assert_int_equal(cache_claim(c, &ka, 3, 0), CACHE_CLAIM_OWNER);
	assert_int_equal(cache_claim(c, &ka, 3, 1), CACHE_CLAIM_OWNER);
	assert_int_equal(inflight(c), 1);

	/* The others: busy without wait (nothing recorded), recorded with
	 * it; waiting twice is one bit. Workers 0 and 63 are the edges. */
	assert_int_equal(cache_claim(c, &ka, 5, 0), CACHE_CLAIM_BUSY);
	assert_int_equal(cache_claim(c, &ka, 0, 1), CACHE_CLAIM_WAIT);
	assert_int_equal(cache_claim(c, &ka, 63, 1), CACHE_CLAIM_WAIT);
	assert_int_equal(cache_claim(c, &ka, 0, 1), CACHE_CLAIM_WAIT);
	assert_int_equal(cache_claim(c, &ka, 0, 0), CACHE_CLAIM_BUSY);
	assert_int_equal(inflight(c), 1);

	/* Another key, another record. */
	assert_int_equal(cache_claim(c, &kb, 5, 0), CACHE_CLAIM_OWNER);
	assert_int_equal(inflight(c), 2);

	/* Only the owner's release removes: a waiter's, a busy worker's, an
	 * unknown worker's return 0 and leave the record as it was. */
	assert_int_equal(cache_release(c, &ka, 0), 0);
	assert_int_equal(cache_release(c, &ka, 5), 0);
	assert_int_equal(cache_release(c, &ka, 9), 0);
	assert_int_equal(inflight(c), 2);
	assert_int_equal(cache_claim(c, &ka, 7, 0), CACHE_CLAIM_BUSY);

	/* The owner's gives the waiters, not the busy one, never itself. */
	assert_true(cache_release(c, &ka, 3) ==
	    ((uint64_t)1 << 0 | (uint64_t)1 << 63));
	assert_int_equal(inflight(c), 1);
	assert_int_equal(cache_release(c, &ka, 3), 0);    /* gone */

	/* A new record for the next claimer: a former waiter may own it,
	 * the former owner wait on it. */
	assert_int_equal(cache_claim(c, &ka, 0, 1), CACHE_CLAIM_OWNER);
	assert_int_equal(cache_claim(c, &ka, 3, 1), CACHE_CLAIM_WAIT);

	/* Records and entries of the same key live side by side, and a
	 * flush leaves the records: they are fetches in flight. */
	assert_int_equal(put_plain(c, &ka, 50, 1, 60, 0), 0);
	assert_true(has_plain(c, &ka, 50, 1, 0));
	assert_int_equal(cache_flush(c), 1);
	stats(c, &st);
	assert_int_equal(st.inflight, 2);
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.bytes, 0);
	assert_int_equal(cache_release(c, &kb, 5), 0);    /* no waiters */
	assert_true(cache_release(c, &ka, 0) == (uint64_t)1 << 3);
	assert_int_equal(inflight(c), 0);

	/* Out of range: a worker past 63, a key of length 0 or too long. */
	assert_int_equal(cache_claim(c, &ka, CACHE_MAX_WORKERS, 1), -EINVAL);
	assert_int_equal(cache_release(c, &ka, CACHE_MAX_WORKERS), 0);
	kbad = ka;
	kbad.len = 0;
	assert_int_equal(cache_claim(c, &kbad, 1, 1), -EINVAL);
	assert_int_equal(cache_release(c, &kbad, 1), 0);
	kbad.len = CACHE_KEY_MAX + 1;
	assert_int_equal(cache_claim(c, &kbad, 1, 1), -EINVAL);
	assert_int_equal(inflight(c), 0);

	/* Records still there at cache_free go with it (run under valgrind
	 * or ASan to see). */
	assert_int_equal(cache_claim(c, &ka, 1, 0), CACHE_CLAIM_OWNER);
	assert_int_equal(cache_claim(c, &kb, 2, 0), CACHE_CLAIM_OWNER);
	assert_int_equal(cache_claim(c, &kb, 4, 1), CACHE_CLAIM_WAIT);
	cache_free(c);
}

/* A refresh claims only while the entry still needs one: between a
 * worker's lookup and its claim another may have put the new answer. */
static void
test_claim_refresh(void **state)
{
	struct dnsmsg_answer_info info;
	struct cache_key ka, kb;
	struct cache *c;
	uint8_t ans[STD_LEN];

	(void)state;
	key_idx(&ka, 1);
	key_idx(&kb, 2);
	std_answer(ans, 0x80, &info, 100);
	c = cache_new_shards(BIG, 60, 16);
	assert_non_null(c);

	/* No entry: a claim like any other. */
	assert_int_equal(cache_claim_refresh(c, &kb, 1, 0, 10),
	    CACHE_CLAIM_OWNER);
	assert_int_equal(cache_release(c, &kb, 1), 0);

	/* 100 s put at 0. At 85 s, 15 s left: more than a tenth, so BUSY
	 * and nothing recorded; at 90.5 s, 9.5 s left: worker 1 owns it, and
	 * worker 2's refresh is busy as with cache_claim. */
	assert_int_equal(cache_put(c, &ka, ans, sizeof(ans), &info, 0), 0);
	assert_int_equal(cache_claim_refresh(c, &ka, 1, 85000, 10),
	    CACHE_CLAIM_BUSY);
	assert_int_equal(inflight(c), 0);
	assert_int_equal(cache_claim_refresh(c, &ka, 1, 90500, 10),
	    CACHE_CLAIM_OWNER);
	assert_int_equal(inflight(c), 1);
	assert_int_equal(cache_claim_refresh(c, &ka, 2, 90500, 10),
	    CACHE_CLAIM_BUSY);
	/* Worker 1's refresh lands and its claim ends. Worker 2, which saw
	 * the old entry a moment ago, claims now: busy, the entry is new. */
	assert_int_equal(cache_put(c, &ka, ans, sizeof(ans), &info, 90600),
	    0);
	assert_int_equal(cache_release(c, &ka, 1), 0);
	assert_int_equal(cache_claim_refresh(c, &ka, 2, 90700, 10),
	    CACHE_CLAIM_BUSY);
	assert_int_equal(inflight(c), 0);
	/* Expired (stale) is not refreshed: the claim is made. */
	assert_int_equal(cache_claim_refresh(c, &ka, 2, 90600 + 100000, 10),
	    CACHE_CLAIM_OWNER);
	assert_int_equal(cache_release(c, &ka, 2), 0);
	/* Out of range as cache_claim. */
	assert_int_equal(cache_claim_refresh(c, &ka, CACHE_MAX_WORKERS, 0,
	    10), -EINVAL);
	cache_free(c);
}

/* A client's miss claims only while the cache has no fresh answer:
 * between a worker's lookup and its claim another may have fetched the
 * key, stored the answer and released its record. */
static void
test_claim_miss(void **state)
{
	struct dnsmsg_answer_info info;
	struct cache_key ka;
	struct cache *c;
	uint8_t ans[STD_LEN];

	(void)state;
	key_idx(&ka, 1);
	std_answer(ans, 0x80, &info, 100);
	c = cache_new_shards(BIG, 60, 16);
	assert_non_null(c);

	/* No entry: worker 1 owns the fetch, worker 2 waits for it. */
	assert_int_equal(cache_claim_miss(c, &ka, 1, 0), CACHE_CLAIM_OWNER);
	assert_int_equal(cache_claim_miss(c, &ka, 2, 0), CACHE_CLAIM_WAIT);
	/* Worker 1's answer lands and its claim ends, waking worker 2.
	 * Worker 3 missed before the put and claims after the release:
	 * the answer is there, fresh, so nothing is claimed or recorded. */
	assert_int_equal(cache_put(c, &ka, ans, sizeof(ans), &info, 100), 0);
	assert_true(cache_release(c, &ka, 1) == (uint64_t)1 << 2);
	assert_int_equal(cache_claim_miss(c, &ka, 3, 200), CACHE_CLAIM_FRESH);
	assert_int_equal(inflight(c), 0);
	/* To its last millisecond (what cache_get serves, this claim finds
	 * fresh); from its expiry on (stale) the claim is made. */
	assert_int_equal(cache_claim_miss(c, &ka, 3, 100099),
	    CACHE_CLAIM_FRESH);
	assert_int_equal(cache_claim_miss(c, &ka, 3, 100100),
	    CACHE_CLAIM_OWNER);
	assert_int_equal(cache_claim_miss(c, &ka, 4, 100100),
	    CACHE_CLAIM_WAIT);
	assert_true(cache_release(c, &ka, 3) == (uint64_t)1 << 4);
	/* Out of range as cache_claim. */
	assert_int_equal(cache_claim_miss(c, &ka, CACHE_MAX_WORKERS, 0),
	    -EINVAL);
	assert_int_equal(inflight(c), 0);
	cache_free(c);
}

/* No memory for a record: the claimer owns the fetch without one, so
 * nobody learns of it and its release returns 0. */
static void
test_claim_oom(void **state)
{
	struct cache_key ka, kb;
	struct cache *c;
	unsigned long failed;
	long n;

	(void)state;
	key_idx(&ka, 1);
	key_idx(&kb, 2);
	c = cache_new(BIG, 0);    /* one shard: a and b share the table */
	assert_non_null(c);
	/* On an empty shard the record, the claims table and its buckets
	 * are the three allocations. */
	for (n = 0; n < 3; n++) {
		failed = mem_failures();
		mem_fail_after(n);
		assert_int_equal(cache_claim(c, &ka, 1, 1), CACHE_CLAIM_OWNER);
		mem_fail_after(-1);
		assert_int_equal(mem_failures(), failed + 1);
		assert_int_equal(inflight(c), 0);
		/* So another worker owns it too, with a record this time. */
		assert_int_equal(cache_claim(c, &ka, 2, 1), CACHE_CLAIM_OWNER);
		assert_int_equal(cache_claim(c, &ka, 1, 1), CACHE_CLAIM_WAIT);
		assert_int_equal(inflight(c), 1);
		assert_int_equal(cache_release(c, &ka, 2), (uint64_t)1 << 1);
		assert_int_equal(cache_release(c, &ka, 1), 0);
		assert_int_equal(inflight(c), 0);
	}
	/* With a table in place only the record is allocated. */
	assert_int_equal(cache_claim(c, &ka, 1, 1), CACHE_CLAIM_OWNER);
	failed = mem_failures();
	mem_fail_after(0);
	assert_int_equal(cache_claim(c, &kb, 2, 1), CACHE_CLAIM_OWNER);
	mem_fail_after(-1);
	assert_int_equal(mem_failures(), failed + 1);
	assert_int_equal(inflight(c), 1);
	assert_int_equal(cache_release(c, &kb, 2), 0);
	/* A claim that finds a record needs no memory: an allocation
	 * failure does not turn a WAIT into an OWNER. */
	mem_fail_after(0);
	assert_int_equal(cache_claim(c, &ka, 2, 1), CACHE_CLAIM_WAIT);
	mem_fail_after(-1);
	assert_int_equal(cache_release(c, &ka, 1), (uint64_t)1 << 2);
	assert_int_equal(inflight(c), 0);
	cache_free(c);
}

static int
shards_1(void **state)
{
	(void)state;
	test_shards = 1;
	return 0;
}

static int
shards_16(void **state)
{
	(void)state;
	test_shards = 16;
	return 0;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_new_free),
		cmocka_unit_test(test_accounting),
		cmocka_unit_test(test_hit_miss),
		cmocka_unit_test(test_ttl_aging),
		cmocka_unit_test(test_expiry_at_ttl),
		cmocka_unit_test(test_negative_ttl),
		cmocka_unit_test(test_key_make),
		cmocka_unit_test(test_replace),
		cmocka_unit_test(test_eviction_lru),
		cmocka_unit_test(test_e2big),
		cmocka_unit_test(test_uncacheable),
		cmocka_unit_test(test_enospc),
		cmocka_unit_test(test_enomem),
		cmocka_unit_test(test_meta_fresh),
		cmocka_unit_test(test_stale_window),
		cmocka_unit_test(test_stale_on_fresh),
		cmocka_unit_test(test_stale_zero),
		cmocka_unit_test(test_refresh_failed),
		cmocka_unit_test(test_long_uptime),
		cmocka_unit_test(test_eviction_stale),
		cmocka_unit_test(test_random_bound),
		cmocka_unit_test(test_flush_all),
		cmocka_unit_test(test_flush_name),
		cmocka_unit_test(test_flush_subtree),
		cmocka_unit_test(test_dump),
		cmocka_unit_test(test_resize),
		cmocka_unit_test(test_name_from_text),
		cmocka_unit_test(test_question_once),
	};
	const struct CMUnitTest shard_tests[] = {
		cmocka_unit_test(test_shard_count),
		cmocka_unit_test(test_shard_bound),
		cmocka_unit_test(test_key_hash),
		cmocka_unit_test(test_claim),
		cmocka_unit_test(test_claim_refresh),
		cmocka_unit_test(test_claim_miss),
		cmocka_unit_test(test_claim_oom),
	};
	int failed;

	failed = cmocka_run_group_tests_name("one shard", tests, shards_1,
	    NULL);
	failed += cmocka_run_group_tests_name("16 shards", tests, shards_16,
	    NULL);
	failed += cmocka_run_group_tests_name("shards and claims",
	    shard_tests, NULL, NULL);
	return failed;
}
