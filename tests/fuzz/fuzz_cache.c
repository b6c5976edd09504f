/* fuzz_cache.c: libFuzzer target for the cache (src/cache.c) on the path
 * query.c takes: parse an answer, strip its OPT, put it; get, get stale;
 * and the control operations: flush, flush a name, dump, resize.
 *
 * The input is a script of operations on a cache with a small byte bound
 * (so that eviction is constant), over eight keys made from four names
 * (one below another, to test subtree flushes) with flag bytes. Answers
 * are built from input bytes behind the key's question (flags, counts,
 * then records or raw bytes) and kept only when dnsmsg_parse_answer
 * accepts them, as query.c does. Time moves forward by input amounts.
 *
 * A model remembers, per key, what was last stored and when, or that the
 * key is surely absent (never stored, flushed). Checked with
 * __builtin_trap(): stats.bytes <= stats.max_bytes at all times, and no
 * bytes without entries; a put that succeeds can be read back at once,
 * byte for byte; a fresh get returns exactly what was put, with its TTLs
 * lowered by the whole seconds since, and never after the TTL ran out; a
 * stale get returns it with every TTL set to the stale TTL, only between
 * expiry and the end of the stale window; a surely absent key is never
 * found; a dump changes nothing and reports no more than the stats hold;
 * a resize leaves everything within the new bound. Allocation failures
 * (mem_fail_after, an input operation) must leave the cache as it was.
 *
 * Claims (cache_claim, cache_claim_miss, cache_claim_refresh,
 * cache_release) by four workers have a model too: per key, whether a
 * record exists (stats.inflight says when a claim made one: without
 * memory it makes none), its owner and its waiters. Every result must be
 * the model's: a miss's claim is FRESH exactly when cache_get at the same
 * instant finds the entry, a refresh's is BUSY when the entry is found
 * with more than 1/fraction of its lifetime left, and otherwise records
 * decide (OWNER, WAIT, BUSY); a release returns exactly the waiters.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "dnsmsg.h"
#include "mem.h"
#include "../common/wire.h"
#include "fuzz_input.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define N_NAMES 4
#define N_KEYS (N_NAMES * 2)
#define MAX_OPS 300
#define ANS_MAX 2048

struct model {
	int stored;             /* 0: surely absent; 1: maybe present */
	uint8_t ans[ANS_MAX];
	size_t len;
	struct dnsmsg_answer_info info;
	uint64_t at;            /* put time */
	uint64_t retry_at;      /* cache_refresh_failed's, 0 = none */
};

static const char *const names[N_NAMES] = {
	"example.com", "www.example.com", "a.www.example.com", "example.org",
};

static struct cache_key keys[N_KEYS];
static struct dnsmsg_question questions[N_KEYS];
static uint8_t qbytes[N_KEYS][300];
static size_t qlen[N_KEYS];
static struct model model[N_KEYS];
static uint32_t stale_max_s;

#define N_WORKERS 4

struct claim_model {
	int present;            /* the cache holds a record for the key */
	unsigned owner;
	uint64_t waiters;
};

static struct claim_model claims[N_KEYS];

/* Key i: name i / 2, type A, DO set for odd i (a second key per name). */
static void
keys_init(void)
{
	struct dnsmsg_query q;
	uint8_t *b;
	size_t i, n;

	for (i = 0; i < N_KEYS; i++) {
		b = qbytes[i];
		memset(b, 0, DNS_HDR_LEN);
		b[2] = 1;
		b[5] = 1;
		n = DNS_HDR_LEN + put_name(b + DNS_HDR_LEN, names[i / 2]);
		b[n++] = 0;
		b[n++] = DNS_TYPE_A;
		b[n++] = 0;
		b[n++] = 1;
		if (i & 1) {
			b[11] = 1;     /* ARCOUNT: an OPT with DO */
			memcpy(b + n, "\0\0\51\20\0\0\0\200\0\0\0", 11);
			n += 11;
		}
		if (dnsmsg_parse_query(b, n, &q) != 0 || !q.has_question)
			abort();
		qlen[i] = n;
		questions[i] = q.q;
		cache_key_make(&keys[i], &q);
	}
}

static void
check_stats(struct cache *c)
{
	struct cache_stats st;

	cache_get_stats(c, &st);
	if (st.bytes > st.max_bytes || (st.entries == 0) != (st.bytes == 0))
		__builtin_trap();
}

