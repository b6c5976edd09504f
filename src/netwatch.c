/* netwatch.c: link, address and route changes from rtnetlink, on the loop.
 *
 * One non-blocking NETLINK_ROUTE socket bound to the multicast groups
 * RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR, RTMGRP_IPV4_ROUTE
 * and RTMGRP_IPV6_ROUTE, watched by a uv_poll_t. Each readable callback
 * drains at most READ_BURST datagrams (the poll is level-triggered, so
 * the rest come on the next turn and a flood cannot hold the loop), counts
 * the messages by kind and arms the debounce timer if it is not running.
 * The timer hands the counts to the callback and clears them: one callback
 * per debounce window at most, never one per message.
 *
 * Only messages from the kernel (sender port 0) count: another process
 * could otherwise make us reset back-off at will. ENOBUFS (the socket
 * buffer overflowed, messages were lost) counts as a change of unknown
 * kind. Any other read error is logged once and the watch stops; DNS does
 * not depend on it.
 *
 * Memory: two handles (poll, timer) and the fd, freed in the close
 * callback of the last handle; the receive buffer is in the struct.
 */
#include <errno.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "mem.h"
#include "netwatch.h"

#define READ_BURST 64
#define NL_BUF 16384

struct netwatch {
	uv_loop_t *loop;
	int fd;
	uv_poll_t poll;
	uv_timer_t timer;
	unsigned handles;           /* open handles; freed at 0 */
	unsigned debounce_ms;
	int closing;
	netwatch_cb cb;
	void *arg;
	struct netwatch_events ev;  /* since the timer was armed */
	/* Netlink messages are 4-byte aligned within the datagram. */
	union {
		struct nlmsghdr align;
		char bytes[NL_BUF];
	} buf;
};

static void
netwatch_handle_close_cb(uv_handle_t *h)
{
	struct netwatch *w = h->data;

	if (--w->handles > 0)
		return;
	close(w->fd);
	mem_free(w);
}

static void
netwatch_timer_cb(uv_timer_t *t)
{
	struct netwatch *w = t->data;
	struct netwatch_events ev = w->ev;

	memset(&w->ev, 0, sizeof(w->ev));
	if (!w->closing)
		w->cb(w->arg, &ev);
}

/* Count the messages of one datagram of len bytes. */
static void
netwatch_count(struct netwatch *w, size_t len)
{
	struct nlmsghdr *nh = &w->buf.align;
	int left = (int)len;

	for (; NLMSG_OK(nh, left); nh = NLMSG_NEXT(nh, left)) {
		switch (nh->nlmsg_type) {
		case RTM_NEWLINK:
		case RTM_DELLINK:
			w->ev.links++;
			break;
		case RTM_NEWADDR:
		case RTM_DELADDR:
			w->ev.addrs++;
			break;
		case RTM_NEWROUTE:
		case RTM_DELROUTE:
			w->ev.routes++;
			break;
		default:
			break;
		}
	}
}

static void
netwatch_poll_cb(uv_poll_t *h, int status, int events)
{
	struct netwatch *w = h->data;
	struct sockaddr_nl from;
	socklen_t flen;
	ssize_t n;
	int i, seen = 0;

	(void)events;
	if (status < 0) {
		log_warn("netwatch: poll: %s; no longer watching",
		    uv_strerror(status));
		goto stop;
	}
	for (i = 0; i < READ_BURST; i++) {
		flen = sizeof(from);
		n = recvfrom(w->fd, w->buf.bytes, sizeof(w->buf.bytes),
		    MSG_DONTWAIT | MSG_TRUNC, (struct sockaddr *)&from, &flen);
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			if (errno == EINTR)
				continue;
			if (errno == ENOBUFS) {
				w->ev.lost = 1;
				seen = 1;
				continue;
			}
			log_warn("netwatch: recv: %s; no longer watching",
			    strerror(errno));
			goto stop;
		}
		if (flen != sizeof(from) || from.nl_family != AF_NETLINK ||
		    from.nl_pid != 0)
			continue;   /* not from the kernel */
		if ((size_t)n > sizeof(w->buf.bytes)) {
			/* Truncated: the part we have still counts. */
			w->ev.lost = 1;
			n = sizeof(w->buf.bytes);
		}
		netwatch_count(w, (size_t)n);
		seen = 1;
	}
	if (seen && !uv_is_active((uv_handle_t *)&w->timer))
		uv_timer_start(&w->timer, netwatch_timer_cb, w->debounce_ms,
		    0);
	return;

stop:
	uv_poll_stop(&w->poll);
}

int
netwatch_new(uv_loop_t *loop, unsigned debounce_ms, netwatch_cb cb,
    void *arg, struct netwatch **out)
{
	struct sockaddr_nl sa;
	struct netwatch *w;
	int fd, rc;

	*out = NULL;
	w = mem_calloc(1, sizeof(*w));
	if (w == NULL)
		return -ENOMEM;
	fd = socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    NETLINK_ROUTE);
	if (fd < 0) {
		rc = -errno;
		goto fail;
	}
	memset(&sa, 0, sizeof(sa));
	sa.nl_family = AF_NETLINK;
	sa.nl_groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR |
	    RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		rc = -errno;
		goto fail;
	}
	rc = uv_poll_init(loop, &w->poll, fd);
	if (rc != 0)
		goto fail;
	w->loop = loop;
	w->fd = fd;
	w->debounce_ms = debounce_ms;
	w->cb = cb;
	w->arg = arg;
	w->poll.data = w;
	w->handles = 1;
	uv_timer_init(loop, &w->timer);
	w->timer.data = w;
	w->handles++;
	rc = uv_poll_start(&w->poll, UV_READABLE, netwatch_poll_cb);
	if (rc != 0) {
		/* The handles own fd and w now: they go with close_cb. */
		netwatch_close(w);
		return rc;
	}
	*out = w;
	return 0;

fail:
	if (fd >= 0)
		close(fd);
	mem_free(w);
	return rc;
}

void
netwatch_close(struct netwatch *w)
{
	if (w == NULL || w->closing)
		return;
	w->closing = 1;
	uv_close((uv_handle_t *)&w->poll, netwatch_handle_close_cb);
	uv_close((uv_handle_t *)&w->timer, netwatch_handle_close_cb);
}
