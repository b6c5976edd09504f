/* netwatch.h: notice changes of the host's links, addresses and routes.
 *
 * A NETLINK_ROUTE socket subscribed to link, IPv4/IPv6 address and
 * IPv4/IPv6 route events, read on the libuv loop. Events are debounced:
 * the first one arms a timer of debounce_ms, and when it fires the callback
 * runs once for everything that arrived meanwhile (a new address brings a
 * burst of address and route messages; a flapping link must not turn into
 * a storm of callbacks). What changed is not interpreted: it is a hint that
 * what failed before may work now (dotproxy resets upstream back-off).
 */
#ifndef DOTPROXY_NETWATCH_H
#define DOTPROXY_NETWATCH_H

#include <uv.h>

/* What a debounce window saw, by kind. lost is set when the kernel dropped
 * messages (ENOBUFS): something changed, we do not know what. */
struct netwatch_events {
	unsigned links, addrs, routes;
	int lost;
};

typedef void (*netwatch_cb)(void *arg, const struct netwatch_events *ev);

struct netwatch;

/* Open the netlink socket and start watching on loop. cb is called on the
 * loop, at most once per debounce_ms, with arg. Returns 0 and *out, or a
 * negative errno (socket or bind refused, e.g. by a sandbox; -ENOMEM),
 * with nothing left open and no callback to come. */
int netwatch_new(uv_loop_t *loop, unsigned debounce_ms, netwatch_cb cb,
    void *arg, struct netwatch **out);

/* Stop: no callback from now on. The socket and memory go once libuv has
 * closed the handles; w is invalid after the call. NULL is accepted. */
void netwatch_close(struct netwatch *w);

#endif
