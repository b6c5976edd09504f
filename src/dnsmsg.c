/* dnsmsg.c: bounded, non-owning view over DNS wire messages.
 *
 * Every function works on (pointer, length) and reads only after checking
 * the bound; nothing here allocates beyond the duration of a call, and the
 * only allocation at all is c-ares' own, inside ares_expand_name().
 *
 * Names are checked by two walkers. name_walk() is ours: labels of at most
 * 63 bytes, at most 255 bytes in wire form, no reserved label types, and a
 * compression pointer must point strictly before the label run that holds
 * it and past the header (RFC 9267 section 2). Because every jump goes to a
 * smaller offset, the walk ends without a hop counter. It does not allocate,
 * so it serves the hot path (every client query). In upstream answers, which
 * are parsed once per cache miss, each name is additionally decoded with
 * c-ares' ares_expand_name(), whose own loop and range checks back ours up
 * and whose encoded length must agree with our walk.
 *
 * A question name is never compressed: it is the first name of the message,
 * so a pointer in it could only point forward or into the header. Both query
 * and answer parsing reject it.
 */
#include <stdio.h>
#include <string.h>

#include <ares.h>

#include "dnsmsg.h"

#define RR_FIXED_LEN 10 /* type, class, TTL, RDLENGTH after the owner */
#define SOA_FIXED_LEN 20 /* serial, refresh, retry, expire, minimum */
#define OPT_REPLY_UDP 1232 /* DNS flag day 2020 payload size */
#define EDNS_DO 0x8000 /* in the low 16 bits of OPT's TTL */

static uint16_t
get16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t
get32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
	    ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static void
put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void
put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* RFC 2181 section 8: a TTL with the top bit set is to be read as zero. */
static uint32_t
ttl_value(uint32_t raw)
{
	return (raw & 0x80000000u) ? 0 : raw;
}

static uint8_t
lower(uint8_t c)
{
	return (c >= 'A' && c <= 'Z') ? (uint8_t)(c + ('a' - 'A')) : c;
}

/* Walk the name at off. On success returns 0, sets *next to the offset just
 * past the name where it is stored (after its first pointer, if any) and,
 * when out is not NULL, writes the uncompressed, lowercased wire form there
 * (DNS_MAX_NAME_WIRE bytes) and its length to *out_len. Returns -1 on any
 * violation; compression pointers are one when allow_ptr is 0. */
static int
name_walk(const uint8_t *msg, size_t len, size_t off, int allow_ptr,
    uint8_t *out, size_t *out_len, size_t *next)
{
	size_t pos = off;
	size_t limit = off;     /* a pointer must go below this */
	size_t wire = 0;
	size_t after = 0;
	int jumped = 0;
	uint8_t c;
	size_t target;
	size_t i;

	for (;;) {
		if (pos >= len)
			return -1;
		c = msg[pos];
		if ((c & 0xc0) == 0xc0) {
			if (!allow_ptr || pos + 1 >= len)
				return -1;
			target = ((size_t)(c & 0x3f) << 8) | msg[pos + 1];
			if (target >= limit || target < DNS_HDR_LEN)
				return -1;
			if (!jumped) {
				after = pos + 2;
				jumped = 1;
			}
			pos = limit = target;
			continue;
		}
		if (c & 0xc0)
			return -1;
		/* c <= 63 here: the two top bits are clear. */
		if (wire + 1 + c > DNS_MAX_NAME_WIRE || pos + 1 + c > len)
			return -1;
		if (out != NULL) {
			out[wire] = c;
			for (i = 0; i < c; i++)
				out[wire + 1 + i] = lower(msg[pos + 1 + i]);
		}
		wire += 1 + (size_t)c;
		pos += 1 + (size_t)c;
		if (c == 0)
			break;
	}
	if (!jumped)
		after = pos;
	if (out_len != NULL)
		*out_len = wire;
	*next = after;
	return 0;
}

/* Skip a name in an upstream answer: our walk, then c-ares' decoder, which
 * must agree on where the name ends. */
static int
name_skip_checked(const uint8_t *msg, size_t len, size_t off, size_t *next)
{
	char *s = NULL;
	long enclen = 0;
	int rc;

	if (name_walk(msg, len, off, 1, NULL, NULL, next) != 0)
		return -1;
	rc = ares_expand_name(msg + off, msg, (int)len, &s, &enclen);
	if (s != NULL)
		ares_free_string(s);
	if (rc != ARES_SUCCESS || enclen <= 0 || off + (size_t)enclen != *next)
		return -1;
	return 0;
}

