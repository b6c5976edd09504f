/* upselect.c: upstream selection and health for the upstream pool:
 * which usable upstream a request goes to (fastest, round-robin,
 * ordered), what each answer and failure teaches about an upstream (RTT,
 * back-off, up and down), probes on demand while every upstream is down,
 * the matching half of a reconfigure, and the status accessors.
 *
 * It owns the health and status fields of struct upstream (upstream_int.h)
 * and reads its connections' state, but opens, closes and writes on none:
 * a request goes to the upstream chosen here through req_dispatch in
 * upstream.c, which connects, and reports back through the functions of
 * upselect.h. The callback rules of upstream.c hold here too: nothing
 * here calls a user callback except the probe timer, through
 * pool_flush_failed, after its bookkeeping is done.
 *
 * Selection: a request goes to one of the usable upstreams: not failed by
 * this request, and either holding an active connection or not backing
 * off. conf->selection says which: ORDERED takes the first in config
 * order; ROUND_ROBIN moves the starting point by one per query; FASTEST
 * (the default) takes the lowest smoothed answer RTT, picking at random
 * among those within 25 % (or 2 ms) of the best so that load spreads over
 * near-equals, and counts an upstream without an RTT sample as equal to
 * the best, so that new and recovered upstreams get probed. The RTT of an
 * answer is loop time now minus the request's write time; srtt starts at
 * the first sample and then moves by (rtt - srtt) / 8 (kept in 1/8 ms).
 *
 * Health: a failure (connect, handshake, verification, a connection that
 * closes before answering anything, or one presumed half-open) marks the
 * upstream down until retry_at = now + a back-off drawn uniformly from
 * [b/2, b], b = min(500 ms * 2^(failures-1), backoff_max_ms): growing,
 * capped and jittered, so that neither a fixed beat nor a reconnect storm
 * forms. The count is reset by the first answer on a connection, not by
 * the handshake alone (a server that verifies and then closes keeps
 * failing). After retry_at the next query probes the upstream. Down and up
 * are logged once per transition. With every upstream down a query probes
 * one anyway (below), and fails (UPSTREAM_EUNREACH) when that probe
 * fails. upstream_pool_reset_backoff (the host's addresses or routes
 * changed, netwatch.c) clears every fail_count and retry_at; the "down"
 * flag stays until an answer, so "up again" is still logged.
 *
 * Probes on demand: back-off alone would keep clients failing for up to
 * backoff_max_ms after the network returns. So a new query (upstream_query
 * only; re-dispatched ones never probe) that finds no usable upstream
 * probes one: the one whose retry_at comes first, forced past its
 * back-off, with this query waiting on the new connection within its
 * deadline. While that connection handshakes the upstream counts as
 * usable, so later queries wait on it too: one probe in flight at most.
 * Probes are PROBE_INTERVAL_MS apart at least (p->probe_at); a query that
 * comes sooner is held (REQ_HELD, on p->held, still on the deadline list)
 * and the probe timer dispatches the held ones when the slot opens, the
 * first as the probe. A failed probe counts as a failure like any other
 * (the back-off keeps growing) and fails the queries waiting on it. So
 * during an outage a query gets SERVFAIL within PROBE_INTERVAL_MS plus the
 * probe's own time (on a refused connection, about nothing), and the first
 * query after the upstream returns is answered.
 *
 * Reconfigure: upstream_match pairs the new conf's upstreams with the
 * current ones (address, auth name, pin set; and only when the tls ctx is
 * the same pointer) and allocates the unmatched ones before the pool
 * changes anything, so -ENOMEM leaves it as it was. upstream.c does the
 * rest (see "Reconfigure" there).
 *
 * Status: per upstream, failures are counted by kind (tls_conn_failure
 * tells a connect timeout from a handshake timeout and a pin mismatch from
 * other verification failures), with what the server presented (chain,
 * leaf pin) after a successful handshake or a failed verification. The
 * pool reads the wall clock (time(NULL)) only to stamp last_handshake and
 * last_verify_ok, because operators want dates there; everything else
 * runs on loop time. The RTT histogram counts each answer's loop-time RTT
 * once, in its (non-cumulative) bucket.
 *
 * A backoff_max_ms of 0 means the default cap of 30 s.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <utlist.h>

#include "log.h"
#include "mem.h"
#include "upselect.h"
#include "upstream.h"
#include "upstream_int.h"

#define BACKOFF_MIN_MS 500
#define BACKOFF_DEFAULT_MAX_MS 30000
/* With every upstream backing off, a client query may probe one at most
 * this often (see "Probes on demand" above). */
