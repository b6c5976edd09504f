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
 * once. A connection that delivers nothing for answer_timeout_ms while
 * queries wait is presumed half-open and replaced. A connection that
 * closes with queries in flight has them resent once. Connections are
 * replaced after conf->max_conn_lifetime_ms with a fresh verified (and
 * resumed) handshake, and honour the server's edns-tcp-keepalive. Every
 * query has a deadline of conf->query_timeout_ms, checked by one timer
 * per pool.
 *
 * Callback contract: upstream_query returning an error never calls cb;
 * returning 0 calls cb exactly once, unless upstream_cancel is called first.
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
 * the upstream's ID, not the client's. The bytes are valid during the call
 * only. */
typedef void (*upstream_cb)(void *arg, int status, const uint8_t *answer,
    size_t len, const struct dnsmsg_answer_info *info);

struct upstream_pool;
struct upstream_req;

/* A pool for the upstreams in conf (which must outlive the pool), using
 * the credentials tls and counting into m. No connection is opened until
 * the first query. Returns NULL when out of memory. */
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

/* What the pool knows about one upstream, for logs and (later) metrics. */
struct upstream_status {
	char name[320];          /* "addr@port#auth_name" */
	int connected;           /* a verified connection is open */
	int healthy;             /* not backing off */
	unsigned fail_count;     /* consecutive failures */
	uint64_t retry_at_ms;    /* loop time of the next probe when backing off */
	uint32_t srtt_ms;        /* smoothed answer RTT; 0 before the first */
	int verified;            /* last handshake: 1 verified, 0 failed, -1 none yet */
	int64_t cert_expiry;     /* notAfter of its certificate, 0 unknown */
	char last_error[160];    /* last failure's cause, "" if none */
	uint64_t queries, answers, timeouts;
};

/* Number of upstreams, and the status of upstream i (0 <= i < count). */
size_t upstream_count(const struct upstream_pool *p);
void upstream_get_status(const struct upstream_pool *p, size_t i,
    struct upstream_status *st);

/* Shut down: every pending query gets cb with UPSTREAM_ECLOSED, every
 * connection is closed. The pool's memory is freed once the loop has run
 * the handles' close callbacks; p is invalid after this call. */
void upstream_pool_close(struct upstream_pool *p);

#endif
