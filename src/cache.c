/* cache.c: the answer cache: key, insert, lookup with TTL aging, LRU
 * eviction, split into locked shards, and the claim records of
 * cross-worker coalescing.
 *
 * Shards. A cache is 2^k shards (k from 0 to 8). A key's shard is picked
 * by the top byte of its hash (bits 24-31, masked to the shard count);
 * the table inside the shard picks its bucket by the low bits (uthash
 * takes hash & (buckets - 1)), so the two choices stay independent until a
 * shard has 2^24 buckets. Each shard is a small cache of its own: a
 * table, an LRU list, counters, a share of the byte bound, the claim
 * records of its keys, and one lock that guards all of these. An
 * operation on one key takes its shard's lock once; the control
 * operations (flush, flush by name, dump, stats, resize) take each
 * shard's lock in turn, never two at a time. The only other lock,
 * resize_lock, is taken before a shard's and only by cache_resize, so
 * there is no lock order to get wrong. Shards are cache-line aligned, so
 * that two shards' locks and counters never share a line. The shard
 * count, the mask and stale_max_ms never change after cache_new_shards;
 * everything else in a shard is read and written under its lock only.
 *
 * The lock is a pthread mutex of glibc's adaptive kind, which spins a
 * little before it sleeps; make bench-cache (tests/bench/cachebench.c,
 * 90 % hits, 10 % puts, 2 CPUs shared with other work) chose it over the
 * three others it builds. A plain mutex (uv_mutex_t) sleeps and wakes
 * through the kernel whenever two threads meet on a shard: with 64
 * shards it did 12.2 M operations a second on 2 threads where the
 * adaptive one did 13.6 (14.5 on a quiet machine), and with one shard 5.3
 * against 6.9. A spinlock is as fast while every thread has a CPU, and
 * collapses when one does not: a preempted holder leaves the others
 * spinning out their time slices (1.0 M at 16 threads, and 4.7 at 2 when
 * other processes took the CPUs), which a daemon sharing its machine
 * cannot risk. A rwlock gains nothing, because cache_get writes (it moves
 * the entry to the MRU end) and so takes it for writing, and it costs
 * more than a mutex (11.4 at 2 threads, 8.3 at 16).
 *
 * Shards are not free: a lookup in a shard other than the last one used
 * misses the cache on that shard's lock, table header and buckets, which
 * one hot shard keeps close (on one thread, 64 shards ran 5-25 % slower
 * than one). Their gain is under contention: with one shard 2 threads did
 * less work than 1. A few shards per worker is the measure, not as many
 * as possible.
 *
 * The hash. cache_key_make computes it once per key (cache_key_hash), and
 * every table operation here is a HASH_*_BYHASHVALUE with that value:
 * uthash never hashes a key (HASH_FUNCTION is defined below to something
 * that does not compile, so a plain HASH_FIND cannot slip in), and its
 * bucket expansion reuses the stored hh.hashv. The function is the "mum"
 * step of wyhash (a 64 x 64 -> 128-bit multiply, the two halves xored),
 * 16 key bytes per step, keyed with 192 random bits drawn once per
 * process: clients choose the names, and a fixed function (uthash's
 * Jenkins hash is unkeyed) would let them aim every key at one bucket
 * chain of one shard. It is also faster than HASH_JEN: 6 ns against 21
 * for a 24-byte key (make bench-cache prints both).
 *
 * Entries. Each entry is one allocation: the struct, then the TTL offsets
 * (uint16), then the key bytes, then the answer bytes. When the answer's
 * question is byte for byte the key's name, type and class (it is when the
 * upstream echoes the question we sent, which dnsmsg lowercased), the
 * question is not stored a second time: the answer is kept without it and
 * rebuilt from the key on the way out (entry_copy_out), so the copy is
 * still byte for byte what was put. Entries sit in the shard's uthash
 * table (keyed by the key bytes; uthash is used only in this file), and
 * uthash's own list of its items (hh.prev, hh.next, kept in the order
 * they were added, head first) is the LRU list: the head, which is the
 * table pointer itself, is the least recently used and goes first; a
 * use moves an entry to the tail (entry_touch, which relinks that list as
 * HASH_DELETE and HASH_ADD do). That saves a second pair of list pointers
 * per entry. Times are kept as the insert time and the TTL (the expiry is
 * computed), sizes in 16 bits (a DNS message is at most 65535 bytes).
 *
 * Invariants of each shard, true whenever its lock is free:
 *   - every entry is in the shard's table, hence on its list, and in no
 *     other shard; its key's hash picks this shard;
 *   - bytes is the sum of entry_cost() over the entries, and bytes <=
 *     max_bytes (cache_put evicts the least recently used until the new
 *     entry fits, and refuses with -E2BIG an entry that could never fit
 *     the shard); the shards' max_bytes sum to the cache's bound;
 *   - the stored answer holds the TTLs as received: aging (or the stale
 *     TTL) is applied to the caller's copy only, so reading twice never
 *     ages twice;
 *   - every claim record is in the shard's claims table, its owner is
 *     below CACHE_MAX_WORKERS and its own bit is not among its waiters;
 *     inflight is the number of records.
 * An entry lives in three phases: fresh until its TTL runs out (served by
 * cache_get), then stale for stale_max_s seconds (kept, served only by
 * cache_get_stale, RFC 8767), then dead: removed when a lookup sees it.
 * Until then a dead entry only occupies space. Stale and dead entries stay
 * on the LRU list like any other and are evicted by the same rule: a stale
 * answer that is being served keeps its place by being used.
 *
 * The control operations walk each shard's list: linear in the number of
 * entries, which is fine for an operator's request and keeps the tables
 * keyed for the query path alone. A name is matched on the key's wire
 * bytes, which cache_key_make has lowercased; cache_name_from_text
 * lowercases an operator's text the same way. The dump only reads: what it
 * reports of an entry follows the same phases and the same aging as the
 * lookups. Resizing evicts as cache_put does, so bytes <= max_bytes holds
 * across it in every shard.
 *
 * Claim records ("worker w is fetching this key; these others wait") live
 * in a second uthash table per shard, keyed and hashed like the entries,
 * under the same lock, so a worker can look for an answer and claim the
 * fetch with the same shard. They are not part of the byte bound (a few
 * dozen bytes each, and one per upstream query in flight, which the
 * upstream pool bounds), a flush leaves them, and only their owner's
 * cache_release removes them.
 *
 * Memory, as make bench-rss measures it (glibc, x86-64) for a million
 * typical answers (51 bytes: one A record, compressed, no OPT; key 24
 * bytes): 66 bytes of struct (uthash's handle is 56 of them), 2 of TTL
 * offset, 24 of key, 28 of answer (its 23 bytes of question are the
 * key's) = 120 bytes asked of malloc, a 128-byte chunk with malloc's
 * 8-byte header; plus the bucket arrays, 16 bytes a bucket, about half a
 * bucket per entry (uthash doubles a table when one chain reaches 10):
 * 136.5 bytes of RSS per entry, under the target of 1.5 * wire + 64 =
 * 140.5. The 10 bytes beside the handle are why: 121 bytes would take a
 * 144-byte chunk (152.5 bytes per entry, as before this layout; 216.4 with
 * the first one's own LRU pointers, 64-bit sizes and times, and the
 * question stored twice). So the insert time is 32-bit milliseconds from
 * a per-shard epoch (shard_insert_time moves it, once in 24 days of
 * uptime), the lifetime 20 bits (12 days; conf allows 7), the rcode is
 * read from the stored header, and the rare "refresh failed, retry later"
 * time of a stale entry lives in a third table per shard (struct
 * backoff), not in every entry. Backoff records are, like claims, outside
 * the byte bound: at most one per entry, and only while an upstream
 * fails.
 */
