/* listen.c: UDP and TCP listeners, the client side of dotproxy.
 *
 * Every message read is handed to query_handle(). A pending answer comes
 * back through a done callback and is sent on its own. An answer that is
 * ready at once (cache hit, local name, refusal, error) is sent before
 * the read callback returns over TCP (from the shared out buffer), and
 * over UDP when the read batch it came in ends: libuv reads up to
 * UDP_SLOTS datagrams with one recvmmsg, query_handle writes each
 * answer straight into the socket's arena (a slot per datagram of the
 * batch, preallocated), and the batch leaves with one sendmmsg. What the
 * socket does not take then goes through the same bounded send queue as
 * a single answer that finds the socket full. So a UDP hit allocates
 * nothing, and the client's address travels inside a pending query as
 * its origin bytes. A TCP connection is freed only when its handles are
 * closed and no query still points at it (pending), so an answer for a
 * client that left is dropped and counted, never sent to freed memory.
 *
 * TCP connections sit on a list in order of last activity (head = least
 * recently active), which gives both the idle sweep and the victim when the
 * connection cap is reached: the least recently active connection with no
 * query in flight.
 *
 * A struct listen belongs to one loop. With workers, one per worker loop
 * serves the same addresses: each with sockets of its own bound with
 * SO_REUSEPORT (made here, since libuv 1.44 cannot), or each with its own
 * duplicate of a socket systemd handed over.
 */
/* sendmmsg(2) and struct mmsghdr are GNU extensions. */
#define _GNU_SOURCE

#include <sys/resource.h>
#include <sys/socket.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dnsmsg.h"
#include "listen.h"
#include "log.h"
#include "mem.h"
#include "sysd.h"

/* libuv splits a recvmmsg buffer into 64 KiB datagram slots: UDP_SLOTS
 * datagrams a read batch, and as many answers a send batch. */
#define UDP_SLOT 65536
#define UDP_SLOTS 8
#define TCP_FRAME_MAX (2 + DNS_MAX_MSG)
#define TCP_RBUF_MIN 4096
#define TCP_RBUF_MAX (TCP_FRAME_MAX + 4096)
/* Queries in flight per TCP connection before we stop reading from it:
 * a client that pipelines without bound gets back-pressure, not memory. */
#define TCP_MAX_PENDING 256
/* Bytes of answers queued to a client that does not read: then we close. */
#define TCP_MAX_WRITE_QUEUE (1u << 20)
/* Bytes of answers queued to every TCP client together: beyond it the
 * connection with the most unread answers is closed. Without it, 256
 * clients that never read would hold 256 MiB. */
#define TCP_MAX_WRITE_TOTAL (16u << 20)
/* Bytes of UDP answers (with their request) waiting for room in the
 * socket buffers, for all UDP sockets of a listener together: beyond it
 * an answer is dropped and counted (UDP is lossy; the client retries). */
#define UDP_MAX_SEND_QUEUE (4u << 20)
#define TCP_BACKLOG 256
/* The answers one TCP read produces at once go out in one write: a
 * pipelining client sends many queries per segment. Room for one more
 * answer of any size is kept, so query_handle writes straight into it. */
#define TCP_BATCH_ROOM (2 + DNS_MAX_MSG)
#define TCP_BATCH_CAP (2 * TCP_BATCH_ROOM)
/* A connection that has not sent its first query is not evicted for a
 * newcomer until it has had this long to send it. */
#define TCP_FRESH_MS 1000
/* Descriptors kept out of the client connections' share of the
 * RLIMIT_NOFILE limit: the loop, logs, HTTP, listeners and upstreams. */
#define FD_RESERVE_FIXED 64
#define FD_RESERVE_PER_UPSTREAM 4

struct listen;

/* A UDP socket lives until its handle is closed and no pending query
 * still names it as the socket to answer from (a reload may close it
 * while misses are in flight). */
struct udp_sock {
	uv_udp_t handle;
	struct listen *l;
	unsigned pending;
	int closing;
	int handle_closed;
	/* Answers ready at once during a read batch, sent with one sendmmsg
	 * when it ends. Answer i is written by query_handle into arena slot
	 * i (DNS_MAX_MSG bytes, what query_handle may write), its client's
	 * address into peer[i] (which is also the origin a pending query
	 * keeps); msg[i] points at both from the start. */
	unsigned n_out;
	uint8_t *arena;
	struct mmsghdr msg[UDP_SLOTS];
	struct iovec iov[UDP_SLOTS];
	struct sockaddr_storage peer[UDP_SLOTS];
};

struct tcp_sock {
	uv_tcp_t handle;
	struct listen *l;
};

struct tcp_conn {
	uv_tcp_t handle;
	uv_timer_t idle;
	struct listen *l;
	struct tcp_conn *prev, *next; /* activity list */
	uint8_t *rbuf;
	size_t rlen, rcap;
	struct sockaddr_storage peer; /* the client, for logs */
	unsigned pending;    /* queries whose done_cb has not come yet */
	size_t queued;       /* bytes of write_req not yet freed */
	unsigned open_handles;
	uint64_t accepted_ms;
	int got_query;       /* a first query was read: no longer fresh */
	int closing;
	int reading;
	int quiesced;        /* draining or the client's EOF: no more
	                      * reading, close when answered */
	int shutting_down;   /* uv_shutdown under way: then we close */
	uv_shutdown_t shutdown_req;
};

struct send_req {
	uv_udp_send_t req;
	size_t len;
	uint8_t data[];
};

struct write_req {
	uv_write_t req;
	size_t len;
	uint8_t data[];
};

/* One listen address: its UDP and TCP sockets. */
struct lslot {
	struct conf_addr addr;
	struct udp_sock *udp;
	struct tcp_sock *tcp;
};

