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
 * One cache is shared by every worker thread: every function here may be
 * called from any thread at any time. The cache is split into shards by
 * the key's hash, each with its own lock, table, LRU list and share of the
 * byte bound, so that workers asking for different keys rarely wait for
 * each other. A lock is held only to find an entry and copy bytes in or
 * out. What sharding changes for a caller: "least recently used" is
 * within a shard (an entry is evicted to make room in its own shard), and
 * the control operations visit the shards one after another, so they are
 * not one atomic step against concurrent puts (an entry put into a shard
 * already flushed survives the flush; stats are summed shard by shard).
 * Each worker passes its own loop's time: the loops read one monotonic
 * clock at different moments, so an entry another worker has just put may
 * be a few milliseconds in the caller's future; it counts as age 0.
 *
 * Besides answers, each shard holds the claim records of cross-worker
 * coalescing: which worker is fetching a key from upstream right now, and
 * which others wait for that fetch (cache_claim, cache_release).
 */
#ifndef DOTPROXY_CACHE_H
#define DOTPROXY_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "dnsmsg.h"

/* lowercased wire name + qtype + qclass + flag byte (DO, CD, and AD
 * when DO is clear: RFC 6840 5.7) */
#define CACHE_KEY_MAX (DNS_MAX_NAME_WIRE + 5)

/* A key is built by cache_key_make, which also computes its hash. Code
 * that writes bytes or len itself must call cache_key_hash afterwards: the
 * cache trusts hash to pick the shard and the table bucket and never
 * recomputes it. A key may be copied as a whole (struct assignment). */
