/* test_local.c: unit tests for locally answered names (src/local.c).
 *
 * Queries are built byte by byte (and once by c-ares' ares_create_query)
 * and parsed with dnsmsg_parse_query, as the listener does. Answers are
 * checked twice over: dnsmsg_parse_answer must accept them as it accepts
 * an upstream's (so they could be cached), and an independent walk with
 * c-ares' ares_expand_name decodes every record, so owner names behind
 * compression pointers, SOA fields and addresses are compared as values.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include <ares.h>

#include "dnsmsg.h"
#include "local.h"

#define T_PTR 12
#define T_MX 15
#define T_ANY 255

/* ---- query builder ---- */

struct qb {
	uint8_t b[600];
	size_t n;
};

static void
qb_u8(struct qb *m, uint8_t v)
{
	assert_true(m->n < sizeof(m->b));
	m->b[m->n++] = v;
}

static void
qb_u16(struct qb *m, uint16_t v)
{
	qb_u8(m, (uint8_t)(v >> 8));
	qb_u8(m, (uint8_t)v);
}

/* A query for the dotted name (no escapes, "" is the root) as spelled,
 * with an OPT record when edns, DO set when do_bit. */
static void
mkquery(struct qb *m, const char *name, uint16_t type, uint16_t qclass,
    uint16_t flags, int edns, int do_bit)
{
	const char *p = name, *dot;
	size_t l;

	m->n = 0;
	qb_u16(m, 0xbeef);
	qb_u16(m, flags);
	qb_u16(m, 1);
	qb_u16(m, 0);
	qb_u16(m, 0);
	qb_u16(m, edns ? 1 : 0);
	while (*p != '\0') {
		dot = strchr(p, '.');
		l = dot ? (size_t)(dot - p) : strlen(p);
		assert_true(l > 0 && l < 64);
		qb_u8(m, (uint8_t)l);
		while (l-- > 0)
			qb_u8(m, (uint8_t)*p++);
		if (*p == '.')
			p++;
	}
	qb_u8(m, 0);
	qb_u16(m, type);
	qb_u16(m, qclass);
	if (edns) {
		qb_u8(m, 0);
		qb_u16(m, DNS_TYPE_OPT);
		qb_u16(m, 4096);
		qb_u16(m, 0);
		qb_u16(m, do_bit ? 0x8000 : 0);
		qb_u16(m, 0);
	}
}

/* ---- answer decoder (c-ares names, our own fixed fields) ---- */

struct rr {
	char owner[256];
	uint16_t type, rclass;
	uint32_t ttl;
	size_t rd, rdlen;       /* RDATA offset and length in the message */
};

struct ans {
	uint16_t id, flags, qd, an, ns, ar;
	size_t nrr;
	struct rr rr[8];
};

static uint16_t
g16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t
g32(const uint8_t *p)
{
	return ((uint32_t)g16(p) << 16) | g16(p + 2);
}

/* Expand the name at off into buf (no trailing dot; "" is the root);
 * returns the offset after it. */
static size_t
expand(const uint8_t *msg, size_t len, size_t off, char *buf, size_t cap)
{
	char *s = NULL;
	long enclen = 0;

	assert_true(off < len);
	assert_int_equal(ares_expand_name(msg + off, msg, (int)len, &s,
	    &enclen), ARES_SUCCESS);
	assert_non_null(s);
	assert_true(strlen(s) < cap);
	strcpy(buf, s);
	ares_free_string(s);
	return off + (size_t)enclen;
}

static void
decode(const uint8_t *msg, size_t len, struct ans *a)
{
	char qname[256];
	size_t pos, i;
	struct rr *r;

	memset(a, 0, sizeof(*a));
	assert_true(len >= 12);
	a->id = g16(msg);
	a->flags = g16(msg + 2);
	a->qd = g16(msg + 4);
	a->an = g16(msg + 6);
	a->ns = g16(msg + 8);
	a->ar = g16(msg + 10);
	assert_int_equal(a->qd, 1);
	pos = expand(msg, len, 12, qname, sizeof(qname)) + 4;
	assert_true(pos <= len);
	a->nrr = (size_t)a->an + a->ns + a->ar;
	assert_true(a->nrr <= 8);
	for (i = 0; i < a->nrr; i++) {
		r = &a->rr[i];
		if (msg[pos] == 0) {            /* OPT's root owner */
			r->owner[0] = '\0';
			pos++;
		} else {
			pos = expand(msg, len, pos, r->owner,
			    sizeof(r->owner));
		}
		assert_true(pos + 10 <= len);
		r->type = g16(msg + pos);
		r->rclass = g16(msg + pos + 2);
		r->ttl = g32(msg + pos + 4);
		r->rdlen = g16(msg + pos + 8);
		r->rd = pos + 10;
		pos = r->rd + r->rdlen;
		assert_true(pos <= len);
	}
	/* Nothing after the last record. */
	assert_int_equal(pos, len);
}