struct listen {
	uv_loop_t *loop;
	const struct conf *conf;
	struct query_ctx *qctx;
	struct metrics *m;
	struct lslot slot[CONF_MAX_LISTEN];
	size_t n_slots;
	struct tcp_conn *head, *tail; /* activity list */
	unsigned n_conns;
	unsigned max_conns;    /* tcp-max-clients, clamped to the fd limit */
	uint64_t emfile_logged_ms;
	unsigned open_handles; /* listening sockets not yet freed */
	int reuseport;         /* bind every address with SO_REUSEPORT */
	unsigned workers;      /* listeners sharing the addresses: each holds
	                        * 1/workers of the process-wide bounds */
	int log_addrs;         /* log addresses bound and closed: one of the
	                        * workers' listeners does, so each shows once */
	int closing;
	int quiesced;          /* draining: reading and accepting stopped */
	uint64_t drop_logged_ms; /* last drop logged: at most one a second */
	size_t udp_queued;     /* bytes of send_req in flight, all UDP sockets */
	size_t tcp_queued;     /* bytes of write_req not yet freed, all conns */
	uint8_t *udp_buf;      /* UDP_SLOTS * UDP_SLOT, reused for every batch */
	uint8_t *tcp_batch;           /* TCP_BATCH_CAP: one read's answers,
	                               * framed, written together */
};

static void listen_maybe_free(struct listen *l);
static void conn_close(struct tcp_conn *c);

/* A dropped message is counted always and logged at most once a second,
 * so that a flood of garbage cannot become a flood of log lines. */
static void
log_drop(struct listen *l, const struct sockaddr *peer, const char *proto)
{
	char who[64];
	uint64_t now = uv_now(l->loop);

	if (l->drop_logged_ms != 0 && now - l->drop_logged_ms < 1000)
		return;
	l->drop_logged_ms = now;
	log_addr_str(peer, who, sizeof(who));
	log_warn("dropped an unanswerable %s message from %s "
	    "(%llu malformed dropped so far; logged at most once a second)",
	    proto, who, (unsigned long long)l->m->drops_malformed);
}

/* ---- UDP ---- */

static void
udp_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct udp_sock *u = h->data;

	(void)suggested;
	buf->base = (char *)u->l->udp_buf;
	buf->len = UDP_SLOTS * UDP_SLOT;
}

static void
udp_send_cb(uv_udp_send_t *req, int status)
{
	struct send_req *sr = (struct send_req *)req;
	struct udp_sock *u = req->handle->data;

	if (status != 0 && status != UV_ECANCELED)
		u->l->m->drops_send_failed++;
	u->l->udp_queued -= sizeof(*sr) + sr->len;
	mem_free(sr);
}

/* The socket buffer is full: queue a copy, within the bound, for libuv to
 * send when there is room. */
static void
udp_queue(struct udp_sock *u, const struct sockaddr *to, const uint8_t *msg,
    size_t len)
{
	uv_buf_t buf;
	struct send_req *sr;
	int rc;

	if (u->l->udp_queued + sizeof(*sr) + len >
	    UDP_MAX_SEND_QUEUE / u->l->workers) {
		u->l->m->drops_send_queue_full++;
		return;
	}
	sr = mem_alloc(sizeof(*sr) + len);
	if (sr == NULL) {
		rc = UV_ENOMEM;
		goto fail;
	}
	sr->len = len;
	memcpy(sr->data, msg, len);
	buf = uv_buf_init((char *)sr->data, (unsigned)len);
	rc = uv_udp_send(&sr->req, &u->handle, &buf, 1, to, udp_send_cb);
	if (rc != 0) {
		mem_free(sr);
		goto fail;
	}
	u->l->udp_queued += sizeof(*sr) + len;
	return;

fail:
	u->l->m->drops_send_failed++;
	log_debug("udp send: %s", uv_strerror(rc));
}

/* One answer now: straight to the socket when it takes it, else queued.
 * (libuv's try_send says EAGAIN while answers are queued, so they leave
 * in order.) */
static void
udp_send(struct udp_sock *u, const struct sockaddr *to, const uint8_t *msg,
    size_t len)
{
	uv_buf_t buf = uv_buf_init((char *)msg, (unsigned)len);
	int rc;

	rc = uv_udp_try_send(&u->handle, &buf, 1, to);
	if (rc >= 0)
		return;
	if (rc == UV_EAGAIN) {
		udp_queue(u, to, msg, len);
		return;
	}
	u->l->m->drops_send_failed++;
	log_debug("udp send: %s", uv_strerror(rc));
}

/* Send the batch: one sendmmsg for all of it. What the socket does not
 * take (EAGAIN, ENOBUFS) is queued as udp_send would queue it; a
 * datagram the kernel refuses (sendmmsg fails on it first) is counted
 * and skipped, and the rest still go. With answers queued already the
 * batch goes behind them, as through udp_send. */
static void
udp_flush(struct udp_sock *u)
{
	unsigned i = 0, n = u->n_out;
	uv_os_fd_t fd;
	int sent;

	if (n == 0)
		return;
	u->n_out = 0;
	/* No descriptor: the handle was closed under a read batch. Nothing
	 * can be sent (nor queued: libuv would bind a new socket for it). */
	if (uv_fileno((const uv_handle_t *)&u->handle, &fd) != 0) {
		u->l->m->drops_send_failed += n;
		return;
	}
	if (uv_udp_get_send_queue_count(&u->handle) != 0)
		goto queue;
	while (i < n) {
		sent = sendmmsg(fd, u->msg + i, n - i, 0);
		if (sent > 0) {
			i += (unsigned)sent;
			continue;
		}
		if (sent < 0 && errno == EINTR)
			continue;
		if (sent == 0 || errno == EAGAIN || errno == EWOULDBLOCK ||
		    errno == ENOBUFS)
			break;
		u->l->m->drops_send_failed++;
		log_debug("udp send: %s",
		    uv_strerror(uv_translate_sys_error(errno)));
		i++;
	}

queue:
	for (; i < n; i++)
		udp_queue(u, (const struct sockaddr *)&u->peer[i],
		    u->arena + (size_t)i * DNS_MAX_MSG, u->iov[i].iov_len);
}

