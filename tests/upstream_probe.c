/* upstream_probe.c: drive the upstream pool against real DoT servers.
 *
 * Builds one query per NAME (times --count) with c-ares' ares_create_query,
 * sends them all at once through an upstream_pool (so they are pipelined on
 * one connection), and prints one line per callback:
 *   answer NAME rcode=N len=N an=N
 *   fail NAME status=N
 * then "round R answered=A failed=F" and at the end a "metrics ..." line
 * with the pool's counters, for tests/upstream_probe.sh to check.
 *
 * Every answer is checked again here against the question that was asked
 * (dnsmsg_parse_answer): an answer delivered to the wrong query prints
 * "wrong" and makes the probe fail, which catches ID remapping bugs.
 *
 * --pause-stdin waits for a line on stdin after the first round (a test
 * script restarts a backend meanwhile); --until-ok MS then repeats the
 * round every 100 ms until it is fully answered or MS have passed.
 * --linger-ms MS keeps the loop running that long after the last round, so
 * that late answers arrive before the metrics are printed.
 * --cancel K cancels, at the first callback, every K-th query still
 * pending (they are in flight then); --close-after N closes the pool from
 * inside the N-th callback (the rest must get UPSTREAM_ECLOSED).
 * --fail-alloc N makes the N-th allocation after setup fail (mem.h hook);
 * a refused upstream_query prints "refused NAME rc=N".
 * --rounds N runs N rounds, --interval-ms MS apart (default 0), and
 * succeeds when every round was fully answered. --stagger-ms MS sends a
 * round's queries one by one, MS apart, instead of all at once.
 * --select ordered|round-robin|fastest, --answer-timeout-ms,
 * --backoff-max-ms and --lifetime-ms set the pool's health settings;
 * --pin BASE64 adds an SPKI pin (SHA-256) to the upstream of the last -u.
 * --status prints one line per upstream from upstream_get_status, before
 * the metrics line:
 *   status I name=N connected=C healthy=H fail_count=F retry_in=MS
 *     srtt_ms=S verified=V cert_expiry=E queries=Q answers=A timeouts=T
 *     addr=A auth_name=N inflight=I handshakes=H handshakes_resumed=R
 *     err_connect=.. err_handshake=.. err_verify=.. err_pin=..
 *     err_timeout=.. err_reset=.. err_bad_answer=.. last_verify_ok=T
 *     last_handshake=T tls_version=V resumed=R chain_min_not_after=T
 *     pin=BASE64 pin_state=P rtt_count=N rtt_sum_ms=MS rtt_buckets=N,N,...
 *     last_verify_error="..." last_error="..."
 *
 * Reconfigure (SIGHUP reload of the upstream list): --reconf-u ADDR (may
 * repeat) is the upstream list of a second conf (the other settings as
 * given). At the --reconf-at N-th callback (default 1) of round
 * --reconf-round R (default 1) a zero-delay timer calls
 * upstream_pool_reconfigure with it -- from the loop, not from inside the
 * pool's callback, as a signal watcher would. With --reconf-new-tls R2
 * the same happens again in round R2, with the same list and freshly
 * loaded credentials. A reconfigure that did not happen during its round
 * (the round ended first) happens right after it. --reconf-nomem first
 * tries each reconfigure with its last allocation failing (the first one
 * needs one, the second two), prints "reconfigure K nomem rc=N" and
 * "nomemK ..." status lines, which must equal the "preK" ones: -ENOMEM
 * leaves the pool unchanged. Each time, the old conf (and the
 * old credentials) is overwritten and freed right after the call, so
 * that a pointer kept into it shows up (under ASan at once). Around each
 * reconfigure the probe prints "preK ..." and "postK ..." status lines
 * (as above, "preK" or "postK" for "status") and, after every round, a
 * "roundmetrics R ..." line with the counters of the metrics line.
 * Exit status: 0 when the last round had every (uncancelled) query
 * answered, 1 otherwise, 2 on usage or setup errors.
 */
#include <ares.h>
#include <gnutls/gnutls.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "conf.h"
#include "dnsmsg.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "tls.h"
#include "upstream.h"

struct probe_q {
	const char *name;
	uint8_t *msg;
	int len;
	struct dnsmsg_query dq;
	struct upstream_req *req;
	int done;
	int cancelled;
};