/* The SOA every local zone carries, owned by apex. */
static void
check_soa(const uint8_t *msg, size_t len, const struct rr *r,
    const char *apex)
{
	char mname[256], rname[256];
	size_t pos;

	assert_string_equal(r->owner, apex);
	assert_int_equal(r->type, DNS_TYPE_SOA);
	assert_int_equal(r->rclass, 1);
	assert_int_equal(r->ttl, 10800);
	pos = expand(msg, len, r->rd, mname, sizeof(mname));
	pos = expand(msg, len, pos, rname, sizeof(rname));
	assert_string_equal(mname, "localhost");
	assert_string_equal(rname, "nobody.invalid");
	assert_int_equal(r->rd + r->rdlen - pos, 20);
	assert_int_equal(g32(msg + pos), 1);
	assert_int_equal(g32(msg + pos + 4), 3600);
	assert_int_equal(g32(msg + pos + 8), 1200);
	assert_int_equal(g32(msg + pos + 12), 604800);
	assert_int_equal(g32(msg + pos + 16), 10800);
}

/* ---- running one query ---- */

struct run {
	struct qb qb;
	struct dnsmsg_query q;
	uint8_t out[1024];
	size_t out_len;
	int rc;
	struct ans a;
	struct dnsmsg_answer_info info;
};

/* Ask local_answer about a query. When it is answered, the answer must
 * parse as a reply to that very question, echo the client's question
 * bytes and ID, and decode cleanly. */
static void
ask_flags(struct run *r, const char *name, uint16_t type, uint16_t qclass,
    uint16_t flags, int edns, int do_bit)
{
	memset(r, 0, sizeof(*r));
	mkquery(&r->qb, name, type, qclass, flags, edns, do_bit);
	assert_int_equal(dnsmsg_parse_query(r->qb.b, r->qb.n, &r->q), 0);
	memset(r->out, 0xaa, sizeof(r->out));
	r->rc = local_answer(r->qb.b, r->qb.n, &r->q, r->out,
	    sizeof(r->out), &r->out_len);
	if (r->rc != 1)
		return;
	assert_int_equal(dnsmsg_parse_answer(r->out, r->out_len, &r->q.q,
	    &r->info), 0);
	assert_memory_equal(r->out + 12, r->qb.b + 12, r->q.q.end - 12);
	decode(r->out, r->out_len, &r->a);
	assert_int_equal(r->a.id, 0xbeef);
}

static void
ask(struct run *r, const char *name, uint16_t type)
{
	ask_flags(r, name, type, 1, DNS_FLAG_RD, 0, 0);
}

/* Local, authoritative, with the given rcode and section counts. */
static void
expect_reply(const struct run *r, int rcode, int an, int ns)
{
	assert_int_equal(r->rc, 1);
	assert_int_equal(r->a.flags, DNS_FLAG_QR | DNS_FLAG_AA | DNS_FLAG_RA |
	    DNS_FLAG_RD | rcode);
	assert_int_equal(r->a.an, an);
	assert_int_equal(r->a.ns, ns);
	assert_int_equal(r->a.ar, 0);
}

static void
expect_not_local(const struct run *r)
{
	size_t i;

	assert_int_equal(r->rc, 0);
	for (i = 0; i < sizeof(r->out); i++)
		assert_int_equal(r->out[i], 0xaa);
}

/* NXDOMAIN with the zone's SOA, cacheable for the SOA's 10800 s. */
static void
expect_nxdomain(const char *name, const char *apex)
{
	struct run r;

	ask(&r, name, DNS_TYPE_A);
	expect_reply(&r, DNS_RCODE_NXDOMAIN, 0, 1);
	check_soa(r.out, r.out_len, &r.a.rr[0], apex);
	assert_true(r.info.negative);
	assert_true(r.info.cacheable);
	assert_int_equal(r.info.ttl, 10800);
}

/* NOERROR without answers, with the zone's SOA. */
static void
expect_nodata(const char *name, uint16_t type, const char *apex)
{
	struct run r;

	ask(&r, name, type);
	expect_reply(&r, DNS_RCODE_NOERROR, 0, 1);
	check_soa(r.out, r.out_len, &r.a.rr[0], apex);
	assert_true(r.info.negative);
	assert_true(r.info.cacheable);
}