static void udp_sock_maybe_free(struct udp_sock *u);

static void
udp_done_cb(void *arg, const void *origin, const uint8_t *msg, size_t len)
{
	struct udp_sock *u = arg;
	struct sockaddr_storage to;

	u->pending--;
	if (u->closing) {
		/* The socket waits for its last pending query to go. */
		if (msg != NULL)
			u->l->m->drops_client_gone++;
		udp_sock_maybe_free(u);
		return;
	}
	if (msg == NULL)
		return;
	memcpy(&to, origin, sizeof(to));
	udp_send(u, (const struct sockaddr *)&to, msg, len);
}

/* libuv reads with recvmmsg: one callback per datagram (flagged
 * UV_UDP_MMSG_CHUNK), then one with UV_UDP_MMSG_FREE and no address when
 * the batch is done; a callback with neither flag is a read on its own
 * (no recvmmsg), nothing read, or an error. Answers ready at once go into
 * the send batch, which leaves when the read batch ends (or is full). */
static void
udp_recv_cb(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf,
    const struct sockaddr *addr, unsigned flags)
{
	struct udp_sock *u = h->data;
	struct listen *l = u->l;
	struct sockaddr_storage *peer;
	unsigned i = u->n_out;
	size_t out_len = 0;

	if (nread < 0) {
		log_debug("udp recv: %s", uv_strerror((int)nread));
		goto end;
	}
	if (addr == NULL)
		goto end;
	l->m->queries_udp++;
	if (flags & UV_UDP_PARTIAL) {
		l->m->drops_malformed++;
		log_drop(l, addr, "udp");
		goto end;
	}
	peer = &u->peer[i];
	if (addr->sa_family == AF_INET6) {
		memcpy(peer, addr, sizeof(struct sockaddr_in6));
		u->msg[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in6);
	} else {
		memcpy(peer, addr, sizeof(struct sockaddr_in));
		u->msg[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in);
	}
	switch (query_handle(l->qctx, (const uint8_t *)buf->base,
	    (size_t)nread, 1, addr, uv_now(l->loop),
	    u->arena + (size_t)i * DNS_MAX_MSG, &out_len, udp_done_cb, u,
	    peer, sizeof(*peer))) {
	case QUERY_ANSWER:
		u->iov[i].iov_len = out_len;
		u->n_out++;
		break;
	case QUERY_DROP:
		log_drop(l, addr, "udp");
		break;
	case QUERY_PENDING:
		u->pending++;
		break;
	}

end:
	if (!(flags & UV_UDP_MMSG_CHUNK) || u->n_out == UDP_SLOTS)
		udp_flush(u);
}

/* ---- TCP connections ---- */

static void
list_remove(struct listen *l, struct tcp_conn *c)
{
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		l->head = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	else
		l->tail = c->prev;
	c->prev = c->next = NULL;
}

static void
list_append(struct listen *l, struct tcp_conn *c)
{
	c->prev = l->tail;
	c->next = NULL;
	if (l->tail != NULL)
		l->tail->next = c;
	else
		l->head = c;
	l->tail = c;
}

static void
conn_touch(struct tcp_conn *c)
{
	struct listen *l = c->l;

	if (l->tail != c) {
		list_remove(l, c);
		list_append(l, c);
	}
	uv_timer_again(&c->idle);
}

static void
conn_maybe_free(struct tcp_conn *c)
{
	if (!c->closing || c->open_handles != 0 || c->pending != 0)
		return;
	mem_free(c->rbuf);
	mem_free(c);
}

static void
conn_handle_close_cb(uv_handle_t *h)
{
	struct tcp_conn *c = h->data;

	c->open_handles--;
	conn_maybe_free(c);
}

static void
conn_close(struct tcp_conn *c)
{
	if (c->closing)
		return;
	c->closing = 1;
	list_remove(c->l, c);
	c->l->n_conns--;
	uv_close((uv_handle_t *)&c->idle, conn_handle_close_cb);
	uv_close((uv_handle_t *)&c->handle, conn_handle_close_cb);
}

static void
conn_shutdown_cb(uv_shutdown_t *req, int status)
{
	(void)status;
	conn_close(req->data);
}

/* Close once every queued answer has left (a plain close would cancel
 * the writes still queued). */
static void
conn_close_gently(struct tcp_conn *c)
{
	if (c->closing || c->shutting_down)
		return;
	if (c->handle.write_queue_size == 0) {
		conn_close(c);
		return;
	}
	c->shutdown_req.data = c;
	if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->handle,
	    conn_shutdown_cb) == 0)
		c->shutting_down = 1;
	else
		conn_close(c);
}

static void
write_cb(uv_write_t *req, int status)
{
	struct write_req *wr = (struct write_req *)req;
	struct tcp_conn *c = req->handle->data;

	(void)status;
	/* The connection is alive until its close_cb, which comes after
	 * the callbacks of its cancelled writes. */
	c->queued -= sizeof(*wr) + wr->len;
	c->l->tcp_queued -= sizeof(*wr) + wr->len;
	mem_free(wr);
}

/* need more bytes of queued answers would pass the total bound: close the
 * open connection with the most unread answers (a client that does not
 * read), counted. Its memory goes only when libuv cancels its writes, at
 * the end of this loop turn, so until then the bound still refuses.
 * Returns 0 when need fits now. */
static int
evict_slow_reader(struct listen *l, size_t need)
{
	struct tcp_conn *c, *worst = NULL;

	if (l->tcp_queued + need <= TCP_MAX_WRITE_TOTAL / l->workers)
		return 0;
	for (c = l->head; c != NULL; c = c->next)
		if (worst == NULL || c->queued > worst->queued)
			worst = c;
	if (worst != NULL && worst->queued != 0) {
		log_debug("tcp clients hold %zu bytes of unread answers: "
		    "closing the one with %zu", l->tcp_queued, worst->queued);
		l->m->tcp_slow_closed++;
		conn_close(worst);
	}
	return -1;
}

