/* benchans.h: the answer the cache benchmarks store, built the way an
 * upstream sends it (tests/bench/cachebench.c, tests/bench/rssentry.c).
 *
 * For name i: the question "nameNNNNNNN.bench." type A class IN, the key
 * cache_key_make makes of a client's query for it (RD, no EDNS), and the
 * answer: QR RD RA, NOERROR, the question echoed, one A record whose owner
 * is a compression pointer to the question, TTL 3600, no OPT. 51 bytes.
 * The key and the answer info come from the real parsers (dnsmsg), so they
 * are what query.c would hand the cache. Header-only: static inline.
 */
#ifndef DOTPROXY_BENCH_BENCHANS_H
#define DOTPROXY_BENCH_BENCHANS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "dnsmsg.h"
#include "wire.h"

#define BENCH_ANS_MAX 64

/* Fill key, ans (BENCH_ANS_MAX bytes), *len and info for name i; exits on
 * a parse failure, which would make every figure meaningless. */
static inline void
bench_answer(unsigned i, struct cache_key *key, uint8_t *ans, size_t *len,
    struct dnsmsg_answer_info *info)
{
	struct dnsmsg_query q;
	uint8_t msg[BENCH_ANS_MAX];
	char name[32];
	size_t n, qend;

	snprintf(name, sizeof(name), "name%07u.bench", i % 10000000);
	memset(msg, 0, DNS_HDR_LEN);
	put16(msg, (uint16_t)i);
	put16(msg + 2, 0x0100);              /* RD */
	put16(msg + 4, 1);
	n = DNS_HDR_LEN + put_name(msg + DNS_HDR_LEN, name);
	put16(msg + n, DNS_TYPE_A);
	put16(msg + n + 2, 1);
	qend = n + 4;
	if (dnsmsg_parse_query(msg, qend, &q) != 0) {
		fprintf(stderr, "bench: query %u does not parse\n", i);
		exit(1);
	}
	cache_key_make(key, &q);

	memcpy(ans, msg, qend);
	put16(ans + 2, 0x8180);              /* QR RD RA, NOERROR */
	put16(ans + 6, 1);                   /* ANCOUNT */
	n = qend;
	put16(ans + n, 0xc000 | DNS_HDR_LEN);  /* the question's name */
	put16(ans + n + 2, DNS_TYPE_A);
	put16(ans + n + 4, 1);
	put16(ans + n + 6, 0);               /* TTL 3600 */
	put16(ans + n + 8, 3600);
	put16(ans + n + 10, 4);
	ans[n + 12] = 10;
	ans[n + 13] = (uint8_t)(i >> 16);
	ans[n + 14] = (uint8_t)(i >> 8);
	ans[n + 15] = (uint8_t)i;
	*len = n + 16;
	if (dnsmsg_parse_answer(ans, *len, &q.q, info) != 0 ||
	    !info->cacheable || info->ttl != 3600 || info->n_ttl != 1) {
		fprintf(stderr, "bench: answer %u does not parse\n", i);
		exit(1);
	}
}

#endif
