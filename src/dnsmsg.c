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
 * and answer parsing reject it. So the question has a walker of its own,
 * qname_len(), with name_walk()'s checks less the pointers, and is
 * lowercased in one pass after it (every client query and every cached
 * answer sent to a client passes here: it is the hot path's name walk).
 *
 * EDNS: cached answers are kept without the upstream's OPT and each client
 * gets its own (payload, DO, Extended DNS Error), so dnsmsg_strip_opt()
 * cuts the OPT record out of an answer in place. The upstream's Extended
 * DNS Errors (RFC 8914) stay with the answer: they go in a bare OPT record
 * appended as its last record, where no pointer can reach and which
 * dnsmsg_append_opt() turns into the client's OPT (or cuts off for a
 * client without EDNS). Records after it move down, and so
 * must every compression pointer to them: pointers can only point back,
 * so only the records after the OPT hold such pointers, in their owner
 * names and in the RDATA names RFC 3597 section 4 allows to be compressed
 * (rdata_names()). Each of those must name the same after the cut
 * (ptr_retarget() says when it can). dnsmsg_parse_answer() accepts one
 * OPT only, in the additional section, owned by the root (RFC 6891
 * 6.1.1), and rejects an answer with a later pointer that could not be
 * moved, so that cutting an accepted answer's OPT always succeeds and
 * leaves an answer it accepts again. Compressed names inside the RDATA of other
 * types are not rewritten (RFC 3597 forbids sending them); they could only
 * go stale, never out of bounds, and only when a record follows the OPT.
 */
#include <stdio.h>
#include <string.h>

#include <ares.h>

#include "dnsmsg.h"

#define RR_FIXED_LEN 10 /* type, class, TTL, RDLENGTH after the owner */
#define SOA_FIXED_LEN 20 /* serial, refresh, retry, expire, minimum */
#define OPT_FIXED_LEN (1 + RR_FIXED_LEN) /* root owner + fixed part */
#define OPT_EDE_LEN 6 /* code, length, INFO-CODE; no EXTRA-TEXT */
#define EDNS_DO 0x8000 /* in the low 16 bits of OPT's TTL */
#define MAX_DNAMES 8 /* DNAMEs in an answer whose CNAMEs we recognise */

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

/* An ede argument is an INFO-CODE to send; EDE_NONE, or anything else
 * outside 16 bits, sends no Extended DNS Error option. */