/* Send total bytes of framed answers (bufs, nbufs of them): straight to
 * the socket when it takes them, else a queued copy of what is left. */
static void
conn_write(struct tcp_conn *c, const uv_buf_t *bufs, unsigned nbufs,
    size_t total)
{
	struct write_req *wr;
	size_t done = 0, left, skip, n, at;
	unsigned i;
	uv_buf_t one;
	int rc;

	rc = uv_try_write((uv_stream_t *)&c->handle, bufs, nbufs);
	if (rc >= 0)
		done = (size_t)rc;
	else if (rc != UV_EAGAIN)
		goto fail;
	if (done == total)
		return;
	if (c->handle.write_queue_size > TCP_MAX_WRITE_QUEUE) {
		log_debug("tcp client does not read its answers: closing");
		c->l->m->tcp_slow_closed++;
		goto fail;
	}
	left = total - done;
	if (evict_slow_reader(c->l, sizeof(*wr) + left) != 0) {
		/* Over the total even after an eviction: this connection
		 * cannot take its answer either (unless it was the one). */
		if (c->closing)
			return;
		c->l->m->tcp_slow_closed++;
		goto fail;
	}
	wr = mem_alloc(sizeof(*wr) + left);
	if (wr == NULL)
		goto fail;
	wr->len = left;
	/* What the socket did not take: the bytes past done, in order. */
	for (i = 0, skip = done, at = 0; i < nbufs; i++) {
		n = bufs[i].len;
		if (skip >= n) {
			skip -= n;
			continue;
		}
		memcpy(wr->data + at, bufs[i].base + skip, n - skip);
		at += n - skip;
		skip = 0;
	}
	one = uv_buf_init((char *)wr->data, (unsigned)left);
	if (uv_write(&wr->req, (uv_stream_t *)&c->handle, &one, 1,
	    write_cb) != 0) {
		mem_free(wr);
		goto fail;
	}
	c->queued += sizeof(*wr) + left;
	c->l->tcp_queued += sizeof(*wr) + left;
	return;

fail:
	c->l->m->drops_send_failed++;
	conn_close(c);
}

/* Send one answer with its length prefix. */
static void
conn_send(struct tcp_conn *c, const uint8_t *msg, size_t len)
{
	uint8_t hdr[2] = { (uint8_t)(len >> 8), (uint8_t)len };
	uv_buf_t bufs[2] = {
		uv_buf_init((char *)hdr, 2),
		uv_buf_init((char *)msg, (unsigned)len),
	};

	conn_write(c, bufs, 2, len + 2);
}

static void
conn_flush(struct tcp_conn *c, size_t *blen)
{
	uv_buf_t b = uv_buf_init((char *)c->l->tcp_batch, (unsigned)*blen);

	if (*blen != 0 && !c->closing)
		conn_write(c, &b, 1, *blen);
	*blen = 0;
}

static void conn_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);

static void
conn_read_start(struct tcp_conn *c)
{
	if (!c->reading && !c->closing &&
	    uv_read_start((uv_stream_t *)&c->handle, conn_alloc_cb,
	    conn_read_cb) == 0)
		c->reading = 1;
}

static void
tcp_done_cb(void *arg, const void *origin, const uint8_t *msg, size_t len)
{
	struct tcp_conn *c = arg;

	(void)origin;
	c->pending--;
	if (c->closing) {
		if (msg != NULL)
			c->l->m->drops_client_gone++;
		conn_maybe_free(c);
		return;
	}
	if (msg != NULL)
		conn_send(c, msg, len);
	if (c->quiesced) {
		/* Draining: the answer is queued; libuv writes it before
		 * the close takes effect. */
		if (!c->closing && c->pending == 0)
			conn_close_gently(c);
		return;
	}
	if (!c->closing && c->pending < TCP_MAX_PENDING)
		conn_read_start(c);
}

static void
conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct tcp_conn *c = h->data;
	uint8_t *nb;
	size_t ncap;

	(void)suggested;
	if (c->rcap - c->rlen < TCP_RBUF_MIN && c->rcap < TCP_RBUF_MAX) {
		ncap = c->rcap * 2;
		if (ncap > TCP_RBUF_MAX)
			ncap = TCP_RBUF_MAX;
		nb = mem_realloc(c->rbuf, ncap);
		if (nb != NULL) {
			c->rbuf = nb;
			c->rcap = ncap;
		}
	}
	/* A zero-length buffer makes libuv report UV_ENOBUFS: we close. */
	buf->base = (char *)c->rbuf + c->rlen;
	buf->len = c->rcap - c->rlen;
}

static void
conn_log_drop(struct tcp_conn *c)
{
	log_drop(c->l, (const struct sockaddr *)&c->peer, "tcp");
}

/* Handle every complete frame in the read buffer. The answers ready at
 * once are framed into l->tcp_batch and leave in one write at the end
 * (or when the batch is full). */
static void
conn_frames(struct tcp_conn *c)
{
	struct listen *l = c->l;
	size_t off = 0, flen, out_len, blen = 0;
	enum query_result r;
	uint8_t *out;

	while (!c->closing && c->rlen - off >= 2) {
		flen = (size_t)c->rbuf[off] << 8 | c->rbuf[off + 1];
		if (c->rlen - off < 2 + flen)
			break;
		l->m->queries_tcp++;
		c->got_query = 1;
		out_len = 0;
		if (TCP_BATCH_CAP - blen < TCP_BATCH_ROOM)
			conn_flush(c, &blen);
		out = l->tcp_batch + blen + 2;
		r = query_handle(l->qctx, c->rbuf + off + 2, flen, 0,
		    (const struct sockaddr *)&c->peer, uv_now(l->loop), out,
		    &out_len, tcp_done_cb, c, NULL, 0);
		off += 2 + flen;
		if (r == QUERY_ANSWER) {
			out[-2] = (uint8_t)(out_len >> 8);
			out[-1] = (uint8_t)out_len;
			blen += 2 + out_len;
		} else if (r == QUERY_PENDING) {
			c->pending++;
		} else {
			conn_log_drop(c);
		}
	}
	conn_flush(c, &blen);
	if (off != 0) {
		memmove(c->rbuf, c->rbuf + off, c->rlen - off);
		c->rlen -= off;
	}
}

