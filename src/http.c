/* http.c: the tiny HTTP endpoint: libmicrohttpd in external epoll mode,
 * driven by the libuv loop.
 *
 * libmicrohttpd (MHD) is started with MHD_USE_EPOLL and no polling thread:
 * it keeps its sockets in an epoll set of its own, whose descriptor sits in
 * a uv_poll_t. When that descriptor is readable, or when the uv_timer_t we
 * set from MHD_get_timeout() fires, MHD_run() does one non-blocking round
 * (bounded: MHD accepts at most 10 connections and takes at most 128
 * events per round) and the timer is set again. Every state change of MHD
 * happens inside MHD_run(), so re-arming after each run is enough. MHD
 * reports a timeout of 0 when it has work left (a connection closed, data
 * already read); that becomes a uv_idle_t, not a timer of 0: libuv 1.44
 * runs a timer restarted with 0 from its own callback again in the same
 * timer phase, so a client that kept MHD busy would keep the loop from
 * ever polling for DNS. An idle handle runs once per turn, and the loop
 * polls for I/O between two of its runs.
 *
 * Every listening socket is made here (or given) and handed to MHD with
 * MHD_OPTION_LISTEN_SOCKET, as a duplicate: MHD's failure paths close the
 * socket they were given on some errors and not on others, so after a
 * failed start we close our duplicate only if it still is the same socket.
 *
 * MHD's connection timeout is an idle timeout: a client that sends one
 * header byte a second is never idle. So each connection also has a
 * request deadline (HTTP_REQUEST_DEADLINE_MS from its start or from its
 * previous answer until its request is complete). Connections with a
 * deadline are on a list in deadline order (the deadline is always "now +
 * a constant", so appending keeps it sorted); an expired one is shut down
 * with shutdown(2), which MHD sees as a hang-up and closes itself. The
 * descriptor is MHD's, valid between its STARTED and CLOSED notifications,
 * which bracket the record.
 *
 * An answer is queued on MHD's second call for a request (once it is
 * complete), because MHD 0.9.75 closes a connection whose answer was
 * queued on the first call; requests that announce a body are the
 * exception: they are answered on the first call and closed, so that no
 * body is ever read.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <unistd.h>

#include <microhttpd.h>

#include "http.h"
#include "log.h"
#include "mem.h"

#define HTTP_BACKLOG 128
#define HTTP_BODY_MIN 256
#define HTTP_DEFAULT_TYPE "text/plain; charset=utf-8"
#define HTTP_NAME_MAX (sizeof(((struct sockaddr_un *)0)->sun_path) + 16)

struct http_request {
	struct MHD_Connection *conn;
	const char *method;
	const char *path;
};

/* One MHD connection, from MHD's STARTED to its CLOSED notification. */
struct http_conn {
	struct http_conn *prev, *next; /* deadline list, when listed */
	uint64_t deadline;             /* uv_now() ms */
	int fd;                        /* MHD's: only shutdown(2) here */
	int listed;
};

struct http_server {
	uv_loop_t *loop;
	struct MHD_Daemon *d;          /* NULL once stopped */
	uv_poll_t poll;                /* MHD's epoll descriptor */
	uv_timer_t timer;              /* MHD's timeout and our deadlines */
	uv_idle_t again;               /* MHD has work left: next turn */
	const struct http_route *routes;
	size_t n_routes;
	void *arg;
	char *unix_path;               /* ours to unlink on close, or NULL */
	struct http_conn *head, *tail; /* deadline list, earliest first */
	unsigned open_handles;
	int in_run;                    /* inside MHD_run: stop after it */
	int closing;
	uint64_t log_ms;               /* last MHD message logged as warning */
	char *start_err;               /* MHD's message while starting */
	size_t start_errlen;
	char name[HTTP_NAME_MAX];      /* "127.0.0.1@8080", a path, "fd 3" */
};

/* Marks a request whose first MHD call has been seen. */
static int request_seen;

static void server_run(struct http_server *s);

/* ---- requests and responses ---- */

const char *
http_request_method(const struct http_request *r)
{
	return r->method;
}

const char *
http_request_path(const struct http_request *r)
{
	return r->path;
}

const char *
http_request_arg(const struct http_request *r, const char *key)
{
	return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND,
	    key);
}

