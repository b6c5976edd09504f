/* fuzz_upstream.c: libFuzzer target for src/upstream.c: frame reassembly,
 * answer matching and everything an upstream's bytes can set off.
 *
 * The real upstream.c runs against fake_tls.c, so the input plays the
 * servers: it is a script of operations, one byte each followed by its
 * arguments. Queries go through upstream_query with one of three fixed
 * questions; connections open through the fake (which may be told to fail
 * in each way a TLS connection can); bytes reach the pool through read_cb
 * in chunks whose sizes the input chooses. Raw bytes may be fed, but most
 * of what a fuzzer writes would never match a query, so an "answer"
 * operation builds a frame around the header and question of a query the
 * pool really wrote on that connection (its ID too, unless the input
 * overrides it), with flags, counts and records from the input, and a
 * length prefix that may lie. Further operations cancel queries, close a
 * connection from the server's side, fail a write, reconfigure the pool,
 * make the Nth allocation fail (mem_fail_after), and run the loop: a turn
 * without waiting, or (at most twice per input) until the next timer,
 * which with the short timeouts set here means a few milliseconds.
 *
 * Checked with __builtin_trap() so that a broken contract crashes like a
 * memory error: no callback from inside upstream_query; at most one per
 * query, none after upstream_cancel; an answer given with status 0 parses
 * against its question; a failure carries no bytes; the status counts
 * stay below what was sent; and after upstream_pool_close every query that
 * was not cancelled has had exactly one callback, every connection and
 * handle is gone (uv_loop_close succeeds) and nothing leaked.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "conf.h"
#include "dnsmsg.h"
#include "fake_tls.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "upstream.h"
#include "../common/wire.h"
#include "fuzz_input.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_REQS 64
#define MAX_OPS 400
#define MAX_WAITS 2
#define N_QUESTIONS 3

struct req {
	struct upstream_req *h;
	int qi;            /* which question */
	int calls;         /* callbacks so far */
	int cancelled;
	int reenter;       /* its callback cancels or asks again */
};

struct questions {
	uint8_t wire[N_QUESTIONS][512];
	size_t len[N_QUESTIONS];
	struct dnsmsg_question q[N_QUESTIONS];
};

static struct questions qs;
static struct req reqs[MAX_REQS];
static size_t n_reqs;
static struct upstream_pool *pool;
static uv_loop_t *cur_loop;   /* the loop of the input being run */
static int in_query;

/* The three questions, as query.c would send them upstream. */
static void
questions_init(void)
{
	static const char *const names[N_QUESTIONS] = {
		"example.com", "www.Example.ORG", "a.b",
	};
	static const uint16_t types[N_QUESTIONS] = {
		DNS_TYPE_A, DNS_TYPE_AAAA, DNS_TYPE_TXT,
	};
	struct dnsmsg_query q;
	uint8_t b[300];
	size_t n, i;

	for (i = 0; i < N_QUESTIONS; i++) {
		memset(b, 0, DNS_HDR_LEN);
		b[2] = 1;          /* RD */
		b[5] = 1;          /* QDCOUNT */
		n = DNS_HDR_LEN + put_name(b + DNS_HDR_LEN, names[i]);
		b[n++] = (uint8_t)(types[i] >> 8);
		b[n++] = (uint8_t)types[i];
		b[n++] = 0;
		b[n++] = 1;
		if (dnsmsg_parse_query(b, n, &q) != 0 ||
		    dnsmsg_upstream_query(&q, qs.wire[i], sizeof(qs.wire[i]),
		    &qs.len[i]) != 0)
			abort();
		qs.q[i] = q.q;
	}
}

static void ask(int qi, int reenter);

static void
req_cb(void *arg, int status, const uint8_t *answer, size_t len,
    const struct dnsmsg_answer_info *info, const char *upstream,
    uint64_t now_ms)
{
	struct req *r = arg;
	struct dnsmsg_answer_info again;
	size_t i;

	if (in_query || r->cancelled || r->calls != 0)
		__builtin_trap();
	r->calls++;
	r->h = NULL;
	/* The pool's loop time at the callback, as upstream.h says. */
	if (now_ms != uv_now(cur_loop))
		__builtin_trap();
	if (status == 0) {
		if (answer == NULL || info == NULL || upstream == NULL ||
		    dnsmsg_parse_answer(answer, len, &qs.q[r->qi], &again) !=
		    0 || again.n_ttl != info->n_ttl)
			__builtin_trap();
	} else if (status > 0 || answer != NULL) {
		__builtin_trap();
	}
	if (!r->reenter)
		return;
	/* Callbacks may re-enter the pool (upstream.h): cancel the first
	 * query still waiting, or ask again. */
	for (i = 0; i < n_reqs; i++) {
		if (reqs[i].h != NULL) {
			upstream_cancel(reqs[i].h);
			reqs[i].h = NULL;
			reqs[i].cancelled = 1;
			return;
		}
	}
	ask(r->qi, 0);
}