/* The client shut down its sending side (nc -N, socat): no more queries
 * come, but the ones in flight are still answered (RFC 7766 6.2.4 lets
 * either side close; the client is still reading); then we close. */
static void
conn_eof(struct tcp_conn *c)
{
	uv_read_stop((uv_stream_t *)&c->handle);
	c->reading = 0;
	if (c->pending == 0)
		conn_close_gently(c);
	else
		c->quiesced = 1;
}

static void
conn_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct tcp_conn *c = s->data;

	(void)buf;
	if (nread == UV_EOF) {
		conn_eof(c);
		return;
	}
	if (nread < 0) {
		log_debug("tcp client: %s", uv_strerror((int)nread));
		conn_close(c);
		return;
	}
	if (nread == 0)
		return;
	c->rlen += (size_t)nread;
	conn_touch(c);
	conn_frames(c);
	if (!c->closing && c->pending >= TCP_MAX_PENDING) {
		uv_read_stop(s);
		c->reading = 0;
	}
}

static void
conn_idle_cb(uv_timer_t *t)
{
	struct tcp_conn *c = t->data;

	/* RFC 7766 6.2.3: idle means no query in flight either. */
	if (c->pending != 0) {
		uv_timer_again(t);
		return;
	}
	c->l->m->tcp_idle_closed++;
	conn_close(c);
}

/* At the cap: close the least recently active connection with nothing in
 * flight, unless it is fresh (accepted under TCP_FRESH_MS ago with no
 * query read yet: it gets its chance). Returns 0 when one was closed. */
static int
evict_idle_conn(struct listen *l)
{
	uint64_t now = uv_now(l->loop);
	struct tcp_conn *c;

	for (c = l->head; c != NULL; c = c->next) {
		if (!c->got_query && now - c->accepted_ms < TCP_FRESH_MS)
			continue;
		if (c->pending == 0) {
			l->m->tcp_limit_closed++;
			conn_close(c);
			return 0;
		}
	}
	return -1;
}

static void
reject_close_cb(uv_handle_t *h)
{
	mem_free(h);
}

/* Accept and close at once: the client learns now, not after a timeout. */
static void
reject_conn(struct listen *l, uv_stream_t *server)
{
	uv_tcp_t *t = mem_alloc(sizeof(*t));

	l->m->drops_overload++;
	if (t == NULL)
		return;
	if (uv_tcp_init(l->loop, t) != 0) {
		mem_free(t);
		return;
	}
	(void)uv_accept(server, (uv_stream_t *)t);
	uv_close((uv_handle_t *)t, reject_close_cb);
}

/* Out of descriptors at accept: counted, logged at most once a second,
 * and an idle connection closed so that the next client gets in. */
static void
accept_failed(struct listen *l, int status)
{
	uint64_t now = uv_now(l->loop);
	int evicted;

	l->m->tcp_accept_failed++;
	evicted = evict_idle_conn(l) == 0;
	if (l->emfile_logged_ms != 0 && now - l->emfile_logged_ms < 1000)
		return;
	l->emfile_logged_ms = now;
	log_warn("tcp accept: %s with %u client connections: %s (%llu lost "
	    "so far; raise the open-file limit or lower tcp-max-clients)",
	    uv_strerror(status), l->n_conns, evicted ? "closed the least "
	    "recently active idle one" : "none idle to close",
	    (unsigned long long)l->m->tcp_accept_failed);
}

/* tcp-max-clients, lowered when the open-file limit cannot hold that many
 * connections besides what the rest of the process needs; the clamp is
 * logged when it changes. */
static void
set_max_conns(struct listen *l, const struct conf *conf)
{
	struct rlimit rl;
	unsigned n = l->workers;
	/* Every worker's share of tcp-max-clients, rounded up. */
	unsigned max = (conf->tcp_max_clients + n - 1) / n;
	/* Each worker has its own listeners and upstream connections. */
	rlim_t reserve = FD_RESERVE_FIXED + n * (2 * (rlim_t)conf->n_listen +
	    FD_RESERVE_PER_UPSTREAM * (rlim_t)conf->n_upstream);

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur !=
	    RLIM_INFINITY && rl.rlim_cur < reserve + (rlim_t)max * n) {
		max = rl.rlim_cur > reserve + n ? (unsigned)((rl.rlim_cur -
		    reserve) / n) : 1;
		if (max != l->max_conns && n > 1)
			log_warn("tcp-max-clients %u is more than the open-file "
			    "limit of %llu allows with %llu kept for listeners, "
			    "upstreams, HTTP and logs: at most %u client "
			    "connections per worker (%u workers)",
			    conf->tcp_max_clients,
			    (unsigned long long)rl.rlim_cur,
			    (unsigned long long)reserve, max, n);
		else if (max != l->max_conns)
			log_warn("tcp-max-clients %u is more than the open-file "
			    "limit of %llu allows with %llu kept for listeners, "
			    "upstreams, HTTP and logs: at most %u client "
			    "connections", conf->tcp_max_clients,
			    (unsigned long long)rl.rlim_cur,
			    (unsigned long long)reserve, max);
	}
	l->max_conns = max;
}