int
http_response_printf(struct http_response *resp, const char *fmt, ...)
{
	va_list ap;
	size_t cap, need;
	char *p;
	int n;

	if (resp->failed)
		return -ENOMEM;
	/* A body set by its owner without cap is full to its length. */
	cap = resp->body != NULL && resp->cap > resp->len ? resp->cap :
	    resp->len;
	va_start(ap, fmt);
	n = vsnprintf(resp->body != NULL ? resp->body + resp->len : NULL,
	    cap - resp->len, fmt, ap);
	va_end(ap);
	if (n < 0) {
		resp->failed = 1;
		return -EINVAL;
	}
	if ((size_t)n < cap - resp->len) {
		resp->len += (size_t)n;
		return 0;
	}
	if (resp->len > SIZE_MAX / 4 || (size_t)n > SIZE_MAX / 4)
		goto nomem;
	need = resp->len + (size_t)n + 1;
	cap = cap * 2 > need ? cap * 2 : need;
	if (cap < HTTP_BODY_MIN)
		cap = HTTP_BODY_MIN;
	p = mem_realloc(resp->body, cap);
	if (p == NULL)
		goto nomem;
	resp->body = p;
	resp->cap = cap;
	va_start(ap, fmt);
	n = vsnprintf(resp->body + resp->len, cap - resp->len, fmt, ap);
	va_end(ap);
	if (n < 0) {
		resp->failed = 1;
		return -EINVAL;
	}
	resp->len += (size_t)n;
	return 0;

nomem:
	resp->failed = 1;
	return -ENOMEM;
}

/* ---- request deadlines ---- */

static void
deadline_clear(struct http_server *s, struct http_conn *c)
{
	if (!c->listed)
		return;
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		s->head = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	else
		s->tail = c->prev;
	c->prev = c->next = NULL;
	c->listed = 0;
}

static void
deadline_set(struct http_server *s, struct http_conn *c)
{
	deadline_clear(s, c);
	c->deadline = uv_now(s->loop) + HTTP_REQUEST_DEADLINE_MS;
	c->prev = s->tail;
	c->next = NULL;
	if (s->tail != NULL)
		s->tail->next = c;
	else
		s->head = c;
	s->tail = c;
	c->listed = 1;
}

static struct http_conn *
conn_of(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *info;

	info = MHD_get_connection_info(conn,
	    MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	return info != NULL ? info->socket_context : NULL;
}

/* Shut down the connections whose request is overdue; MHD closes them
 * in the run that follows. */
static void
deadline_expire(struct http_server *s, uint64_t now)
{
	struct http_conn *c;

	while (s->head != NULL && s->head->deadline <= now) {
		c = s->head;
		deadline_clear(s, c);
		log_debug("http %s: request deadline passed, closing", s->name);
		(void)shutdown(c->fd, SHUT_RDWR);
	}
}

static void
notify_conn_cb(void *cls, struct MHD_Connection *conn,
    void **socket_context, enum MHD_ConnectionNotificationCode toe)
{
	struct http_server *s = cls;
	const union MHD_ConnectionInfo *info;
	struct http_conn *c;

	if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
		c = *socket_context;
		if (c != NULL) {
			deadline_clear(s, c);
			mem_free(c);
			*socket_context = NULL;
		}
		return;
	}
	if (toe != MHD_CONNECTION_NOTIFY_STARTED)
		return;
	*socket_context = NULL;
	info = MHD_get_connection_info(conn,
	    MHD_CONNECTION_INFO_CONNECTION_FD);
	if (info == NULL)
		return;
	c = mem_calloc(1, sizeof(*c));
	if (c == NULL) {
		/* A connection without a deadline could be held forever:
		 * refuse it instead. */
		log_debug("http %s: out of memory, closing a connection",
		    s->name);
		(void)shutdown(info->connect_fd, SHUT_RDWR);
		return;
	}
	c->fd = info->connect_fd;
	*socket_context = c;
	deadline_set(s, c);
}

/* An answer has been sent (or dropped): the next request's time starts. */
static void
completed_cb(void *cls, struct MHD_Connection *conn, void **req_cls,
    enum MHD_RequestTerminationCode toe)
{
	struct http_server *s = cls;
	struct http_conn *c = conn_of(conn);

	(void)req_cls;
	(void)toe;
	if (c != NULL && !s->closing)
		deadline_set(s, c);
}

/* ---- answering ---- */

