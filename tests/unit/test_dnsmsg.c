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

/* OPT record with the given RDATA (options). */
static void
mb_opt_rd(struct mb *m, uint16_t udp, uint32_t ttl, const void *rd,
    uint16_t rdlen)
{
	mb_u8(m, 0);
	mb_u16(m, DNS_TYPE_OPT);
	mb_u16(m, udp);
	mb_u32(m, ttl);
	mb_u16(m, rdlen);
	mb_bytes(m, rd, rdlen);
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

/* The question's lowercase form, for every name length from the root to
 * 255 bytes (the copy goes eight bytes at a time, then a last eight that
 * overlap) and every byte value in a label: only A-Z change, and none of
 * the neighbours '@', '[', '`', '{' or the same letters with the top bit
 * set. The question as spelled stays in the message. */
static void
test_query_lowercase(void **state)
{
	struct mb m;
	struct dnsmsg_query q;
	uint8_t want[DNS_MAX_NAME_WIRE + 8], c;  /* + one label too many */
	size_t total, left, lab, i, n;

	(void)state;
	for (total = 1; total <= DNS_MAX_NAME_WIRE; total++) {
		if (total == 2)
			continue;       /* no name is 2 bytes long */
		mb_hdr(&m, 7, 0, 1, 0, 0, 0);
		n = 0;
		/* Labels of up to 63 bytes, the root label last. */
		for (left = total - 1; left > 0; left -= 1 + lab) {
			lab = left - 1 > 63 ? 63 : left - 1;
			if (left - 1 - lab == 1)
				lab--;  /* no room for a label of 0 bytes */
			mb_u8(&m, (uint8_t)lab);
			want[n++] = (uint8_t)lab;
			for (i = 0; i < lab; i++) {
				c = (uint8_t)((total * 7 + n * 13 + i) & 0xff);
				mb_u8(&m, c);
				want[n++] = c >= 'A' && c <= 'Z' ?
				    (uint8_t)(c + 32) : c;
			}
		}
		mb_u8(&m, 0);
		want[n++] = 0;
		assert_int_equal(n, total);
		mb_u16(&m, 1);
		mb_u16(&m, 1);
		assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q), 0);
		assert_int_equal(q.q.wire_len, total);
		assert_memory_equal(q.q.wire, want, total);
		assert_int_equal(q.q.end, 12 + total + 4);
	}

	/* Every byte value once, in labels of 63. */
	mb_hdr(&m, 7, 0, 1, 0, 0, 0);
	n = 0;
	for (i = 0; i < 4 * 63; i++) {
		if (i % 63 == 0) {
			mb_u8(&m, 63);
			want[n++] = 63;
		}
		c = (uint8_t)(i < 256 ? i : 0);
		mb_u8(&m, c);
		want[n++] = c >= 'A' && c <= 'Z' ? (uint8_t)(c + 32) : c;
	}
	/* 4 x 64 + root is 257 bytes: too long, FORMERR. */
	mb_u8(&m, 0);
	mb_u16(&m, 1);
	mb_u16(&m, 1);
	assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q), DNS_RCODE_FORMERR);
	assert_int_equal(q.has_question, 0);
	/* Three labels of 63 and the rest of the byte values. */
	mb_hdr(&m, 7, 0, 1, 0, 0, 0);
	mb_bytes(&m, want, 3 * 64);
	mb_u8(&m, 0);
	mb_u16(&m, 1);
	mb_u16(&m, 1);
	for (i = 0; i < 3 * 63; i++) {
		c = (uint8_t)i;
		m.b[12 + 1 + i + i / 63] = c;
	}
	assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q), 0);
	for (i = 0; i < 3 * 63; i++) {
		c = (uint8_t)i;
		assert_int_equal(q.q.wire[1 + i + i / 63],
		    c >= 'A' && c <= 'Z' ? c + 32 : c);
	}
	mb_hdr(&m, 7, 0, 1, 0, 0, 0);
	mb_u8(&m, 8);
	mb_bytes(&m, "@[`{\xc1\xda\xe1Z", 8);
	mb_u8(&m, 0);
	mb_u16(&m, 1);
	mb_u16(&m, 1);
	assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q), 0);
	assert_memory_equal(q.q.wire, "\010@[`{\xc1\xda\xe1z", 10);
	assert_memory_equal(m.b + 12, "\010@[`{\xc1\xda\xe1Z", 10);
}

/* dnsmsg_parse_query sets every field of its result (but the name bytes
 * past wire_len), whatever the struct held before and however far the
 * parse got: two parses into structs filled with different garbage agree. */
static void
parse_both(const uint8_t *msg, size_t len)
{
	struct dnsmsg_query a, b;
	int ra, rb;

	memset(&a, 0x00, sizeof(a));
	memset(&b, 0xa5, sizeof(b));
	ra = dnsmsg_parse_query(msg, len, &a);
	rb = dnsmsg_parse_query(msg, len, &b);
	assert_int_equal(ra, rb);
	assert_int_equal(a.id, b.id);
	assert_int_equal(a.flags, b.flags);
	assert_int_equal(a.has_question, b.has_question);
	assert_int_equal(a.q.wire_len, b.q.wire_len);
	assert_memory_equal(a.q.wire, b.q.wire, a.q.wire_len);
	assert_int_equal(a.q.qtype, b.q.qtype);
	assert_int_equal(a.q.qclass, b.q.qclass);
	assert_int_equal(a.q.end, b.q.end);
	assert_int_equal(a.edns, b.edns);
	assert_int_equal(a.udp_size, b.udp_size);
	assert_int_equal(a.udp_adv, b.udp_adv);
	assert_int_equal(a.do_bit, b.do_bit);
	assert_int_equal(a.cd_bit, b.cd_bit);
	if (!a.has_question)
		assert_int_equal(a.q.wire_len, 0);
}

static void
test_query_fields_set(void **state)
{
	struct mb m;
	size_t n;

	(void)state;
	/* A query with EDNS, DO and CD. */
	mb_hdr(&m, 7, DNS_FLAG_RD | DNS_FLAG_CD, 1, 0, 0, 1);
	mb_q(&m, "Example.COM", DNS_TYPE_A, 1);
	mb_opt(&m, 4096, 0x8000);
	parse_both(m.b, m.n);
	/* Every shorter prefix of it: each way of falling short. */
	for (n = 0; n < m.n; n++)
		parse_both(m.b, n);
	/* BADVERS, NOTIMP, QR set, two questions, an OPT not owned by
	 * the root. */
	m.b[m.n - 6] = 1;
	parse_both(m.b, m.n);
	m.b[m.n - 6] = 0;
	m.b[2] |= 0x28;
	parse_both(m.b, m.n);
	m.b[2] = 0x81;
	parse_both(m.b, m.n);
	m.b[2] = 0x01;
	m.b[5] = 2;
	parse_both(m.b, m.n);
	mb_hdr(&m, 7, 0, 1, 0, 0, 1);
	mb_q(&m, "example.com", DNS_TYPE_A, 1);
	mb_u8(&m, 1);
	mb_u8(&m, 'x');
	mb_u8(&m, 0);
	mb_u16(&m, DNS_TYPE_OPT);
	mb_u16(&m, 4096);
	mb_u32(&m, 0);
	mb_u16(&m, 0);
	parse_both(m.b, m.n);
}

