/* http_probe.c: src/http.c on one libuv loop next to a UDP echo, for
 * tests/http_probe.py.
 *
 * Usage: http_probe TCP_ADDR@PORT UNIX_PATH UDP_ADDR@PORT
 *
 * Serves the same routes on a TCP address, on a Unix socket path and on a
 * listening socket it makes itself on 127.0.0.1, port 0, and passes in as a
 * descriptor; and echoes every UDP datagram on UDP_ADDR, on the same loop,
 * so that the script can see whether HTTP clients slow the loop down.
 * Routes: GET /hello -> "hello\n"; POST /echo?x=V -> V (400 without x);
 * GET /big -> 4000 lines "NNNNNN xxx...x\n" of 50 bytes; GET /nomem -> the
 * body's allocation fails, so 500; GET /close -> "bye\n" with Connection:
 * close; POST /close-self -> closes the server it came in on, from inside
 * its route function.
 *
 * Before serving it checks http_server_new's errors (a second server on
 * the same TCP address or Unix path, a path that is a regular file, a
 * descriptor that is not a listening socket, every allocation failing in
 * turn) and prints "check NAME: message" for each. Then it prints
 * "ready tcp|unix|udp|fd ..." lines and a last "ready". SIGTERM closes
 * everything; the loop must then close cleanly (exit 0, after printing
 * "max loop turn cpu N ms": the most CPU time one turn of the loop took),
 * else exit 1.
 * HTTP_PROBE_DEBUG=1 turns on debug logging.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "conf.h"
#include "http.h"
#include "log.h"
#include "mem.h"

#define BIG_LINES 4000

struct probe;

/* What a route function gets: the probe and the server it came in on. */
struct served {
	struct probe *p;
	struct http_server *srv;
	const char *name;
};

struct probe {
	uv_loop_t *loop;
	uv_signal_t sigterm;
	uv_prepare_t prepare;  /* measures the CPU time of each loop turn */
	uint64_t cpu_last_ns, cpu_max_ns;
	uv_udp_t udp;
	struct served tcp, unix_, fd;
	char udp_buf[65536];
};

static void
hello(void *arg, const struct http_request *req, struct http_response *resp)
{
	(void)arg;
	(void)req;
	resp->content_type = "text/plain; version=0.0.4";
	http_response_printf(resp, "hello\n");
}

static void
echo(void *arg, const struct http_request *req, struct http_response *resp)
{
	const char *x = http_request_arg(req, "x");

	(void)arg;
	if (x == NULL) {
		resp->status = 400;
		http_response_printf(resp, "missing x\n");
		return;
	}
	http_response_printf(resp, "%s", x);
}

