/* upstream.h: the DNS-over-TLS client pool (RFC 7858, RFC 8310).
 *
 * One persistent, verified TLS connection per upstream, reused for every
 * query and kept open until idle for conf->idle_timeout_ms. Many queries
 * are in flight on a connection at once: each gets a random ID unique on
 * that connection, and answers are matched by ID and then by question
 * (RFC 5452), in any order. Frames are RFC 1035 4.2.2 (2-byte length).
 *
 * A query goes to a usable upstream (not backing off, not already failed
 * for this query) chosen by conf->selection: lowest smoothed RTT (at
 * random among those close to the best), round-robin, or config order.
 * An upstream that fails to connect, handshake, verify, or answer within
 * conf->answer_timeout_ms is marked down and probed again after a
 * jittered exponential back-off capped at conf->backoff_max_ms; its
 * queries move to another upstream, and a query with none left fails at
 * once. While every upstream backs off, a new query probes one anyway (at
 * most one probe per 250 ms; a query that comes sooner is held for the
 * next one), and upstream_pool_reset_backoff ends every back-off. A
 * connection that answers nothing for answer_timeout_ms while
 * queries wait is probed with a query of the pool's own, and presumed
 * dead and replaced only if that goes unanswered too; one whose answers
 * match nothing (out of step) is replaced, and one whose queries all go
 * unanswered is retired. IDs of unanswered queries are released after
 * query_timeout_ms more. A connection that
 * closes with queries in flight has them resent once. Connections are
 * replaced after conf->max_conn_lifetime_ms with a full handshake that
 * verifies the certificate again (a session is only resumed within that
 * time of the last full verification), and honour the server's
 * edns-tcp-keepalive. Every
 * query has a deadline of conf->query_timeout_ms, checked by one timer
 * per pool.
 *
 * The upstream list can be swapped at run time (upstream_pool_reconfigure,
 * for SIGHUP): an upstream that is unchanged keeps its connections,
 * health and counters; removed or changed ones take no new queries and
 * close once what is in flight on them is answered.
 *
 * Callback contract: upstream_query returning an error never calls cb;
 * returning 0 calls cb exactly once, unless upstream_cancel is called first.
 * This holds across reconfigures.
 */
#ifndef DOTPROXY_UPSTREAM_H
#define DOTPROXY_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "conf.h"
#include "dnsmsg.h"
#include "metrics.h"
#include "tls.h"

/* Failure statuses given to upstream_cb (answers come with status 0). */
#define UPSTREAM_ETIMEDOUT (-1)   /* the deadline passed */
#define UPSTREAM_EUNREACH (-2)    /* no upstream could be connected and verified */
#define UPSTREAM_ELOST (-3)       /* connection lost after the one resend */
#define UPSTREAM_EBADANSWER (-4)  /* the upstream sent a malformed answer */
#define UPSTREAM_ECLOSED (-5)     /* the pool is closing */

/* An answer (status 0) that matched the query's ID and question, with its
 * parse info, or a failure (status < 0, answer NULL). The answer carries
 * the upstream's ID, not the client's; upstream names the upstream that
 * answered ("addr@port#name", NULL on failure), for the query log. The
 * bytes and the name are valid during the call only. now_ms is the pool's
 * loop time at the callback (uv_now of its loop), so that the callee
 * reads no clock of its own. */
typedef void (*upstream_cb)(void *arg, int status, const uint8_t *answer,
    size_t len, const struct dnsmsg_answer_info *info, const char *upstream,
    uint64_t now_ms);

struct upstream_pool;
struct upstream_req;

/* A pool for the upstreams in conf (which must outlive the pool, or the
 * next upstream_pool_reconfigure), using the credentials tls (likewise)
 * and counting into m. At most CONF_MAX_UPSTREAM upstreams are used. No
 * connection is opened until the first query. Returns NULL when out of
 * memory. */
struct upstream_pool *upstream_pool_new(uv_loop_t *loop,
    const struct conf *conf, struct tls_ctx *tls, struct metrics *m);

/* Send a query (copied; its ID is replaced on the wire) whose parsed
 * question is q. Returns 0 and, if reqp is not NULL, a handle for
 * upstream_cancel valid until cb is called; or -ENOMEM. */
int upstream_query(struct upstream_pool *p, const uint8_t *query, size_t len,
    const struct dnsmsg_question *q, upstream_cb cb, void *arg,
    struct upstream_req **reqp);

/* Forget a pending query: its cb will not be called. An answer that
 * arrives for it later is dropped silently. */
void upstream_cancel(struct upstream_req *r);

/* Switch the pool to newconf (and tls, the credentials for new
 * connections), which must outlive the pool or the next reconfigure;
 * after the call nothing in the pool points into the old conf, which the
 * caller may free at once.
 *
 * An upstream is unchanged when its address (family, IP, port, IPv6
 * scope), auth name and set of pins are equal and tls is the pointer
 * given before (new credentials mean new trust anchors: every upstream
 * counts as changed then). An unchanged upstream keeps its state (health,
 * back-off, SRTT, TLS session, counters, connections, queries in flight)
 * and now refers to newconf's entry, perhaps at another index of the
 * status API. New upstreams start without a connection.
 *
 * Removed and changed upstreams take no new queries. Their queries that
 * were waiting (not yet written) go to the new set at once. Queries in
 * flight on them finish there (the answer is delivered and counted) and
 * their connections close when nothing is left in flight, like connections
 * past their lifetime -- except when tls changed: then their connections
 * close at once and their in-flight queries are sent again on the new
 * set, so that nothing uses the old credentials after this returns (the
 * caller may free them; tls.c reads no credentials while it tears a closed
 * connection down). A query that finds no usable upstream fails with
 * UPSTREAM_EUNREACH from a later loop turn; no callback is called from
 * here. Every query keeps getting exactly one callback.
 *
 * Pool-wide settings (timeouts, selection, lifetime, back-off cap) are
 * read from newconf from now on; timers already running keep their
 * deadlines, and every query keeps the deadline it was given.
 *
 * Call it on the loop's thread, outside the pool's callbacks. Returns 0;
 * -ENOMEM with the pool unchanged (everything is allocated before anything
 * is changed); or -ECANCELED when the pool is closing. */