/* An answer's question is checked the same way when it is only skipped
 * (truncation, OPT append): a name that runs out, or is one byte too
 * long, or lacks its type and class, is no question. */
static void
test_question_skip_limits(void **state)
{
	struct mb m;
	struct dnsmsg_query plain;
	uint8_t lab[63];
	size_t n, i;

	(void)state;
	memset(&plain, 0, sizeof(plain));
	memset(lab, 'A', sizeof(lab));
	/* 255 bytes: 3 x (1+63) + (1+61) + root. */
	mb_hdr(&m, 7, DNS_FLAG_QR, 1, 0, 0, 0);
	for (i = 0; i < 3; i++) {
		mb_u8(&m, 63);
		mb_bytes(&m, lab, 63);
	}
	mb_u8(&m, 61);
	mb_bytes(&m, lab, 61);
	mb_u8(&m, 0);
	mb_u16(&m, 1);
	mb_u16(&m, 1);
	assert_int_equal(dnsmsg_append_opt(m.b, m.n, sizeof(m.b), &plain,
	    EDE_NONE, &n), 0);
	assert_int_equal(n, 12 + 255 + 4);
	assert_int_equal(dnsmsg_truncate(m.b, m.n), 12 + 255 + 4);
	/* Without its class. */
	assert_int_equal(dnsmsg_truncate(m.b, m.n - 2), 0);
	assert_int_equal(dnsmsg_append_opt(m.b, m.n - 2, sizeof(m.b), &plain,
	    EDE_NONE, &n), DNSMSG_EMALFORMED);
	/* 256 bytes. */
	m.b[12 + 3 * 64] = 62;
	m.b[12 + 3 * 64 + 62] = 'A';
	assert_int_equal(dnsmsg_truncate(m.b, m.n), 0);
	assert_int_equal(dnsmsg_append_opt(m.b, m.n, sizeof(m.b), &plain,
	    EDE_NONE, &n), DNSMSG_EMALFORMED);
	/* A label running past the end, and a pointer. */
	mb_hdr(&m, 7, DNS_FLAG_QR, 1, 0, 0, 0);
	mb_u8(&m, 5);
	mb_bytes(&m, "ab", 2);
	assert_int_equal(dnsmsg_truncate(m.b, m.n), 0);
	mb_hdr(&m, 7, DNS_FLAG_QR, 1, 0, 0, 0);
	mb_u8(&m, 1);
	mb_u8(&m, 'a');
	mb_ptr(&m, 12);
	mb_u16(&m, 1);
	mb_u16(&m, 1);
	assert_int_equal(dnsmsg_truncate(m.b, m.n), 0);
	assert_int_equal(dnsmsg_append_opt(m.b, m.n, sizeof(m.b), &plain,
	    EDE_NONE, &n), DNSMSG_EMALFORMED);
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

/* RFC 6891 6.1.3: a version other than 0 is BADVERS; 6.1.4: unknown
 * flags are ignored; 6.1.1: an OPT record outside the additional section
 * is FORMERR. */
static void
test_query_edns_version(void **state)
{
	struct mb m;
	struct dnsmsg_query q;
	uint8_t out[512];
	size_t n = 0;
	static const unsigned versions[] = { 1, 255 };
	size_t i;
	/* RCODE 0 in the header, RA and RD; OPT: payload 1232, extended
	 * rcode 1 (16 >> 4), version 0, DO echoed, nothing else. */
	static const uint8_t want[] = {
		0x12, 0x34, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 1,
		1, 'a', 0, 0, 1, 0, 1,
		0, 0, 41, 0x04, 0xd0, 1, 0, 0x80, 0, 0, 0,
	};

	(void)state;
	for (i = 0; i < 2; i++) {
		mb_hdr(&m, 0x1234, DNS_FLAG_RD, 1, 0, 0, 1);
		mb_q(&m, "a", DNS_TYPE_A, 1);
		/* DO and an unknown flag bit, version in bits 16-23. */
		mb_opt(&m, 4096, (uint32_t)versions[i] << 16 | 0x8000 | 0x0001);
		assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q),
		    DNS_RCODE_BADVERS);
		assert_int_equal(q.edns, 1);
		assert_int_equal(q.do_bit, 1);
		assert_int_equal(dnsmsg_error_reply(m.b, m.n, &q,
		    DNS_RCODE_BADVERS, EDE_NONE, out, sizeof(out), &n), 0);
		assert_int_equal(n, sizeof(want));
		assert_memory_equal(out, want, sizeof(want));
	}

	/* Version 0 with unknown flag bits and an unknown option: fine,
	 * and only DO is echoed. */
	mb_hdr(&m, 0x1234, DNS_FLAG_RD, 1, 0, 0, 1);
	mb_q(&m, "a", DNS_TYPE_A, 1);
	mb_opt_rd(&m, 4096, 0xffff, "\xfd\xe9\0\2hi", 6);
	assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q), 0);
	assert_int_equal(q.do_bit, 1);
	assert_int_equal(dnsmsg_error_reply(m.b, m.n, &q, DNS_RCODE_NOERROR,
	    EDE_NONE, out, sizeof(out), &n), 0);
	assert_int_equal(out[n - 4], 0x80);     /* flags: DO only */
	assert_int_equal(out[n - 3], 0);
	assert_int_equal(out[n - 5], 0);        /* version */
	assert_int_equal(out[n - 6], 0);        /* extended rcode */

	/* BADVERS, but a second OPT makes it FORMERR. */
	mb_hdr(&m, 7, 0, 1, 0, 0, 2);
	mb_q(&m, "a", DNS_TYPE_A, 1);
	mb_opt(&m, 4096, 1u << 16);
	mb_opt(&m, 4096, 0);
	assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q), DNS_RCODE_FORMERR);
	assert_int_equal(q.edns, 0);

	/* An OPT record in the answer, or the authority, section. */
	mb_hdr(&m, 7, 0, 1, 1, 0, 0);
	mb_q(&m, "a", DNS_TYPE_A, 1);
	mb_opt(&m, 4096, 0);
	assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q), DNS_RCODE_FORMERR);
	assert_int_equal(q.edns, 0);
	mb_hdr(&m, 7, 0, 1, 0, 1, 0);
	mb_q(&m, "a", DNS_TYPE_A, 1);
	mb_opt(&m, 4096, 0);
	assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q), DNS_RCODE_FORMERR);
}

/* RFC 6891 6.2.5, RFC 9715: the client's offer, capped; the cap is what
 * our OPT advertises. */
static void
test_query_cap_udp(void **state)
{
	struct mb m;
	struct dnsmsg_query q;
	uint8_t out[512];
	size_t n = 0;

	(void)state;
	mb_hdr(&m, 7, 0, 1, 0, 0, 1);
	mb_q(&m, "a", DNS_TYPE_A, 1);
	mb_opt(&m, 65000, 0);
	assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q), 0);
	assert_int_equal(q.udp_size, 65000);
	assert_int_equal(q.udp_adv, DNS_EDNS_UDP);
	dnsmsg_query_cap_udp(&q, 1232);
	assert_int_equal(q.udp_size, 1232);
	assert_int_equal(q.udp_adv, 1232);
	dnsmsg_query_cap_udp(&q, 600);
	assert_int_equal(q.udp_size, 600);
	assert_int_equal(dnsmsg_error_reply(m.b, m.n, &q, DNS_RCODE_SERVFAIL,
	    EDE_NONE, out, sizeof(out), &n), 0);
	assert_int_equal(out[n - 8], 600 >> 8);
	assert_int_equal(out[n - 7], 600 & 0xff);
	/* Below 512 counts as 512; a smaller offer stays. */
	dnsmsg_query_cap_udp(&q, 100);
	assert_int_equal(q.udp_size, 512);
	assert_int_equal(q.udp_adv, 512);
	m.b[m.n - 8] = 0x02;    /* offer 0x02e8 = 744 */
	assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q), 0);
	dnsmsg_query_cap_udp(&q, 1232);
	assert_int_equal(q.udp_size, 744);
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
	    EDE_NONE, out, sizeof(out), &n), 0);
	assert_int_equal(n, sizeof(want));
	assert_memory_equal(out, want, sizeof(want));

	/* Too small a buffer. */
	assert_int_equal(dnsmsg_error_reply(m.b, m.n, &q, DNS_RCODE_FORMERR,
	    EDE_NONE, out, sizeof(want) - 1, &n), DNSMSG_ENOSPC);
}

