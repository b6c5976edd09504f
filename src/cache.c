/* cache.c: the answer cache: key, insert, lookup with TTL aging, LRU eviction.
 *
 * Each entry is one allocation: the struct, then the TTL offsets (uint16),
 * then the key bytes, then the answer bytes. Entries sit in a uthash table
 * (keyed by the key bytes; uthash is used only in this file) and on a
 * doubly-linked LRU list whose head is the most recently used and whose
 * tail (head->prev, utlist's convention) goes first.
 *
 * Invariants, true between calls:
 *   - every entry is in both the table and the list, and nothing else is;
 *   - bytes is the sum of entry_cost() over the entries, and bytes <=
 *     max_bytes (cache_put evicts from the tail until the new entry fits,
 *     and refuses with -E2BIG an entry that could never fit);
 *   - the stored answer holds the TTLs as received: aging (or the stale
 *     TTL) is applied to the caller's copy only, so reading twice never
 *     ages twice.
 * An entry lives in three phases: fresh until its TTL runs out (served by
 * cache_get), then stale for stale_max_s seconds (kept, served only by
 * cache_get_stale, RFC 8767), then dead: removed when a lookup sees it.
 * Until then a dead entry only occupies space. Stale and dead entries stay
 * on the LRU list like any other and are evicted by the same rule: a stale
 * answer that is being served keeps its place by being used.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "cache.h"
#include "dnsmsg.h"
#include "mem.h"

/* uthash allocates its table and buckets through our wrapper too, and must
 * report failure instead of exiting: with HASH_NONFATAL_OOM an add that
 * cannot get memory leaves the table as it was and calls this hook. */
#define uthash_malloc(sz) mem_alloc(sz)
#define uthash_free(ptr, sz) mem_free(ptr)
#define HASH_NONFATAL_OOM 1
#define uthash_nonfatal_oom(elt) ((elt)->hash_oom = 1)
#include <uthash.h>
#include <utlist.h>

struct cache_entry {
	UT_hash_handle hh;
	struct cache_entry *prev;      /* LRU list, toward the head (MRU) */
	struct cache_entry *next;      /* LRU list, toward the tail (LRU) */
	uint64_t inserted_ms;
	uint64_t expiry_ms;            /* end of the fresh phase */
	uint64_t refresh_after_ms;     /* cache_refresh_failed; 0 = none */
	uint32_t ttl;                  /* lifetime stored with, seconds */
	size_t len;                    /* answer bytes */
	uint16_t key_len;
	uint16_t n_ttl;
	uint8_t hash_oom;              /* set by uthash when the add failed */
	uint8_t rcode;                 /* header rcode of the answer */
	uint16_t ttl_off[];            /* then key bytes, then answer bytes */
};

struct cache {
	struct cache_entry *table;     /* uthash head */
	struct cache_entry *lru;       /* utlist head: most recently used */
	size_t entries;
	size_t bytes;
	size_t max_bytes;
	uint64_t stale_max_ms;         /* how long past expiry entries stay */
	uint64_t evictions;
	uint64_t expired;
};

/* Where an entry found by entry_lookup stands at now. */
enum entry_phase {
	PHASE_NONE,     /* no such entry, or it was dead and has been removed */
	PHASE_FRESH,
	PHASE_STALE,
};

/* What one entry costs beyond its own allocation: the table's share. uthash
 * keeps chains around 10 long but doubles the bucket array as it grows, so
 * one bucket per entry is a conservative round figure, plus an allocator
 * header. It is an estimate; what matters is that it is the same for every
 * entry so that the bound is predictable. */
#define CACHE_HASH_OVERHEAD (sizeof(UT_hash_bucket) + 2 * sizeof(void *))

static uint8_t *
entry_key(struct cache_entry *e)
{
	return (uint8_t *)(e->ttl_off + e->n_ttl);
}

static uint8_t *
entry_answer(struct cache_entry *e)
{
	return entry_key(e) + e->key_len;
}

/* The accounted size of an entry; the caller has checked that len is at
 * most max_bytes, so the sum cannot overflow. */
static size_t
entry_cost(size_t key_len, size_t len, size_t n_ttl)
{
	return sizeof(struct cache_entry) + n_ttl * sizeof(uint16_t) +
	    key_len + len + CACHE_HASH_OVERHEAD;
}

/* Unlink e from the table and the list, uncount and free it. */
static void
entry_remove(struct cache *c, struct cache_entry *e)
{
	HASH_DELETE(hh, c->table, e);
	DL_DELETE(c->lru, e);
	c->entries--;
	c->bytes -= entry_cost(e->key_len, e->len, e->n_ttl);
	mem_free(e);
}