static void
expect_ptr_localhost(const char *name)
{
	struct run r;
	char target[256];
	size_t end;

	ask(&r, name, T_PTR);
	expect_reply(&r, DNS_RCODE_NOERROR, 1, 0);
	assert_string_equal(r.a.rr[0].owner, name);
	assert_int_equal(r.a.rr[0].type, T_PTR);
	assert_int_equal(r.a.rr[0].ttl, 3600);
	end = expand(r.out, r.out_len, r.a.rr[0].rd, target, sizeof(target));
	assert_int_equal(end, r.a.rr[0].rd + r.a.rr[0].rdlen);
	assert_string_equal(target, "localhost");
}

/* ---- tests ---- */

static void
test_localhost_a(void **state)
{
	struct run r;
	/* Owner: pointer to the question; TTL 3600; 127.0.0.1. */
	static const uint8_t want[] = { 0xc0, 0x0c, 0, 1, 0, 1,
	    0, 0, 0x0e, 0x10, 0, 4, 127, 0, 0, 1 };

	(void)state;
	ask(&r, "localhost", DNS_TYPE_A);
	expect_reply(&r, DNS_RCODE_NOERROR, 1, 0);
	assert_int_equal(r.out_len, r.q.q.end + sizeof(want));
	assert_memory_equal(r.out + r.q.q.end, want, sizeof(want));
	assert_false(r.info.negative);
	assert_int_equal(r.info.ttl, 3600);
}

static void
test_localhost_aaaa(void **state)
{
	struct run r;
	static const uint8_t loop6[16] = { [15] = 1 };

	(void)state;
	ask(&r, "localhost", DNS_TYPE_AAAA);
	expect_reply(&r, DNS_RCODE_NOERROR, 1, 0);
	assert_string_equal(r.a.rr[0].owner, "localhost");
	assert_int_equal(r.a.rr[0].type, DNS_TYPE_AAAA);
	assert_int_equal(r.a.rr[0].rclass, 1);
	assert_int_equal(r.a.rr[0].ttl, 3600);
	assert_int_equal(r.a.rr[0].rdlen, 16);
	assert_memory_equal(r.out + r.a.rr[0].rd, loop6, 16);
}

static void
test_localhost_other_types(void **state)
{
	struct run r;

	(void)state;
	expect_nodata("localhost", T_MX, "localhost");
	expect_nodata("localhost", DNS_TYPE_TXT, "localhost");
	expect_nodata("www.localhost", T_MX, "localhost");
	/* The apex's SOA is real data; below the apex it is NODATA. */
	ask(&r, "localhost", DNS_TYPE_SOA);
	expect_reply(&r, DNS_RCODE_NOERROR, 1, 0);
	check_soa(r.out, r.out_len, &r.a.rr[0], "localhost");
	expect_nodata("a.localhost", DNS_TYPE_SOA, "localhost");
	/* ANY gets both addresses. */
	ask(&r, "x.localhost", T_ANY);
	expect_reply(&r, DNS_RCODE_NOERROR, 2, 0);
	assert_int_equal(r.a.rr[0].type, DNS_TYPE_A);
	assert_int_equal(r.a.rr[1].type, DNS_TYPE_AAAA);
}

static void
test_localhost_spelling(void **state)
{
	struct run r;
	static const uint8_t a[4] = { 127, 0, 0, 1 };

	(void)state;
	/* The question comes back as the client spelled it, and the owner
	 * names point into it. */
	ask(&r, "FOO.LocalHost", DNS_TYPE_A);
	expect_reply(&r, DNS_RCODE_NOERROR, 1, 0);
	assert_memory_equal(r.out + 12, "\003FOO\011LocalHost", 15);
	assert_string_equal(r.a.rr[0].owner, "FOO.LocalHost");
	assert_int_equal(r.a.rr[0].rdlen, 4);
	assert_memory_equal(r.out + r.a.rr[0].rd, a, 4);

	ask(&r, "FOO.LocalHost", T_MX);
	expect_reply(&r, DNS_RCODE_NOERROR, 0, 1);
	check_soa(r.out, r.out_len, &r.a.rr[0], "LocalHost");

	ask(&r, "a.b.c.LOCALHOST", DNS_TYPE_AAAA);
	expect_reply(&r, DNS_RCODE_NOERROR, 1, 0);
}

static void
test_invalid_and_onion(void **state)
{
	struct run r;

	(void)state;
	expect_nxdomain("foo.invalid", "invalid");
	expect_nxdomain("a.b.Invalid", "Invalid");
	expect_nxdomain("expyuzz4wqqyqhjn.onion", "onion");
	/* Apex: the SOA itself, NODATA for anything else. */
	ask(&r, "invalid", DNS_TYPE_SOA);
	expect_reply(&r, DNS_RCODE_NOERROR, 1, 0);
	check_soa(r.out, r.out_len, &r.a.rr[0], "invalid");
	assert_false(r.info.negative);
	expect_nodata("invalid", DNS_TYPE_A, "invalid");
	ask(&r, "ONION", DNS_TYPE_SOA);
	expect_reply(&r, DNS_RCODE_NOERROR, 1, 0);
	check_soa(r.out, r.out_len, &r.a.rr[0], "ONION");
	expect_nodata("onion", DNS_TYPE_AAAA, "onion");
}