static void
test_error_reply_noquestion(void **state)
{
	struct mb m;
	struct dnsmsg_query q;
	uint8_t out[512];
	size_t n = 0;
	/* opcode 5 kept, RD clear in the query so clear here; NOTIMP;
	 * no RA, as only QUERY is recursed for. */
	static const uint8_t want[] = {
		0x00, 0x07, 0xa8, 0x04, 0, 0, 0, 0, 0, 0, 0, 0,
	};

	(void)state;
	mb_hdr(&m, 7, 5 << 11, 0, 0, 0, 0);
	assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q), DNS_RCODE_NOTIMP);
	assert_int_equal(dnsmsg_error_reply(m.b, m.n, &q, DNS_RCODE_NOTIMP,
	    EDE_NONE, out, sizeof(out), &n), 0);
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
	    EDE_NONE, out, sizeof(out), &n), 0);
	assert_int_equal(n, sizeof(want));
	assert_memory_equal(out, want, sizeof(want));
	assert_int_equal(dnsmsg_error_reply(m.b, m.n, &q, DNS_RCODE_SERVFAIL,
	    EDE_NONE, out, sizeof(want) - 1, &n), DNSMSG_ENOSPC);
}

static void
test_error_reply_ede(void **state)
{
	struct mb m;
	struct dnsmsg_query q;
	uint8_t out[512];
	size_t n = 0;
	static const uint8_t want[] = {
		0x12, 0x34, 0x81, 0x82, 0, 1, 0, 0, 0, 0, 0, 1,
		1, 'a', 0, 0, 28, 0, 1,
		0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 6,
		0, 15, 0, 2, 0, 22,
	};
	static const uint8_t want_noedns[] = {
		0x12, 0x34, 0x81, 0x82, 0, 1, 0, 0, 0, 0, 0, 0,
		1, 'a', 0, 0, 28, 0, 1,
	};

	(void)state;
	mb_hdr(&m, 0x1234, DNS_FLAG_RD, 1, 0, 0, 1);
	mb_q(&m, "a", DNS_TYPE_AAAA, 1);
	mb_opt(&m, 4096, 0);
	assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q), 0);
	assert_int_equal(dnsmsg_error_reply(m.b, m.n, &q, DNS_RCODE_SERVFAIL,
	    EDE_NO_REACHABLE_AUTHORITY, out, sizeof(out), &n), 0);
	assert_int_equal(n, sizeof(want));
	assert_memory_equal(out, want, sizeof(want));
	assert_int_equal(dnsmsg_error_reply(m.b, m.n, &q, DNS_RCODE_SERVFAIL,
	    EDE_NO_REACHABLE_AUTHORITY, out, sizeof(want) - 1, &n),
	    DNSMSG_ENOSPC);

	/* Without EDNS from the client there is no OPT to carry it. */
	mb_hdr(&m, 0x1234, DNS_FLAG_RD, 1, 0, 0, 0);
	mb_q(&m, "a", DNS_TYPE_AAAA, 1);
	assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q), 0);
	assert_int_equal(dnsmsg_error_reply(m.b, m.n, &q, DNS_RCODE_SERVFAIL,
	    EDE_NETWORK_ERROR, out, sizeof(out), &n), 0);
	assert_int_equal(n, sizeof(want_noedns));
	assert_memory_equal(out, want_noedns, sizeof(want_noedns));
}

/* ---- upstream queries ---- */

/* Header, question "example.com A IN", OPT fixed part, keepalive and
 * padding option headers: 48 bytes, followed by 80 zero bytes. */
static const uint8_t UPQ_PREFIX[] = {
	0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1,
	7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'c', 'o', 'm', 0, 0, 1, 0, 1,
	0, 0, 41, 0x04, 0xd0, 0, 0, 0x00, 0, 0, 88,
	0, 11, 0, 0,
	0, 12, 0, 80,
};

static void
client_query_ecs(struct mb *m, uint16_t flags, uint32_t opt_ttl)
{
	static const uint8_t opts[] = {
		0, 8, 0, 7, 0, 1, 24, 0, 192, 0, 2,     /* ECS 192.0.2/24 */
		0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8,    /* client cookie */
	};

	mb_hdr(m, 0x1234, flags, 1, 0, 0, 1);
	mb_q(m, "Example.COM", DNS_TYPE_A, 1);
	mb_opt_rd(m, 4096, opt_ttl, opts, sizeof(opts));
}

static void
test_upstream_query(void **state)
{
	struct mb m;
	struct dnsmsg_query q, q2;
	uint8_t out[512], want[128], zero[80];
	size_t n = 0;

	(void)state;
	memset(zero, 0, sizeof(zero));
	memset(out, 0xaa, sizeof(out));
	client_query_ecs(&m, DNS_FLAG_RD, 0);
	assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q), 0);
	assert_int_equal(dnsmsg_upstream_query(&q, out, sizeof(out), &n), 0);
	assert_int_equal(n, 128);
	memset(want, 0, sizeof(want));
	memcpy(want, UPQ_PREFIX, sizeof(UPQ_PREFIX));
	assert_memory_equal(out, want, 128);

	/* DO and CD go along; RD is set even when the client left it
	 * clear (we want recursion from the upstream). */
	memset(out, 0xaa, sizeof(out));
	client_query_ecs(&m, DNS_FLAG_CD, 0x8000);
	assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q), 0);
	assert_int_equal(dnsmsg_upstream_query(&q, out, sizeof(out), &n), 0);
	assert_int_equal(n, 128);
	want[2] = 0x01;
	want[3] = 0x10;
	want[36] = 0x80;
	assert_memory_equal(out, want, 128);

	/* It is a query our own parser accepts, with our OPT. */
	assert_int_equal(dnsmsg_parse_query(out, n, &q2), 0);
	assert_int_equal(q2.edns, 1);
	assert_int_equal(q2.udp_size, DNS_EDNS_UDP);
	assert_int_equal(q2.do_bit, 1);
	assert_int_equal(q2.cd_bit, 1);

	/* Exactly fitting, one byte short. */
	assert_int_equal(dnsmsg_upstream_query(&q, out, 128, &n), 0);
	assert_int_equal(dnsmsg_upstream_query(&q, out, 127, &n),
	    DNSMSG_ENOSPC);

	/* No question: nothing to forward. */
	q.has_question = 0;
	assert_int_equal(dnsmsg_upstream_query(&q, out, sizeof(out), &n),
	    DNSMSG_EMALFORMED);
}

