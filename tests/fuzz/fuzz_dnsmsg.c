/* fuzz_dnsmsg.c: libFuzzer target for every dnsmsg function that reads
 * bytes from the network.
 *
 * One input is read as a client query (parse, then build the error reply
 * or the personalized copy), as an upstream answer to a fixed question
 * (parse, then age and name-print), and is truncated on a copy. The copies
 * are exactly as long as the input so that AddressSanitizer sees any read
 * or write past the message. A few invariants of the contract are checked
 * with __builtin_trap() so that a logic error crashes like a memory error.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dnsmsg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t EXPECT_WIRE[] = "\7example\3com";

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dnsmsg_query q;
	struct dnsmsg_question expect;
	struct dnsmsg_answer_info info;
	uint8_t out[DNS_HDR_LEN + DNS_MAX_NAME_WIRE + 4 + 11];
	char name[DNS_MAX_NAME_TEXT];
	uint8_t *copy;
	size_t out_len = 0, n, i;
	int rc;

	if (size > DNS_MAX_MSG)
		return 0;
	copy = malloc(size ? size : 1);
	if (copy == NULL)
		return 0;

	rc = dnsmsg_parse_query(data, size, &q);
	if (rc == 0 || rc == DNS_RCODE_FORMERR || rc == DNS_RCODE_NOTIMP) {
		if (q.has_question && (q.q.end > size ||
		    q.q.wire_len > DNS_MAX_NAME_WIRE))
			__builtin_trap();
		if (dnsmsg_error_reply(data, size, &q, rc ? rc :
		    DNS_RCODE_SERVFAIL, out, sizeof(out), &out_len) != 0)
			__builtin_trap();       /* out is always big enough */
		if (out_len > sizeof(out))
			__builtin_trap();
		dnsmsg_name_str(&q.q, name, sizeof(name));
		dnsmsg_name_str(&q.q, name, 5);
		if (rc == 0 && q.has_question) {
			/* Its own question is a valid answer question. */
			memcpy(copy, data, size);
			dnsmsg_personalize(copy, size, data, &q);
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
		memcpy(copy, data, size);
		dnsmsg_age_ttls(copy, size, info.ttl_off, info.n_ttl, 30);
		/* The answer parsed before aging parses the same after. */
		if (dnsmsg_parse_answer(copy, size, &expect, &info) != 0)
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
