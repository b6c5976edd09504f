/* test_dnsmsg.c: unit tests for the DNS message view (src/dnsmsg.c).
 *
 * Messages are built byte by byte with a small builder so that every
 * expected value (offsets, TTLs, reply bytes) can be worked out by hand;
 * c-ares' ares_create_query() supplies one query from an independent
 * encoder. Malformed cases follow RFC 9267's list: loops, pointers out of
 * range, label and name lengths, counts that lie.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <ares.h>

#include "dnsmsg.h"

struct mb {
	uint8_t b[8192];
	size_t n;
};

static void
mb_u8(struct mb *m, uint8_t v)
{
	assert_true(m->n < sizeof(m->b));
	m->b[m->n++] = v;
}

static void
mb_u16(struct mb *m, uint16_t v)
{
	mb_u8(m, (uint8_t)(v >> 8));
	mb_u8(m, (uint8_t)v);
}

static void
mb_u32(struct mb *m, uint32_t v)
{
	mb_u16(m, (uint16_t)(v >> 16));
	mb_u16(m, (uint16_t)v);
}

static void
mb_bytes(struct mb *m, const void *p, size_t n)
{
	assert_true(m->n + n <= sizeof(m->b));
	memcpy(m->b + m->n, p, n);
	m->n += n;
}

static void
mb_hdr(struct mb *m, uint16_t id, uint16_t flags, uint16_t qd, uint16_t an,
    uint16_t ns, uint16_t ar)
{
	m->n = 0;
	mb_u16(m, id);
	mb_u16(m, flags);
	mb_u16(m, qd);
	mb_u16(m, an);
	mb_u16(m, ns);
	mb_u16(m, ar);
}

/* Dotted name, no escapes; "" or "." is the root. */
static void
mb_name(struct mb *m, const char *name)
{
	const char *p = name, *dot;
	size_t l;

	while (*p != '\0' && strcmp(p, ".") != 0) {
		dot = strchr(p, '.');
		l = dot ? (size_t)(dot - p) : strlen(p);
		mb_u8(m, (uint8_t)l);
		mb_bytes(m, p, l);
		p += l;
		if (*p == '.')
			p++;
	}
	mb_u8(m, 0);
}

static void
mb_ptr(struct mb *m, uint16_t off)
{
	mb_u16(m, (uint16_t)(0xc000 | off));
}

static void
mb_q(struct mb *m, const char *name, uint16_t type, uint16_t cls)
{
	mb_name(m, name);
	mb_u16(m, type);
	mb_u16(m, cls);
}

/* RR owned by a pointer to the question name (offset 12). */
static void
mb_rr_ptr(struct mb *m, uint16_t type, uint32_t ttl, const void *rd,
    uint16_t rdlen)
{
	mb_ptr(m, 12);
	mb_u16(m, type);
	mb_u16(m, 1);
	mb_u32(m, ttl);
	mb_u16(m, rdlen);
	mb_bytes(m, rd, rdlen);
}

static void
mb_opt(struct mb *m, uint16_t udp, uint32_t ttl)
{
	mb_u8(m, 0);
	mb_u16(m, DNS_TYPE_OPT);
	mb_u16(m, udp);
	mb_u32(m, ttl);
	mb_u16(m, 0);
}

/* SOA in authority: owner = question name, names compressed against it. */
static void
mb_soa(struct mb *m, uint32_t ttl, uint32_t minimum)
{
	size_t rdlen_at;

	mb_ptr(m, 12);
	mb_u16(m, DNS_TYPE_SOA);
	mb_u16(m, 1);
	mb_u32(m, ttl);
	rdlen_at = m->n;
	mb_u16(m, 0);
	mb_u8(m, 3);
	mb_bytes(m, "ns1", 3);
	mb_ptr(m, 12);
	mb_u8(m, 10);
	mb_bytes(m, "hostmaster", 10);
	mb_ptr(m, 12);
	mb_u32(m, 2024010101);
	mb_u32(m, 7200);
	mb_u32(m, 3600);
	mb_u32(m, 1209600);
	mb_u32(m, minimum);
	m->b[rdlen_at] = (uint8_t)((m->n - rdlen_at - 2) >> 8);
	m->b[rdlen_at + 1] = (uint8_t)(m->n - rdlen_at - 2);
}

static uint32_t
rd32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
	    ((uint32_t)p[2] << 8) | p[3];
}

static const uint8_t A_RD[4] = { 192, 0, 2, 1 };
static const uint8_t EXAMPLE_WIRE[] = "\7example\3com";     /* + NUL = 13 */

static void
expect_example_a(struct dnsmsg_question *e)
{
	memset(e, 0, sizeof(*e));
	memcpy(e->wire, EXAMPLE_WIRE, sizeof(EXAMPLE_WIRE));
	e->wire_len = sizeof(EXAMPLE_WIRE);
	e->qtype = DNS_TYPE_A;
	e->qclass = 1;
	e->end = 12 + 13 + 4;
}