static void
test_upstream_query_padding(void **state)
{
	struct mb m;
	struct dnsmsg_query q, q2;
	uint8_t out[512];
	size_t w, k, n, unpadded, pad, i;

	(void)state;
	/* Every name length from the root to 255 bytes: odd ones are runs
	 * of 1-byte labels, even ones start with a 2-byte label. */
	for (w = 1; w <= DNS_MAX_NAME_WIRE; w++) {
		if (w == 2)
			continue;
		mb_hdr(&m, 9, 0, 1, 0, 0, 0);
		k = (w - 1) / 2;
		if (w % 2 == 0) {
			mb_u8(&m, 2);
			mb_bytes(&m, "bb", 2);
			k = (w - 4) / 2;
		}
		for (i = 0; i < k; i++) {
			mb_u8(&m, 1);
			mb_u8(&m, 'a');
		}
		mb_u8(&m, 0);
		mb_u16(&m, DNS_TYPE_TXT);
		mb_u16(&m, 1);
		assert_int_equal(dnsmsg_parse_query(m.b, m.n, &q), 0);
		assert_int_equal(q.q.wire_len, w);

		n = 0;
		memset(out, 0xaa, sizeof(out));
		assert_int_equal(dnsmsg_upstream_query(&q, out, sizeof(out),
		    &n), 0);
		unpadded = 12 + w + 4 + 11 + 4 + 4;
		assert_int_equal(n % DNS_PAD_BLOCK, 0);
		assert_true(n >= unpadded && n < unpadded + DNS_PAD_BLOCK);
		pad = n - unpadded;
		/* The padding option is last, its length is pad, its
		 * bytes are zero, and the OPT RDLENGTH covers it all. */
		assert_int_equal((out[12 + w + 4 + 9] << 8) |
		    out[12 + w + 4 + 10], 8 + pad);
		assert_int_equal((out[unpadded - 4] << 8) | out[unpadded - 3],
		    EDNS_OPT_PADDING);
		assert_int_equal((out[unpadded - 2] << 8) | out[unpadded - 1],
		    pad);
		for (i = unpadded; i < n; i++)
			assert_int_equal(out[i], 0);
		assert_int_equal(dnsmsg_parse_query(out, n, &q2), 0);
		assert_int_equal(q2.q.wire_len, w);
		assert_memory_equal(q2.q.wire, q.q.wire, w);
		assert_int_equal(q2.q.qtype, DNS_TYPE_TXT);
		assert_int_equal(dnsmsg_upstream_query(&q, out, n - 1, &n),
		    DNSMSG_ENOSPC);
	}
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

static void
test_answer_keepalive(void **state)
{
	struct mb m;
	struct dnsmsg_question e;
	struct dnsmsg_answer_info info;
	static const uint8_t ka300[] = {
		0, 12, 0, 2, 0, 0,              /* padding first */
		0, 11, 0, 2, 0x01, 0x2c,        /* 300 x 100 ms */
	};
	static const uint8_t ka_empty[] = { 0, 11, 0, 0 };

	(void)state;
	expect_example_a(&e);

	answer_start(&m, 0, 1, 0, 1);
	mb_rr_ptr(&m, DNS_TYPE_A, 60, A_RD, 4);
	mb_opt_rd(&m, 1232, 0, ka300, sizeof(ka300));
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info), 0);
	assert_int_equal(info.has_opt, 1);
	assert_int_equal(info.has_keepalive, 1);
	assert_int_equal(info.keepalive_ms, 30000);
	assert_int_equal(info.n_ttl, 1);

	/* Length 0: the server gives no timeout. */
	answer_start(&m, 0, 1, 0, 1);
	mb_rr_ptr(&m, DNS_TYPE_A, 60, A_RD, 4);
	mb_opt_rd(&m, 1232, 0, ka_empty, sizeof(ka_empty));
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info), 0);
	assert_int_equal(info.has_opt, 1);
	assert_int_equal(info.has_keepalive, 0);
	assert_int_equal(info.keepalive_ms, 0);

	/* No OPT at all. */
	answer_start(&m, 0, 1, 0, 0);
	mb_rr_ptr(&m, DNS_TYPE_A, 60, A_RD, 4);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info), 0);
	assert_int_equal(info.has_opt, 0);
	assert_int_equal(info.has_keepalive, 0);
}