static int
ede_valid(int ede)
{
	return ede >= 0 && ede <= 0xffff;
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

/* The wire length of the question name at offset 12, or 0 when it is no
 * name inside len. The checks are name_walk()'s without pointers (a
 * question name cannot hold one): labels of at most 63 bytes, at most
 * DNS_MAX_NAME_WIRE bytes with the root label. Every client query and
 * every cached answer sent passes here, so it only walks; question_parse()
 * lowercases the bytes it has vouched for. */
static size_t
qname_len(const uint8_t *msg, size_t len)
{
	size_t pos = DNS_HDR_LEN, end;
	uint8_t c;

	end = len < DNS_HDR_LEN + DNS_MAX_NAME_WIRE ? len :
	    DNS_HDR_LEN + DNS_MAX_NAME_WIRE;
	for (;;) {
		if (pos >= end)
			return 0;
		c = msg[pos];
		if (c > 63)
			return 0;
		pos += 1 + (size_t)c;
		if (c == 0)
			return pos - DNS_HDR_LEN;
	}
}

/* Copy n bytes of a wire name from src to dst with A-Z lowercased, eight
 * bytes at a time (SWAR): a length byte is at most 63, below 'A', so the
 * whole name can be lowercased as one string. In each byte whose top bit
 * is clear, adding 0x80 - 'A' sets the top bit from 'A' up and adding
 * 0x80 - 'Z' - 1 from past 'Z' up; neither sum carries into the next
 * byte. Where the first is set and the second not, the byte is A-Z and
 * gets 0x20. The last eight bytes may overlap bytes already done; src and
 * dst do not overlap, and nothing outside [0, n) is read or written. */
static void
lower_copy(uint8_t *dst, const uint8_t *src, size_t n)
{
	const uint64_t ones = 0x0101010101010101ull;
	const uint64_t tops = 0x8080808080808080ull;
	uint64_t x, low7, ge_a, gt_z;
	size_t i;

	if (n < 8) {
		for (i = 0; i < n; i++)
			dst[i] = lower(src[i]);
		return;
	}
	for (i = 0;; i += 8) {
		if (i + 8 > n)
			i = n - 8;
		memcpy(&x, src + i, 8);
		low7 = x & ~tops;
		ge_a = low7 + ones * (0x80 - 'A');
		gt_z = low7 + ones * (0x80 - 'Z' - 1);
		x |= (ge_a & ~gt_z & ~x & tops) >> 2;
		memcpy(dst + i, &x, 8);
		if (i + 8 == n)
			break;
	}
}

/* Parse the question at offset 12 into *qn: the name lowercased into
 * qn->wire (qname_len()'s checks), type, class and the end. Returns 0, or
 * -1 with *qn unchanged. */
static int
question_parse(const uint8_t *msg, size_t len, struct dnsmsg_question *qn)
{
	size_t n, pos;

	n = qname_len(msg, len);
	if (n == 0)
		return -1;
	pos = DNS_HDR_LEN + n;
	if (len - pos < 4)
		return -1;
	lower_copy(qn->wire, msg + DNS_HDR_LEN, n);
	qn->wire_len = n;
	qn->qtype = get16(msg + pos);
	qn->qclass = get16(msg + pos + 2);
	qn->end = pos + 4;
	return 0;
}

/* The offset just past the question at offset 12 (checked as
 * question_parse() does, without copying the name), or 0. */
static size_t
question_end(const uint8_t *msg, size_t len)
{
	size_t n = qname_len(msg, len);

	if (n == 0 || len - DNS_HDR_LEN - n < 4)
		return 0;
	return DNS_HDR_LEN + n + 4;
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
	int ret, badvers = 0;

	/* Field by field rather than memset: the name buffer is most of
	 * *q, and only its first q->q.wire_len bytes mean anything. */
	q->id = 0;
	q->flags = 0;
	q->has_question = 0;
	q->q.wire_len = 0;
	q->q.qtype = 0;
	q->q.qclass = 0;
	q->q.end = 0;
	q->edns = 0;
	q->udp_size = DNS_DEFAULT_UDP;
	q->udp_adv = DNS_EDNS_UDP;
	q->do_bit = 0;
	q->cd_bit = 0;
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
		/* An OPT record is owned by the root, one zero byte,
		 * which needs no walk. */
		if (pos < len && msg[pos] == 0)
			next = pos + 1;
		else if (name_walk(msg, len, pos, 1, NULL, NULL, &next) != 0)
			goto formerr;
		if (len - next < RR_FIXED_LEN)
			goto formerr;
		type = get16(msg + next);
		if (type == DNS_TYPE_OPT) {
			/* RFC 6891 section 6.1.1: one OPT, owned by root,
			 * in the additional section. */
			if (q->edns || next != pos + 1 ||
			    i < (size_t)get16(msg + 6) + get16(msg + 8))
				goto formerr;
			q->edns = 1;
			q->udp_size = get16(msg + next + 2);
			if (q->udp_size < DNS_DEFAULT_UDP)
				q->udp_size = DNS_DEFAULT_UDP;
			/* Section 6.1.4: flags other than DO are ignored. */
			q->do_bit = (get32(msg + next + 4) & EDNS_DO) != 0;
			/* Section 6.1.3: we speak version 0 only. */
			if (msg[next + 5] != 0)
				badvers = 1;
		}
		pos = next + RR_FIXED_LEN;
		if (len - pos < get16(msg + next + 8))
			goto formerr;
		pos += get16(msg + next + 8);
	}
	/* Judged after the walk: a second OPT makes it FORMERR anyway. */
	ret = badvers ? DNS_RCODE_BADVERS : 0;
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

void
dnsmsg_query_cap_udp(struct dnsmsg_query *q, uint16_t max)
{
	if (max < DNS_DEFAULT_UDP)
		max = DNS_DEFAULT_UDP;
	if (q->udp_size > max)
		q->udp_size = max;
	q->udp_adv = max;
}

/* The payload size to advertise to the client of q: a query that did not
 * come through dnsmsg_parse_query may have none set. */
static uint16_t
adv_size(const struct dnsmsg_query *q)
{
	return q->udp_adv != 0 ? q->udp_adv : DNS_EDNS_UDP;
}

/* Bytes of the OPT record opt_write() writes for ede. */
static size_t
opt_size(int ede)
{
	return OPT_FIXED_LEN + (ede_valid(ede) ? OPT_EDE_LEN : 0);
}

/* Write our OPT record at p (opt_size(ede) bytes): root owner, payload,
 * the upper 8 bits of a 12-bit rcode (RFC 6891 6.1.3), version 0, DO as
 * do_bit and no other flag, and an Extended DNS Error option without
 * EXTRA-TEXT when ede is a code. */
static size_t
opt_write(uint8_t *p, uint16_t payload, int rcode, int do_bit, int ede)
{
	p[0] = 0;
	put16(p + 1, DNS_TYPE_OPT);
	put16(p + 3, payload);
	put32(p + 5, ((uint32_t)(rcode >> 4) & 0xff) << 24 |
	    (do_bit ? EDNS_DO : 0));
	put16(p + 9, 0);
	if (!ede_valid(ede))
		return OPT_FIXED_LEN;
	put16(p + 9, 6);
	put16(p + 11, EDNS_OPT_EDE);
	put16(p + 13, 2);
	put16(p + 15, (uint16_t)ede);
	return OPT_FIXED_LEN + OPT_EDE_LEN;
}

int
dnsmsg_error_reply(const uint8_t *query, size_t query_len,
    const struct dnsmsg_query *q, int rcode, int ede, uint8_t *out,
    size_t cap, size_t *out_len)
{
	size_t qlen = 0, n;
	uint16_t flags;

	if (q->has_question) {
		if (q->q.end < DNS_HDR_LEN || q->q.end > query_len)
			return DNSMSG_ENOSPC;
		qlen = q->q.end - DNS_HDR_LEN;
	}
	n = DNS_HDR_LEN + qlen + (q->edns ? opt_size(ede) : 0);
	if (n > cap)
		return DNSMSG_ENOSPC;

	/* An extended rcode has nowhere to go without an OPT record. */
	if (rcode > 0xf && !q->edns)
		return DNSMSG_ENOSPC;
	/* RA: recursion is what we offer for QUERY, and only for it. */
	flags = DNS_FLAG_QR | (q->flags & 0x7800) |
	    (DNS_OPCODE(q->flags) == 0 ? DNS_FLAG_RA : 0) |
	    (q->flags & DNS_FLAG_RD) | (uint16_t)(rcode & 0xf);
	put16(out, q->id);
	put16(out + 2, flags);
	put16(out + 4, q->has_question ? 1 : 0);
	put16(out + 6, 0);
	put16(out + 8, 0);
	put16(out + 10, q->edns ? 1 : 0);
	if (qlen > 0)
		memcpy(out + DNS_HDR_LEN, query + DNS_HDR_LEN, qlen);
	if (q->edns)
		opt_write(out + DNS_HDR_LEN + qlen, adv_size(q), rcode,
		    q->do_bit, ede);
	*out_len = n;
	return 0;
}

int
dnsmsg_upstream_query(const struct dnsmsg_query *q, uint8_t *out,
    size_t cap, size_t *out_len)
{
	size_t qlen, n, pad;
	uint8_t *p;
	uint16_t flags;

	/* Only a query that parsed has a question to forward; without
	 * one the caller has broken its side of the contract. */
	if (!q->has_question || q->q.wire_len == 0 ||
	    q->q.wire_len > DNS_MAX_NAME_WIRE)
		return DNSMSG_EMALFORMED;
	qlen = q->q.wire_len + 4;
	/* Header, question, OPT, empty keepalive, padding option header;
	 * the padding option's zero bytes fill up to the next block. */
	n = DNS_HDR_LEN + qlen + OPT_FIXED_LEN + 4 + 4;
	pad = (DNS_PAD_BLOCK - n % DNS_PAD_BLOCK) % DNS_PAD_BLOCK;
	if (n + pad > cap)
		return DNSMSG_ENOSPC;

	/* RFC 6840 5.7: a client's AD asks for AD in the answer, so it
	 * goes upstream with its CD (and DO, in the OPT below). */
	flags = DNS_FLAG_RD | (q->cd_bit ? DNS_FLAG_CD : 0) |
	    (q->flags & DNS_FLAG_AD);
	put16(out, 0);
	put16(out + 2, flags);
	put16(out + 4, 1);
	put16(out + 6, 0);
	put16(out + 8, 0);
	put16(out + 10, 1);
	p = out + DNS_HDR_LEN;
	memcpy(p, q->q.wire, q->q.wire_len);
	p += q->q.wire_len;
	put16(p, q->q.qtype);
	put16(p + 2, q->q.qclass);
	p += 4;
	opt_write(p, DNS_EDNS_UDP, 0, q->do_bit, EDE_NONE);
	put16(p + 9, (uint16_t)(4 + 4 + pad));
	p += OPT_FIXED_LEN;
	put16(p, EDNS_OPT_KEEPALIVE);
	put16(p + 2, 0);
	put16(p + 4, EDNS_OPT_PADDING);
	put16(p + 6, (uint16_t)pad);
	memset(p + 8, 0, pad);
	*out_len = n + pad;
	return 0;
}

/* Walk the options of the OPT RDATA [rd, rd + rdlen) (RFC 6891 6.1.2);
 * each must end inside it. An edns-tcp-keepalive option (RFC 7828) with
 * its 2-byte TIMEOUT is noted in info; with any other length it gives no
 * timeout (length 0 is what a server sends when it has none to give). */
static int
opt_options(const uint8_t *msg, size_t rd, size_t rdlen,
    struct dnsmsg_answer_info *info)
{
	size_t pos = rd, end = rd + rdlen, olen;
	uint16_t code;

	while (pos < end) {
		if (end - pos < 4)
			return -1;
		code = get16(msg + pos);
		olen = get16(msg + pos + 2);
		pos += 4;
		if (end - pos < olen)
			return -1;
		if (code == EDNS_OPT_KEEPALIVE && olen == 2) {
			info->has_keepalive = 1;
			info->keepalive_ms = (uint32_t)get16(msg + pos) * 100;
		}
		pos += olen;
	}
	return 0;
}

/* How the RDATA of a type holds names that a sender may compress
 * (RFC 3597 section 4: the RFC 1035 types, and those receivers must be
 * able to decompress): *skip fixed bytes, then the returned number of
 * names, then *tail fixed bytes. 0 for every other type, whose RDATA has
 * no pointers. */
static size_t
rdata_names(uint16_t type, size_t *skip, size_t *tail)
{
	*skip = 0;
	*tail = 0;
	switch (type) {
	case 2: case 3: case 4: case 5: case 7: case 8: case 9: case 12:
	case 39:                /* NS MD MF CNAME MB MG MR PTR DNAME */
		return 1;
	case 6:                 /* SOA */
		*tail = SOA_FIXED_LEN;
		return 2;
	case 14: case 17:       /* MINFO RP */
		return 2;
	case 15: case 18: case 21: case 36:     /* MX AFSDB RT KX */
		*skip = 2;
		return 1;
	case 26:                /* PX */
		*skip = 2;
		return 2;
	case 33:                /* SRV */
		*skip = 6;
		return 1;
	default:
		return 0;
	}
}

/* Look at the name stored at off inside [off, end) without following
 * pointers: a stored name ends at its root label or at its first
 * compression pointer. Returns 1 and sets *at to that pointer's offset,
 * 0 when the name ends in a root label, -1 when the bytes are no name.
 * *next is set past the stored name on success. */
static int
name_stored(const uint8_t *msg, size_t end, size_t off, size_t *at,
    size_t *next)
{
	size_t pos = off;
	uint8_t c;

	/* pos grows by at least one byte per label: the loop ends. */
	for (;;) {
		if (pos >= end)
			return -1;
		c = msg[pos];
		if ((c & 0xc0) == 0xc0) {
			if (end - pos < 2)
				return -1;
			*at = pos;
			*next = pos + 2;
			return 1;
		}
		if ((c & 0xc0) != 0 || end - pos - 1 < c)
			return -1;
		pos += 1 + (size_t)c;
		if (c == 0) {
			*next = pos;
			return 0;
		}
	}
}

/* The offsets of every compression pointer in the record at rr (owner
 * [rr, fixed), RDATA [rd, rd + rdlen)): the owner's, and those of the
 * names rdata_names() knows. RDATA that does not hold the names its type
 * promises yields fewer: the walk is the same wherever it is used. */
static size_t
rr_ptrs(const uint8_t *msg, size_t rr, size_t fixed, uint16_t type,
    size_t rd, size_t rdlen, size_t at[3])
{
	size_t n = 0, pos, skip, tail, names, k;
	int rc;

	if (name_stored(msg, fixed, rr, &at[n], &pos) == 1)
		n++;
	names = rdata_names(type, &skip, &tail);
	if (skip > rdlen)
		return n;
	pos = rd + skip;
	for (k = 0; k < names; k++) {
		rc = name_stored(msg, rd + rdlen, pos, &at[n], &pos);
		if (rc < 0)
			break;
		if (rc == 1)
			n++;
	}
	return n;
}

/* Where a compression pointer to target must point once the OPT record
 * [s, e) is cut out of the len bytes of msg, if the name it stands for is
 * to read the same afterwards. A name before the cut must end before it
 * (its labels must not run over the OPT; a pointer at its end goes back
 * further). A pointer to s names the root (an OPT is owned by the root
 * label) and is sent to root, the question's root label, when there is
 * one (root != 0). A name after the cut moves with it, so the pointer
 * moves down; that name must end in the root label or in a pointer to a
 * name before the cut, because a pointer that needs moving is only moved
 * where rr_ptrs() finds it. Returns -1 for any other target, which the
 * cut would leave naming other bytes. */
static int
ptr_retarget(const uint8_t *msg, size_t len, size_t target, size_t s,
    size_t e, size_t root, size_t *nt)
{
	size_t at, next;
	int rc;

	/* *nt is set whatever the verdict: a rewriting pass, which reads
	 * bytes it has partly rewritten, uses it without asking again. */
	*nt = target;
	if (target == s && root != 0) {
		*nt = root;
		return 0;
	}
	if (target < s)
		return name_stored(msg, s, target, &at, &next) < 0 ? -1 : 0;
	if (target < e)
		return -1;
	*nt = target - (e - s);
	rc = name_stored(msg, len, target, &at, &next);
	if (rc <= 0)
		return rc;
	target = get16(msg + at) & 0x3fff;
	if (target >= s || name_stored(msg, s, target, &at, &next) < 0)
		return -1;
	return 0;
}

/* Check every pointer rr_ptrs() finds in the nrr records from pos for
 * the cut of the OPT record [s, e) (which is skipped); or, when out is
 * not NULL (the same bytes as msg), rewrite them for it, which is only
 * right after a checking pass has succeeded. Returns 0, or -1 when a
 * record does not parse or (checking) a pointer cannot be moved. */
static int
opt_cut_ptrs(const uint8_t *msg, uint8_t *out, size_t len, size_t pos,
    size_t nrr, size_t s, size_t e, size_t root)
{
	size_t fixed, rdlen, atx, at[3], n, k, i, nt;
	int ret = -1;

	for (i = 0; i < nrr; i++) {
		if (name_stored(msg, len, pos, &atx, &fixed) < 0 ||
		    len - fixed < RR_FIXED_LEN)
			goto out;
		rdlen = get16(msg + fixed + 8);
		if (len - fixed - RR_FIXED_LEN < rdlen)
			goto out;
		n = pos == s ? 0 : rr_ptrs(msg, pos, fixed,
		    get16(msg + fixed), fixed + RR_FIXED_LEN, rdlen, at);
		for (k = 0; k < n; k++) {
			if (ptr_retarget(msg, len, get16(msg + at[k]) & 0x3fff,
			    s, e, root, &nt) != 0 && out == NULL)
				goto out;
			if (out != NULL)
				put16(out + at[k], (uint16_t)(0xc000 | nt));
		}
		pos = fixed + RR_FIXED_LEN + rdlen;
	}
	ret = 0;
out:
	return ret;
}

/* Check the names in the RDATA [rd, rd + rdlen) of a type rdata_names()
 * knows: each a valid name (pointers followed and checked), together
 * filling the RDATA exactly with the type's fixed bytes. They end up in
 * the cache and with clients, and dnsmsg_strip_opt() rewrites their
 * pointers. */
static int
rdata_names_check(const uint8_t *msg, size_t len, uint16_t type, size_t rd,
    size_t rdlen)
{
	size_t skip, tail, names, pos, k;

	names = rdata_names(type, &skip, &tail);
	if (names == 0)
		return 0;
	if (skip + tail > rdlen)
		return -1;
	pos = rd + skip;
	for (k = 0; k < names; k++)
		if (name_walk(msg, len, pos, 1, NULL, NULL, &pos) != 0 ||
		    pos > rd + rdlen - tail)
			return -1;
	return pos == rd + rdlen - tail ? 0 : -1;
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

/* Is the wire name c (lowercased, uncompressed) strictly below p? */
static int
name_below(const uint8_t *c, size_t clen, const uint8_t *p, size_t plen)
{
	size_t off = 0;

	while (off < clen && c[off] != 0) {
		off += 1 + (size_t)c[off];
		if (clen - off == plen && off < clen &&
		    memcmp(c + off, p, plen) == 0)
			return 1;
	}
	return 0;
}

/* The DNAMEs seen so far in an answer section (RFC 6672 3.3). */
struct dname_seen {
	size_t n;
	uint8_t owner[MAX_DNAMES][DNS_MAX_NAME_WIRE];
	size_t owner_len[MAX_DNAMES];
	uint32_t ttl[MAX_DNAMES];
};

/* The TTL a record of the answer section at rr (its type and TTL given)
 * counts with in the cache lifetime: a DNAME is remembered, and a CNAME
 * owned below a remembered DNAME's owner is the CNAME synthesised from it
 * and counts with its TTL. */
static uint32_t
answer_ttl(const uint8_t *msg, size_t len, size_t rr, uint16_t type,
    uint32_t ttl, struct dname_seen *d)
{
	uint8_t owner[DNS_MAX_NAME_WIRE];
	size_t owner_len, next, k;

	if ((type != DNS_TYPE_DNAME && type != DNS_TYPE_CNAME) ||
	    (type == DNS_TYPE_CNAME && d->n == 0) ||
	    name_walk(msg, len, rr, 1, owner, &owner_len, &next) != 0)
		return ttl;
	if (type == DNS_TYPE_DNAME) {
		if (d->n < MAX_DNAMES) {
			memcpy(d->owner[d->n], owner, owner_len);
			d->owner_len[d->n] = owner_len;
			d->ttl[d->n++] = ttl;
		}
		return ttl;
	}
	for (k = 0; k < d->n; k++)
		if (name_below(owner, owner_len, d->owner[k],
		    d->owner_len[k]))
			return d->ttl[k];
	return ttl;
}

int
dnsmsg_parse_answer(const uint8_t *msg, size_t len,
    const struct dnsmsg_question *expect, struct dnsmsg_answer_info *info)
{
	struct dnsmsg_question qn;
	struct dname_seen dnames;
	size_t counts[3], pos, rr, next, rdlen, sec, i;
	size_t opt_s = 0, opt_e = 0;
	uint16_t flags, type;
	uint32_t ttl, minimum, min_ttl = 0, neg_ttl = 0;
	int have_ttl = 0, have_soa = 0, overflow = 0;
	int ret;

	memset(info, 0, sizeof(*info));
	dnames.n = 0;
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
			rr = pos;
			if (name_skip_checked(msg, len, pos, &next) != 0)
				goto malformed;
			if (len - next < RR_FIXED_LEN)
				goto malformed;
			type = get16(msg + next);
			rdlen = get16(msg + next + 8);
			pos = next + RR_FIXED_LEN;
			if (len - pos < rdlen)
				goto malformed;
			if (rdata_names_check(msg, len, type, pos, rdlen) != 0)
				goto malformed;
			/* RFC 6891 section 6.1.1: one OPT, in the
			 * additional section, owned by the root. */
			if (type == DNS_TYPE_OPT) {
				if (sec != 2 || info->has_opt ||
				    next != rr + 1)
					goto malformed;
				if (opt_options(msg, pos, rdlen, info) != 0)
					goto malformed;
				info->has_opt = 1;
				opt_s = rr;
				opt_e = pos + rdlen;
			}
			if (type != DNS_TYPE_OPT) {
				ttl = ttl_value(get32(msg + next + 4));
				if (sec == 0)
					ttl = answer_ttl(msg, len, rr, type,
					    ttl, &dnames);
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

	/* dnsmsg_strip_opt() must be able to cut the OPT out with every
	 * name it knows reading the same afterwards. */
	if (info->has_opt && opt_cut_ptrs(msg, NULL, len, qn.end,
	    counts[0] + counts[1] + counts[2], opt_s, opt_e, qn.end - 5) != 0)
		goto malformed;

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
	flags = (uint16_t)((get16(answer + 2) & ~copied & ~DNS_FLAG_AA) |
	    (q->flags & copied) | DNS_FLAG_RA);
	/* RFC 6840 5.8: AD only to a client that asked for it, by AD or DO. */
	if (!(q->flags & DNS_FLAG_AD) && !q->do_bit)
		flags &= (uint16_t)~DNS_FLAG_AD;
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

/* Where the records of a message with at most one question start: past
 * the question (checked as question_parse() does) or, without one, past
 * the header. 0 when there is no such place. */
static size_t
records_start(const uint8_t *msg, size_t len)
{
	if (len < DNS_HDR_LEN)
		return 0;
	if (get16(msg + 4) == 0)
		return DNS_HDR_LEN;
	if (get16(msg + 4) != 1)
		return 0;
	return question_end(msg, len);
}

/* Find the first OPT record, in any section, among the records that start
 * at pos (records_start()). Returns 1 and sets *idx to its index among
 * all records and [*s, *e) to its bytes; 0 when there is none, with *s
 * and *e both the end of the last record; -1 when the records do not
 * parse. Pointers are not followed: callers hold checked messages. */
static int
opt_find_from(const uint8_t *msg, size_t len, size_t pos, size_t *idx,
    size_t *s, size_t *e)
{
	size_t nrr, fixed, at, rdlen, i;
	int ret = -1;

	nrr = (size_t)get16(msg + 6) + get16(msg + 8) + get16(msg + 10);
	for (i = 0; i < nrr; i++) {
		/* Most owners are one pointer (to the question): that
		 * much of name_stored() without the call. */
		if (pos + 2 <= len && (msg[pos] & 0xc0) == 0xc0)
			fixed = pos + 2;
		else if (name_stored(msg, len, pos, &at, &fixed) < 0)
			goto out;
		if (len - fixed < RR_FIXED_LEN)
			goto out;
		rdlen = get16(msg + fixed + 8);
		if (len - fixed - RR_FIXED_LEN < rdlen)
			goto out;
		if (get16(msg + fixed) == DNS_TYPE_OPT) {
			*idx = i;
			*s = pos;
			*e = fixed + RR_FIXED_LEN + rdlen;
			ret = 1;
			goto out;
		}
		pos = fixed + RR_FIXED_LEN + rdlen;
	}
	*s = *e = pos;
	ret = 0;
out:
	return ret;
}

/* opt_find_from() for a whole message with at most one question; *first
 * is set to the offset of the first record. */
static int
opt_find(const uint8_t *msg, size_t len, size_t *idx, size_t *s, size_t *e,
    size_t *first)
{
	size_t pos = records_start(msg, len);

	if (pos == 0)
		return -1;
	*first = pos;
	return opt_find_from(msg, len, pos, idx, s, e);
}

/* Cut the first OPT record out of *len bytes of msg when it is in the
 * additional section and every pointer can be moved with it. All
 * pointers are checked before the first is rewritten, so a refusal
 * leaves the message as it was. Returns 1 when cut, else 0. */
static int
opt_cut(uint8_t *msg, size_t *len, struct dnsmsg_answer_info *info)
{
	size_t idx, s, e, first, root, nrr, i;
	int ret = 0;

	if (opt_find(msg, *len, &idx, &s, &e, &first) != 1)
		goto out;
	if (idx < (size_t)get16(msg + 6) + get16(msg + 8))
		goto out;
	/* The question's root label, when there is a question. */
	root = first > DNS_HDR_LEN ? first - 5 : 0;
	nrr = (size_t)get16(msg + 6) + get16(msg + 8) + get16(msg + 10);
	if (opt_cut_ptrs(msg, NULL, *len, first, nrr, s, e, root) != 0 ||
	    opt_cut_ptrs(msg, msg, *len, first, nrr, s, e, root) != 0)
		goto out;
	memmove(msg + s, msg + e, *len - e);
	*len -= e - s;
	put16(msg + 10, (uint16_t)(get16(msg + 10) - 1));
	/* No TTL field lies inside an OPT: those past it moved down. */
	for (i = 0; i < info->n_ttl && i < DNSMSG_MAX_RRS; i++)
		if (info->ttl_off[i] > s)
			info->ttl_off[i] = (uint16_t)(info->ttl_off[i] - (e - s));
	ret = 1;
out:
	return ret;
}

/* Copy the Extended DNS Error options of the OPT record [s, e) to out
 * (at most cap bytes; options that do not fit are left out), which may be
 * inside the record at or before its options; with out NULL only count.
 * Returns the bytes copied. */
static size_t
opt_ede_copy(const uint8_t *msg, size_t s, size_t e, uint8_t *out,
    size_t cap)
{
	size_t pos = s + OPT_FIXED_LEN, n = 0, olen;

	while (e - pos >= 4) {
		olen = get16(msg + pos + 2);
		if (e - pos - 4 < olen)
			break;
		/* RFC 8914 section 2: INFO-CODE, then optional text. */
		if (get16(msg + pos) == EDNS_OPT_EDE && olen >= 2 &&
		    cap - n >= 4 + olen) {
			if (out != NULL)
				memmove(out + n, msg + pos, 4 + olen);
			n += 4 + olen;
		}
		pos += 4 + olen;
	}
	return n;
}

size_t
dnsmsg_strip_opt(uint8_t *msg, size_t len, struct dnsmsg_answer_info *info)
{
	uint8_t ede[DNS_MAX_MSG];
	size_t idx, s, e, first, n = 0, i;

	/* The carried options are no longer than the OPT they came from,
	 * so appending them after the cut never grows the message. */
	if (opt_find(msg, len, &idx, &s, &e, &first) == 1)
		n = opt_ede_copy(msg, s, e, ede, sizeof(ede));
	/* dnsmsg_parse_answer lets one OPT through; the loop is for the
	 * contract's "every", bounded by ARCOUNT shrinking each time. */
	for (i = 0; i <= 0xffff; i++)
		if (!opt_cut(msg, &len, info))
			break;
	info->has_opt = 0;
	if (n == 0 || i == 0 || get16(msg + 10) == 0xffff ||
	    opt_find(msg, len, &idx, &s, &e, &first) != 0)
		return len;
	/* Trailing bytes after the records go: the OPT ends the message. */
	opt_write(msg + e, 0, 0, 0, EDE_NONE);
	put16(msg + e + 9, (uint16_t)n);
	memcpy(msg + e + OPT_FIXED_LEN, ede, n);
	put16(msg + 10, (uint16_t)(get16(msg + 10) + 1));
	return e + OPT_FIXED_LEN + n;
}

/* dnsmsg_append_opt() for a message whose records start at first
 * (records_start(); 0 for none). */
static int
opt_append(uint8_t *msg, size_t len, size_t first, size_t cap,
    const struct dnsmsg_query *q, int ede, size_t *out_len)
{
	size_t idx, s, e, n, kept = 0, nrr, rdlen;
	int found, ret;

	/* The records must parse to find where they end (the OPT goes
	 * there, dropping any trailing bytes) and whether the last is an
	 * OPT carrying the upstream's Extended DNS Errors. */
	found = first == 0 ? -1 : opt_find_from(msg, len, first, &idx, &s, &e);
	if (found < 0) {
		ret = DNSMSG_EMALFORMED;
		goto out;
	}
	nrr = (size_t)get16(msg + 6) + get16(msg + 8) + get16(msg + 10);
	if ((found == 1 && idx + 1 != nrr) ||
	    (found == 0 && get16(msg + 10) == 0xffff)) {
		ret = DNSMSG_EMALFORMED;
		goto out;
	}
	if (!q->edns) {
		if (found == 1)
			put16(msg + 10, (uint16_t)(get16(msg + 10) - 1));
		*out_len = s;
		ret = 0;
		goto out;
	}
	/* The carried options stay where they are, after a header of ours;
	 * only Extended DNS Errors are carried (dnsmsg_strip_opt). */
	rdlen = found == 1 ? e - s - OPT_FIXED_LEN : 0;
	if (found == 1)
		kept = opt_ede_copy(msg, s, e, NULL, rdlen);
	n = opt_size(ede) + kept;
	if (s > cap || cap - s < n || s + n > DNS_MAX_MSG) {
		ret = DNSMSG_ENOSPC;
		goto out;
	}
	if (found == 1)
		(void)opt_ede_copy(msg, s, e, msg + s + OPT_FIXED_LEN, rdlen);
	if (ede_valid(ede))
		memmove(msg + s + OPT_FIXED_LEN + OPT_EDE_LEN,
		    msg + s + OPT_FIXED_LEN, kept);
	opt_write(msg + s, adv_size(q), 0, q->do_bit, ede);
	put16(msg + s + 9, (uint16_t)(get16(msg + s + 9) + kept));
	if (found == 0)
		put16(msg + 10, (uint16_t)(get16(msg + 10) + 1));
	*out_len = s + n;
	ret = 0;
out:
	return ret;
}

int
dnsmsg_append_opt(uint8_t *msg, size_t len, size_t cap,
    const struct dnsmsg_query *q, int ede, size_t *out_len)
{
	return opt_append(msg, len, records_start(msg, len), cap, q, ede,
	    out_len);
}

int
dnsmsg_personalize_opt(uint8_t *answer, size_t *lenp, size_t cap,
    const uint8_t *query, const struct dnsmsg_query *q, int ede)
{
	size_t first, len = *lenp;

	dnsmsg_personalize(answer, len, query, q);
	/* Where dnsmsg_personalize wrote the client's question over the
	 * answer's, those are bytes dnsmsg_parse_query has checked as a
	 * question: records_start() would find it ending at q->q.end. */
	if (len >= DNS_HDR_LEN && get16(answer + 4) == 1 && q->has_question &&
	    q->q.end >= DNS_HDR_LEN && q->q.end <= len)
		first = q->q.end;
	else
		first = records_start(answer, len);
	return opt_append(answer, len, first, cap, q, ede, lenp);
}

void
dnsmsg_clamp_ttls(uint8_t *msg, size_t len, const uint16_t *offs,
    size_t n_offs, uint32_t lo, uint32_t hi)
{
	size_t i;
	uint32_t ttl;

	for (i = 0; i < n_offs; i++) {
		if ((size_t)offs[i] + 4 > len)
			continue;
		ttl = ttl_value(get32(msg + offs[i]));
		if (ttl < lo)
			ttl = lo;
		if (ttl > hi)
			ttl = hi;
		put32(msg + offs[i], ttl);
	}
}

void
dnsmsg_set_ttls(uint8_t *msg, size_t len, const uint16_t *offs,
    size_t n_offs, uint32_t ttl)
{
	size_t i;

	for (i = 0; i < n_offs; i++)
		if ((size_t)offs[i] + 4 <= len)
			put32(msg + offs[i], ttl);
}

size_t
dnsmsg_truncate(uint8_t *msg, size_t len)
{
	size_t end;

	if (len < DNS_HDR_LEN || get16(msg + 4) != 1)
		return 0;
	end = question_end(msg, len);
	if (end == 0)
		return 0;
	put16(msg + 2, get16(msg + 2) | DNS_FLAG_TC);
	put16(msg + 6, 0);
	put16(msg + 8, 0);
	put16(msg + 10, 0);
	return end;
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
