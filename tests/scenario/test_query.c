/* test_query.c: scenario tests of query.c with the cache, against a fake upstream.
 *
 * In the spirit of Unbound's replay tests: each test plays one scenario
 * through the real query.c, cache.c, dnsmsg.c and local.c, with
 * fake_upstream.c standing in for the DoT pool. Every out-query the fake
 * sees is counted and inspected, every client answer is checked (ID,
 * rcode, TTL, the client's spelling of the question, the OPT record and
 * its Extended DNS Error), and a cached repeat must cause no out-query.
 *
 * Time is the test's. query.c reads no clock: query_handle takes now_ms
 * from its caller, pending_complete from the pool (the fake hands it the
 * time given to fake_answer or fake_fail), and the stale deadlines are
 * met by query_stale_due(now). T0 is the loop's time at uv_loop_init (the
 * loop is not run, so the fake's shutdown, which hands over its last
 * time, agrees with it); "t + n s" is T0 + n * 1000 for queries and
 * upstream answers alike. A stale entry is put into the cache with
 * cache_put at T0 - 2 s, built and parsed like one from upstream. One
 * test (test_stale_timer) runs the loop (UV_RUN_ONCE, bounded) until the
 * 50 ms stale timer fires, to check that the timer calls query_stale_due
 * with the loop's time: a short real wait on an event, not a sleep.
 *
 * Built with the fake's object before libdotproxy.a, so the archive's
 * upstream.o (and tls.o, GnuTLS) is never linked.
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

#include "cache.h"
#include "conf.h"
#include "dnsmsg.h"
#include "fake_upstream.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "query.h"
#include "upstream.h"
#include "../common/wire.h"

#define N_CLIENTS 128
#define ANS_MAX 4096
#define SEC 1000u

/* Client query flags for build_query. */
#define Q_EDNS 0x01
#define Q_DO 0x02
#define Q_ECS 0x04   /* also a cookie option */
#define Q_CD 0x08
#define Q_AD 0x10
#define Q_NORD 0x20  /* RD clear */
#define Q_CH 0x40    /* class CH instead of IN */

/* What one pending client got from its done_cb. */
struct client {
	int done;               /* times done_cb ran: must end at 1 */
	int null_msg;           /* done_cb had msg == NULL */
	uint8_t q[512];         /* the query it sent */
	size_t q_len;
	uint8_t a[ANS_MAX];     /* the answer it got */
	size_t a_len;
};

struct sc {
	uv_loop_t loop;
	struct conf conf;
	struct cache *cache;
	struct metrics m;
	struct upstream_pool *pool;
	struct query_ctx ctx;
	int ctx_open;
	uint64_t t0;
	size_t n_done;          /* done callbacks, all clients */
	struct client cl[N_CLIENTS];
};

/* What the test reads back from an answer, by its own walk of the bytes
 * (independent of dnsmsg.c, which is under test). */
struct ans {
	uint16_t id, flags;
	int rcode;
	uint16_t qd, an, ns, ar;
	size_t qend;            /* end of the question */
	size_t n_rr;            /* records other than OPT */
	uint16_t type[16];
	uint32_t ttl[16];
	uint8_t a4[4];          /* rdata of the first A record */
	int n_opt;
	uint16_t udp;           /* OPT payload size */
	int do_bit;
	int ede;                /* -1 when no EDE option */
	int n_options;
	uint16_t opt_code[16];
};

/* ---- wire helpers (and tests/common/wire.h's) ---- */

/* Answers sent with this rcode, from any source. */
static uint64_t
answers_by_rcode(const struct metrics *m, int rcode)
{
	uint64_t n = 0;
	unsigned src;

	for (src = 0; src < METRICS_N_SRC; src++)
		n += m->responses[rcode][src];
	return n;
}

static uint32_t
get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | p[3];
}

/* wire.h's put_name, with each label checked: some tests build their
 * names, and a label too long would make a different query, not a failure. */
static size_t
put_name_checked(uint8_t *p, const char *name)
{
	const char *l = name, *dot;
	size_t lab;

	while (*l != '\0') {
		dot = strchr(l, '.');
		lab = dot ? (size_t)(dot - l) : strlen(l);
		assert_true(lab > 0 && lab < 64);
		l += lab + (dot ? 1 : 0);
	}
	return put_name(p, name);
}

static size_t
build_query(uint8_t *b, uint16_t id, const char *name, uint16_t qtype,
    int fl)
{
	size_t n = DNS_HDR_LEN, rdlen_at;

	memset(b, 0, DNS_HDR_LEN);
	put16(b, id);
	put16(b + 2, (uint16_t)(((fl & Q_NORD) ? 0 : DNS_FLAG_RD) |
	    ((fl & Q_CD) ? DNS_FLAG_CD : 0) | ((fl & Q_AD) ? DNS_FLAG_AD : 0)));
	put16(b + 4, 1);
	n += put_name_checked(b + n, name);
	put16(b + n, qtype);
	put16(b + n + 2, (fl & Q_CH) ? 3 : 1);
	n += 4;
	if (!(fl & Q_EDNS))
		return n;
	put16(b + 10, 1);
	b[n++] = 0;                     /* root owner */
	put16(b + n, DNS_TYPE_OPT);
	put16(b + n + 2, 4096);         /* the client's payload size */
	put32(b + n + 4, (fl & Q_DO) ? 0x8000 : 0);
	rdlen_at = n + 8;
	n += 10;
	if (fl & Q_ECS) {
		/* RFC 7871: family 1, source /24, scope 0, 192.0.2. */
		put16(b + n, EDNS_OPT_ECS);
		put16(b + n + 2, 7);
		put16(b + n + 4, 1);
		b[n + 6] = 24;
		b[n + 7] = 0;
		b[n + 8] = 192;
		b[n + 9] = 0;
		b[n + 10] = 2;
		n += 11;
		/* RFC 7873 client cookie */
		put16(b + n, 10);
		put16(b + n + 2, 8);
		memcpy(b + n + 4, "\1\2\3\4\5\6\7\10", 8);
		n += 12;
	}
	put16(b + rdlen_at, (uint16_t)(n - rdlen_at - 2));
	return n;
}

/* The question section as sent upstream: lowercase name, type, class IN. */
static size_t
put_question(uint8_t *b, const char *name, uint16_t qtype)
{
	size_t n = put_name_checked(b, name);

	put16(b + n, qtype);
	put16(b + n + 2, 1);
	return n + 4;
}

static size_t
answer_header(uint8_t *b, uint16_t id, int rcode, const char *name,
    uint16_t qtype)
{
	memset(b, 0, DNS_HDR_LEN);
	put16(b, id);
	put16(b + 2, (uint16_t)(DNS_FLAG_QR | DNS_FLAG_RD | DNS_FLAG_RA |
	    rcode));
	put16(b + 4, 1);
	return DNS_HDR_LEN + put_question(b + DNS_HDR_LEN, name, qtype);
}

/* An upstream's OPT record (payload 1232, no options), as a real
 * resolver adds: query.c must strip it and give each client its own. */
static size_t
put_opt(uint8_t *b, uint8_t *msg)
{
	b[0] = 0;
	put16(b + 1, DNS_TYPE_OPT);
	put16(b + 3, 1232);
	put32(b + 5, 0);
	put16(b + 9, 0);
	put16(msg + 10, (uint16_t)(get16(msg + 10) + 1));
	return 11;
}

/* NOERROR with one A record 192.0.2.<last>, TTL ttl, plus an OPT. */
static size_t
build_a_answer(uint8_t *b, uint16_t id, const char *name, uint32_t ttl,
    uint8_t last)
{
	size_t n = answer_header(b, id, DNS_RCODE_NOERROR, name, DNS_TYPE_A);

	put16(b + 6, 1);
	put16(b + n, 0xc00c);           /* the question's name */
	put16(b + n + 2, DNS_TYPE_A);
	put16(b + n + 4, 1);
	put32(b + n + 6, ttl);
	put16(b + n + 10, 4);
	b[n + 12] = 192;
	b[n + 13] = 0;
	b[n + 14] = 2;
	b[n + 15] = last;
	n += 16;
	return n + put_opt(b + n, b);
}

/* NXDOMAIN with the zone's SOA in authority: SOA TTL soa_ttl, MINIMUM
 * minimum (RFC 2308: the answer lives min of the two). */
static size_t
build_nxdomain(uint8_t *b, uint16_t id, const char *name, uint32_t soa_ttl,
    uint32_t minimum)
{
	size_t n = answer_header(b, id, DNS_RCODE_NXDOMAIN, name, DNS_TYPE_A);
	size_t rd;

	put16(b + 8, 1);
	n += put_name(b + n, "example.com");
	put16(b + n, DNS_TYPE_SOA);
	put16(b + n + 2, 1);
	put32(b + n + 4, soa_ttl);
	rd = n + 10;
	n += 10;
	n += put_name(b + n, "ns.example.com");
	n += put_name(b + n, "hostmaster.example.com");
	put32(b + n, 2024010101);       /* serial */
	put32(b + n + 4, 7200);         /* refresh */
	put32(b + n + 8, 900);          /* retry */
	put32(b + n + 12, 1209600);     /* expire */
	put32(b + n + 16, minimum);
	n += 20;
	put16(b + rd - 2, (uint16_t)(n - rd));
	return n;
}

static size_t
build_servfail(uint8_t *b, uint16_t id, const char *name)
{
	return answer_header(b, id, DNS_RCODE_SERVFAIL, name, DNS_TYPE_A);
}

static size_t
skip_name(const uint8_t *m, size_t len, size_t pos)
{
	for (;;) {
		assert_true(pos < len);
		if ((m[pos] & 0xc0) == 0xc0)
			return pos + 2;
		if (m[pos] == 0)
			return pos + 1;
		pos += 1 + (size_t)m[pos];
	}
}