static void
test_answer_opt_malformed(void **state)
{
	struct mb m;
	struct dnsmsg_question e;
	struct dnsmsg_answer_info info;
	static const uint8_t past[] = { 0, 11, 0, 3, 0x01, 0x2c };
	static const uint8_t partial[] = { 0, 11, 0 };
	static const uint8_t ok[] = { 0, 11, 0, 2, 0x01, 0x2c };
	/* An unknown option whose data reads as the name "y." */
	static const uint8_t named[] = { 0xff, 0xf0, 0, 4, 1, 'y', 0, 0 };
	size_t opt_at;

	(void)state;
	expect_example_a(&e);

	/* Option data runs past RDLENGTH (but not past the message). */
	answer_start(&m, 0, 0, 0, 2);
	mb_opt_rd(&m, 1232, 0, past, sizeof(past));
	mb_rr_ptr(&m, DNS_TYPE_A, 60, A_RD, 4);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info),
	    DNSMSG_EMALFORMED);

	/* An option header cut by RDLENGTH. */
	answer_start(&m, 0, 0, 0, 2);
	mb_opt_rd(&m, 1232, 0, partial, sizeof(partial));
	mb_rr_ptr(&m, DNS_TYPE_A, 60, A_RD, 4);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info),
	    DNSMSG_EMALFORMED);

	/* Control: the same with a well-formed option. */
	answer_start(&m, 0, 0, 0, 2);
	mb_opt_rd(&m, 1232, 0, ok, sizeof(ok));
	mb_rr_ptr(&m, DNS_TYPE_A, 60, A_RD, 4);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info), 0);
	assert_int_equal(info.keepalive_ms, 30000);

	/* Two OPT records. */
	answer_start(&m, 0, 0, 0, 2);
	mb_opt(&m, 1232, 0);
	mb_opt(&m, 1232, 0);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info),
	    DNSMSG_EMALFORMED);

	/* OPT in the answer section. */
	answer_start(&m, 0, 1, 0, 0);
	mb_opt(&m, 1232, 0);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info),
	    DNSMSG_EMALFORMED);

	/* OPT not owned by the root. */
	answer_start(&m, 0, 0, 0, 1);
	mb_ptr(&m, 12);
	mb_u16(&m, DNS_TYPE_OPT);
	mb_u16(&m, 1232);
	mb_u32(&m, 0);
	mb_u16(&m, 0);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info),
	    DNSMSG_EMALFORMED);

	/* A later owner pointing into the OPT's RDATA could not survive
	 * cutting the OPT out. */
	answer_start(&m, 0, 0, 0, 2);
	opt_at = m.n;
	mb_opt_rd(&m, 1232, 0, named, sizeof(named));
	mb_rr_ptr(&m, DNS_TYPE_A, 60, A_RD, 4);
	m.b[m.n - 15] = (uint8_t)(opt_at + 11 + 4);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info),
	    DNSMSG_EMALFORMED);
	/* Nor can a pointer in an NS record's RDATA. */
	answer_start(&m, 0, 0, 0, 2);
	mb_opt_rd(&m, 1232, 0, named, sizeof(named));
	mb_rr_ptr(&m, DNS_TYPE_NS, 60, "\300\000", 2);
	m.b[m.n - 1] = (uint8_t)(opt_at + 11 + 4);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info),
	    DNSMSG_EMALFORMED);
	m.b[m.n - 1] = 12;      /* control */
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info), 0);

	/* Names in the RDATA of the types whose compression we handle are
	 * checked: a forward pointer in an MX, an NS name followed by a
	 * stray byte, an MX shorter than its preference. */
	answer_start(&m, 0, 1, 0, 0);
	mb_rr_ptr(&m, 15, 60, "\0\12\300\100", 4);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info),
	    DNSMSG_EMALFORMED);
	m.b[m.n - 1] = 12;      /* control: MX 10 example.com */
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info), 0);
	answer_start(&m, 0, 1, 0, 0);
	mb_rr_ptr(&m, DNS_TYPE_NS, 60, "\300\014\0", 3);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info),
	    DNSMSG_EMALFORMED);
	answer_start(&m, 0, 1, 0, 0);
	mb_rr_ptr(&m, 15, 60, "\0", 1);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info),
	    DNSMSG_EMALFORMED);

	/* A pointer back to a name whose labels run on over the OPT (found
	 * by the fuzzer): the one-byte TXT RDATA at 40 is a label length of
	 * 21, covering the next record (41..56) and the OPT up to its root-
	 * looking zero byte at 62. Cutting the OPT would change that name. */
	answer_start(&m, 0, 0, 0, 3);
	mb_u8(&m, 0);
	mb_u16(&m, DNS_TYPE_TXT);
	mb_u16(&m, 1);
	mb_u32(&m, 60);
	mb_u16(&m, 1);
	mb_u8(&m, 21);
	assert_int_equal(m.n, 41);
	mb_ptr(&m, 40);
	mb_u16(&m, DNS_TYPE_A);
	mb_u16(&m, 1);
	mb_u32(&m, 60);
	mb_u16(&m, 4);
	mb_bytes(&m, A_RD, 4);
	mb_opt(&m, 1232, 0);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info),
	    DNSMSG_EMALFORMED);
	m.b[42] = 12;           /* control: the owner is the question name */
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info), 0);
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

	/* RD back on, CD off; the upstream's AA cleared (RFC 1035 4.1.1:
	 * we are not authoritative), RA set though it had none, and its AD
	 * cleared for a client that asked for it by neither AD nor DO
	 * (RFC 6840 5.8) ... */
	a.b[2] |= DNS_FLAG_AA >> 8;
	a.b[3] = (uint8_t)((a.b[3] & ~DNS_FLAG_RA) | DNS_FLAG_AD);
	memcpy(orig, a.b, alen);
	c.b[2] = DNS_FLAG_RD >> 8;
	c.b[3] = 0;
	assert_int_equal(dnsmsg_parse_query(c.b, c.n, &q), 0);
	dnsmsg_personalize(a.b, alen, c.b, &q);
	assert_int_equal(dnsmsg_get_flags(a.b),
	    DNS_FLAG_QR | DNS_FLAG_RA | DNS_FLAG_RD);
	/* ... and kept for one that set AD (RFC 6840 5.7). */
	memcpy(a.b, orig, alen);
	c.b[3] = DNS_FLAG_AD;
	assert_int_equal(dnsmsg_parse_query(c.b, c.n, &q), 0);
	dnsmsg_personalize(a.b, alen, c.b, &q);
	assert_int_equal(dnsmsg_get_flags(a.b),
	    DNS_FLAG_QR | DNS_FLAG_RA | DNS_FLAG_RD | DNS_FLAG_AD);

	dnsmsg_set_id(a.b, 0xa55a);
	assert_int_equal(a.b[0], 0xa5);
	assert_int_equal(a.b[1], 0x5a);
}

/* dnsmsg_personalize_opt against the two calls it stands for, on one
 * answer and the same answer: the bytes, the length and the return value
 * must agree. */
static void
personalize_opt_check(const struct mb *ans, const struct mb *client,
    size_t cap, int ede, int want)
{
	struct dnsmsg_query q;
	uint8_t one[512], two[512];
	size_t n1 = ans->n, n2 = 0;
	int r1, r2;

	assert_true(ans->n <= sizeof(one) && cap <= sizeof(one));
	assert_true(dnsmsg_parse_query(client->b, client->n, &q) >= 0);
	memset(one, 0xee, sizeof(one));
	memcpy(one, ans->b, ans->n);
	memcpy(two, one, sizeof(two));
	r1 = dnsmsg_personalize_opt(one, &n1, cap, client->b, &q, ede);
	dnsmsg_personalize(two, ans->n, client->b, &q);
	r2 = dnsmsg_append_opt(two, ans->n, cap, &q, ede, &n2);
	assert_int_equal(r1, want);
	assert_int_equal(r2, want);
	assert_int_equal(n1, want == 0 ? n2 : ans->n);
	assert_memory_equal(one, two, sizeof(one));
	if (want == 0 && q.has_question && q.q.end <= ans->n)
		assert_memory_equal(one + 12, client->b + 12, q.q.end - 12);
}

