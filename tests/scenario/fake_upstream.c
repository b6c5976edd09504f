/* fake_upstream.c: upstream.h without a network, for the scenario tests.
 *
 * Linked in place of src/upstream.c (its object comes before libdotproxy.a
 * on the link line, so the archive's upstream.o, and with it tls.o and
 * GnuTLS, are never pulled in). upstream_query copies the out-query and
 * its question into a list and returns; nothing else happens until the
 * test calls fake_answer or fake_fail, which is what makes the tests
 * deterministic: no timers, no sockets, no handles on the loop.
 *
 * The callback contract is the real one: upstream_query never calls cb;
 * once it has returned 0, cb is called exactly once (by fake_answer,
 * fake_fail or upstream_pool_close) unless upstream_cancel came first. A
 * record is marked done before its cb runs, so a cb that sends a new
 * out-query (or completes another) sees a consistent list. Records keep
 * their address (the list holds pointers), so they are stable across a
 * cb that makes the list grow.
 *
 * Time is the test's: fake_answer and fake_fail hand the cb the now_ms
 * they are given, as the real pool hands its loop time; the close hands
 * the last time a test gave (the loop's time at upstream_pool_new before
 * any).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "fake_upstream.h"
#include "mem.h"

struct upstream_req {
	enum fake_state state;
	uint8_t *msg;
	size_t len;
	struct dnsmsg_question q;
	upstream_cb cb;
	void *arg;
};

struct upstream_pool {
	const struct conf *conf;
	struct metrics *m;
	struct upstream_req **reqs;
	size_t n, cap;
	unsigned refuse;
	uint64_t answers, failures;
	uint64_t now_ms;   /* the last time a test gave; for the close */
};

/* The hooks act on the one pool that exists. */
static struct upstream_pool *cur;

struct upstream_pool *
upstream_pool_new(uv_loop_t *loop, const struct conf *conf,
    struct tls_ctx *tls, struct metrics *m)
{
	struct upstream_pool *p;

	(void)tls;
	p = mem_calloc(1, sizeof(*p));
	if (p == NULL)
		return NULL;
	p->now_ms = uv_now(loop);
	p->conf = conf;
	p->m = m;
	cur = p;
	return p;
}

int
upstream_query(struct upstream_pool *p, const uint8_t *query, size_t len,
    const struct dnsmsg_question *q, upstream_cb cb, void *arg,
    struct upstream_req **reqp)
{
	struct upstream_req *r = NULL, **grown;
	size_t cap;

	if (p->refuse > 0) {
		p->refuse--;
		goto fail;
	}
	if (p->n == p->cap) {
		cap = p->cap ? p->cap * 2 : 16;
		grown = mem_realloc(p->reqs, cap * sizeof(*grown));
		if (grown == NULL)
			goto fail;
		p->reqs = grown;
		p->cap = cap;
	}
	r = mem_calloc(1, sizeof(*r));
	if (r == NULL)
		goto fail;
	r->msg = mem_alloc(len ? len : 1);
	if (r->msg == NULL)
		goto fail;
	memcpy(r->msg, query, len);
	r->len = len;
	r->q = *q;
	r->cb = cb;
	r->arg = arg;
	r->state = FAKE_PENDING;
	p->reqs[p->n++] = r;
	if (p->m != NULL)
		p->m->upstream_queries++;
	if (reqp != NULL)
		*reqp = r;
	return 0;

fail:
	if (r != NULL)
		mem_free(r);
	return -ENOMEM;
}

void
upstream_cancel(struct upstream_req *r)
{
	if (r->state == FAKE_PENDING)
		r->state = FAKE_CANCELLED;
}

size_t
upstream_count(const struct upstream_pool *p)
{
	return p->conf->n_upstream;
}

void
upstream_get_status(const struct upstream_pool *p, size_t i,
    struct upstream_status *st)
{
	char addr[64];