static void
parse_ans(const uint8_t *m, size_t len, struct ans *a)
{
	size_t pos, i, nrr, rd, rdlen, o;
	uint16_t type;

	memset(a, 0, sizeof(*a));
	a->ede = -1;
	assert_true(len >= DNS_HDR_LEN);
	a->id = get16(m);
	a->flags = get16(m + 2);
	a->rcode = DNS_RCODE(a->flags);
	a->qd = get16(m + 4);
	a->an = get16(m + 6);
	a->ns = get16(m + 8);
	a->ar = get16(m + 10);
	assert_int_equal(a->qd, 1);
	pos = skip_name(m, len, DNS_HDR_LEN) + 4;
	assert_true(pos <= len);
	a->qend = pos;
	nrr = (size_t)a->an + a->ns + a->ar;
	for (i = 0; i < nrr; i++) {
		pos = skip_name(m, len, pos);
		assert_true(pos + 10 <= len);
		type = get16(m + pos);
		rdlen = get16(m + pos + 8);
		rd = pos + 10;
		assert_true(rd + rdlen <= len);
		if (type == DNS_TYPE_OPT) {
			a->n_opt++;
			a->udp = get16(m + pos + 2);
			a->do_bit = (get32(m + pos + 4) & 0x8000) != 0;
			for (o = rd; o < rd + rdlen; o += 4 + get16(m + o + 2)) {
				assert_true(o + 4 <= rd + rdlen);
				if (a->n_options < 16)
					a->opt_code[a->n_options++] =
					    get16(m + o);
				if (get16(m + o) == EDNS_OPT_EDE) {
					assert_true(get16(m + o + 2) >= 2);
					a->ede = get16(m + o + 4);
				}
			}
		} else {
			assert_true(a->n_rr < 16);
			if (type == DNS_TYPE_A && a->a4[0] == 0) {
				assert_int_equal(rdlen, 4);
				memcpy(a->a4, m + rd, 4);
			}
			a->type[a->n_rr] = type;
			a->ttl[a->n_rr++] = get32(m + pos + 4);
		}
		pos = rd + rdlen;
	}
	assert_int_equal(pos, len);
}

/* Check an answer to client query q: its ID, QR, rcode, the question as
 * the client spelled it, the TTL of every record, one OPT iff the client
 * sent EDNS, with EDE ede (-1 for none). */
static void
check_answer(const uint8_t *q, size_t q_len, const uint8_t *m, size_t len,
    int rcode, uint32_t ttl, int ede, struct ans *a)
{
	size_t i, qend;
	int edns;

	parse_ans(m, len, a);
	assert_int_equal(a->id, get16(q));
	assert_true(a->flags & DNS_FLAG_QR);
	assert_int_equal(a->rcode, rcode);
	qend = skip_name(q, q_len, DNS_HDR_LEN) + 4;
	assert_int_equal(a->qend, qend);
	assert_memory_equal(m + DNS_HDR_LEN, q + DNS_HDR_LEN,
	    qend - DNS_HDR_LEN);
	for (i = 0; i < a->n_rr; i++)
		assert_int_equal(a->ttl[i], ttl);
	edns = get16(q + 10) != 0;
	assert_int_equal(a->n_opt, edns ? 1 : 0);
	assert_int_equal(a->ede, edns ? ede : -1);
}

/* ---- the scenario's world ---- */

static void
done_cb(void *arg, const void *origin, const uint8_t *msg, size_t len)
{
	struct sc *s = arg;
	size_t idx;
	struct client *c;

	memcpy(&idx, origin, sizeof(idx));
	assert_true(idx < N_CLIENTS);
	c = &s->cl[idx];
	c->done++;
	s->n_done++;
	if (msg == NULL) {
		c->null_msg = 1;
		return;
	}
	assert_true(len <= sizeof(c->a));
	memcpy(c->a, msg, len);
	c->a_len = len;
}

static int
setup(void **state)
{
	struct sc *s;
	char err[CONF_ERR_MAX];

	log_open(LOGL_ERR, 1);
	s = calloc(1, sizeof(*s));
	assert_non_null(s);
	assert_int_equal(uv_loop_init(&s->loop), 0);
	s->t0 = uv_now(&s->loop);
	conf_init(&s->conf);
	assert_int_equal(conf_set(&s->conf, "stale-client-timeout", "50ms",
	    "test", err, sizeof(err)), 0);
	assert_int_equal(conf_set(&s->conf, "upstream",
	    "127.0.0.1@853#dns.test", "test", err, sizeof(err)), 0);
	assert_int_equal(conf_finish(&s->conf, err, sizeof(err)), 0);
	/* The defaults the scenarios rely on. */
	assert_int_equal(s->conf.stale_client_timeout_ms, 50);
	assert_int_equal(s->conf.cache_servfail_ttl, 5);
	assert_int_equal(s->conf.stale_refresh_interval, 30);
	assert_true(s->conf.prefetch && s->conf.serve_stale &&
	    s->conf.local_zones);
	s->cache = cache_new(s->conf.cache_size, s->conf.stale_max_age);
	assert_non_null(s->cache);
	s->pool = upstream_pool_new(&s->loop, &s->conf, NULL, &s->m);
	assert_non_null(s->pool);
	assert_int_equal(query_ctx_init(&s->ctx, &s->loop, &s->conf, s->cache,
	    s->pool, &s->m), 0);
	s->ctx_open = 1;
	*state = s;
	return 0;
}

/* main.c's order: the pool first (it completes every pending query),
 * then the query context, then the loop runs the close callbacks. */
static void
shutdown_world(struct sc *s)
{
	if (s->pool != NULL) {
		upstream_pool_close(s->pool);
		s->pool = NULL;
	}
	if (s->ctx_open) {
		query_ctx_close(&s->ctx);
		s->ctx_open = 0;
	}
	assert_int_equal(uv_run(&s->loop, UV_RUN_DEFAULT), 0);
}

static int
teardown(void **state)
{
	struct sc *s = *state;

	shutdown_world(s);
	assert_int_equal(uv_loop_close(&s->loop), 0);
	cache_free(s->cache);
	free(s);
	mem_fail_after(-1);
	return 0;
}

/* Client idx asks at T0 + at_ms. Returns the result; an immediate answer
 * is left in the client's slot (done stays 0). */
static enum query_result
ask(struct sc *s, size_t idx, uint64_t at_ms, uint16_t id, const char *name,
    uint16_t qtype, int fl)
{
	struct client *c = &s->cl[idx];
	enum query_result r;
	uint8_t out[DNS_MAX_MSG];
	size_t out_len = 0;

	assert_true(idx < N_CLIENTS);
	memset(c, 0, sizeof(*c));
	c->q_len = build_query(c->q, id, name, qtype, fl);
	r = query_handle(&s->ctx, c->q, c->q_len, 1, NULL, s->t0 + at_ms, out,
	    &out_len, done_cb, s, &idx, sizeof(idx));
	if (r == QUERY_ANSWER) {
		assert_true(out_len > 0 && out_len <= sizeof(c->a));
		memcpy(c->a, out, out_len);
		c->a_len = out_len;
	}
	/* The done callback never runs inside query_handle. */
	assert_int_equal(c->done, 0);
	return r;
}

/* Answer out-query i with an A record at T0 + at_ms. */
static void
answer_a(struct sc *s, uint64_t at_ms, size_t i, const char *name,
    uint32_t ttl, uint8_t last)
{
	uint8_t b[512];
	size_t n = build_a_answer(b, 0x5151, name, ttl, last);

	assert_int_equal(fake_answer(i, b, n, s->t0 + at_ms), 0);
}

/* Out-query i asks name (lowercase) type qtype. */
static void
check_outq_question(size_t i, const char *name, uint16_t qtype)
{
	uint8_t want[300];
	size_t want_len = put_question(want, name, qtype), len;
	const uint8_t *m = fake_query(i, &len);

	assert_non_null(m);
	assert_true(len >= DNS_HDR_LEN + want_len);
	assert_int_equal(get16(m + 4), 1);
	assert_memory_equal(m + DNS_HDR_LEN, want, want_len);
	assert_int_equal(fake_question(i)->qtype, qtype);
}

/* Put an entry for name in the cache as if an upstream answer with TTL
 * ttl had been stored at stored_at (loop time), through the same steps
 * as query.c: parse, strip OPT, put under the query's key. */
static void
seed(struct sc *s, const char *name, int fl, uint32_t ttl, uint8_t last,
    uint64_t stored_at)
{
	uint8_t qb[512], ab[512];
	size_t qn = build_query(qb, 1, name, DNS_TYPE_A, fl);
	size_t an = build_a_answer(ab, 1, name, ttl, last);
	struct dnsmsg_query q;
	struct dnsmsg_answer_info info;
	struct cache_key key;

	assert_int_equal(dnsmsg_parse_query(qb, qn, &q), 0);
	assert_int_equal(dnsmsg_parse_answer(ab, an, &q.q, &info), 0);
	an = dnsmsg_strip_opt(ab, an, &info);
	cache_key_make(&key, &q);
	assert_int_equal(cache_put(s->cache, &key, ab, an, &info, stored_at),
	    0);
}

/* The stale tests need an entry already expired at T0, stored 2 s before
 * it; T0, the loop's time, is well past that on any running system. */
static uint64_t
before_t0(struct sc *s, uint64_t ms)
{
	assert_true(s->t0 > ms);
	return s->t0 - ms;
}

/* "ExAmPlE.cOm"-style spelling number k of a lowercase name. */
static void
spell(char *out, const char *name, unsigned k)
{
	unsigned bit = 0;
	size_t i;

	for (i = 0; name[i] != '\0'; i++) {
		out[i] = name[i];
		if (name[i] >= 'a' && name[i] <= 'z') {
			if (k & (1u << bit))
				out[i] = (char)(name[i] - 'a' + 'A');
			bit++;
		}
	}
	out[i] = '\0';
}

/* ---- scenarios ---- */

/* 1. 100 identical misses at once, each its own ID and spelling, half
 * with EDNS: one out-query; its answer reaches all 100, each personalized;
 * a repeat is a cache hit. */