static void
test_rfc1918_reverse(void **state)
{
	struct run r;
	char name[64], apex[64];
	int i;

	(void)state;
	expect_nxdomain("4.3.2.10.in-addr.arpa", "10.in-addr.arpa");
	expect_nxdomain("1.1.168.192.in-addr.arpa", "168.192.in-addr.arpa");
	expect_nodata("10.in-addr.arpa", T_PTR, "10.in-addr.arpa");
	for (i = 16; i <= 31; i++) {
		snprintf(name, sizeof(name), "1.2.%d.172.in-addr.arpa", i);
		snprintf(apex, sizeof(apex), "%d.172.in-addr.arpa", i);
		expect_nxdomain(name, apex);
	}
	ask(&r, "1.2.15.172.in-addr.arpa", T_PTR);
	expect_not_local(&r);
	ask(&r, "1.2.32.172.in-addr.arpa", T_PTR);
	expect_not_local(&r);
	ask(&r, "172.in-addr.arpa", DNS_TYPE_SOA);
	expect_not_local(&r);
	ask(&r, "1.1.1.11.in-addr.arpa", T_PTR);
	expect_not_local(&r);
	ask(&r, "1.1.169.192.in-addr.arpa", T_PTR);
	expect_not_local(&r);
	ask(&r, "in-addr.arpa", DNS_TYPE_SOA);
	expect_not_local(&r);
}

static void
test_other_ipv4_reverse(void **state)
{
	struct run r;

	(void)state;
	expect_nxdomain("1.0.0.0.in-addr.arpa", "0.in-addr.arpa");
	expect_nxdomain("1.1.254.169.in-addr.arpa", "254.169.in-addr.arpa");
	expect_nxdomain("1.2.0.192.in-addr.arpa", "2.0.192.in-addr.arpa");
	expect_nxdomain("1.100.51.198.in-addr.arpa", "100.51.198.in-addr.arpa");
	expect_nxdomain("1.113.0.203.in-addr.arpa", "113.0.203.in-addr.arpa");
	expect_nodata("255.255.255.255.in-addr.arpa", T_PTR,
	    "255.255.255.255.in-addr.arpa");
	ask(&r, "1.3.0.192.in-addr.arpa", T_PTR);
	expect_not_local(&r);
	ask(&r, "1.1.253.169.in-addr.arpa", T_PTR);
	expect_not_local(&r);
}

static void
test_loopback_reverse(void **state)
{
	struct run r;

	(void)state;
	expect_ptr_localhost("1.0.0.127.in-addr.arpa");
	expect_ptr_localhost("1.0.0.127.IN-ADDR.ARPA");
	/* The name exists: other types are NODATA, not NXDOMAIN. */
	expect_nodata("1.0.0.127.in-addr.arpa", DNS_TYPE_A, "127.in-addr.arpa");
	/* So do the empty non-terminals above it (RFC 8020). */
	expect_nodata("0.0.127.in-addr.arpa", T_PTR, "127.in-addr.arpa");
	expect_nodata("0.127.in-addr.arpa", T_PTR, "127.in-addr.arpa");
	/* Anything else in 127/8 does not exist. */
	expect_nxdomain("2.0.0.127.in-addr.arpa", "127.in-addr.arpa");
	expect_nxdomain("1.1.0.127.in-addr.arpa", "127.in-addr.arpa");
	expect_nxdomain("9.1.0.0.127.in-addr.arpa", "127.in-addr.arpa");
	expect_nxdomain("1.0.0.0.127.in-addr.arpa", "127.in-addr.arpa");
	ask(&r, "127.in-addr.arpa", DNS_TYPE_SOA);
	expect_reply(&r, DNS_RCODE_NOERROR, 1, 0);
	check_soa(r.out, r.out_len, &r.a.rr[0], "127.in-addr.arpa");
	/* ANY at the host: its PTR. */
	ask(&r, "1.0.0.127.in-addr.arpa", T_ANY);
	expect_reply(&r, DNS_RCODE_NOERROR, 1, 0);
	assert_int_equal(r.a.rr[0].type, T_PTR);
}

#define IP6_ZERO30 "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0."
#define IP6_UNSPEC "0.0." IP6_ZERO30 "ip6.arpa"
#define IP6_LOOP "1.0." IP6_ZERO30 "ip6.arpa"