static uv_loop_t *loop;
static uv_async_t kick;
static uv_timer_t stagger_timer;
static unsigned long stagger_ms;
static size_t next_q;          /* the next query of the round to send */
static struct upstream_pool *pool;
static struct metrics metrics;
static struct probe_q *qs;
static size_t n_qs;
static size_t pending;
static size_t n_answered, n_failed, n_wrong, n_cbs, n_closed_cbs;
static long close_after = -1;
static unsigned long cancel_every;
static size_t n_cancelled;
static int cancel_done;
static int quiet;
static struct conf *cur_conf;  /* what the pool was given last */
static struct conf reconf_list; /* --reconf-u upstreams */
static int reconf_n_done, cur_round, reconf_nomem;
static int reconf_round = 1, reconf_new_tls; /* rounds; 0: none */
static unsigned long reconf_at = 1;
static size_t round_cbs;
static uv_timer_t reconf_timer;
static struct tls_ctx *cur_tls;
static const char *ca_file = "";

static void print_status(const char *tag);

/* 1 when this round's reconfigure (if it has one) has not happened yet. */
static int
reconf_due(void)
{
	if (reconf_list.n_upstream == 0)
		return 0;
	if (reconf_n_done == 0)
		return cur_round == reconf_round;
	return reconf_n_done == 1 && reconf_new_tls > 0 &&
	    cur_round == reconf_new_tls;
}

static void
usage(void)
{
	fprintf(stderr, "usage: upstream_probe [--ca FILE] -u ADDR@PORT#NAME "
	    "[-u ...] [--count N] [--type N] [--timeout-ms T]\n"
	    "    [--connect-timeout-ms T] [--idle-ms T] [--cancel K] "
	    "[--close-after N]\n"
	    "    [--pause-stdin] [--until-ok MS] [--linger-ms MS] "
	    "[--fail-alloc N]\n    [--rounds N] [--interval-ms MS] "
	    "[--stagger-ms MS] "
	    "[--select ordered|round-robin|fastest]\n"
	    "    [--answer-timeout-ms T] [--backoff-max-ms T] "
	    "[--lifetime-ms T] [--pin BASE64]\n"
	    "    [--reconf-u ADDR@PORT#NAME]... [--reconf-round R] "
	    "[--reconf-at N] [--reconf-new-tls R]\n"
	    "    [--reconf-nomem]\n"
	    "    [--status] [--quiet] [--debug] NAME...\n");
	exit(2);
}

static void
print_metrics(const char *tag)
{
	printf("%s tls_connects=%llu tls_handshakes=%llu "
	    "tls_handshake_failures=%llu tls_verify_failures=%llu "
	    "tls_closed=%llu upstream_queries=%llu upstream_answers=%llu "
	    "upstream_resent=%llu upstream_timeouts=%llu "
	    "upstream_mismatch=%llu upstream_malformed=%llu "
	    "upstream_moved=%llu upstream_half_open=%llu "
	    "upstream_probes=%llu upstream_broken=%llu closed_cbs=%zu\n",
	    tag,
	    (unsigned long long)metrics.tls_connects,
	    (unsigned long long)metrics.tls_handshakes,
	    (unsigned long long)metrics.tls_handshake_failures,
	    (unsigned long long)metrics.tls_verify_failures,
	    (unsigned long long)metrics.tls_closed,
	    (unsigned long long)metrics.upstream_queries,
	    (unsigned long long)metrics.upstream_answers,
	    (unsigned long long)metrics.upstream_resent,
	    (unsigned long long)metrics.upstream_timeouts,
	    (unsigned long long)metrics.upstream_mismatch,
	    (unsigned long long)metrics.upstream_malformed,
	    (unsigned long long)metrics.upstream_moved,
	    (unsigned long long)metrics.upstream_half_open,
	    (unsigned long long)metrics.upstream_probes,
	    (unsigned long long)metrics.upstream_broken, n_closed_cbs);
}

/* Reconfigure the pool to the --reconf-u list (the second time with new
 * credentials), then destroy what the pool was given before. */