static void
test_coalesce(void **state)
{
	struct sc *s = *state;
	char name[64];
	struct ans a;
	size_t i;

	for (i = 0; i < 100; i++) {
		spell(name, "example.com", (unsigned)i);
		assert_int_equal(ask(s, i, 0, (uint16_t)(0x1000 + i), name,
		    DNS_TYPE_A, (i % 2) ? Q_EDNS : 0), QUERY_PENDING);
	}
	assert_int_equal(fake_count(), 1);
	check_outq_question(0, "example.com", DNS_TYPE_A);
	assert_int_equal(s->n_done, 0);
	assert_int_equal(s->m.cache_misses, 100);
	assert_int_equal(s->m.queries_coalesced, 99);

	answer_a(s, 0, 0, "example.com", 300, 1);
	assert_int_equal(s->n_done, 100);
	for (i = 0; i < 100; i++) {
		assert_int_equal(s->cl[i].done, 1);
		check_answer(s->cl[i].q, s->cl[i].q_len, s->cl[i].a,
		    s->cl[i].a_len, DNS_RCODE_NOERROR, 300, EDE_NONE, &a);
		assert_int_equal(a.n_rr, 1);
		assert_memory_equal(a.a4, "\300\0\2\1", 4);
		assert_true(a.flags & DNS_FLAG_RD);
	}
	assert_int_equal(answers_by_rcode(&s->m, DNS_RCODE_NOERROR), 100);

	/* A repeat, spelled otherwise, 1 s later: from the cache. */
	assert_int_equal(ask(s, 100, 1 * SEC, 0xbeef, "EXAMPLE.COM",
	    DNS_TYPE_A, Q_EDNS), QUERY_ANSWER);
	check_answer(s->cl[100].q, s->cl[100].q_len, s->cl[100].a,
	    s->cl[100].a_len, DNS_RCODE_NOERROR, 299, EDE_NONE, &a);
	assert_int_equal(fake_count(), 1);
	assert_int_equal(s->m.cache_hits, 1);
	assert_int_equal(s->n_done, 100);
}

/* 2. TTL 300 stored at t: 258 at t+42 s; at t+300 s a miss that goes
 * upstream once. */
static void
test_ttl_aging(void **state)
{
	struct sc *s = *state;
	struct ans a;

	assert_int_equal(ask(s, 0, 0, 1, "aging.example", DNS_TYPE_A, 0),
	    QUERY_PENDING);
	answer_a(s, 0, 0, "aging.example", 300, 2);
	check_answer(s->cl[0].q, s->cl[0].q_len, s->cl[0].a, s->cl[0].a_len,
	    DNS_RCODE_NOERROR, 300, EDE_NONE, &a);

	assert_int_equal(ask(s, 1, 42 * SEC, 2, "Aging.Example", DNS_TYPE_A,
	    0), QUERY_ANSWER);
	check_answer(s->cl[1].q, s->cl[1].q_len, s->cl[1].a, s->cl[1].a_len,
	    DNS_RCODE_NOERROR, 258, EDE_NONE, &a);
	/* Not a second earlier than whole seconds say. */
	assert_int_equal(ask(s, 2, 42 * SEC + 999, 3, "aging.example",
	    DNS_TYPE_A, 0), QUERY_ANSWER);
	check_answer(s->cl[2].q, s->cl[2].q_len, s->cl[2].a, s->cl[2].a_len,
	    DNS_RCODE_NOERROR, 258, EDE_NONE, &a);
	assert_int_equal(fake_count(), 1);

	assert_int_equal(ask(s, 3, 300 * SEC, 4, "aging.example", DNS_TYPE_A,
	    0), QUERY_PENDING);
	assert_int_equal(fake_count(), 2);
	check_outq_question(1, "aging.example", DNS_TYPE_A);
	answer_a(s, 300 * SEC, 1, "aging.example", 300, 3);
	assert_int_equal(s->cl[3].done, 1);
	check_answer(s->cl[3].q, s->cl[3].q_len, s->cl[3].a, s->cl[3].a_len,
	    DNS_RCODE_NOERROR, 300, EDE_NONE, &a);
	assert_memory_equal(a.a4, "\300\0\2\3", 4);
	assert_int_equal(s->m.cache_hits, 2);
	assert_int_equal(s->m.cache_misses, 2);
}

/* 3. TTL 100: no prefetch at t+89 s (11 s left), a hit at t+91 s is
 * answered from the cache and starts one refresh; a hit meanwhile does
 * not start another; the refresh's answer replaces the entry. */
static void
test_prefetch(void **state)
{
	struct sc *s = *state;
	size_t len0, len1;
	const uint8_t *q0, *q1;
	struct ans a;

	assert_int_equal(ask(s, 0, 0, 1, "pf.example", DNS_TYPE_A, Q_EDNS),
	    QUERY_PENDING);
	answer_a(s, 0, 0, "pf.example", 100, 1);
	assert_int_equal(s->cl[0].done, 1);

	assert_int_equal(ask(s, 1, 89 * SEC, 2, "pf.example", DNS_TYPE_A, 0),
	    QUERY_ANSWER);
	check_answer(s->cl[1].q, s->cl[1].q_len, s->cl[1].a, s->cl[1].a_len,
	    DNS_RCODE_NOERROR, 11, EDE_NONE, &a);
	assert_int_equal(fake_count(), 1);

	assert_int_equal(ask(s, 2, 91 * SEC, 3, "PF.example", DNS_TYPE_A,
	    Q_EDNS), QUERY_ANSWER);
	check_answer(s->cl[2].q, s->cl[2].q_len, s->cl[2].a, s->cl[2].a_len,
	    DNS_RCODE_NOERROR, 9, EDE_NONE, &a);
	assert_memory_equal(a.a4, "\300\0\2\1", 4);
	assert_int_equal(fake_count(), 2);
	assert_int_equal(s->m.cache_prefetches, 1);
	/* The refresh asks exactly what the first out-query asked. */
	q0 = fake_query(0, &len0);
	q1 = fake_query(1, &len1);
	assert_int_equal(len0, len1);
	assert_memory_equal(q0, q1, len0);

	assert_int_equal(ask(s, 3, 92 * SEC, 4, "pf.EXAMPLE", DNS_TYPE_A, 0),
	    QUERY_ANSWER);
	check_answer(s->cl[3].q, s->cl[3].q_len, s->cl[3].a, s->cl[3].a_len,
	    DNS_RCODE_NOERROR, 8, EDE_NONE, &a);
	assert_int_equal(fake_count(), 2);
	assert_int_equal(s->m.cache_prefetches, 1);

	/* The refresh has no client waiting: nobody is answered. It is
	 * stored at t+92 s: at t+142 s it is fresh and not yet due a
	 * refresh. */
	answer_a(s, 92 * SEC, 1, "pf.example", 100, 2);
	assert_int_equal(s->n_done, 1);
	assert_int_equal(fake_pending_count(), 0);
	assert_int_equal(ask(s, 4, 142 * SEC, 5, "pf.example", DNS_TYPE_A, 0),
	    QUERY_ANSWER);
	check_answer(s->cl[4].q, s->cl[4].q_len, s->cl[4].a, s->cl[4].a_len,
	    DNS_RCODE_NOERROR, 50, EDE_NONE, &a);
	assert_memory_equal(a.a4, "\300\0\2\2", 4);
	assert_int_equal(fake_count(), 2);
}

/* 4a. NXDOMAIN with SOA TTL 60, MINIMUM 30: cached 30 s, the SOA's TTL
 * lowered to match. */
static void
test_negative(void **state)
{
	struct sc *s = *state;
	uint8_t b[512];
	size_t n;
	struct ans a;

	assert_int_equal(ask(s, 0, 0, 0x4e58, "nx.example.com", DNS_TYPE_A,
	    Q_EDNS), QUERY_PENDING);
	n = build_nxdomain(b, 7, "nx.example.com", 60, 30);
	assert_int_equal(fake_answer(0, b, n, s->t0), 0);
	assert_int_equal(s->cl[0].done, 1);
	check_answer(s->cl[0].q, s->cl[0].q_len, s->cl[0].a, s->cl[0].a_len,
	    DNS_RCODE_NXDOMAIN, 30, EDE_NONE, &a);
	assert_int_equal(a.ns, 1);
	assert_int_equal(a.type[0], DNS_TYPE_SOA);
	assert_int_equal(s->m.cache_inserts, 1);

	/* t+20 s: from the cache, 10 s left (not yet in prefetch range). */
	assert_int_equal(ask(s, 1, 20 * SEC, 0x4e59, "NX.example.com",
	    DNS_TYPE_A, 0), QUERY_ANSWER);
	check_answer(s->cl[1].q, s->cl[1].q_len, s->cl[1].a, s->cl[1].a_len,
	    DNS_RCODE_NXDOMAIN, 10, EDE_NONE, &a);
	assert_int_equal(fake_count(), 1);

	/* t+30 s: gone, asked again. */
	assert_int_equal(ask(s, 2, 30 * SEC, 0x4e5a, "nx.example.com",
	    DNS_TYPE_A, 0), QUERY_PENDING);
	assert_int_equal(fake_count(), 2);
	check_outq_question(1, "nx.example.com", DNS_TYPE_A);
}

/* 4b. SERVFAIL from the upstream with no stale entry: passed on and
 * cached cache-servfail-ttl (5 s). */
static void
test_servfail_cached(void **state)
{
	struct sc *s = *state;
	uint8_t b[512];
	size_t n;
	struct ans a;

	assert_int_equal(ask(s, 0, 0, 0x5f01, "sf.example", DNS_TYPE_A,
	    Q_EDNS), QUERY_PENDING);
	n = build_servfail(b, 9, "sf.example");
	assert_int_equal(fake_answer(0, b, n, s->t0), 0);
	assert_int_equal(s->cl[0].done, 1);
	check_answer(s->cl[0].q, s->cl[0].q_len, s->cl[0].a, s->cl[0].a_len,
	    DNS_RCODE_SERVFAIL, 0, EDE_NONE, &a);
	assert_int_equal(s->m.cache_servfail_cached, 1);

	assert_int_equal(ask(s, 1, 4 * SEC + 999, 0x5f02, "SF.example",
	    DNS_TYPE_A, Q_EDNS), QUERY_ANSWER);
	check_answer(s->cl[1].q, s->cl[1].q_len, s->cl[1].a, s->cl[1].a_len,
	    DNS_RCODE_SERVFAIL, 0, EDE_NONE, &a);
	/* A cached SERVFAIL is never prefetched. */
	assert_int_equal(fake_count(), 1);

	assert_int_equal(ask(s, 2, 5 * SEC, 0x5f03, "sf.example", DNS_TYPE_A,
	    0), QUERY_PENDING);
	assert_int_equal(fake_count(), 2);
}