#define PROBE_INTERVAL_MS 250
/* Within this share of the best SRTT (or 2 ms), upstreams count as equally
 * fast and share the load. */
#define FASTEST_SLACK_DIV 4
#define FASTEST_SLACK_MIN_8 (2 * 8)
/* Cap of one RTT sample, so that the 1/8 ms sums cannot overflow. */
#define RTT_MAX_MS 600000
/* RTT histogram: bucket i holds samples in (bound(i-1), bound(i)],
 * bound(i) = 0.25 ms * 2^i, i.e. (4 << i) sixteenths of a millisecond. */
#define RTT_BUCKETS UPSTREAM_RTT_BUCKETS

/* A new upstream for cu at index i, with no connection. Returns NULL
 * when out of memory. */
struct upstream *
upstream_new(const struct conf_upstream *cu, size_t i)
{
	struct upstream *up;
	char addr[64];

	up = mem_calloc(1, sizeof(*up));
	if (up == NULL)
		return NULL;
	up->cu = cu;
	up->index = (unsigned)i;
	up->verified = -1;
	up->pin_state = cu->n_pins > 0 ? 0 : -1;
	conf_addr_str(&cu->addr, addr, sizeof(addr));
	snprintf(up->label, sizeof(up->label), "%s (%s)", addr,
	    cu->auth_name[0] != '\0' ? cu->auth_name : "pinned");
	snprintf(up->name, sizeof(up->name), "%s%s%s", addr,
	    cu->auth_name[0] != '\0' ? "#" : "", cu->auth_name);
	return up;
}

/* Free up, which has no connection left (none open, none waiting for its
 * close callback). */
void
upstream_free(struct upstream_pool *p, struct upstream *up)
{
	if (up->removed)
		DL_DELETE2(p->removed, up, pprev, pnext);
	mem_free(up->session);
	mem_free(up);
}

/* A failure of up at now: back off, growing, capped and jittered. */
void
upstream_mark_down(struct upstream_pool *p, struct upstream *up, uint64_t now,
    const char *why)
{
	uint64_t cap = p->conf->backoff_max_ms;
	uint64_t ms = BACKOFF_MIN_MS, lo, wait;

	if (cap == 0)
		cap = BACKOFF_DEFAULT_MAX_MS;
	if (why == NULL)
		why = "failed";
	up->fail_count++;
	if (up->fail_count - 1 < 32)
		ms <<= up->fail_count - 1;
	else
		ms = cap;
	if (ms > cap)
		ms = cap;
	/* Uniform in [ms/2, ms]: clients that failed together do not come
	 * back together, and the interval never settles on a fixed beat. */
	lo = ms / 2;
	wait = lo + pool_rnd32(p) % (ms - lo + 1);
	up->retry_at = now + wait;
	up->health_ms = now;
	/* Its old speed says nothing about the server that comes back:
	 * without a sample it is probed like a new one. */
	up->has_rtt = 0;
	snprintf(up->last_error, sizeof(up->last_error), "%s", why);
	if (!up->down) {
		up->down = 1;
		log_warn("upstream %s: down (%s), next probe in %llu ms",
		    up->label, why, (unsigned long long)wait);
	} else {
		log_info("upstream %s: still down (%s), next probe in %llu ms",
		    up->label, why, (unsigned long long)wait);
	}
}

/* up answered: its failures are over. */
void
upstream_mark_up(struct upstream *up, uint64_t now)
{
	up->health_ms = now;
	if (up->down)
		log_info("upstream %s: up again", up->label);
	up->down = 0;
	up->fail_count = 0;
	up->retry_at = 0;
}

/* An upstream a request may go to: it has an active connection, or it is
 * not backing off. */