static void
reconfigure(void)
{
	struct conf *old = cur_conf, *next;
	struct tls_ctx *old_tls = cur_tls, *tls = cur_tls;
	char err[512], tag[32];
	int k = reconf_n_done + 1, rc;

	if (pool == NULL)
		return;
	next = mem_alloc(sizeof(*next));
	if (next == NULL) {
		fprintf(stderr, "reconfigure: out of memory\n");
		exit(2);
	}
	*next = *old;
	memcpy(next->upstream, reconf_list.upstream,
	    sizeof(next->upstream));
	next->n_upstream = reconf_list.n_upstream;
	if (k == 2 && tls_ctx_new(ca_file, &tls, err, sizeof(err)) < 0) {
		fprintf(stderr, "tls: %s\n", err);
		exit(2);
	}
	snprintf(tag, sizeof(tag), "pre%d", k);
	print_status(tag);
	if (reconf_nomem) {
		/* Reconfigure 1 allocates C, reconfigure 2 (new
		 * credentials) B and C: fail the last of those. */
		mem_fail_after(k - 1);
		rc = upstream_pool_reconfigure(pool, next, tls);
		mem_fail_after(-1);
		printf("reconfigure %d nomem rc=%d\n", k, rc);
		snprintf(tag, sizeof(tag), "nomem%d", k);
		print_status(tag);
	}
	rc = upstream_pool_reconfigure(pool, next, tls);
	printf("reconfigure %d rc=%d\n", k, rc);
	if (rc != 0) {
		mem_free(next);
		if (tls != old_tls)
			tls_ctx_free(tls);
		return;
	}
	reconf_n_done = k;
	cur_conf = next;
	cur_tls = tls;
	/* Nothing may point into these any more. */
	memset(old, 0xa5, sizeof(*old));
	mem_free(old);
	if (tls != old_tls)
		tls_ctx_free(old_tls);
	snprintf(tag, sizeof(tag), "post%d", k);
	print_status(tag);
}

static void
reconf_timer_cb(uv_timer_t *t)
{
	(void)t;
	if (reconf_due())
		reconfigure();
}

static void
probe_cb(void *arg, int status, const uint8_t *answer, size_t len,
    const struct dnsmsg_answer_info *info, const char *upstream,
    uint64_t now_ms)
{
	struct probe_q *pq = arg;
	struct dnsmsg_answer_info check;
	unsigned an = 0;

	(void)upstream;
	n_cbs++;
	round_cbs++;
	/* Reconfigure from the loop, not from inside this callback (the
	 * pool's contract), while the rest of the round is in flight. */
	if (round_cbs == reconf_at && reconf_due())
		uv_timer_start(&reconf_timer, reconf_timer_cb, 0, 0);
	if (pq->done || pq->cancelled) {
		printf("BUG %s: second callback or callback after cancel\n",
		    pq->name);
		n_wrong++;
	}
	/* The pool hands over its loop time, so its users read no clock. */
	if (now_ms != uv_now(loop)) {
		printf("BUG %s: callback time %llu, loop time %llu\n",
		    pq->name, (unsigned long long)now_ms,
		    (unsigned long long)uv_now(loop));
		n_wrong++;
	}
	pq->done = 1;
	pq->req = NULL;
	if (status == 0) {
		if (answer == NULL || info == NULL ||
		    dnsmsg_parse_answer(answer, len, &pq->dq.q, &check) != 0) {
			printf("wrong %s len=%zu\n", pq->name, len);
			n_wrong++;
		} else {
			an = (unsigned)answer[6] << 8 | answer[7];
			if (!quiet)
				printf("answer %s rcode=%d len=%zu an=%u\n",
				    pq->name, info->rcode, len, an);
			n_answered++;
		}
	} else {
		if (status == UPSTREAM_ECLOSED)
			n_closed_cbs++;
		if (!quiet || status != UPSTREAM_ECLOSED)
			printf("fail %s status=%d\n", pq->name, status);
		n_failed++;
	}
	if (cancel_every > 0 && !cancel_done) {
		size_t i;

		/* At the first answer the rest are in flight: cancelling
		 * them leaves tombstones that their answers must hit. */
		cancel_done = 1;
		for (i = 0; i < n_qs; i++) {
			if ((i + 1) % cancel_every != 0 || qs[i].done ||
			    qs[i].req == NULL)
				continue;
			upstream_cancel(qs[i].req);
			qs[i].req = NULL;
			qs[i].cancelled = 1;
			n_cancelled++;
			pending--;
		}
	}
	if (close_after >= 0 && n_cbs == (size_t)close_after && pool != NULL) {
		struct upstream_pool *p = pool;

		/* Re-entrant close from inside a callback. */
		pool = NULL;
		upstream_pool_close(p);
	}
	if (--pending == 0 && next_q >= n_qs)
		uv_stop(loop);
}