static void
big(void *arg, const struct http_request *req, struct http_response *resp)
{
	unsigned i;

	(void)arg;
	(void)req;
	for (i = 0; i < BIG_LINES; i++)
		if (http_response_printf(resp, "%06u %s\n", i,
		    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx") != 0)
			return;
}

static void
nomem(void *arg, const struct http_request *req, struct http_response *resp)
{
	int rc;

	(void)arg;
	(void)req;
	mem_fail_after(0);
	rc = http_response_printf(resp, "never sent\n");
	mem_fail_after(-1);
	if (rc != -ENOMEM || !resp->failed)
		fatal("http_response_printf: want -ENOMEM, got %d", rc);
	/* Sticky: nothing is appended after a failure. */
	if (http_response_printf(resp, "nor this\n") != -ENOMEM)
		fatal("http_response_printf: failure is not sticky");
}

static void
close_conn(void *arg, const struct http_request *req,
    struct http_response *resp)
{
	(void)arg;
	(void)req;
	resp->close = 1;
	http_response_printf(resp, "bye\n");
}

static void
close_self(void *arg, const struct http_request *req,
    struct http_response *resp)
{
	struct served *sv = arg;

	(void)req;
	http_response_printf(resp, "closing %s\n", sv->name);
	printf("closed %s from its route\n", sv->name);
	fflush(stdout);
	http_server_close(sv->srv);
	sv->srv = NULL;
}

static const struct http_route routes[] = {
	{ "/hello", "GET", hello },
	{ "/echo", "POST", echo },
	{ "/big", "GET", big },
	{ "/nomem", "GET", nomem },
	{ "/close", "GET", close_conn },
	{ "/close-self", "POST", close_self },
};
#define N_ROUTES (sizeof(routes) / sizeof(routes[0]))

/* ---- UDP echo ---- */

static void
udp_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct probe *p = h->data;

	(void)suggested;
	buf->base = p->udp_buf;
	buf->len = sizeof(p->udp_buf);
}

static void
udp_recv_cb(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf,
    const struct sockaddr *addr, unsigned flags)
{
	uv_buf_t out;

	(void)flags;
	if (nread <= 0 || addr == NULL)
		return;
	out = uv_buf_init(buf->base, (unsigned)nread);
	(void)uv_udp_try_send(h, &out, 1, addr);
}

/* ---- loop turns ---- */

static uint64_t
thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Runs once per loop turn, just before the loop waits for I/O: the CPU
 * time since the last call is what one turn's callbacks took. Unlike a
 * wall-clock measure, it does not count time the machine gave to other
 * processes. */
static void
prepare_cb(uv_prepare_t *h)
{
	struct probe *p = h->data;
	uint64_t now = thread_cpu_ns();

	if (p->cpu_last_ns != 0 && now - p->cpu_last_ns > p->cpu_max_ns)
		p->cpu_max_ns = now - p->cpu_last_ns;
	p->cpu_last_ns = now;
}

/* ---- start and stop ---- */

static void
sigterm_cb(uv_signal_t *sig, int signum)
{
	struct probe *p = sig->data;

	(void)signum;
	http_server_close(p->tcp.srv);
	http_server_close(p->unix_.srv);
	http_server_close(p->fd.srv);
	p->tcp.srv = p->unix_.srv = p->fd.srv = NULL;
	uv_close((uv_handle_t *)&p->udp, NULL);
	uv_close((uv_handle_t *)&p->sigterm, NULL);
	uv_close((uv_handle_t *)&p->prepare, NULL);
}

static int
start(struct probe *p, struct served *sv, const char *name,
    const struct http_listen *where)
{
	char err[512];

	sv->p = p;
	sv->name = name;
	if (http_server_new(p->loop, where, routes, N_ROUTES, sv, &sv->srv, err,
	    sizeof(err)) != 0) {
		printf("failed %s: %s\n", name, err);
		return -1;
	}
	return 0;
}

/* want: a fixed string the error must contain. */
static int
check_refused(struct probe *p, const char *name,
    const struct http_listen *where, const char *want)
{
	struct http_server *s = NULL;
	char err[512] = "";

	if (http_server_new(p->loop, where, routes, N_ROUTES, NULL, &s, err,
	    sizeof(err)) == 0) {
		printf("FAIL check %s: a server was made\n", name);
		http_server_close(s);
		return -1;
	}
	if (strstr(err, want) == NULL) {
		printf("FAIL check %s: \"%s\" lacks \"%s\"\n", name, err, want);
		return -1;
	}
	printf("check %s: %s\n", name, err);
	return 0;
}

/* Every allocation of http_server_new fails in turn until one start gets
 * through: each failure must leave no file and (under ASan) no leak. */
static int
check_nomem(struct probe *p, const char *unix_path)
{
	struct http_listen where = { NULL, NULL, -1 };
	struct http_server *s = NULL;
	char path[200], err[512];
	struct stat st;
	long n;
	int rc;

	snprintf(path, sizeof(path), "%s.nomem", unix_path);
	where.unix_path = path;
	for (n = 0; n < 20; n++) {
		mem_fail_after(n);
		rc = http_server_new(p->loop, &where, routes, N_ROUTES, NULL, &s,
		    err, sizeof(err));
		mem_fail_after(-1);
		if (rc == 0)
			break;
		if (lstat(path, &st) == 0) {
			printf("FAIL check nomem-%ld: %s left behind (%s)\n", n,
			    path, err);
			return -1;
		}
	}
	if (rc != 0) {
		printf("FAIL check nomem: never started: %s\n", err);
		return -1;
	}
	http_server_close(s);
	if (lstat(path, &st) == 0) {
		printf("FAIL check nomem: %s not removed on close\n", path);
		return -1;
	}
	printf("check nomem: started after %ld failed allocations\n", n);
	return 0;
}

/* A TCP socket of our own on 127.0.0.1, port 0, for the fd listener. */
static int
own_listener(unsigned *port)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	int fd;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
	    listen(fd, 16) != 0 ||
	    getsockname(fd, (struct sockaddr *)&sin, &len) != 0) {
		close(fd);
		return -1;
	}
	*port = ntohs(sin.sin_port);
	return fd;
}