/* 4c. A prefetch that gets SERVFAIL leaves the fresh answer in place: a
 * refresh must never make a good cached name worse. */
static void
test_prefetch_servfail_keeps_answer(void **state)
{
	struct sc *s = *state;
	uint8_t b[512];
	size_t n;
	struct ans a;

	assert_int_equal(ask(s, 0, 0, 1, "pfsf.example", DNS_TYPE_A, 0),
	    QUERY_PENDING);
	answer_a(s, 0, 0, "pfsf.example", 100, 7);
	assert_int_equal(ask(s, 1, 91 * SEC, 2, "pfsf.example", DNS_TYPE_A,
	    0), QUERY_ANSWER);
	assert_int_equal(fake_count(), 2);
	n = build_servfail(b, 9, "pfsf.example");
	assert_int_equal(fake_answer(1, b, n, s->t0 + 91 * SEC), 0);
	assert_int_equal(s->m.cache_servfail_cached, 0);
	assert_int_equal(ask(s, 2, 92 * SEC, 3, "pfsf.example", DNS_TYPE_A,
	    0), QUERY_ANSWER);
	check_answer(s->cl[2].q, s->cl[2].q_len, s->cl[2].a, s->cl[2].a_len,
	    DNS_RCODE_NOERROR, 8, EDE_NONE, &a);
	assert_memory_equal(a.a4, "\300\0\2\7", 4);
}

/* 5a. Serve-stale on failure: an expired entry, a miss goes upstream, the
 * upstream is unreachable: the client gets the stale answer (TTL 30,
 * EDE 3). Within stale-refresh-interval stale goes out at once with no
 * out-query; after it, upstream again. */
static void
test_stale_on_failure(void **state)
{
	struct sc *s = *state;
	struct ans a;

	seed(s, "stale.example", 0, 1, 7, before_t0(s, 2 * SEC));

	assert_int_equal(ask(s, 0, 0, 0x5701, "Stale.Example", DNS_TYPE_A,
	    Q_EDNS), QUERY_PENDING);
	assert_int_equal(fake_count(), 1);
	check_outq_question(0, "stale.example", DNS_TYPE_A);
	assert_int_equal(fake_fail(0, UPSTREAM_EUNREACH, s->t0), 0);
	assert_int_equal(s->cl[0].done, 1);
	check_answer(s->cl[0].q, s->cl[0].q_len, s->cl[0].a, s->cl[0].a_len,
	    DNS_RCODE_NOERROR, 30, EDE_STALE_ANSWER, &a);
	assert_memory_equal(a.a4, "\300\0\2\7", 4);
	assert_int_equal(s->m.cache_stale_served, 1);

	/* Within the interval: stale at once, no out-query; without EDNS
	 * there is no OPT to carry the EDE. */
	assert_int_equal(ask(s, 1, 1 * SEC, 0x5702, "stale.example",
	    DNS_TYPE_A, 0), QUERY_ANSWER);
	check_answer(s->cl[1].q, s->cl[1].q_len, s->cl[1].a, s->cl[1].a_len,
	    DNS_RCODE_NOERROR, 30, EDE_NONE, &a);
	assert_int_equal(ask(s, 2, 30 * SEC - 1, 0x5703, "STALE.example",
	    DNS_TYPE_A, Q_EDNS), QUERY_ANSWER);
	check_answer(s->cl[2].q, s->cl[2].q_len, s->cl[2].a, s->cl[2].a_len,
	    DNS_RCODE_NOERROR, 30, EDE_STALE_ANSWER, &a);
	assert_int_equal(fake_count(), 1);
	assert_int_equal(s->m.cache_stale_served, 3);

	/* The interval is over (the failure was at t). */
	assert_int_equal(ask(s, 3, 30 * SEC, 0x5704, "stale.example",
	    DNS_TYPE_A, Q_EDNS), QUERY_PENDING);
	assert_int_equal(fake_count(), 2);
	answer_a(s, 30 * SEC, 1, "stale.example", 300, 8);
	assert_int_equal(s->cl[3].done, 1);
	check_answer(s->cl[3].q, s->cl[3].q_len, s->cl[3].a, s->cl[3].a_len,
	    DNS_RCODE_NOERROR, 300, EDE_NONE, &a);
	assert_memory_equal(a.a4, "\300\0\2\10", 4);
}

/* 5b. An upstream SERVFAIL with a stale entry: stale beats SERVFAIL, and
 * the SERVFAIL is not cached over the stale entry. */
static void
test_stale_on_servfail(void **state)
{
	struct sc *s = *state;
	uint8_t b[512];
	size_t n;
	struct ans a;

	seed(s, "stale.example", 0, 1, 7, before_t0(s, 2 * SEC));
	assert_int_equal(ask(s, 0, 0, 0x5801, "stale.example", DNS_TYPE_A,
	    Q_EDNS), QUERY_PENDING);
	n = build_servfail(b, 3, "stale.example");
	assert_int_equal(fake_answer(0, b, n, s->t0), 0);
	check_answer(s->cl[0].q, s->cl[0].q_len, s->cl[0].a, s->cl[0].a_len,
	    DNS_RCODE_NOERROR, 30, EDE_STALE_ANSWER, &a);
	assert_int_equal(s->m.cache_servfail_cached, 0);

	assert_int_equal(ask(s, 1, 1 * SEC, 0x5802, "stale.example",
	    DNS_TYPE_A, Q_EDNS), QUERY_ANSWER);
	check_answer(s->cl[1].q, s->cl[1].q_len, s->cl[1].a, s->cl[1].a_len,
	    DNS_RCODE_NOERROR, 30, EDE_STALE_ANSWER, &a);
	assert_int_equal(fake_count(), 1);
}

/* 5c. The upstream is slow: stale-client-timeout (50 ms) after its
 * arrival each waiting client gets the stale answer, not a millisecond
 * before, and the late upstream answer still refreshes the cache. Time
 * is the test's, given to query_stale_due as the stale timer would. */
static void
test_stale_due(void **state)
{
	struct sc *s = *state;
	struct ans a;

	seed(s, "slow.example", 0, 1, 7, before_t0(s, 2 * SEC));
	assert_int_equal(ask(s, 0, 0, 0x5901, "slow.EXAMPLE", DNS_TYPE_A,
	    Q_EDNS), QUERY_PENDING);
	assert_int_equal(ask(s, 1, 20, 0x5902, "Slow.example", DNS_TYPE_A, 0),
	    QUERY_PENDING);
	assert_int_equal(fake_count(), 1);

	query_stale_due(&s->ctx, s->t0 + 49);
	assert_int_equal(s->n_done, 0);
	query_stale_due(&s->ctx, s->t0 + 50);
	assert_int_equal(s->cl[0].done, 1);
	assert_int_equal(s->cl[1].done, 0);
	check_answer(s->cl[0].q, s->cl[0].q_len, s->cl[0].a, s->cl[0].a_len,
	    DNS_RCODE_NOERROR, 30, EDE_STALE_ANSWER, &a);
	assert_memory_equal(a.a4, "\300\0\2\7", 4);

	query_stale_due(&s->ctx, s->t0 + 69);
	assert_int_equal(s->cl[1].done, 0);
	query_stale_due(&s->ctx, s->t0 + 70);
	assert_int_equal(s->cl[1].done, 1);
	check_answer(s->cl[1].q, s->cl[1].q_len, s->cl[1].a, s->cl[1].a_len,
	    DNS_RCODE_NOERROR, 30, EDE_NONE, &a);
	assert_int_equal(s->m.cache_stale_served, 2);
	assert_int_equal(fake_state(0), FAKE_PENDING);

	/* The late answer reaches nobody but the cache. */
	answer_a(s, 100, 0, "slow.example", 300, 9);
	assert_int_equal(s->n_done, 2);
	assert_int_equal(ask(s, 2, 100, 0x5903, "slow.example", DNS_TYPE_A,
	    0), QUERY_ANSWER);
	check_answer(s->cl[2].q, s->cl[2].q_len, s->cl[2].a, s->cl[2].a_len,
	    DNS_RCODE_NOERROR, 300, EDE_NONE, &a);
	assert_memory_equal(a.a4, "\300\0\2\11", 4);
	assert_int_equal(fake_count(), 1);
}

/* 5d. The same through the real stale timer: its callback reads the
 * loop's clock and calls query_stale_due. The one test that runs the
 * loop. */
static void
test_stale_timer(void **state)
{
	struct sc *s = *state;
	struct ans a;
	uint64_t late;
	int turns;

	seed(s, "slow.example", 0, 1, 7, before_t0(s, 2 * SEC));
	assert_int_equal(ask(s, 0, 0, 0x5901, "slow.EXAMPLE", DNS_TYPE_A,
	    Q_EDNS), QUERY_PENDING);
	assert_int_equal(fake_count(), 1);

	/* The stale timer is the loop's only active handle: each
	 * UV_RUN_ONCE waits for it. Bounded in case it never answers. */
	for (turns = 0; turns < 20 && s->cl[0].done == 0; turns++)
		(void)uv_run(&s->loop, UV_RUN_ONCE);
	assert_int_equal(s->cl[0].done, 1);
	assert_true(uv_now(&s->loop) >= s->t0 + 50);
	check_answer(s->cl[0].q, s->cl[0].q_len, s->cl[0].a, s->cl[0].a_len,
	    DNS_RCODE_NOERROR, 30, EDE_STALE_ANSWER, &a);
	assert_memory_equal(a.a4, "\300\0\2\7", 4);
	assert_int_equal(fake_state(0), FAKE_PENDING);

	/* The late answer reaches nobody but the cache. */
	late = uv_now(&s->loop) - s->t0;
	answer_a(s, late, 0, "slow.example", 300, 9);
	assert_int_equal(s->n_done, 1);
	assert_int_equal(ask(s, 1, late, 0x5902, "slow.example", DNS_TYPE_A,
	    0), QUERY_ANSWER);
	check_answer(s->cl[1].q, s->cl[1].q_len, s->cl[1].a, s->cl[1].a_len,
	    DNS_RCODE_NOERROR, 300, EDE_NONE, &a);
	assert_memory_equal(a.a4, "\300\0\2\11", 4);
	assert_int_equal(fake_count(), 1);
}

