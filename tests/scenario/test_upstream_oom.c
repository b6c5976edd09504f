/* test_upstream_oom.c: the upstream path with each allocation failing in
 * turn.
 *
 * The real upstream.c runs over tests/fuzz/fake_tls.c (linked before
 * libdotproxy.a, so the archive's tls.o is never used). One script asks
 * queries through upstream_query on a pool of two upstreams, lets the
 * connections come up, answers what was written (matching IDs, answers
 * split over reads, one answer to a cancelled query arriving late), has
 * the server close a connection with queries in flight (they are resent
 * on a new connection), has a connection attempt fail, cancels a query,
 * and closes the pool with queries still waiting. It is played with
 * mem_fail_after(n) for n = 0, 1, 2, ... until a run ends without the
 * failure having come: the request, connection and session allocations
 * each fail once, wherever they fall in the script.
 *
 * Each run must end with every query accounted for: upstream_query
 * refused it (-ENOMEM, which query.c counts as an overload drop), or its
 * callback came exactly once (an answer for its own question, or a
 * failure), or it was cancelled; no callback from inside upstream_query;
 * after upstream_pool_close and the loop's last turn every handle and
 * connection is gone. The sanitizer build checks for leaks and crashes.
 *
 * The loop only turns with UV_RUN_NOWAIT (connections come up on the next
 * turn) and no timer is due during a run: the timeouts are left at their
 * seconds-long defaults, which the script never reaches.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <uv.h>

#include "conf.h"
#include "dnsmsg.h"
#include "fake_tls.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "upstream.h"
#include "../common/wire.h"

#define N_REQS 16

struct req {
	struct upstream_req *h;
	int accepted;
	int calls;
	int status;
	int cancelled;
	struct dnsmsg_question q;
};

struct world {
	uv_loop_t loop;
	struct conf conf;
	struct metrics m;
	struct upstream_pool *pool;
	struct req r[N_REQS];
	size_t n;
	int in_query;
};

/* Per-request callbacks: one trampoline per slot, as the arg must name
 * the request and the world both. */
struct slot {
	struct world *w;
	size_t i;
};

static struct slot slots[N_REQS];

static void
slot_cb(void *arg, int status, const uint8_t *answer, size_t len,
    const struct dnsmsg_answer_info *info, const char *upstream,
    uint64_t now_ms)
{
	struct slot *s = arg;
	struct world *w = s->w;
	struct req *r = &w->r[s->i];
	struct dnsmsg_answer_info again;

	assert_false(w->in_query);
	assert_true(r->accepted);
	assert_false(r->cancelled);
	assert_int_equal(r->calls, 0);
	/* The pool hands over its loop time at the callback. */
	assert_int_equal(now_ms, uv_now(&w->loop));
	r->calls++;
	r->status = status;
	r->h = NULL;
	if (status == 0) {
		assert_non_null(answer);
		assert_non_null(info);
		assert_non_null(upstream);
		assert_int_equal(dnsmsg_parse_answer(answer, len, &r->q,
		    &again), 0);
	} else {
		assert_true(status < 0);
		assert_null(answer);
	}
}

static void
ask(struct world *w, const char *name)
{
	uint8_t b[512], up[512];
	struct dnsmsg_query q;
	struct req *r;
	size_t n, len;
	int rc;

	assert_true(w->n < N_REQS);
	r = &w->r[w->n];
	slots[w->n].w = w;
	slots[w->n].i = w->n;
	memset(b, 0, DNS_HDR_LEN);
	b[2] = 1;
	b[5] = 1;
	n = DNS_HDR_LEN + put_name(b + DNS_HDR_LEN, name);
	memcpy(b + n, "\0\1\0\1", 4);
	n += 4;
	assert_int_equal(dnsmsg_parse_query(b, n, &q), 0);
	assert_int_equal(dnsmsg_upstream_query(&q, up, sizeof(up), &len), 0);
	r->q = q.q;
	w->in_query = 1;
	rc = upstream_query(w->pool, up, len, &r->q, slot_cb, &slots[w->n],
	    &r->h);
	w->in_query = 0;
	if (rc == 0)
		r->accepted = 1;
	else
		assert_int_equal(rc, -ENOMEM);
	w->n++;
}

static void
cancel(struct world *w, size_t i)
{
	struct req *r = &w->r[i];

	if (!r->accepted || r->calls != 0 || r->cancelled)
		return;
	w->in_query = 1;
	upstream_cancel(r->h);
	w->in_query = 0;
	r->cancelled = 1;
}

static void
turn(struct world *w)
{
	(void)uv_run(&w->loop, UV_RUN_NOWAIT);
}

/* Answer the frames written on established connections: their newest
 * `last` frames (0: all remembered), each with one A record, split into
 * two reads when split is set. */
