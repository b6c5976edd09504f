/* admin.c: the HTTP endpoints' handlers: /metrics, /health, /ready,
 * /status, and on the control socket /cache/flush, /cache/dump, /reload.
 *
 * Bodies are rendered with stdio into memory (open_memstream), so the
 * Prometheus writers in metrics.c and the JSON here share one way of
 * writing and know nothing of HTTP. Everything is read from the modules'
 * own state at request time: a scrape costs the query path nothing.
 *
 * Process figures come from /proc/self (Linux): stat for CPU time and
 * start time, statm for resident memory, fd/ for open descriptors.
 */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "admin.h"
#include "log.h"
#include "mem.h"
#include "shcache.h"

#define TEXT_PLAIN "text/plain; charset=utf-8"
#define PROM_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define JSON_TYPE "application/json"

/* ---- bodies ---- */

/* A memory stream for a body; NULL when out of memory. */
struct body {
	FILE *f;
	char *buf;
	size_t len;
};

static int
body_open(struct body *b)
{
	b->buf = NULL;
	b->len = 0;
	b->f = open_memstream(&b->buf, &b->len);
	return b->f != NULL ? 0 : -ENOMEM;
}

/* Hand the body to the response (http.c frees it), or make it a 500. */
static void
body_send(struct body *b, struct http_response *r, int status,
    const char *type)
{
	int bad = b->f == NULL || ferror(b->f);

	if (b->f != NULL && fclose(b->f) != 0)
		bad = 1;
	if (bad) {
		free(b->buf);
		r->status = 500;
		r->content_type = TEXT_PLAIN;
		r->body = NULL;
		r->len = 0;
		return;
	}
	r->status = status;
	r->content_type = type;
	r->body = b->buf;
	r->len = b->len;
	r->cap = b->len;
}

static void
reply_text(struct http_response *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
reply_text(struct http_response *r, int status, const char *fmt, ...)
{
	struct body b;
	va_list ap;

	if (body_open(&b) == 0) {
		va_start(ap, fmt);
		vfprintf(b.f, fmt, ap);
		va_end(ap);
	}
	body_send(&b, r, status, TEXT_PLAIN);
}

/* A JSON string value, quoted and escaped (RFC 8259). */
static void
json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s != '\0'; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch < 0x20)
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}

/* Seconds since the epoch as RFC 3339 UTC, or null for 0. */
static void
json_time(FILE *f, int64_t t)
{
	struct tm tm;
	time_t tt = (time_t)t;
	char buf[32];

	if (t <= 0 || gmtime_r(&tt, &tm) == NULL) {
		fputs("null", f);
		return;
	}
	strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
	fprintf(f, "\"%s\"", buf);
}

/* ---- process figures ---- */

struct proc_info {
	double cpu_seconds;
	uint64_t rss_bytes;
	uint64_t open_fds;
	uint64_t max_fds;
	double start_time;
};

static void
proc_read(struct proc_info *pi)
{
	long tck = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
	unsigned long long utime = 0, stime = 0, start = 0, size, rss = 0;
	unsigned long long btime = 0;
	char buf[1024], *p;
	struct rlimit rl;
	struct dirent *de;
	FILE *f;
	DIR *d;
	size_t n;

	memset(pi, 0, sizeof(*pi));
	f = fopen("/proc/self/stat", "r");
	if (f != NULL) {
		n = fread(buf, 1, sizeof(buf) - 1, f);
		buf[n] = '\0';
		fclose(f);
		/* The name (field 2) may hold spaces: count from its ')'. */
		p = strrchr(buf, ')');
		if (p != NULL && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u "
		    "%*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d %*d %llu",
		    &utime, &stime, &start) == 3 && tck > 0)
			pi->cpu_seconds = (double)(utime + stime) / (double)tck;
	}
	f = fopen("/proc/self/statm", "r");
	if (f != NULL) {
		if (fscanf(f, "%llu %llu", &size, &rss) == 2 && page > 0)
			pi->rss_bytes = rss * (unsigned long long)page;
		fclose(f);
	}
	f = fopen("/proc/stat", "r");
	if (f != NULL) {
		while (fgets(buf, sizeof(buf), f) != NULL)
			if (sscanf(buf, "btime %llu", &btime) == 1)
				break;
		fclose(f);
	}
	if (btime != 0 && tck > 0)
		pi->start_time = (double)btime + (double)start / (double)tck;
	d = opendir("/proc/self/fd");
	if (d != NULL) {
		while ((de = readdir(d)) != NULL)
			if (de->d_name[0] != '.')
				pi->open_fds++;
		closedir(d);
		pi->open_fds--;   /* opendir's own */
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
		pi->max_fds = rl.rlim_cur;
}