/* ---- queries ---- */

static void
test_query_basic_cares(void **state)
{
	unsigned char *buf = NULL;
	int blen = 0;
	struct dnsmsg_query q;
	static const uint8_t want[] = "\3www\7example\3com";

	(void)state;
	assert_int_equal(ares_create_query("WwW.ExAmple.COM", 1, DNS_TYPE_AAAA,
	    0x1234, 1, &buf, &blen, 0), ARES_SUCCESS);
	assert_int_equal(dnsmsg_parse_query(buf, (size_t)blen, &q), 0);
	assert_int_equal(q.id, 0x1234);
	assert_int_equal(q.flags, DNS_FLAG_RD);
	assert_int_equal(q.has_question, 1);
	assert_int_equal(q.q.wire_len, 17);
	assert_memory_equal(q.q.wire, want, 17);
	assert_int_equal(q.q.qtype, DNS_TYPE_AAAA);
	assert_int_equal(q.q.qclass, 1);
	assert_int_equal(q.q.end, 12 + 17 + 4);
	assert_int_equal(q.q.end, (size_t)blen);
	assert_int_equal(q.edns, 0);
	assert_int_equal(q.udp_size, 512);
	assert_int_equal(q.do_bit, 0);
	assert_int_equal(q.cd_bit, 0);
	/* The message itself is untouched: the sender's spelling stays. */
	assert_memory_equal(buf + 13, "WwW", 3);
	ares_free_string(buf);
}

static void
test_query_edns(void **state)
{
	struct mb m;
	struct dnsmsg_query q;

	(void)state;
	mb_hdr(&m, 7, DNS_FLAG_RD | DNS_FLAG_CD, 1, 0, 0, 1);
	mb_q(&m, "example.com", DNS_TYPE_A, 1);
	mb_opt(&m, 4096, 0x00008000);
	assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q), 0);
	assert_int_equal(q.edns, 1);
	assert_int_equal(q.udp_size, 4096);
	assert_int_equal(q.do_bit, 1);
	assert_int_equal(q.cd_bit, 1);
	assert_int_equal(q.q.end, 29);

	/* A payload below 512 is raised to 512; DO clear; extended rcode
	 * and version bits do not read as DO. */
	mb_hdr(&m, 7, 0, 1, 0, 0, 1);
	mb_q(&m, "example.com", DNS_TYPE_A, 1);
	mb_opt(&m, 100, 0xff007fff);
	assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q), 0);
	assert_int_equal(q.edns, 1);
	assert_int_equal(q.udp_size, 512);
	assert_int_equal(q.do_bit, 0);
	assert_int_equal(q.cd_bit, 0);

	/* ares_create_query with EDNS: its OPT is found too. */
	{
		unsigned char *buf = NULL;
		int blen = 0;

		assert_int_equal(ares_create_query("a.b", 1, DNS_TYPE_A, 1, 1,
		    &buf, &blen, 1400), ARES_SUCCESS);
		assert_int_equal(dnsmsg_parse_query(buf, (size_t)blen, &q), 0);
		assert_int_equal(q.edns, 1);
		assert_int_equal(q.udp_size, 1400);
		ares_free_string(buf);
	}
}

static void
test_query_drop(void **state)
{
	struct mb m;
	struct dnsmsg_query q;

	(void)state;
	mb_hdr(&m, 7, DNS_FLAG_QR, 1, 0, 0, 0);
	mb_q(&m, "example.com", DNS_TYPE_A, 1);
	assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q), DNSMSG_EMALFORMED);
	assert_int_equal(dnsmsg_parse_query(m.b, 11, &q), DNSMSG_EMALFORMED);
	assert_int_equal(dnsmsg_parse_query(m.b, 0, &q), DNSMSG_EMALFORMED);
}

static void
test_query_notimp(void **state)
{
	struct mb m;
	struct dnsmsg_query q;

	(void)state;
	mb_hdr(&m, 7, 2 << 11, 1, 0, 0, 0);     /* opcode STATUS */
	mb_q(&m, "example.com", DNS_TYPE_A, 1);
	assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q), DNS_RCODE_NOTIMP);
	assert_int_equal(q.has_question, 1);
	assert_int_equal(q.q.end, 29);

	mb_hdr(&m, 7, 5 << 11, 0, 0, 0, 0);     /* UPDATE, no question */
	assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q), DNS_RCODE_NOTIMP);
	assert_int_equal(q.has_question, 0);
}