struct cache_key {
	uint8_t bytes[CACHE_KEY_MAX];
	size_t len;
	uint32_t hash;         /* of bytes[0, len), by cache_key_hash */
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
	size_t inflight;     /* claim records now (cache_claim), not in bytes */
	unsigned shards;     /* how many shards the cache was made with */
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
 * The cache has n_shards shards: rounded up to a power of two and to the
 * range 1 to CACHE_MAX_SHARDS, then halved while a shard's share of
 * max_bytes would be under CACHE_MIN_SHARD_BYTES (but never below one
 * shard), so that a small cache stays one plain LRU. Each shard holds at
 * most max_bytes / n (the remainder spread over the first shards: the
 * shares sum to max_bytes). Returns NULL when out of memory (or when a
 * lock cannot be made). Free with cache_free. */
#define CACHE_MAX_SHARDS 256
#define CACHE_MIN_SHARD_BYTES (256 * 1024)
struct cache *cache_new_shards(size_t max_bytes, uint32_t stale_max_s,
    unsigned n_shards);

/* The longest lifetime an entry keeps (12 days; conf's cache-max-ttl is
 * at most 7) and the longest stale window (a larger stale_max_s is
 * shortened to it): an entry's insert time is 32 bits wide. */
#define CACHE_TTL_MAX ((1u << 20) - 1)
#define CACHE_STALE_MAX_S (7u * 86400)

/* cache_new_shards with one shard. */
struct cache *cache_new(size_t max_bytes, uint32_t stale_max_s);

/* Free the cache, every entry and every claim record. NULL is allowed.
 * No other thread may be using the cache. */
void cache_free(struct cache *c);

/* Build the key of a parsed query (which must have a question), hash
 * included. */
void cache_key_make(struct cache_key *key, const struct dnsmsg_query *q);

/* (Re)compute key->hash from key->bytes and key->len, for a key whose
 * bytes were written by hand. The hash is seeded once per process with
 * random bytes (hash flooding: the names are chosen by clients), so it
 * differs from one run to the next: never store it. */
void cache_key_hash(struct cache_key *key);

/* Store a copy of an answer under key for info->ttl seconds from now_ms
 * (at most CACHE_TTL_MAX: a longer lifetime is shortened to it), replacing
 * any older entry. info comes from dnsmsg_parse_answer on these bytes.
 * Does nothing and returns 0 when !info->cacheable or ttl is 0.
 * Returns 0, or -ENOMEM (the cache is unchanged), or -E2BIG when the one
 * answer is larger than its shard's share of the bound (or than a DNS
 * message can be), or -EINVAL for a key of length 0 or over
 * CACHE_KEY_MAX. */
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
 * and bytes stay; flushes counts one. Claim records stay: they describe
 * fetches in flight, not cached data. Returns how many entries were
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
 * serve (fresh, or stale within the window): shard after shard, and
 * within a shard most recently used first (with one shard, that is most
 * recently used first overall). Stops at the first non-zero value fn
 * returns and returns it; returns 0 when every entry was visited. The dump
 * changes nothing: not the LRU order, not the counters, and dead entries
 * (past the stale window) are skipped but left for a lookup or eviction to
 * remove. fn is called with a shard's lock held: it must not call into
 * this cache (that would deadlock), and it holds up the workers whose keys
 * fall in that shard while it runs, so it should only copy or format. */
int cache_dump(struct cache *c, uint64_t now_ms,
    int (*fn)(void *arg, const struct cache_entry_info *e), void *arg);

/* Make max_bytes the byte bound, shared out over the shards as
 * cache_new_shards does (their number does not change). When a shard holds
 * more than its new share, its least recently used entries are removed
 * until the rest fits, counted as evictions (max_bytes 0 empties the
 * cache); a larger bound keeps everything. Entries are never cut, and
 * later puts obey the new bound. Never fails. */
void cache_resize(struct cache *c, size_t max_bytes);

/* Cross-worker coalescing: "who is fetching this key right now". When a
 * worker misses and would ask upstream, it claims the key first; if
 * another worker is already fetching it, the first can wait for that
 * fetch (its bit is recorded) instead of sending the same question again.
 * The owner calls cache_release when its fetch ends, whatever the
 * outcome, and wakes the workers in the mask returned (how it wakes them
 * is the caller's business; the cache only keeps the record). Records
 * sit in the key's shard under the same lock as its entries, are small,
 * are not counted in the byte bound and survive cache_flush. A worker is
 * a number from 0 to CACHE_MAX_WORKERS - 1. */
#define CACHE_MAX_WORKERS 64

enum cache_claim_result {
	/* Nobody was fetching key: the caller now is, and must call
	 * cache_release when its fetch ends (whatever the outcome). */
	CACHE_CLAIM_OWNER = 0,
	/* Another worker is fetching it; the caller's bit is recorded and
	 * will be in the mask the owner's cache_release returns. */
	CACHE_CLAIM_WAIT = 1,
	/* Another worker is fetching it and wait was 0: nothing recorded. */
	CACHE_CLAIM_BUSY = 2,
	/* cache_claim_miss only: key's answer is in the cache, fresh (another
	 * worker stored it after the caller's lookup): nothing recorded, the
	 * caller answers from the cache instead of fetching. */
	CACHE_CLAIM_FRESH = 3,
};

/* Claim key for worker. Returns a cache_claim_result: OWNER when no record
 * existed (one is made) or when worker already owns the record (claiming
 * again changes nothing); WAIT or BUSY when another worker owns it, as wait
 * asks. When no memory can be had for a new record the result is OWNER
 * without a record: the caller fetches alone, and its cache_release
 * returns 0. Returns -EINVAL for a worker out of range or a key of length
 * 0 or over CACHE_KEY_MAX. */
int cache_claim(struct cache *c, const struct cache_key *key, unsigned worker,
    int wait);

/* Claim key for a client's miss at now_ms: cache_claim with wait 1,
 * except that it returns CACHE_CLAIM_FRESH, claiming nothing, when key has
 * an entry that cache_get at now_ms would serve. Between a worker's lookup
 * and its claim, another may have fetched the key, stored the answer and
 * released its record; without this check the late worker would find no
 * record and fetch the same answer again. Under the shard's lock the two
 * checks are one. */
int cache_claim_miss(struct cache *c, const struct cache_key *key,
    unsigned worker, uint64_t now_ms);

/* Claim key for a refresh (prefetch) of an entry the caller saw in the
 * last 1/fraction of its lifetime: cache_claim with wait 0, except that it
 * also returns BUSY, claiming nothing, when the entry is fresh at now_ms
 * with more than 1/fraction of its lifetime left. That is, another worker
 * refreshed it between the caller's lookup and this claim; under the
 * shard's lock the two checks are one. */
int cache_claim_refresh(struct cache *c, const struct cache_key *key,
    unsigned worker, uint64_t now_ms, unsigned fraction);

/* End worker's claim on key: when worker owns the record, remove it and
 * return the mask of the workers that wait (bit w for worker w; never the
 * owner's own bit; 0 when nobody waits). Returns 0 and changes nothing
 * when there is no record or another worker owns it. */
uint64_t cache_release(struct cache *c, const struct cache_key *key,
    unsigned worker);

#endif