static int
method_matches(const char *route_method, const char *method)
{
	if (strcmp(route_method, method) == 0)
		return 1;
	return strcmp(method, "HEAD") == 0 && strcmp(route_method, "GET") == 0;
}

/* "GET, HEAD, POST": the methods the routes of path answer. */
static void
allow_list(const struct http_server *s, const char *path, char *buf,
    size_t cap)
{
	size_t i, used = 0;
	int get = 0, n;

	buf[0] = '\0';
	for (i = 0; i < s->n_routes; i++) {
		if (strcmp(s->routes[i].path, path) != 0)
			continue;
		if (strcmp(s->routes[i].method, "GET") == 0)
			get = 1;
		n = snprintf(buf + used, cap - used, "%s%s",
		    used > 0 ? ", " : "", s->routes[i].method);
		if (n < 0 || (size_t)n >= cap - used)
			return;
		used += (size_t)n;
	}
	if (get)
		(void)snprintf(buf + used, cap - used, ", HEAD");
}

static int
has_body(struct MHD_Connection *conn)
{
	const char *len;

	if (MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
	    MHD_HTTP_HEADER_TRANSFER_ENCODING) != NULL)
		return 1;
	len = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
	    MHD_HTTP_HEADER_CONTENT_LENGTH);
	return len != NULL && strcmp(len, "0") != 0;
}

/* Queue one answer. body is mem_free'd by MHD when it is done with it
 * (or here, when the response cannot be made); a static text is passed
 * with owned = 0. Returns MHD's verdict: MHD_NO closes the connection. */
static enum MHD_Result
queue(struct MHD_Connection *conn, unsigned status, const char *type,
    char *body, size_t len, int owned, int close, const char *allow)
{
	struct MHD_Response *r;
	enum MHD_Result ok;

	if (owned && len > 0) {
		r = MHD_create_response_from_buffer_with_free_callback(len,
		    body, mem_free);
	} else {
		if (owned)
			mem_free(body);
		r = MHD_create_response_from_buffer(len, owned ? NULL : body,
		    MHD_RESPMEM_PERSISTENT);
		owned = 0;
	}
	if (r == NULL) {
		if (owned)
			mem_free(body);
		return MHD_NO;
	}
	ok = MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
	    type != NULL ? type : HTTP_DEFAULT_TYPE);
	if (ok == MHD_YES && allow != NULL)
		ok = MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
	if (ok == MHD_YES && close)
		ok = MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION,
		    "close");
	if (ok == MHD_YES)
		ok = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return ok;
}

static enum MHD_Result
answer(struct http_server *s, struct MHD_Connection *conn, const char *path,
    const char *method)
{
	static char not_found[] = "not found\n";
	static char not_allowed[] = "method not allowed\n";
	static char failed[] = "internal error\n";
	struct http_request req = { conn, method, path };
	struct http_response resp;
	const struct http_route *route = NULL;
	struct http_conn *c = conn_of(conn);
	char allow[128];
	size_t i;
	int known = 0;

	/* The request is complete: from here the idle timeout rules. */
	if (c != NULL)
		deadline_clear(s, c);
	for (i = 0; i < s->n_routes && route == NULL; i++) {
		if (strcmp(s->routes[i].path, path) != 0)
			continue;
		known = 1;
		if (method_matches(s->routes[i].method, method))
			route = &s->routes[i];
	}
	if (route == NULL && known) {
		allow_list(s, path, allow, sizeof(allow));
		return queue(conn, MHD_HTTP_METHOD_NOT_ALLOWED, NULL,
		    not_allowed, sizeof(not_allowed) - 1, 0, 0, allow);
	}
	if (route == NULL)
		return queue(conn, MHD_HTTP_NOT_FOUND, NULL, not_found,
		    sizeof(not_found) - 1, 0, 0, NULL);

	memset(&resp, 0, sizeof(resp));
	resp.status = MHD_HTTP_OK;
	route->fn(s->arg, &req, &resp);
	if (resp.failed || resp.status < 200 || resp.status > 599 ||
	    (resp.body == NULL && resp.len > 0)) {
		log_warn("http %s: %s %s: %s", s->name, method, path,
		    resp.failed ? "out of memory" : "bad response");
		mem_free(resp.body);
		return queue(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL,
		    failed, sizeof(failed) - 1, 0, resp.close, NULL);
	}
	return queue(conn, (unsigned)resp.status, resp.content_type, resp.body,
	    resp.len, 1, resp.close, NULL);
}