/* ---- /metrics ---- */

static void
gauge(FILE *f, const char *name, const char *help, double v)
{
	prom_family(f, name, "gauge", help);
	prom_double(f, name, NULL, v);
}

static void
upstream_hist(const struct upstream_status *st, struct metrics_hist *h)
{
	uint64_t in = 0;
	unsigned i;

	memset(h, 0, sizeof(*h));
	for (i = 0; i < METRICS_N_BUCKETS; i++) {
		h->bucket[i] = st->rtt_bucket[i];
		in += st->rtt_bucket[i];
	}
	h->bucket[METRICS_N_BUCKETS] = st->rtt_count > in ?
	    st->rtt_count - in : 0;
	h->count = st->rtt_count;
	h->sum_ns = (uint64_t)(st->rtt_sum_s * 1e9);
}

/* One family over every upstream: fn writes the samples of one. */
static void
upstream_family(const struct workers_view *v, FILE *f, const char *name,
    const char *type, const char *help,
    void (*fn)(FILE *, const char *, const char *,
    const struct upstream_status *))
{
	char esc[400], label[420];
	size_t i;

	prom_family(f, name, type, help);
	for (i = 0; i < v->n_upstream; i++) {
		prom_escape(v->up[i].name, esc, sizeof(esc));
		snprintf(label, sizeof(label), "upstream=\"%s\"", esc);
		fn(f, name, label, &v->up[i]);
	}
}

static void
up_healthy(FILE *f, const char *name, const char *label,
    const struct upstream_status *st)
{
	prom_u64(f, name, label, st->healthy ? 1 : 0);
}

static void
up_duration(FILE *f, const char *name, const char *label,
    const struct upstream_status *st)
{
	struct metrics_hist h;

	upstream_hist(st, &h);
	prom_hist(f, name, label, &h);
}

static void
up_errors(FILE *f, const char *name, const char *label,
    const struct upstream_status *st)
{
	const struct {
		const char *reason;
		uint64_t v;
	} e[] = {
		{ "connect", st->err_connect }, { "handshake", st->err_handshake },
		{ "verify", st->err_verify }, { "pin", st->err_pin },
		{ "timeout", st->err_timeout }, { "reset", st->err_reset },
		{ "bad-answer", st->err_bad_answer },
	};
	char l[480];
	size_t i;

	for (i = 0; i < sizeof(e) / sizeof(e[0]); i++) {
		snprintf(l, sizeof(l), "%s,reason=\"%s\"", label, e[i].reason);
		prom_u64(f, name, l, e[i].v);
	}
}

static void
up_handshakes(FILE *f, const char *name, const char *label,
    const struct upstream_status *st)
{
	char l[480];

	snprintf(l, sizeof(l), "%s,resumed=\"yes\"", label);
	prom_u64(f, name, l, st->handshakes_resumed);
	snprintf(l, sizeof(l), "%s,resumed=\"no\"", label);
	prom_u64(f, name, l, st->handshakes - st->handshakes_resumed);
}

static void
up_not_after(FILE *f, const char *name, const char *label,
    const struct upstream_status *st)
{
	if (st->cert_expiry > 0)
		prom_u64(f, name, label, (uint64_t)st->cert_expiry);
}

static void
up_last_verify(FILE *f, const char *name, const char *label,
    const struct upstream_status *st)
{
	if (st->last_verify_ok > 0)
		prom_u64(f, name, label, (uint64_t)st->last_verify_ok);
}

