/* shcache.h: the shared second-level cache in Redis, one client per loop.
 *
 * A fleet of dotproxy instances (or the workers of one) share answers
 * through one Redis server (or twemproxy in front of several): a local
 * miss asks Redis before it goes upstream, and an upstream answer is
 * written to Redis for the others. Everything is asynchronous on the
 * loop (hiredis's async API and its libuv adapter); nothing here ever
 * blocks, and nothing makes an answer wait longer than the configured
 * timeout because of Redis.
 *
 * Keys: the configured prefix, then the cache key's bytes as they are
 * (struct cache_key: the lowercased wire name, QTYPE and QCLASS in
 * network order, the flag byte). Binary-safe: hiredis's %b.
 *
 * Values: "DPX1", the wall-clock time the answer was fetched (ms since
 * the epoch, 8 bytes, network order), the lifetime it was stored with
 * (seconds, 4 bytes, network order), then the answer in wire form
 * (SHCACHE_HDR_LEN + len bytes). Every instance ages a value from the
 * same fetch time, so an entry written by one is no fresher or older for
 * another; a fetch time in the future (clock skew) counts as now. Keys
 * are written with SET key value PX lifetime-in-ms, so Redis drops them
 * when they expire. Reads use GETRANGE 0 .. SHCACHE_VALUE_MAX, one byte
 * more than any value of ours, so a huge value under our key costs at
 * most that much memory and is then seen to be too long to be ours: it
 * is not served (counted invalid, result "error").
 *
 * Failures: each request is bounded by shared-cache-timeout (a timer per
 * loop over the requests in send order, which share one timeout, so they
 * expire in order). After SHCACHE_BREAKER_FAILS failures in a row
 * (error replies, timeouts, failed connects or handshakes, a lost
 * connection counted once; not WRONGTYPE nor invalid values, which are
 * someone else's data under our key, not a sick server; a reply in time
 * resets the count, a late one does not) the circuit breaker opens: the
 * connection is dropped and every request is skipped (answered at once,
 * counted "skipped") for a back-off period, doubled on each failed probe
 * from SHCACHE_BACKOFF_MIN_MS up to SHCACHE_BACKOFF_MAX_MS and jittered
 * by +-25 %, after which one connection is made and probed with PING; its
 * reply closes the breaker. A connection that is lost while the breaker
 * is closed is made again at once once, then after the back-off; while no
 * connection is up, requests are skipped. So a dead Redis costs a counter
 * per miss, and reconnects never storm. A connect is bounded by
 * max(shared-cache-timeout, 100 ms); after connecting, SELECT db is sent
 * first when db is not 0 (its failure fails the connection).
 *
 * Threads: a struct shcache belongs to one loop and is used on that
 * loop's thread only; each worker has its own (and its own connection).
 */
#ifndef DOTPROXY_SHCACHE_H
#define DOTPROXY_SHCACHE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "cache.h"
#include "conf.h"
#include "dnsmsg.h"
#include "metrics.h"

#define SHCACHE_MAGIC "DPX1"
#define SHCACHE_HDR_LEN 16                  /* magic, fetch time, lifetime */
#define SHCACHE_VALUE_MAX (SHCACHE_HDR_LEN + DNS_MAX_MSG)
#define SHCACHE_BREAKER_FAILS 5
#define SHCACHE_BACKOFF_MIN_MS 1000
#define SHCACHE_BACKOFF_MAX_MS 30000
#define SHCACHE_MAX_OUTSTANDING 4096        /* requests in flight per loop;
                                             * beyond, skipped */

struct shcache;

/* The op and result labels of dotproxy_shared_cache_requests_total: the
 * indexes of struct metrics's shc_requests[op][result] and shc_duration[op].
 * "ok" is a set's or delete's success (a get's is "hit" or "miss"). */
enum shcache_op {
	SHCACHE_OP_GET = 0,
	SHCACHE_OP_SET,
	SHCACHE_OP_DEL,
	SHCACHE_N_OPS,
};

enum shcache_result {
	SHCACHE_HIT = 0,
	SHCACHE_MISS,
	SHCACHE_ERROR,
	SHCACHE_TIMEOUT,
	SHCACHE_SKIPPED,
	SHCACHE_OK,
	SHCACHE_N_RESULTS,
};

_Static_assert(SHCACHE_N_OPS == METRICS_SHC_OPS &&
    SHCACHE_N_RESULTS == METRICS_SHC_RESULTS,
    "metrics.h sizes struct metrics for these");

const char *shcache_op_name(enum shcache_op op);
const char *shcache_result_name(enum shcache_result r);

/* What the exporter and /status show of one loop's client. */
struct shcache_state {
	int up;                  /* a connection is established (and, after a
	                          * breaker opened, probed) */
	int circuit_open;        /* the breaker is open: nothing is asked */
	unsigned outstanding;    /* requests sent, reply not yet read */
	uint64_t breaker_opens;  /* times the breaker opened */
	uint64_t connects;       /* connections attempted */
	uint64_t retry_in_ms;    /* breaker open: ms until the next probe */
};