static void
test_query_qdcount(void **state)
{
	struct mb m;
	struct dnsmsg_query q;

	(void)state;
	mb_hdr(&m, 7, 0, 0, 0, 0, 0);
	assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q), DNS_RCODE_FORMERR);
	assert_int_equal(q.has_question, 0);

	mb_hdr(&m, 7, 0, 2, 0, 0, 0);
	mb_q(&m, "example.com", DNS_TYPE_A, 1);
	mb_q(&m, "example.org", DNS_TYPE_A, 1);
	assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q), DNS_RCODE_FORMERR);
	assert_int_equal(q.has_question, 0);

	/* QDCOUNT 1 but the question is cut short. */
	mb_hdr(&m, 7, 0, 1, 0, 0, 0);
	mb_q(&m, "example.com", DNS_TYPE_A, 1);
	assert_int_equal(dnsmsg_parse_query(m.b, m.n - 1, &q),
	    DNS_RCODE_FORMERR);
	assert_int_equal(q.has_question, 0);
}

static void
test_query_name_limits(void **state)
{
	struct mb m;
	struct dnsmsg_query q;
	uint8_t lab[64];
	int i;

	(void)state;
	memset(lab, 'a', sizeof(lab));

	/* Label of 64: the length byte 0x40 is a reserved label type. */
	mb_hdr(&m, 7, 0, 1, 0, 0, 0);
	mb_u8(&m, 64);
	mb_bytes(&m, lab, 64);
	mb_u8(&m, 0);
	mb_u16(&m, 1);
	mb_u16(&m, 1);
	assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q), DNS_RCODE_FORMERR);

	/* 63 is fine. */
	mb_hdr(&m, 7, 0, 1, 0, 0, 0);
	mb_u8(&m, 63);
	mb_bytes(&m, lab, 63);
	mb_u8(&m, 0);
	mb_u16(&m, 1);
	mb_u16(&m, 1);
	assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q), 0);
	assert_int_equal(q.q.wire_len, 65);

	/* Exactly 255 bytes: 3 x (1+63) + (1+61) + root = 255. */
	mb_hdr(&m, 7, 0, 1, 0, 0, 0);
	for (i = 0; i < 3; i++) {
		mb_u8(&m, 63);
		mb_bytes(&m, lab, 63);
	}
	mb_u8(&m, 61);
	mb_bytes(&m, lab, 61);
	mb_u8(&m, 0);
	mb_u16(&m, 1);
	mb_u16(&m, 1);
	assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q), 0);
	assert_int_equal(q.q.wire_len, 255);

	/* 256 bytes: one more in the last label. */
	mb_hdr(&m, 7, 0, 1, 0, 0, 0);
	for (i = 0; i < 3; i++) {
		mb_u8(&m, 63);
		mb_bytes(&m, lab, 63);
	}
	mb_u8(&m, 62);
	mb_bytes(&m, lab, 62);
	mb_u8(&m, 0);
	mb_u16(&m, 1);
	mb_u16(&m, 1);
	assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q), DNS_RCODE_FORMERR);
	assert_int_equal(q.has_question, 0);

	/* A compression pointer in the question. */
	mb_hdr(&m, 7, 0, 1, 0, 0, 0);
	mb_u8(&m, 1);
	mb_u8(&m, 'a');
	mb_ptr(&m, 12);
	mb_u16(&m, 1);
	mb_u16(&m, 1);
	assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q), DNS_RCODE_FORMERR);

	/* Label running past the end. */
	mb_hdr(&m, 7, 0, 1, 0, 0, 0);
	mb_u8(&m, 10);
	mb_bytes(&m, "abc", 3);
	assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q), DNS_RCODE_FORMERR);
}

static void
test_query_sections(void **state)
{
	struct mb m;
	struct dnsmsg_query q;

	(void)state;
	/* Two OPT records. */
	mb_hdr(&m, 7, 0, 1, 0, 0, 2);
	mb_q(&m, "example.com", DNS_TYPE_A, 1);
	mb_opt(&m, 4096, 0x8000);
	mb_opt(&m, 4096, 0x8000);
	assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q), DNS_RCODE_FORMERR);
	assert_int_equal(q.has_question, 1);
	assert_int_equal(q.edns, 0);

	/* OPT not owned by root. */
	mb_hdr(&m, 7, 0, 1, 0, 0, 1);
	mb_q(&m, "example.com", DNS_TYPE_A, 1);
	mb_ptr(&m, 12);
	mb_u16(&m, DNS_TYPE_OPT);
	mb_u16(&m, 4096);
	mb_u32(&m, 0);
	mb_u16(&m, 0);
	assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q), DNS_RCODE_FORMERR);

	/* ARCOUNT says 1, nothing follows. */
	mb_hdr(&m, 7, 0, 1, 0, 0, 1);
	mb_q(&m, "example.com", DNS_TYPE_A, 1);
	assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q), DNS_RCODE_FORMERR);

	/* OPT with RDLENGTH past the end. */
	mb_hdr(&m, 7, 0, 1, 0, 0, 1);
	mb_q(&m, "example.com", DNS_TYPE_A, 1);
	mb_opt(&m, 4096, 0);
	m.b[m.n - 1] = 4;
	mb_bytes(&m, "\0\0\0", 3);
	assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q), DNS_RCODE_FORMERR);
	m.b[m.n - 4] = 3;       /* now it fits */
	assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q), 0);
	assert_int_equal(q.edns, 1);

	/* A compressed record in the answer section, then OPT: walked past. */
	mb_hdr(&m, 7, 0, 1, 1, 0, 1);
	mb_q(&m, "example.com", DNS_TYPE_A, 1);
	mb_rr_ptr(&m, DNS_TYPE_A, 60, A_RD, 4);
	mb_opt(&m, 1232, 0x8000);
	assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q), 0);
	assert_int_equal(q.udp_size, 1232);
	assert_int_equal(q.do_bit, 1);

	/* A record owner pointing at itself. */
	mb_hdr(&m, 7, 0, 1, 0, 0, 1);
	mb_q(&m, "example.com", DNS_TYPE_A, 1);
	mb_ptr(&m, (uint16_t)m.n);
	mb_u16(&m, DNS_TYPE_A);
	mb_u16(&m, 1);
	mb_u32(&m, 0);
	mb_u16(&m, 0);
	assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q), DNS_RCODE_FORMERR);
}