/* An answer for key k into b: the question's bytes, then from the input
 * the flags, counts, and either synthesized A records with input TTLs or
 * raw record bytes. Returns its length. */
static size_t
build_answer(struct input *in, size_t k, uint8_t *b)
{
	uint8_t mode = take8(in), cnt = take8(in);
	size_t n = DNS_HDR_LEN + questions[k].wire_len + 4, i, raw;
	uint32_t ttl;

	memcpy(b, qbytes[k], n);
	b[2] = (uint8_t)(0x81 | (mode & 0x02 ? 0x02 : 0)); /* QR RD [TC] */
	b[3] = (uint8_t)(0x80 | (mode >> 4));              /* RA rcode */
	memset(b + 6, 0, 6);
	if (mode & 0x01) {
		b[7] = (uint8_t)(cnt & 0x0f);
		b[9] = (uint8_t)(cnt >> 4 & 0x03);
		b[11] = (uint8_t)(cnt >> 6);
		raw = take8(in);
		if (raw > in->n)
			raw = in->n;
		if (raw > ANS_MAX - n)
			raw = ANS_MAX - n;
		memcpy(b + n, in->p, raw);
		in->p += raw;
		in->n -= raw;
		return n + raw;
	}
	/* cnt % 8 A records for the question's name, TTLs from the input. */
	b[7] = (uint8_t)(cnt % 8);
	for (i = 0; i < (size_t)(cnt % 8); i++) {
		ttl = (uint32_t)take16(in) << (cnt & 0x80 ? 8 : 0);
		memcpy(b + n, "\300\14\0\1\0\1", 6);
		b[n + 6] = (uint8_t)(ttl >> 24);
		b[n + 7] = (uint8_t)(ttl >> 16);
		b[n + 8] = (uint8_t)(ttl >> 8);
		b[n + 9] = (uint8_t)ttl;
		memcpy(b + n + 10, "\0\4\300\0\2", 5);
		b[n + 15] = (uint8_t)i;
		n += 16;
	}
	return n;
}

static void
op_put(struct cache *c, struct input *in, uint64_t now)
{
	size_t k = take8(in) % N_KEYS, len, got;
	uint8_t b[ANS_MAX], out[ANS_MAX];
	struct dnsmsg_answer_info info;
	struct cache_meta meta;
	int rc;

	len = build_answer(in, k, b);
	if (dnsmsg_parse_answer(b, len, &questions[k], &info) != 0)
		return;
	len = dnsmsg_strip_opt(b, len, &info);
	rc = cache_put(c, &keys[k], b, len, &info, now);
	check_stats(c);
	if (rc == -ENOMEM || rc == -E2BIG)
		return;   /* unchanged */
	if (rc != 0)
		__builtin_trap();
	if (!info.cacheable || info.ttl == 0)
		return;   /* nothing done */
	model[k].stored = 1;
	memcpy(model[k].ans, b, len);
	model[k].len = len;
	model[k].info = info;
	/* cache_put's contract: a longer lifetime is shortened. */
	if (info.ttl > CACHE_TTL_MAX)
		model[k].info.ttl = CACHE_TTL_MAX;
	model[k].at = now;
	model[k].retry_at = 0;
	/* It is the newest entry: nothing can have pushed it out yet. */
	if (cache_get(c, &keys[k], now, out, sizeof(out), &got, &meta) != 0 ||
	    got != len || memcmp(out, b, len) != 0 || meta.age != 0 ||
	    meta.ttl != model[k].info.ttl)
		__builtin_trap();
}

