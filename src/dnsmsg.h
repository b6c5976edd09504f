/* dnsmsg.h: a bounded, non-owning view over DNS wire messages.
 *
 * Pure functions over (pointer, length): no allocation that outlives a call,
 * no sockets, no clock. Every read is bounds-checked (RFC 9267: compression
 * loops, label and name lengths, counts that lie); names are decoded with
 * c-ares' ares_expand_name(), which rejects loops and out-of-range pointers.
 * A function that returns an error has not written to its output message.
 */
#ifndef DOTPROXY_DNSMSG_H
#define DOTPROXY_DNSMSG_H

#include <stddef.h>
#include <stdint.h>

#define DNS_HDR_LEN 12
#define DNS_MAX_NAME_WIRE 255      /* RFC 1035 2.3.4, with the root label */
#define DNS_MAX_NAME_TEXT 1024     /* presentation form, with escapes */
#define DNS_MAX_MSG 65535          /* TCP framing limit */
#define DNS_DEFAULT_UDP 512        /* client payload without EDNS */
#define DNSMSG_MAX_RRS 256         /* TTL fields remembered per answer */

enum {
	DNS_RCODE_NOERROR = 0,
	DNS_RCODE_FORMERR = 1,
	DNS_RCODE_SERVFAIL = 2,
	DNS_RCODE_NXDOMAIN = 3,
	DNS_RCODE_NOTIMP = 4,
	DNS_RCODE_REFUSED = 5,
	DNS_RCODE_BADVERS = 16, /* extended: 0 in the header, 1 in the OPT */
};

enum {
	DNS_TYPE_A = 1,
	DNS_TYPE_NS = 2,
	DNS_TYPE_CNAME = 5,
	DNS_TYPE_SOA = 6,
	DNS_TYPE_TXT = 16,
	DNS_TYPE_AAAA = 28,
	DNS_TYPE_DNAME = 39,
	DNS_TYPE_OPT = 41,
};

/* EDNS(0) option codes and sizes. */
#define EDNS_OPT_ECS 8         /* RFC 7871 client subnet */
#define EDNS_OPT_KEEPALIVE 11  /* RFC 7828 edns-tcp-keepalive */
#define EDNS_OPT_PADDING 12    /* RFC 7830 */
#define EDNS_OPT_EDE 15        /* RFC 8914 extended DNS error */
#define DNS_EDNS_UDP 1232      /* the payload size we advertise upstream,
                                * and to clients unless capped otherwise */
#define DNS_PAD_BLOCK 128      /* RFC 8467 block-length padding of queries */

/* Extended DNS Error info codes (RFC 8914) we send. */
#define EDE_NONE (-1)
#define EDE_STALE_ANSWER 3
#define EDE_NO_REACHABLE_AUTHORITY 22
#define EDE_NETWORK_ERROR 23

/* Header flag bits in the 16-bit flags word (host order). */
#define DNS_FLAG_QR 0x8000
#define DNS_FLAG_AA 0x0400
#define DNS_FLAG_TC 0x0200
#define DNS_FLAG_RD 0x0100
#define DNS_FLAG_RA 0x0080
#define DNS_FLAG_AD 0x0020
#define DNS_FLAG_CD 0x0010
#define DNS_OPCODE(flags) (((flags) >> 11) & 0xf)
#define DNS_RCODE(flags) ((flags) & 0xf)

/* Return codes of the parse functions besides 0. */
#define DNSMSG_EMALFORMED (-1) /* bytes do not form a message */
#define DNSMSG_EMISMATCH (-2)  /* answer's question is not the one asked */
#define DNSMSG_ENOSPC (-3)     /* output buffer too small */

/* The one question of a message. */
struct dnsmsg_question {
	/* The name in uncompressed wire form, lowercased (A-Z only): the
	 * cache key and the comparison form. Only its first wire_len bytes
	 * are set. */
	uint8_t wire[DNS_MAX_NAME_WIRE];
	size_t wire_len;
	uint16_t qtype;
	uint16_t qclass;
	/* Offset just past the question section (12 + name + 4). The bytes
	 * [12, end) of the message are the question in the sender's spelling. */
	size_t end;
};

/* What a query says about itself. dnsmsg_parse_query sets each field
 * by name (no memset, for the hot path): a field added here must be set
 * there too. */
struct dnsmsg_query {
	uint16_t id;
	uint16_t flags;        /* header flags word, host order */
	int has_question;      /* 0 when QDCOUNT was not 1 or it did not parse */
	struct dnsmsg_question q;
	int edns;              /* an OPT record was present */
	uint16_t udp_size;     /* client's payload size: max(512, OPT's) or 512,
	                        * at most udp_adv once dnsmsg_query_cap_udp ran */
	uint16_t udp_adv;      /* payload size our OPT advertises to it:
	                        * DNS_EDNS_UDP, or dnsmsg_query_cap_udp's max */
	int do_bit;            /* DNSSEC OK from the OPT record */
	int cd_bit;            /* Checking Disabled from the header */
};

