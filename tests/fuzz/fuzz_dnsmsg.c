/* fuzz_dnsmsg.c: libFuzzer target for every dnsmsg function that reads
 * bytes from the network.
 *
 * One input is read as a client query (parse, then build the error reply,
 * the upstream query and the personalized copy), as an upstream answer to
 * a fixed question (parse, age, clamp; strip its OPT and append ours, as
 * the cache does; made a client's reply by dnsmsg_personalize_opt, which
 * must do what dnsmsg_personalize and dnsmsg_append_opt do), and is
 * truncated on a copy. The copies are exactly as
 * long as the input (or as the output may grow) so that AddressSanitizer
 * sees any read or write past the message. Invariants of the contract are
 * checked with __builtin_trap() so that a logic error crashes like a
 * memory error: among them, that an upstream query parses back to the same
 * question, and that an answer with its OPT cut out still parses, with the
 * same TTLs at the corrected offsets.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dnsmsg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t EXPECT_WIRE[] = "\7example\3com";

/* Our OPT with an Extended DNS Error option. */
#define OPT_MAX 17

/* The upstream query for a parsed client query: it fits in 384 bytes
 * (a 255-byte name), is padded to the block size and is a query we
 * accept ourselves, for the same question. */
static void
check_upstream(const struct dnsmsg_query *q)
{
	uint8_t up[3 * DNS_PAD_BLOCK];
	struct dnsmsg_query q2;
	size_t n = 0;

	if (dnsmsg_upstream_query(q, up, sizeof(up), &n) != 0)
		__builtin_trap();
	if (n > sizeof(up) || n % DNS_PAD_BLOCK != 0)
		__builtin_trap();
	if (dnsmsg_parse_query(up, n, &q2) != 0 || !q2.edns ||
	    q2.do_bit != q->do_bit || q2.cd_bit != q->cd_bit ||
	    q2.q.wire_len != q->q.wire_len ||
	    memcmp(q2.q.wire, q->q.wire, q->q.wire_len) != 0 ||
	    q2.q.qtype != q->q.qtype || q2.q.qclass != q->q.qclass)
		__builtin_trap();
	if (dnsmsg_upstream_query(q, up, n - 1, &n) != DNSMSG_ENOSPC)
		__builtin_trap();
}

/* dnsmsg_personalize_opt on msg (len bytes) for the client query cq
 * (parsed into cq_q) does what dnsmsg_personalize and then
 * dnsmsg_append_opt do: the same bytes, length and return value, with
 * room for an OPT and with one byte less than the input. */
static void
check_personalize_opt(const uint8_t *msg, size_t len, const uint8_t *cq,
    const struct dnsmsg_query *cq_q, int ede)
{
	uint8_t *one, *two;
	size_t cap, n1, n2 = 0, k;
	int r1, r2;

	one = malloc(len + OPT_MAX);
	two = malloc(len + OPT_MAX);
	if (one == NULL || two == NULL)
		goto out;
	for (k = 0; k < 2; k++) {
		cap = k == 0 ? len + OPT_MAX : (len ? len - 1 : 0);
		memcpy(one, msg, len);
		memcpy(two, msg, len);
		n1 = len;
		r1 = dnsmsg_personalize_opt(one, &n1, cap, cq, cq_q, ede);
		dnsmsg_personalize(two, len, cq, cq_q);
		r2 = dnsmsg_append_opt(two, len, cap, cq_q, ede, &n2);
		if (r1 != r2 || (r1 == 0 ? n1 != n2 : n1 != len) ||
		    memcmp(one, two, r1 == 0 && n1 > len ? n1 : len) != 0)
			__builtin_trap();
	}
out:
	free(one);
	free(two);
}

/* What the cache does with an accepted answer: strip its OPT, clamp,
 * append a client's OPT into a buffer with exactly the room for it. */