static enum MHD_Result
access_cb(void *cls, struct MHD_Connection *conn, const char *url,
    const char *method, const char *version, const char *upload_data,
    size_t *upload_data_size, void **req_cls)
{
	struct http_server *s = cls;

	(void)version;
	(void)upload_data;
	if (*req_cls == NULL) {
		*req_cls = &request_seen;
		if (!has_body(conn))
			return MHD_YES;
		/* No route takes a body: answer before reading it; MHD then
		 * closes the connection. */
		return answer(s, conn, url, method);
	}
	if (*upload_data_size != 0)
		return MHD_NO;
	return answer(s, conn, url, method);
}

/* ---- the loop side ---- */

static void
mhd_log_cb(void *cls, const char *fmt, va_list ap)
{
	struct http_server *s = cls;
	char msg[256];
	size_t n;
	uint64_t now;

	(void)vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
		msg[--n] = '\0';
	if (s->start_err != NULL) {
		(void)snprintf(s->start_err, s->start_errlen, "%s", msg);
		return;
	}
	/* Per-connection complaints (limits reached) can come in floods. */
	now = uv_now(s->loop);
	if (s->log_ms == 0 || now - s->log_ms >= 1000) {
		s->log_ms = now;
		log_warn("http %s: %s (logged at most once a second)", s->name,
		    msg);
	} else {
		log_debug("http %s: %s", s->name, msg);
	}
}

static void
stop_daemon(struct http_server *s)
{
	if (s->d == NULL)
		return;
	MHD_stop_daemon(s->d);
	s->d = NULL;
	if (s->unix_path != NULL && unlink(s->unix_path) != 0 &&
	    errno != ENOENT)
		log_warn("http %s: unlink: %s", s->name, strerror(errno));
}

static void
timer_cb(uv_timer_t *t)
{
	server_run(t->data);
}

static void
idle_cb(uv_idle_t *h)
{
	server_run(h->data);
}

static void
rearm(struct http_server *s)
{
	MHD_UNSIGNED_LONG_LONG mhd_ms;
	uint64_t ms = UINT64_MAX, now = uv_now(s->loop), left;

	if (MHD_get_timeout(s->d, &mhd_ms) == MHD_YES)
		ms = mhd_ms;
	if (s->head != NULL) {
		left = s->head->deadline > now ? s->head->deadline - now : 0;
		if (left < ms)
			ms = left;
	}
	if (ms == 0) {
		(void)uv_timer_stop(&s->timer);
		(void)uv_idle_start(&s->again, idle_cb);
		return;
	}
	(void)uv_idle_stop(&s->again);
	if (ms == UINT64_MAX)
		(void)uv_timer_stop(&s->timer);
	else
		(void)uv_timer_start(&s->timer, timer_cb, ms, 0);
}

static void
server_run(struct http_server *s)
{
	deadline_expire(s, uv_now(s->loop));
	s->in_run = 1;
	if (MHD_run(s->d) != MHD_YES)
		log_warn("http %s: MHD_run failed", s->name);
	s->in_run = 0;
	/* A route function closed the server. */
	if (s->closing) {
		stop_daemon(s);
		return;
	}
	rearm(s);
}

static void
poll_cb(uv_poll_t *p, int status, int events)
{
	struct http_server *s = p->data;

	(void)events;
	if (status < 0)
		log_debug("http %s: poll: %s", s->name, uv_strerror(status));
	server_run(s);
}

static void
close_cb(uv_handle_t *h)
{
	struct http_server *s = h->data;

	if (--s->open_handles > 0)
		return;
	mem_free(s->unix_path);
	mem_free(s);
}

void
http_server_close(struct http_server *s)
{
	if (s == NULL || s->closing)
		return;
	s->closing = 1;
	/* libuv forgets the epoll descriptor here, before MHD closes it. */
	uv_close((uv_handle_t *)&s->poll, close_cb);
	uv_close((uv_handle_t *)&s->timer, close_cb);
	uv_close((uv_handle_t *)&s->again, close_cb);
	if (!s->in_run)
		stop_daemon(s);
}

/* ---- listening sockets ---- */