/* 6. Upstream failure with nothing stale: SERVFAIL with EDE 22 (no
 * reachable authority) or 23 (network error); not cached. */
static void
test_failure_no_stale(void **state)
{
	struct sc *s = *state;
	struct ans a;

	assert_int_equal(ask(s, 0, 0, 0x6001, "down.example", DNS_TYPE_A,
	    Q_EDNS), QUERY_PENDING);
	assert_int_equal(ask(s, 1, 0, 0x6002, "Down.Example", DNS_TYPE_A, 0),
	    QUERY_PENDING);
	assert_int_equal(ask(s, 2, 0, 0x6003, "slow.example", DNS_TYPE_AAAA,
	    Q_EDNS | Q_DO), QUERY_PENDING);
	assert_int_equal(fake_count(), 2);

	assert_int_equal(fake_fail(0, UPSTREAM_EUNREACH, s->t0), 0);
	assert_int_equal(s->n_done, 2);
	check_answer(s->cl[0].q, s->cl[0].q_len, s->cl[0].a, s->cl[0].a_len,
	    DNS_RCODE_SERVFAIL, 0, EDE_NO_REACHABLE_AUTHORITY, &a);
	assert_int_equal(a.an + a.ns, 0);
	check_answer(s->cl[1].q, s->cl[1].q_len, s->cl[1].a, s->cl[1].a_len,
	    DNS_RCODE_SERVFAIL, 0, EDE_NONE, &a);

	assert_int_equal(fake_fail(1, UPSTREAM_ETIMEDOUT, s->t0), 0);
	assert_int_equal(s->cl[2].done, 1);
	check_answer(s->cl[2].q, s->cl[2].q_len, s->cl[2].a, s->cl[2].a_len,
	    DNS_RCODE_SERVFAIL, 0, EDE_NETWORK_ERROR, &a);
	assert_int_equal(a.do_bit, 1);
	assert_int_equal(answers_by_rcode(&s->m, DNS_RCODE_SERVFAIL), 3);

	/* A failure is not cached: the next client goes upstream. */
	assert_int_equal(ask(s, 3, 1 * SEC, 0x6004, "down.example",
	    DNS_TYPE_A, 0), QUERY_PENDING);
	assert_int_equal(fake_count(), 3);
}

/* 7. Local names are answered here and never leave the host. */
static void
test_local(void **state)
{
	struct sc *s = *state;
	struct ans a;

	assert_int_equal(ask(s, 0, 0, 0x7001, "LocalHost", DNS_TYPE_A,
	    Q_EDNS), QUERY_ANSWER);
	parse_ans(s->cl[0].a, s->cl[0].a_len, &a);
	assert_int_equal(a.id, 0x7001);
	assert_int_equal(a.rcode, DNS_RCODE_NOERROR);
	assert_int_equal(a.an, 1);
	assert_memory_equal(a.a4, "\177\0\0\1", 4);
	assert_memory_equal(s->cl[0].a + DNS_HDR_LEN,
	    s->cl[0].q + DNS_HDR_LEN, a.qend - DNS_HDR_LEN);
	assert_int_equal(a.n_opt, 1);

	assert_int_equal(ask(s, 1, 0, 0x7002, "foo.invalid", DNS_TYPE_A, 0),
	    QUERY_ANSWER);
	parse_ans(s->cl[1].a, s->cl[1].a_len, &a);
	assert_int_equal(a.id, 0x7002);
	assert_int_equal(a.rcode, DNS_RCODE_NXDOMAIN);

	assert_int_equal(ask(s, 2, 0, 0x7003, "1.0.0.127.in-addr.arpa", 12,
	    0), QUERY_ANSWER);
	assert_int_equal(fake_count(), 0);
	assert_int_equal(s->m.local_answers, 3);
	assert_int_equal(s->m.cache_misses, 0);
}

/* Check an out-query against dnsmsg_upstream_query's contract: padded to
 * 128 bytes, ID 0, RD, CD as the client's, the lowercase question, one
 * OPT with payload 1232, DO as the client's, and only keepalive and
 * padding options: none of the client's (ECS, cookie). */
static void
check_outq_bytes(size_t i, const char *name, uint16_t qtype, int cd,
    int do_bit)
{
	const uint8_t *m;
	size_t len, qlen;
	uint8_t want[300];
	struct ans a;

	m = fake_query(i, &len);
	assert_non_null(m);
	assert_int_equal(len % DNS_PAD_BLOCK, 0);
	assert_int_equal(get16(m), 0);
	assert_int_equal(get16(m + 2), DNS_FLAG_RD | (cd ? DNS_FLAG_CD : 0));
	qlen = put_question(want, name, qtype);
	assert_memory_equal(m + DNS_HDR_LEN, want, qlen);
	/* parse_ans reads the sections the same way for a query. */
	parse_ans(m, len, &a);
	assert_int_equal(a.an + a.ns, 0);
	assert_int_equal(a.ar, 1);
	assert_int_equal(a.n_opt, 1);
	assert_int_equal(a.udp, DNS_EDNS_UDP);
	assert_int_equal(a.do_bit, do_bit);
	assert_int_equal(a.n_options, 2);
	assert_int_equal(a.opt_code[0], EDNS_OPT_KEEPALIVE);
	assert_int_equal(a.opt_code[1], EDNS_OPT_PADDING);
}

/* 8. What goes upstream. */
static void
test_outquery_bytes(void **state)
{
	struct sc *s = *state;
	char name[80];
	size_t i, len;
	const uint8_t *m;

	assert_int_equal(ask(s, 0, 0, 0x8001, "WwW.Example.COM",
	    DNS_TYPE_AAAA, Q_EDNS | Q_DO | Q_ECS), QUERY_PENDING);
	assert_int_equal(ask(s, 1, 0, 0x8002, "a.b", DNS_TYPE_A,
	    Q_EDNS | Q_ECS | Q_CD), QUERY_PENDING);
	assert_int_equal(ask(s, 2, 0, 0x8003, "plain.example", DNS_TYPE_A, 0),
	    QUERY_PENDING);
	assert_int_equal(fake_count(), 3);
	check_outq_bytes(0, "www.example.com", DNS_TYPE_AAAA, 0, 1);
	check_outq_bytes(1, "a.b", DNS_TYPE_A, 1, 0);
	check_outq_bytes(2, "plain.example", DNS_TYPE_A, 0, 0);
	/* Names of every length up to a few blocks all pad exactly. */
	for (i = 0; i < 40; i++) {
		memset(name, 'x', sizeof(name));
		snprintf(name + i + 1, sizeof(name) - i - 1, ".pad%zu", i);
		name[0] = 'y';
		assert_int_equal(ask(s, 3 + i, 0, (uint16_t)(0x8100 + i), name,
		    DNS_TYPE_A, Q_EDNS | Q_ECS), QUERY_PENDING);
		m = fake_query(3 + i, &len);
		assert_non_null(m);
		assert_int_equal(len % DNS_PAD_BLOCK, 0);
	}
	assert_int_equal(fake_count(), 43);
}

/* 9. Malformed input: dropped and counted, or FORMERR / NOTIMP; never an
 * out-query. */
static void
test_malformed(void **state)
{
	struct sc *s = *state;
	uint8_t b[64], out[DNS_MAX_MSG];
	size_t out_len = 0, idx = 0;
	struct ans a;

	memset(b, 0, sizeof(b));
	put16(b, 0x9001);
	assert_int_equal(query_handle(&s->ctx, b, 5, 1, NULL, s->t0, out,
	    &out_len, done_cb, s, &idx, sizeof(idx)), QUERY_DROP);
	assert_int_equal(s->m.drops_malformed, 1);

	/* QR set: a response is never answered. */
	build_query(b, 0x9002, "example.com", DNS_TYPE_A, 0);
	put16(b + 2, DNS_FLAG_QR);
	assert_int_equal(query_handle(&s->ctx, b, 29, 1, NULL, s->t0, out, &out_len,
	    done_cb, s, &idx, sizeof(idx)), QUERY_DROP);
	assert_int_equal(s->m.drops_malformed, 2);

	/* No question: FORMERR with the ID. */
	memset(b, 0, sizeof(b));
	put16(b, 0x9003);
	put16(b + 2, DNS_FLAG_RD);
	assert_int_equal(query_handle(&s->ctx, b, DNS_HDR_LEN, 1, NULL, s->t0, out,
	    &out_len, done_cb, s, &idx, sizeof(idx)), QUERY_ANSWER);
	assert_int_equal(get16(out), 0x9003);
	assert_true(get16(out + 2) & DNS_FLAG_QR);
	assert_int_equal(DNS_RCODE(get16(out + 2)), DNS_RCODE_FORMERR);

	/* A question cut short: FORMERR. */
	build_query(b, 0x9004, "example.com", DNS_TYPE_A, 0);
	assert_int_equal(query_handle(&s->ctx, b, 20, 1, NULL, s->t0, out, &out_len,
	    done_cb, s, &idx, sizeof(idx)), QUERY_ANSWER);
	assert_int_equal(get16(out), 0x9004);
	assert_int_equal(DNS_RCODE(get16(out + 2)), DNS_RCODE_FORMERR);

	/* Opcode STATUS: NOTIMP, the question echoed. */
	build_query(b, 0x9005, "example.com", DNS_TYPE_A, 0);
	put16(b + 2, (uint16_t)(2 << 11 | DNS_FLAG_RD));
	assert_int_equal(query_handle(&s->ctx, b, 29, 1, NULL, s->t0, out, &out_len,
	    done_cb, s, &idx, sizeof(idx)), QUERY_ANSWER);
	parse_ans(out, out_len, &a);
	assert_int_equal(a.id, 0x9005);
	assert_int_equal(a.rcode, DNS_RCODE_NOTIMP);

	assert_int_equal(fake_count(), 0);
	assert_int_equal(s->m.cache_misses, 0);
	assert_int_equal(answers_by_rcode(&s->m, DNS_RCODE_FORMERR), 2);
	assert_int_equal(answers_by_rcode(&s->m, DNS_RCODE_NOTIMP), 1);
	assert_int_equal(s->n_done, 0);
}