/* ---- error replies ---- */

static void
test_error_reply_question(void **state)
{
	struct mb m;
	struct dnsmsg_query q;
	uint8_t out[512];
	size_t n = 0;
	static const uint8_t want[] = {
		0xbe, 0xef, 0x81, 0x81, 0, 1, 0, 0, 0, 0, 0, 0,
		1, 'A', 1, 'b', 0, 0, 1, 0, 1,
	};

	(void)state;
	/* A query with CD and an extra (lying) answer count: FORMERR. */
	mb_hdr(&m, 0xbeef, DNS_FLAG_RD | DNS_FLAG_CD, 1, 1, 0, 0);
	mb_q(&m, "A.b", DNS_TYPE_A, 1);
	assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q), DNS_RCODE_FORMERR);
	assert_int_equal(dnsmsg_error_reply(m.b, m.n, &q, DNS_RCODE_FORMERR,
	    out, sizeof(out), &n), 0);
	assert_int_equal(n, sizeof(want));
	assert_memory_equal(out, want, sizeof(want));

	/* Too small a buffer. */
	assert_int_equal(dnsmsg_error_reply(m.b, m.n, &q, DNS_RCODE_FORMERR,
	    out, sizeof(want) - 1, &n), DNSMSG_ENOSPC);
}

static void
test_error_reply_noquestion(void **state)
{
	struct mb m;
	struct dnsmsg_query q;
	uint8_t out[512];
	size_t n = 0;
	/* opcode 5 kept, RD clear in the query so clear here; NOTIMP. */
	static const uint8_t want[] = {
		0x00, 0x07, 0xa8, 0x84, 0, 0, 0, 0, 0, 0, 0, 0,
	};

	(void)state;
	mb_hdr(&m, 7, 5 << 11, 0, 0, 0, 0);
	assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q), DNS_RCODE_NOTIMP);
	assert_int_equal(dnsmsg_error_reply(m.b, m.n, &q, DNS_RCODE_NOTIMP,
	    out, sizeof(out), &n), 0);
	assert_int_equal(n, sizeof(want));
	assert_memory_equal(out, want, sizeof(want));
}

static void
test_error_reply_edns(void **state)
{
	struct mb m;
	struct dnsmsg_query q;
	uint8_t out[512];
	size_t n = 0;
	static const uint8_t want[] = {
		0x12, 0x34, 0x81, 0x82, 0, 1, 0, 0, 0, 0, 0, 1,
		1, 'a', 0, 0, 28, 0, 1,
		0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 0,
	};

	(void)state;
	mb_hdr(&m, 0x1234, DNS_FLAG_RD, 1, 0, 0, 1);
	mb_q(&m, "a", DNS_TYPE_AAAA, 1);
	mb_opt(&m, 4096, 0x8000);
	assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q), 0);
	assert_int_equal(dnsmsg_error_reply(m.b, m.n, &q, DNS_RCODE_SERVFAIL,
	    out, sizeof(out), &n), 0);
	assert_int_equal(n, sizeof(want));
	assert_memory_equal(out, want, sizeof(want));
	assert_int_equal(dnsmsg_error_reply(m.b, m.n, &q, DNS_RCODE_SERVFAIL,
	    out, sizeof(want) - 1, &n), DNSMSG_ENOSPC);
}

/* ---- answers ---- */

/* Header + question "example.com A IN" with the given counts. */
static void
answer_start(struct mb *m, uint16_t flags, uint16_t an, uint16_t ns,
    uint16_t ar)
{
	mb_hdr(m, 1, (uint16_t)(DNS_FLAG_QR | DNS_FLAG_RD | DNS_FLAG_RA |
	    flags), 1, an, ns, ar);
	mb_q(m, "example.com", DNS_TYPE_A, 1);
}