/* Parse the question at offset 12 into *qn. */
static int
question_parse(const uint8_t *msg, size_t len, struct dnsmsg_question *qn)
{
	size_t pos;

	if (name_walk(msg, len, DNS_HDR_LEN, 0, qn->wire, &qn->wire_len,
	    &pos) != 0)
		return -1;
	if (len - pos < 4)
		return -1;
	qn->qtype = get16(msg + pos);
	qn->qclass = get16(msg + pos + 2);
	qn->end = pos + 4;
	return 0;
}

uint16_t
dnsmsg_get_id(const uint8_t *msg)
{
	return get16(msg);
}

void
dnsmsg_set_id(uint8_t *msg, uint16_t id)
{
	put16(msg, id);
}

uint16_t
dnsmsg_get_flags(const uint8_t *msg)
{
	return get16(msg + 2);
}

int
dnsmsg_parse_query(const uint8_t *msg, size_t len, struct dnsmsg_query *q)
{
	size_t pos, next, nrr, i;
	uint16_t type;
	int ret;

	memset(q, 0, sizeof(*q));
	q->udp_size = DNS_DEFAULT_UDP;
	if (len < DNS_HDR_LEN) {
		ret = DNSMSG_EMALFORMED;
		goto out;
	}
	q->id = get16(msg);
	q->flags = get16(msg + 2);
	q->cd_bit = (q->flags & DNS_FLAG_CD) != 0;
	if (q->flags & DNS_FLAG_QR) {
		ret = DNSMSG_EMALFORMED;
		goto out;
	}
	/* The question is parsed before the opcode is judged so that a
	 * NOTIMP answer can echo it. */
	if (get16(msg + 4) == 1 && question_parse(msg, len, &q->q) == 0)
		q->has_question = 1;
	if (DNS_OPCODE(q->flags) != 0) {
		ret = DNS_RCODE_NOTIMP;
		goto out;
	}
	if (!q->has_question) {
		ret = DNS_RCODE_FORMERR;
		goto out;
	}

	/* Walk answer, authority and additional for the OPT record. A query
	 * rarely has anything but OPT there, so this is usually one record. */
	pos = q->q.end;
	nrr = (size_t)get16(msg + 6) + get16(msg + 8) + get16(msg + 10);
	for (i = 0; i < nrr; i++) {
		if (name_walk(msg, len, pos, 1, NULL, NULL, &next) != 0)
			goto formerr;
		if (len - next < RR_FIXED_LEN)
			goto formerr;
		type = get16(msg + next);
		if (type == DNS_TYPE_OPT &&
		    i >= (size_t)get16(msg + 6) + get16(msg + 8)) {
			/* RFC 6891 section 6.1.1: one OPT, owned by root. */
			if (q->edns || next != pos + 1)
				goto formerr;
			q->edns = 1;
			q->udp_size = get16(msg + next + 2);
			if (q->udp_size < DNS_DEFAULT_UDP)
				q->udp_size = DNS_DEFAULT_UDP;
			q->do_bit = (get32(msg + next + 4) & EDNS_DO) != 0;
		}
		pos = next + RR_FIXED_LEN;
		if (len - pos < get16(msg + next + 8))
			goto formerr;
		pos += get16(msg + next + 8);
	}
	ret = 0;
	goto out;

formerr:
	/* Echoing an OPT we judged broken would claim we understood it. */
	q->edns = 0;
	q->do_bit = 0;
	q->udp_size = DNS_DEFAULT_UDP;
	ret = DNS_RCODE_FORMERR;
out:
	return ret;
}