static int
listen_tcp(const struct conf_addr *a, char *why, size_t whylen)
{
	int fd, one = 1;

	fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(why, whylen, "socket: %s", strerror(errno));
		return -1;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    (a->ss.ss_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6,
	    IPV6_V6ONLY, &one, sizeof(one)) != 0)) {
		snprintf(why, whylen, "setsockopt: %s", strerror(errno));
		goto fail;
	}
	if (bind(fd, (const struct sockaddr *)&a->ss, a->len) != 0) {
		snprintf(why, whylen, "bind: %s", strerror(errno));
		goto fail;
	}
	if (listen(fd, HTTP_BACKLOG) != 0) {
		snprintf(why, whylen, "listen: %s", strerror(errno));
		goto fail;
	}
	return fd;

fail:
	close(fd);
	return -1;
}

/* A socket file at path that nobody accepts on is stale: remove it. A live
 * one, or another kind of file, is left alone and is an error. */
static int
unix_clear_stale(const struct sockaddr_un *sun, char *why, size_t whylen)
{
	struct stat st;
	int fd, rc;

	if (lstat(sun->sun_path, &st) != 0) {
		if (errno == ENOENT)
			return 0;
		snprintf(why, whylen, "%s", strerror(errno));
		return -1;
	}
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(why, whylen, "exists and is not a socket");
		return -1;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(why, whylen, "socket: %s", strerror(errno));
		return -1;
	}
	rc = connect(fd, (const struct sockaddr *)sun, sizeof(*sun));
	if (rc == 0 || errno == EAGAIN) {
		close(fd);
		snprintf(why, whylen, "in use by another process");
		return -1;
	}
	if (errno != ECONNREFUSED) {
		snprintf(why, whylen, "connect: %s", strerror(errno));
		close(fd);
		return -1;
	}
	close(fd);
	if (unlink(sun->sun_path) != 0 && errno != ENOENT) {
		snprintf(why, whylen, "unlink stale socket: %s",
		    strerror(errno));
		return -1;
	}
	log_info("http %s: removed a stale socket file", sun->sun_path);
	return 0;
}

static int
listen_unix(const char *path, char *why, size_t whylen)
{
	struct sockaddr_un sun;
	int fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (path[0] == '\0' || strlen(path) >= sizeof(sun.sun_path)) {
		snprintf(why, whylen, "path empty or longer than %zu bytes",
		    sizeof(sun.sun_path) - 1);
		return -1;
	}
	memcpy(sun.sun_path, path, strlen(path) + 1);
	if (unix_clear_stale(&sun, why, whylen) != 0)
		return -1;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(why, whylen, "socket: %s", strerror(errno));
		return -1;
	}
	if (bind(fd, (const struct sockaddr *)&sun, sizeof(sun)) != 0) {
		snprintf(why, whylen, "bind: %s", strerror(errno));
		close(fd);
		return -1;
	}
	/* Nobody can connect before listen(): the mode is right by then. */
	if (chmod(path, 0660) != 0) {
		snprintf(why, whylen, "chmod: %s", strerror(errno));
		goto fail;
	}
	if (listen(fd, HTTP_BACKLOG) != 0) {
		snprintf(why, whylen, "listen: %s", strerror(errno));
		goto fail;
	}
	return fd;

fail:
	close(fd);
	(void)unlink(path);
	return -1;
}

static int
check_listening(int fd, char *why, size_t whylen)
{
	int type = 0, acc = 0;
	socklen_t len = sizeof(type);

	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) {
		snprintf(why, whylen, "%s", strerror(errno));
		return -1;
	}
	len = sizeof(acc);
	if (type != SOCK_STREAM || getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN,
	    &acc, &len) != 0 || !acc) {
		snprintf(why, whylen, "not a listening stream socket");
		return -1;
	}
	return 0;
}

/* Start MHD on a duplicate of fd. Returns the daemon or NULL with a reason
 * in why; fd itself stays ours either way. */