static void
test_answer_min_ttl(void **state)
{
	struct mb m;
	struct dnsmsg_question e;
	struct dnsmsg_answer_info info;
	static const uint8_t ns_rd[] = "\3ns1\300\014";

	(void)state;
	expect_example_a(&e);
	answer_start(&m, 0, 2, 1, 2);
	mb_rr_ptr(&m, DNS_TYPE_A, 300, A_RD, 4);          /* TTL at 29+6 */
	mb_rr_ptr(&m, DNS_TYPE_A, 250, A_RD, 4);          /* 45+6 */
	mb_rr_ptr(&m, DNS_TYPE_NS, 200, ns_rd, 6);        /* 61+6 */
	mb_opt(&m, 1232, 0);      /* TTL field 0: must not count */
	mb_rr_ptr(&m, DNS_TYPE_A, 100, A_RD, 4);          /* 90+6 */
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info), 0);
	assert_int_equal(info.rcode, 0);
	assert_int_equal(info.tc, 0);
	assert_int_equal(info.negative, 0);
	assert_int_equal(info.cacheable, 1);
	assert_int_equal(info.ttl, 100);
	assert_int_equal(info.n_ttl, 4);
	assert_int_equal(info.ttl_off[0], 35);
	assert_int_equal(info.ttl_off[1], 51);
	assert_int_equal(info.ttl_off[2], 67);
	assert_int_equal(info.ttl_off[3], 96);
	assert_int_equal(rd32(m.b + info.ttl_off[0]), 300);
	assert_int_equal(rd32(m.b + info.ttl_off[2]), 200);
	assert_int_equal(rd32(m.b + info.ttl_off[3]), 100);

	/* A TTL with the top bit set counts as 0 (RFC 2181). */
	answer_start(&m, 0, 2, 0, 0);
	mb_rr_ptr(&m, DNS_TYPE_A, 300, A_RD, 4);
	mb_rr_ptr(&m, DNS_TYPE_A, 0x80000001u, A_RD, 4);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info), 0);
	assert_int_equal(info.ttl, 0);
	assert_int_equal(info.cacheable, 1);
}

static void
test_answer_malformed_names(void **state)
{
	struct mb m;
	struct dnsmsg_question e;
	struct dnsmsg_answer_info info;

	(void)state;
	expect_example_a(&e);

	/* Owner name is a pointer to itself. */
	answer_start(&m, 0, 1, 0, 0);
	mb_ptr(&m, (uint16_t)m.n);
	mb_u16(&m, DNS_TYPE_A);
	mb_u16(&m, 1);
	mb_u32(&m, 60);
	mb_u16(&m, 4);
	mb_bytes(&m, A_RD, 4);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info),
	    DNSMSG_EMALFORMED);

	/* Two names pointing at each other: a loop through a label. */
	answer_start(&m, 0, 1, 0, 0);
	{
		size_t at = m.n;

		mb_u8(&m, 1);
		mb_u8(&m, 'x');
		mb_ptr(&m, (uint16_t)at);
	}
	mb_u16(&m, DNS_TYPE_A);
	mb_u16(&m, 1);
	mb_u32(&m, 60);
	mb_u16(&m, 4);
	mb_bytes(&m, A_RD, 4);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info),
	    DNSMSG_EMALFORMED);

	/* Pointer past the end of the message. */
	answer_start(&m, 0, 1, 0, 0);
	mb_ptr(&m, 0x3000);
	mb_u16(&m, DNS_TYPE_A);
	mb_u16(&m, 1);
	mb_u32(&m, 60);
	mb_u16(&m, 4);
	mb_bytes(&m, A_RD, 4);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info),
	    DNSMSG_EMALFORMED);

	/* Pointer into the header. */
	answer_start(&m, 0, 1, 0, 0);
	mb_ptr(&m, 4);
	mb_u16(&m, DNS_TYPE_A);
	mb_u16(&m, 1);
	mb_u32(&m, 60);
	mb_u16(&m, 4);
	mb_bytes(&m, A_RD, 4);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info),
	    DNSMSG_EMALFORMED);

	/* Control: the same record with a good pointer parses. */
	answer_start(&m, 0, 1, 0, 0);
	mb_rr_ptr(&m, DNS_TYPE_A, 60, A_RD, 4);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info), 0);

	/* Question with a pointer is malformed in an answer too. */
	mb_hdr(&m, 1, DNS_FLAG_QR, 1, 0, 0, 0);
	mb_ptr(&m, 12);
	mb_u16(&m, 1);
	mb_u16(&m, 1);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info),
	    DNSMSG_EMALFORMED);
}