/* PTHREAD_MUTEX_ADAPTIVE_NP is a GNU extension. */
#define _GNU_SOURCE

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <uv.h>

#include "cache.h"
#include "dnsmsg.h"
#include "mem.h"

/* uthash allocates its table and buckets through our wrapper too, and must
 * report failure instead of exiting: with HASH_NONFATAL_OOM an add that
 * cannot get memory leaves the table as it was and calls this hook. Every
 * kind of item (entries, claim and backoff records) has a hash_oom field. */
#define uthash_malloc(sz) mem_alloc(sz)
#define uthash_free(ptr, sz) mem_free(ptr)
#define HASH_NONFATAL_OOM 1
#define uthash_nonfatal_oom(elt) ((elt)->hash_oom = 1)
/* Every key carries its hash: a macro that would hash again is an error. */
#define HASH_FUNCTION(keyptr, keylen, hashv) CACHE_KEYS_CARRY_THEIR_HASH
#include <uthash.h>

#define CACHE_LINE 64

/* ---- the shard lock ---- */

/* By default a pthread mutex of glibc's adaptive kind, which spins a
 * little before it sleeps (see the top of the file for why); where that
 * kind does not exist, a plain one. The other kinds are for the
 * benchmark: CACHE_LOCK_UVMUTEX (uv_mutex_t), CACHE_LOCK_SPIN (pthread
 * spinlock), CACHE_LOCK_RWLOCK (uv_rwlock_t). The read side is for the
 * operations that change nothing (stats, dump); only the rwlock tells it
 * apart. */
#if defined(CACHE_LOCK_SPIN)

struct shard_lock {
	pthread_spinlock_t l;
};

static int
lock_init(struct shard_lock *k)
{
	return -pthread_spin_init(&k->l, PTHREAD_PROCESS_PRIVATE);
}

static void
lock_destroy(struct shard_lock *k)
{
	pthread_spin_destroy(&k->l);
}

static void
lock_take(struct shard_lock *k)
{
	pthread_spin_lock(&k->l);
}

static void
lock_drop(struct shard_lock *k)
{
	pthread_spin_unlock(&k->l);
}

#define lock_take_read lock_take
#define lock_drop_read lock_drop

#elif defined(CACHE_LOCK_RWLOCK)

struct shard_lock {
	uv_rwlock_t l;
};

static int
lock_init(struct shard_lock *k)
{
	return uv_rwlock_init(&k->l);
}

static void
lock_destroy(struct shard_lock *k)
{
	uv_rwlock_destroy(&k->l);
}

static void
lock_take(struct shard_lock *k)
{
	uv_rwlock_wrlock(&k->l);
}

static void
lock_drop(struct shard_lock *k)
{
	uv_rwlock_wrunlock(&k->l);
}

static void
lock_take_read(struct shard_lock *k)
{
	uv_rwlock_rdlock(&k->l);
}

static void
lock_drop_read(struct shard_lock *k)
{
	uv_rwlock_rdunlock(&k->l);
}

#elif defined(CACHE_LOCK_UVMUTEX)

struct shard_lock {
	uv_mutex_t l;
};

static int
lock_init(struct shard_lock *k)
{
	return uv_mutex_init(&k->l);
}

static void
lock_destroy(struct shard_lock *k)
{
	uv_mutex_destroy(&k->l);
}

static void
lock_take(struct shard_lock *k)
{
	uv_mutex_lock(&k->l);
}

static void
lock_drop(struct shard_lock *k)
{
	uv_mutex_unlock(&k->l);
}

#define lock_take_read lock_take
#define lock_drop_read lock_drop

#else

struct shard_lock {
	pthread_mutex_t l;
};

/* pthread_mutex_lock and _unlock fail only on a mutex that was never
 * initialized or is not ours: a broken invariant they would report, which
 * the plain kind and uv_mutex_t do not check either. */
static int
lock_init(struct shard_lock *k)
{
	pthread_mutexattr_t a;
	int rc;

	rc = pthread_mutexattr_init(&a);
	if (rc != 0)
		goto out;
#ifdef PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP
	rc = pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ADAPTIVE_NP);
#endif
	if (rc == 0)
		rc = pthread_mutex_init(&k->l, &a);
	pthread_mutexattr_destroy(&a);
out:
	return -rc;
}

static void
lock_destroy(struct shard_lock *k)
{
	pthread_mutex_destroy(&k->l);
}

static void
lock_take(struct shard_lock *k)
{
	(void)pthread_mutex_lock(&k->l);
}

static void
lock_drop(struct shard_lock *k)
{
	(void)pthread_mutex_unlock(&k->l);
}

#define lock_take_read lock_take
#define lock_drop_read lock_drop

#endif

/* ---- structures ---- */

struct cache_entry {
	UT_hash_handle hh;             /* hh.key, hh.keylen: the key bytes;
	                                * hh.hashv: their hash; hh.prev,
	                                * hh.next: the LRU list */
	uint32_t inserted;             /* ms after the shard's epoch_ms */
	uint32_t ttl : 20;             /* lifetime stored with, seconds, at
	                                * most CACHE_TTL_MAX */
	uint32_t n_ttl : 9;            /* at most DNSMSG_MAX_RRS */
	uint32_t elided : 1;           /* the question is the key's: not stored */
	uint32_t hash_oom : 1;         /* set by uthash when the add failed */
	uint32_t backoff : 1;          /* has a backoff record */
	uint16_t len;                  /* the answer's length as put */
	uint16_t ttl_off[];            /* then key bytes, then answer bytes */
};

/* The part of an entry before its variable bytes: what it costs besides
 * them (the padding sizeof would add at the end is not allocated). 66
 * bytes on a 64-bit machine, so a typical A answer's entry is 120 bytes:
 * malloc's 128-byte chunk, where 121 would take 144. */
