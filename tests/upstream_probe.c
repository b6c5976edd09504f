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
 * Exit status: 0 when the last round had every (uncancelled) query
 * answered, 1 otherwise, 2 on usage or setup errors.
 */
#include <ares.h>
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

static void
usage(void)
{
	fprintf(stderr, "usage: upstream_probe [--ca FILE] -u ADDR@PORT#NAME "
	    "[-u ...] [--count N] [--type N] [--timeout-ms T]\n"
	    "    [--connect-timeout-ms T] [--idle-ms T] [--cancel K] "
	    "[--close-after N]\n"
	    "    [--pause-stdin] [--until-ok MS] [--linger-ms MS] "
	    "[--fail-alloc N]\n    [--quiet] [--debug] NAME...\n");
	exit(2);
}

static void
probe_cb(void *arg, int status, const uint8_t *answer, size_t len,
    const struct dnsmsg_answer_info *info)
{
	struct probe_q *pq = arg;
	struct dnsmsg_answer_info check;
	unsigned an = 0;

	n_cbs++;
	if (pq->done || pq->cancelled) {
		printf("BUG %s: second callback or callback after cancel\n",
		    pq->name);
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
	if (--pending == 0)
		uv_stop(loop);
}

static void
stop_timer_cb(uv_timer_t *t)
{
	(void)t;
	uv_stop(loop);
}

/* Send every query once; run the loop until all callbacks came. */
static int
run_round(void)
{
	size_t i;
	int rc;

	n_answered = n_failed = n_cancelled = 0;
	cancel_done = 0;
	pending = 0;
	uv_update_time(loop);
	for (i = 0; i < n_qs; i++) {
		qs[i].done = 0;
		qs[i].cancelled = 0;
		rc = upstream_query(pool, qs[i].msg, (size_t)qs[i].len,
		    &qs[i].dq.q, probe_cb, &qs[i], &qs[i].req);
		if (rc != 0) {
			/* Only with --fail-alloc: no callback will come. */
			printf("refused %s rc=%d\n", qs[i].name, rc);
			qs[i].done = 1;
			continue;
		}
		pending++;
	}
	if (pending > 0)
		uv_run(loop, UV_RUN_DEFAULT);
	if (pending != 0) {
		fprintf(stderr, "loop ended with %zu callbacks missing\n",
		    pending);
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
	unsigned long count = 1, qtype = DNS_TYPE_A;
	unsigned long until_ok = 0, linger_ms = 0;
	long fail_alloc = -1;
	int pause_stdin = 0, debug = 0;
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
	loop = uv_default_loop();
	uv_timer_init(loop, &stop_timer);
	pool = upstream_pool_new(loop, &conf, tls, &metrics);
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
	printf("metrics tls_connects=%llu tls_handshakes=%llu "
	    "tls_handshake_failures=%llu tls_verify_failures=%llu "
	    "tls_closed=%llu upstream_queries=%llu upstream_answers=%llu "
	    "upstream_resent=%llu upstream_timeouts=%llu "
	    "upstream_mismatch=%llu upstream_malformed=%llu closed_cbs=%zu\n",
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
	    (unsigned long long)metrics.upstream_malformed, n_closed_cbs);

	mem_fail_after(-1);
	if (pool != NULL)
		upstream_pool_close(pool);
	uv_close((uv_handle_t *)&stop_timer, NULL);
	/* Every handle must close by itself now: nothing may keep it alive. */
	uv_run(loop, UV_RUN_DEFAULT);
	rc = uv_loop_close(loop);
	if (rc != 0) {
		fprintf(stderr, "loop still has handles: %s\n",
		    uv_strerror(rc));
		ok = 0;
	}
	tls_ctx_free(tls);
	for (k = 0; k < n_qs; k++)
		mem_free(qs[k].msg);
	mem_free(qs);
	if (n_wrong > 0)
		ok = 0;
	return ok ? 0 : 1;
}