int
dnsmsg_error_reply(const uint8_t *query, size_t query_len,
    const struct dnsmsg_query *q, int rcode, uint8_t *out, size_t cap,
    size_t *out_len)
{
	size_t qlen = 0, n;
	uint16_t flags;

	if (q->has_question) {
		if (q->q.end < DNS_HDR_LEN || q->q.end > query_len)
			return DNSMSG_ENOSPC;
		qlen = q->q.end - DNS_HDR_LEN;
	}
	n = DNS_HDR_LEN + qlen + (q->edns ? 1 + RR_FIXED_LEN : 0);
	if (n > cap)
		return DNSMSG_ENOSPC;

	flags = DNS_FLAG_QR | DNS_FLAG_RA | (q->flags & 0x7800) |
	    (q->flags & DNS_FLAG_RD) | (uint16_t)(rcode & 0xf);
	put16(out, q->id);
	put16(out + 2, flags);
	put16(out + 4, q->has_question ? 1 : 0);
	put16(out + 6, 0);
	put16(out + 8, 0);
	put16(out + 10, q->edns ? 1 : 0);
	if (qlen > 0)
		memcpy(out + DNS_HDR_LEN, query + DNS_HDR_LEN, qlen);
	if (q->edns) {
		uint8_t *p = out + DNS_HDR_LEN + qlen;

		p[0] = 0;
		put16(p + 1, DNS_TYPE_OPT);
		put16(p + 3, OPT_REPLY_UDP);
		put32(p + 5, q->do_bit ? EDNS_DO : 0);
		put16(p + 9, 0);
	}
	*out_len = n;
	return 0;
}

/* Read the MINIMUM field of the SOA whose RDATA is [rd, rd + rdlen). The
 * names in it may be compressed, so they are walked against the whole
 * message, but they must end inside the RDATA. */
static int
soa_minimum(const uint8_t *msg, size_t len, size_t rd, size_t rdlen,
    uint32_t *minimum)
{
	size_t pos, end = rd + rdlen;

	if (name_skip_checked(msg, len, rd, &pos) != 0 || pos > end)
		return -1;
	if (name_skip_checked(msg, len, pos, &pos) != 0 || pos > end)
		return -1;
	if (end - pos != SOA_FIXED_LEN)
		return -1;
	*minimum = get32(msg + pos + 16);
	return 0;
}

int
dnsmsg_parse_answer(const uint8_t *msg, size_t len,
    const struct dnsmsg_question *expect, struct dnsmsg_answer_info *info)
{
	struct dnsmsg_question qn;
	size_t counts[3], pos, next, rdlen, sec, i;
	uint16_t flags, type;
	uint32_t ttl, minimum, min_ttl = 0, neg_ttl = 0;
	int have_ttl = 0, have_soa = 0, overflow = 0;
	int ret;

	memset(info, 0, sizeof(*info));
	/* ttl_off is 16 bits wide: that is the TCP message limit anyway. */
	if (len < DNS_HDR_LEN || len > DNS_MAX_MSG)
		goto malformed;
	flags = get16(msg + 2);
	if (!(flags & DNS_FLAG_QR) || get16(msg + 4) != 1)
		goto malformed;
	if (question_parse(msg, len, &qn) != 0)
		goto malformed;
	if (qn.wire_len != expect->wire_len ||
	    memcmp(qn.wire, expect->wire, qn.wire_len) != 0 ||
	    qn.qtype != expect->qtype || qn.qclass != expect->qclass) {
		ret = DNSMSG_EMISMATCH;
		goto out;
	}

	counts[0] = get16(msg + 6);
	counts[1] = get16(msg + 8);
	counts[2] = get16(msg + 10);
	pos = qn.end;
	for (sec = 0; sec < 3; sec++) {
		for (i = 0; i < counts[sec]; i++) {
			if (name_skip_checked(msg, len, pos, &next) != 0)
				goto malformed;
			if (len - next < RR_FIXED_LEN)
				goto malformed;
			type = get16(msg + next);
			rdlen = get16(msg + next + 8);
			pos = next + RR_FIXED_LEN;
			if (len - pos < rdlen)
				goto malformed;
			if (type != DNS_TYPE_OPT) {
				ttl = ttl_value(get32(msg + next + 4));
				if (!have_ttl || ttl < min_ttl)
					min_ttl = ttl;
				have_ttl = 1;
				if (info->n_ttl < DNSMSG_MAX_RRS)
					info->ttl_off[info->n_ttl++] =
					    (uint16_t)(next + 4);
				else
					overflow = 1;
			}
			/* RFC 2308 section 5: the first SOA in authority
			 * bounds a negative answer's lifetime. */
			if (sec == 1 && type == DNS_TYPE_SOA && !have_soa) {
				if (soa_minimum(msg, len, pos, rdlen,
				    &minimum) != 0)
					goto malformed;
				ttl = ttl_value(get32(msg + next + 4));
				minimum = ttl_value(minimum);
				neg_ttl = ttl < minimum ? ttl : minimum;
				have_soa = 1;
			}
			pos += rdlen;
		}
	}

	info->rcode = DNS_RCODE(flags);
	info->tc = (flags & DNS_FLAG_TC) != 0;
	info->negative = info->rcode == DNS_RCODE_NXDOMAIN ||
	    (info->rcode == DNS_RCODE_NOERROR && counts[0] == 0);
	info->cacheable = (info->rcode == DNS_RCODE_NOERROR ||
	    info->rcode == DNS_RCODE_NXDOMAIN) && !info->tc && !overflow;
	if (info->negative) {
		if (have_soa)
			info->ttl = neg_ttl;
		else
			info->cacheable = 0;
	} else {
		info->ttl = min_ttl;
	}
	ret = 0;
	goto out;

malformed:
	ret = DNSMSG_EMALFORMED;
out:
	return ret;
}

