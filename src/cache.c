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
 *
 * The control operations (flush, flush by name, dump, resize) walk the LRU
 * list: linear in the number of entries, which is fine for an operator's
 * request and keeps the table keyed for the query path alone. A name is
 * matched on the key's wire bytes, which cache_key_make has lowercased;
 * cache_name_from_text lowercases an operator's text the same way. The dump
 * only reads: what it reports of an entry follows the same phases and the
 * same aging as the lookups. Resizing evicts as cache_put does, so the
 * invariant bytes <= max_bytes holds across it.
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
	uint64_t flushes;
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

/* Evict from the tail until the bytes fit the bound. bytes > 0 means there
 * is an entry, so the tail exists. */
static void
evict_to_bound(struct cache *c)
{
	while (c->bytes > c->max_bytes) {
		entry_remove(c, c->lru->prev);
		c->evictions++;
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
	/* AD matters only without DO (RFC 6840 5.7): with DO the upstream
	 * sets AD as it validated whatever the query's AD, while an AD=0,
	 * DO=0 query may get AD=0 back, which must not answer an AD=1
	 * asker. */
	*p++ = (uint8_t)((q->do_bit ? 0x01 : 0) | (q->cd_bit ? 0x02 : 0) |
	    (!q->do_bit && (q->flags & DNS_FLAG_AD) ? 0x04 : 0));
	key->len = n + 5;
}

int
cache_put(struct cache *c, const struct cache_key *key,
    const uint8_t *answer, size_t len, const struct dnsmsg_answer_info *info,
    uint64_t now_ms)
{
	struct cache_entry *e, *old;
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
	evict_to_bound(c);
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
	st->flushes = c->flushes;
}

size_t
cache_flush(struct cache *c)
{
	struct cache_entry *e, *tmp;
	size_t n = 0;

	/* One by one rather than HASH_CLEAR: entry_remove keeps the table,
	 * the list and the counts in step, and uthash frees its table with
	 * the last entry. */
	DL_FOREACH_SAFE(c->lru, e, tmp) {
		entry_remove(c, e);
		n++;
	}
	c->flushes++;
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
	size_t n = 0;

	if (name_wire == NULL || !wire_valid(name_wire, name_len))
		goto out;
	/* A linear walk: this is the control path, and the table is keyed by
	 * whole keys, which a name (any type, class, flags) is not. Every key
	 * ends in 5 bytes of type, class and flags after its name. */
	DL_FOREACH_SAFE(c->lru, e, tmp) {
		if (name_matches(entry_key(e), (size_t)e->key_len - 5,
		    name_wire, name_len, subtree)) {
			entry_remove(c, e);
			n++;
		}
	}
	c->flushes++;
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
entry_info(const struct cache *c, struct cache_entry *e, uint64_t now_ms,
    struct cache_entry_info *info)
{
	struct dnsmsg_question q;
	const uint8_t *key = entry_key(e);
	size_t name_len = (size_t)e->key_len - 5;
	uint64_t past;
	uint32_t age;

	memset(info, 0, sizeof(*info));
	if (now_ms < e->expiry_ms) {
		/* What cache_get would give: the lifetime less the whole
		 * seconds spent, at least 1 while fresh. */
		age = entry_age(e, now_ms);
		info->ttl_left = e->ttl - age;
	} else {
		/* The same boundary as entry_lookup. */
		past = now_ms - e->expiry_ms;
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
	info->bytes = entry_cost(e->key_len, e->len, e->n_ttl);
	info->rcode = e->rcode;
	return 0;
}

int
cache_dump(struct cache *c, uint64_t now_ms,
    int (*fn)(void *arg, const struct cache_entry_info *e), void *arg)
{
	struct cache_entry_info info;
	struct cache_entry *e;
	int rc = 0;

	DL_FOREACH(c->lru, e) {
		if (entry_info(c, e, now_ms, &info) != 0)
			continue;
		rc = fn(arg, &info);
		if (rc != 0)
			break;
	}
	return rc;
}

void
cache_resize(struct cache *c, size_t max_bytes)
{
	c->max_bytes = max_bytes;
	evict_to_bound(c);
}