/* Find key at now_ms. A dead entry (past its stale window) is removed
 * here and counted as expired, so that both lookups agree on when an entry
 * ends. Sets *ep to the entry unless the phase is PHASE_NONE. */
static enum entry_phase
entry_lookup(struct cache *c, const struct cache_key *key, uint64_t now_ms,
    struct cache_entry **ep)
{
	struct cache_entry *e;
	enum entry_phase ph = PHASE_NONE;

	if (key->len == 0 || key->len > CACHE_KEY_MAX)
		goto out;
	HASH_FIND(hh, c->table, key->bytes, key->len, e);
	if (e == NULL)
		goto out;
	if (now_ms < e->expiry_ms) {
		ph = PHASE_FRESH;
	} else if (now_ms - e->expiry_ms < c->stale_max_ms) {
		ph = PHASE_STALE;
	} else {
		entry_remove(c, e);
		c->expired++;
		goto out;
	}
	*ep = e;
out:
	return ph;
}

/* Whole seconds e has spent in the cache; a clock that went backwards ages
 * nothing rather than wrapping, and a stale entry's age (TTL plus window,
 * both 32-bit) is clamped rather than truncated. */
static uint32_t
entry_age(const struct cache_entry *e, uint64_t now_ms)
{
	uint64_t age;

	age = now_ms > e->inserted_ms ? (now_ms - e->inserted_ms) / 1000 : 0;
	return age > UINT32_MAX ? UINT32_MAX : (uint32_t)age;
}

static void
entry_meta(const struct cache_entry *e, uint64_t now_ms, int stale,
    struct cache_meta *meta)
{
	if (meta == NULL)
		return;
	meta->ttl = e->ttl;
	meta->age = entry_age(e, now_ms);
	meta->stale = stale;
	meta->refresh_after_ms = e->refresh_after_ms;
	meta->rcode = e->rcode;
}

/* Serving an entry makes it the most recently used. */
static void
entry_touch(struct cache *c, struct cache_entry *e)
{
	if (c->lru != e) {
		DL_DELETE(c->lru, e);
		DL_PREPEND(c->lru, e);
	}
}

struct cache *
cache_new(size_t max_bytes, uint32_t stale_max_s)
{
	struct cache *c;

	c = mem_calloc(1, sizeof(*c));
	if (c == NULL)
		return NULL;
	c->max_bytes = max_bytes;
	c->stale_max_ms = (uint64_t)stale_max_s * 1000;
	return c;
}

void
cache_free(struct cache *c)
{
	struct cache_entry *e, *tmp;

	if (c == NULL)
		return;
	/* The table's memory is reached through the head entry: release it
	 * while that entry is still alive, then the entries by the list. */
	HASH_CLEAR(hh, c->table);
	DL_FOREACH_SAFE(c->lru, e, tmp)
		mem_free(e);
	mem_free(c);
}

void
cache_key_make(struct cache_key *key, const struct dnsmsg_query *q)
{
	size_t n = q->q.wire_len;
	uint8_t *p = key->bytes;

	/* wire_len is at most DNS_MAX_NAME_WIRE by dnsmsg's contract; the
	 * clamp only keeps a broken caller from writing past the key. */
	if (n > DNS_MAX_NAME_WIRE)
		n = DNS_MAX_NAME_WIRE;
	memcpy(p, q->q.wire, n);
	p += n;
	*p++ = (uint8_t)(q->q.qtype >> 8);
	*p++ = (uint8_t)(q->q.qtype & 0xff);
	*p++ = (uint8_t)(q->q.qclass >> 8);
	*p++ = (uint8_t)(q->q.qclass & 0xff);
	*p++ = (uint8_t)((q->do_bit ? 0x01 : 0) | (q->cd_bit ? 0x02 : 0));
	key->len = n + 5;
}