static void
op_get(struct cache *c, struct input *in, uint64_t now, int stale)
{
	size_t k = take8(in) % N_KEYS, got = 0;
	uint8_t out[ANS_MAX], want[ANS_MAX];
	struct model *m = &model[k];
	struct cache_meta meta;
	uint64_t expiry;
	uint32_t age;
	int rc;

	if (stale)
		rc = cache_get_stale(c, &keys[k], now, 30, out, sizeof(out),
		    &got, &meta);
	else
		rc = cache_get(c, &keys[k], now, out, sizeof(out), &got,
		    &meta);
	check_stats(c);
	if (rc == -ENOENT)
		return;
	if (rc != 0 || !m->stored || got != m->len)
		__builtin_trap();
	expiry = m->at + (uint64_t)m->info.ttl * 1000;
	memcpy(want, m->ans, m->len);
	if (stale) {
		if (now < expiry ||
		    now - expiry >= (uint64_t)stale_max_s * 1000 ||
		    !meta.stale)
			__builtin_trap();
		dnsmsg_set_ttls(want, m->len, m->info.ttl_off, m->info.n_ttl,
		    30);
	} else {
		if (now >= expiry || meta.stale)
			__builtin_trap();
		age = (uint32_t)((now - m->at) / 1000);
		if (meta.age != age)
			__builtin_trap();
		dnsmsg_age_ttls(want, m->len, m->info.ttl_off, m->info.n_ttl,
		    age);
	}
	if (memcmp(out, want, m->len) != 0 || meta.ttl != m->info.ttl)
		__builtin_trap();
	/* The entry's own record or none (when its allocation failed), never
	 * one left by an entry before it. */
	if (meta.refresh_after_ms != m->retry_at && meta.refresh_after_ms != 0)
		__builtin_trap();
}

/* Does key k's name fall under flushing name j? */
static int
flush_hits(size_t k, size_t j, int subtree)
{
	const char *n = names[k / 2], *f = names[j];
	size_t ln = strlen(n), lf = strlen(f);

	if (strcmp(n, f) == 0)
		return 1;
	return subtree && ln > lf && strcmp(n + ln - lf, f) == 0 &&
	    n[ln - lf - 1] == '.';
}

static void
op_flush_name(struct cache *c, struct input *in)
{
	uint8_t b = take8(in), wire[DNS_MAX_NAME_WIRE + 8];
	size_t j = b % N_NAMES, len, k, raw;
	int subtree = (b & 0x10) != 0;

	if (b & 0x20) {
		/* Bytes that claim to be a name: anything may go, or none. */
		raw = take8(in) % sizeof(wire);
		if (raw > in->n)
			raw = in->n;
		memcpy(wire, in->p, raw);
		in->p += raw;
		in->n -= raw;
		(void)cache_flush_name(c, wire, raw, subtree);
		check_stats(c);
		return;
	}
	if (cache_name_from_text(names[j], wire, sizeof(wire), &len) != 0)
		abort();
	(void)cache_flush_name(c, wire, len, subtree);
	check_stats(c);
	for (k = 0; k < N_KEYS; k++)
		if (flush_hits(k, j, subtree))
			model[k].stored = 0;
}

struct dump_sum {
	size_t n, bytes;
};

static int
dump_cb(void *arg, const struct cache_entry_info *e)
{
	struct dump_sum *s = arg;
	size_t len = strlen(e->name);

	if (len == 0 || e->name[len - 1] != '.' || e->bytes == 0 ||
	    (e->stale && e->ttl_left != 0) ||
	    (!e->stale && e->stale_for != 0) || e->qtype != DNS_TYPE_A)
		__builtin_trap();
	s->n++;
	s->bytes += e->bytes;
	return 0;
}

static void
op_dump(struct cache *c, uint64_t now)
{
	struct cache_stats before, after;
	struct dump_sum s = { 0, 0 };

	cache_get_stats(c, &before);
	if (cache_dump(c, now, dump_cb, &s) != 0)
		__builtin_trap();
	cache_get_stats(c, &after);
	if (memcmp(&before, &after, sizeof(before)) != 0 ||
	    s.n > before.entries || s.bytes > before.bytes)
		__builtin_trap();
}

static size_t
inflight(struct cache *c)
{
	struct cache_stats st;

	cache_get_stats(c, &st);
	return st.inflight;
}

/* Per the model, is key k's entry fresh at now with more than 1/fraction
 * of its lifetime left (fraction 0: with any)? It may have been evicted:
 * the caller asks the cache whether it is there. */
static int
model_fresh(size_t k, uint64_t now, unsigned fraction)
{
	const struct model *m = &model[k];
	uint64_t expiry = m->at + (uint64_t)m->info.ttl * 1000;

	if (!m->stored || now >= expiry)
		return 0;
	return fraction == 0 ||
	    (expiry - now) * fraction > (uint64_t)m->info.ttl * 1000;
}

/* What a claim with no entry check returns, per the model, updating it
 * (a new record only when the cache says it made one). */