/* Decode a base64 SHA-256 pin into the last upstream's pin list. */
static int
add_pin(struct conf *conf, const char *b64)
{
	struct conf_upstream *u;
	gnutls_datum_t in, out = { NULL, 0 };
	int ok;

	if (conf->n_upstream == 0)
		return -1;
	u = &conf->upstream[conf->n_upstream - 1];
	in.data = (unsigned char *)(uintptr_t)b64;
	in.size = (unsigned)strlen(b64);
	if (u->n_pins >= CONF_MAX_PINS ||
	    gnutls_base64_decode2(&in, &out) < 0)
		return -1;
	ok = out.size == 32;
	if (ok)
		memcpy(u->pins[u->n_pins++], out.data, 32);
	gnutls_free(out.data);
	return ok ? 0 : -1;
}

static void
print_status(const char *tag)
{
	struct upstream_status st;
	uint64_t now = uv_now(loop);
	char buckets[16 * 21];
	size_t i, j, off;

	for (i = 0; i < upstream_count(pool); i++) {
		upstream_get_status(pool, i, &st);
		off = 0;
		buckets[0] = '\0';
		for (j = 0; j < UPSTREAM_RTT_BUCKETS; j++)
			off += (size_t)snprintf(buckets + off,
			    sizeof(buckets) - off, "%s%llu", j ? "," : "",
			    (unsigned long long)st.rtt_bucket[j]);
		printf("%s %zu name=%s connected=%d healthy=%d "
		    "fail_count=%u retry_in=%lld srtt_ms=%u verified=%d "
		    "cert_expiry=%lld queries=%llu answers=%llu timeouts=%llu "
		    "addr=%s auth_name=%s inflight=%u handshakes=%llu "
		    "handshakes_resumed=%llu err_connect=%llu "
		    "err_handshake=%llu err_verify=%llu err_pin=%llu "
		    "err_timeout=%llu err_reset=%llu err_bad_answer=%llu "
		    "last_verify_ok=%lld last_handshake=%lld tls_version=%s "
		    "resumed=%d chain_min_not_after=%lld pin=%s pin_state=%d "
		    "rtt_count=%llu rtt_sum_ms=%.0f rtt_buckets=%s "
		    "last_verify_error=\"%s\" last_error=\"%s\"\n",
		    tag, i, st.name, st.connected,
		    st.healthy, st.fail_count,
		    st.retry_at_ms ? (long long)(st.retry_at_ms - now) : 0LL,
		    (unsigned)st.srtt_ms, st.verified,
		    (long long)st.cert_expiry,
		    (unsigned long long)st.queries,
		    (unsigned long long)st.answers,
		    (unsigned long long)st.timeouts, st.addr, st.auth_name,
		    st.inflight, (unsigned long long)st.handshakes,
		    (unsigned long long)st.handshakes_resumed,
		    (unsigned long long)st.err_connect,
		    (unsigned long long)st.err_handshake,
		    (unsigned long long)st.err_verify,
		    (unsigned long long)st.err_pin,
		    (unsigned long long)st.err_timeout,
		    (unsigned long long)st.err_reset,
		    (unsigned long long)st.err_bad_answer,
		    (long long)st.last_verify_ok,
		    (long long)st.last_handshake, st.tls_version, st.resumed,
		    (long long)st.chain_min_not_after, st.pin_sha256,
		    st.pin_state, (unsigned long long)st.rtt_count,
		    st.rtt_sum_s * 1000.0, buckets, st.last_verify_error,
		    st.last_error);
	}
}

static void
stop_timer_cb(uv_timer_t *t)
{
	(void)t;
	uv_stop(loop);
}

static void
stagger_timer_cb(uv_timer_t *t)
{
	(void)t;
	/* Through the async handle: the queries go out from an I/O callback
	 * (see kick_cb), not from a timer callback. */
	uv_async_send(&kick);
}

