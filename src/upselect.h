/* upselect.h: upstream selection and health (upselect.c), for
 * upstream.c only: the upstream pool's other half. Every function here
 * runs on loop time passed in as now, and none calls a user callback.
 */
#ifndef DOTPROXY_UPSELECT_H
#define DOTPROXY_UPSELECT_H

#include <stddef.h>
#include <stdint.h>

struct conf;
struct conf_upstream;
struct tls_conn;
struct upstream;
struct upstream_pool;
struct upstream_req;

/* A new upstream for cu at index i, with no connection and no failures.
 * Returns NULL when out of memory. upstream_free frees one that has no
 * connection left (none open, none waiting for its close callback), and
 * takes it off p->removed if it is there. */
struct upstream *upstream_new(const struct conf_upstream *cu, size_t i);
void upstream_free(struct upstream_pool *p, struct upstream *up);

/* Whether a request may go to up: it has an active connection, or it is
 * not backing off. */
int upstream_usable(const struct upstream *up, uint64_t now);

/* The upstream for a request that has failed on the upstreams in mask
 * (bit i: p->ups[i]), by conf->selection; NULL when none is usable. */
struct upstream *upstream_select(struct upstream_pool *p, uint32_t mask,
    uint64_t now);

/* A failure of up at now (why: for the log and the status, NULL for
 * "failed"): it backs off, and a change to down is logged. */
void upstream_mark_down(struct upstream_pool *p, struct upstream *up,
    uint64_t now, const char *why);

/* up answered: its failures and back-off are over; "up again" is logged
 * if it was down. */
void upstream_mark_up(struct upstream *up, uint64_t now);

/* An answer's RTT in whole loop-time milliseconds: into the smoothed RTT
 * that selection uses, and into the status histogram. */
void upstream_rtt_sample(struct upstream *up, uint64_t rtt);
void upstream_rtt_histogram(struct upstream *up, uint64_t rtt_ms);

/* r, a new query, found no usable upstream: probe one with it now, or
 * hold it (REQ_HELD) until the next probe slot. Returns 0 when r was
 * dispatched or held, -1 when there is nothing to probe (r is untouched;
 * the caller fails it). */
int upstream_probe_on_demand(struct upstream_pool *p, struct upstream_req *r,
    uint64_t now);

/* Let the held queries try again from the next loop turn (the set of
 * upstreams changed). Does nothing when none is held. */
void upstream_release_held(struct upstream_pool *p);

/* What a connection attempt of up showed, for the status: the chain the
 * server presented (after a handshake that succeeded, or a verification
 * that failed on it), and a failed attempt counted by kind (status is
 * the TLS_E_* of the failure, why its text or NULL). */
void upstream_note_chain(struct upstream *up, const struct tls_conn *tc);
void upstream_count_failure(struct upstream *up, const struct tls_conn *tc,
    int status, const char *why);

/* The matching half of upstream_pool_reconfigure, for newconf's first n
 * upstreams: next[j] is the current upstream that newconf's j names the
 * same way (only when same_tls), or a new one (fresh[j] set); remap[i]
 * is the new index of p->ups[i], -1 when it goes (all CONF_MAX_UPSTREAM
 * entries are set). Changes nothing in the pool. Returns 0, or -ENOMEM
 * with every new upstream freed again. */
int upstream_match(struct upstream_pool *p, const struct conf *newconf,
    size_t n, int same_tls, struct upstream **next, int *fresh, int *remap);

#endif
