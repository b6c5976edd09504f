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
 * Besides the query path (cache_put, cache_get, cache_get_stale) there are
 * control operations for the control socket and a config reload: flush
 * everything or one name (and, if asked, the names below it), dump what is
 * cached, and change the byte bound without emptying the cache. They walk
 * every entry and are meant for an operator's request, not per query.
 *
 * The interface is small on purpose: when workers arrive it will be sharded
 * by key hash with a lock per shard behind these same calls (the control
 * operations visiting every shard in turn).
 */
#ifndef DOTPROXY_CACHE_H
#define DOTPROXY_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "dnsmsg.h"

/* lowercased wire name + qtype + qclass + flag byte (DO, CD, and AD
 * when DO is clear: RFC 6840 5.7) */
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
	uint64_t flushes;    /* flush operations carried out (cache_flush, and
	                      * cache_flush_name with a well-formed name), each
	                      * counted once however many entries it removed;
	                      * flushed entries are neither evictions nor expired */
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

/* Fill *st with the counters and the current size. */
void cache_get_stats(const struct cache *c, struct cache_stats *st);

/* Remove every entry. The byte bound and the counters other than entries
 * and bytes stay; flushes counts one. Returns how many entries were
 * removed. Never fails. */
size_t cache_flush(struct cache *c);

/* Remove every entry whose name is name_wire (uncompressed wire form,
 * name_len bytes with the root label), whatever its type, class and flags,
 * comparing ASCII letters case-insensitively. With subtree != 0 the names
 * below it go too, matched label by label ("example.com" takes
 * "www.example.com" but not "badexample.com"); the root name with subtree
 * removes everything. Returns how many entries were removed; a name that is
 * not well-formed wire (a label over 63, longer than 255, not ending at the
 * root label exactly at name_len) removes nothing, returns 0 and is not
 * counted in flushes. The caller keeps name_wire. */
size_t cache_flush_name(struct cache *c, const uint8_t *name_wire,
    size_t name_len, int subtree);

/* Turn a name in presentation form ("example.com", "example.com.", "." for
 * the root; \DDD and \X escapes allowed, "\." being a dot inside a label)
 * into lowercased (A-Z) wire form, the form cache keys hold, in wire (cap
 * bytes; DNS_MAX_NAME_WIRE always suffices). Returns 0 and sets *len (the
 * root label included), -EINVAL for a text that is not a name (empty, an
 * empty label, a label over 63 bytes, over 255 bytes in wire form, a bad
 * escape), or -ENOSPC when it does not fit in cap. On error nothing is
 * written. */
int cache_name_from_text(const char *text, uint8_t *wire, size_t cap,
    size_t *len);

/* One entry as cache_dump reports it: a copy, valid during the call. */
struct cache_entry_info {
	char name[DNS_MAX_NAME_TEXT + 1]; /* presentation form, trailing dot,
	                                    * \DDD and "\." escapes */
	uint16_t qtype;
	uint16_t qclass;
	int do_bit;            /* the key's flag byte: the query's DO */
	int cd_bit;            /* and its CD */
	int ad_bit;            /* and its AD, kept only without DO */
	uint32_t ttl_left;     /* seconds a hit would still give; 0 when stale */
	uint32_t stale_for;    /* whole seconds past expiry; 0 when fresh */
	int stale;             /* past its lifetime, within the stale window */
	size_t bytes;          /* accounted size, as counted in stats.bytes */
	int rcode;             /* of the stored answer */
};

/* Call fn(arg, info) for each entry that a lookup at now_ms could still
 * serve (fresh, or stale within the window), most recently used first.
 * Stops at the first non-zero value fn returns and returns it; returns 0
 * when every entry was visited. The dump changes nothing: not the LRU
 * order, not the counters, and dead entries (past the stale window) are
 * skipped but left for a lookup or eviction to remove. fn must not call
 * into this cache. */
int cache_dump(struct cache *c, uint64_t now_ms,
    int (*fn)(void *arg, const struct cache_entry_info *e), void *arg);

/* Make max_bytes the byte bound. When it is smaller than what is held, the
 * least recently used entries are removed until the rest fits, counted as
 * evictions (max_bytes 0 empties the cache); a larger bound keeps
 * everything. Entries are never cut, and later puts obey the new bound.
 * Never fails. */
void cache_resize(struct cache *c, size_t max_bytes);

#endif