static void
test_ipv6_reverse(void **state)
{
	struct run r;

	(void)state;
	expect_ptr_localhost(IP6_LOOP);
	expect_nodata(IP6_LOOP, DNS_TYPE_AAAA, IP6_LOOP);
	expect_nodata(IP6_UNSPEC, T_PTR, IP6_UNSPEC);
	ask(&r, IP6_UNSPEC, DNS_TYPE_SOA);
	expect_reply(&r, DNS_RCODE_NOERROR, 1, 0);
	check_soa(r.out, r.out_len, &r.a.rr[0], IP6_UNSPEC);
	/* ::2 is an ordinary name: not in any zone. */
	ask(&r, "2.0." IP6_ZERO30 "ip6.arpa", T_PTR);
	expect_not_local(&r);
	expect_nxdomain("1.2.3.4.d.f.ip6.arpa", "d.f.ip6.arpa");
	expect_nxdomain("1.8.e.f.ip6.arpa", "8.e.f.ip6.arpa");
	expect_nxdomain("1.9.e.f.ip6.arpa", "9.e.f.ip6.arpa");
	expect_nxdomain("1.a.e.f.ip6.arpa", "a.e.f.ip6.arpa");
	expect_nxdomain("1.B.E.F.ip6.arpa", "B.E.F.ip6.arpa");
	expect_nxdomain("0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa",
	    "8.b.d.0.1.0.0.2.ip6.arpa");
	expect_nodata("d.f.ip6.arpa", T_PTR, "d.f.ip6.arpa");
	ask(&r, "1.c.e.f.ip6.arpa", T_PTR);
	expect_not_local(&r);
	ask(&r, "1.c.f.ip6.arpa", T_PTR);
	expect_not_local(&r);
	ask(&r, "e.f.ip6.arpa", T_PTR);
	expect_not_local(&r);
	ask(&r, "9.b.d.0.1.0.0.2.ip6.arpa", T_PTR);
	expect_not_local(&r);
}

static void
test_not_local(void **state)
{
	static const char *names[] = {
		"example.com", "notlocalhost", "xinvalid", "onionx",
		"localhost.example.com", "invalid.example", "local",
		"host", "10.in-addr.arpa.example", "x10.in-addr.arpa",
		"arpa", "ip6.arpa", "localhos", "",
		/* Names too short for the top-level label their last
		 * letter suggests, and last labels whose tail looks like
		 * one, length byte and all (local_tld's quick test lets
		 * them through; the label-wise match must not). */
		"a", "t", "d", "n", "xa", "in-addr.arpa",
		"x\004arpa", "10.x\004arpa", "127.in-addr.x\004arpa",
		"x\011localhost", "a.x\011localhost", "x\007invalid",
		"x\005onion", "nion", "alid", "host.localhost.x",
	};
	struct run r;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		ask(&r, names[i], DNS_TYPE_A);
		expect_not_local(&r);
	}
}

static void
test_flags(void **state)
{
	struct run r;

	(void)state;
	/* RD clear in the query, clear in the answer; CD copied. */
	ask_flags(&r, "localhost", DNS_TYPE_A, 1, 0, 0, 0);
	assert_int_equal(r.rc, 1);
	assert_int_equal(r.a.flags, DNS_FLAG_QR | DNS_FLAG_AA | DNS_FLAG_RA);
	ask_flags(&r, "localhost", DNS_TYPE_A, 1, DNS_FLAG_RD | DNS_FLAG_CD,
	    0, 0);
	assert_int_equal(r.rc, 1);
	assert_int_equal(r.a.flags, DNS_FLAG_QR | DNS_FLAG_AA | DNS_FLAG_RA |
	    DNS_FLAG_RD | DNS_FLAG_CD);
	/* Class ANY is answered like IN. */
	ask_flags(&r, "localhost", DNS_TYPE_A, 255, DNS_FLAG_RD, 0, 0);
	expect_reply(&r, DNS_RCODE_NOERROR, 1, 0);
	/* Another class: REFUSED, nothing but the question, and still not
	 * sent upstream. */
	ask_flags(&r, "localhost", DNS_TYPE_A, 3, DNS_FLAG_RD, 0, 0);
	assert_int_equal(r.rc, 1);
	assert_int_equal(r.a.flags, DNS_FLAG_QR | DNS_FLAG_RA | DNS_FLAG_RD |
	    DNS_RCODE_REFUSED);
	assert_int_equal(r.a.an + r.a.ns + r.a.ar, 0);
	assert_int_equal(r.out_len, r.q.q.end);
}

