/* metrics.c: render the counters (to the log for now; Prometheus text later). */
#include <stdio.h>

#include "log.h"
#include "metrics.h"

#define ADD(name)                                                         \
	do {                                                              \
		if (m->name != 0 && off < sizeof(buf))                    \
			off += snprintf(buf + off, sizeof(buf) - off,     \
			    " " #name "=%llu", (unsigned long long)m->name); \
	} while (0)

void
metrics_log(const struct metrics *m)
{
	char buf[2048];
	size_t off = 0;
	unsigned i;

	buf[0] = '\0';
	ADD(queries_udp);
	ADD(queries_tcp);
	for (i = 0; i < 16; i++)
		if (m->answers[i] != 0 && off < sizeof(buf))
			off += snprintf(buf + off, sizeof(buf) - off,
			    " answers_rcode%u=%llu", i,
			    (unsigned long long)m->answers[i]);
	ADD(answers_truncated);
	ADD(drops_malformed);
	ADD(drops_client_gone);
	ADD(drops_send_failed);
	ADD(drops_overload);
	ADD(tcp_accepted);
	ADD(tcp_idle_closed);
	ADD(tcp_limit_closed);
	ADD(cache_hits);
	ADD(cache_misses);
	ADD(cache_inserts);
	ADD(cache_uncacheable);
	ADD(cache_stale_served);
	ADD(cache_prefetches);
	ADD(cache_servfail_cached);
	ADD(queries_coalesced);
	ADD(local_answers);
	ADD(upstream_queries);
	ADD(upstream_answers);
	ADD(upstream_resent);
	ADD(upstream_timeouts);
	ADD(upstream_failures);
	ADD(upstream_mismatch);
	ADD(upstream_malformed);
	ADD(tls_connects);
	ADD(tls_handshakes);
	ADD(tls_handshake_failures);
	ADD(tls_verify_failures);
	ADD(tls_closed);
	ADD(upstream_moved);
	ADD(upstream_half_open);
	log_info("stats:%s", off ? buf : " (all zero)");
}