static int
checks(struct probe *p, const struct conf_addr *tcp, const char *unix_path)
{
	struct http_listen where = { NULL, NULL, -1 };
	char file[200];
	int fd, bad = 0;

	where.addr = tcp;
	bad |= check_refused(p, "tcp-in-use", &where, "Address already in use");
	where.addr = NULL;
	where.unix_path = unix_path;
	bad |= check_refused(p, "unix-in-use", &where,
	    "in use by another process");
	snprintf(file, sizeof(file), "%s.file", unix_path);
	fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		printf("FAIL check unix-file: %s: %s\n", file, strerror(errno));
		return -1;
	}
	close(fd);
	where.unix_path = file;
	bad |= check_refused(p, "unix-not-socket", &where, "not a socket");
	unlink(file);
	where.unix_path = NULL;
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	where.fd = fd;
	bad |= check_refused(p, "fd-not-listening", &where,
	    "not a listening stream socket");
	/* Refused: the descriptor is still the caller's, and open. */
	if (fcntl(fd, F_GETFD) < 0) {
		printf("FAIL check fd-not-listening: fd closed\n");
		bad = -1;
	}
	close(fd);
	where.fd = -1;
	where.unix_path = "";
	bad |= check_refused(p, "unix-empty", &where, "path empty");
	bad |= check_nomem(p, unix_path);
	return bad;
}

int
main(int argc, char **argv)
{
	struct probe p;
	struct conf_addr tcp, udp;
	struct http_listen where = { NULL, NULL, -1 };
	char err[256];
	unsigned fd_port = 0;
	int rc, fd;

	if (argc != 4) {
		fprintf(stderr, "usage: http_probe TCP_ADDR@PORT UNIX_PATH "
		    "UDP_ADDR@PORT\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	log_open(getenv("HTTP_PROBE_DEBUG") != NULL ? LOGL_DEBUG : LOGL_INFO,
	    1);
	if (conf_parse_addr(argv[1], 80, &tcp, err, sizeof(err)) != 0 ||
	    conf_parse_addr(argv[3], 53, &udp, err, sizeof(err)) != 0) {
		fprintf(stderr, "http_probe: %s\n", err);
		return 2;
	}
	memset(&p, 0, sizeof(p));
	p.loop = uv_default_loop();

	where.addr = &tcp;
	if (start(&p, &p.tcp, "tcp", &where) != 0)
		return 1;
	where.addr = NULL;
	where.unix_path = argv[2];
	if (start(&p, &p.unix_, "unix", &where) != 0)
		return 1;
	where.unix_path = NULL;
	fd = own_listener(&fd_port);
	if (fd < 0) {
		printf("failed fd: %s\n", strerror(errno));
		return 1;
	}
	where.fd = fd;
	if (start(&p, &p.fd, "fd", &where) != 0)
		return 1;
	/* The server owns it now: the number must be closed. */
	if (fcntl(fd, F_GETFD) >= 0) {
		printf("FAIL fd %d still open after http_server_new\n", fd);
		return 1;
	}

	rc = uv_udp_init(p.loop, &p.udp);
	if (rc == 0) {
		p.udp.data = &p;
		rc = uv_udp_bind(&p.udp, (const struct sockaddr *)&udp.ss, 0);
	}
	if (rc == 0)
		rc = uv_udp_recv_start(&p.udp, udp_alloc_cb, udp_recv_cb);
	if (rc != 0) {
		printf("failed udp: %s\n", uv_strerror(rc));
		return 1;
	}
	uv_signal_init(p.loop, &p.sigterm);
	p.sigterm.data = &p;
	uv_signal_start(&p.sigterm, sigterm_cb, SIGTERM);
	uv_prepare_init(p.loop, &p.prepare);
	p.prepare.data = &p;
	uv_prepare_start(&p.prepare, prepare_cb);

	if (checks(&p, &tcp, argv[2]) != 0)
		return 1;
	printf("ready tcp %s\nready unix %s\nready udp %s\nready fd %u\n"
	    "ready\n", argv[1], argv[2], argv[3], fd_port);
	fflush(stdout);

	uv_run(p.loop, UV_RUN_DEFAULT);
	rc = uv_loop_close(p.loop);
	if (rc != 0) {
		printf("loop not empty at exit: %s\n", uv_strerror(rc));
		return 1;
	}
	printf("max loop turn cpu %.3f ms\nbye\n", p.cpu_max_ns / 1e6);
	return 0;
}