#define ENTRY_HDR offsetof(struct cache_entry, ttl_off)
_Static_assert(ENTRY_HDR <= sizeof(UT_hash_handle) + 10,
    "an entry's fixed part grew: see Memory at the top of the file");
_Static_assert(DNSMSG_MAX_RRS < 512, "n_ttl is 9 bits");

/* An entry's lifetime is at most CACHE_TTL_MAX seconds and its stale
 * window at most CACHE_STALE_MAX_S (cache.h), so an entry dies before
 * CACHE_LIFE_MAX_MS: the rebase below relies on it. */
_Static_assert(CACHE_TTL_MAX < (1u << 20), "ttl is 20 bits");
#define CACHE_LIFE_MAX_MS (((uint64_t)CACHE_TTL_MAX + CACHE_STALE_MAX_S) * 1000)
/* How far a shard's epoch stays behind the clock: an entry inserted by a
 * worker whose loop clock lags the one that set the epoch still gets its
 * own time, unless it lags by more than this. */
#define EPOCH_SLACK_MS 60000
_Static_assert(CACHE_LIFE_MAX_MS + EPOCH_SLACK_MS < ((uint64_t)1 << 31),
    "an entry's life must fit half the 32-bit insert time");

/* "A refresh of this stale entry failed: do not try again before
 * retry_at_ms" (cache_refresh_failed). Rare (only while an upstream
 * fails, only for names served stale), so it lives beside the entries
 * rather than in each of them: 8 bytes in every entry would cost a
 * malloc size class. An entry with the backoff bit has exactly one. */
struct backoff {
	UT_hash_handle hh;             /* keyed and hashed like an entry */
	uint64_t retry_at_ms;
	uint8_t hash_oom;
	uint8_t key[];
};

/* "worker owns the fetch of this key; waiters wait for it". */
struct claim {
	UT_hash_handle hh;             /* keyed and hashed like an entry */
	uint64_t waiters;              /* bit w: worker w waits */
	uint8_t owner;
	uint8_t hash_oom;
	uint8_t key[];
};

struct shard {
	_Alignas(CACHE_LINE) struct shard_lock lock;
	struct cache_entry *table;     /* uthash head, and the LRU end of
	                                * its list */
	struct claim *claims;          /* uthash head */
	struct backoff *backoffs;      /* uthash head */
	uint64_t epoch_ms;             /* what entries' inserted counts from */
	size_t entries;
	size_t bytes;
	size_t max_bytes;              /* this shard's share of the bound */
	size_t inflight;               /* claim records */
	uint64_t evictions;
	uint64_t expired;
	uint64_t flushes;              /* counted in shard 0 only, once per
	                                * flush operation */
};

struct cache {
	struct shard *shards;          /* n_shards, cache-line aligned */
	void *shards_mem;              /* the allocation they are aligned in */
	unsigned n_shards;             /* a power of two */
	unsigned mask;                 /* n_shards - 1 */
	uint64_t stale_max_ms;         /* how long past expiry entries stay */
	uv_mutex_t resize_lock;        /* one cache_resize at a time */
};

/* Where an entry found by entry_lookup stands at now. */
enum entry_phase {
	PHASE_NONE,     /* no such entry, or it was dead and has been removed */
	PHASE_FRESH,
	PHASE_STALE,
};

/* What one entry costs beyond its own allocation: the table's share (half
 * to one 16-byte bucket, see above) and the allocator's header and
 * rounding. It is an estimate; what matters is that it is the same for
 * every entry so that the bound is predictable. */
#define CACHE_HASH_OVERHEAD (sizeof(UT_hash_bucket) + 2 * sizeof(void *))

/* ---- the key hash ---- */

static uv_once_t hash_once = UV_ONCE_INIT;
static uint64_t hash_secret[3];

static void
hash_seed(void)
{
	if (uv_random(NULL, NULL, hash_secret, sizeof(hash_secret), 0,
	    NULL) == 0)
		return;
	/* No random bytes to be had (a sandbox without getrandom and
	 * /dev/urandom): what an outsider cannot easily know beats a
	 * constant. */
	hash_secret[0] = uv_hrtime() ^ (uint64_t)(uintptr_t)&hash_secret;
	hash_secret[1] = hash_secret[0] * 0x9e3779b97f4a7c15ULL ^
	    (uint64_t)uv_os_getpid();
	hash_secret[2] = hash_secret[1] * 0xbf58476d1ce4e5b9ULL ^
	    (uint64_t)(uintptr_t)&hash_once;
}

/* The 128-bit product of a and b, its halves xored. */
static uint64_t
hash_mix(uint64_t a, uint64_t b)
{
#ifdef __SIZEOF_INT128__
	__uint128_t r = (__uint128_t)a * b;

	return (uint64_t)r ^ (uint64_t)(r >> 64);
#else
	uint64_t ha = a >> 32, la = (uint32_t)a, hb = b >> 32, lb = (uint32_t)b;
	uint64_t rh = ha * hb, rm0 = ha * lb, rm1 = hb * la, rl = la * lb;
	uint64_t t = rl + (rm0 << 32), lo, hi, carry;

	carry = t < rl;
	lo = t + (rm1 << 32);
	carry += lo < t;
	hi = rh + (rm0 >> 32) + (rm1 >> 32) + carry;
	return lo ^ hi;
#endif
}

static uint64_t
load64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static uint64_t
load32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

/* wyhash's shape: 16 bytes per multiply, the last 1 to 16 bytes read as
 * two (possibly overlapping) words, the length mixed in at both ends so
 * that the overlap cannot make two lengths collide. Both inputs of every
 * multiply carry a secret, so no chosen input can zero one of them. */
static uint32_t
hash_bytes(const uint8_t *p, size_t len)
{
	uint64_t h = hash_secret[0] ^ len, a, b;
	size_t n = len;

	while (n > 16) {
		h = hash_mix(load64(p) ^ hash_secret[1], load64(p + 8) ^ h);
		p += 16;
		n -= 16;
	}
	if (n >= 8) {
		a = load64(p);
		b = load64(p + n - 8);
	} else if (n >= 4) {
		a = load32(p);
		b = load32(p + n - 4);
	} else if (n > 0) {
		a = (uint64_t)p[0] << 16 | (uint64_t)p[n >> 1] << 8 | p[n - 1];
		b = 0;
	} else {
		a = b = 0;
	}
	h = hash_mix(a ^ hash_secret[1], b ^ h);
	h = hash_mix(h ^ hash_secret[2], (uint64_t)len ^ hash_secret[1]);
	return (uint32_t)(h ^ h >> 32);
}

void
cache_key_hash(struct cache_key *key)
{
	size_t n = key->len <= CACHE_KEY_MAX ? key->len : CACHE_KEY_MAX;

	uv_once(&hash_once, hash_seed);
	key->hash = hash_bytes(key->bytes, n);
}