static void
up_inflight(FILE *f, const char *name, const char *label,
    const struct upstream_status *st)
{
	prom_u64(f, name, label, st->inflight);
}

static void
up_connections(FILE *f, const char *name, const char *label,
    const struct upstream_status *st)
{
	prom_u64(f, name, label, st->connections);
}

static void
write_upstream_metrics(const struct workers_view *a, FILE *f)
{
	upstream_family(a, f, "dotproxy_upstream_healthy", "gauge",
	    "1 when the upstream is usable (not backing off).", up_healthy);
	upstream_family(a, f, "dotproxy_upstream_request_duration_seconds",
	    "histogram", "Time from writing a query upstream to its answer.",
	    up_duration);
	upstream_family(a, f, "dotproxy_upstream_errors_total", "counter",
	    "Upstream failures by reason.", up_errors);
	upstream_family(a, f, "dotproxy_upstream_tls_handshakes_total",
	    "counter", "Verified TLS handshakes, by session resumption.",
	    up_handshakes);
	upstream_family(a, f,
	    "dotproxy_upstream_tls_cert_not_after_timestamp_seconds", "gauge",
	    "notAfter of the upstream's certificate.", up_not_after);
	upstream_family(a, f,
	    "dotproxy_upstream_tls_last_verify_success_timestamp_seconds",
	    "gauge", "When the upstream's certificate last verified.",
	    up_last_verify);
	upstream_family(a, f, "dotproxy_upstream_inflight_queries", "gauge",
	    "Queries written to the upstream and not answered yet.",
	    up_inflight);
	upstream_family(a, f, "dotproxy_upstream_connections", "gauge",
	    "Verified TLS connections open (at most one per worker, plus "
	    "retiring ones).", up_connections);
}

/* The shared cache's families, when it is configured: requests by op and
 * result, their durations, and the state of the workers' clients (up
 * when every worker's is; the breaker open when any worker's is). */
static void
write_shared_metrics(const struct workers_view *v, FILE *f)
{
	const char *name = "dotproxy_shared_cache_requests_total";
	char label[64];
	unsigned op, r;

	if (v->shc_workers == 0)
		return;
	prom_family(f, name, "counter",
	    "Requests to the shared cache, by operation and result.");
	for (op = 0; op < METRICS_SHC_OPS; op++)
		for (r = 0; r < METRICS_SHC_RESULTS; r++) {
			snprintf(label, sizeof(label),
			    "op=\"%s\",result=\"%s\"",
			    shcache_op_name((enum shcache_op)op),
			    shcache_result_name((enum shcache_result)r));
			prom_u64(f, name, label, v->metrics.shc_requests[op][r]);
		}
	name = "dotproxy_shared_cache_request_duration_seconds";
	prom_family(f, name, "histogram",
	    "Time from sending a request to the shared cache to its reply.");
	for (op = 0; op < METRICS_SHC_OPS; op++) {
		snprintf(label, sizeof(label), "op=\"%s\"",
		    shcache_op_name((enum shcache_op)op));
		prom_hist(f, name, label, &v->metrics.shc_duration[op]);
	}
	gauge(f, "dotproxy_shared_cache_up",
	    "1 when every worker's connection to the shared cache is up.",
	    v->shc_up == v->shc_workers ? 1 : 0);
	gauge(f, "dotproxy_shared_cache_circuit_open",
	    "1 when a worker's circuit breaker stops asking the shared cache.",
	    v->shc_open != 0 ? 1 : 0);
	prom_family(f, "dotproxy_shared_cache_invalid_values_total", "counter",
	    "Values under our keys not served: not ours, expired, or not "
	    "an answer to the question.");
	prom_u64(f, "dotproxy_shared_cache_invalid_values_total", NULL,
	    v->metrics.shc_invalid);
	prom_family(f, "dotproxy_shared_cache_breaker_opens_total", "counter",
	    "Times a worker's circuit breaker opened.");
	prom_u64(f, "dotproxy_shared_cache_breaker_opens_total", NULL,
	    v->shc_breaker_opens);
}

