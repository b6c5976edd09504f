/* metrics.h: the counters of one loop, and their Prometheus text.
 *
 * main.c owns one struct metrics per loop and passes a pointer to each
 * module; modules only increment, with plain stores: one loop thread writes
 * them, so the query path takes no lock. When workers arrive each loop gets
 * its own struct and a scrape sums them with metrics_add(). Gauges and the
 * figures other modules keep themselves (cache size, upstream health) are
 * not here: the exporter asks their owners at scrape time.
 *
 * The Prometheus writers (prom_*) write text exposition format 0.0.4 to a
 * stdio stream, so the exporter can render into memory (open_memstream)
 * without knowing HTTP. Names and labels mirror CoreDNS's so dashboards
 * port; no label ever carries a query name or a client address.
 */
#ifndef DOTPROXY_METRICS_H
#define DOTPROXY_METRICS_H

#include <stdint.h>
#include <stdio.h>

/* Where an answer came from: the "source" label. */
enum metrics_source {
	METRICS_SRC_CACHE = 0,
	METRICS_SRC_STALE,
	METRICS_SRC_UPSTREAM,
	METRICS_SRC_LOCAL,
	METRICS_SRC_ERROR,      /* made here: FORMERR, NOTIMP, SERVFAIL on failure */
	METRICS_SRC_SHARED,     /* the shared cache (Redis) on a local miss */
	METRICS_N_SRC,
};

enum metrics_proto {
	METRICS_UDP = 0,
	METRICS_TCP,
	METRICS_N_PROTO,
};

/* Histogram buckets: upper bounds 0.25 ms * 2^i, i = 0..15 (0.25 ms to
 * 8.192 s), then +Inf. */
#define METRICS_N_BUCKETS 16
#define METRICS_BUCKET0_NS 250000ULL

/* Per-bucket counts (not cumulative: the writer accumulates), the count of
 * every sample and their sum. */
struct metrics_hist {
	uint64_t bucket[METRICS_N_BUCKETS + 1]; /* last: above 8.192 s */
	uint64_t count;
	uint64_t sum_ns;
};

/* The shared cache's requests (shcache.h): by op (get, set, del) and
 * result (hit, miss, error, timeout, skipped, ok). */
#define METRICS_SHC_OPS 3
#define METRICS_SHC_RESULTS 6

/* The query types with a label of their own; the rest count as "other". */
#define METRICS_N_TYPES 18

struct metrics {
	/* client side */
	uint64_t queries_udp;       /* well-formed or not, every datagram read */
	uint64_t queries_tcp;       /* every framed message read over TCP */
	uint64_t requests[METRICS_N_PROTO][METRICS_N_TYPES]; /* by qtype index */
	uint64_t responses[16][METRICS_N_SRC]; /* answers sent, by rcode, source */
	struct metrics_hist duration; /* receipt to answer, every answer */
	uint64_t answers_truncated; /* UDP answers sent with TC because too big */
	uint64_t drops_malformed;   /* unanswerable input: too short, QR set */
	uint64_t drops_client_gone; /* answer ready but the TCP client left */
	uint64_t drops_send_failed; /* the kernel refused the answer */
	uint64_t drops_overload;    /* refused: no memory or too many queries */
	uint64_t tcp_accepted;
	uint64_t tcp_idle_closed;
	uint64_t tcp_limit_closed;  /* oldest idle closed to admit a new one */
	uint64_t drops_send_queue_full; /* UDP answer dropped: send queue full */
	uint64_t tcp_slow_closed;   /* closed: its unread answers took too much */
	uint64_t tcp_accept_failed; /* accept failed: out of descriptors */

	/* cache */
	uint64_t cache_hits;
	uint64_t cache_misses;
	uint64_t cache_inserts;
	uint64_t cache_uncacheable; /* SERVFAIL, TC, negative without SOA */
	uint64_t cache_stale_served; /* RFC 8767 stale answers sent */
	uint64_t cache_prefetches;   /* refreshes started by a hit near expiry */
	uint64_t cache_servfail_cached; /* SERVFAIL answers cached briefly */
	uint64_t queries_coalesced;  /* misses that joined one already in flight */
	uint64_t local_answers;      /* RFC 6761/6303 names answered locally */