int
cache_put(struct cache *c, const struct cache_key *key,
    const uint8_t *answer, size_t len, const struct dnsmsg_answer_info *info,
    uint64_t now_ms)
{
	struct cache_entry *e, *old, *victim;
	size_t n_ttl, cost;
	int rc = 0;

	if (!info->cacheable || info->ttl == 0)
		goto out;
	/* Keys come from cache_key_make; a longer one is a caller's bug and
	 * would be read past the end of key->bytes. */
	if (key->len == 0 || key->len > CACHE_KEY_MAX) {
		rc = -EINVAL;
		goto out;
	}
	n_ttl = info->n_ttl;
	if (n_ttl > DNSMSG_MAX_RRS)
		n_ttl = DNSMSG_MAX_RRS;
	if (len > c->max_bytes) {
		rc = -E2BIG;
		goto out;
	}
	cost = entry_cost(key->len, len, n_ttl);
	if (cost > c->max_bytes) {
		rc = -E2BIG;
		goto out;
	}

	e = mem_alloc(cost - CACHE_HASH_OVERHEAD);
	if (e == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	memset(e, 0, sizeof(*e));
	e->inserted_ms = now_ms;
	e->expiry_ms = now_ms + (uint64_t)info->ttl * 1000;
	e->ttl = info->ttl;
	e->len = len;
	/* From the bytes rather than info: the rcode is what the copy served
	 * will say (the low 4 bits of flags; OPT's extension is not kept). */
	e->rcode = len >= 4 ? (answer[3] & 0x0f) : 0;
	e->key_len = (uint16_t)key->len;
	e->n_ttl = (uint16_t)n_ttl;
	memcpy(e->ttl_off, info->ttl_off, n_ttl * sizeof(uint16_t));
	memcpy(entry_key(e), key->bytes, key->len);
	memcpy(entry_answer(e), answer, len);

	/* Find the entry this one replaces before adding, so that the lookup
	 * cannot return the new one. The add may need memory (the first table,
	 * a bucket expansion); only once it has succeeded is anything else
	 * touched, which keeps the cache unchanged on -ENOMEM. */
	HASH_FIND(hh, c->table, key->bytes, key->len, old);
	HASH_ADD_KEYPTR(hh, c->table, entry_key(e), e->key_len, e);
	if (e->hash_oom) {
		mem_free(e);
		rc = -ENOMEM;
		goto out;
	}
	DL_PREPEND(c->lru, e);
	c->entries++;
	c->bytes += cost;
	if (old != NULL)
		entry_remove(c, old);

	/* cost <= max_bytes, so the loop stops before it reaches e (the head)
	 * at the latest when e is the only entry left. */
	while (c->bytes > c->max_bytes) {
		victim = c->lru->prev;
		entry_remove(c, victim);
		c->evictions++;
	}
out:
	return rc;
}

int
cache_get(struct cache *c, const struct cache_key *key, uint64_t now_ms,
    uint8_t *out, size_t cap, size_t *out_len, struct cache_meta *meta)
{
	struct cache_entry *e = NULL;
	uint32_t age;
	int rc = 0;

	/* A stale entry is a miss here but stays for cache_get_stale, and
	 * keeps its place in the LRU list: it was not served. */
	if (entry_lookup(c, key, now_ms, &e) != PHASE_FRESH) {
		rc = -ENOENT;
		goto out;
	}
	if (cap < e->len) {
		rc = -ENOSPC;
		goto out;
	}

	memcpy(out, entry_answer(e), e->len);
	/* The entry is fresh, so its age is below its TTL. */
	age = entry_age(e, now_ms);
	dnsmsg_age_ttls(out, e->len, e->ttl_off, e->n_ttl, age);
	*out_len = e->len;
	entry_meta(e, now_ms, 0, meta);
	entry_touch(c, e);
out:
	return rc;
}

int
cache_get_stale(struct cache *c, const struct cache_key *key,
    uint64_t now_ms, uint32_t stale_ttl, uint8_t *out, size_t cap,
    size_t *out_len, struct cache_meta *meta)
{
	struct cache_entry *e = NULL;
	int rc = 0;

	/* A fresh entry is the caller's to read with cache_get: it must not
	 * go out with the stale TTL. */
	if (entry_lookup(c, key, now_ms, &e) != PHASE_STALE) {
		rc = -ENOENT;
		goto out;
	}
	if (cap < e->len) {
		rc = -ENOSPC;
		goto out;
	}

	memcpy(out, entry_answer(e), e->len);
	dnsmsg_set_ttls(out, e->len, e->ttl_off, e->n_ttl, stale_ttl);
	*out_len = e->len;
	entry_meta(e, now_ms, 1, meta);
	entry_touch(c, e);
out:
	return rc;
}

void
cache_refresh_failed(struct cache *c, const struct cache_key *key,
    uint64_t retry_at_ms)
{
	struct cache_entry *e;

	if (key->len == 0 || key->len > CACHE_KEY_MAX)
		return;
	HASH_FIND(hh, c->table, key->bytes, key->len, e);
	if (e != NULL)
		e->refresh_after_ms = retry_at_ms;
}

void
cache_get_stats(const struct cache *c, struct cache_stats *st)
{
	st->entries = c->entries;
	st->bytes = c->bytes;
	st->max_bytes = c->max_bytes;
	st->evictions = c->evictions;
	st->expired = c->expired;
}