/* Send the round's queries (all, or with --stagger-ms the next one).
 * Called from an I/O callback of the loop (an async wake-up), as the
 * daemon calls upstream_query from a socket's read callback: tls.c sends
 * what was written in a loop turn once that turn's I/O is done. */
static void
kick_cb(uv_async_t *a)
{
	size_t i;
	int rc;

	(void)a;
	while (next_q < n_qs && pool != NULL) {
		i = next_q++;
		/* pending counts before the call: no callback comes from
		 * upstream_query itself, but keep the count exact anyway. */
		pending++;
		rc = upstream_query(pool, qs[i].msg, (size_t)qs[i].len,
		    &qs[i].dq.q, probe_cb, &qs[i], &qs[i].req);
		if (rc != 0) {
			/* Only with --fail-alloc: no callback will come. */
			printf("refused %s rc=%d\n", qs[i].name, rc);
			qs[i].done = 1;
			pending--;
		}
		if (stagger_ms > 0 && next_q < n_qs) {
			uv_timer_start(&stagger_timer, stagger_timer_cb,
			    stagger_ms, 0);
			break;
		}
	}
	if (pool == NULL)
		next_q = n_qs;   /* closed by --close-after: no more to send */
	if (pending == 0 && next_q >= n_qs)
		uv_stop(loop);
}