static void
tcp_connection_cb(uv_stream_t *server, int status)
{
	struct tcp_sock *ts = server->data;
	struct listen *l = ts->l;
	struct tcp_conn *c;
	int namelen;

	if (l->closing)
		return;
	if (status == UV_EMFILE || status == UV_ENFILE) {
		/* libuv has accepted and closed what was waiting (its
		 * reserved-descriptor trick), so this does not spin; make
		 * room for the next one. */
		accept_failed(l, status);
		return;
	}
	if (status != 0) {
		log_debug("tcp accept: %s", uv_strerror(status));
		return;
	}
	if (l->n_conns >= l->max_conns && evict_idle_conn(l) != 0) {
		reject_conn(l, server);
		return;
	}
	c = mem_calloc(1, sizeof(*c));
	if (c == NULL) {
		reject_conn(l, server);
		return;
	}
	c->l = l;
	c->rcap = TCP_RBUF_MIN;
	c->rbuf = mem_alloc(c->rcap);
	if (c->rbuf == NULL) {
		mem_free(c);
		reject_conn(l, server);
		return;
	}
	uv_tcp_init(l->loop, &c->handle);
	uv_timer_init(l->loop, &c->idle);
	c->handle.data = c;
	c->idle.data = c;
	c->open_handles = 2;
	list_append(l, c);
	l->n_conns++;
	if (uv_accept(server, (uv_stream_t *)&c->handle) != 0) {
		conn_close(c);
		return;
	}
	l->m->tcp_accepted++;
	c->accepted_ms = uv_now(l->loop);
	namelen = sizeof(c->peer);
	if (uv_tcp_getpeername(&c->handle, (struct sockaddr *)&c->peer,
	    &namelen) != 0)
		c->peer.ss_family = AF_UNSPEC;
	uv_tcp_nodelay(&c->handle, 1);
	uv_timer_start(&c->idle, conn_idle_cb, l->conf->tcp_idle_timeout_ms,
	    l->conf->tcp_idle_timeout_ms);
	conn_read_start(c);
	if (!c->reading)
		conn_close(c);
}

/* ---- setup and teardown ---- */

static void
udp_sock_maybe_free(struct udp_sock *u)
{
	struct listen *l = u->l;

	if (!u->handle_closed || u->pending != 0)
		return;
	mem_free(u->arena);
	mem_free(u);
	l->open_handles--;
	listen_maybe_free(l);
}

static void
udp_sock_close_cb(uv_handle_t *h)
{
	struct udp_sock *u = h->data;

	u->handle_closed = 1;
	udp_sock_maybe_free(u);
}

static void
udp_sock_close(struct udp_sock *u)
{
	if (u == NULL || u->closing)
		return;
	udp_flush(u);
	u->closing = 1;
	uv_close((uv_handle_t *)&u->handle, udp_sock_close_cb);
}

static void
tcp_sock_close_cb(uv_handle_t *h)
{
	struct tcp_sock *t = h->data;
	struct listen *l = t->l;

	mem_free(t);
	l->open_handles--;
	listen_maybe_free(l);
}

/* A socket of ours that no handle took (fd -1: none). */
static void
close_unowned(int fd)
{
	if (fd >= 0)
		close(fd);
}

static void
tcp_sock_close(struct tcp_sock *t)
{
	if (t != NULL && !uv_is_closing((uv_handle_t *)&t->handle))
		uv_close((uv_handle_t *)&t->handle, tcp_sock_close_cb);
}

static void
slot_close(struct lslot *sl)
{
	udp_sock_close(sl->udp);
	tcp_sock_close(sl->tcp);
	sl->udp = NULL;
	sl->tcp = NULL;
}

/* fd >= 0 is a socket already bound to a (a duplicate of one handed over
 * by systemd, or one with SO_REUSEPORT): it is opened instead of binding. bind_udp owns it from the
 * call on: its handle closes it, or it is closed here when it cannot
 * become the handle's. */
static int
bind_udp(struct listen *l, const struct conf_addr *a, int fd,
    struct udp_sock **out, char *err, size_t errlen)
{
	struct udp_sock *u;
	unsigned flags = a->ss.ss_family == AF_INET6 ? UV_UDP_IPV6ONLY : 0;
	unsigned i;
	int rc;

	u = mem_calloc(1, sizeof(*u));
	if (u != NULL) {
		/* Only the bytes answers are written to are touched: most
		 * answers are short, so most pages of each slot are never
		 * faulted in (glibc maps an allocation this large). */
		u->arena = mem_alloc((size_t)UDP_SLOTS * DNS_MAX_MSG);
		if (u->arena == NULL) {
			mem_free(u);
			u = NULL;
		}
	}
	if (u == NULL) {
		close_unowned(fd);
		snprintf(err, errlen, "out of memory");
		return UV_ENOMEM;
	}
	u->l = l;
	for (i = 0; i < UDP_SLOTS; i++) {
		u->iov[i].iov_base = u->arena + (size_t)i * DNS_MAX_MSG;
		u->msg[i].msg_hdr.msg_iov = &u->iov[i];
		u->msg[i].msg_hdr.msg_iovlen = 1;
		u->msg[i].msg_hdr.msg_name = &u->peer[i];
	}
	/* AF_UNSPEC for a handed-over socket: libuv must not make one. */
	rc = uv_udp_init_ex(l->loop, &u->handle,
	    (fd >= 0 ? AF_UNSPEC : a->ss.ss_family) | UV_UDP_RECVMMSG);
	if (rc != 0) {
		mem_free(u->arena);
		mem_free(u);
		close_unowned(fd);
		snprintf(err, errlen, "udp: %s", uv_strerror(rc));
		return rc;
	}
	u->handle.data = u;
	*out = u;
	l->open_handles++;
	if (fd >= 0) {
		rc = uv_udp_open(&u->handle, fd);
		if (rc != 0)
			close_unowned(fd);
	} else
		rc = uv_udp_bind(&u->handle, (const struct sockaddr *)&a->ss,
		    flags);
	if (rc == 0)
		rc = uv_udp_recv_start(&u->handle, udp_alloc_cb, udp_recv_cb);
	if (rc != 0)
		snprintf(err, errlen, "udp: %s", uv_strerror(rc));
	return rc;
}