int
upstream_usable(const struct upstream *up, uint64_t now)
{
	return up->conn != NULL || up->retry_at <= now;
}

/* The upstream for a request that has failed on the upstreams in mask,
 * by conf->selection; NULL when none is usable. */
struct upstream *
upstream_select(struct upstream_pool *p, uint32_t mask, uint64_t now)
{
	struct upstream *cand[CONF_MAX_UPSTREAM];
	struct upstream *up;
	uint32_t best8 = UINT32_MAX, limit8, slack8;
	size_t n = 0, k = 0, i, start;

	for (i = 0; i < p->n_ups; i++) {
		up = p->ups[i];
		if (!(mask & (1u << i)) && upstream_usable(up, now))
			cand[n++] = up;
	}
	if (n == 0)
		return NULL;
	switch (p->conf->selection) {
	case CONF_SELECT_ORDERED:
		return cand[0];
	case CONF_SELECT_ROUND_ROBIN:
		start = p->rr++ % p->n_ups;
		/* The first usable one at or after the starting point. */
		for (i = 0; i < n; i++)
			if (cand[i]->index >= start)
				return cand[i];
		return cand[0];
	case CONF_SELECT_FASTEST:
	default:
		break;
	}
	for (i = 0; i < n; i++)
		if (cand[i]->has_rtt && cand[i]->srtt8 < best8)
			best8 = cand[i]->srtt8;
	if (best8 == UINT32_MAX)
		return cand[pool_rnd16(p) % n];
	slack8 = best8 / FASTEST_SLACK_DIV;
	if (slack8 < FASTEST_SLACK_MIN_8)
		slack8 = FASTEST_SLACK_MIN_8;
	limit8 = best8 + slack8;
	/* Keep the near-best (and the unmeasured) in place, then draw. */
	for (i = 0; i < n; i++)
		if (!cand[i]->has_rtt || cand[i]->srtt8 <= limit8)
			cand[k++] = cand[i];
	return cand[pool_rnd16(p) % k];
}

void
upstream_rtt_sample(struct upstream *up, uint64_t rtt)
{
	if (rtt > RTT_MAX_MS)
		rtt = RTT_MAX_MS;
	if (!up->has_rtt) {
		up->srtt8 = (uint32_t)rtt * 8;
		up->has_rtt = 1;
		return;
	}
	/* srtt += (rtt - srtt) / 8, in units of 1/8 ms (as TCP does). */
	up->srtt8 = up->srtt8 - up->srtt8 / 8 + (uint32_t)rtt;
}

/* Count an answer RTT (loop time, whole milliseconds) in the histogram. */
void
upstream_rtt_histogram(struct upstream *up, uint64_t rtt_ms)
{
	uint64_t x16 = rtt_ms * 16; /* in sixteenths of a ms */
	size_t i;

	up->rtt_count++;
	up->rtt_sum_ms += rtt_ms;
	for (i = 0; i < RTT_BUCKETS; i++) {
		if (x16 <= (uint64_t)4 << i) {
			up->rtt_bucket[i]++;
			return;
		}
	}
	/* Above 8.192 s: only in count and sum (the +Inf bucket). */
}

/* ---- probes on demand ---- */

static void pool_probe_timer_cb(uv_timer_t *t);

/* The upstream to probe for r: of those r has not failed on, the one
 * whose back-off ends first, so that successive probes take turns. NULL
 * when there is none. */
static struct upstream *
pool_probe_target(struct upstream_pool *p, uint32_t tried)
{
	struct upstream *best = NULL;
	size_t i;

	for (i = 0; i < p->n_ups; i++)
		if (!(tried & (1u << i)) &&
		    (best == NULL || p->ups[i]->retry_at < best->retry_at))
			best = p->ups[i];
	return best;
}

/* r, a new query, found no usable upstream: all are backing off. When
 * the probe slot is open, probe one with r now (it waits on the new
 * connection, and so do the queries that come while it handshakes, since
 * a connecting upstream is usable); else hold r until the slot opens.
 * Returns 0 when r was dispatched or held, -1 when there is nothing to
 * probe (the caller fails r). Calls no user callback. */