static void
test_personalize_opt(void **state)
{
	static const uint8_t ede_opt[] = { 0, 15, 0, 2, 0, 22 };
	struct mb a, c, e;
	size_t i;

	(void)state;
	mb_hdr(&c, 0x4242, DNS_FLAG_RD, 1, 0, 0, 0);
	mb_q(&c, "ExAmPle.COM", DNS_TYPE_A, 1);
	mb_hdr(&e, 0x4343, DNS_FLAG_RD | DNS_FLAG_CD, 1, 0, 0, 1);
	mb_q(&e, "EXAMPLE.com", DNS_TYPE_A, 1);
	mb_opt(&e, 4096, 0x8000);

	/* A plain answer, to a client without EDNS and one with. */
	answer_start(&a, 0, 2, 0, 0);
	mb_rr_ptr(&a, DNS_TYPE_A, 60, A_RD, 4);
	mb_rr_ptr(&a, DNS_TYPE_A, 60, A_RD, 4);
	personalize_opt_check(&a, &c, 512, EDE_NONE, 0);
	personalize_opt_check(&a, &e, 512, EDE_NONE, 0);
	personalize_opt_check(&a, &e, 512, EDE_STALE_ANSWER, 0);
	/* No room for the OPT: ENOSPC, the answer personalized. */
	personalize_opt_check(&a, &e, a.n + 10, EDE_NONE, DNSMSG_ENOSPC);
	/* The upstream's Extended DNS Error carried in a last OPT: cut for
	 * the one, made its own for the other. Trailing bytes go. */
	answer_start(&a, 0, 1, 0, 1);
	mb_rr_ptr(&a, DNS_TYPE_A, 60, A_RD, 4);
	mb_opt_rd(&a, 0, 0, ede_opt, sizeof(ede_opt));
	personalize_opt_check(&a, &c, 512, EDE_NONE, 0);
	personalize_opt_check(&a, &e, 512, EDE_NONE, 0);
	mb_bytes(&a, "junk", 4);
	personalize_opt_check(&a, &c, 512, EDE_NONE, 0);
	personalize_opt_check(&a, &e, 512, EDE_STALE_ANSWER, 0);
	/* An OPT that is not the last record, and records that run past
	 * the end: EMALFORMED, the answer still personalized. */
	answer_start(&a, 0, 1, 0, 2);
	mb_rr_ptr(&a, DNS_TYPE_A, 60, A_RD, 4);
	mb_opt(&a, 1232, 0);
	mb_rr_ptr(&a, DNS_TYPE_A, 60, A_RD, 4);
	personalize_opt_check(&a, &c, 512, EDE_NONE, DNSMSG_EMALFORMED);
	answer_start(&a, 0, 2, 0, 0);
	mb_rr_ptr(&a, DNS_TYPE_A, 60, A_RD, 4);
	personalize_opt_check(&a, &e, 512, EDE_NONE, DNSMSG_EMALFORMED);
	/* Every prefix of an answer: too short for the client's question
	 * (not personalized, and the question walked after all), or cut
	 * inside its records. */
	answer_start(&a, 0, 1, 0, 0);
	mb_rr_ptr(&a, DNS_TYPE_A, 60, A_RD, 4);
	for (i = 0; i < a.n; i++) {
		struct mb p = a;

		p.n = i;
		personalize_opt_check(&p, &c, 512, EDE_NONE,
		    DNSMSG_EMALFORMED);
	}
	personalize_opt_check(&a, &c, 512, EDE_NONE, 0);
	/* No question in the answer (QDCOUNT 0): the records start at
	 * the header's end, as dnsmsg_append_opt finds them, whatever was
	 * written over them. Here the question's bytes read as a record
	 * owned by example.com, with type 1, class 1, a TTL, RDLENGTH 4. */
	a.b[5] = 0;
	personalize_opt_check(&a, &c, 512, EDE_NONE, 0);
	mb_hdr(&a, 1, DNS_FLAG_QR, 0, 1, 0, 0);
	mb_u8(&a, 0);
	mb_u16(&a, DNS_TYPE_A);
	mb_u16(&a, 1);
	mb_u32(&a, 60);
	mb_u16(&a, 4);
	mb_bytes(&a, A_RD, 4);
	personalize_opt_check(&a, &c, 512, EDE_NONE, 0);
	/* Two questions. */
	answer_start(&a, 0, 0, 0, 0);
	a.b[5] = 2;
	mb_q(&a, "example.com", DNS_TYPE_A, 1);
	personalize_opt_check(&a, &c, 512, EDE_NONE, DNSMSG_EMALFORMED);
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

/* An answer with the OPT in the middle of the additional section and
 * records after it that compress against each other and against the OPT's
 * root owner. Built with or without the OPT, pointers worked out for that
 * layout: stripping the one must give the other. TTLs 300 down to 70. */
static void
build_mid(struct mb *m, int with_opt)
{
	static const uint8_t ka[] = { 0, 11, 0, 2, 0x01, 0x2c };
	static const uint8_t aaaa[16] = { 0x20, 0x01, 0x0d, 0xb8 };
	size_t base;

	answer_start(m, 0, 1, 1, with_opt ? 5 : 4);
	mb_rr_ptr(m, DNS_TYPE_A, 300, A_RD, 4);                 /* 29 */
	mb_rr_ptr(m, DNS_TYPE_NS, 200, "\3ns1\300\014", 6);    /* 45 */
	assert_int_equal(m->n, 63);
	/* ns1.example.com A, owner -> the NS RDATA at 57 */
	mb_ptr(m, 57);
	mb_u16(m, DNS_TYPE_A);
	mb_u16(m, 1);
	mb_u32(m, 100);
	mb_u16(m, 4);
	mb_bytes(m, A_RD, 4);
	if (with_opt)
		mb_opt_rd(m, 1232, 0x8000, ka, sizeof(ka));     /* 79 */
	base = m->n;
	/* x.example.com AAAA, owner stored whole up to the pointer */
	mb_u8(m, 1);
	mb_u8(m, 'x');
	mb_ptr(m, 12);
	mb_u16(m, DNS_TYPE_AAAA);
	mb_u16(m, 1);
	mb_u32(m, 90);
	mb_u16(m, 16);
	mb_bytes(m, aaaa, 16);
	/* x.example.com A, owner -> the record above */
	mb_ptr(m, (uint16_t)base);
	mb_u16(m, DNS_TYPE_A);
	mb_u16(m, 1);
	mb_u32(m, 80);
	mb_u16(m, 4);
	mb_bytes(m, A_RD, 4);
	/* ". NS x.example.com": the root owner compressed to the OPT's
	 * owner, or to the question's root label (24) without OPT. */
	mb_ptr(m, with_opt ? 79 : 24);
	mb_u16(m, DNS_TYPE_NS);
	mb_u16(m, 1);
	mb_u32(m, 70);
	mb_u16(m, 2);
	mb_ptr(m, (uint16_t)base);
}

static void
test_strip_opt_last(void **state)
{
	struct mb m, want;
	struct dnsmsg_question e;
	struct dnsmsg_answer_info info;
	static const uint8_t ka[] = { 0, 11, 0, 0 };
	size_t n;

	(void)state;
	expect_example_a(&e);
	answer_start(&m, 0, 1, 1, 1);
	mb_rr_ptr(&m, DNS_TYPE_A, 300, A_RD, 4);
	mb_soa(&m, 3600, 900);
	mb_opt_rd(&m, 4096, 0x8000, ka, sizeof(ka));
	answer_start(&want, 0, 1, 1, 0);
	mb_rr_ptr(&want, DNS_TYPE_A, 300, A_RD, 4);
	mb_soa(&want, 3600, 900);

	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info), 0);
	assert_int_equal(info.has_opt, 1);
	assert_int_equal(info.n_ttl, 2);
	n = dnsmsg_strip_opt(m.b, m.n, &info);
	assert_int_equal(n, want.n);
	assert_memory_equal(m.b, want.b, n);
	assert_int_equal(info.has_opt, 0);
	assert_int_equal(info.n_ttl, 2);
	assert_int_equal(info.ttl_off[0], 35);
	assert_int_equal(rd32(m.b + info.ttl_off[0]), 300);
	assert_int_equal(rd32(m.b + info.ttl_off[1]), 3600);

	/* Nothing to strip: unchanged. */
	n = dnsmsg_strip_opt(m.b, n, &info);
	assert_int_equal(n, want.n);
	assert_memory_equal(m.b, want.b, n);
}

static void
test_strip_opt_middle(void **state)
{
	struct mb m, want;
	struct dnsmsg_question e;
	struct dnsmsg_answer_info info, winfo;
	static const uint16_t offs[] = { 35, 51, 69, 87, 115, 131 };
	static const uint32_t ttls[] = { 300, 200, 100, 90, 80, 70 };
	size_t n, i;

	(void)state;
	expect_example_a(&e);
	build_mid(&m, 1);
	build_mid(&want, 0);
	assert_int_equal(dnsmsg_parse_answer(want.b, want.n, &e, &winfo), 0);
	assert_int_equal(winfo.n_ttl, 6);
	assert_memory_equal(winfo.ttl_off, offs, sizeof(offs));

	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info), 0);
	assert_int_equal(info.has_opt, 1);
	assert_int_equal(info.keepalive_ms, 30000);
	assert_int_equal(info.n_ttl, 6);
	assert_int_equal(info.ttl_off[3], 87 + 17);
	n = dnsmsg_strip_opt(m.b, m.n, &info);
	assert_int_equal(n, m.n - 17);
	assert_int_equal(n, want.n);
	/* Byte for byte what was built without OPT: the pointers after
	 * the OPT moved with the records. */
	assert_memory_equal(m.b, want.b, n);
	assert_int_equal(info.n_ttl, 6);
	for (i = 0; i < 6; i++) {
		assert_int_equal(info.ttl_off[i], offs[i]);
		assert_int_equal(rd32(m.b + info.ttl_off[i]), ttls[i]);
	}
	/* And it parses as an answer again, with c-ares' name checks. */
	assert_int_equal(dnsmsg_parse_answer(m.b, n, &e, &winfo), 0);
	assert_int_equal(winfo.has_opt, 0);
	assert_int_equal(winfo.ttl, 70);
}