static void
check_strip_append(const uint8_t *data, size_t size,
    const struct dnsmsg_question *expect, const struct dnsmsg_answer_info *in,
    int ede)
{
	struct dnsmsg_answer_info info = *in, again;
	uint32_t ttls[DNSMSG_MAX_RRS];
	/* A query for EXAMPLE.com A, RD set. */
	static const uint8_t cq[] = { 0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0,
	    0, 7, 'E', 'X', 'A', 'M', 'P', 'L', 'E', 3, 'c', 'o', 'm', 0, 0,
	    1, 0, 1 };
	struct dnsmsg_query client, plain, cq_q;
	int carried;
	uint8_t *buf, *stripped;
	size_t n, out_len = 0, i;

	memset(&client, 0, sizeof(client));
	client.edns = 1;
	client.do_bit = 1;
	client.udp_adv = DNS_EDNS_UDP;
	memset(&plain, 0, sizeof(plain));
	buf = malloc(size + OPT_MAX);
	stripped = malloc(size ? size : 1);
	if (buf == NULL || stripped == NULL)
		goto out;
	memcpy(buf, data, size);
	for (i = 0; i < info.n_ttl; i++)
		memcpy(&ttls[i], data + info.ttl_off[i], 4);
	n = dnsmsg_strip_opt(buf, size, &info);
	if (n > size || info.has_opt || info.n_ttl != in->n_ttl)
		__builtin_trap();
	for (i = 0; i < info.n_ttl; i++)
		if ((size_t)info.ttl_off[i] + 4 > n ||
		    memcmp(&ttls[i], buf + info.ttl_off[i], 4) != 0)
			__builtin_trap();
	/* An OPT cut from the middle of the records may leave compression
	 * pointers behind it pointing astray: then the stripped answer no
	 * longer parses, and query.c drops it as a bad answer. Anything
	 * else must hold. */
	if (dnsmsg_parse_answer(buf, n, expect, &again) == DNSMSG_EMALFORMED)
		goto out;
	/* What is left of an OPT is the upstream's Extended DNS Errors,
	 * in a last OPT record of their own (carried). */
	if (dnsmsg_parse_answer(buf, n, expect, &again) != 0 ||
	    again.n_ttl != info.n_ttl ||
	    (in->has_opt && n == size && !again.has_opt) ||
	    memcmp(again.ttl_off, info.ttl_off,
	    info.n_ttl * sizeof(info.ttl_off[0])) != 0)
		__builtin_trap();
	carried = again.has_opt;
	/* Made a client's reply, as a cache hit does: to a client that
	 * spells the question in capitals, with and without EDNS. */
	if (dnsmsg_parse_query(cq, sizeof(cq), &cq_q) != 0)
		__builtin_trap();
	check_personalize_opt(buf, n, cq, &cq_q, ede);
	cq_q.edns = 1;
	cq_q.do_bit = 1;
	check_personalize_opt(buf, n, cq, &cq_q, ede);
	memcpy(stripped, buf, n);
	if (dnsmsg_append_opt(buf, n, n + OPT_MAX, &client, ede,
	    &out_len) != 0 || out_len > n + OPT_MAX)
		__builtin_trap();
	/* The OPT goes where the records end (trailing bytes are dropped):
	 * one byte less room than it took must be refused, unwritten. */
	if (dnsmsg_append_opt(stripped, n, out_len - 1, &client, ede, &i) !=
	    DNSMSG_ENOSPC || (!carried &&
	    memcmp(stripped + 10, buf + 10, 2) == 0))
		__builtin_trap();
	/* Unless trailing bytes, which a name may point into, were
	 * overwritten, we accept what we send. */
	if (!carried && out_len == n + (ede == EDE_NONE ? 11 : OPT_MAX) &&
	    (dnsmsg_parse_answer(buf, out_len, expect, &again) != 0 ||
	    !again.has_opt || again.n_ttl != info.n_ttl))
		__builtin_trap();
	/* A client without EDNS gets no OPT at all. */
	if (dnsmsg_append_opt(buf, out_len, n + OPT_MAX, &plain, EDE_NONE,
	    &out_len) != 0 || (out_len > n && !carried))
		__builtin_trap();
	/* Last, as they may break names that overlap TTLs (see above). */
	dnsmsg_clamp_ttls(buf, out_len, info.ttl_off, info.n_ttl, 5, 3600);
	dnsmsg_set_ttls(buf, out_len, info.ttl_off, info.n_ttl, 30);
out:
	free(stripped);
	free(buf);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dnsmsg_query q;
	struct dnsmsg_question expect;
	struct dnsmsg_answer_info info;
	uint8_t out[DNS_HDR_LEN + DNS_MAX_NAME_WIRE + 4 + OPT_MAX];
	char name[DNS_MAX_NAME_TEXT];
	uint8_t *copy;
	size_t out_len = 0, n, i;
	int rc, ede;

	if (size > DNS_MAX_MSG)
		return 0;
	copy = malloc(size ? size : 1);
	if (copy == NULL)
		return 0;

	/* The last byte picks whether error replies carry an EDE. */
	ede = (size > 0 && (data[size - 1] & 1)) ? EDE_NETWORK_ERROR :
	    EDE_NONE;
	rc = dnsmsg_parse_query(data, size, &q);
	if (rc == 0 || rc == DNS_RCODE_FORMERR || rc == DNS_RCODE_NOTIMP ||
	    rc == DNS_RCODE_BADVERS) {
		if (q.has_question && (q.q.end > size ||
		    q.q.wire_len > DNS_MAX_NAME_WIRE))
			__builtin_trap();
		if (dnsmsg_error_reply(data, size, &q, rc ? rc :
		    DNS_RCODE_SERVFAIL, ede, out, sizeof(out), &out_len) != 0)
			__builtin_trap();       /* out is always big enough */
		if (out_len > sizeof(out))
			__builtin_trap();
		dnsmsg_name_str(&q.q, name, sizeof(name));
		dnsmsg_name_str(&q.q, name, 5);
		if (q.has_question)
			check_upstream(&q);
		if (rc == 0 && q.has_question) {
			/* Its own question is a valid answer question. */
			memcpy(copy, data, size);
			dnsmsg_personalize(copy, size, data, &q);
			check_personalize_opt(data, size, data, &q, ede);
		}
	} else if (rc != DNSMSG_EMALFORMED) {
		__builtin_trap();
	}

	memset(&expect, 0, sizeof(expect));
	memcpy(expect.wire, EXPECT_WIRE, sizeof(EXPECT_WIRE));
	expect.wire_len = sizeof(EXPECT_WIRE);
	expect.qtype = DNS_TYPE_A;
	expect.qclass = 1;
	rc = dnsmsg_parse_answer(data, size, &expect, &info);
	if (rc == 0) {
		if (info.n_ttl > DNSMSG_MAX_RRS)
			__builtin_trap();
		for (i = 0; i < info.n_ttl; i++)
			if ((size_t)info.ttl_off[i] + 4 > size)
				__builtin_trap();
		check_strip_append(data, size, &expect, &info, ede);
		memcpy(copy, data, size);
		dnsmsg_age_ttls(copy, size, info.ttl_off, info.n_ttl, 30);
		/* A compression pointer may point at bytes that overlap a
		 * TTL field (nothing forbids it), so aging can break a name;
		 * it can change nothing else: no mismatch, same TTL list. */
		n = info.n_ttl;
		rc = dnsmsg_parse_answer(copy, size, &expect, &info);
		if ((rc != 0 && rc != DNSMSG_EMALFORMED) ||
		    (rc == 0 && info.n_ttl != n))
			__builtin_trap();
	} else if (rc != DNSMSG_EMALFORMED && rc != DNSMSG_EMISMATCH) {
		__builtin_trap();
	}

	memcpy(copy, data, size);
	n = dnsmsg_truncate(copy, size);
	if (n > size || (n != 0 && n < DNS_HDR_LEN + 5))
		__builtin_trap();

	free(copy);
	return 0;
}
