/* cache.h: the answer cache, keyed by question and flags, bounded in bytes.
 *
 * The cache copies in and copies out: nobody holds a pointer into it across
 * a call. Entries expire by TTL (an expired entry is never returned: it is
 * removed on sight) and the least recently used go first when the byte
 * bound would be exceeded. Time is passed in as milliseconds on the loop's
 * monotonic clock; the cache never reads a clock.
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
	uint64_t expired;    /* removed because their TTL ran out */
};

struct cache;

/* A cache that holds at most max_bytes (answers, keys and per-entry
 * overhead together). Returns NULL when out of memory. */
struct cache *cache_new(size_t max_bytes);

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

/* Look key up at now_ms. On a hit copy the answer into out with every TTL
 * lowered by the whole seconds it has spent in the cache, mark the entry
 * most recently used and return 0 with *out_len set. Returns -ENOENT on a
 * miss or an expired entry (which is removed), -ENOSPC when cap is too
 * small. The caller personalizes the copy (ID, spelling). */
int cache_get(struct cache *c, const struct cache_key *key, uint64_t now_ms,
    uint8_t *out, size_t cap, size_t *out_len);

void cache_get_stats(const struct cache *c, struct cache_stats *st);

#endif