/* A key the functions below can use: cache_key_make makes no other. */
static int
key_ok(const struct cache_key *key)
{
	return key->len > 0 && key->len <= CACHE_KEY_MAX;
}

static struct shard *
shard_of(const struct cache *c, uint32_t hash)
{
	return &c->shards[(hash >> 24) & c->mask];
}

/* ---- entries; every function here runs under the shard's lock ---- */

static uint8_t *
entry_key(const struct cache_entry *e)
{
	return (uint8_t *)(e->ttl_off + e->n_ttl);
}

/* The answer as stored: without its question when elided. */
static uint8_t *
entry_answer(const struct cache_entry *e, size_t key_len)
{
	return entry_key(e) + key_len;
}

/* The accounted size of an entry of key_len key bytes and stored answer
 * bytes; both are bounded (CACHE_KEY_MAX, DNS_MAX_MSG), so the sum cannot
 * overflow. */
static size_t
entry_cost(size_t key_len, size_t stored, size_t n_ttl)
{
	return ENTRY_HDR + n_ttl * sizeof(uint16_t) + key_len + stored +
	    CACHE_HASH_OVERHEAD;
}

static size_t
entry_stored(const struct cache_entry *e)
{
	return e->elided ? (size_t)e->len - (e->hh.keylen - 1) : e->len;
}

static uint64_t
entry_inserted(const struct shard *s, const struct cache_entry *e)
{
	return s->epoch_ms + e->inserted;
}

static uint64_t
entry_expiry(const struct shard *s, const struct cache_entry *e)
{
	return entry_inserted(s, e) + (uint64_t)e->ttl * 1000;
}

/* The rcode of the stored answer (the low 4 bits of its flags; the
 * header is stored whole, elided or not). */
static int
entry_rcode(const struct cache_entry *e)
{
	return e->len >= 4 ? entry_answer(e, e->hh.keylen)[3] & 0x0f : 0;
}

static struct backoff *
backoff_find(const struct shard *s, const struct cache_entry *e)
{
	struct backoff *b = NULL;

	if (e->backoff)
		HASH_FIND_BYHASHVALUE(hh, s->backoffs, entry_key(e),
		    e->hh.keylen, e->hh.hashv, b);
	return b;
}

/* Copy the answer as it was put into out (e->len bytes). */
static void
entry_copy_out(const struct cache_entry *e, uint8_t *out)
{
	const uint8_t *ans = entry_answer(e, e->hh.keylen);
	size_t q = e->hh.keylen - 1;    /* the question: name, type, class */

	if (!e->elided) {
		memcpy(out, ans, e->len);
		return;
	}
	memcpy(out, ans, DNS_HDR_LEN);
	memcpy(out + DNS_HDR_LEN, entry_key(e), q);
	memcpy(out + DNS_HDR_LEN + q, ans + DNS_HDR_LEN,
	    (size_t)e->len - DNS_HDR_LEN - q);
}

/* Unlink e from the table (and so the list), uncount and free it, and
 * its backoff record. */
static void
entry_remove(struct shard *s, struct cache_entry *e)
{
	struct backoff *b = backoff_find(s, e);

	if (b != NULL) {
		HASH_DELETE(hh, s->backoffs, b);
		mem_free(b);
	}
	HASH_DELETE(hh, s->table, e);
	s->entries--;
	s->bytes -= entry_cost(e->hh.keylen, entry_stored(e), e->n_ttl);
	mem_free(e);
}

/* Find key at now_ms. A dead entry (past its stale window) is removed
 * here and counted as expired, so that both lookups agree on when an entry
 * ends. Sets *ep to the entry unless the phase is PHASE_NONE. */
static enum entry_phase
entry_lookup(const struct cache *c, struct shard *s,
    const struct cache_key *key, uint64_t now_ms, struct cache_entry **ep)
{
	struct cache_entry *e;
	enum entry_phase ph = PHASE_NONE;
	uint64_t expiry;

	HASH_FIND_BYHASHVALUE(hh, s->table, key->bytes, key->len, key->hash,
	    e);
	if (e == NULL)
		goto out;
	expiry = entry_expiry(s, e);
	if (now_ms < expiry) {
		ph = PHASE_FRESH;
	} else if (now_ms - expiry < c->stale_max_ms) {
		ph = PHASE_STALE;
	} else {
		entry_remove(s, e);
		s->expired++;
		goto out;
	}
	*ep = e;
out:
	return ph;
}

/* Whole seconds e has spent in the cache; a clock that went backwards ages
 * nothing rather than wrapping (each worker's loop has its own clock, so
 * another worker's insert may be a little in this one's future), and a
 * stale entry's age (TTL plus window, both 32-bit) is clamped rather than
 * truncated. */
static uint32_t
entry_age(const struct shard *s, const struct cache_entry *e,
    uint64_t now_ms)
{
	uint64_t age, at = entry_inserted(s, e);

	age = now_ms > at ? (now_ms - at) / 1000 : 0;
	return age > UINT32_MAX ? UINT32_MAX : (uint32_t)age;
}

static void
entry_meta(const struct shard *s, const struct cache_entry *e,
    uint64_t now_ms, int stale, struct cache_meta *meta)
{
	const struct backoff *b;

	if (meta == NULL)
		return;
	b = backoff_find(s, e);
	meta->ttl = e->ttl;
	meta->age = entry_age(s, e, now_ms);
	meta->stale = stale;
	meta->refresh_after_ms = b != NULL ? b->retry_at_ms : 0;
	meta->rcode = entry_rcode(e);
}

/* Serving an entry makes it the most recently used: it moves to the tail
 * of uthash's list of items, relinked the way HASH_DELETE unlinks and
 * HASH_ADD appends (the head is the item without prev, and the table
 * pointer; tbl->tail is the handle of the last). */
static void
entry_touch(struct shard *s, struct cache_entry *e)
{
	UT_hash_table *tbl = e->hh.tbl;
	struct cache_entry *prev = e->hh.prev, *next = e->hh.next;

	if (next == NULL)
		return;    /* already the tail */
	if (prev != NULL)
		prev->hh.next = next;
	else
		s->table = next;
	next->hh.prev = prev;
	e->hh.prev = ELMT_FROM_HH(tbl, tbl->tail);
	e->hh.next = NULL;
	tbl->tail->next = e;
	tbl->tail = &e->hh;
}

/* Evict from the head until the bytes fit the bound. bytes > 0 means there
 * is an entry, so the head exists. */
static void
evict_to_bound(struct shard *s)
{
	while (s->bytes > s->max_bytes) {
		entry_remove(s, s->table);
		s->evictions++;
	}
}

