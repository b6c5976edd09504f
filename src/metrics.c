/* metrics.c: counters of one loop, summed and rendered (log line,
 * Prometheus text).
 *
 * struct metrics holds nothing but uint64_t counters (arrays and
 * histograms of them included), which is what lets metrics_add() sum two
 * of them as flat arrays: a new field needs no new line there.
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "metrics.h"

_Static_assert(sizeof(struct metrics) % sizeof(uint64_t) == 0,
    "struct metrics holds uint64_t counters only");

static const struct {
	uint16_t qtype;
	const char *name;
} qtypes[METRICS_N_TYPES - 1] = {
	{ 1, "A" }, { 2, "NS" }, { 5, "CNAME" }, { 6, "SOA" }, { 12, "PTR" },
	{ 15, "MX" }, { 16, "TXT" }, { 28, "AAAA" }, { 33, "SRV" },
	{ 35, "NAPTR" }, { 43, "DS" }, { 46, "RRSIG" }, { 47, "NSEC" },
	{ 48, "DNSKEY" }, { 64, "SVCB" }, { 65, "HTTPS" }, { 255, "ANY" },
};

static const char *const rcode_names[16] = {
	"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED",
	"YXDOMAIN", "YXRRSET", "NXRRSET", "NOTAUTH", "NOTZONE", "DSOTYPENI",
	"RCODE12", "RCODE13", "RCODE14", "RCODE15",
};

static const char *const source_names[METRICS_N_SRC] = {
	"cache", "stale", "upstream", "local", "error", "shared",
};

unsigned
metrics_type_index(uint16_t qtype)
{
	/* The hot path: a switch the compiler turns into a table. */
	switch (qtype) {
	case 1: return 0;
	case 2: return 1;
	case 5: return 2;
	case 6: return 3;
	case 12: return 4;
	case 15: return 5;
	case 16: return 6;
	case 28: return 7;
	case 33: return 8;
	case 35: return 9;
	case 43: return 10;
	case 46: return 11;
	case 47: return 12;
	case 48: return 13;
	case 64: return 14;
	case 65: return 15;
	case 255: return 16;
	default: return METRICS_N_TYPES - 1;
	}
}

const char *
metrics_type_name(unsigned index)
{
	return index < METRICS_N_TYPES - 1 ? qtypes[index].name : "other";
}

const char *
metrics_source_name(enum metrics_source s)
{
	return (unsigned)s < METRICS_N_SRC ? source_names[s] : "error";
}

const char *
metrics_rcode_name(unsigned rcode)
{
	return rcode_names[rcode & 15];
}

void
metrics_hist_add(struct metrics_hist *h, uint64_t ns)
{
	uint64_t bound = METRICS_BUCKET0_NS;
	unsigned i = 0;

	while (i < METRICS_N_BUCKETS && ns > bound) {
		bound <<= 1;
		i++;
	}
	h->bucket[i]++;
	h->count++;
	h->sum_ns += ns;
}

void
metrics_add(struct metrics *dst, const struct metrics *src)
{
	uint64_t *d = (uint64_t *)(void *)dst;
	const uint64_t *s = (const uint64_t *)(const void *)src;
	size_t i;

	for (i = 0; i < sizeof(*dst) / sizeof(uint64_t); i++)
		d[i] += s[i];
}

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
	unsigned i, s;
	uint64_t n;

	buf[0] = '\0';
	ADD(queries_udp);
	ADD(queries_tcp);
	for (i = 0; i < 16; i++) {
		for (n = 0, s = 0; s < METRICS_N_SRC; s++)
			n += m->responses[i][s];
		if (n != 0 && off < sizeof(buf))
			off += snprintf(buf + off, sizeof(buf) - off,
			    " answers_rcode%u=%llu", i, (unsigned long long)n);
	}
	ADD(answers_truncated);
	ADD(drops_malformed);
	ADD(drops_client_gone);
	ADD(drops_send_failed);
	ADD(drops_overload);
	ADD(tcp_accepted);
	ADD(tcp_idle_closed);
	ADD(tcp_limit_closed);
	ADD(drops_send_queue_full);
	ADD(tcp_slow_closed);
	ADD(tcp_accept_failed);
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
	ADD(drops_acl_deny);
	ADD(drops_ratelimit);
	ADD(pending_full);
	ADD(upstream_probes);
	ADD(upstream_broken);
	ADD(upstream_retired);
	ADD(upstream_ids_released);
	ADD(shc_answers);
	ADD(shc_invalid);
	log_info("stats:%s", off ? buf : " (all zero)");
}

/* ---- Prometheus text ---- */