int
upstream_probe_on_demand(struct upstream_pool *p, struct upstream_req *r,
    uint64_t now)
{
	struct upstream *up = pool_probe_target(p, r->tried);

	if (up == NULL)
		return -1;
	if (now >= p->probe_at) {
		p->probe_at = now + PROBE_INTERVAL_MS;
		log_debug("upstream %s: every upstream is backing off, probing "
		    "it for a query", up->label);
		return req_dispatch(p, r, now, up);
	}
	r->state = REQ_HELD;
	DL_APPEND2(p->held, r, cprev, cnext);
	if (!uv_is_active((uv_handle_t *)&p->probe_timer))
		uv_timer_start(&p->probe_timer, pool_probe_timer_cb,
		    p->probe_at - now, 0);
	return 0;
}

/* The probe slot is open (or the back-off was reset): the held queries
 * go to a usable upstream, the first of them as a probe, the others onto
 * its connection. Should the probe fail at once, they are held again,
 * for the next slot; their deadlines bound that. */
static void
pool_probe_timer_cb(uv_timer_t *t)
{
	struct upstream_pool *p = t->data;
	uint64_t now = uv_now(p->loop);
	struct upstream_req *batch = p->held, *r;

	/* Those held again go back onto p->held, not into batch. */
	p->held = NULL;
	while (batch != NULL) {
		r = batch;
		DL_DELETE2(batch, r, cprev, cnext);
		r->state = REQ_IDLE;
		if (req_dispatch(p, r, now, NULL) != 0 &&
		    upstream_probe_on_demand(p, r, now) != 0)
			req_fail(r, UPSTREAM_EUNREACH);
	}
	pool_flush_failed(p);
}

void
upstream_pool_reset_backoff(struct upstream_pool *p)
{
	uint64_t now;
	size_t i, n = 0;

	if (p->closing)
		return;
	now = uv_now(p->loop);
	for (i = 0; i < p->n_ups; i++) {
		if (p->ups[i]->retry_at > now)
			n++;
		p->ups[i]->fail_count = 0;
		p->ups[i]->retry_at = 0;
	}
	p->probe_at = 0;
	log_info("upstreams: back-off reset, %zu of %zu were backing off", n,
	    p->n_ups);
	upstream_release_held(p);
}

void
upstream_release_held(struct upstream_pool *p)
{
	if (p->held != NULL)
		uv_timer_start(&p->probe_timer, pool_probe_timer_cb, 0, 0);
}

/* ---- what the connections report ---- */

/* Remember what the server presented (for the status): after a
 * successful handshake, or a verification that failed on it. */
void
upstream_note_chain(struct upstream *up, const struct tls_conn *tc)
{
	up->chain_min_not_after = tls_conn_chain_min_not_after(tc);
	(void)tls_conn_leaf_pin(tc, up->pin_sha256, sizeof(up->pin_sha256));
	up->pin_state = tls_conn_pin_state(tc);
}

/* Count a failed connection attempt by what failed. */
void
upstream_count_failure(struct upstream *up, const struct tls_conn *tc,
    int status, const char *why)
{
	enum tls_failure f = tls_conn_failure(tc);

	if (f == TLS_FAIL_NONE)
		f = status == TLS_E_CONNECT ? TLS_FAIL_CONNECT :
		    TLS_FAIL_HANDSHAKE;
	switch (f) {
	case TLS_FAIL_CONNECT:
		up->err_connect++;
		return;
	case TLS_FAIL_VERIFY:
	case TLS_FAIL_PIN:
		if (f == TLS_FAIL_PIN)
			up->err_pin++;
		else
			up->err_verify++;
		upstream_note_chain(up, tc);
		snprintf(up->last_verify_error, sizeof(up->last_verify_error),
		    "%s", why != NULL ? why : "verification failed");
		break;
	case TLS_FAIL_HANDSHAKE:
	case TLS_FAIL_NONE:
		up->err_handshake++;
		break;
	}
	up->last_handshake = (int64_t)time(NULL);
}

/* ---- reconfigure: matching ---- */