static void
test_answer_counts_lie(void **state)
{
	struct mb m;
	struct dnsmsg_question e;
	struct dnsmsg_answer_info info;

	(void)state;
	expect_example_a(&e);
	answer_start(&m, 0, 3, 0, 0);
	mb_rr_ptr(&m, DNS_TYPE_A, 60, A_RD, 4);
	mb_rr_ptr(&m, DNS_TYPE_A, 60, A_RD, 4);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info),
	    DNSMSG_EMALFORMED);

	/* Authority count lies. */
	answer_start(&m, 0, 1, 1, 0);
	mb_rr_ptr(&m, DNS_TYPE_A, 60, A_RD, 4);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info),
	    DNSMSG_EMALFORMED);

	/* RDLENGTH runs past the end. */
	answer_start(&m, 0, 1, 0, 0);
	mb_rr_ptr(&m, DNS_TYPE_A, 60, A_RD, 4);
	m.b[m.n - 5] = 5;
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info),
	    DNSMSG_EMALFORMED);
	m.b[m.n - 5] = 4;
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info), 0);

	/* Record cut inside its fixed part. */
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n - 8, &e, &info),
	    DNSMSG_EMALFORMED);

	/* QR clear, QDCOUNT 0, short. */
	m.b[2] &= 0x7f;
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info),
	    DNSMSG_EMALFORMED);
	m.b[2] |= 0x80;
	m.b[5] = 0;
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info),
	    DNSMSG_EMALFORMED);
	m.b[5] = 1;
	assert_int_equal(dnsmsg_parse_answer(m.b, 11, &e, &info),
	    DNSMSG_EMALFORMED);
}

static void
test_answer_mismatch(void **state)
{
	struct mb m;
	struct dnsmsg_question e;
	struct dnsmsg_answer_info info;

	(void)state;
	expect_example_a(&e);

	mb_hdr(&m, 1, DNS_FLAG_QR, 1, 0, 0, 0);
	mb_q(&m, "example.org", DNS_TYPE_A, 1);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info),
	    DNSMSG_EMISMATCH);

	mb_hdr(&m, 1, DNS_FLAG_QR, 1, 0, 0, 0);
	mb_q(&m, "example.com", DNS_TYPE_AAAA, 1);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info),
	    DNSMSG_EMISMATCH);

	mb_hdr(&m, 1, DNS_FLAG_QR, 1, 0, 0, 0);
	mb_q(&m, "example.com", DNS_TYPE_A, 3);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info),
	    DNSMSG_EMISMATCH);

	mb_hdr(&m, 1, DNS_FLAG_QR, 1, 0, 0, 0);
	mb_q(&m, "www.example.com", DNS_TYPE_A, 1);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info),
	    DNSMSG_EMISMATCH);

	/* Different case is the same name. */
	mb_hdr(&m, 1, DNS_FLAG_QR, 1, 1, 0, 0);
	mb_q(&m, "ExAMPLE.Com", DNS_TYPE_A, 1);
	mb_rr_ptr(&m, DNS_TYPE_A, 42, A_RD, 4);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info), 0);
	assert_int_equal(info.ttl, 42);
}

static void
test_answer_negative(void **state)
{
	struct mb m;
	struct dnsmsg_question e;
	struct dnsmsg_answer_info info;

	(void)state;
	expect_example_a(&e);

	/* NXDOMAIN: min(SOA TTL 3600, MINIMUM 900) = 900. */
	answer_start(&m, DNS_RCODE_NXDOMAIN, 0, 1, 1);
	mb_soa(&m, 3600, 900);
	mb_opt(&m, 1232, 0);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info), 0);
	assert_int_equal(info.rcode, DNS_RCODE_NXDOMAIN);
	assert_int_equal(info.negative, 1);
	assert_int_equal(info.cacheable, 1);
	assert_int_equal(info.ttl, 900);
	assert_int_equal(info.n_ttl, 1);
	assert_int_equal(info.ttl_off[0], 35);

	/* The SOA TTL is the smaller: 60. */
	answer_start(&m, DNS_RCODE_NXDOMAIN, 0, 1, 0);
	mb_soa(&m, 60, 900);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info), 0);
	assert_int_equal(info.ttl, 60);

	/* NODATA: NOERROR with no answers. */
	answer_start(&m, 0, 0, 1, 0);
	mb_soa(&m, 300, 120);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info), 0);
	assert_int_equal(info.rcode, 0);
	assert_int_equal(info.negative, 1);
	assert_int_equal(info.cacheable, 1);
	assert_int_equal(info.ttl, 120);

	/* NXDOMAIN without SOA. */
	answer_start(&m, DNS_RCODE_NXDOMAIN, 0, 0, 0);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info), 0);
	assert_int_equal(info.negative, 1);
	assert_int_equal(info.cacheable, 0);

	/* NODATA without SOA. */
	answer_start(&m, 0, 0, 0, 0);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info), 0);
	assert_int_equal(info.negative, 1);
	assert_int_equal(info.cacheable, 0);

	/* SOA whose RDATA is one byte short of its fixed fields. */
	answer_start(&m, DNS_RCODE_NXDOMAIN, 0, 1, 0);
	mb_soa(&m, 60, 900);
	m.b[m.n - 40]--;        /* RDLENGTH low byte: 39 RDATA bytes back */
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info),
	    DNSMSG_EMALFORMED);
}