void
admin_write_metrics(struct admin *a, FILE *f)
{
	struct workers_view *v = mem_alloc(sizeof(*v));
	struct cache_stats cs;
	struct proc_info pi;
	char label[64];
	unsigned i;

	if (v == NULL)
		return;
	workers_collect(a->workers, v);
	metrics_write_prom(&v->metrics, f);
	cache_get_stats(a->cache, &cs);
	prom_family(f, "dotproxy_cache_evictions_total", "counter",
	    "Entries removed to make room (least recently used first).");
	prom_u64(f, "dotproxy_cache_evictions_total", NULL, cs.evictions);
	prom_family(f, "dotproxy_cache_flushes_total", "counter",
	    "Cache flushes asked for on the control socket.");
	prom_u64(f, "dotproxy_cache_flushes_total", NULL, cs.flushes);
	gauge(f, "dotproxy_cache_entries", "Entries in the cache.",
	    (double)cs.entries);
	gauge(f, "dotproxy_cache_memory_bytes",
	    "Bytes the cache accounts for, entries' overhead included.",
	    (double)cs.bytes);
	gauge(f, "dotproxy_cache_capacity_bytes", "The cache's byte bound.",
	    (double)cs.max_bytes);
	write_upstream_metrics(v, f);
	write_shared_metrics(v, f);
	gauge(f, "dotproxy_workers", "Worker threads serving DNS.",
	    (double)workers_count(a->workers));
	prom_family(f, "dotproxy_worker_queries_total", "counter",
	    "Queries read by each worker (the kernel spreads clients over "
	    "them).");
	for (i = 0; i < v->n_workers; i++) {
		snprintf(label, sizeof(label), "worker=\"%u\"", i);
		prom_u64(f, "dotproxy_worker_queries_total", label,
		    v->worker_queries[i]);
	}

	prom_family(f, "dotproxy_build_info", "gauge",
	    "Always 1; the version is a label.");
	snprintf(label, sizeof(label), "version=\"%s\"", PACKAGE_VERSION);
	prom_u64(f, "dotproxy_build_info", label, 1);
	gauge(f, "dotproxy_ready", "1 when /ready says 200.",
	    a->phase == ADMIN_READY ? 1 : 0);
	gauge(f, "dotproxy_draining", "1 from SIGTERM until exit.",
	    a->phase == ADMIN_DRAINING ? 1 : 0);
	gauge(f, "dotproxy_config_last_reload_successful",
	    "0 when the last reload was refused.", a->last_reload_ok ? 1 : 0);
	prom_family(f, "dotproxy_config_reloads_total", "counter",
	    "Reloads of the configuration, by result.");
	prom_u64(f, "dotproxy_config_reloads_total", "result=\"ok\"",
	    a->reloads_ok);
	prom_u64(f, "dotproxy_config_reloads_total", "result=\"error\"",
	    a->reloads_failed);
	gauge(f, "dotproxy_tcp_connections", "Client TCP connections open.",
	    (double)v->tcp_connections);
	mem_free(v);

	proc_read(&pi);
	prom_family(f, "process_cpu_seconds_total", "counter",
	    "User and system CPU time spent, in seconds.");
	prom_double(f, "process_cpu_seconds_total", NULL, pi.cpu_seconds);
	gauge(f, "process_resident_memory_bytes", "Resident memory size.",
	    (double)pi.rss_bytes);
	gauge(f, "process_open_fds", "Open file descriptors.",
	    (double)pi.open_fds);
	gauge(f, "process_max_fds", "Limit of open file descriptors.",
	    (double)pi.max_fds);
	gauge(f, "process_start_time_seconds",
	    "Start time of the process since the epoch, in seconds.",
	    pi.start_time);
}

static void
get_metrics(void *arg, const struct http_request *req,
    struct http_response *resp)
{
	struct body b;

	(void)req;
	if (body_open(&b) == 0)
		admin_write_metrics(arg, b.f);
	body_send(&b, resp, 200, PROM_TYPE);
}

/* ---- /health, /ready ---- */

static void
get_health(void *arg, const struct http_request *req,
    struct http_response *resp)
{
	struct admin *a = arg;
	uint64_t now, beat;