static int
pins_subset(const struct conf_upstream *a, const struct conf_upstream *b)
{
	size_t i, j;
	int found;

	for (i = 0; i < a->n_pins; i++) {
		found = 0;
		for (j = 0; j < b->n_pins && !found; j++)
			found = memcmp(a->pins[i], b->pins[j],
			    sizeof(a->pins[i])) == 0;
		if (!found)
			return 0;
	}
	return 1;
}

/* 1 when a and b name the same server the same way: address (family,
 * IP, port, and the IPv6 scope), auth name and the set of pins (in any
 * order). */
static int
upstream_conf_same(const struct conf_upstream *a,
    const struct conf_upstream *b)
{
	const struct sockaddr_in *a4, *b4;
	const struct sockaddr_in6 *a6, *b6;

	if (a->addr.ss.ss_family != b->addr.ss.ss_family)
		return 0;
	switch (a->addr.ss.ss_family) {
	case AF_INET:
		a4 = (const struct sockaddr_in *)&a->addr.ss;
		b4 = (const struct sockaddr_in *)&b->addr.ss;
		if (a4->sin_port != b4->sin_port ||
		    a4->sin_addr.s_addr != b4->sin_addr.s_addr)
			return 0;
		break;
	case AF_INET6:
		a6 = (const struct sockaddr_in6 *)&a->addr.ss;
		b6 = (const struct sockaddr_in6 *)&b->addr.ss;
		if (a6->sin6_port != b6->sin6_port ||
		    a6->sin6_scope_id != b6->sin6_scope_id ||
		    memcmp(&a6->sin6_addr, &b6->sin6_addr,
		    sizeof(a6->sin6_addr)) != 0)
			return 0;
		break;
	default:
		return 0;
	}
	return strcmp(a->auth_name, b->auth_name) == 0 &&
	    pins_subset(a, b) && pins_subset(b, a);
}

int
upstream_match(struct upstream_pool *p, const struct conf *newconf,
    size_t n, int same_tls, struct upstream **next, int *fresh, int *remap)
{
	size_t i, j;

	for (i = 0; i < CONF_MAX_UPSTREAM; i++)
		remap[i] = -1;
	/* Match first, allocate second: nothing is changed until every
	 * allocation has succeeded. */
	for (j = 0; j < n; j++) {
		next[j] = NULL;
		fresh[j] = 0;
		for (i = 0; i < p->n_ups && same_tls && next[j] == NULL; i++) {
			if (remap[i] < 0 && upstream_conf_same(p->ups[i]->cu,
			    &newconf->upstream[j])) {
				remap[i] = (int)j;
				next[j] = p->ups[i];
			}
		}
	}
	for (j = 0; j < n; j++) {
		if (next[j] != NULL)
			continue;
		next[j] = upstream_new(&newconf->upstream[j], j);
		if (next[j] == NULL)
			goto nomem;
		fresh[j] = 1;
	}
	return 0;

nomem:
	for (j = 0; j < n; j++)
		if (fresh[j])
			upstream_free(p, next[j]);
	return -ENOMEM;
}

/* ---- status ---- */

size_t
upstream_count(const struct upstream_pool *p)
{
	return p->n_ups;
}

void
upstream_get_status(const struct upstream_pool *p, size_t i,
    struct upstream_status *st)
{
	const struct upstream *up;
	const struct uconn *uc;

	memset(st, 0, sizeof(*st));
	if (i >= p->n_ups)
		return;
	up = p->ups[i];
	conf_addr_str(&up->cu->addr, st->addr, sizeof(st->addr));
	snprintf(st->auth_name, sizeof(st->auth_name), "%s",
	    up->cu->auth_name);
	if (up->cu->auth_name[0] != '\0')
		snprintf(st->name, sizeof(st->name), "%s#%s", st->addr,
		    up->cu->auth_name);
	else
		snprintf(st->name, sizeof(st->name), "%s", st->addr);
	st->connected = (up->conn != NULL && up->conn->state == UC_READY) ||
	    up->retiring != NULL;
	st->healthy = up->retry_at <= uv_now(p->loop);
	st->fail_count = up->fail_count;
	st->health_ms = up->health_ms;
	st->retry_at_ms = st->healthy ? 0 : up->retry_at;
	st->srtt_ms = up->srtt8 / 8;
	st->verified = up->verified;
	st->cert_expiry = up->cert_expiry;
	snprintf(st->last_error, sizeof(st->last_error), "%s",
	    up->last_error);
	st->queries = up->n_queries;
	st->answers = up->n_answers;
	st->timeouts = up->n_timeouts;

