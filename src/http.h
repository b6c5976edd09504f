/* http.h: a tiny HTTP/1.1 endpoint (libmicrohttpd) on the program's libuv loop.
 *
 * A server listens on one TCP address, one Unix socket path or one already
 * listening descriptor, and answers each request from a route table that
 * the caller supplies: the route's function fills a struct http_response
 * and returns at once (no request bodies, no streaming). This module knows
 * nothing about DNS. libmicrohttpd parses, bounds and times out the
 * requests; it runs without a thread of its own, driven by the loop, so a
 * route function runs on the loop thread and must not block.
 *
 * Limits that keep a slow or hostile client from hurting what else runs on
 * the loop: an idle timeout per connection, a cap on connections (and on
 * connections from one IP address), a per-connection memory cap that
 * refuses oversized requests, and a deadline for the whole of a request
 * (headers that dribble in are cut off even if never idle).
 */
#ifndef DOTPROXY_HTTP_H
#define DOTPROXY_HTTP_H

#include <stddef.h>
#include <uv.h>

#include "conf.h"

/* Idle seconds before a connection is closed. */
#define HTTP_IDLE_TIMEOUT_S 5
/* Milliseconds a request may take to arrive, from its first byte (or the
 * connection, or the previous answer) to its last: a slowloris that is
 * never idle is closed after this. */
#define HTTP_REQUEST_DEADLINE_MS 10000
/* Connections at once per server, and from one IP address. */
#define HTTP_MAX_CONNS 64
#define HTTP_MAX_CONNS_PER_IP 16
/* Bytes of request (line and headers) and response headers per
 * connection; a larger request is refused by libmicrohttpd with 431 or
 * 414. Response bodies are not counted. */
#define HTTP_CONN_MEMORY (32 * 1024)

struct http_server;

/* One request, valid only during the route function's call. */
struct http_request;

/* "GET", "POST", "HEAD", ... as sent. */
const char *http_request_method(const struct http_request *r);

/* The path without the query string, percent-decoded ("/metrics"). */
const char *http_request_path(const struct http_request *r);

/* The query-string value of key (decoded), or NULL when the key is absent
 * or has no value. The string is valid during the route function's call. */
const char *http_request_arg(const struct http_request *r, const char *key);

/* What a route function fills in. The server zeroes it and sets status 200
 * before the call. */
struct http_response {
	int status;               /* 200, 503, ...; outside 200-599 sends 500 */
	const char *content_type; /* static; NULL = "text/plain; charset=utf-8" */
	char *body;               /* mem_alloc'd (mem.h); the server frees it */
	size_t len;               /* bytes of body sent */
	size_t cap;               /* bytes allocated at body, kept by
	                           * http_response_printf; a function that sets
	                           * body itself sets cap = len */
	int close;                /* send "Connection: close" and close */
	int failed;               /* set by http_response_printf on failure:
	                           * the server sends 500 and drops the body */
};

/* Append printf-style text to resp->body, growing it geometrically (O(1)
 * amortised per byte; a 100 KB body costs a few reallocations). The body
 * stays NUL-terminated after its len bytes. Returns 0; -ENOMEM when memory
 * runs out, or -EINVAL for a format error: then resp->failed is set, this
 * and later calls append nothing, and the server answers 500 instead. */
int http_response_printf(struct http_response *resp, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

struct http_route {
	const char *path;   /* exact match against http_request_path */
	const char *method; /* "GET" (which also answers HEAD) or "POST" */
	/* Called on the loop thread with the server's arg; it must not block.
	 * It may call http_server_close on its own server. */
	void (*fn)(void *arg, const struct http_request *req,
	    struct http_response *resp);
};

/* Where to listen: exactly one of addr, unix_path or fd (-1 when unused).
 * addr: a TCP address, IPv4 or IPv6 (IPv6 only, no mapped IPv4).
 * unix_path: a Unix stream socket created with mode 0660; a stale socket
 *   file at the path (nobody accepts on it) is replaced, a live one or any
 *   other kind of file is an error; the path is removed on close.
 * fd: a socket already bound and listening (socket activation). */
struct http_listen {
	const struct conf_addr *addr;
	const char *unix_path;
	int fd;
};

/* Start serving on where, answering from routes[0..n_routes) with arg
 * passed to each route function. Unknown path: 404; known path, other
 * method: 405 with Allow; a request libmicrohttpd cannot parse: 400 (or,
 * for a request line without a space, a close without an answer); one
 * with a body (the routes take none) is answered and the connection
 * closed. routes and arg must outlive the server; where is not kept.
 * Returns 0 and *out, or -1 with "http WHERE: reason" in err and nothing
 * left open or created (a passed fd then stays the caller's; on success
 * the server owns it and closes it). Several servers may share a loop. */
int http_server_new(uv_loop_t *loop, const struct http_listen *where,
    const struct http_route *routes, size_t n_routes, void *arg,
    struct http_server **out, char *err, size_t errlen);

/* Stop now: the listening socket and every connection are closed (their
 * pending answers dropped) and a Unix socket path is removed. Memory goes
 * once the loop has run the close callbacks; s is invalid after this
 * call (NULL: nothing happens). May be called from a route function of s:
 * the server then stops when that function's round of libmicrohttpd work
 * ends, and its answer goes out only as far as the socket took it by
 * then (a short one, in practice). */
void http_server_close(struct http_server *s);

#endif