void
prom_family(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void
prom_u64(FILE *f, const char *name, const char *labels, uint64_t v)
{
	if (labels != NULL && labels[0] != '\0')
		fprintf(f, "%s{%s} %llu\n", name, labels,
		    (unsigned long long)v);
	else
		fprintf(f, "%s %llu\n", name, (unsigned long long)v);
}

void
prom_double(FILE *f, const char *name, const char *labels, double v)
{
	if (labels != NULL && labels[0] != '\0')
		fprintf(f, "%s{%s} %.17g\n", name, labels, v);
	else
		fprintf(f, "%s %.17g\n", name, v);
}

void
prom_hist(FILE *f, const char *name, const char *labels,
    const struct metrics_hist *h)
{
	const char *sep = labels != NULL && labels[0] != '\0' ? "," : "";
	uint64_t cum = 0, bound = METRICS_BUCKET0_NS;
	unsigned i;

	if (labels == NULL)
		labels = "";
	for (i = 0; i < METRICS_N_BUCKETS; i++, bound <<= 1) {
		cum += h->bucket[i];
		fprintf(f, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels,
		    sep, (double)bound / 1e9, (unsigned long long)cum);
	}
	cum += h->bucket[METRICS_N_BUCKETS];
	fprintf(f, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
	    (unsigned long long)cum);
	if (labels[0] != '\0') {
		fprintf(f, "%s_sum{%s} %.9f\n", name, labels,
		    (double)h->sum_ns / 1e9);
		fprintf(f, "%s_count{%s} %llu\n", name, labels,
		    (unsigned long long)h->count);
	} else {
		fprintf(f, "%s_sum %.9f\n", name, (double)h->sum_ns / 1e9);
		fprintf(f, "%s_count %llu\n", name,
		    (unsigned long long)h->count);
	}
}

void
prom_escape(const char *s, char *buf, size_t cap)
{
	size_t o = 0;

	for (; *s != '\0' && o + 3 < cap; s++) {
		if (*s == '\\' || *s == '"') {
			buf[o++] = '\\';
			buf[o++] = *s;
		} else if (*s == '\n') {
			buf[o++] = '\\';
			buf[o++] = 'n';
		} else {
			buf[o++] = *s;
		}
	}
	if (cap > 0)
		buf[o < cap ? o : cap - 1] = '\0';
}

static void
counter(FILE *f, const char *name, const char *help, uint64_t v)
{
	prom_family(f, name, "counter", help);
	prom_u64(f, name, NULL, v);
}

void
metrics_write_prom(const struct metrics *m, FILE *f)
{
	static const char *const proto[METRICS_N_PROTO] = { "udp", "tcp" };
	char labels[128];
	unsigned p, t, r, s;

	prom_family(f, "dotproxy_dns_requests_total", "counter",
	    "DNS messages received, by transport and query type.");
	for (p = 0; p < METRICS_N_PROTO; p++)
		for (t = 0; t < METRICS_N_TYPES; t++) {
			snprintf(labels, sizeof(labels),
			    "proto=\"%s\",type=\"%s\"", proto[p],
			    metrics_type_name(t));
			prom_u64(f, "dotproxy_dns_requests_total", labels,
			    m->requests[p][t]);
		}
	prom_family(f, "dotproxy_dns_responses_total", "counter",
	    "DNS answers sent, by rcode and where the answer came from.");
	for (r = 0; r < 16; r++)
		for (s = 0; s < METRICS_N_SRC; s++) {
			/* Every rcode and source ever sent, and the common
			 * ones always, so that rate() works from the start. */
			if (m->responses[r][s] == 0 && r > 5)
				continue;
			snprintf(labels, sizeof(labels),
			    "rcode=\"%s\",source=\"%s\"", metrics_rcode_name(r),
			    metrics_source_name((enum metrics_source)s));
			prom_u64(f, "dotproxy_dns_responses_total", labels,
			    m->responses[r][s]);
		}
	prom_family(f, "dotproxy_dns_request_duration_seconds", "histogram",
	    "Time from receiving a query to sending its answer.");
	prom_hist(f, "dotproxy_dns_request_duration_seconds", NULL,
	    &m->duration);
	prom_family(f, "dotproxy_dns_dropped_requests_total", "counter",
	    "Queries and answers dropped without an answer, by reason.");
	prom_u64(f, "dotproxy_dns_dropped_requests_total",
	    "reason=\"malformed\"", m->drops_malformed);
	prom_u64(f, "dotproxy_dns_dropped_requests_total",
	    "reason=\"overload\"", m->drops_overload);
	prom_u64(f, "dotproxy_dns_dropped_requests_total",
	    "reason=\"client-gone\"", m->drops_client_gone);
	prom_u64(f, "dotproxy_dns_dropped_requests_total",
	    "reason=\"send-failed\"", m->drops_send_failed);
	prom_u64(f, "dotproxy_dns_dropped_requests_total",
	    "reason=\"send-queue-full\"", m->drops_send_queue_full);
	counter(f, "dotproxy_tcp_slow_reader_closed_total",
	    "Client TCP connections closed because their unread answers "
	    "passed a bound.", m->tcp_slow_closed);
	counter(f, "dotproxy_tcp_accept_failed_total",
	    "Client connections lost at accept: out of descriptors.",
	    m->tcp_accept_failed);
	prom_u64(f, "dotproxy_dns_dropped_requests_total",
	    "reason=\"acl-deny\"", m->drops_acl_deny);
	prom_u64(f, "dotproxy_dns_dropped_requests_total",
	    "reason=\"ratelimit\"", m->drops_ratelimit);
	counter(f, "dotproxy_dns_pending_full_total",
	    "Misses answered SERVFAIL at once because max-pending or "
	    "max-pending-bytes was reached.", m->pending_full);
	counter(f, "dotproxy_cache_hits_total",
	    "Queries answered from a fresh cache entry.", m->cache_hits);
	counter(f, "dotproxy_cache_misses_total",
	    "Queries with no fresh cache entry.", m->cache_misses);
	counter(f, "dotproxy_cache_served_stale_total",
	    "Expired answers served (RFC 8767).", m->cache_stale_served);
	counter(f, "dotproxy_cache_prefetch_total",
	    "Refreshes started by a hit near expiry.", m->cache_prefetches);
	counter(f, "dotproxy_cache_coalesced_total",
	    "Misses that joined an identical one already in flight.",
	    m->queries_coalesced);
}