/* fd as for bind_udp; a handed-over TCP socket may be listening already:
 * uv_listen's listen(2) again only sets the backlog. */
static int
bind_tcp(struct listen *l, const struct conf_addr *a, int fd,
    struct tcp_sock **out, char *err, size_t errlen)
{
	struct tcp_sock *t;
	unsigned flags = a->ss.ss_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0;
	int rc;

	t = mem_calloc(1, sizeof(*t));
	if (t == NULL) {
		close_unowned(fd);
		snprintf(err, errlen, "out of memory");
		return UV_ENOMEM;
	}
	t->l = l;
	rc = uv_tcp_init_ex(l->loop, &t->handle,
	    fd >= 0 ? AF_UNSPEC : a->ss.ss_family);
	if (rc != 0) {
		mem_free(t);
		close_unowned(fd);
		snprintf(err, errlen, "tcp: %s", uv_strerror(rc));
		return rc;
	}
	t->handle.data = t;
	*out = t;
	l->open_handles++;
	if (fd >= 0) {
		rc = uv_tcp_open(&t->handle, fd);
		if (rc != 0)
			close_unowned(fd);
	} else
		rc = uv_tcp_bind(&t->handle, (const struct sockaddr *)&a->ss,
		    flags);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&t->handle, TCP_BACKLOG,
		    tcp_connection_cb);
	if (rc != 0)
		snprintf(err, errlen, "tcp: %s", uv_strerror(rc));
	return rc;
}

/* " from systemd fd N" for a handed-over socket, "" for one bound here. */
static const char *
fd_origin(int from, char *buf, size_t cap)
{
	if (from < 0)
		return "";
	snprintf(buf, cap, " from systemd fd %d", from);
	return buf;
}

/* A socket of type socktype bound to a with SO_REUSEPORT, so that the
 * listeners of several loops (one per worker) each have a socket of their
 * own on the same address and the kernel spreads the clients over them.
 * libuv 1.44 has no flag for it, so the socket is made here as
 * uv_udp_bind and uv_tcp_bind would make it: non-blocking, close-on-exec,
 * IPV6_V6ONLY for IPv6 (they are given UV_*_IPV6ONLY), SO_REUSEADDR for
 * TCP only (uv_udp_open sets it on the UDP one afterwards). Returns the
 * fd, or a libuv error. */
static int
reuseport_socket(const struct conf_addr *a, int socktype)
{
	int fd, on = 1, rc;

	fd = socket(a->ss.ss_family, socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0);
	if (fd < 0)
		return uv_translate_sys_error(errno);
	if (socktype == SOCK_STREAM && setsockopt(fd, SOL_SOCKET,
	    SO_REUSEADDR, &on, sizeof(on)) != 0)
		goto fail;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0)
		goto fail;
	if (a->ss.ss_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6,
	    IPV6_V6ONLY, &on, sizeof(on)) != 0)
		goto fail;
	if (bind(fd, (const struct sockaddr *)&a->ss, a->len) != 0)
		goto fail;
	return fd;

fail:
	rc = uv_translate_sys_error(errno);
	close(fd);
	return rc;
}

/* The descriptor for a's socket of type socktype that slot_bind opens
 * instead of binding: a duplicate of the one systemd handed over for it
 * (*from its number), else with reuseport one made here, else -1 (libuv
 * binds). Returns 0, or a libuv error with the reason in why and nothing
 * open. */
static int
slot_fd(struct listen *l, const struct conf_addr *a,
    const struct sysd_fds *fds, int socktype, int *fd, int *from,
    char *why, size_t whylen)
{
	const char *proto = socktype == SOCK_DGRAM ? "udp" : "tcp";
	int rc;

	rc = sysd_fds_dup(fds, a, socktype, fd, from);
	if (rc != 0) {
		snprintf(why, whylen, "%s: systemd fd %d: %s", proto, *from,
		    uv_strerror(rc));
		return rc;
	}
	if (*fd >= 0 || !l->reuseport)
		return 0;
	rc = reuseport_socket(a, socktype);
	if (rc < 0) {
		snprintf(why, whylen, "%s: %s", proto, uv_strerror(rc));
		return rc;
	}
	*fd = rc;
	return 0;
}

/* Bind UDP and TCP on a into sl (with SO_REUSEPORT when l says so), or
 * open duplicates of the sockets fds hands over for it (fds may be NULL).
 * Returns 0, or a libuv error with the reason in why and nothing left
 * open. */
static int
slot_bind(struct listen *l, const struct conf_addr *a,
    const struct sysd_fds *fds, struct lslot *sl, char *why, size_t whylen)
{
	char addr[64], uorig[32], torig[32];
	int rc, ufd, tfd = -1, ufrom, tfrom = -1;

	memset(sl, 0, sizeof(*sl));
	sl->addr = *a;
	rc = slot_fd(l, a, fds, SOCK_DGRAM, &ufd, &ufrom, why, whylen);
	if (rc == 0)
		rc = bind_udp(l, a, ufd, &sl->udp, why, whylen);
	if (rc == 0)
		rc = slot_fd(l, a, fds, SOCK_STREAM, &tfd, &tfrom, why,
		    whylen);
	if (rc == 0)
		rc = bind_tcp(l, a, tfd, &sl->tcp, why, whylen);
	if (rc != 0) {
		slot_close(sl);
		return rc;
	}
	if (!l->log_addrs)
		return 0;
	conf_addr_str(a, addr, sizeof(addr));
	log_info("listening on %s (udp%s, tcp%s)", addr,
	    fd_origin(ufrom, uorig, sizeof(uorig)),
	    fd_origin(tfrom, torig, sizeof(torig)));
	return 0;
}

static int
addr_equal(const struct conf_addr *a, const struct conf_addr *b)
{
	return a->len == b->len && memcmp(&a->ss, &b->ss, a->len) == 0;
}