	memset(st, 0, sizeof(*st));
	if (i >= p->conf->n_upstream)
		return;
	conf_addr_str(&p->conf->upstream[i].addr, addr, sizeof(addr));
	snprintf(st->name, sizeof(st->name), "%s#%s", addr,
	    p->conf->upstream[i].auth_name);
	st->connected = 1;
	st->healthy = 1;
	st->verified = 1;
	/* The fake has one wire for all upstreams: report it on the first. */
	if (i == 0) {
		st->queries = p->n;
		st->answers = p->answers;
		st->timeouts = p->failures;
	}
}

void
upstream_pool_close(struct upstream_pool *p)
{
	struct upstream_req *r;
	size_t i;

	/* p->n is read on each turn: a cb that sends again is closed too. */
	for (i = 0; i < p->n; i++) {
		r = p->reqs[i];
		if (r->state != FAKE_PENDING)
			continue;
		r->state = FAKE_CLOSED;
		r->cb(r->arg, UPSTREAM_ECLOSED, NULL, 0, NULL, NULL,
		    p->now_ms);
	}
	for (i = 0; i < p->n; i++) {
		mem_free(p->reqs[i]->msg);
		mem_free(p->reqs[i]);
	}
	mem_free(p->reqs);
	if (cur == p)
		cur = NULL;
	mem_free(p);
}

/* ---- test hooks ---- */

static struct upstream_req *
req_at(size_t i)
{
	return cur != NULL && i < cur->n ? cur->reqs[i] : NULL;
}

size_t
fake_count(void)
{
	return cur != NULL ? cur->n : 0;
}

size_t
fake_pending_count(void)
{
	size_t i, n = 0;

	for (i = 0; i < fake_count(); i++)
		if (cur->reqs[i]->state == FAKE_PENDING)
			n++;
	return n;
}

const uint8_t *
fake_query(size_t i, size_t *len)
{
	struct upstream_req *r = req_at(i);

	if (r == NULL)
		return NULL;
	*len = r->len;
	return r->msg;
}

const struct dnsmsg_question *
fake_question(size_t i)
{
	struct upstream_req *r = req_at(i);

	return r != NULL ? &r->q : NULL;
}

enum fake_state
fake_state(size_t i)
{
	struct upstream_req *r = req_at(i);

	return r != NULL ? r->state : FAKE_CLOSED;
}

int
fake_answer(size_t i, const uint8_t *answer, size_t len, uint64_t now_ms)
{
	struct upstream_req *r = req_at(i);
	struct dnsmsg_answer_info info;
	uint8_t *copy;
	int rc;

	if (r == NULL || r->state != FAKE_PENDING)
		return -EINVAL;
	rc = dnsmsg_parse_answer(answer, len, &r->q, &info);
	if (rc != 0)
		return rc;
	/* The cb may only read the bytes during the call: hand it a copy
	 * freed right after, so ASan catches a caller that keeps them. */
	copy = mem_alloc(len ? len : 1);
	if (copy == NULL)
		return -ENOMEM;
	memcpy(copy, answer, len);
	r->state = FAKE_ANSWERED;
	cur->answers++;
	if (cur->m != NULL)
		cur->m->upstream_answers++;
	cur->now_ms = now_ms;
	r->cb(r->arg, 0, copy, len, &info, "fake", now_ms);
	mem_free(copy);
	return 0;
}

int
fake_fail(size_t i, int status, uint64_t now_ms)
{
	struct upstream_req *r = req_at(i);

	if (r == NULL || r->state != FAKE_PENDING || status >= 0)
		return -EINVAL;
	r->state = FAKE_FAILED;
	cur->failures++;
	cur->now_ms = now_ms;
	r->cb(r->arg, status, NULL, 0, NULL, NULL, now_ms);
	return 0;
}

void
fake_refuse_next(unsigned n)
{
	if (cur != NULL)
		cur->refuse = n;
}