static struct MHD_Daemon *
start_mhd(struct http_server *s, int fd, char *why, size_t whylen)
{
	struct MHD_Daemon *d;
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	struct stat st, st2;
	unsigned flags = MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
	int dupfd;

	if (getsockname(fd, (struct sockaddr *)&ss, &sslen) == 0 &&
	    ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	if (fstat(fd, &st) != 0) {
		snprintf(why, whylen, "fstat: %s", strerror(errno));
		return NULL;
	}
	dupfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (dupfd < 0) {
		snprintf(why, whylen, "dup: %s", strerror(errno));
		return NULL;
	}
	if (fcntl(dupfd, F_SETFL, fcntl(dupfd, F_GETFL) | O_NONBLOCK) != 0) {
		snprintf(why, whylen, "fcntl: %s", strerror(errno));
		close(dupfd);
		return NULL;
	}
	snprintf(why, whylen, "libmicrohttpd did not start");
	s->start_err = why;
	s->start_errlen = whylen;
	d = MHD_start_daemon(flags, 0, NULL, NULL, access_cb, s,
	    MHD_OPTION_LISTEN_SOCKET, (MHD_socket)dupfd,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_IDLE_TIMEOUT_S,
	    MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTP_MAX_CONNS,
	    MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)HTTP_MAX_CONNS_PER_IP,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_CONN_MEMORY,
	    MHD_OPTION_EXTERNAL_LOGGER, mhd_log_cb, s,
	    MHD_OPTION_NOTIFY_CONNECTION, notify_conn_cb, s,
	    MHD_OPTION_NOTIFY_COMPLETED, completed_cb, s,
	    MHD_OPTION_END);
	s->start_err = NULL;
	if (d == NULL && fstat(dupfd, &st2) == 0 && st2.st_dev == st.st_dev &&
	    st2.st_ino == st.st_ino)
		close(dupfd);
	return d;
}

int
http_server_new(uv_loop_t *loop, const struct http_listen *where,
    const struct http_route *routes, size_t n_routes, void *arg,
    struct http_server **out, char *err, size_t errlen)
{
	struct http_server *s;
	const union MHD_DaemonInfo *info;
	char why[256];
	int fd = -1, ours = 0, made_path = 0, rc;

	s = mem_calloc(1, sizeof(*s));
	if (s == NULL) {
		snprintf(err, errlen, "http: out of memory");
		return -1;
	}
	s->loop = loop;
	s->routes = routes;
	s->n_routes = n_routes;
	s->arg = arg;
	if (where->addr != NULL) {
		conf_addr_str(where->addr, s->name, sizeof(s->name));
		fd = listen_tcp(where->addr, why, sizeof(why));
		ours = 1;
	} else if (where->unix_path != NULL) {
		snprintf(s->name, sizeof(s->name), "%s", where->unix_path);
		s->unix_path = mem_strdup(where->unix_path);
		if (s->unix_path == NULL)
			snprintf(why, sizeof(why), "out of memory");
		else
			fd = listen_unix(where->unix_path, why, sizeof(why));
		ours = 1;
		made_path = fd >= 0;
	} else if (where->fd >= 0) {
		snprintf(s->name, sizeof(s->name), "fd %d", where->fd);
		if (check_listening(where->fd, why, sizeof(why)) == 0)
			fd = where->fd;
	} else {
		snprintf(s->name, sizeof(s->name), "?");
		snprintf(why, sizeof(why), "no address, path or descriptor");
	}
	if (fd < 0)
		goto fail;
	s->d = start_mhd(s, fd, why, sizeof(why));
	if (s->d == NULL)
		goto fail;
	info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_EPOLL_FD);
	if (info == NULL) {
		snprintf(why, sizeof(why), "no epoll descriptor");
		goto fail;
	}
	rc = uv_poll_init(loop, &s->poll, info->epoll_fd);
	if (rc != 0) {
		snprintf(why, sizeof(why), "uv_poll_init: %s", uv_strerror(rc));
		goto fail;
	}
	(void)uv_timer_init(loop, &s->timer);
	(void)uv_idle_init(loop, &s->again);
	s->poll.data = s;
	s->timer.data = s;
	s->again.data = s;
	s->open_handles = 3;
	rc = uv_poll_start(&s->poll, UV_READABLE, poll_cb);
	if (rc != 0) {
		snprintf(err, errlen, "http %s: uv_poll_start: %s", s->name,
		    uv_strerror(rc));
		if (ours)
			close(fd);
		http_server_close(s);
		return -1;
	}
	/* MHD works on its own duplicate; the server owns a passed fd. */
	close(fd);
	rearm(s);
	log_info("http: listening on %s", s->name);
	*out = s;
	return 0;

fail:
	snprintf(err, errlen, "http %s: %s", s->name, why);
	if (s->d != NULL)
		MHD_stop_daemon(s->d);
	if (fd >= 0 && ours)
		close(fd);
	if (made_path)
		(void)unlink(s->unix_path);
	mem_free(s->unix_path);
	mem_free(s);
	return -1;
}