static void
ask(int qi, int reenter)
{
	struct req *r;
	int rc;

	if (n_reqs == MAX_REQS)
		return;
	r = &reqs[n_reqs];
	memset(r, 0, sizeof(*r));
	r->qi = qi;
	r->reenter = reenter;
	in_query = 1;
	rc = upstream_query(pool, qs.wire[qi], qs.len[qi], &qs.q[qi], req_cb,
	    r, &r->h);
	in_query = 0;
	if (rc != 0) {
		/* No callback will come for it: forget it. */
		if (r->calls != 0)
			__builtin_trap();
		return;
	}
	n_reqs++;
}

static int
listed(const struct tls_conn *c)
{
	size_t i;

	for (i = 0; i < fake_tls_count(); i++)
		if (fake_tls_conn(i) == c)
			return 1;
	return 0;
}

/* An established connection chosen by b, or NULL. */
static struct tls_conn *
pick_conn(uint8_t b)
{
	size_t n = fake_tls_count(), i;
	struct tls_conn *c;

	for (i = 0; i < n; i++) {
		c = fake_tls_conn((b + i) % n);
		if (fake_tls_established(c))
			return c;
	}
	return NULL;
}

/* Feed len bytes to c in chunks the input sizes; stop when the pool
 * has closed c. */
static void
feed(struct input *in, struct tls_conn *c, const uint8_t *p, size_t len)
{
	size_t chunk;
	uint8_t b;

	while (len > 0 && listed(c) && fake_tls_established(c)) {
		b = take8(in);
		chunk = (b & 0x80) ? len : (size_t)(b & 0x7f) + 1;
		if (chunk > len)
			chunk = len;
		fake_tls_feed(c, p, chunk);
		p += chunk;
		len -= chunk;
	}
}

/* An answer frame to a query written on c: its header (ID) and question,
 * then flags, counts and record bytes from the input. */
static void
op_answer(struct input *in)
{
	uint8_t frame[2 + 4096];
	struct dnsmsg_query q;
	struct tls_conn *c = pick_conn(take8(in));
	const uint8_t *wf;
	size_t wlen, kept, k, n, body;
	uint8_t mode = take8(in), sel = take8(in);
	uint16_t flags = take16(in), counts = take16(in), lie = take16(in);

	body = take8(in);
	if (mode & 0x08)
		body = body << 4;
	if (body > in->n)
		body = in->n;
	if (c == NULL)
		goto skip;
	wlen = fake_tls_written(c);
	kept = wlen < FAKE_TLS_FRAMES ? wlen : FAKE_TLS_FRAMES;
	if (kept == 0)
		goto skip;
	/* Counted from the newest: a small number is a recent query. */
	k = kept - 1 - sel % kept;
	wf = fake_tls_frame(c, k, &wlen);
	if (wf == NULL || wlen < 2 + DNS_HDR_LEN ||
	    dnsmsg_parse_query(wf + 2, wlen - 2, &q) != 0 || !q.has_question)
		goto skip;
	n = 2 + q.q.end;
	memcpy(frame, wf, n);
	if (mode & 0x01) {
		frame[4] = (uint8_t)(flags >> 8);
		frame[5] = (uint8_t)flags;
	} else {
		frame[4] = 0x81;                      /* QR, RD */
		frame[5] = (uint8_t)(0x80 | (flags & 0x0f)); /* RA, rcode */
	}
	if (mode & 0x02) {
		frame[2] = (uint8_t)(lie >> 8);       /* another ID */
		frame[3] = (uint8_t)lie;
	}
	frame[6] = 0;
	frame[7] = 1;
	memset(frame + 8, 0, 6);
	frame[9] = (uint8_t)(counts & 0x7);          /* ANCOUNT */
	frame[11] = (uint8_t)((counts >> 3) & 0x3);  /* NSCOUNT */
	frame[13] = (uint8_t)((counts >> 5) & 0x3);  /* ARCOUNT */
	if (mode & 0x10)
		frame[9] = (uint8_t)(counts >> 8);
	if (body > sizeof(frame) - n)
		body = sizeof(frame) - n;
	memcpy(frame + n, in->p, body);
	in->p += body;
	in->n -= body;
	n += body;
	if (mode & 0x04) {
		/* A length prefix that lies (issue 7: it desynchronises). */
		frame[0] = (uint8_t)(lie >> 8);
		frame[1] = (uint8_t)(lie + 1);
	} else {
		frame[0] = (uint8_t)((n - 2) >> 8);
		frame[1] = (uint8_t)(n - 2);
	}
	if (mode & 0x20)
		n--;                                  /* cut short */
	feed(in, c, frame, n);
	return;
skip:
	in->p += body;
	in->n -= body;
}

static void
op_raw(struct input *in)
{
	struct tls_conn *c = pick_conn(take8(in));
	size_t len = take8(in);
	const uint8_t *p = in->p;

	if (len > in->n)
		len = in->n;
	in->p += len;
	in->n -= len;
	if (c != NULL)
		feed(in, c, p, len);
}

static void
check_status(void)
{
	struct upstream_status st;
	size_t i, n = upstream_count(pool), live = 0;

	for (i = 0; i < n_reqs; i++)
		live += reqs[i].h != NULL;
	for (i = 0; i < n; i++) {
		upstream_get_status(pool, i, &st);
		if (st.inflight > live || st.answers > st.queries ||
		    st.name[0] == '\0')
			__builtin_trap();
	}
}