static void
test_answer_not_cacheable(void **state)
{
	struct mb m;
	struct dnsmsg_question e;
	struct dnsmsg_answer_info info;
	int i;

	(void)state;
	expect_example_a(&e);

	answer_start(&m, DNS_RCODE_SERVFAIL, 0, 0, 0);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info), 0);
	assert_int_equal(info.rcode, DNS_RCODE_SERVFAIL);
	assert_int_equal(info.negative, 0);
	assert_int_equal(info.cacheable, 0);

	answer_start(&m, DNS_RCODE_REFUSED, 0, 0, 0);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info), 0);
	assert_int_equal(info.cacheable, 0);

	answer_start(&m, DNS_FLAG_TC, 1, 0, 0);
	mb_rr_ptr(&m, DNS_TYPE_A, 60, A_RD, 4);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info), 0);
	assert_int_equal(info.tc, 1);
	assert_int_equal(info.cacheable, 0);

	/* One RR more than can be remembered. */
	answer_start(&m, 0, DNSMSG_MAX_RRS + 1, 0, 0);
	for (i = 0; i < DNSMSG_MAX_RRS + 1; i++)
		mb_rr_ptr(&m, DNS_TYPE_A, (uint32_t)(1000 - i), A_RD, 4);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info), 0);
	assert_int_equal(info.n_ttl, DNSMSG_MAX_RRS);
	assert_int_equal(info.cacheable, 0);
	assert_int_equal(info.ttl, 1000 - DNSMSG_MAX_RRS);

	/* Exactly the maximum is fine. */
	answer_start(&m, 0, DNSMSG_MAX_RRS, 0, 0);
	for (i = 0; i < DNSMSG_MAX_RRS; i++)
		mb_rr_ptr(&m, DNS_TYPE_A, 77, A_RD, 4);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info), 0);
	assert_int_equal(info.n_ttl, DNSMSG_MAX_RRS);
	assert_int_equal(info.cacheable, 1);
	assert_int_equal(info.ttl_off[DNSMSG_MAX_RRS - 1],
	    29 + 16 * (DNSMSG_MAX_RRS - 1) + 6);
}

/* ---- in-place edits ---- */

static void
test_personalize(void **state)
{
	struct mb a, c;
	struct dnsmsg_query q;
	struct dnsmsg_question e;
	struct dnsmsg_answer_info info;
	uint8_t orig[256];
	size_t alen;

	(void)state;
	expect_example_a(&e);
	answer_start(&a, 0, 1, 0, 0);  /* flags 0x8180, ID 1 */
	mb_rr_ptr(&a, DNS_TYPE_A, 60, A_RD, 4);
	alen = a.n;
	assert_int_equal(dnsmsg_parse_answer(a.b, alen, &e, &info), 0);
	memcpy(orig, a.b, alen);

	mb_hdr(&c, 0x4242, DNS_FLAG_CD, 1, 0, 0, 0);   /* RD clear, CD set */
	mb_q(&c, "ExAmPle.COM", DNS_TYPE_A, 1);
	assert_int_equal(dnsmsg_parse_query(c.b, c.n, &q), 0);

	dnsmsg_personalize(a.b, alen, c.b, &q);
	assert_int_equal(dnsmsg_get_id(a.b), 0x4242);
	assert_int_equal(dnsmsg_get_flags(a.b),
	    DNS_FLAG_QR | DNS_FLAG_RA | DNS_FLAG_CD);
	assert_memory_equal(a.b + 12, c.b + 12, q.q.end - 12);
	assert_memory_equal(a.b + 4, orig + 4, 8);
	assert_memory_equal(a.b + q.q.end, orig + q.q.end, alen - q.q.end);

	/* RD back on, CD off, the rest of the flags (AA here) kept. */
	a.b[2] |= DNS_FLAG_AA >> 8;
	c.b[2] = DNS_FLAG_RD >> 8;
	c.b[3] = 0;
	assert_int_equal(dnsmsg_parse_query(c.b, c.n, &q), 0);
	dnsmsg_personalize(a.b, alen, c.b, &q);
	assert_int_equal(dnsmsg_get_flags(a.b),
	    DNS_FLAG_QR | DNS_FLAG_AA | DNS_FLAG_RA | DNS_FLAG_RD);

	dnsmsg_set_id(a.b, 0xa55a);
	assert_int_equal(a.b[0], 0xa5);
	assert_int_equal(a.b[1], 0x5a);
}