/* Out of memory, or the pool refusing, on a miss: SERVFAIL at once and a
 * counted drop; nothing stays in flight, so the next client goes out. */
static void
test_overload(void **state)
{
	struct sc *s = *state;
	struct ans a;

	mem_fail_after(0);      /* the waiter's allocation */
	assert_int_equal(ask(s, 0, 0, 0xa001, "oom.example", DNS_TYPE_A,
	    Q_EDNS), QUERY_ANSWER);
	mem_fail_after(-1);
	check_answer(s->cl[0].q, s->cl[0].q_len, s->cl[0].a, s->cl[0].a_len,
	    DNS_RCODE_SERVFAIL, 0, EDE_NONE, &a);

	fake_refuse_next(1);
	assert_int_equal(ask(s, 1, 0, 0xa002, "oom.example", DNS_TYPE_A, 0),
	    QUERY_ANSWER);
	check_answer(s->cl[1].q, s->cl[1].q_len, s->cl[1].a, s->cl[1].a_len,
	    DNS_RCODE_SERVFAIL, 0, EDE_NONE, &a);
	assert_int_equal(s->m.drops_overload, 2);
	assert_int_equal(fake_count(), 0);

	assert_int_equal(ask(s, 2, 0, 0xa003, "oom.example", DNS_TYPE_A, 0),
	    QUERY_PENDING);
	assert_int_equal(fake_count(), 1);
	answer_a(s, 0, 0, "oom.example", 60, 4);
	assert_int_equal(s->cl[2].done, 1);
	assert_int_equal(s->n_done, 1);
}

/* The cap on misses in flight (max-pending): exactly max-pending clients
 * wait; the next miss, a new name or one joining a pending query, is
 * answered SERVFAIL at once (EDE 0 with EDNS) and counted, with no
 * out-query; cache hits go on; a slot freed by an answer takes the next
 * miss. Then max-pending-bytes, exactly: a join that just fits is taken,
 * the next is refused, and a new name that needs an out-query too is
 * refused when only a waiter's cost is left. Everything charged is given
 * back once every query has ended. */
static void
test_pending_cap(void **state)
{
	struct sc *s = *state;
	char name[32];
	struct ans a;
	size_t i, wcost;

	s->conf.max_pending = 4;
	seed(s, "hit.example", 0, 300, 9, s->t0);
	for (i = 0; i < 4; i++) {
		snprintf(name, sizeof(name), "m%zu.example", i);
		assert_int_equal(ask(s, i, 0, (uint16_t)(0xd000 + i), name,
		    DNS_TYPE_A, 0), QUERY_PENDING);
	}
	assert_int_equal(query_waiting(&s->ctx), 4);
	assert_int_equal(query_pending(&s->ctx), 4);
	assert_int_equal(fake_count(), 4);
	/* A fifth name: refused at once, EDE 0, no out-query. */
	assert_int_equal(ask(s, 4, 0, 0xd004, "m4.example", DNS_TYPE_A,
	    Q_EDNS), QUERY_ANSWER);
	check_answer(s->cl[4].q, s->cl[4].q_len, s->cl[4].a, s->cl[4].a_len,
	    DNS_RCODE_SERVFAIL, 0, 0, &a);
	assert_int_equal(a.an, 0);
	/* Joining a pending query needs a waiter too: refused. */
	assert_int_equal(ask(s, 5, 0, 0xd005, "m0.example", DNS_TYPE_A, 0),
	    QUERY_ANSWER);
	check_answer(s->cl[5].q, s->cl[5].q_len, s->cl[5].a, s->cl[5].a_len,
	    DNS_RCODE_SERVFAIL, 0, EDE_NONE, &a);
	assert_int_equal(s->m.pending_full, 2);
	assert_int_equal(s->m.drops_overload, 0);
	assert_int_equal(s->m.queries_coalesced, 0);
	assert_int_equal(fake_count(), 4);
	assert_int_equal(query_waiting(&s->ctx), 4);
	/* A cache hit is not a miss: answered. */
	assert_int_equal(ask(s, 6, 0, 0xd006, "hit.example", DNS_TYPE_A, 0),
	    QUERY_ANSWER);
	check_answer(s->cl[6].q, s->cl[6].q_len, s->cl[6].a, s->cl[6].a_len,
	    DNS_RCODE_NOERROR, 300, EDE_NONE, &a);
	/* One answer frees one slot, which the next miss takes. */
	answer_a(s, 0, 0, "m0.example", 60, 1);
	assert_int_equal(s->cl[0].done, 1);
	assert_int_equal(query_waiting(&s->ctx), 3);
	assert_int_equal(query_pending(&s->ctx), 3);
	assert_int_equal(ask(s, 7, 0, 0xd007, "m5.example", DNS_TYPE_A, 0),
	    QUERY_PENDING);
	assert_int_equal(ask(s, 8, 0, 0xd008, "m6.example", DNS_TYPE_A, 0),
	    QUERY_ANSWER);
	assert_int_equal(s->m.pending_full, 3);
	assert_int_equal(fake_count(), 5);

	/* The byte cap: room for exactly one more waiter. */
	s->conf.max_pending = 1000;
	assert_int_equal(ask(s, 9, 0, 0xd009, "m1.example", DNS_TYPE_A, 0),
	    QUERY_PENDING);
	wcost = query_waiter_cost(s->cl[9].q_len, sizeof(size_t));
	assert_int_equal(query_pending_bytes(&s->ctx),
	    5 * wcost + 4 * query_pending_cost());
	s->conf.max_pending_bytes = query_pending_bytes(&s->ctx) + wcost;
	/* A new name needs an out-query as well: refused. */
	assert_int_equal(ask(s, 10, 0, 0xd00a, "m7.example", DNS_TYPE_A, 0),
	    QUERY_ANSWER);
	/* Joining m1 (same length of name): exactly fits. */
	assert_int_equal(ask(s, 11, 0, 0xd00b, "m1.example", DNS_TYPE_A, 0),
	    QUERY_PENDING);
	assert_int_equal(query_pending_bytes(&s->ctx),
	    s->conf.max_pending_bytes);
	assert_int_equal(ask(s, 12, 0, 0xd00c, "m2.example", DNS_TYPE_A, 0),
	    QUERY_ANSWER);
	check_answer(s->cl[12].q, s->cl[12].q_len, s->cl[12].a,
	    s->cl[12].a_len, DNS_RCODE_SERVFAIL, 0, EDE_NONE, &a);
	assert_int_equal(s->m.pending_full, 5);
	assert_int_equal(fake_count(), 5);

	/* Every query ends; nothing stays charged. */
	answer_a(s, 0, 1, "m1.example", 60, 2);
	answer_a(s, 0, 2, "m2.example", 60, 3);
	answer_a(s, 0, 3, "m3.example", 60, 4);
	answer_a(s, 0, 4, "m5.example", 60, 5);
	assert_int_equal(s->cl[9].done + s->cl[11].done + s->cl[7].done, 3);
	assert_int_equal(query_waiting(&s->ctx), 0);
	assert_int_equal(query_pending(&s->ctx), 0);
	assert_int_equal(query_pending_bytes(&s->ctx), 0);
	for (i = 0; i < 13; i++)
		assert_true(s->cl[i].done <= 1);
	assert_int_equal(s->n_done, 7);
}

/* Shutdown with clients waiting (one also on the stale list): each gets
 * exactly one answer, SERVFAIL, or its stale answer. */
static void
test_shutdown(void **state)
{
	struct sc *s = *state;
	struct ans a;

	seed(s, "stale.example", 0, 1, 7, before_t0(s, 2 * SEC));
	assert_int_equal(ask(s, 0, 0, 0xb001, "wait.example", DNS_TYPE_A,
	    Q_EDNS), QUERY_PENDING);
	assert_int_equal(ask(s, 1, 0, 0xb002, "wait.example", DNS_TYPE_A, 0),
	    QUERY_PENDING);
	assert_int_equal(ask(s, 2, 0, 0xb003, "stale.example", DNS_TYPE_A,
	    Q_EDNS), QUERY_PENDING);
	assert_int_equal(fake_count(), 2);

	shutdown_world(s);
	assert_int_equal(s->n_done, 3);
	assert_int_equal(s->cl[0].done, 1);
	assert_int_equal(s->cl[1].done, 1);
	assert_int_equal(s->cl[2].done, 1);
	check_answer(s->cl[0].q, s->cl[0].q_len, s->cl[0].a, s->cl[0].a_len,
	    DNS_RCODE_SERVFAIL, 0, EDE_NETWORK_ERROR, &a);
	check_answer(s->cl[1].q, s->cl[1].q_len, s->cl[1].a, s->cl[1].a_len,
	    DNS_RCODE_SERVFAIL, 0, EDE_NONE, &a);
	check_answer(s->cl[2].q, s->cl[2].q_len, s->cl[2].a, s->cl[2].a_len,
	    DNS_RCODE_NOERROR, 30, EDE_STALE_ANSWER, &a);
}

/* The fake itself: an answer to another question is refused (and the
 * out-query stays pending), as the real pool drops it. */
static void
test_fake_mismatch(void **state)
{
	struct sc *s = *state;
	uint8_t b[512];
	size_t n;

	assert_int_equal(ask(s, 0, 0, 0xc001, "one.example", DNS_TYPE_A, 0),
	    QUERY_PENDING);
	n = build_a_answer(b, 1, "two.example", 60, 1);
	assert_int_equal(fake_answer(0, b, n, s->t0), DNSMSG_EMISMATCH);
	assert_int_equal(fake_state(0), FAKE_PENDING);
	assert_int_equal(s->n_done, 0);
	assert_int_equal(fake_answer(1, b, n, s->t0), -EINVAL);
	answer_a(s, 0, 0, "one.example", 60, 1);
	assert_int_equal(fake_state(0), FAKE_ANSWERED);
	assert_int_equal(fake_answer(0, b, n, s->t0), -EINVAL);
	assert_int_equal(fake_fail(0, UPSTREAM_ETIMEDOUT, s->t0), -EINVAL);
	assert_int_equal(s->n_done, 1);
}