/* Two configurations to switch between: a shares its first upstream with
 * b, which adds another (and drops a's others). */
static void
make_conf(struct conf *c, unsigned n_up, unsigned first, uint8_t knobs)
{
	static const char *const ups[] = {
		"127.0.0.1@853#a.test", "127.0.0.2@853#b.test",
		"::1@853#c.test",
		"127.0.0.4@853 pin-sha256=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
	};
	char err[CONF_ERR_MAX];
	unsigned i;

	conf_init(c);
	for (i = 0; i < n_up; i++)
		if (conf_set(c, "upstream", ups[(first + i) % 4], "fuzz", err,
		    sizeof(err)) != 0)
			abort();
	if (conf_finish(c, err, sizeof(err)) != 0)
		abort();
	/* Short enough that a wait for the next timer takes milliseconds.
	 * Set directly: the parser's floors (1 s) are for operators. */
	c->query_timeout_ms = 6 + (knobs & 7);
	c->answer_timeout_ms = (knobs & 8) ? 0 : 2 + (knobs >> 4 & 3);
	c->idle_timeout_ms = 4 + (knobs >> 6);
	c->connect_timeout_ms = 5;
	c->max_conn_lifetime_ms = (knobs & 0x40) ? 3 : 0;
	c->backoff_max_ms = 1000;
	c->selection = (enum conf_selection)(knobs % 3);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int init;
	static char ctx_a, ctx_b;
	struct input in = { data, size };
	struct conf ca, cb;
	struct metrics m;
	uv_loop_t loop;
	struct tls_ctx *tls = (struct tls_ctx *)(void *)&ctx_a;
	int on_b = 0, waits = 0, ops;
	uint8_t op, b, knobs;
	size_t i;

	if (!init) {
		log_open(LOGL_ERR, 1);
		questions_init();
		init = 1;
	}
	if (size < 3)
		return 0;
	knobs = take8(&in);
	b = take8(&in);
	make_conf(&ca, 1 + b % 3, 0, knobs);
	make_conf(&cb, 1 + (b >> 2) % 3, 2, (uint8_t)(knobs ^ b));
	fake_tls_reset(0x9e3779b9u ^ take8(&in));
	memset(&m, 0, sizeof(m));
	n_reqs = 0;
	if (uv_loop_init(&loop) != 0)
		abort();
	cur_loop = &loop;
	pool = upstream_pool_new(&loop, &ca, tls, &m);
	if (pool == NULL)
		abort();

	for (ops = 0; ops < MAX_OPS && in.n > 0; ops++) {
		op = take8(&in);
		switch (op % 13) {
		case 0:
		case 1:
			b = take8(&in);
			ask(b % N_QUESTIONS, (b & 0x80) != 0);
			break;
		case 2:
			b = take8(&in);
			i = n_reqs ? b % n_reqs : 0;
			if (i < n_reqs && reqs[i].h != NULL) {
				upstream_cancel(reqs[i].h);
				reqs[i].h = NULL;
				reqs[i].cancelled = 1;
			}
			break;
		case 3:
		case 4:
			(void)uv_run(&loop, UV_RUN_NOWAIT);
			break;
		case 5:
		case 6:
			op_answer(&in);
			break;
		case 7:
			op_raw(&in);
			break;
		case 8:
			b = take8(&in);
			if (fake_tls_count() > 0)
				fake_tls_peer_close(fake_tls_conn(b %
				    fake_tls_count()), (b & 0x80) ?
				    TLS_E_IO : TLS_E_EOF);
			break;
		case 9:
			b = take8(&in);
			fake_tls_set_outcome((enum fake_tls_outcome)(b %
			    FAKE_TLS_N_OUTCOMES));
			if (b & 0x80) {
				struct tls_conn *c = pick_conn(b);

				if (c != NULL)
					fake_tls_fail_next_write(c);
			}
			break;
		case 10:
			if (waits++ < MAX_WAITS)
				(void)uv_run(&loop, UV_RUN_ONCE);
			break;
		case 11:
			b = take8(&in);
			on_b = !on_b;
			if (b & 1)
				tls = tls == (struct tls_ctx *)(void *)&ctx_a ?
				    (struct tls_ctx *)(void *)&ctx_b :
				    (struct tls_ctx *)(void *)&ctx_a;
			(void)upstream_pool_reconfigure(pool, on_b ? &cb : &ca,
			    tls);
			break;
		case 12:
			mem_fail_after(take8(&in) % 8);
			break;
		}
		check_status();
	}

	mem_fail_after(-1);
	upstream_pool_close(pool);
	pool = NULL;
	if (uv_run(&loop, UV_RUN_DEFAULT) != 0 || uv_loop_close(&loop) != 0 ||
	    fake_tls_count() != 0)
		__builtin_trap();
	for (i = 0; i < n_reqs; i++)
		if (reqs[i].calls != (reqs[i].cancelled ? 0 : 1))
			__builtin_trap();
	return 0;
}