int upstream_pool_reconfigure(struct upstream_pool *p,
    const struct conf *newconf, struct tls_ctx *tls);

#define UPSTREAM_RTT_BUCKETS 16

/* What the pool knows about one upstream, for logs and metrics. Counters
 * (uint64_t) only grow, and survive reconfigures that keep the upstream.
 * Times called "wall clock" are seconds since the epoch from time(NULL):
 * operators read them as dates, which loop time cannot give; everything
 * else in the pool runs on loop time. */
struct upstream_status {
	char name[320];          /* "addr@port#auth_name" */
	int connected;           /* a verified connection is open */
	unsigned connections;    /* verified connections open (retiring
	                          * ones included) */
	int healthy;             /* not backing off */
	unsigned fail_count;     /* consecutive failures */
	uint64_t health_ms;      /* loop time of the last failure, or of the
	                          * first answer on a connection; 0 none */
	uint64_t retry_at_ms;    /* loop time of the next probe when backing off */
	uint32_t srtt_ms;        /* smoothed answer RTT; 0 before the first */
	int verified;            /* last handshake: 1 verified, 0 failed, -1 none yet */
	int64_t cert_expiry;     /* notAfter of its certificate, 0 unknown */
	char last_error[160];    /* last failure's cause, "" if none */
	uint64_t queries, answers, timeouts;

	char addr[64];           /* "addr@port" */
	char auth_name[256];     /* "" when pins alone authenticate */
	unsigned inflight;       /* queries written and not answered, now */
	uint64_t handshakes;     /* successful (verified) handshakes */
	uint64_t handshakes_resumed; /* of those, resumed a TLS session */
	/* Failures by kind: connect (TCP refused, unreachable, or timed out
	 * before TLS began), handshake (TLS protocol error or timeout),
	 * verify (chain untrusted, name mismatch, expired, ...), pin (no
	 * pin matched), timeout (a query unanswered for answer_timeout_ms or
	 * until its deadline, per query), reset (a connection lost, or
	 * presumed dead: its probe unanswered or its answers matching
	 * nothing, with queries in flight, per connection), bad_answer
	 * (malformed, unknown ID, or another question, per frame). */
	uint64_t err_connect, err_handshake, err_verify, err_pin;
	uint64_t err_timeout, err_reset, err_bad_answer;
	int64_t last_verify_ok;  /* wall clock of the last successful
	                          * verification, 0 none */
	int64_t last_handshake;  /* wall clock of the last handshake that got
	                          * past TCP (succeeded or failed), 0 none */
	char tls_version[16];    /* of the last successful one: "TLS1.3" */
	int resumed;             /* the last successful one resumed */
	/* What the server presented at the last successful handshake or
	 * failed verification: */
	int64_t chain_min_not_after; /* earliest notAfter in the chain, 0
	                              * unknown */
	char pin_sha256[48];     /* base64 SHA-256 of the leaf's SPKI
	                          * (RFC 7469; pin-sha256= in the config) */
	int pin_state;           /* 1 a pin matched, 0 none did, -1 unpinned */
	char last_verify_error[160]; /* why the last verification failed;
	                              * "" after a successful one */
	/* Answer RTT histogram. rtt_bucket[i] counts the answers with an
	 * RTT in (b(i-1), b(i)], b(i) = 0.00025 s * 2^i (0.25 ms .. 8.192
	 * s), NOT cumulative: an exporter sums them up. Answers slower
	 * than 8.192 s are only in rtt_count (the +Inf bucket) and
	 * rtt_sum_s. RTTs are loop-time differences in whole milliseconds,
	 * so the buckets below 1 ms only ever hold 0 ms samples. */
	uint64_t rtt_bucket[UPSTREAM_RTT_BUCKETS];
	uint64_t rtt_count;
	double rtt_sum_s;
};

/* Forget every upstream's back-off, as if none had failed: the next query
 * tries them at once. For a change of the host's addresses or routes
 * (netwatch.h), after which earlier failures say little. Logs one line.
 * Held queries (see upstream.c) are dispatched from the next loop turn.
 * Does nothing once the pool is closing. */
void upstream_pool_reset_backoff(struct upstream_pool *p);

/* Number of upstreams, and the status of upstream i (0 <= i < count), in
 * the order of the current conf. Removed upstreams that are still
 * draining are not listed. */
size_t upstream_count(const struct upstream_pool *p);
void upstream_get_status(const struct upstream_pool *p, size_t i,
    struct upstream_status *st);

/* Add src, the same upstream's status in another worker's pool, into
 * dst: counters and histograms sum; health (healthy, failures, back-off,
 * last error) is that of the pool with the latest evidence (health_ms),
 * connected where any is; the TLS facts are those of the later
 * handshake. */
void upstream_status_merge(struct upstream_status *dst,
    const struct upstream_status *src);

/* Shut down: every pending query gets cb with UPSTREAM_ECLOSED, every
 * connection is closed. The pool's memory is freed once the loop has run
 * the handles' close callbacks; p is invalid after this call. */
void upstream_pool_close(struct upstream_pool *p);

#endif