/* Answer out-query i with an A record at T0 + at_ms, AD set as ad (an
 * upstream that validated, or one that sets AD whoever asks). */
static void
answer_a_ad(struct sc *s, uint64_t at_ms, size_t i, const char *name,
    uint32_t ttl, uint8_t last, int ad)
{
	uint8_t b[512];
	size_t n = build_a_answer(b, 0x5151, name, ttl, last);

	if (ad)
		put16(b + 2, (uint16_t)(get16(b + 2) | DNS_FLAG_AD));
	assert_int_equal(fake_answer(i, b, n, s->t0 + at_ms), 0);
}

/* The header flags of out-query i, and its OPT's DO bit. */
static uint16_t
outq_flags(size_t i, int *do_bit)
{
	const uint8_t *m;
	size_t len;
	struct ans a;

	m = fake_query(i, &len);
	assert_non_null(m);
	parse_ans(m, len, &a);
	*do_bit = a.do_bit;
	return get16(m + 2);
}

/* Client idx's answer: checked as usual (NOERROR, A 192.0.2.last, TTL
 * ttl); returns whether AD is set. */
static int
client_ad(struct sc *s, size_t idx, uint32_t ttl, uint8_t last)
{
	struct client *c = &s->cl[idx];
	struct ans a;

	check_answer(c->q, c->q_len, c->a, c->a_len, DNS_RCODE_NOERROR, ttl,
	    EDE_NONE, &a);
	assert_int_equal(a.n_rr, 1);
	assert_int_equal(a.a4[3], last);
	return (a.flags & DNS_FLAG_AD) != 0;
}

/* 18. RFC 6840 5.7: a client's AD goes upstream (with its CD and DO), and
 * an AD=0 answer cached for an AD=0 asker does not answer an AD=1 asker:
 * the key tells them apart, so the AD=1 asker gets an out-query of its
 * own, and each repeat is a hit with its own AD. */
static void
test_ad_upstream_and_key(void **state)
{
	struct sc *s = *state;
	int do_bit;

	/* AD=0, DO=0 first; the upstream (RFC 6840 5.8) says AD=0. */
	assert_int_equal(ask(s, 0, 0, 0x1801, "sec.example", DNS_TYPE_A, 0),
	    QUERY_PENDING);
	assert_int_equal(fake_count(), 1);
	assert_int_equal(outq_flags(0, &do_bit), DNS_FLAG_RD);
	assert_int_equal(do_bit, 0);
	answer_a_ad(s, 0, 0, "sec.example", 300, 1, 0);
	assert_false(client_ad(s, 0, 300, 1));

	/* AD=1 without DO: a miss, asked upstream with AD (and CD, RFC 6840
	 * 5.9, carried as the client set it). */
	assert_int_equal(ask(s, 1, 0, 0x1802, "sec.example", DNS_TYPE_A,
	    Q_AD | Q_CD), QUERY_PENDING);
	assert_int_equal(fake_count(), 2);
	assert_int_equal(outq_flags(1, &do_bit),
	    DNS_FLAG_RD | DNS_FLAG_AD | DNS_FLAG_CD);
	assert_int_equal(do_bit, 0);
	assert_int_equal(ask(s, 2, 0, 0x1803, "sec.example", DNS_TYPE_A,
	    Q_AD), QUERY_PENDING);
	assert_int_equal(fake_count(), 3);
	assert_int_equal(outq_flags(2, &do_bit), DNS_FLAG_RD | DNS_FLAG_AD);
	answer_a_ad(s, 0, 2, "sec.example", 300, 2, 1);
	assert_true(client_ad(s, 2, 300, 2));
	answer_a_ad(s, 0, 1, "sec.example", 300, 3, 1);
	assert_true(client_ad(s, 1, 300, 3));

	/* Repeats: hits, each with its own answer. */
	assert_int_equal(ask(s, 3, 1 * SEC, 0x1804, "sec.example", DNS_TYPE_A,
	    Q_AD), QUERY_ANSWER);
	assert_true(client_ad(s, 3, 299, 2));
	assert_int_equal(ask(s, 4, 1 * SEC, 0x1805, "sec.example", DNS_TYPE_A,
	    0), QUERY_ANSWER);
	assert_false(client_ad(s, 4, 299, 1));
	assert_int_equal(fake_count(), 3);

	/* DO: AD goes upstream as the client set it; DO with and without
	 * AD share one key (the upstream sets AD as it validated). */
	assert_int_equal(ask(s, 5, 0, 0x1806, "do.example", DNS_TYPE_A,
	    Q_EDNS | Q_DO), QUERY_PENDING);
	assert_int_equal(fake_count(), 4);
	assert_int_equal(outq_flags(3, &do_bit), DNS_FLAG_RD);
	assert_int_equal(do_bit, 1);
	assert_int_equal(ask(s, 6, 0, 0x1807, "do.example", DNS_TYPE_A,
	    Q_EDNS | Q_DO | Q_AD), QUERY_PENDING);
	assert_int_equal(fake_count(), 4);
	answer_a_ad(s, 0, 3, "do.example", 300, 4, 1);
	assert_true(client_ad(s, 5, 300, 4));
	assert_true(client_ad(s, 6, 300, 4));
	assert_int_equal(s->m.queries_coalesced, 1);
}

/* 19. RFC 6840 5.8: AD goes only to a client that set AD or DO; one that
 * set neither gets AD clear even from an upstream that sets it always,
 * straight from the upstream and from the cache. */
static void
test_ad_cleared(void **state)
{
	struct sc *s = *state;

	assert_int_equal(ask(s, 0, 0, 0x1901, "adall.example", DNS_TYPE_A,
	    Q_EDNS), QUERY_PENDING);
	assert_int_equal(ask(s, 1, 0, 0x1902, "adall.example", DNS_TYPE_A,
	    0), QUERY_PENDING);
	assert_int_equal(fake_count(), 1);
	answer_a_ad(s, 0, 0, "adall.example", 300, 5, 1);
	assert_false(client_ad(s, 0, 300, 5));
	assert_false(client_ad(s, 1, 300, 5));
	assert_int_equal(ask(s, 2, 2 * SEC, 0x1903, "adall.example",
	    DNS_TYPE_A, Q_EDNS), QUERY_ANSWER);
	assert_false(client_ad(s, 2, 298, 5));
	assert_int_equal(fake_count(), 1);
}

/* 20. RFC 1034 4.3.1: RD=0 is answered from a fresh cache entry (RD
 * clear in the answer, no prefetch even in the last tenth) or REFUSED,
 * never forwarded, stale or not. */
static void
test_rd0(void **state)
{
	struct sc *s = *state;
	struct ans a;

	/* A miss: REFUSED at once, no out-query. */
	assert_int_equal(ask(s, 0, 0, 0x2001, "nord.example", DNS_TYPE_A,
	    Q_NORD | Q_EDNS), QUERY_ANSWER);
	check_answer(s->cl[0].q, s->cl[0].q_len, s->cl[0].a, s->cl[0].a_len,
	    DNS_RCODE_REFUSED, 0, EDE_NONE, &a);
	assert_int_equal(a.an, 0);
	assert_false(a.flags & DNS_FLAG_RD);
	assert_int_equal(fake_count(), 0);

	/* Cached by an RD=1 asker: an RD=0 asker gets it. */
	assert_int_equal(ask(s, 1, 0, 0x2002, "nord.example", DNS_TYPE_A, 0),
	    QUERY_PENDING);
	answer_a(s, 0, 0, "nord.example", 100, 7);
	assert_int_equal(ask(s, 2, 10 * SEC, 0x2003, "NoRd.example",
	    DNS_TYPE_A, Q_NORD), QUERY_ANSWER);
	check_answer(s->cl[2].q, s->cl[2].q_len, s->cl[2].a, s->cl[2].a_len,
	    DNS_RCODE_NOERROR, 90, EDE_NONE, &a);
	assert_memory_equal(a.a4, "\300\0\2\7", 4);
	assert_false(a.flags & DNS_FLAG_RD);
	/* In the last tenth: an RD=1 hit would prefetch, this one not. */
	assert_int_equal(ask(s, 3, 95 * SEC, 0x2004, "nord.example",
	    DNS_TYPE_A, Q_NORD), QUERY_ANSWER);
	check_answer(s->cl[3].q, s->cl[3].q_len, s->cl[3].a, s->cl[3].a_len,
	    DNS_RCODE_NOERROR, 5, EDE_NONE, &a);
	assert_int_equal(fake_count(), 1);
	assert_int_equal(s->m.cache_prefetches, 0);

	/* Expired but within the stale window: REFUSED, not stale, and no
	 * refresh goes upstream. */
	seed(s, "old.example", 0, 1, 8, before_t0(s, 2 * SEC));
	assert_int_equal(ask(s, 4, 0, 0x2005, "old.example", DNS_TYPE_A,
	    Q_NORD), QUERY_ANSWER);
	check_answer(s->cl[4].q, s->cl[4].q_len, s->cl[4].a, s->cl[4].a_len,
	    DNS_RCODE_REFUSED, 0, EDE_NONE, &a);
	assert_int_equal(fake_count(), 1);
	assert_int_equal(s->m.cache_stale_served, 0);
}

/* 21. CHAOS class: answered here, never forwarded, whether local-zones is
 * on or not; REFUSED until identity / version are set. */