/* What an upstream answer says, as needed to cache and age it. */
struct dnsmsg_answer_info {
	int rcode;
	int tc;
	int negative;          /* NXDOMAIN, or NOERROR with no answer records */
	int cacheable;         /* 0: SERVFAIL, TC, negative without SOA, too many RRs, other rcodes than NOERROR/NXDOMAIN */
	uint32_t ttl;          /* cache lifetime in seconds: min TTL of all RRs but OPT, or RFC 2308 min(SOA TTL, SOA MINIMUM) when negative */
	size_t n_ttl;          /* number of TTL fields below */
	uint16_t ttl_off[DNSMSG_MAX_RRS]; /* byte offsets of the TTL field of every RR except OPT */
	int has_opt;           /* the answer carries an OPT record */
	int has_keepalive;     /* its OPT has an edns-tcp-keepalive option with a timeout */
	uint32_t keepalive_ms; /* that timeout (the option counts 100 ms units) */
};

/* Header accessors; the caller has checked len >= DNS_HDR_LEN. */
uint16_t dnsmsg_get_id(const uint8_t *msg);
void dnsmsg_set_id(uint8_t *msg, uint16_t id);
uint16_t dnsmsg_get_flags(const uint8_t *msg);

/* Parse a client query.
 * Returns 0 when it is a well-formed standard query with one question;
 * DNS_RCODE_FORMERR, DNS_RCODE_NOTIMP or DNS_RCODE_BADVERS (> 0) when an
 * error answer should be sent (q->has_question says whether it can echo
 * the question). RFC 6891 6.1.1: two OPT records, an OPT record in the
 * answer or authority section or not owned by the root are FORMERR (and
 * q->edns is 0 then); 6.1.3: an OPT record of a version other than 0 is
 * BADVERS, with q->edns and q->do_bit set so that the answer carries an
 * OPT record of our version. Unknown EDNS flags and options are ignored.
 * Otherwise
 * DNSMSG_EMALFORMED when no answer is possible (shorter than a header, QR
 * set) and the packet must be dropped and counted. *q is filled as far as
 * parsing got: every field is set (0 where parsing did not get to it), but
 * of q->q.wire only the first q->q.wire_len bytes. */
int dnsmsg_parse_query(const uint8_t *msg, size_t len, struct dnsmsg_query *q);

/* Cap a parsed query's UDP payload size at max (RFC 6891 6.2.5, RFC 9715:
 * whatever the client offers, a UDP answer is at most max bytes) and make
 * max the size our OPT records advertise to it (q->udp_adv). max below
 * DNS_DEFAULT_UDP counts as DNS_DEFAULT_UDP. */
void dnsmsg_query_cap_udp(struct dnsmsg_query *q, uint16_t max);

/* Build an error answer (rcode) to a query into out: the query's ID, opcode
 * and RD, QR set, RA set when the opcode is QUERY; the question echoed as
 * the client spelled it when q->has_question; an OPT record (version 0,
 * payload q->udp_adv, DO echoed) when q->edns, carrying an Extended DNS
 * Error option with ede (RFC 8914) unless ede is EDE_NONE. An rcode above
 * 15 (DNS_RCODE_BADVERS) puts its low 4 bits in the header and the rest in
 * the OPT record, so it needs q->edns (without, DNSMSG_ENOSPC: it has no
 * room). Returns 0 and sets *out_len, or
 * DNSMSG_ENOSPC. */
int dnsmsg_error_reply(const uint8_t *query, size_t query_len,
    const struct dnsmsg_query *q, int rcode, int ede, uint8_t *out,
    size_t cap, size_t *out_len);

/* Build the query dotproxy sends upstream for a parsed client query (which
 * has a question): ID 0 (the pool sets its own), opcode QUERY, RD set, CD
 * and AD as the client's (RFC 6840 5.7), the question in lowercase wire form (q->q.wire), and
 * one OPT record: payload DNS_EDNS_UDP, DO as the client's, an empty
 * edns-tcp-keepalive option (RFC 7828) and a padding option (RFC 7830)
 * that makes the whole message a multiple of DNS_PAD_BLOCK bytes
 * (RFC 8467). Nothing else of the client's message goes upstream: no
 * client subnet (RFC 7871 7.1.2), cookies or other options.
 * Returns 0 and *out_len, or DNSMSG_ENOSPC. */
int dnsmsg_upstream_query(const struct dnsmsg_query *q, uint8_t *out,
    size_t cap, size_t *out_len);