	(void)req;
	uv_update_time(a->loop);
	now = uv_now(a->loop);
	beat = workers_oldest_beat(a->workers);
	if (a->heartbeat_ms < beat)
		beat = a->heartbeat_ms;
	if (now > beat && now - beat > ADMIN_HEARTBEAT_MAX_MS) {
		reply_text(resp, 503, "loop stalled: no heartbeat for %llu ms\n",
		    (unsigned long long)(now - beat));
		return;
	}
	reply_text(resp, 200, "OK\n");
}

static void
get_ready(void *arg, const struct http_request *req,
    struct http_response *resp)
{
	struct admin *a = arg;

	(void)req;
	switch (a->phase) {
	case ADMIN_READY:
		reply_text(resp, 200, "OK\n");
		break;
	case ADMIN_STARTING:
		reply_text(resp, 503, "%s\n", a->phase_reason != NULL ?
		    a->phase_reason : "starting");
		break;
	case ADMIN_DRAINING:
		reply_text(resp, 503, "draining\n");
		resp->close = 1;
		break;
	}
}

/* ---- /status ---- */

/* The port of "addr@port". */
static unsigned
addr_port(const char *addr)
{
	const char *at = strrchr(addr, '@');

	return at != NULL ? (unsigned)strtoul(at + 1, NULL, 10) : 0;
}

static const char *
pin_state_name(int s)
{
	return s == 1 ? "match" : s == 0 ? "mismatch" : "unpinned";
}

static void
status_upstream(struct admin *a, FILE *f, const struct upstream_status *st,
    int64_t wall_now, uint64_t loop_now)
{
	fputs("{\"name\":", f);
	json_str(f, st->name);
	fputs(",\"address\":", f);
	json_str(f, st->addr);
	fprintf(f, ",\"port\":%u", addr_port(st->addr));
	fputs(",\"auth_name\":", f);
	json_str(f, st->auth_name);
	fprintf(f, ",\"state\":\"%s\"", !st->healthy ? "down" :
	    st->connected ? "up" : "idle");
	fputs(",\"backoff_until\":", f);
	json_time(f, !st->healthy && st->retry_at_ms > loop_now ?
	    wall_now + (int64_t)((st->retry_at_ms - loop_now + 999) / 1000) :
	    0);
	fprintf(f, ",\"connections\":%u", st->connections);
	fprintf(f, ",\"consecutive_failures\":%u,\"srtt_ms\":%u,"
	    "\"inflight\":%u,\"queries\":%llu,\"answers\":%llu,"
	    "\"timeouts\":%llu", st->fail_count, st->srtt_ms, st->inflight,
	    (unsigned long long)st->queries, (unsigned long long)st->answers,
	    (unsigned long long)st->timeouts);
	fputs(",\"tls\":{\"last_handshake\":", f);
	json_time(f, st->last_handshake);
	fputs(",\"version\":", f);
	json_str(f, st->tls_version);
	fprintf(f, ",\"resumed\":%s,\"verified\":%s",
	    st->resumed ? "true" : "false", st->verified == 1 ? "true" :
	    st->verified == 0 ? "false" : "null");
	fputs(",\"cert_not_after\":", f);
	json_time(f, st->cert_expiry);
	fputs(",\"chain_min_not_after\":", f);
	json_time(f, st->chain_min_not_after);
	fputs(",\"pin_sha256\":", f);
	json_str(f, st->pin_sha256);
	fprintf(f, ",\"pin_state\":\"%s\"", pin_state_name(st->pin_state));
	fputs(",\"last_verify_success\":", f);
	json_time(f, st->last_verify_ok);
	fputs(",\"last_verify_error\":", f);
	json_str(f, st->last_verify_error);
	fputs("},\"last_error\":", f);
	json_str(f, st->last_error);
	fputc('}', f);
	(void)a;
}

static void
get_status(void *arg, const struct http_request *req,
    struct http_response *resp)
{
	struct admin *a = arg;
	struct workers_view *v = mem_alloc(sizeof(*v));
	struct cache_stats cs;
	int64_t wall = (int64_t)time(NULL);
	uint64_t now = uv_now(a->loop);
	size_t i;
	struct body b;