void
dnsmsg_personalize(uint8_t *answer, size_t answer_len,
    const uint8_t *query, const struct dnsmsg_query *q)
{
	uint16_t flags;
	const uint16_t copied = DNS_FLAG_RD | DNS_FLAG_CD;

	if (answer_len < DNS_HDR_LEN)
		return;
	put16(answer, q->id);
	flags = (uint16_t)((get16(answer + 2) & ~copied) | (q->flags & copied));
	put16(answer + 2, flags);
	if (q->has_question && q->q.end >= DNS_HDR_LEN &&
	    q->q.end <= answer_len)
		memcpy(answer + DNS_HDR_LEN, query + DNS_HDR_LEN,
		    q->q.end - DNS_HDR_LEN);
}

void
dnsmsg_age_ttls(uint8_t *msg, size_t len, const uint16_t *offs,
    size_t n_offs, uint32_t age)
{
	size_t i;
	uint32_t ttl;

	for (i = 0; i < n_offs; i++) {
		if ((size_t)offs[i] + 4 > len)
			continue;
		ttl = ttl_value(get32(msg + offs[i]));
		put32(msg + offs[i], ttl > age ? ttl - age : 0);
	}
}

size_t
dnsmsg_truncate(uint8_t *msg, size_t len)
{
	struct dnsmsg_question qn;

	if (len < DNS_HDR_LEN || get16(msg + 4) != 1 ||
	    question_parse(msg, len, &qn) != 0)
		return 0;
	put16(msg + 2, get16(msg + 2) | DNS_FLAG_TC);
	put16(msg + 6, 0);
	put16(msg + 8, 0);
	put16(msg + 10, 0);
	return qn.end;
}

void
dnsmsg_name_str(const struct dnsmsg_question *q, char *buf, size_t cap)
{
	size_t pos = 0, o = 0, i;
	uint8_t lab, c;
	char esc[8];
	int n;

	if (cap == 0)
		return;
	if (q->wire_len == 0 || q->wire_len > DNS_MAX_NAME_WIRE)
		goto bad;
	if (q->wire_len == 1 && q->wire[0] == 0) {
		if (cap < 2)
			goto bad;
		memcpy(buf, ".", 2);
		return;
	}
	for (;;) {
		if (pos >= q->wire_len)
			goto bad;
		lab = q->wire[pos++];
		if (lab == 0)
			break;
		if (lab > 63 || pos + lab > q->wire_len)
			goto bad;
		for (i = 0; i < lab; i++) {
			c = q->wire[pos + i];
			if (c == '.' || c == '\\')
				n = snprintf(esc, sizeof(esc), "\\%c", c);
			else if (c <= 0x20 || c >= 0x7f)
				n = snprintf(esc, sizeof(esc), "\\%03u", c);
			else
				n = snprintf(esc, sizeof(esc), "%c", c);
			if (n < 0 || o + (size_t)n + 1 > cap)
				goto bad;
			memcpy(buf + o, esc, (size_t)n);
			o += (size_t)n;
		}
		pos += lab;
		if (o + 2 > cap)
			goto bad;
		buf[o++] = '.';
	}
	if (pos != q->wire_len)
		goto bad;
	buf[o] = '\0';
	return;

bad:
	if (cap >= 2)
		memcpy(buf, "?", 2);
	else
		buf[0] = '\0';
}
