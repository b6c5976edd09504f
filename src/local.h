/* local.h: names answered by dotproxy itself, never sent upstream.
 *
 * RFC 6761 special-use names (localhost., invalid., and onion. from RFC
 * 7686) and the RFC 6303 locally served reverse zones (RFC 1918 and other
 * private, loopback, link-local and documentation ranges, IPv4 and IPv6).
 * A query for them must not leak to a public resolver: it says what the
 * host is doing, and no upstream can give a useful answer.
 *
 * Also the CHAOS and Hesiod classes (version.bind, id.server, ...), which
 * ask about this server and are answered from its configuration.
 */
#ifndef DOTPROXY_LOCAL_H
#define DOTPROXY_LOCAL_H

#include <stddef.h>
#include <stdint.h>

#include "dnsmsg.h"

/* If q's name is local, build the answer into out (cap bytes): the
 * client's ID and question as spelled, QR, AA and RA set, RD copied;
 * localhost. and names below it: A 127.0.0.1, AAAA ::1, other types NODATA
 * with the zone's SOA; invalid. and onion. and the RFC 6303 zones:
 * NXDOMAIN with the zone's SOA for names below the apex, the SOA itself
 * (or NODATA with SOA for other types) at the apex. An OPT record is
 * appended when the client sent EDNS. Returns 1 with *out_len set, 0 when
 * the name is not local (nothing written), or DNSMSG_ENOSPC. A local
 * name asked in a class other than IN or ANY gets REFUSED: it still does
 * not leave the host. CD is copied with RD (RFC 4035 3.1.6). */
int local_answer(const uint8_t *query, size_t query_len,
    const struct dnsmsg_query *q, uint8_t *out, size_t cap, size_t *out_len);

/* If q is in class CH (3) or HS (4), build the answer into out (cap
 * bytes) and return 1 with *out_len set: such a query is never forwarded.
 * version.bind and version.server in CH TXT (or ANY) get one TXT record
 * with version, hostname.bind and id.server one with identity (TTL 0, AA
 * set); when that string is NULL or empty, and for every other CH or HS
 * question, the answer is REFUSED. The client's ID, question as spelled,
 * RD and CD are echoed, QR and RA set, and an OPT record appended when the
 * client sent EDNS. Returns 0 for other classes (nothing written), or
 * DNSMSG_ENOSPC (nothing written). Called whether local-zones is on or
 * not. */
int local_chaos_answer(const uint8_t *query, size_t query_len,
    const struct dnsmsg_query *q, const char *identity, const char *version,
    uint8_t *out, size_t cap, size_t *out_len);

#endif