static void
test_edns(void **state)
{
	struct run r;
	static const uint8_t opt_do[] = { 0, 0, 41, 0x04, 0xd0,
	    0, 0, 0x80, 0, 0, 0 };
	static const uint8_t opt_nodo[] = { 0, 0, 41, 0x04, 0xd0,
	    0, 0, 0, 0, 0, 0 };

	(void)state;
	ask_flags(&r, "localhost", DNS_TYPE_A, 1, DNS_FLAG_RD, 1, 1);
	assert_int_equal(r.rc, 1);
	assert_int_equal(r.a.an, 1);
	assert_int_equal(r.a.ar, 1);
	assert_int_equal(r.a.rr[1].type, DNS_TYPE_OPT);
	assert_memory_equal(r.out + r.out_len - sizeof(opt_do), opt_do,
	    sizeof(opt_do));

	ask_flags(&r, "x.invalid", DNS_TYPE_A, 1, DNS_FLAG_RD, 1, 0);
	assert_int_equal(r.rc, 1);
	assert_int_equal(r.a.flags & 0xf, DNS_RCODE_NXDOMAIN);
	assert_int_equal(r.a.ns, 1);
	assert_int_equal(r.a.ar, 1);
	check_soa(r.out, r.out_len, &r.a.rr[0], "invalid");
	assert_memory_equal(r.out + r.out_len - sizeof(opt_nodo), opt_nodo,
	    sizeof(opt_nodo));

	/* REFUSED for another class keeps the OPT. */
	ask_flags(&r, "localhost", DNS_TYPE_A, 3, DNS_FLAG_RD, 1, 1);
	assert_int_equal(r.rc, 1);
	assert_int_equal(r.a.ar, 1);
	assert_int_equal(r.out_len, r.q.q.end + sizeof(opt_do));
}

static void
test_ares_query(void **state)
{
	unsigned char *buf = NULL;
	int blen = 0;
	struct dnsmsg_query q;
	struct dnsmsg_answer_info info;
	uint8_t out[512];
	size_t out_len = 0;

	(void)state;
	/* An independent encoder, with EDNS (c-ares sets no DO). */
	assert_int_equal(ares_create_query("Www.LocalHost", 1, DNS_TYPE_AAAA,
	    0x4242, 1, &buf, &blen, 1232), ARES_SUCCESS);
	assert_int_equal(dnsmsg_parse_query(buf, (size_t)blen, &q), 0);
	assert_true(q.edns);
	assert_int_equal(local_answer(buf, (size_t)blen, &q, out, sizeof(out),
	    &out_len), 1);
	assert_int_equal(dnsmsg_parse_answer(out, out_len, &q.q, &info), 0);
	assert_int_equal(dnsmsg_get_id(out), 0x4242);
	assert_int_equal(g16(out + 6), 1);
	assert_int_equal(g16(out + 10), 1);
	assert_memory_equal(out + 12, buf + 12, q.q.end - 12);
	ares_free_string(buf);
}

static void
test_enospc(void **state)
{
	static const struct {
		const char *name;
		uint16_t type;
		int edns;
	} cases[] = {
		{ "localhost", DNS_TYPE_A, 0 },
		{ "x.localhost", T_ANY, 1 },
		{ "foo.invalid", DNS_TYPE_A, 1 },
		{ "1.0.0.127.in-addr.arpa", T_PTR, 0 },
	};
	struct run r;
	uint8_t out[1024];
	size_t i, full, cap, out_len;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ask_flags(&r, cases[i].name, cases[i].type, 1, DNS_FLAG_RD,
		    cases[i].edns, 0);
		assert_int_equal(r.rc, 1);
		full = r.out_len;
		/* Every smaller buffer is refused and left untouched. */
		for (cap = 0; cap < full; cap++) {
			memset(out, 0x55, sizeof(out));
			out_len = 7;
			assert_int_equal(local_answer(r.qb.b, r.qb.n, &r.q, out,
			    cap, &out_len), DNSMSG_ENOSPC);
			assert_int_equal(out[0], 0x55);
			assert_int_equal(out_len, 7);
		}
		assert_int_equal(local_answer(r.qb.b, r.qb.n, &r.q, out, full,
		    &out_len), 1);
		assert_int_equal(out_len, full);
		assert_memory_equal(out, r.out, full);
	}
}

static void
test_no_question(void **state)
{
	struct run r;
	uint8_t out[64];
	size_t out_len = 0;

	(void)state;
	/* A parsed query without a usable question is never answered. */
	mkquery(&r.qb, "localhost", DNS_TYPE_A, 1, DNS_FLAG_RD, 0, 0);
	r.qb.b[5] = 0;  /* QDCOUNT 0 */
	assert_int_equal(dnsmsg_parse_query(r.qb.b, r.qb.n, &r.q),
	    DNS_RCODE_FORMERR);
	assert_int_equal(local_answer(r.qb.b, r.qb.n, &r.q, out, sizeof(out),
	    &out_len), 0);
}