	(void)req;
	if (body_open(&b) != 0)
		goto out;
	if (v == NULL) {
		fclose(b.f);
		b.f = NULL;
		goto out;
	}
	workers_collect(a->workers, v);
	fprintf(b.f, "{\"version\":\"%s\",\"uptime_seconds\":%lld,"
	    "\"state\":\"%s\",\"config\":{\"file\":", PACKAGE_VERSION,
	    (long long)(wall - a->start_time), a->phase == ADMIN_READY ?
	    "ready" : a->phase == ADMIN_DRAINING ? "draining" : "starting");
	json_str(b.f, a->config_file);
	fputs(",\"sha256\":", b.f);
	json_str(b.f, a->config_hash);
	fprintf(b.f, ",\"reloads_ok\":%llu,\"reloads_failed\":%llu,"
	    "\"last_reload_successful\":%s,\"last_reload_error\":",
	    (unsigned long long)a->reloads_ok,
	    (unsigned long long)a->reloads_failed,
	    a->last_reload_ok ? "true" : "false");
	json_str(b.f, a->last_reload_error);
	cache_get_stats(a->cache, &cs);
	fprintf(b.f, "},\"cache\":{\"entries\":%zu,\"memory_bytes\":%zu,"
	    "\"capacity_bytes\":%zu,\"hits\":%llu,\"misses\":%llu,"
	    "\"evictions\":%llu},\"tcp_connections\":%u,\"upstreams\":[",
	    cs.entries, cs.bytes, cs.max_bytes,
	    (unsigned long long)v->metrics.cache_hits,
	    (unsigned long long)v->metrics.cache_misses,
	    (unsigned long long)cs.evictions,
	    v->tcp_connections);
	for (i = 0; i < v->n_upstream; i++) {
		if (i > 0)
			fputc(',', b.f);
		status_upstream(a, b.f, &v->up[i], wall, now);
	}
	fprintf(b.f, "],\"workers\":%u", workers_count(a->workers));
	if (v->shc_workers != 0) {
		fputs(",\"shared_cache\":{\"url\":", b.f);
		json_str(b.f, a->conf->shared_cache.url);
		fprintf(b.f, ",\"up\":%s,\"circuit_open\":%s,"
		    "\"workers_up\":%u,\"workers_circuit_open\":%u,"
		    "\"retry_in_ms\":%llu,\"outstanding\":%u,"
		    "\"breaker_opens\":%llu,\"connects\":%llu,"
		    "\"answers\":%llu,\"invalid_values\":%llu}",
		    v->shc_up == v->shc_workers ? "true" : "false",
		    v->shc_open != 0 ? "true" : "false", v->shc_up, v->shc_open,
		    (unsigned long long)v->shc_retry_in_ms, v->shc_outstanding,
		    (unsigned long long)v->shc_breaker_opens,
		    (unsigned long long)v->shc_connects,
		    (unsigned long long)v->metrics.shc_answers,
		    (unsigned long long)v->metrics.shc_invalid);
	}
	fputs("}\n", b.f);
out:
	mem_free(v);
	body_send(&b, resp, 200, JSON_TYPE);
}

/* ---- control: cache and reload ---- */

/* A yes/no query argument: absent, "0", "no" and "false" are no. */
static int
arg_true(const char *v)
{
	return v != NULL && strcmp(v, "0") != 0 && strcmp(v, "no") != 0 &&
	    strcmp(v, "false") != 0;
}

static void
post_flush(void *arg, const struct http_request *req,
    struct http_response *resp)
{
	struct admin *a = arg;
	const char *name = http_request_arg(req, "name");
	const char *sub = http_request_arg(req, "subtree");
	const char *shared = http_request_arg(req, "shared");
	uint8_t wire[DNS_MAX_NAME_WIRE];
	size_t len = 0, n;
	int subtree = arg_true(sub), keep_shared;
	const char *sh;