static void
test_age_ttls(void **state)
{
	struct mb m;
	struct dnsmsg_question e;
	struct dnsmsg_answer_info info;
	uint16_t offs[5];

	(void)state;
	expect_example_a(&e);
	answer_start(&m, 0, 3, 0, 1);
	mb_rr_ptr(&m, DNS_TYPE_A, 100, A_RD, 4);
	mb_rr_ptr(&m, DNS_TYPE_A, 5, A_RD, 4);
	mb_rr_ptr(&m, DNS_TYPE_A, 0x80000064u, A_RD, 4);
	mb_opt(&m, 1232, 0x8000);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info), 0);
	assert_int_equal(info.n_ttl, 3);
	memcpy(offs, info.ttl_off, 3 * sizeof(offs[0]));
	offs[3] = (uint16_t)(m.n - 2);  /* runs past the end: ignored */
	offs[4] = 60000;
	dnsmsg_age_ttls(m.b, m.n, offs, 5, 10);
	assert_int_equal(rd32(m.b + info.ttl_off[0]), 90);
	assert_int_equal(rd32(m.b + info.ttl_off[1]), 0);
	assert_int_equal(rd32(m.b + info.ttl_off[2]), 0);
	/* The OPT TTL (DO bit) is not among the offsets and stays. */
	assert_int_equal(rd32(m.b + m.n - 6), 0x8000);
	assert_int_equal(m.b[m.n - 2], 0);
	assert_int_equal(m.b[m.n - 1], 0);

	/* Age 0 changes nothing. */
	dnsmsg_age_ttls(m.b, m.n, offs, 3, 0);
	assert_int_equal(rd32(m.b + info.ttl_off[0]), 90);
}

static void
test_truncate(void **state)
{
	struct mb m;
	size_t n;

	(void)state;
	answer_start(&m, 0, 1, 0, 1);
	mb_rr_ptr(&m, DNS_TYPE_A, 60, A_RD, 4);
	mb_opt(&m, 1232, 0);
	n = dnsmsg_truncate(m.b, m.n);
	assert_int_equal(n, 29);
	assert_int_equal(dnsmsg_get_flags(m.b),
	    DNS_FLAG_QR | DNS_FLAG_RD | DNS_FLAG_RA | DNS_FLAG_TC);
	assert_int_equal(m.b[5], 1);
	assert_int_equal(m.b[6] | m.b[7] | m.b[8] | m.b[9] | m.b[10] |
	    m.b[11], 0);

	/* No findable question. */
	assert_int_equal(dnsmsg_truncate(m.b, 20), 0);
	assert_int_equal(dnsmsg_truncate(m.b, 5), 0);
	m.b[5] = 0;
	assert_int_equal(dnsmsg_truncate(m.b, m.n), 0);
}

static void
test_name_str(void **state)
{
	struct dnsmsg_question qn;
	char buf[64];

	(void)state;
	expect_example_a(&qn);
	dnsmsg_name_str(&qn, buf, sizeof(buf));
	assert_string_equal(buf, "example.com.");
	dnsmsg_name_str(&qn, buf, 13);
	assert_string_equal(buf, "example.com.");
	dnsmsg_name_str(&qn, buf, 12);
	assert_string_equal(buf, "?");

	memset(&qn, 0, sizeof(qn));
	qn.wire_len = 1;
	dnsmsg_name_str(&qn, buf, sizeof(buf));
	assert_string_equal(buf, ".");

	memcpy(qn.wire, "\3a.\\\1\0", 6);
	qn.wire[4] = 1;
	qn.wire[5] = 0x07;
	qn.wire[6] = 0;
	qn.wire_len = 7;
	dnsmsg_name_str(&qn, buf, sizeof(buf));
	assert_string_equal(buf, "a\\.\\\\.\\007.");

	qn.wire_len = 6;        /* no terminating root label */
	dnsmsg_name_str(&qn, buf, sizeof(buf));
	assert_string_equal(buf, "?");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_query_basic_cares),
		cmocka_unit_test(test_query_edns),
		cmocka_unit_test(test_query_drop),
		cmocka_unit_test(test_query_notimp),
		cmocka_unit_test(test_query_qdcount),
		cmocka_unit_test(test_query_name_limits),
		cmocka_unit_test(test_query_sections),
		cmocka_unit_test(test_error_reply_question),
		cmocka_unit_test(test_error_reply_noquestion),
		cmocka_unit_test(test_error_reply_edns),
		cmocka_unit_test(test_answer_min_ttl),
		cmocka_unit_test(test_answer_malformed_names),
		cmocka_unit_test(test_answer_counts_lie),
		cmocka_unit_test(test_answer_mismatch),
		cmocka_unit_test(test_answer_negative),
		cmocka_unit_test(test_answer_not_cacheable),
		cmocka_unit_test(test_personalize),
		cmocka_unit_test(test_age_ttls),
		cmocka_unit_test(test_truncate),
		cmocka_unit_test(test_name_str),
	};

	/* A parser that loops on a compression loop would hang, not fail:
	 * the alarm turns that into a failure. */
	alarm(60);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