/* Remove every OPT record from a message that dnsmsg_parse_answer has
 * accepted into info, in place: ARCOUNT is lowered, the bytes after it
 * move down and info->ttl_off is corrected to match. Each client gets its
 * own OPT (dnsmsg_append_opt), but the Extended DNS Error options of the
 * first OPT (RFC 8914: code and EXTRA-TEXT as sent) are kept: when there
 * are any, they end the message in an OPT record of their own (payload 0,
 * TTL 0, those options only), its last record, which dnsmsg_append_opt
 * makes the client's. The message never grows.
 * Returns the new length. */
size_t dnsmsg_strip_opt(uint8_t *msg, size_t len,
    struct dnsmsg_answer_info *info);

/* Give a message the OPT record of the client whose query is q. When
 * q->edns, that is an OPT record of version 0 with payload q->udp_adv, DO
 * as q->do_bit and no other flag (RFC 6891 6.1.4), the Extended DNS Error
 * options of the OPT record that ended the message (dnsmsg_strip_opt's),
 * which it replaces, and one with ede unless ede is EDE_NONE; ARCOUNT is
 * raised when there was none. Without q->edns, an OPT record ending the
 * message is cut off and nothing is added. Trailing bytes after the
 * records are dropped. Returns 0 and *out_len; DNSMSG_ENOSPC when it does
 * not fit in cap (msg unchanged); DNSMSG_EMALFORMED when the records do
 * not parse or an OPT record is not the last one. */
int dnsmsg_append_opt(uint8_t *msg, size_t len, size_t cap,
    const struct dnsmsg_query *q, int ede, size_t *out_len);

/* Set every listed TTL field to min(max(ttl, lo), hi), in place. */
void dnsmsg_clamp_ttls(uint8_t *msg, size_t len, const uint16_t *offs,
    size_t n_offs, uint32_t lo, uint32_t hi);

/* Set every listed TTL field to ttl, in place (stale answers, RFC 8767). */
void dnsmsg_set_ttls(uint8_t *msg, size_t len, const uint16_t *offs,
    size_t n_offs, uint32_t ttl);

/* Parse and check an upstream answer: QR set, QDCOUNT 1, its question equal
 * to expect (name case-insensitively, type, class), every record inside the
 * message. Fills *info (TTL offsets, cache lifetime, negative, cacheable).
 * A CNAME in the answer section owned by a name below the owner of a DNAME
 * before it in that section is the DNAME's synthesised CNAME (RFC 6672
 * 3.3): it counts with the DNAME's TTL in the lifetime, whatever its own
 * (some upstreams send it with TTL 0).
 * Returns 0, DNSMSG_EMALFORMED, or DNSMSG_EMISMATCH. */
int dnsmsg_parse_answer(const uint8_t *msg, size_t len,
    const struct dnsmsg_question *expect, struct dnsmsg_answer_info *info);

/* Make a stored answer the reply to one client's query, in place: set the
 * client's ID and write the client's question bytes query[12, q->q.end)
 * over the answer's (same length, as it matched case-insensitively; the
 * caller guarantees this by having checked with dnsmsg_parse_answer).
 * Also copies the client's RD and CD bits into the header, clears AA (we
 * are not authoritative, RFC 1035 4.1.1, whatever the upstream said),
 * sets RA (the answer is to a QUERY, which we recurse for), and clears AD
 * unless the client set AD or DO (RFC 6840 5.8): the upstream's AD is
 * passed through only to a client that asked for it. */
void dnsmsg_personalize(uint8_t *answer, size_t answer_len,
    const uint8_t *query, const struct dnsmsg_query *q);

/* dnsmsg_personalize, then dnsmsg_append_opt on the result, in one call
 * and with the same effect, for the hot path (a cache hit): the question
 * it writes is the client's, which dnsmsg_parse_query has checked, so the
 * records are found from q->q.end without walking the question again. q
 * must be dnsmsg_parse_query's result for query (as for
 * dnsmsg_personalize). *len is the answer's length in and, when 0 is
 * returned, its new length out. The errors are dnsmsg_append_opt's; the
 * answer is then personalized but otherwise as it was, and *len is
 * unchanged. */
int dnsmsg_personalize_opt(uint8_t *answer, size_t *len, size_t cap,
    const uint8_t *query, const struct dnsmsg_query *q, int ede);

/* Lower every TTL field listed in offs by age seconds (not below 0), in
 * place. Offsets beyond len are ignored. */
void dnsmsg_age_ttls(uint8_t *msg, size_t len, const uint16_t *offs,
    size_t n_offs, uint32_t age);

/* Cut an answer that does not fit a UDP client in place: keep the header
 * and the question, set TC, zero ANCOUNT, NSCOUNT and ARCOUNT. Returns the
 * new length (the question's end), or 0 if the question cannot be found. */
size_t dnsmsg_truncate(uint8_t *msg, size_t len);

/* Write the question's name in presentation form (lowercase, "." for the
 * root, trailing dot) into buf for logging. Never fails: an unprintable
 * name is written as "?". */
void dnsmsg_name_str(const struct dnsmsg_question *q, char *buf, size_t cap);

#endif