/* Where an entry put at now_ms counts its insert time from. An empty
 * shard starts over; otherwise, when now_ms has run 2^32 ms (49 days)
 * past the epoch, the epoch moves to 2^31 ms before now_ms: every entry
 * inserted before that is dead (CACHE_LIFE_MAX_MS is shorter) and is
 * removed, the others are counted from the new epoch. A walk of the shard
 * once in 24 days, so that 4 bytes hold a millisecond clock. A clock
 * behind the epoch (another worker's) gives 0: the entry looks a little
 * younger than it is, by less than the lag. */
static uint32_t
shard_insert_time(struct shard *s, uint64_t now_ms)
{
	struct cache_entry *e, *tmp;
	uint64_t epoch, at;

	if (s->table == NULL) {
		s->epoch_ms = now_ms > EPOCH_SLACK_MS ? now_ms - EPOCH_SLACK_MS :
		    0;
	} else if (now_ms > s->epoch_ms &&
	    now_ms - s->epoch_ms > UINT32_MAX) {
		epoch = now_ms - ((uint64_t)1 << 31);
		HASH_ITER(hh, s->table, e, tmp) {
			at = entry_inserted(s, e);
			if (at < epoch) {
				entry_remove(s, e);
				s->expired++;
			} else {
				e->inserted = (uint32_t)(at - epoch);
			}
		}
		s->epoch_ms = epoch;
	}
	return now_ms > s->epoch_ms ? (uint32_t)(now_ms - s->epoch_ms) : 0;
}

/* ---- the cache ---- */

/* Shard i's share of max_bytes: the remainder goes one byte each to the
 * first shards, so that the shares sum to max_bytes. */
static size_t
shard_share(size_t max_bytes, unsigned n, unsigned i)
{
	return max_bytes / n + (i < max_bytes % n ? 1 : 0);
}

static unsigned
shard_count(size_t max_bytes, unsigned want)
{
	unsigned n = 1;

	if (want > CACHE_MAX_SHARDS)
		want = CACHE_MAX_SHARDS;
	while (n < want)
		n <<= 1;
	while (n > 1 && max_bytes / n < CACHE_MIN_SHARD_BYTES)
		n >>= 1;
	return n;
}

struct cache *
cache_new_shards(size_t max_bytes, uint32_t stale_max_s, unsigned n_shards)
{
	struct cache *c;
	unsigned n = shard_count(max_bytes, n_shards), i = 0;

	c = mem_calloc(1, sizeof(*c));
	if (c == NULL)
		goto fail;
	c->shards_mem = mem_calloc(1, n * sizeof(struct shard) + CACHE_LINE - 1);
	if (c->shards_mem == NULL)
		goto fail;
	c->shards = (struct shard *)(((uintptr_t)c->shards_mem + CACHE_LINE -
	    1) & ~(uintptr_t)(CACHE_LINE - 1));
	c->n_shards = n;
	c->mask = n - 1;
	/* conf allows 7 days; the insert time's width needs the bound. */
	if (stale_max_s > CACHE_STALE_MAX_S)
		stale_max_s = CACHE_STALE_MAX_S;
	c->stale_max_ms = (uint64_t)stale_max_s * 1000;
	if (uv_mutex_init(&c->resize_lock) != 0)
		goto fail;
	for (i = 0; i < n; i++) {
		if (lock_init(&c->shards[i].lock) != 0)
			goto fail_locks;
		c->shards[i].max_bytes = shard_share(max_bytes, n, i);
	}
	/* Seed the hash now rather than at the first key, off the query
	 * path. */
	uv_once(&hash_once, hash_seed);
	return c;

fail_locks:
	while (i > 0)
		lock_destroy(&c->shards[--i].lock);
	uv_mutex_destroy(&c->resize_lock);
fail:
	if (c != NULL)
		mem_free(c->shards_mem);
	mem_free(c);
	return NULL;
}

struct cache *
cache_new(size_t max_bytes, uint32_t stale_max_s)
{
	return cache_new_shards(max_bytes, stale_max_s, 1);
}

void
cache_free(struct cache *c)
{
	struct cache_entry *e, *next;
	struct claim *r, *rnext;
	struct backoff *b, *bnext;
	struct shard *s;
	unsigned i;

	if (c == NULL)
		return;
	for (i = 0; i < c->n_shards; i++) {
		s = &c->shards[i];
		/* HASH_CLEAR frees the table's memory, reached through the
		 * head, and leaves the items' links alone: take the head
		 * first, then free the items along their list. */
		e = s->table;
		HASH_CLEAR(hh, s->table);
		for (; e != NULL; e = next) {
			next = e->hh.next;
			mem_free(e);
		}
		/* The same for the claims. */
		r = s->claims;
		HASH_CLEAR(hh, s->claims);
		for (; r != NULL; r = rnext) {
			rnext = r->hh.next;
			mem_free(r);
		}
		b = s->backoffs;
		HASH_CLEAR(hh, s->backoffs);
		for (; b != NULL; b = bnext) {
			bnext = b->hh.next;
			mem_free(b);
		}
		lock_destroy(&s->lock);
	}
	uv_mutex_destroy(&c->resize_lock);
	mem_free(c->shards_mem);
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
	/* AD matters only without DO (RFC 6840 5.7): with DO the upstream
	 * sets AD as it validated whatever the query's AD, while an AD=0,
	 * DO=0 query may get AD=0 back, which must not answer an AD=1
	 * asker. */
	*p++ = (uint8_t)((q->do_bit ? 0x01 : 0) | (q->cd_bit ? 0x02 : 0) |
	    (!q->do_bit && (q->flags & DNS_FLAG_AD) ? 0x04 : 0));
	key->len = n + 5;
	cache_key_hash(key);
}

