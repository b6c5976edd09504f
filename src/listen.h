/* listen.h: the client side: UDP and TCP listeners on every listen address.
 *
 * UDP: one socket per address; each datagram is one query, answered from
 * the same socket (truncated with TC when larger than the client allows).
 * TCP (RFC 7766): 2-byte length framing, many queries per connection,
 * answered as they become ready (out of order), an idle timeout, and a cap
 * on connections at which the least recently active idle one is closed to
 * admit a new one.
 *
 * A struct listen belongs to one loop and is used on that loop's thread
 * only. Several (one per worker loop) can serve the same addresses: with
 * SO_REUSEPORT sockets of their own, or duplicates of one socket handed
 * over by systemd.
 */
#ifndef DOTPROXY_LISTEN_H
#define DOTPROXY_LISTEN_H

#include <stddef.h>
#include <uv.h>

#include "conf.h"
#include "metrics.h"
#include "query.h"
#include "sysd.h"

struct listen;

/* Bind UDP and TCP on every conf->listen address and start serving into
 * qctx on loop, as one of workers listeners on the same addresses (1: the
 * only one). Each holds 1/workers of the process-wide bounds (queued TCP
 * and UDP answers, tcp-max-clients, the open-file limit's share for
 * client connections). With workers > 1 ("reuseport" below), each socket
 * is bound with SO_REUSEPORT, so that
 * listen_start can be called once per worker loop for the same addresses:
 * every call gets sockets of its own and the kernel spreads clients over
 * them (every socket on an address must have it: one bound without it,
 * ours or another program's, makes the bind fail). The flag holds for
 * the addresses listen_update binds later too. Without it, a second
 * listener on an address fails ("address already in use").
 * An address and type for which fds holds a socket handed over by
 * systemd uses a duplicate of that socket (sysd_fds_dup) instead of
 * binding, with or without reuseport, so that listeners on several loops
 * can each call this with the same fds and serve the one socket; the
 * originals stay in fds until sysd_fds_close. fds may be NULL. With
 * log_addrs, the addresses are logged as they are bound ("listening on")
 * and, by listen_update, closed: one of the workers' listeners is given
 * it, so that each address is logged once. Returns 0
 * and *out, or -1 with "listen ADDR: reason" in err (and nothing left
 * open, the duplicates included). conf and qctx must outlive the
 * listeners. */
int listen_start(uv_loop_t *loop, const struct conf *conf,
    struct sysd_fds *fds, unsigned workers, int log_addrs,
    struct query_ctx *qctx, struct metrics *m, struct listen **out,
    char *err, size_t errlen);

/* Serve conf's listen addresses from now on (a reload): addresses still
 * listed keep their sockets (no query is lost), new ones are bound (with
 * SO_REUSEPORT when listen_start was given reuseport), and sockets of
 * addresses no longer listed close (their pending answers are still
 * sent). conf replaces the old one for every setting. Returns 0, or -1
 * with "listen ADDR: reason" in err when a new address cannot be bound:
 * then nothing changed. */
int listen_update(struct listen *l, const struct conf *conf, char *err,
    size_t errlen);

/* Draining: stop reading UDP, close the TCP listening sockets, stop
 * reading client connections, and close each as soon as its pending
 * answers are sent. Pending UDP answers are still sent. */
void listen_quiesce(struct listen *l);

/* Client TCP connections open now (a gauge for the metrics). */
unsigned listen_tcp_connections(const struct listen *l);

/* Stop accepting and reading, close every client connection. Answers still
 * pending for closed connections are dropped and counted. Memory goes once
 * the loop has run the close callbacks; l is invalid after this call. */
void listen_close(struct listen *l);

#endif
