/* acl.h: access control: which clients are answered, refused or ignored.
 *
 * The rules are part of the configuration (struct conf_acl in conf.h, one
 * per access-control line); this module parses and prints a rule for
 * conf.c and matches a client address against the rules for query.c.
 *
 * Matching: the most specific prefix that contains the address wins; at
 * equal length a configured rule beats a default one. Beneath the
 * configured rules lie these defaults, always:
 *
 *   allow   127.0.0.0/8, ::1            loopback
 *           10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16   RFC 1918
 *           100.64.0.0/10               RFC 6598 (shared address space)
 *           169.254.0.0/16, fe80::/10   link-local
 *           fc00::/7                    ULA (RFC 4193)
 *   refuse  0.0.0.0/0, ::/0             everything else
 *
 * so a node-local cache listening on a public address by mistake is not
 * an open resolver, and a rule for the same prefix ("access-control
 * 127.0.0.0/8 refuse", "access-control 0.0.0.0/0 allow") overrides a
 * default. Addresses are compared in the IPv6 space with IPv4 as
 * ::ffff:a.b.c.d, so an IPv4-mapped client (a dual-stack socket) matches
 * the IPv4 rules.
 */
#ifndef DOTPROXY_ACL_H
#define DOTPROXY_ACL_H

#include <stddef.h>
#include <sys/socket.h>

#include "conf.h"

/* The 16-byte form of a client address: IPv6 as is, IPv4 as ::ffff:a.b.c.d.
 * Returns 0, or -1 (out untouched) for a family other than AF_INET and
 * AF_INET6. */
int acl_addr16(const struct sockaddr *sa, unsigned char out[16]);

/* What the rules of c (and the defaults beneath them) say for addr, a
 * 16-byte address from acl_addr16. Linear in the number of rules; no
 * allocation. */
enum conf_acl_action acl_match(const struct conf *c,
    const unsigned char addr[16]);

/* Parse "CIDR ACTION" (an access-control line's value): an IPv4 or IPv6
 * address with an optional /length (a host when absent), whose bits past
 * the length must be zero, then allow, refuse or deny. Returns 0 with *r
 * set, or -1 with a message in err (without a place prefix). */
int acl_rule_parse(const char *value, struct conf_acl *r, char *err,
    size_t errlen);

/* Write r as acl_rule_parse reads it ("10.0.0.0/8 allow"; a prefix in
 * ::ffff:0:0/96 as IPv4) into buf, which should hold 64 bytes. */
void acl_rule_str(const struct conf_acl *r, char *buf, size_t cap);

/* The name of an action: "allow", "refuse" or "deny". */
const char *acl_action_name(enum conf_acl_action a);

#endif