/* Send every query once; run the loop until all callbacks came. */
static int
run_round(void)
{
	size_t i;

	n_answered = n_failed = n_cancelled = 0;
	round_cbs = 0;
	cur_round++;
	cancel_done = 0;
	pending = 0;
	next_q = 0;
	for (i = 0; i < n_qs; i++) {
		qs[i].done = 0;
		qs[i].cancelled = 0;
		qs[i].req = NULL;
	}
	uv_async_send(&kick);
	uv_run(loop, UV_RUN_DEFAULT);
	if (pending != 0 || next_q < n_qs) {
		fprintf(stderr, "loop ended with %zu callbacks missing\n",
		    pending + (n_qs - next_q));
		return -1;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	static struct conf conf;
	char err[512];
	const char *ca = "";
	struct tls_ctx *tls = NULL;
	char tag[32];
	unsigned long count = 1, qtype = DNS_TYPE_A;
	unsigned long until_ok = 0, linger_ms = 0;
	unsigned long rounds = 1, interval_ms = 0;
	long fail_alloc = -1;
	int pause_stdin = 0, debug = 0, status = 0, all_ok = 1;
	int i, round, rc, ok;
	size_t k, n_names, expect;
	uv_timer_t stop_timer;
	uint64_t t0;

	conf_init(&conf);
	for (i = 1; i < argc && argv[i][0] == '-'; i++) {
		const char *o = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(o, "--pause-stdin") == 0) {
			pause_stdin = 1;
			continue;
		}
		if (strcmp(o, "--quiet") == 0) {
			quiet = 1;
			continue;
		}
		if (strcmp(o, "--debug") == 0) {
			debug = 1;
			continue;
		}
		if (strcmp(o, "--status") == 0) {
			status = 1;
			continue;
		}
		if (strcmp(o, "--reconf-nomem") == 0) {
			reconf_nomem = 1;
			continue;
		}
		if (v == NULL)
			usage();
		i++;
		if (strcmp(o, "--ca") == 0) {
			ca = v;
		} else if (strcmp(o, "-u") == 0) {
			if (conf.n_upstream >= CONF_MAX_UPSTREAM)
				usage();
			if (conf_parse_upstream(v,
			    &conf.upstream[conf.n_upstream], err,
			    sizeof(err)) < 0) {
				fprintf(stderr, "-u %s: %s\n", v, err);
				return 2;
			}
			conf.n_upstream++;
		} else if (strcmp(o, "--reconf-u") == 0) {
			if (reconf_list.n_upstream >= CONF_MAX_UPSTREAM)
				usage();
			if (conf_parse_upstream(v, &reconf_list.upstream[
			    reconf_list.n_upstream], err, sizeof(err)) < 0) {
				fprintf(stderr, "--reconf-u %s: %s\n", v, err);
				return 2;
			}
			reconf_list.n_upstream++;
		} else if (strcmp(o, "--reconf-round") == 0) {
			reconf_round = (int)strtol(v, NULL, 10);
		} else if (strcmp(o, "--reconf-new-tls") == 0) {
			reconf_new_tls = (int)strtol(v, NULL, 10);
		} else if (strcmp(o, "--reconf-at") == 0) {
			reconf_at = strtoul(v, NULL, 10);
		} else if (strcmp(o, "--count") == 0) {
			count = strtoul(v, NULL, 10);
		} else if (strcmp(o, "--type") == 0) {
			qtype = strtoul(v, NULL, 10);
		} else if (strcmp(o, "--timeout-ms") == 0) {
			conf.query_timeout_ms = (unsigned)strtoul(v, NULL, 10);
		} else if (strcmp(o, "--connect-timeout-ms") == 0) {
			conf.connect_timeout_ms = (unsigned)strtoul(v, NULL,
			    10);
		} else if (strcmp(o, "--idle-ms") == 0) {
			conf.idle_timeout_ms = (unsigned)strtoul(v, NULL, 10);
		} else if (strcmp(o, "--cancel") == 0) {
			cancel_every = strtoul(v, NULL, 10);
		} else if (strcmp(o, "--close-after") == 0) {
			close_after = strtol(v, NULL, 10);
		} else if (strcmp(o, "--fail-alloc") == 0) {
			fail_alloc = strtol(v, NULL, 10);
		} else if (strcmp(o, "--linger-ms") == 0) {
			linger_ms = strtoul(v, NULL, 10);
		} else if (strcmp(o, "--until-ok") == 0) {
			until_ok = strtoul(v, NULL, 10);
		} else if (strcmp(o, "--rounds") == 0) {
			rounds = strtoul(v, NULL, 10);
		} else if (strcmp(o, "--stagger-ms") == 0) {
			stagger_ms = strtoul(v, NULL, 10);
		} else if (strcmp(o, "--interval-ms") == 0) {
			interval_ms = strtoul(v, NULL, 10);
		} else if (strcmp(o, "--select") == 0) {
			if (strcmp(v, "ordered") == 0)
				conf.selection = CONF_SELECT_ORDERED;
			else if (strcmp(v, "round-robin") == 0)
				conf.selection = CONF_SELECT_ROUND_ROBIN;
			else if (strcmp(v, "fastest") == 0)
				conf.selection = CONF_SELECT_FASTEST;
			else
				usage();
		} else if (strcmp(o, "--answer-timeout-ms") == 0) {
			conf.answer_timeout_ms = (unsigned)strtoul(v, NULL,
			    10);
		} else if (strcmp(o, "--backoff-max-ms") == 0) {
			conf.backoff_max_ms = (unsigned)strtoul(v, NULL, 10);
		} else if (strcmp(o, "--lifetime-ms") == 0) {
			conf.max_conn_lifetime_ms = (unsigned)strtoul(v, NULL,
			    10);
		} else if (strcmp(o, "--pin") == 0) {
			if (add_pin(&conf, v) < 0) {
				fprintf(stderr, "--pin %s: not a base64 "
				    "SHA-256 after a -u\n", v);
				return 2;
			}
		} else {
			usage();
		}
	}
	n_names = (size_t)(argc - i);
	if (n_names == 0 || conf.n_upstream == 0 || count == 0)
		usage();
	log_open(debug ? LOGL_DEBUG : LOGL_INFO, 1);
	/* As in main.c: a write to a peer that left must be an error, not
	 * the end of the process. */
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);

	n_qs = n_names * count;
	qs = mem_calloc(n_qs, sizeof(*qs));
	if (qs == NULL)
		return 2;
	for (k = 0; k < n_qs; k++) {
		unsigned char *buf;
		int len;

		qs[k].name = argv[i + k % n_names];
		if (ares_create_query(qs[k].name, 1, (int)qtype,
		    (unsigned short)k, 1, &buf, &len, 0) != ARES_SUCCESS) {
			fprintf(stderr, "cannot build a query for %s\n",
			    qs[k].name);
			return 2;
		}
		qs[k].msg = mem_alloc((size_t)len);
		if (qs[k].msg == NULL)
			return 2;
		memcpy(qs[k].msg, buf, (size_t)len);
		qs[k].len = len;
		ares_free_string(buf);
		if (dnsmsg_parse_query(qs[k].msg, (size_t)len, &qs[k].dq) !=
		    0) {
			fprintf(stderr, "query for %s does not parse\n",
			    qs[k].name);
			return 2;
		}
	}

	if (tls_ctx_new(ca, &tls, err, sizeof(err)) < 0) {
		fprintf(stderr, "tls: %s\n", err);
		return 2;
	}
	ca_file = ca;
	cur_tls = tls;
	/* On the heap, so that a reconfigure can free it. */
	cur_conf = mem_alloc(sizeof(*cur_conf));
	if (cur_conf == NULL)
		return 2;
	*cur_conf = conf;
	loop = uv_default_loop();
	uv_timer_init(loop, &stop_timer);
	uv_async_init(loop, &kick, kick_cb);
	uv_timer_init(loop, &stagger_timer);
	uv_timer_init(loop, &reconf_timer);
	pool = upstream_pool_new(loop, cur_conf, tls, &metrics);
	if (pool == NULL)
		return 2;

	ok = 0;
	t0 = uv_now(loop);
	/* From here on the Nth allocation fails: the pool must turn it into
	 * an error or a callback, never a crash or a leak. */
	if (fail_alloc >= 0)
		mem_fail_after(fail_alloc);
	for (round = 1;; round++) {
		if (pool == NULL)
			break;
		if (run_round() < 0) {
			ok = 0;
			break;
		}
		expect = n_qs - n_cancelled;
		ok = n_wrong == 0 && n_answered == expect;
		printf("round %d answered=%zu failed=%zu cancelled=%zu\n",
		    round, n_answered, n_failed, n_cancelled);
		if (reconf_list.n_upstream > 0) {
			/* A reconfigure due in this round happens now if
			 * the round ended before its timer ran. */
			if (reconf_due()) {
				uv_timer_stop(&reconf_timer);
				reconfigure();
			}
			snprintf(tag, sizeof(tag), "roundmetrics %d", round);
			print_metrics(tag);
		}
		if (!ok)
			all_ok = 0;
		if ((unsigned long)round < rounds) {
			if (interval_ms > 0) {
				uv_timer_start(&stop_timer, stop_timer_cb,
				    interval_ms, 0);
				uv_run(loop, UV_RUN_DEFAULT);
			}
			continue;
		}
		if (rounds > 1)
			ok = ok && all_ok;
		if (round == 1 && pause_stdin) {
			char line[64];

			if (fgets(line, sizeof(line), stdin) == NULL)
				break;
			uv_update_time(loop);
			t0 = uv_now(loop);
			continue;
		}
		if (ok || until_ok == 0)
			break;
		uv_update_time(loop);
		if (uv_now(loop) - t0 >= until_ok)
			break;
		uv_timer_start(&stop_timer, stop_timer_cb, 100, 0);
		uv_run(loop, UV_RUN_DEFAULT);
	}

	if (linger_ms > 0 && pool != NULL) {
		/* Let late answers arrive (they must be dropped silently). */
		uv_timer_start(&stop_timer, stop_timer_cb, linger_ms, 0);
		uv_run(loop, UV_RUN_DEFAULT);
	}
	if (status && pool != NULL)
		print_status("status");
	print_metrics("metrics");

	mem_fail_after(-1);
	if (pool != NULL)
		upstream_pool_close(pool);
	uv_close((uv_handle_t *)&stop_timer, NULL);
	uv_close((uv_handle_t *)&kick, NULL);
	uv_close((uv_handle_t *)&stagger_timer, NULL);
	uv_close((uv_handle_t *)&reconf_timer, NULL);
	/* Every handle must close by itself now: nothing may keep it alive. */
	uv_run(loop, UV_RUN_DEFAULT);
	rc = uv_loop_close(loop);
	if (rc != 0) {
		fprintf(stderr, "loop still has handles: %s\n",
		    uv_strerror(rc));
		ok = 0;
	}
	tls_ctx_free(cur_tls);
	mem_free(cur_conf);
	for (k = 0; k < n_qs; k++)
		mem_free(qs[k].msg);
	mem_free(qs);
	if (n_wrong > 0)
		ok = 0;
	return ok ? 0 : 1;
}