/* ---- CHAOS (local_chaos_answer) ---- */

#define C_CH 3
#define C_HS 4

/* Ask local_chaos_answer with identity and version; when answered, the
 * answer must parse as a reply to the question (so the class is echoed),
 * echo the client's question bytes and ID, and decode cleanly. */
static void
ask_chaos(struct run *r, const char *name, uint16_t type, uint16_t qclass,
    uint16_t flags, int edns, const char *identity, const char *version)
{
	memset(r, 0, sizeof(*r));
	mkquery(&r->qb, name, type, qclass, flags, edns, edns);
	assert_int_equal(dnsmsg_parse_query(r->qb.b, r->qb.n, &r->q), 0);
	memset(r->out, 0xaa, sizeof(r->out));
	r->rc = local_chaos_answer(r->qb.b, r->qb.n, &r->q, identity, version,
	    r->out, sizeof(r->out), &r->out_len);
	if (r->rc != 1)
		return;
	assert_int_equal(dnsmsg_parse_answer(r->out, r->out_len, &r->q.q,
	    &r->info), 0);
	assert_memory_equal(r->out + 12, r->qb.b + 12, r->q.q.end - 12);
	decode(r->out, r->out_len, &r->a);
	assert_int_equal(r->a.id, 0xbeef);
}

/* REFUSED: QR, RA, the client's RD, no AA, nothing but the question. */
static void
expect_chaos_refused(const struct run *r)
{
	assert_int_equal(r->rc, 1);
	assert_int_equal(r->a.flags, DNS_FLAG_QR | DNS_FLAG_RA | DNS_FLAG_RD |
	    DNS_RCODE_REFUSED);
	assert_int_equal(r->a.an + r->a.ns + r->a.ar, 0);
	assert_int_equal(r->out_len, r->q.q.end);
}

/* One CH TXT record, TTL 0, owned by the question, holding text. */
static void
expect_chaos_txt(const struct run *r, const char *owner, const char *text)
{
	const struct rr *rr = &r->a.rr[0];
	size_t n = strlen(text);

	assert_int_equal(r->rc, 1);
	assert_int_equal(r->a.flags, DNS_FLAG_QR | DNS_FLAG_AA | DNS_FLAG_RA |
	    DNS_FLAG_RD);
	assert_int_equal(r->a.an, 1);
	assert_int_equal(r->a.ns, 0);
	assert_string_equal(rr->owner, owner);
	assert_int_equal(rr->type, DNS_TYPE_TXT);
	assert_int_equal(rr->rclass, C_CH);
	assert_int_equal(rr->ttl, 0);
	assert_int_equal(rr->rdlen, 1 + n);
	assert_int_equal(r->out[rr->rd], n);
	assert_memory_equal(r->out + rr->rd + 1, text, n);
}

/* RFC 1035 3.2.4 CH class: the four server names, REFUSED while the
 * string is unset (NULL or ""), the string when set; id.server and
 * hostname.bind give identity, version.* give version. */
static void
test_chaos_names(void **state)
{
	static const struct {
		const char *name;
		int is_version;
	} names[] = {
		{ "version.bind", 1 }, { "VERSION.Server", 1 },
		{ "hostname.bind", 0 }, { "Id.Server", 0 },
	};
	struct run r;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		ask_chaos(&r, names[i].name, DNS_TYPE_TXT, C_CH, DNS_FLAG_RD,
		    0, NULL, NULL);
		expect_chaos_refused(&r);
		ask_chaos(&r, names[i].name, DNS_TYPE_TXT, C_CH, DNS_FLAG_RD,
		    0, "", "");
		expect_chaos_refused(&r);
		ask_chaos(&r, names[i].name, DNS_TYPE_TXT, C_CH, DNS_FLAG_RD,
		    0, "host-1", "v-2.0");
		expect_chaos_txt(&r, names[i].name,
		    names[i].is_version ? "v-2.0" : "host-1");
		/* ANY is answered with the TXT too. */
		ask_chaos(&r, names[i].name, T_ANY, C_CH, DNS_FLAG_RD, 0,
		    "host-1", "v-2.0");
		expect_chaos_txt(&r, names[i].name,
		    names[i].is_version ? "v-2.0" : "host-1");
		/* Only the one string of each name counts. */
		ask_chaos(&r, names[i].name, DNS_TYPE_TXT, C_CH, DNS_FLAG_RD,
		    0, names[i].is_version ? "host-1" : NULL,
		    names[i].is_version ? NULL : "v-2.0");
		expect_chaos_refused(&r);
	}
}

