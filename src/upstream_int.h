/* upstream_int.h: the structs and functions that the two files of the
 * upstream pool share: upstream.c (connections and their pipelining) and
 * upselect.c (selection and health). Only those two include it; every
 * other module uses upstream.h.
 *
 * A pool holds one struct upstream per configured upstream, by pointer
 * (p->ups[index]), so that a reconfigure can keep one at a new index while
 * its connections and requests keep pointing at it. Each has at
 * most one active connection (struct uconn), which takes new queries, and
 * a list of retiring ones that have outlived max_conn_lifetime_ms and only
 * finish what they have in flight. A request (struct upstream_req) owns a
 * copy of the query already framed with its 2-byte length, so it is written
 * as is and can be re-sent on another connection after patching in a new
 * ID.
 *
 * Lists are utlist's doubly linked lists (head pointer, NULL when empty),
 * one prev/next pair per list an element can be on. utlist cannot remove
 * an element that is on no list, so membership is always known from the
 * element itself: a request's secondary list from its state, its written
 * list from on_written, a connection's retiring list from retiring (until
 * it is closed) and its probing list from probe_due, an upstream's removed
 * list from removed.
 *
 * The functions below are upstream.c's, for upselect.c; upselect.h has
 * the other direction. They keep the names they had as file-local helpers
 * of one upstream.c, and have external linkage only because the pool
 * spans two files.
 */
#ifndef DOTPROXY_UPSTREAM_INT_H
#define DOTPROXY_UPSTREAM_INT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "upstream.h"

#define N_IDS 65536
#define TOMB_WORDS (N_IDS / 64)
#define RND_N 256

enum req_state {
	REQ_IDLE = 0,   /* on no secondary list, or on a local one while
	                 * being moved (nothing else touches it then) */
	REQ_QUEUED,
	REQ_INFLIGHT,
	REQ_FAILING,
	REQ_HELD,       /* on p->held: waits for the next probe slot */
};

struct upstream_req {
	struct upstream_pool *pool;
	struct upstream_req *dprev, *dnext; /* pool's deadline list */
	/* The secondary list its state names: wait, in-flight, failed or
	 * held. */
	struct upstream_req *cprev, *cnext;
	struct upstream_req *wprev, *wnext; /* pool's written list */
	int on_written;             /* on it (INFLIGHT only) */
	enum req_state state;
	struct uconn *conn;         /* QUEUED, INFLIGHT */
	uint16_t id;                /* INFLIGHT */
	int fail_status;            /* FAILING */
	uint64_t fail_seq;          /* FAILING: p->fail_seq when failed */
	uint32_t tried;             /* bit i: failed on upstream i */
	int resent;
	uint64_t deadline;
	uint64_t written_at;        /* INFLIGHT: loop time of the write */
	struct dnsmsg_question q;
	upstream_cb cb;
	void *arg;
	size_t frame_len;           /* 2 + message length */
	uint8_t frame[];            /* length prefix, then the query */
};

enum uconn_state {
	UC_CONNECTING,
	UC_READY,
	UC_CLOSED,
};

struct uconn {
	struct upstream_pool *pool;
	struct upstream *up;
	struct tls_conn *tls;       /* NULL once gone (closed by us or tls.c) */
	enum uconn_state state;
	int retiring;               /* on up->retiring: no new queries */
	int have_session;           /* its session data is saved */
	struct uconn *uprev, *unext; /* up->retiring (retiring, not closed) */
	uv_timer_t idle;
	uint64_t idle_ms;           /* conf's, or less by RFC 7828 keepalive */
	uint64_t last_active;
	uint64_t established;       /* loop time the handshake finished */
	uint64_t last_good;         /* loop time of the last answer that
	                             * matched (a query's or the probe's) */
	/* Liveness probe: a query of our own, in slot probe_id, while
	 * probe_due != 0 (then on p->probing). */
	struct uconn *prprev, *prnext;
	uint16_t probe_id;
	uint64_t probe_due;
	uint64_t probe_since;       /* write time of what raised the doubt */
	unsigned junk;              /* frames that matched nothing, in a row */
	unsigned unanswered;        /* queries timed out or moved, in a row */
	uint64_t last_answer;       /* loop time of the last query answered */
	/* Tombstones by age: bit id set in tomb[cur] if made since
	 * tomb_epoch, in tomb[!cur] if made in the epoch before. */
	size_t n_tombs;
	unsigned tomb_cur;
	uint64_t tomb_epoch;
	uint64_t tomb[2][TOMB_WORDS];
	struct upstream_req *wait;      /* REQ_QUEUED, in order */
	struct upstream_req *inflight;  /* REQ_INFLIGHT */
	size_t n_wait;
	size_t n_live;              /* requests in flight (no tombstones) */
	size_t n_slots;             /* used slots, tombstones included */
	uint64_t n_written;
	uint64_t n_answers;
	size_t rlen;                /* bytes in rbuf */
	uint8_t rbuf[2 + DNS_MAX_MSG];
	struct upstream_req *slot[N_IDS];
};