int
cache_put(struct cache *c, const struct cache_key *key,
    const uint8_t *answer, size_t len, const struct dnsmsg_answer_info *info,
    uint64_t now_ms)
{
	struct cache_entry *e = NULL, *old;
	struct shard *s;
	size_t n_ttl, q, stored, cost;
	int elide, rc = 0;

	if (!info->cacheable || info->ttl == 0)
		goto out;
	/* Keys come from cache_key_make; a longer one is a caller's bug and
	 * would be read past the end of key->bytes. */
	if (!key_ok(key)) {
		rc = -EINVAL;
		goto out;
	}
	if (len > DNS_MAX_MSG) {
		rc = -E2BIG;
		goto out;
	}
	n_ttl = info->n_ttl;
	if (n_ttl > DNSMSG_MAX_RRS)
		n_ttl = DNSMSG_MAX_RRS;
	/* The question (name, type, class) is the key but its flag byte. */
	q = key->len - 1;
	elide = len >= DNS_HDR_LEN + q &&
	    memcmp(answer + DNS_HDR_LEN, key->bytes, q) == 0;
	stored = elide ? len - q : len;
	cost = entry_cost(key->len, stored, n_ttl);

	/* The entry is built before the lock is taken: neither the
	 * allocation nor the copies need it. */
	e = mem_alloc(cost - CACHE_HASH_OVERHEAD);
	if (e == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	memset(e, 0, ENTRY_HDR);
	/* Shorter is always safe; conf's cache-max-ttl is below this. */
	e->ttl = info->ttl < CACHE_TTL_MAX ? info->ttl : CACHE_TTL_MAX;
	e->len = (uint16_t)len;
	e->n_ttl = (uint32_t)n_ttl;
	e->elided = elide ? 1 : 0;
	memcpy(e->ttl_off, info->ttl_off, n_ttl * sizeof(uint16_t));
	memcpy(entry_key(e), key->bytes, key->len);
	if (elide) {
		memcpy(entry_answer(e, key->len), answer, DNS_HDR_LEN);
		memcpy(entry_answer(e, key->len) + DNS_HDR_LEN,
		    answer + DNS_HDR_LEN + q, len - DNS_HDR_LEN - q);
	} else {
		memcpy(entry_answer(e, key->len), answer, len);
	}

	s = shard_of(c, key->hash);
	lock_take(&s->lock);
	if (cost > s->max_bytes) {
		rc = -E2BIG;
		goto unlock;
	}
	/* Before the lookup below, which it could otherwise leave holding an
	 * entry the rebase removed; and before the add, as an empty shard
	 * starts over. A rebase removes only dead entries. */
	e->inserted = shard_insert_time(s, now_ms);
	/* Find the entry this one replaces before adding, so that the lookup
	 * cannot return the new one. The add may need memory (the first table,
	 * a bucket expansion); only once it has succeeded is anything else
	 * touched, which keeps the cache unchanged on -ENOMEM. */
	HASH_FIND_BYHASHVALUE(hh, s->table, key->bytes, key->len, key->hash,
	    old);
	HASH_ADD_KEYPTR_BYHASHVALUE(hh, s->table, entry_key(e), key->len,
	    key->hash, e);
	if (e->hash_oom) {
		rc = -ENOMEM;
		goto unlock;
	}
	s->entries++;
	s->bytes += cost;
	if (old != NULL)
		entry_remove(s, old);
	/* cost <= max_bytes, so the loop stops before it reaches e (the tail)
	 * at the latest when e is the only entry left. */
	evict_to_bound(s);
	e = NULL;    /* the shard's now */
unlock:
	lock_drop(&s->lock);
	mem_free(e);
out:
	return rc;
}

int
cache_get(struct cache *c, const struct cache_key *key, uint64_t now_ms,
    uint8_t *out, size_t cap, size_t *out_len, struct cache_meta *meta)
{
	struct cache_entry *e = NULL;
	struct shard *s;
	int rc = -ENOENT;

	if (!key_ok(key))
		goto out;
	s = shard_of(c, key->hash);
	lock_take(&s->lock);
	/* A stale entry is a miss here but stays for cache_get_stale, and
	 * keeps its place in the LRU list: it was not served. */
	if (entry_lookup(c, s, key, now_ms, &e) != PHASE_FRESH)
		goto unlock;
	if (cap < e->len) {
		rc = -ENOSPC;
		goto unlock;
	}
	entry_copy_out(e, out);
	/* The entry is fresh, so its age is below its TTL. Aging needs the
	 * entry's TTL offsets, so it happens under the lock too. */
	dnsmsg_age_ttls(out, e->len, e->ttl_off, e->n_ttl,
	    entry_age(s, e, now_ms));
	*out_len = e->len;
	entry_meta(s, e, now_ms, 0, meta);
	entry_touch(s, e);
	rc = 0;
unlock:
	lock_drop(&s->lock);
out:
	return rc;
}

int
cache_get_stale(struct cache *c, const struct cache_key *key,
    uint64_t now_ms, uint32_t stale_ttl, uint8_t *out, size_t cap,
    size_t *out_len, struct cache_meta *meta)
{
	struct cache_entry *e = NULL;
	struct shard *s;
	int rc = -ENOENT;

	if (!key_ok(key))
		goto out;
	s = shard_of(c, key->hash);
	lock_take(&s->lock);
	/* A fresh entry is the caller's to read with cache_get: it must not
	 * go out with the stale TTL. */
	if (entry_lookup(c, s, key, now_ms, &e) != PHASE_STALE)
		goto unlock;
	if (cap < e->len) {
		rc = -ENOSPC;
		goto unlock;
	}
	entry_copy_out(e, out);
	dnsmsg_set_ttls(out, e->len, e->ttl_off, e->n_ttl, stale_ttl);
	*out_len = e->len;
	entry_meta(s, e, now_ms, 1, meta);
	entry_touch(s, e);
	rc = 0;
unlock:
	lock_drop(&s->lock);
out:
	return rc;
}

void
cache_refresh_failed(struct cache *c, const struct cache_key *key,
    uint64_t retry_at_ms)
{
	struct cache_entry *e;
	struct backoff *b, *fresh;
	struct shard *s;

	if (!key_ok(key))
		goto out;
	/* Allocated before the lock, like an entry. Without memory the
	 * refresh is simply tried again at the next stale read. */
	fresh = mem_alloc(sizeof(*fresh) + key->len);
	if (fresh != NULL) {
		memset(fresh, 0, sizeof(*fresh));
		memcpy(fresh->key, key->bytes, key->len);
	}
	s = shard_of(c, key->hash);
	lock_take(&s->lock);
	HASH_FIND_BYHASHVALUE(hh, s->table, key->bytes, key->len, key->hash,
	    e);
	if (e == NULL)
		goto unlock;
	b = backoff_find(s, e);
	if (b != NULL) {
		b->retry_at_ms = retry_at_ms;
		goto unlock;
	}
	if (fresh == NULL)
		goto unlock;
	fresh->retry_at_ms = retry_at_ms;
	HASH_ADD_KEYPTR_BYHASHVALUE(hh, s->backoffs, fresh->key, key->len,
	    key->hash, fresh);
	if (fresh->hash_oom)
		goto unlock;
	e->backoff = 1;
	fresh = NULL;    /* the shard's now */
unlock:
	lock_drop(&s->lock);
	mem_free(fresh);
out:
	return;
}

void
cache_get_stats(const struct cache *c, struct cache_stats *st)
{
	struct shard *s;
	unsigned i;

	memset(st, 0, sizeof(*st));
	st->shards = c->n_shards;
	for (i = 0; i < c->n_shards; i++) {
		s = &c->shards[i];
		lock_take_read(&s->lock);
		st->entries += s->entries;
		st->bytes += s->bytes;
		st->max_bytes += s->max_bytes;
		st->evictions += s->evictions;
		st->expired += s->expired;
		st->flushes += s->flushes;
		st->inflight += s->inflight;
		lock_drop_read(&s->lock);
	}
}

size_t
cache_flush(struct cache *c)
{
	struct cache_entry *e, *tmp;
	struct shard *s;
	size_t n = 0;
	unsigned i;

	for (i = 0; i < c->n_shards; i++) {
		s = &c->shards[i];
		lock_take(&s->lock);
		/* One by one rather than HASH_CLEAR: entry_remove keeps the
		 * table and the counts in step, and uthash frees its table
		 * with the last entry. The claims stay. */
		HASH_ITER(hh, s->table, e, tmp) {
			entry_remove(s, e);
			n++;
		}
		if (i == 0)
			s->flushes++;
		lock_drop(&s->lock);
	}
	return n;
}

/* ASCII letters folded as dnsmsg folds question names. Label length bytes
 * (at most 63) are never letters, so whole wire names can be folded. */
static uint8_t
fold(uint8_t ch)
{
	return ch >= 'A' && ch <= 'Z' ? (uint8_t)(ch - 'A' + 'a') : ch;
}

static int
wire_equal(const uint8_t *a, const uint8_t *b, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (fold(a[i]) != fold(b[i]))
			return 0;
	return 1;
}

/* 1 when name[0, len) is one wire name: labels of at most 63 bytes, the
 * root label exactly at the end, at most DNS_MAX_NAME_WIRE bytes. */
static int
wire_valid(const uint8_t *name, size_t len)
{
	size_t pos = 0;

	if (len == 0 || len > DNS_MAX_NAME_WIRE)
		return 0;
	while (pos < len && name[pos] != 0) {
		if (name[pos] > 63)
			return 0;
		pos += 1 + (size_t)name[pos];
	}
	return pos + 1 == len;
}

/* Does the key name key[0, key_len) equal name, or (subtree) end in it at
 * a label boundary? Walking the labels is what keeps "badexample.com" out
 * of "example.com"'s subtree. The key name came from cache_key_make; the
 * walk is bounded anyway. */
static int
name_matches(const uint8_t *key, size_t key_len, const uint8_t *name,
    size_t name_len, int subtree)
{
	size_t pos = 0;

	if (!subtree)
		return key_len == name_len && wire_equal(key, name, name_len);
	while (pos < key_len) {
		if (key_len - pos == name_len &&
		    wire_equal(key + pos, name, name_len))
			return 1;
		if (key[pos] == 0 || key[pos] > 63)
			break;
		pos += 1 + (size_t)key[pos];
	}
	return 0;
}

size_t
cache_flush_name(struct cache *c, const uint8_t *name_wire, size_t name_len,
    int subtree)
{
	struct cache_entry *e, *tmp;
	struct shard *s;
	size_t n = 0;
	unsigned i;

	if (name_wire == NULL || !wire_valid(name_wire, name_len))
		goto out;
	/* A linear walk of every shard: this is the control path, and the
	 * tables are keyed by whole keys, which a name (any type, class,
	 * flags) is not. Every key ends in 5 bytes of type, class and flags
	 * after its name. */
	for (i = 0; i < c->n_shards; i++) {
		s = &c->shards[i];
		lock_take(&s->lock);
		HASH_ITER(hh, s->table, e, tmp) {
			if (name_matches(entry_key(e), (size_t)e->hh.keylen - 5,
			    name_wire, name_len, subtree)) {
				entry_remove(s, e);
				n++;
			}
		}
		if (i == 0)
			s->flushes++;
		lock_drop(&s->lock);
	}
out:
	return n;
}

int
cache_name_from_text(const char *text, uint8_t *wire, size_t cap,
    size_t *len)
{
	uint8_t buf[DNS_MAX_NAME_WIRE];
	const char *p = text;
	size_t o = 0, lab_at, lab_len;
	unsigned v;
	int rc = -EINVAL;

	if (text == NULL || text[0] == '\0')
		goto out;
	/* The root is the one name whose only label is empty. */
	if (strcmp(text, ".") == 0)
		goto root;
	for (;;) {
		/* o <= 254 here (each byte below leaves room for the root
		 * label), so the length byte fits. */
		lab_at = o++;
		lab_len = 0;
		while (*p != '\0' && *p != '.') {
			if (*p != '\\') {
				v = (uint8_t)*p++;
			} else if (p[1] >= '0' && p[1] <= '9') {
				/* \DDD: exactly three digits, at most 255. */
				if (p[2] < '0' || p[2] > '9' || p[3] < '0' ||
				    p[3] > '9')
					goto out;
				v = (unsigned)(p[1] - '0') * 100 +
				    (unsigned)(p[2] - '0') * 10 +
				    (unsigned)(p[3] - '0');
				if (v > 255)
					goto out;
				p += 4;
			} else if (p[1] != '\0') {
				v = (uint8_t)p[1];
				p += 2;
			} else {
				goto out;
			}
			/* The root label must still fit after this byte. */
			if (lab_len == 63 || o + 1 >= sizeof(buf))
				goto out;
			buf[o++] = fold((uint8_t)v);
			lab_len++;
		}
		if (lab_len == 0)
			goto out;    /* "", "..", ".com", "a..b" */
		buf[lab_at] = (uint8_t)lab_len;
		if (*p == '\0')
			break;
		p++;                 /* the dot */
		if (*p == '\0')
			break;       /* a trailing dot ends the name */
	}
root:
	buf[o++] = 0;
	if (o > cap) {
		rc = -ENOSPC;
		goto out;
	}
	memcpy(wire, buf, o);
	*len = o;
	rc = 0;
out:
	return rc;
}

/* Fill info for e at now_ms; returns 0, or -1 for a dead entry (past the
 * stale window), which no lookup would serve. */
static int
entry_info(const struct cache *c, const struct shard *s,
    const struct cache_entry *e, uint64_t now_ms,
    struct cache_entry_info *info)
{
	struct dnsmsg_question q;
	const uint8_t *key = entry_key(e);
	size_t name_len = (size_t)e->hh.keylen - 5;
	uint64_t past, expiry = entry_expiry(s, e);
	uint32_t age;

	memset(info, 0, sizeof(*info));
	if (now_ms < expiry) {
		/* What cache_get would give: the lifetime less the whole
		 * seconds spent, at least 1 while fresh. */
		age = entry_age(s, e, now_ms);
		info->ttl_left = e->ttl - age;
	} else {
		/* The same boundary as entry_lookup. */
		past = now_ms - expiry;
		if (past >= c->stale_max_ms)
			return -1;
		info->stale = 1;
		info->stale_for = (uint32_t)(past / 1000);
	}
	/* The name is at most DNS_MAX_NAME_WIRE by cache_key_make. */
	memset(&q, 0, sizeof(q));
	memcpy(q.wire, key, name_len);
	q.wire_len = name_len;
	dnsmsg_name_str(&q, info->name, sizeof(info->name));
	info->qtype = (uint16_t)(key[name_len] << 8 | key[name_len + 1]);
	info->qclass = (uint16_t)(key[name_len + 2] << 8 | key[name_len + 3]);
	info->do_bit = (key[name_len + 4] & 0x01) != 0;
	info->cd_bit = (key[name_len + 4] & 0x02) != 0;
	info->ad_bit = (key[name_len + 4] & 0x04) != 0;
	info->bytes = entry_cost(e->hh.keylen, entry_stored(e), e->n_ttl);
	info->rcode = entry_rcode(e);
	return 0;
}

int
cache_dump(struct cache *c, uint64_t now_ms,
    int (*fn)(void *arg, const struct cache_entry_info *e), void *arg)
{
	struct cache_entry_info info;
	struct cache_entry *e;
	struct shard *s;
	unsigned i;
	int rc = 0;

	for (i = 0; i < c->n_shards && rc == 0; i++) {
		s = &c->shards[i];
		lock_take_read(&s->lock);
		/* From the tail (most recently used) back to the head. */
		e = s->table != NULL ?
		    ELMT_FROM_HH(s->table->hh.tbl, s->table->hh.tbl->tail) :
		    NULL;
		for (; e != NULL && rc == 0; e = e->hh.prev) {
			if (entry_info(c, s, e, now_ms, &info) == 0)
				rc = fn(arg, &info);
		}
		lock_drop_read(&s->lock);
	}
	return rc;
}

void
cache_resize(struct cache *c, size_t max_bytes)
{
	struct shard *s;
	unsigned i;

	uv_mutex_lock(&c->resize_lock);
	for (i = 0; i < c->n_shards; i++) {
		s = &c->shards[i];
		lock_take(&s->lock);
		s->max_bytes = shard_share(max_bytes, c->n_shards, i);
		evict_to_bound(s);
		lock_drop(&s->lock);
	}
	uv_mutex_unlock(&c->resize_lock);
}

/* ---- claim records ---- */

/* Does key have an entry fresh at now_ms with more than 1/fraction of its
 * lifetime left (fraction 0: with any time left, as cache_get would serve
 * it)? Under the shard's lock; only reads. */
static int
entry_fresh(struct shard *s, const struct cache_key *key, uint64_t now_ms,
    unsigned fraction)
{
	struct cache_entry *e;
	uint64_t left_ms, expiry;

	HASH_FIND_BYHASHVALUE(hh, s->table, key->bytes, key->len, key->hash,
	    e);
	if (e == NULL)
		return 0;
	expiry = entry_expiry(s, e);
	if (now_ms >= expiry)
		return 0;
	left_ms = expiry - now_ms;
	return fraction == 0 || left_ms * fraction > (uint64_t)e->ttl * 1000;
}

/* What a claim checks first, under the shard's lock. */
enum claim_check {
	CHECK_NONE,       /* cache_claim: nothing */
	CHECK_FRESH,      /* cache_claim_miss: a fresh entry means FRESH */
	CHECK_REFRESHED,  /* cache_claim_refresh: a refreshed one, BUSY */
};

/* cache_claim, cache_claim_miss and cache_claim_refresh, as check says. */
static int
claim(struct cache *c, const struct cache_key *key, unsigned worker,
    int wait, enum claim_check check, uint64_t now_ms, unsigned fraction)
{
	struct claim *r, *fresh;
	struct shard *s;
	int rc = CACHE_CLAIM_OWNER;

	if (worker >= CACHE_MAX_WORKERS || !key_ok(key)) {
		rc = -EINVAL;
		goto out;
	}
	/* Allocated before the lock, like an entry: most claims find no
	 * record and use it. NULL is not an error: see below. */
	fresh = mem_alloc(sizeof(*fresh) + key->len);
	if (fresh != NULL) {
		memset(fresh, 0, sizeof(*fresh));
		fresh->owner = (uint8_t)worker;
		memcpy(fresh->key, key->bytes, key->len);
	}
	s = shard_of(c, key->hash);
	lock_take(&s->lock);
	/* The caller's lookup and this claim are two steps: another
	 * worker may have stored the key's answer in between (and released
	 * its claim, so no record says so). */
	if (check != CHECK_NONE && entry_fresh(s, key, now_ms,
	    check == CHECK_FRESH ? 0 : fraction)) {
		rc = check == CHECK_FRESH ? CACHE_CLAIM_FRESH :
		    CACHE_CLAIM_BUSY;
		goto unlock;
	}
	HASH_FIND_BYHASHVALUE(hh, s->claims, key->bytes, key->len, key->hash,
	    r);
	if (r != NULL) {
		if (r->owner == worker) {
			rc = CACHE_CLAIM_OWNER;    /* again: no change */
		} else if (wait) {
			r->waiters |= (uint64_t)1 << worker;
			rc = CACHE_CLAIM_WAIT;
		} else {
			rc = CACHE_CLAIM_BUSY;
		}
		goto unlock;
	}
	/* Nobody fetches the key: the caller will. Without memory for the
	 * record it fetches alone, unknown to the others, which at worst
	 * sends one more query upstream: better than failing the client. */
	if (fresh == NULL)
		goto unlock;
	HASH_ADD_KEYPTR_BYHASHVALUE(hh, s->claims, fresh->key, key->len,
	    key->hash, fresh);
	if (fresh->hash_oom)
		goto unlock;
	s->inflight++;
	fresh = NULL;    /* the shard's now */
unlock:
	lock_drop(&s->lock);
	mem_free(fresh);
out:
	return rc;
}

int
cache_claim(struct cache *c, const struct cache_key *key, unsigned worker,
    int wait)
{
	return claim(c, key, worker, wait, CHECK_NONE, 0, 0);
}

int
cache_claim_miss(struct cache *c, const struct cache_key *key,
    unsigned worker, uint64_t now_ms)
{
	return claim(c, key, worker, 1, CHECK_FRESH, now_ms, 0);
}

int
cache_claim_refresh(struct cache *c, const struct cache_key *key,
    unsigned worker, uint64_t now_ms, unsigned fraction)
{
	return claim(c, key, worker, 0, fraction > 0 ? CHECK_REFRESHED :
	    CHECK_NONE, now_ms, fraction);
}

uint64_t
cache_release(struct cache *c, const struct cache_key *key, unsigned worker)
{
	struct claim *r;
	struct shard *s;
	uint64_t mask = 0;

	if (worker >= CACHE_MAX_WORKERS || !key_ok(key))
		goto out;
	s = shard_of(c, key->hash);
	lock_take(&s->lock);
	HASH_FIND_BYHASHVALUE(hh, s->claims, key->bytes, key->len, key->hash,
	    r);
	if (r == NULL || r->owner != worker) {
		r = NULL;
		goto unlock;
	}
	mask = r->waiters & ~((uint64_t)1 << worker);
	HASH_DELETE(hh, s->claims, r);
	s->inflight--;
unlock:
	lock_drop(&s->lock);
	mem_free(r);
out:
	return mask;
}