	/* The shared cache too unless shared=0: a name flushed here but
	 * left there would come straight back from it. */
	keep_shared = shared != NULL && !arg_true(shared);
	if (name != NULL &&
	    cache_name_from_text(name, wire, sizeof(wire), &len) != 0) {
		reply_text(resp, 400, "bad name \"%.255s\"\n", name);
		return;
	}
	if (name == NULL)
		n = cache_flush(a->cache);
	else
		n = cache_flush_name(a->cache, wire, len, subtree);
	if (!a->conf->shared_cache.set)
		sh = "";
	else if (keep_shared)
		sh = "; shared cache left as it is";
	else if (workers_shcache_flush(a->workers, name != NULL ? wire : NULL,
	    len, subtree) == 0)
		sh = "; deleting from the shared cache";
	else
		sh = "; shared cache not reachable, left as it is";
	log_info("control: flushed %s%s, %zu entries removed%s",
	    name != NULL ? name : "the cache",
	    name != NULL && subtree ? " and below" : "", n, sh);
	reply_text(resp, 200, "flushed %zu entries%s\n", n, sh);
}

/* One line per entry, in zone-file spirit: name, type and class in
 * mnemonics (RFC 3597 TYPEnnn/CLASSnnn otherwise), the DO, CD and AD
 * flags the entry was stored for ("do", "cd", "do,cd", "ad", ... or "-"),
 * TTL left,
 * bytes, fresh or stale. */
static int
dump_entry(void *arg, const struct cache_entry_info *e)
{
	unsigned ti = metrics_type_index(e->qtype);
	char type[16], class[16], flags[16];
	FILE *f = arg;

	if (ti == METRICS_N_TYPES - 1)
		snprintf(type, sizeof(type), "TYPE%u", e->qtype);
	else
		snprintf(type, sizeof(type), "%s", metrics_type_name(ti));
	if (e->qclass == 1)
		snprintf(class, sizeof(class), "IN");
	else
		snprintf(class, sizeof(class), "CLASS%u", e->qclass);
	snprintf(flags, sizeof(flags), "%s%s%s", e->do_bit ? ",do" : "",
	    e->cd_bit ? ",cd" : "", e->ad_bit ? ",ad" : "");
	fprintf(f, "%s %s %s %s %u %zu %s\n", e->name, type, class,
	    flags[0] != '\0' ? flags + 1 : "-", e->ttl_left, e->bytes,
	    e->stale ? "stale" : "fresh");
	return ferror(f) ? -1 : 0;
}

static void
get_dump(void *arg, const struct http_request *req,
    struct http_response *resp)
{
	struct admin *a = arg;
	struct body b;

	(void)req;
	if (body_open(&b) == 0) {
		fputs("; name type class flags ttl bytes state\n", b.f);
		(void)cache_dump(a->cache, uv_now(a->loop), dump_entry, b.f);
	}
	body_send(&b, resp, 200, TEXT_PLAIN);
}

static void
post_reload(void *arg, const struct http_request *req,
    struct http_response *resp)
{
	struct admin *a = arg;
	char err[CONF_ERR_MAX];

	(void)req;
	if (a->reload == NULL || a->reload(a->reload_arg, err,
	    sizeof(err)) != 0) {
		reply_text(resp, 400, "reload refused: %s\n",
		    a->reload == NULL ? "not supported" : err);
		return;
	}
	reply_text(resp, 200, "reloaded\n");
}

#define PUBLIC_ROUTES                                   \
	{ "/metrics", "GET", get_metrics },             \
	{ "/health", "GET", get_health },               \
	{ "/ready", "GET", get_ready },                 \
	{ "/status", "GET", get_status }

const struct http_route admin_public_routes[] = { PUBLIC_ROUTES };
const size_t admin_n_public_routes =
    sizeof(admin_public_routes) / sizeof(admin_public_routes[0]);

const struct http_route admin_control_routes[] = {
	PUBLIC_ROUTES,
	{ "/cache/flush", "POST", post_flush },
	{ "/cache/dump", "GET", get_dump },
	{ "/reload", "POST", post_reload },
};
const size_t admin_n_control_routes =
    sizeof(admin_control_routes) / sizeof(admin_control_routes[0]);
