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
 *   - the stored answer holds the TTLs as received: aging is applied to
 *     the caller's copy only, so reading twice never ages twice.
 * Expired entries are removed when a lookup sees them; until then they
 * only occupy space and are the first to go when they drift to the tail.
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
	uint64_t expiry_ms;
	size_t len;                    /* answer bytes */
	uint16_t key_len;
	uint16_t n_ttl;
	uint8_t hash_oom;              /* set by uthash when the add failed */
	uint16_t ttl_off[];            /* then key bytes, then answer bytes */
};

struct cache {
	struct cache_entry *table;     /* uthash head */
	struct cache_entry *lru;       /* utlist head: most recently used */
	size_t entries;
	size_t bytes;
	size_t max_bytes;
	uint64_t evictions;
	uint64_t expired;
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

struct cache *
cache_new(size_t max_bytes)
{
	struct cache *c;

	c = mem_calloc(1, sizeof(*c));
	if (c == NULL)
		return NULL;
	c->max_bytes = max_bytes;
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
	e->len = len;
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
    uint8_t *out, size_t cap, size_t *out_len)
{
	struct cache_entry *e;
	uint64_t age;
	int rc = 0;

	if (key->len == 0 || key->len > CACHE_KEY_MAX) {
		rc = -ENOENT;
		goto out;
	}
	HASH_FIND(hh, c->table, key->bytes, key->len, e);
	if (e == NULL) {
		rc = -ENOENT;
		goto out;
	}
	if (now_ms >= e->expiry_ms) {
		entry_remove(c, e);
		c->expired++;
		rc = -ENOENT;
		goto out;
	}
	if (cap < e->len) {
		rc = -ENOSPC;
		goto out;
	}

	memcpy(out, entry_answer(e), e->len);
	/* A clock that went backwards ages nothing rather than wrapping. Age
	 * is below the TTL (the entry has not expired), so it fits 32 bits. */
	age = now_ms > e->inserted_ms ? (now_ms - e->inserted_ms) / 1000 : 0;
	dnsmsg_age_ttls(out, e->len, e->ttl_off, e->n_ttl, (uint32_t)age);
	*out_len = e->len;

	if (c->lru != e) {
		DL_DELETE(c->lru, e);
		DL_PREPEND(c->lru, e);
	}
out:
	return rc;
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