static void
test_chaos(void **state)
{
	struct sc *s = *state;
	char err[CONF_ERR_MAX];
	struct ans a;

	assert_int_equal(ask(s, 0, 0, 0x2101, "version.bind", DNS_TYPE_TXT,
	    Q_CH), QUERY_ANSWER);
	check_answer(s->cl[0].q, s->cl[0].q_len, s->cl[0].a, s->cl[0].a_len,
	    DNS_RCODE_REFUSED, 0, EDE_NONE, &a);
	assert_int_equal(conf_set(&s->conf, "version", "v9", "test", err,
	    sizeof(err)), 0);
	assert_int_equal(conf_set(&s->conf, "local-zones", "no", "test", err,
	    sizeof(err)), 0);
	assert_int_equal(ask(s, 1, 0, 0x2102, "Version.Bind", DNS_TYPE_TXT,
	    Q_CH | Q_EDNS), QUERY_ANSWER);
	check_answer(s->cl[1].q, s->cl[1].q_len, s->cl[1].a, s->cl[1].a_len,
	    DNS_RCODE_NOERROR, 0, EDE_NONE, &a);
	assert_int_equal(a.an, 1);
	assert_int_equal(a.type[0], DNS_TYPE_TXT);
	assert_memory_equal(s->cl[1].a + a.qend + 12, "\002v9", 3);
	assert_int_equal(ask(s, 2, 0, 0x2103, "id.server", DNS_TYPE_TXT, Q_CH),
	    QUERY_ANSWER);
	check_answer(s->cl[2].q, s->cl[2].q_len, s->cl[2].a, s->cl[2].a_len,
	    DNS_RCODE_REFUSED, 0, EDE_NONE, &a);
	assert_int_equal(ask(s, 3, 0, 0x2104, "www.example", DNS_TYPE_A, Q_CH),
	    QUERY_ANSWER);
	check_answer(s->cl[3].q, s->cl[3].q_len, s->cl[3].a, s->cl[3].a_len,
	    DNS_RCODE_REFUSED, 0, EDE_NONE, &a);
	assert_int_equal(fake_count(), 0);
	assert_int_equal(s->m.local_answers, 4);
	assert_int_equal(s->m.cache_misses, 0);
}

/* ---- two workers over one cache (query_share) ----
 *
 * A second query context on the same loop and cache plays worker 1. The
 * notify hook records what the fetcher says; the test delivers it to the
 * parked worker with query_remote_done, as worker.c's inbox would. */

#define NOTES_MAX 8

struct note {
	uint64_t mask;
	struct cache_key key;
	int status;
	uint8_t answer[ANS_MAX];
	size_t len;
	struct dnsmsg_answer_info info;
};

struct notes {
	size_t n;
	struct note note[NOTES_MAX];
};

static void
note_cb(void *arg, uint64_t mask, const struct cache_key *key, int status,
    const uint8_t *answer, size_t len, const struct dnsmsg_answer_info *info,
    const char *upstream)
{
	struct notes *ns = arg;
	struct note *n;

	(void)upstream;
	assert_true(ns->n < NOTES_MAX);
	n = &ns->note[ns->n++];
	n->mask = mask;
	n->key = *key;
	n->status = status;
	n->len = status == 0 ? len : 0;
	if (status == 0) {
		assert_true(len <= sizeof(n->answer));
		memcpy(n->answer, answer, len);
	}
	n->info = *info;
}

struct two {
	struct query_ctx ctx2;
	struct metrics m2;
	struct notes notes;
	struct query_share sh1, sh2;
};

static void
two_open(struct sc *s, struct two *t)
{
	memset(t, 0, sizeof(*t));
	assert_int_equal(query_ctx_init(&t->ctx2, &s->loop, &s->conf,
	    s->cache, s->pool, &t->m2), 0);
	t->sh1.worker = 0;
	t->sh2.worker = 1;
	t->sh1.notify = t->sh2.notify = note_cb;
	t->sh1.arg = t->sh2.arg = &t->notes;
	query_ctx_share(&s->ctx, &t->sh1);
	query_ctx_share(&t->ctx2, &t->sh2);
}

/* Client idx asks worker 1 at T0 + at_ms. */
static enum query_result
ask2(struct sc *s, struct two *t, size_t idx, uint64_t at_ms, uint16_t id,
    const char *name)
{
	struct client *c = &s->cl[idx];
	uint8_t out[DNS_MAX_MSG];
	size_t out_len = 0;
	enum query_result r;

	memset(c, 0, sizeof(*c));
	c->q_len = build_query(c->q, id, name, DNS_TYPE_A, Q_EDNS);
	r = query_handle(&t->ctx2, c->q, c->q_len, 1, NULL, s->t0 + at_ms,
	    out, &out_len, done_cb, s, &idx, sizeof(idx));
	if (r == QUERY_ANSWER) {
		memcpy(c->a, out, out_len);
		c->a_len = out_len;
	}
	return r;
}

static void
deliver(struct sc *s, struct two *t, size_t i, uint64_t at_ms)
{
	struct note *n = &t->notes.note[i];

	assert_true(i < t->notes.n);
	query_remote_done(&t->ctx2, &n->key, n->status,
	    n->status == 0 ? n->answer : NULL, n->len, &n->info, NULL,
	    s->t0 + at_ms);
}

/* A miss on worker 0 then the same name on worker 1: one out-query; the
 * answer reaches worker 1's client, personalized, through the note; a
 * failure likewise becomes SERVFAIL there. */
static void
test_share_across_workers(void **state)
{
	struct sc *s = *state;
	struct two t;
	struct ans a;

	two_open(s, &t);
	assert_int_equal(ask(s, 0, 0, 0x1000, "example.com", DNS_TYPE_A, 0),
	    QUERY_PENDING);
	assert_int_equal(ask2(s, &t, 1, 0, 0x1001, "EXAMPLE.com"),
	    QUERY_PENDING);
	assert_int_equal(fake_count(), 1);
	assert_int_equal(t.m2.queries_coalesced, 1);
	assert_int_equal(query_pending(&t.ctx2), 1);
	answer_a(s, 1 * SEC, 0, "example.com", 300, 7);
	assert_int_equal(s->cl[0].done, 1);
	assert_int_equal(s->cl[1].done, 0);
	assert_int_equal(t.notes.n, 1);
	assert_int_equal(t.notes.note[0].mask, 2);
	assert_int_equal(t.notes.note[0].status, 0);
	deliver(s, &t, 0, 1 * SEC);
	assert_int_equal(s->cl[1].done, 1);
	check_answer(s->cl[1].q, s->cl[1].q_len, s->cl[1].a, s->cl[1].a_len,
	    DNS_RCODE_NOERROR, 300, EDE_NONE, &a);
	assert_memory_equal(a.a4, "\300\0\2\7", 4);
	assert_int_equal(query_pending(&t.ctx2), 0);
	/* Now cached for both: a hit on worker 1, no out-query. */
	assert_int_equal(ask2(s, &t, 2, 2 * SEC, 0x1002, "example.COM"),
	    QUERY_ANSWER);
	assert_int_equal(fake_count(), 1);
	assert_int_equal(t.m2.cache_hits, 1);

	/* The fetch fails: worker 1's client gets SERVFAIL, once. */
	assert_int_equal(ask(s, 3, 3 * SEC, 0x2000, "fail.example.com",
	    DNS_TYPE_A, 0), QUERY_PENDING);
	assert_int_equal(ask2(s, &t, 4, 3 * SEC, 0x2001, "fail.example.com"),
	    QUERY_PENDING);
	assert_int_equal(fake_count(), 2);
	assert_int_equal(fake_fail(1, UPSTREAM_ETIMEDOUT, s->t0 + 4 * SEC),
	    0);
	assert_int_equal(t.notes.n, 2);
	assert_int_equal(t.notes.note[1].status, UPSTREAM_ETIMEDOUT);
	deliver(s, &t, 1, 4 * SEC);
	assert_int_equal(s->cl[4].done, 1);
	parse_ans(s->cl[4].a, s->cl[4].a_len, &a);
	assert_int_equal(a.rcode, DNS_RCODE_SERVFAIL);
	assert_int_equal(a.id, 0x2001);

	/* A note that never comes: the park deadline answers SERVFAIL; the
	 * late note then finds nothing and answers nobody twice. */
	assert_int_equal(ask(s, 5, 5 * SEC, 0x3000, "lost.example.com",
	    DNS_TYPE_A, 0), QUERY_PENDING);
	assert_int_equal(ask2(s, &t, 6, 5 * SEC, 0x3001, "lost.example.com"),
	    QUERY_PENDING);
	query_park_due(&t.ctx2, s->t0 + 5 * SEC + s->conf.query_timeout_ms);
	assert_int_equal(s->cl[6].done, 0);
	query_park_due(&t.ctx2, s->t0 + 6 * SEC + s->conf.query_timeout_ms);
	assert_int_equal(s->cl[6].done, 1);
	parse_ans(s->cl[6].a, s->cl[6].a_len, &a);
	assert_int_equal(a.rcode, DNS_RCODE_SERVFAIL);
	answer_a(s, 9 * SEC, 2, "lost.example.com", 300, 9);
	assert_int_equal(t.notes.n, 3);
	deliver(s, &t, 2, 9 * SEC);
	assert_int_equal(s->cl[6].done, 1);

	/* Parked at close: answered SERVFAIL by query_ctx_close. */
	assert_int_equal(ask(s, 7, 10 * SEC, 0x4000, "close.example.com",
	    DNS_TYPE_A, 0), QUERY_PENDING);
	assert_int_equal(ask2(s, &t, 8, 10 * SEC, 0x4001,
	    "close.example.com"), QUERY_PENDING);
	query_ctx_close(&t.ctx2);
	assert_int_equal(s->cl[8].done, 1);
	parse_ans(s->cl[8].a, s->cl[8].a_len, &a);
	assert_int_equal(a.rcode, DNS_RCODE_SERVFAIL);
	assert_int_equal(query_waiting(&t.ctx2), 0);
	shutdown_world(s);
	assert_int_equal(s->cl[7].done, 1);
	assert_int_equal(cache_release(s->cache, &t.notes.note[0].key, 0), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_coalesce, setup, teardown),
		cmocka_unit_test_setup_teardown(test_share_across_workers, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_ttl_aging, setup, teardown),
		cmocka_unit_test_setup_teardown(test_prefetch, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_prefetch_servfail_keeps_answer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_negative, setup, teardown),
		cmocka_unit_test_setup_teardown(test_servfail_cached, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_stale_on_failure, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_stale_on_servfail, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_stale_due, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_stale_timer, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_failure_no_stale, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_local, setup, teardown),
		cmocka_unit_test_setup_teardown(test_outquery_bytes, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_overload, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pending_cap, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_shutdown, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fake_mismatch, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_ad_upstream_and_key, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_ad_cleared, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_rd0, setup, teardown),
		cmocka_unit_test_setup_teardown(test_chaos, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