/* Any other CH or HS question is REFUSED; other classes are not ours. */
static void
test_chaos_other(void **state)
{
	struct run r;

	(void)state;
	ask_chaos(&r, "version.bind", DNS_TYPE_A, C_CH, DNS_FLAG_RD, 0, "i",
	    "v");
	expect_chaos_refused(&r);
	ask_chaos(&r, "authors.bind", DNS_TYPE_TXT, C_CH, DNS_FLAG_RD, 0, "i",
	    "v");
	expect_chaos_refused(&r);
	ask_chaos(&r, "bind", DNS_TYPE_TXT, C_CH, DNS_FLAG_RD, 0, "i", "v");
	expect_chaos_refused(&r);
	ask_chaos(&r, "x.version.bind", DNS_TYPE_TXT, C_CH, DNS_FLAG_RD, 0,
	    "i", "v");
	expect_chaos_refused(&r);
	ask_chaos(&r, "www.example", DNS_TYPE_A, C_CH, DNS_FLAG_RD, 0, "i",
	    "v");
	expect_chaos_refused(&r);
	ask_chaos(&r, "version.bind", DNS_TYPE_TXT, C_HS, DNS_FLAG_RD, 0, "i",
	    "v");
	expect_chaos_refused(&r);
	/* IN and ANY: not answered here, nothing written. */
	ask_chaos(&r, "version.bind", DNS_TYPE_TXT, 1, DNS_FLAG_RD, 0, "i",
	    "v");
	expect_not_local(&r);
	ask_chaos(&r, "version.bind", DNS_TYPE_TXT, 255, DNS_FLAG_RD, 0, "i",
	    "v");
	expect_not_local(&r);
}

/* Flags and EDNS as for the local zones: RD and CD copied, an OPT with
 * the client's DO; a 255-character string fits; a short buffer gets
 * ENOSPC and is not written. */
static void
test_chaos_edns_size(void **state)
{
	static const uint8_t opt_do[] = { 0, 0, 41, 0x04, 0xd0,
	    0, 0, 0x80, 0, 0, 0 };
	char big[256];
	struct run r;
	uint8_t out[1024];
	size_t cap, out_len;

	(void)state;
	ask_chaos(&r, "id.server", DNS_TYPE_TXT, C_CH, DNS_FLAG_CD, 1, "me",
	    NULL);
	assert_int_equal(r.rc, 1);
	assert_int_equal(r.a.flags, DNS_FLAG_QR | DNS_FLAG_AA | DNS_FLAG_RA |
	    DNS_FLAG_CD);
	assert_int_equal(r.a.ar, 1);
	assert_memory_equal(r.out + r.out_len - sizeof(opt_do), opt_do,
	    sizeof(opt_do));
	ask_chaos(&r, "version.bind", DNS_TYPE_TXT, C_CH, 0, 1, "me", NULL);
	assert_int_equal(r.a.flags, DNS_FLAG_QR | DNS_FLAG_RA |
	    DNS_RCODE_REFUSED);
	assert_int_equal(r.out_len, r.q.q.end + sizeof(opt_do));

	memset(big, 'x', 255);
	big[255] = '\0';
	ask_chaos(&r, "version.bind", DNS_TYPE_TXT, C_CH, DNS_FLAG_RD, 0,
	    NULL, big);
	expect_chaos_txt(&r, "version.bind", big);
	for (cap = 0; cap < r.out_len; cap++) {
		memset(out, 0x55, sizeof(out));
		out_len = 7;
		assert_int_equal(local_chaos_answer(r.qb.b, r.qb.n, &r.q, NULL,
		    big, out, cap, &out_len), DNSMSG_ENOSPC);
		assert_int_equal(out[0], 0x55);
		assert_int_equal(out_len, 7);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_localhost_a),
		cmocka_unit_test(test_localhost_aaaa),
		cmocka_unit_test(test_localhost_other_types),
		cmocka_unit_test(test_localhost_spelling),
		cmocka_unit_test(test_invalid_and_onion),
		cmocka_unit_test(test_rfc1918_reverse),
		cmocka_unit_test(test_other_ipv4_reverse),
		cmocka_unit_test(test_loopback_reverse),
		cmocka_unit_test(test_ipv6_reverse),
		cmocka_unit_test(test_not_local),
		cmocka_unit_test(test_flags),
		cmocka_unit_test(test_edns),
		cmocka_unit_test(test_ares_query),
		cmocka_unit_test(test_enospc),
		cmocka_unit_test(test_no_question),
		cmocka_unit_test(test_chaos_names),
		cmocka_unit_test(test_chaos_other),
		cmocka_unit_test(test_chaos_edns_size),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