/* Make the client of loop for conf (conf->shared_cache must be set) and
 * start connecting in the background. Counters go to m (the loop's
 * metrics: shc_requests, shc_duration, shc_invalid). Returns NULL when
 * out of memory. */
struct shcache *shcache_new(uv_loop_t *loop, const struct conf *conf,
    struct metrics *m);

/* A reload: take the new timeout and prefix; reconnect when the address
 * changed. conf must outlive the next call or shcache_close. */
void shcache_set_conf(struct shcache *s, const struct conf *conf);

/* Stop: every get still waiting is answered SHCACHE_SKIPPED (its callback
 * runs within this call), the connection and the timers are closed, and
 * the memory is freed once libuv has closed the handles (the loop must
 * run on; after that it has nothing of ours left and uv_run can end).
 * NULL is allowed; so is a call from within a get's callback. s must not
 * be used after the call. */
void shcache_close(struct shcache *s);

/* Draining (the listeners are closed; the server waits for the answers
 * in flight): every get still waiting is answered SHCACHE_SKIPPED (its
 * callback runs within this call) and later gets are skipped, so that no
 * client's answer waits for Redis past this point; sets go on. NULL is
 * allowed. */
void shcache_drain(struct shcache *s);

/* The answer to a get: result SHCACHE_HIT with the answer (len bytes,
 * valid during the call; the callee may change it in place) and its info
 * (dnsmsg_parse_answer's, TTLs lowered by the age of the value and
 * info->ttl the lifetime left), or SHCACHE_MISS, SHCACHE_ERROR,
 * SHCACHE_TIMEOUT or SHCACHE_SKIPPED with answer NULL. A value under the
 * key that is not one of ours, is expired, does not parse as an answer to
 * q, or is not cacheable (SERVFAIL, TC, ...) is counted in shc_invalid
 * and reported as SHCACHE_ERROR (result label "error"). */
typedef void (*shcache_get_cb)(void *arg, int result, uint8_t *answer,
    size_t len, const struct dnsmsg_answer_info *info);

/* Ask Redis for key (the answer must be to question q; q is copied).
 * Returns 0 when cb(arg, ...) follows, always later and exactly once
 * (at the latest after the timeout, or from shcache_close); or -1
 * when nothing was asked (no connection, breaker open,
 * too many in flight, out of memory): counted, and no callback. The
 * callback runs from the loop (a reply, the timer, a lost connection:
 * SHCACHE_ERROR) or from shcache_close or shcache_set_conf (a changed
 * address drops the connection: SHCACHE_ERROR), never from within
 * shcache_get; it may call any function here. */
int shcache_get(struct shcache *s, const struct cache_key *key,
    const struct dnsmsg_question *q, shcache_get_cb cb, void *arg);

/* Write answer (len bytes, its TTLs already clamped to lifetime_s) under
 * key for lifetime_s seconds, stamped with the wall clock now. Fire and
 * forget: nobody waits for it; the outcome is counted (op "set"). A
 * lifetime of 0 or a len over DNS_MAX_MSG writes nothing. */
void shcache_put(struct shcache *s, const struct cache_key *key,
    const uint8_t *answer, size_t len, uint32_t lifetime_s);

/* Delete from Redis every key of name_wire (lowercased wire form,
 * name_len bytes, as cache_name_from_text makes it), any type, class and
 * flags; with subtree, the names below it too; name NULL: every key under
 * the prefix. Runs in the background (SCAN with a MATCH pattern, then
 * DEL), logs what it deleted or why it could not (twemproxy has no SCAN
 * and closes the connection on it: then, once reconnected, only the
 * exact name's common types are deleted, by DEL on their keys; a subtree
 * or everything cannot be). The subtree pattern is a glob on wire bytes
 * (prefix*NAME?????): a name whose label bytes contain NAME's wire form
 * (binary labels) would match too. Returns 0 when started, -1 when there
 * is no connection (or the name is longer than a name). */
int shcache_flush(struct shcache *s, const uint8_t *name_wire,
    size_t name_len, int subtree);

void shcache_get_state(const struct shcache *s, struct shcache_state *st);

/* For tests: the wall clock used to stamp and age values (ms since the
 * epoch); NULL restores the real one. */
void shcache_set_clock(struct shcache *s, uint64_t (*wall_ms)(void *arg),
    void *arg);

/* Value codec, exposed for the unit tests and the fuzz target.
 * shcache_value_encode writes the value of answer into out (cap bytes)
 * and returns its length, or 0 when it does not fit. shcache_value_decode
 * checks a value read back: 0 with *answer and *answer_len pointing into
 * value, *fetched_ms and *lifetime_s set; -1 when it is not one of ours
 * (too short, too long, wrong magic, lifetime 0). */
size_t shcache_value_encode(uint8_t *out, size_t cap, uint64_t fetched_ms,
    uint32_t lifetime_s, const uint8_t *answer, size_t len);
int shcache_value_decode(const uint8_t *value, size_t len,
    uint64_t *fetched_ms, uint32_t *lifetime_s, const uint8_t **answer,
    size_t *answer_len);

#endif
