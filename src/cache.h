/* cache.h: the answer cache, keyed by question and flags, bounded in bytes.
 *
 * The cache copies in and copies out: nobody holds a pointer into it across
 * a call. An entry is fresh for its TTL (cache_get), then stale for the
 * stale window given to cache_new (cache_get_stale, RFC 8767), then gone:
 * removed the first time a lookup sees it. The least recently used go
 * first when the byte bound would be exceeded. Time is passed in as
 * milliseconds on the loop's monotonic clock; the cache never reads a
 * clock.
 *
 * The interface is small on purpose: when workers arrive it will be sharded
 * by key hash with a lock per shard behind these same calls.
 */
#ifndef DOTPROXY_CACHE_H
#define DOTPROXY_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "dnsmsg.h"

/* lowercased wire name + qtype + qclass + flag byte (DO, CD) */
#define CACHE_KEY_MAX (DNS_MAX_NAME_WIRE + 5)

struct cache_key {
	uint8_t bytes[CACHE_KEY_MAX];
	size_t len;
};

struct cache_stats {
	size_t entries;
	size_t bytes;        /* accounted bytes, entries' overhead included */
	size_t max_bytes;
	uint64_t evictions;  /* removed to make room (LRU) */
	uint64_t expired;    /* removed because their TTL (and stale window) ran out */
};

/* What a lookup tells about the entry besides its bytes. */
struct cache_meta {
	uint32_t ttl;           /* lifetime it was stored with, seconds */
	uint32_t age;           /* whole seconds since it was stored */
	int stale;              /* past its lifetime (cache_get_stale only) */
	uint64_t refresh_after_ms; /* set by cache_refresh_failed; 0 = any time */
	int rcode;              /* of the stored answer */
};

struct cache;

/* A cache that holds at most max_bytes (answers, keys and per-entry
 * overhead together). Entries are kept stale_max_s seconds past their
 * lifetime for cache_get_stale (RFC 8767); 0 removes them at expiry.
 * Returns NULL when out of memory. */
struct cache *cache_new(size_t max_bytes, uint32_t stale_max_s);

/* Free the cache and every entry. NULL is allowed. */
void cache_free(struct cache *c);

/* Build the key of a parsed query (which must have a question). */
void cache_key_make(struct cache_key *key, const struct dnsmsg_query *q);

/* Store a copy of an answer under key for info->ttl seconds from now_ms,
 * replacing any older entry. info comes from dnsmsg_parse_answer on these
 * bytes. Does nothing and returns 0 when !info->cacheable or ttl is 0.
 * Returns 0, or -ENOMEM (the cache is unchanged), or -E2BIG when the one
 * answer is larger than the whole bound. */
int cache_put(struct cache *c, const struct cache_key *key,
    const uint8_t *answer, size_t len, const struct dnsmsg_answer_info *info,
    uint64_t now_ms);

/* Look key up at now_ms. On a fresh hit copy the answer into out with
 * every TTL lowered by the whole seconds it has spent in the cache, mark
 * the entry most recently used, fill *meta if not NULL and return 0 with
 * *out_len set. Returns -ENOENT on a miss or an expired entry (kept for
 * cache_get_stale while within the stale window, else removed), -ENOSPC
 * when cap is too small. The caller personalizes the copy (ID, spelling). */
int cache_get(struct cache *c, const struct cache_key *key, uint64_t now_ms,
    uint8_t *out, size_t cap, size_t *out_len, struct cache_meta *meta);

/* Like cache_get, but only for an entry past its lifetime and at most
 * stale_max_s past it: the copy has every TTL set to stale_ttl, and
 * meta->stale is 1. Returns 0, -ENOENT (no such entry, or fresh, or too
 * old: then removed) or -ENOSPC. */
int cache_get_stale(struct cache *c, const struct cache_key *key,
    uint64_t now_ms, uint32_t stale_ttl, uint8_t *out, size_t cap,
    size_t *out_len, struct cache_meta *meta);

/* A refresh of key failed: no new attempt before retry_at_ms (reported
 * as meta->refresh_after_ms). No effect when key is not cached. */
void cache_refresh_failed(struct cache *c, const struct cache_key *key,
    uint64_t retry_at_ms);

void cache_get_stats(const struct cache *c, struct cache_stats *st);

#endif