static int
claim_expect(struct claim_model *r, unsigned w, int wait, int rc,
    size_t before, size_t after)
{
	if (r->present) {
		if (after != before)
			__builtin_trap();
		if (r->owner == w)
			return CACHE_CLAIM_OWNER;
		if (!wait)
			return CACHE_CLAIM_BUSY;
		r->waiters |= (uint64_t)1 << w;
		return CACHE_CLAIM_WAIT;
	}
	if (rc == CACHE_CLAIM_OWNER && after == before + 1) {
		r->present = 1;
		r->owner = w;
		r->waiters = 0;
	} else if (after != before) {
		__builtin_trap();
	}
	return CACHE_CLAIM_OWNER;
}

static void
op_claim(struct cache *c, struct input *in, uint64_t now)
{
	uint8_t b = take8(in), out[ANS_MAX];
	size_t k = b % N_KEYS, got, before = inflight(c);
	unsigned w = (b >> 3) % N_WORKERS, kind = (b >> 5) % 4, fraction;
	struct claim_model *r = &claims[k];
	uint64_t mask, want;
	int rc, hit, expect, owned;

	if (kind == 3) {
		owned = r->present && r->owner == w;
		want = owned ? r->waiters & ~((uint64_t)1 << w) : 0;
		mask = cache_release(c, &keys[k], w);
		if (mask != want || inflight(c) != before - (owned ? 1 : 0))
			__builtin_trap();
		if (owned)
			r->present = 0;
		return;
	}
	fraction = 1 + take8(in) % 16;
	if (kind == 0)
		rc = cache_claim(c, &keys[k], w, b >> 7);
	else if (kind == 1)
		rc = cache_claim_miss(c, &keys[k], w, now);
	else
		rc = cache_claim_refresh(c, &keys[k], w, now, fraction);
	check_stats(c);
	/* The same instant, so the same answer as the claim's check. */
	hit = cache_get(c, &keys[k], now, out, sizeof(out), &got, NULL) == 0;
	if (hit && !model_fresh(k, now, 0))
		__builtin_trap();
	if (kind == 1 && hit)
		expect = CACHE_CLAIM_FRESH;
	else if (kind == 2 && hit && model_fresh(k, now, fraction))
		expect = CACHE_CLAIM_BUSY;
	else
		expect = claim_expect(r, w, kind == 0 ? b >> 7 : kind == 1, rc,
		    before, inflight(c));
	if (expect != CACHE_CLAIM_OWNER && expect != CACHE_CLAIM_WAIT &&
	    inflight(c) != before)
		__builtin_trap();
	if (rc != expect)
		__builtin_trap();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int init;
	struct input in = { data, size };
	struct cache *c;
	struct cache_stats st;
	uint64_t now = 1000000;
	size_t max, k;
	int ops;
	uint8_t op;

	if (!init) {
		keys_init();
		init = 1;
	}
	if (size < 2)
		return 0;
	max = 256 + (size_t)take8(&in) * 16;
	stale_max_s = take8(&in);
	memset(model, 0, sizeof(model));
	memset(claims, 0, sizeof(claims));
	c = cache_new(max, stale_max_s);
	if (c == NULL)
		abort();
	for (ops = 0; ops < MAX_OPS && in.n > 0; ops++) {
		op = take8(&in);
		switch (op % 11) {
		case 0:
		case 1:
		case 2:
			op_put(c, &in, now);
			break;
		case 3:
			op_get(c, &in, now, 0);
			break;
		case 4:
			op_get(c, &in, now, 1);
			break;
		case 5:
			/* Forward by up to 65 s in 1 ms steps, or hours. */
			now += (op & 0x80) ? (uint64_t)take16(&in) * 1000 :
			    take16(&in);
			break;
		case 6:
			op_flush_name(c, &in);
			break;
		case 7:
			if (op & 0x80) {
				(void)cache_flush(c);
				for (k = 0; k < N_KEYS; k++)
					model[k].stored = 0;
			} else {
				k = take8(&in) % N_KEYS;
				cache_refresh_failed(c, &keys[k], now + 1000);
				if (model[k].stored)
					model[k].retry_at = now + 1000;
			}
			break;
		case 8:
			if (op & 0x80)
				op_claim(c, &in, now);
			else
				op_dump(c, now);
			break;
		case 9:
			max = (size_t)take8(&in) * 16;
			cache_resize(c, max);
			cache_get_stats(c, &st);
			if (st.max_bytes != max)
				__builtin_trap();
			break;
		case 10:
			mem_fail_after(take8(&in) % 4);
			break;
		}
		check_stats(c);
	}
	mem_fail_after(-1);
	cache_free(c);
	return 0;
}