/* A client's parsed query as dnsmsg_append_opt reads it. */
static struct dnsmsg_query
client_q(int edns, int do_bit, uint16_t adv)
{
	struct dnsmsg_query q;

	memset(&q, 0, sizeof(q));
	q.edns = edns;
	q.do_bit = do_bit;
	q.udp_adv = adv;
	return q;
}

static void
test_append_opt(void **state)
{
	struct mb m;
	struct dnsmsg_question e;
	struct dnsmsg_answer_info info;
	uint8_t orig[64];
	size_t n = 0, len;
	struct dnsmsg_query c1 = client_q(1, 1, DNS_EDNS_UDP);
	struct dnsmsg_query c0 = client_q(1, 0, DNS_EDNS_UDP);
	static const uint8_t opt_do[] = {
		0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 0,
	};
	static const uint8_t opt_ede[] = {
		0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 6, 0, 15, 0, 2, 0, 3,
	};

	(void)state;
	expect_example_a(&e);
	answer_start(&m, 0, 1, 0, 0);
	mb_rr_ptr(&m, DNS_TYPE_A, 60, A_RD, 4);
	len = m.n;
	memcpy(orig, m.b, len);

	assert_int_equal(dnsmsg_append_opt(m.b, len, sizeof(m.b), &c1,
	    EDE_NONE, &n), 0);
	assert_int_equal(n, len + sizeof(opt_do));
	assert_int_equal(m.b[11], 1);
	assert_memory_equal(m.b + 12, orig + 12, len - 12);
	assert_memory_equal(m.b + len, opt_do, sizeof(opt_do));
	assert_int_equal(dnsmsg_parse_answer(m.b, n, &e, &info), 0);
	assert_int_equal(info.has_opt, 1);

	/* An OPT record ending the message is replaced, not doubled:
	 * DO now clear (its byte is 7 into the record). */
	assert_int_equal(dnsmsg_append_opt(m.b, n, sizeof(m.b), &c0,
	    EDE_NONE, &len), 0);
	assert_int_equal(len, n);
	assert_int_equal(m.b[11], 1);
	assert_int_equal(m.b[n - sizeof(opt_do) + 7], 0);

	/* With an EDE, exactly fitting; one byte short is ENOSPC and
	 * writes nothing. */
	len = dnsmsg_strip_opt(m.b, n, &info);
	memcpy(orig, m.b, len);
	memset(m.b + len, 0xaa, 32);
	assert_int_equal(dnsmsg_append_opt(m.b, len,
	    len + sizeof(opt_ede) - 1, &c0,
	    EDE_STALE_ANSWER, &n),
	    DNSMSG_ENOSPC);
	assert_int_equal(m.b[11], 0);
	assert_int_equal(m.b[len], 0xaa);
	assert_int_equal(dnsmsg_append_opt(m.b, len, len + sizeof(opt_ede), &c0,
	    EDE_STALE_ANSWER, &n), 0);
	assert_int_equal(n, len + sizeof(opt_ede));
	assert_memory_equal(m.b + len, opt_ede, sizeof(opt_ede));
	assert_int_equal(m.b[11], 1);

	/* Trailing bytes after the last record are dropped: the OPT goes
	 * where the records end, so that it is the record ARCOUNT counts. */
	answer_start(&m, 0, 1, 0, 0);
	mb_rr_ptr(&m, DNS_TYPE_A, 60, A_RD, 4);
	len = m.n;
	mb_bytes(&m, "junk", 4);
	assert_int_equal(dnsmsg_append_opt(m.b, m.n, sizeof(m.b), &c1,
	    EDE_NONE, &n), 0);
	assert_int_equal(n, len + sizeof(opt_do));
	assert_memory_equal(m.b + len, opt_do, sizeof(opt_do));

	/* Records that do not parse, or no header. */
	answer_start(&m, 0, 2, 0, 0);
	mb_rr_ptr(&m, DNS_TYPE_A, 60, A_RD, 4);
	assert_int_equal(dnsmsg_append_opt(m.b, m.n, sizeof(m.b), &c1,
	    EDE_NONE, &n), DNSMSG_EMALFORMED);
	assert_int_equal(dnsmsg_append_opt(m.b, 11, sizeof(m.b), &c1,
	    EDE_NONE, &n), DNSMSG_EMALFORMED);
}

/* RFC 8914: the upstream's Extended DNS Errors (code and text) outlive
 * the cut of its OPT, and go to clients that sent EDNS only. */
static void
test_strip_opt_ede(void **state)
{
	struct mb m, want;
	struct dnsmsg_question e;
	struct dnsmsg_answer_info info;
	struct dnsmsg_query c1 = client_q(1, 1, 1232);
	struct dnsmsg_query plain = client_q(0, 0, 0);
	uint8_t copy[256];
	size_t n, len, cn;
	/* keepalive 30 s, EDE 6 "test", an unknown option, EDE 22. */
	static const uint8_t opts[] = {
		0, 11, 0, 2, 1, 44,
		0, 15, 0, 6, 0, 6, 't', 'e', 's', 't',
		0xfd, 0xe9, 0, 1, 9,
		0, 15, 0, 2, 0, 22,
	};
	static const uint8_t carried[] = {
		0, 0, 41, 0, 0, 0, 0, 0, 0, 0, 16,
		0, 15, 0, 6, 0, 6, 't', 'e', 's', 't',
		0, 15, 0, 2, 0, 22,
	};
	static const uint8_t client_opt[] = {
		0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 22,
		0, 15, 0, 2, 0, 3,
		0, 15, 0, 6, 0, 6, 't', 'e', 's', 't',
		0, 15, 0, 2, 0, 22,
	};

	(void)state;
	expect_example_a(&e);
	answer_start(&m, DNS_RCODE_SERVFAIL, 0, 0, 1);
	len = m.n;
	mb_opt_rd(&m, 4096, 0, opts, sizeof(opts));
	answer_start(&want, DNS_RCODE_SERVFAIL, 0, 0, 1);
	mb_bytes(&want, carried, sizeof(carried));

	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info), 0);
	n = dnsmsg_strip_opt(m.b, m.n, &info);
	assert_int_equal(n, want.n);
	assert_memory_equal(m.b, want.b, n);
	assert_int_equal(dnsmsg_parse_answer(m.b, n, &e, &info), 0);
	memcpy(copy, m.b, n);
	cn = n;

	/* A client with EDNS: our header, our EDE, then the carried. */
	assert_int_equal(dnsmsg_append_opt(m.b, n, sizeof(m.b), &c1,
	    EDE_STALE_ANSWER, &n), 0);
	assert_int_equal(n, len + sizeof(client_opt));
	assert_memory_equal(m.b + len, client_opt, sizeof(client_opt));
	assert_int_equal(m.b[11], 1);

	/* One without: no OPT at all. */
	assert_int_equal(dnsmsg_append_opt(copy, cn, sizeof(copy), &plain,
	    EDE_NONE, &n), 0);
	assert_int_equal(n, len);
	assert_int_equal(copy[11], 0);

	/* No EDE upstream: nothing carried, as before. */
	answer_start(&m, 0, 1, 0, 1);
	mb_rr_ptr(&m, DNS_TYPE_A, 60, A_RD, 4);
	len = m.n;
	mb_opt_rd(&m, 4096, 0, opts, 6);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info), 0);
	assert_int_equal(dnsmsg_strip_opt(m.b, m.n, &info), len);
	assert_int_equal(m.b[11], 0);
}

