/* ratelimit.h: a token bucket per client address, in a table of fixed size.
 *
 * A client is an IPv4 address (/32) or an IPv6 /64 (one host's usual
 * share), taken from the 16-byte form of acl_addr16 (IPv4 as
 * ::ffff:a.b.c.d). Each has a bucket of qps tokens that refills at qps
 * tokens a second; a query takes one, and a query that finds the bucket
 * empty is over the limit (the caller drops it and counts it).
 *
 * The table never grows: RATELIMIT_ENTRIES buckets (32 bytes each, 2 MiB),
 * 4-way set-associative under a hash keyed with a random seed, so spoofed
 * addresses cannot aim at one set. A client not in its set takes the slot
 * of the least recently seen of the four; an evicted client comes back
 * with a full bucket, so a flood of other addresses can only make the
 * limit more lenient for a client, never refuse a well-behaved one.
 *
 * Time is the caller's (loop time in milliseconds): nothing here reads a
 * clock, which is what lets the unit test use literal times.
 */
#ifndef DOTPROXY_RATELIMIT_H
#define DOTPROXY_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

#define RATELIMIT_ENTRIES 65536

struct ratelimit;

/* A table of n buckets (rounded up to a multiple of 4; at least 4), all
 * empty. Returns it, or NULL out of memory. Free with ratelimit_free. */
struct ratelimit *ratelimit_new(size_t n);
void ratelimit_free(struct ratelimit *rl);

/* Take a token for the client addr at now_ms with a limit of qps queries
 * a second (burst qps; qps > 0). Returns 1 when the query is within the
 * limit, 0 when it is over. A clock that goes back counts as no time
 * passed. */
int ratelimit_allow(struct ratelimit *rl, const unsigned char addr[16],
    unsigned qps, uint64_t now_ms);

#endif