struct upstream {
	const struct conf_upstream *cu; /* NULL once removed */
	unsigned index;             /* in p->ups; meaningless once removed */
	int removed;                /* on p->removed: draining, then freed */
	struct upstream *pprev, *pnext; /* p->removed (once removed) */
	unsigned n_conns;           /* uconns not yet freed (close_cb) */
	char label[64 + 256 + 8];   /* "addr@port (name)" for the log */
	char name[64 + 256 + 8];    /* "addr@port#name", as the config and
	                             * the metrics say it */
	unsigned fail_count;
	int down;                   /* "down" logged, "up again" not yet */
	uint64_t retry_at;
	uint64_t health_ms;         /* loop time of the last failure or
	                             * first answer on a connection */
	struct uconn *conn;         /* active: connecting or ready */
	struct uconn *retiring;     /* ready, past their lifetime, draining */
	int has_rtt;                /* srtt8 counts for selection */
	uint32_t srtt8;             /* smoothed answer RTT in 1/8 ms */
	int verified;               /* last handshake: 1 ok, 0 failed, -1 none */
	int64_t cert_expiry;
	char last_error[160];
	uint64_t n_queries, n_answers, n_timeouts;
	uint8_t *session;           /* for resumption, or NULL */
	size_t session_len;
	/* Loop time of the last handshake that verified a certificate the
	 * server sent (not resumed); valid when has_full_verify. A session
	 * is only offered within max_conn_lifetime_ms of it. */
	int has_full_verify;
	uint64_t full_verify_at;
	/* For upstream_get_status (metrics); see upstream.h. */
	uint64_t n_handshakes, n_resumed;
	uint64_t err_connect, err_handshake, err_verify, err_pin;
	uint64_t err_timeout, err_reset, err_bad_answer;
	int64_t last_verify_ok, last_handshake;   /* wall clock, seconds */
	char tls_version[16];
	int resumed;
	int64_t chain_min_not_after;
	char pin_sha256[48];
	int pin_state;
	char last_verify_error[160];
	uint64_t rtt_bucket[UPSTREAM_RTT_BUCKETS];
	uint64_t rtt_count;
	uint64_t rtt_sum_ms;
};

struct upstream_pool {
	uv_loop_t *loop;
	const struct conf *conf;
	struct tls_ctx *tls;
	struct metrics *m;
	/* Pointers, so that an upstream kept by a reconfigure keeps its
	 * address (connections and requests point at it) at a new index. */
	struct upstream *ups[CONF_MAX_UPSTREAM];
	size_t n_ups;
	struct upstream *removed;   /* removed upstreams still draining */
	struct upstream_req *reqs;  /* deadline order */
	struct upstream_req *failed; /* REQ_FAILING, in fail_seq order */
	uint64_t fail_seq;          /* failures so far */
	struct upstream_req *written; /* write order, for the answer timeout */
	struct upstream_req *held;  /* REQ_HELD: waiting for probe_at */
	uint64_t probe_at;          /* loop time the next probe may start */
	uv_timer_t deadline_timer;
	uv_timer_t fail_timer;
	uv_timer_t answer_timer;
	uv_timer_t probe_timer;     /* runs at probe_at while held is not
	                             * empty */
	uv_timer_t alive_timer;     /* head of probing */
	struct uconn *probing;      /* connections with a probe out, by due */
	struct dnsmsg_question probe_q;
	uint8_t probe_frame[2 + DNS_PAD_BLOCK];
	size_t probe_len;
	unsigned n_handles;         /* open uv handles; freed at 0 when closing */
	int closing;
	unsigned rr;                /* round-robin starting point */
	uint16_t rnd[RND_N];
	size_t rnd_pos;
};

/* A random 16- or 32-bit number from the pool's buffer of gnutls_rnd()
 * output (query IDs, selection draws, back-off jitter). Never fails: no
 * randomness is fatal. */
uint16_t pool_rnd16(struct upstream_pool *p);
uint32_t pool_rnd32(struct upstream_pool *p);

/* Give r (on no secondary list) to a usable upstream chosen by
 * upstream_select, opening a connection if needed; when none is left and
 * force is not NULL, to force regardless of its back-off (a probe).
 * Returns 0 with r queued or written, or -1 when there is none (r is
 * untouched; the caller fails it). Calls no user callback. */
int req_dispatch(struct upstream_pool *p, struct upstream_req *r,
    uint64_t now, struct upstream *force);

/* Take r off its list and queue its callback with status for the next
 * pool_flush_failed. Calls no user callback. */
void req_fail(struct upstream_req *r, int status);

/* Call the callbacks of the requests failed so far (not of those the
 * callbacks fail in turn). Only from a libuv or TLS callback, never from
 * upstream_query; a callback may re-enter or close the pool, so the
 * caller re-checks p->closing and its connection's state afterwards. */
void pool_flush_failed(struct upstream_pool *p);

#endif