	/* upstream */
	uint64_t upstream_queries;     /* queries written to an upstream */
	uint64_t upstream_answers;     /* answers matched to a pending query */
	uint64_t upstream_resent;      /* resent once after a connection loss */
	uint64_t upstream_timeouts;    /* queries that passed their deadline */
	uint64_t upstream_failures;    /* queries answered SERVFAIL for an upstream failure */
	uint64_t upstream_mismatch;    /* answers dropped: unknown ID or wrong question */
	uint64_t upstream_malformed;   /* answers dropped: malformed */
	uint64_t tls_connects;         /* TCP connections started to upstreams */
	uint64_t tls_handshakes;       /* handshakes completed and verified */
	uint64_t tls_handshake_failures; /* handshake errors, timeouts, refused */
	uint64_t tls_verify_failures;  /* certificates that did not verify */
	uint64_t tls_closed;           /* upstream connections closed for any reason */
	uint64_t upstream_moved;       /* queries moved to another upstream after answer-timeout */
	uint64_t upstream_half_open;   /* connections closed as presumed half-open */
	uint64_t upstream_probes;      /* liveness probes sent on quiet connections */
	uint64_t upstream_broken;      /* connections closed: answers matching nothing */
	uint64_t upstream_retired;     /* connections replaced: queries unanswered */
	uint64_t upstream_ids_released; /* IDs of unanswered queries freed after the grace */

	/* defences */
	uint64_t drops_acl_deny;     /* dropped: access-control deny */
	uint64_t drops_ratelimit;    /* dropped: over ratelimit-per-client */
	uint64_t pending_full;       /* misses answered SERVFAIL at once:
	                              * max-pending(-bytes) reached */

	/* shared cache (shcache.c) */
	uint64_t shc_requests[METRICS_SHC_OPS][METRICS_SHC_RESULTS];
	struct metrics_hist shc_duration[METRICS_SHC_OPS]; /* sent to reply */
	uint64_t shc_invalid;        /* values under our keys not served:
	                              * not ours, expired, not an answer */
	uint64_t shc_answers;        /* misses answered from the shared cache */
};

/* Index into requests[][] for a query type (the last index: "other"), and
 * the label of an index. */
unsigned metrics_type_index(uint16_t qtype);
const char *metrics_type_name(unsigned index);

/* Label of a source, and of an rcode ("NOERROR", ..., "RCODE12"). */
const char *metrics_source_name(enum metrics_source s);
const char *metrics_rcode_name(unsigned rcode);

/* Count one sample of ns nanoseconds. */
void metrics_hist_add(struct metrics_hist *h, uint64_t ns);

/* dst += src, counter by counter (for summing workers' counters). */
void metrics_add(struct metrics *dst, const struct metrics *src);

/* Write every non-zero counter as one log line at info level. */
void metrics_log(const struct metrics *m);

/* ---- Prometheus text format 0.0.4 ---- */

/* "# HELP name help" and "# TYPE name type" for a family. */
void prom_family(FILE *f, const char *name, const char *type,
    const char *help);
/* One sample: name{labels} value. labels is the inside of the braces
 * ("a=\"x\",b=\"y\"") or NULL/"" for none. */
void prom_u64(FILE *f, const char *name, const char *labels, uint64_t v);
void prom_double(FILE *f, const char *name, const char *labels, double v);
/* The _bucket (cumulative, with le), _sum (seconds) and _count lines of a
 * histogram; the family line is the caller's. */
void prom_hist(FILE *f, const char *name, const char *labels,
    const struct metrics_hist *h);
/* Copy s into buf as a label value (backslash, quote and newline escaped,
 * cut to fit). */
void prom_escape(const char *s, char *buf, size_t cap);

/* The families this struct holds: dotproxy_dns_requests_total,
 * dotproxy_dns_responses_total, dotproxy_dns_request_duration_seconds,
 * dotproxy_dns_dropped_requests_total, and the cache counters
 * (hits, misses, served_stale, prefetch, coalesced). */
void metrics_write_prom(const struct metrics *m, FILE *f);

#endif
