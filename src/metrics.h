/* metrics.h: every counter dotproxy keeps, in one struct.
 *
 * main.c owns the one instance and passes a pointer to each module; modules
 * only increment. Counters are plain uint64_t: one loop thread writes them.
 * When workers arrive, each gets its own struct and the exporter sums them.
 * The later HTTP endpoint renders this struct; metrics_log() writes it to
 * the log (SIGUSR1 and at exit).
 */
#ifndef DOTPROXY_METRICS_H
#define DOTPROXY_METRICS_H

#include <stdint.h>

struct metrics {
	/* client side */
	uint64_t queries_udp;       /* well-formed or not, every datagram read */
	uint64_t queries_tcp;       /* every framed message read over TCP */
	uint64_t answers[16];       /* answers sent, by rcode */
	uint64_t answers_truncated; /* UDP answers sent with TC because too big */
	uint64_t drops_malformed;   /* unanswerable input: too short, QR set */
	uint64_t drops_client_gone; /* answer ready but the TCP client left */
	uint64_t drops_send_failed; /* the kernel refused the answer */
	uint64_t drops_overload;    /* refused: no memory or too many queries */
	uint64_t tcp_accepted;
	uint64_t tcp_idle_closed;
	uint64_t tcp_limit_closed;  /* oldest idle closed to admit a new one */

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
};

/* Write every non-zero counter as one log line at info level. */
void metrics_log(const struct metrics *m);

#endif