static struct lslot *
slot_find(struct listen *l, const struct conf_addr *a)
{
	size_t i;

	for (i = 0; i < l->n_slots; i++)
		if (addr_equal(&l->slot[i].addr, a))
			return &l->slot[i];
	return NULL;
}

/* Bind every address of conf that l does not serve yet into fresh[].
 * Returns 0 and *n_fresh, or -1 with "listen ADDR: reason" in err and
 * nothing left open. A default address the host lacks is skipped. */
static int
bind_new(struct listen *l, const struct conf *conf,
    const struct sysd_fds *fds, struct lslot *fresh, size_t *n_fresh,
    char *err, size_t errlen)
{
	char addr[64], why[256];
	size_t i, n = 0;
	int rc;

	for (i = 0; i < conf->n_listen; i++) {
		if (slot_find(l, &conf->listen[i]) != NULL)
			continue;
		rc = slot_bind(l, &conf->listen[i], fds, &fresh[n], why,
		    sizeof(why));
		if (rc == 0) {
			n++;
			continue;
		}
		conf_addr_str(&conf->listen[i], addr, sizeof(addr));
		if (conf->listen_is_default && (rc == UV_EADDRNOTAVAIL ||
		    rc == UV_EAFNOSUPPORT)) {
			log_warn("listen %s: %s (default address skipped)",
			    addr, why);
			continue;
		}
		snprintf(err, errlen, "listen %s: %s%s", addr, why,
		    rc == UV_EACCES && getuid() != 0 ? " (privileges were "
		    "dropped: a port below 1024 needs a restart)" : "");
		while (n > 0)
			slot_close(&fresh[--n]);
		return -1;
	}
	*n_fresh = n;
	return 0;
}

int
listen_start(uv_loop_t *loop, const struct conf *conf,
    struct sysd_fds *fds, unsigned workers, int log_addrs,
    struct query_ctx *qctx, struct metrics *m, struct listen **out,
    char *err, size_t errlen)
{
	struct listen *l;

	l = mem_calloc(1, sizeof(*l));
	if (l == NULL)
		goto nomem;
	l->udp_buf = mem_alloc(UDP_SLOTS * UDP_SLOT);
	l->tcp_batch = mem_alloc(TCP_BATCH_CAP);
	if (l->udp_buf == NULL || l->tcp_batch == NULL) {
		mem_free(l->udp_buf);
		mem_free(l->tcp_batch);
		mem_free(l);
		goto nomem;
	}
	l->loop = loop;
	l->conf = conf;
	l->qctx = qctx;
	l->m = m;
	l->workers = workers > 0 ? workers : 1;
	l->reuseport = workers > 1;
	l->log_addrs = log_addrs;
	set_max_conns(l, conf);
	if (bind_new(l, conf, fds, l->slot, &l->n_slots, err,
	    errlen) != 0) {
		listen_close(l);
		return -1;
	}
	if (l->n_slots == 0) {
		snprintf(err, errlen, "listen: no address could be bound");
		listen_close(l);
		return -1;
	}
	*out = l;
	return 0;

nomem:
	snprintf(err, errlen, "listen: out of memory");
	return -1;
}

int
listen_update(struct listen *l, const struct conf *conf, char *err,
    size_t errlen)
{
	struct lslot fresh[CONF_MAX_LISTEN], kept[CONF_MAX_LISTEN];
	size_t n_fresh = 0, n_kept = 0, i, j;
	char addr[64];
	int wanted;

	/* Bind first: a reload that cannot bind changes nothing. */
	if (bind_new(l, conf, NULL, fresh, &n_fresh, err, errlen) != 0)
		return -1;
	for (i = 0; i < l->n_slots; i++) {
		for (wanted = 0, j = 0; j < conf->n_listen && !wanted; j++)
			wanted = addr_equal(&l->slot[i].addr,
			    &conf->listen[j]);
		if (wanted) {
			kept[n_kept++] = l->slot[i];
			continue;
		}
		if (l->log_addrs) {
			conf_addr_str(&l->slot[i].addr, addr, sizeof(addr));
			log_info("no longer listening on %s", addr);
		}
		slot_close(&l->slot[i]);
	}
	memcpy(l->slot, kept, n_kept * sizeof(kept[0]));
	memcpy(l->slot + n_kept, fresh, n_fresh * sizeof(fresh[0]));
	l->n_slots = n_kept + n_fresh;
	l->conf = conf;
	set_max_conns(l, conf);
	return 0;
}

void
listen_quiesce(struct listen *l)
{
	struct tcp_conn *c, *next;
	size_t i;

	for (i = 0; i < l->n_slots; i++) {
		if (l->slot[i].udp != NULL) {
			/* Stopped inside a read batch, libuv would not call
			 * back at its end: send what it has made so far. */
			udp_flush(l->slot[i].udp);
			uv_udp_recv_stop(&l->slot[i].udp->handle);
		}
		tcp_sock_close(l->slot[i].tcp);
		l->slot[i].tcp = NULL;
	}
	/* Connections with answers to come keep their socket for them. */
	for (c = l->head; c != NULL; c = next) {
		next = c->next;
		if (c->pending == 0) {
			conn_close_gently(c);
			continue;
		}
		uv_read_stop((uv_stream_t *)&c->handle);
		c->reading = 0;
		c->quiesced = 1;
	}
	l->quiesced = 1;
}

unsigned
listen_tcp_connections(const struct listen *l)
{
	return l->n_conns;
}

static void
listen_maybe_free(struct listen *l)
{
	if (!l->closing || l->open_handles != 0)
		return;
	mem_free(l->udp_buf);
	mem_free(l->tcp_batch);
	mem_free(l);
}

void
listen_close(struct listen *l)
{
	size_t i;

	l->closing = 1;
	while (l->head != NULL)
		conn_close(l->head);
	for (i = 0; i < l->n_slots; i++)
		slot_close(&l->slot[i]);
	l->n_slots = 0;
	listen_maybe_free(l);
}