static void
answer_written(int split)
{
	uint8_t a[700];
	const uint8_t *f;
	struct tls_conn *c;
	struct dnsmsg_query q;
	size_t ci, k, kept, flen, n;

	for (ci = 0; ci < fake_tls_count(); ci++) {
		c = fake_tls_conn(ci);
		if (!fake_tls_established(c))
			continue;
		kept = fake_tls_written(c);
		if (kept > FAKE_TLS_FRAMES)
			kept = FAKE_TLS_FRAMES;
		for (k = 0; k < kept; k++) {
			f = fake_tls_frame(c, k, &flen);
			assert_non_null(f);
			assert_int_equal(dnsmsg_parse_query(f + 2, flen - 2,
			    &q), 0);
			n = 2 + q.q.end;
			memcpy(a, f, n);
			a[4] = 0x81;
			a[5] = 0x80;
			memset(a + 8, 0, 6);
			a[9] = 1;
			memcpy(a + n, "\300\14\0\1\0\1\0\0\1\54\0\4\300\0\2\1",
			    16);
			n += 16;
			a[0] = (uint8_t)((n - 2) >> 8);
			a[1] = (uint8_t)(n - 2);
			/* The pool may close c from the callback. */
			if (fake_tls_conn(ci) != c || !fake_tls_established(c))
				break;
			if (split) {
				fake_tls_feed(c, a, 3);
				if (fake_tls_conn(ci) != c ||
				    !fake_tls_established(c))
					break;
				fake_tls_feed(c, a + 3, n - 3);
			} else {
				fake_tls_feed(c, a, n);
			}
		}
	}
}

/* One run with the (n+1)th allocation failing (n < 0: none). Returns 1
 * when a failure was injected. */
static int
run_script(long n, struct metrics *m_out)
{
	struct world *w = calloc(1, sizeof(*w));
	char err[CONF_ERR_MAX];
	unsigned long before;
	size_t i, accounted = 0;

	assert_non_null(w);
	fake_tls_reset(7);
	assert_int_equal(uv_loop_init(&w->loop), 0);
	conf_init(&w->conf);
	assert_int_equal(conf_set(&w->conf, "upstream",
	    "127.0.0.1@853#a.test", "test", err, sizeof(err)), 0);
	assert_int_equal(conf_set(&w->conf, "upstream",
	    "127.0.0.2@853#b.test", "test", err, sizeof(err)), 0);
	assert_int_equal(conf_set(&w->conf, "upstream-selection", "ordered",
	    "test", err, sizeof(err)), 0);
	assert_int_equal(conf_finish(&w->conf, err, sizeof(err)), 0);
	w->pool = upstream_pool_new(&w->loop, &w->conf, NULL, &w->m);
	assert_non_null(w->pool);

	before = mem_failures();
	mem_fail_after(n);

	ask(w, "one.example");
	ask(w, "two.example");
	ask(w, "three.example");
	turn(w);                          /* connected_cb */
	ask(w, "four.example");           /* straight onto the connection */
	cancel(w, 1);                     /* its answer will come late */
	answer_written(0);
	turn(w);

	/* The server closes with a query in flight: resent on a new
	 * connection to the same upstream. */
	ask(w, "five.example");
	ask(w, "six.example");
	if (fake_tls_count() > 0)
		fake_tls_peer_close(fake_tls_conn(0), TLS_E_EOF);
	turn(w);
	turn(w);
	answer_written(1);
	turn(w);

	/* A connection attempt that fails: the other upstream takes it. */
	for (i = 0; i < fake_tls_count(); i++)
		fake_tls_peer_close(fake_tls_conn(0), TLS_E_IO);
	fake_tls_set_outcome(FAKE_TLS_CONNECT_FAIL);
	ask(w, "seven.example");
	fake_tls_set_outcome(FAKE_TLS_OK);
	turn(w);                          /* seven moves to b.test */
	ask(w, "eight.example");
	turn(w);
	turn(w);
	answer_written(0);
	ask(w, "nine.example");           /* waits until the close */
	turn(w);

	upstream_pool_close(w->pool);
	assert_int_equal(uv_run(&w->loop, UV_RUN_DEFAULT), 0);
	mem_fail_after(-1);
	assert_int_equal(fake_tls_count(), 0);
	assert_int_equal(uv_loop_close(&w->loop), 0);

	for (i = 0; i < w->n; i++) {
		struct req *r = &w->r[i];

		if (!r->accepted || r->cancelled)
			assert_int_equal(r->calls, 0);
		else
			assert_int_equal(r->calls, 1);
		accounted += !r->accepted || r->cancelled || r->calls == 1;
	}
	assert_int_equal(accounted, w->n);
	if (m_out != NULL)
		*m_out = w->m;
	free(w);
	return mem_failures() != before;
}

static void
test_each_allocation_fails(void **state)
{
	long n;

	(void)state;
	assert_int_equal(run_script(-1, NULL), 0);
	for (n = 0; run_script(n, NULL); n++)
		assert_true(n < 10000);
	assert_true(n > 5);
	print_message("upstream script: %ld allocations failed in turn\n", n);
}

/* The script without failures reaches what it means to: answers, a
 * resend, a late answer, a failed connection, a query closed with the
 * pool. */
static void
test_script_coverage(void **state)
{
	struct metrics m;

	(void)state;
	assert_int_equal(run_script(-1, &m), 0);
	print_message("conns %zu answers %llu resent %llu hs-fail %llu\n", fake_tls_created(), (unsigned long long)m.upstream_answers, (unsigned long long)m.upstream_resent, (unsigned long long)m.tls_handshake_failures);
	assert_true(fake_tls_created() >= 4);
	assert_true(m.upstream_answers >= 7);
	assert_true(m.upstream_resent >= 1);
	assert_true(m.tls_handshake_failures >= 1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_script_coverage),
		cmocka_unit_test(test_each_allocation_fails),
	};

	log_open(LOGL_ERR, 1);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