	if (up->conn != NULL)
		st->inflight += (unsigned)up->conn->n_live;
	if (up->conn != NULL && up->conn->state == UC_READY)
		st->connections++;
	DL_FOREACH2(up->retiring, uc, unext) {
		st->inflight += (unsigned)uc->n_live;
		st->connections++;
	}
	st->handshakes = up->n_handshakes;
	st->handshakes_resumed = up->n_resumed;
	st->err_connect = up->err_connect;
	st->err_handshake = up->err_handshake;
	st->err_verify = up->err_verify;
	st->err_pin = up->err_pin;
	st->err_timeout = up->err_timeout;
	st->err_reset = up->err_reset;
	st->err_bad_answer = up->err_bad_answer;
	st->last_verify_ok = up->last_verify_ok;
	st->last_handshake = up->last_handshake;
	snprintf(st->tls_version, sizeof(st->tls_version), "%s",
	    up->tls_version);
	st->resumed = up->resumed;
	st->chain_min_not_after = up->chain_min_not_after;
	snprintf(st->pin_sha256, sizeof(st->pin_sha256), "%s",
	    up->pin_sha256);
	st->pin_state = up->pin_state;
	snprintf(st->last_verify_error, sizeof(st->last_verify_error), "%s",
	    up->last_verify_error);
	memcpy(st->rtt_bucket, up->rtt_bucket, sizeof(st->rtt_bucket));
	st->rtt_count = up->rtt_count;
	st->rtt_sum_s = (double)up->rtt_sum_ms / 1000.0;
}

void
upstream_status_merge(struct upstream_status *dst,
    const struct upstream_status *src)
{
	unsigned i;

	dst->connected |= src->connected;
	dst->connections += src->connections;
	/* Health as the latest evidence anywhere says: the worker that
	 * last saw it fail or answer. */
	if (src->health_ms > dst->health_ms) {
		dst->health_ms = src->health_ms;
		dst->healthy = src->healthy;
		dst->fail_count = src->fail_count;
		dst->retry_at_ms = src->retry_at_ms;
		memcpy(dst->last_error, src->last_error,
		    sizeof(dst->last_error));
	}
	if (src->srtt_ms > dst->srtt_ms)
		dst->srtt_ms = src->srtt_ms;
	dst->queries += src->queries;
	dst->answers += src->answers;
	dst->timeouts += src->timeouts;
	dst->inflight += src->inflight;
	dst->handshakes += src->handshakes;
	dst->handshakes_resumed += src->handshakes_resumed;
	dst->err_connect += src->err_connect;
	dst->err_handshake += src->err_handshake;
	dst->err_verify += src->err_verify;
	dst->err_pin += src->err_pin;
	dst->err_timeout += src->err_timeout;
	dst->err_reset += src->err_reset;
	dst->err_bad_answer += src->err_bad_answer;
	for (i = 0; i < UPSTREAM_RTT_BUCKETS; i++)
		dst->rtt_bucket[i] += src->rtt_bucket[i];
	dst->rtt_count += src->rtt_count;
	dst->rtt_sum_s += src->rtt_sum_s;
	if (src->last_verify_ok > dst->last_verify_ok)
		dst->last_verify_ok = src->last_verify_ok;
	/* What the server presented: as of the latest handshake anywhere. */
	if (src->last_handshake <= dst->last_handshake)
		return;
	dst->last_handshake = src->last_handshake;
	dst->verified = src->verified;
	dst->cert_expiry = src->cert_expiry;
	memcpy(dst->tls_version, src->tls_version, sizeof(dst->tls_version));
	dst->resumed = src->resumed;
	dst->chain_min_not_after = src->chain_min_not_after;
	memcpy(dst->pin_sha256, src->pin_sha256, sizeof(dst->pin_sha256));
	dst->pin_state = src->pin_state;
	memcpy(dst->last_verify_error, src->last_verify_error,
	    sizeof(dst->last_verify_error));
}