/* RFC 6672 3.3: a synthesised CNAME counts with its DNAME's TTL. */
static void
test_answer_dname_ttl(void **state)
{
	struct mb m, qm;
	struct dnsmsg_query q;
	struct dnsmsg_answer_info info;
	static const uint8_t a[4] = { 192, 0, 2, 7 };
	int order;

	(void)state;
	mb_hdr(&qm, 1, 0, 1, 0, 0, 0);
	mb_q(&qm, "www.example.com", DNS_TYPE_A, 1);
	assert_int_equal(dnsmsg_parse_query(qm.b, qm.n, &q), 0);

	for (order = 0; order < 3; order++) {
		mb_hdr(&m, 1, DNS_FLAG_QR | DNS_FLAG_RD | DNS_FLAG_RA, 1, 3,
		    0, 0);
		mb_q(&m, "www.example.com", DNS_TYPE_A, 1);
		if (order != 1) {
			mb_ptr(&m, 16);         /* example.com */
			mb_u16(&m, DNS_TYPE_DNAME);
			mb_u16(&m, 1);
			mb_u32(&m, 300);
			mb_u16(&m, 13);
			mb_name(&m, "example.net");
		}
		/* The CNAME, TTL 0; order 2: owned by another name. */
		if (order == 2)
			mb_name(&m, "www.example.org");
		else
			mb_ptr(&m, 12);
		mb_u16(&m, DNS_TYPE_CNAME);
		mb_u16(&m, 1);
		mb_u32(&m, 0);
		mb_u16(&m, 17);
		mb_name(&m, "www.example.net");
		if (order == 1) {
			mb_ptr(&m, 16);
			mb_u16(&m, DNS_TYPE_DNAME);
			mb_u16(&m, 1);
			mb_u32(&m, 300);
			mb_u16(&m, 13);
			mb_name(&m, "example.net");
		}
		mb_name(&m, "www.example.net");
		mb_u16(&m, DNS_TYPE_A);
		mb_u16(&m, 1);
		mb_u32(&m, 200);
		mb_u16(&m, 4);
		mb_bytes(&m, a, 4);
		assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &q.q, &info),
		    0);
		assert_int_equal(info.cacheable, 1);
		/* A DNAME after its CNAME (1) is out of RFC 6672's order,
		 * and a CNAME not below it (2) is no synthesised one. */
		assert_int_equal(info.ttl, order == 0 ? 200 : 0);
		assert_int_equal(info.n_ttl, 3);
	}
}

static void
test_clamp_set_ttls(void **state)
{
	struct mb m;
	struct dnsmsg_question e;
	struct dnsmsg_answer_info info;
	uint16_t offs[6];

	(void)state;
	expect_example_a(&e);
	answer_start(&m, 0, 4, 0, 1);
	mb_rr_ptr(&m, DNS_TYPE_A, 5, A_RD, 4);
	mb_rr_ptr(&m, DNS_TYPE_A, 100, A_RD, 4);
	mb_rr_ptr(&m, DNS_TYPE_A, 100000, A_RD, 4);
	mb_rr_ptr(&m, DNS_TYPE_A, 0x80000001u, A_RD, 4);
	mb_opt(&m, 1232, 0x8000);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info), 0);
	assert_int_equal(info.n_ttl, 4);
	memcpy(offs, info.ttl_off, 4 * sizeof(offs[0]));
	offs[4] = (uint16_t)(m.n - 2);  /* runs past the end: ignored */
	offs[5] = 60000;

	dnsmsg_clamp_ttls(m.b, m.n, offs, 6, 30, 86400);
	assert_int_equal(rd32(m.b + offs[0]), 30);
	assert_int_equal(rd32(m.b + offs[1]), 100);
	assert_int_equal(rd32(m.b + offs[2]), 86400);
	assert_int_equal(rd32(m.b + offs[3]), 30);     /* read as 0 */
	assert_int_equal(rd32(m.b + m.n - 6), 0x8000);
	assert_int_equal(m.b[m.n - 2] | m.b[m.n - 1], 0);

	/* lo 0, hi 50: only the top comes down. */
	dnsmsg_clamp_ttls(m.b, m.n, offs, 4, 0, 50);
	assert_int_equal(rd32(m.b + offs[0]), 30);
	assert_int_equal(rd32(m.b + offs[1]), 50);
	assert_int_equal(rd32(m.b + offs[2]), 50);

	dnsmsg_set_ttls(m.b, m.n, offs, 6, 7);
	assert_int_equal(rd32(m.b + offs[0]), 7);
	assert_int_equal(rd32(m.b + offs[1]), 7);
	assert_int_equal(rd32(m.b + offs[2]), 7);
	assert_int_equal(rd32(m.b + offs[3]), 7);
	assert_int_equal(rd32(m.b + m.n - 6), 0x8000);
	assert_int_equal(m.b[m.n - 2] | m.b[m.n - 1], 0);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &e, &info), 0);
	assert_int_equal(info.ttl, 7);
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
		cmocka_unit_test(test_query_lowercase),
		cmocka_unit_test(test_query_fields_set),
		cmocka_unit_test(test_question_skip_limits),
		cmocka_unit_test(test_query_sections),
		cmocka_unit_test(test_error_reply_question),
		cmocka_unit_test(test_error_reply_noquestion),
		cmocka_unit_test(test_error_reply_edns),
		cmocka_unit_test(test_error_reply_ede),
		cmocka_unit_test(test_upstream_query),
		cmocka_unit_test(test_upstream_query_padding),
		cmocka_unit_test(test_answer_min_ttl),
		cmocka_unit_test(test_answer_malformed_names),
		cmocka_unit_test(test_answer_counts_lie),
		cmocka_unit_test(test_answer_mismatch),
		cmocka_unit_test(test_answer_negative),
		cmocka_unit_test(test_answer_not_cacheable),
		cmocka_unit_test(test_answer_keepalive),
		cmocka_unit_test(test_answer_opt_malformed),
		cmocka_unit_test(test_personalize),
		cmocka_unit_test(test_personalize_opt),
		cmocka_unit_test(test_query_edns_version),
		cmocka_unit_test(test_query_cap_udp),
		cmocka_unit_test(test_strip_opt_ede),
		cmocka_unit_test(test_answer_dname_ttl),
		cmocka_unit_test(test_age_ttls),
		cmocka_unit_test(test_truncate),
		cmocka_unit_test(test_strip_opt_last),
		cmocka_unit_test(test_strip_opt_middle),
		cmocka_unit_test(test_append_opt),
		cmocka_unit_test(test_clamp_set_ttls),
		cmocka_unit_test(test_name_str),
	};

	/* A parser that loops on a compression loop would hang, not fail:
	 * the alarm turns that into a failure. */
	alarm(60);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
