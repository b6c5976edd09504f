/* sysd.c: systemd integration through libsystemd: sd_notify and socket
 * activation.
 *
 * libsystemd's sd_notify() already does nothing without $NOTIFY_SOCKET and
 * sd_watchdog_enabled() nothing without $WATCHDOG_USEC, so no function here
 * asks whether it runs under systemd. A failed notification is logged but
 * never stops the service: systemd will notice the missing message itself.
 * The handed-over sockets are described once, at start, by type and bound
 * address; matching is exact (family, address, port, and UDP or TCP), so
 * that a socket is never served under an address it does not have.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "log.h"
#include "sysd.h"

/* Send one notification; a failure is worth a line in the log, since
 * systemd will then time the service out or restart it. */
static void
notify(const char *state, const char *what)
{
	int rc = sd_notify(0, state);

	if (rc < 0)
		log_warn("systemd: cannot send %s: %s", what, strerror(-rc));
}

void
sysd_ready(void)
{
	notify("READY=1\nSTATUS=answering queries", "READY=1");
}

void
sysd_reloading(void)
{
	struct timespec ts;
	char state[128];
	unsigned long long usec;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	usec = (unsigned long long)ts.tv_sec * 1000000ULL +
	    (unsigned long long)ts.tv_nsec / 1000ULL;
	snprintf(state, sizeof(state), "RELOADING=1\nMONOTONIC_USEC=%llu\n"
	    "STATUS=reloading the configuration", usec);
	notify(state, "RELOADING=1");
}

void
sysd_stopping(void)
{
	notify("STOPPING=1\nSTATUS=shutting down", "STOPPING=1");
}

void
sysd_status(const char *fmt, ...)
{
	char state[512];
	va_list ap;
	int n;

	n = snprintf(state, sizeof(state), "STATUS=");
	va_start(ap, fmt);
	vsnprintf(state + n, sizeof(state) - (size_t)n, fmt, ap);
	va_end(ap);
	notify(state, "STATUS=");
}

/* ---- watchdog ---- */

static void
watchdog_cb(uv_timer_t *t)
{
	struct sysd_watchdog *w = t->data;
	int rc;

	if (w->alive != NULL && !w->alive(w->alive_arg)) {
		log_warn("systemd: not sending WATCHDOG=1: a worker is stalled");
		return;
	}
	/* Every half period: a failure is logged at debug level only, or a
	 * broken socket would log twice a period forever. */
	rc = sd_notify(0, "WATCHDOG=1");
	if (rc < 0)
		log_debug("systemd: cannot send WATCHDOG=1: %s",
		    strerror(-rc));
}

int
sysd_watchdog_start(struct sysd_watchdog *w, uv_loop_t *loop)
{
	uint64_t usec = 0, ms;
	int rc;

	w->running = 0;
	rc = sd_watchdog_enabled(0, &usec);
	if (rc < 0)
		log_warn("systemd: watchdog: %s (not pinging)", strerror(-rc));
	if (rc <= 0 || usec == 0)
		return 0;
	ms = usec / 2000;
	if (ms == 0)
		ms = 1;
	rc = uv_timer_init(loop, &w->timer);
	if (rc != 0)
		return rc;
	w->timer.data = w;
	rc = uv_timer_start(&w->timer, watchdog_cb, ms, ms);
	if (rc != 0) {
		uv_close((uv_handle_t *)&w->timer, NULL);
		return rc;
	}
	/* The pings never keep the loop running by themselves; shutdown
	 * closes the timer after STOPPING=1 (systemd stops watching then). */
	uv_unref((uv_handle_t *)&w->timer);
	w->running = 1;
	log_info("systemd watchdog: pinging every %llu ms",
	    (unsigned long long)ms);
	return 0;
}

void
sysd_watchdog_close(struct sysd_watchdog *w)
{
	if (!w->running)
		return;
	w->running = 0;
	uv_timer_stop(&w->timer);
	uv_close((uv_handle_t *)&w->timer, NULL);
}

/* ---- socket activation ---- */

/* Describe fd: its type when it is a UDP or TCP socket over IPv4 or IPv6,
 * else -1, and its bound address. */
static void
describe_fd(struct sysd_fd *d, int fd)
{
	socklen_t len;
	int type = -1, proto = -1;

	memset(d, 0, sizeof(*d));
	d->fd = fd;
	d->socktype = -1;
	len = sizeof(type);
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0)
		return;
	len = sizeof(proto);
	if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &len) != 0)
		return;
	d->len = sizeof(d->ss);
	if (getsockname(fd, (struct sockaddr *)&d->ss, &d->len) != 0) {
		d->len = 0;
		return;
	}
	if (d->ss.ss_family != AF_INET && d->ss.ss_family != AF_INET6)
		return;
	if ((type == SOCK_DGRAM && proto == IPPROTO_UDP) ||
	    (type == SOCK_STREAM && proto == IPPROTO_TCP))
		d->socktype = type;
}

int
sysd_fds_init(struct sysd_fds *f, char *err, size_t errlen)
{
	int i, n;

	memset(f, 0, sizeof(*f));
	n = sd_listen_fds(1);
	if (n < 0) {
		snprintf(err, errlen, "socket activation: cannot use the "
		    "sockets LISTEN_FDS names: %s", strerror(-n));
		return -1;
	}
	if (n > SYSD_MAX_FDS) {
		snprintf(err, errlen, "socket activation: %d sockets handed "
		    "over, at most %d (UDP and TCP for %d listen addresses)",
		    n, SYSD_MAX_FDS, CONF_MAX_LISTEN);
		return -1;
	}
	for (i = 0; i < n; i++)
		(void)sysd_fds_add(f, SD_LISTEN_FDS_START + i);
	return 0;
}

int
sysd_fds_add(struct sysd_fds *f, int fd)
{
	if (f->n >= SYSD_MAX_FDS)
		return -ENOSPC;
	describe_fd(&f->fd[f->n++], fd);
	return 0;
}

static int
same_addr(const struct sockaddr_storage *s, const struct conf_addr *a)
{
	const struct sockaddr_in *x4, *y4;
	const struct sockaddr_in6 *x6, *y6;

	if (s->ss_family != a->ss.ss_family)
		return 0;
	if (s->ss_family == AF_INET) {
		x4 = (const struct sockaddr_in *)s;
		y4 = (const struct sockaddr_in *)&a->ss;
		return x4->sin_port == y4->sin_port &&
		    x4->sin_addr.s_addr == y4->sin_addr.s_addr;
	}
	if (s->ss_family == AF_INET6) {
		x6 = (const struct sockaddr_in6 *)s;
		y6 = (const struct sockaddr_in6 *)&a->ss;
		return x6->sin6_port == y6->sin6_port &&
		    memcmp(&x6->sin6_addr, &y6->sin6_addr,
		    sizeof(x6->sin6_addr)) == 0;
	}
	return 0;
}

/* The index of the first socket in f of type socktype bound to exactly
 * a, or f->n when there is none. */
static size_t
find(const struct sysd_fds *f, const struct conf_addr *a, int socktype)
{
	size_t i;

	for (i = 0; i < f->n; i++)
		if (f->fd[i].socktype == socktype && same_addr(&f->fd[i].ss, a))
			break;
	return i;
}

int
sysd_fds_dup(const struct sysd_fds *f, const struct conf_addr *a,
    int socktype, int *fd, int *from)
{
	size_t i;

	*fd = *from = -1;
	if (f == NULL)
		return 0;
	i = find(f, a, socktype);
	if (i == f->n)
		return 0;
	*from = f->fd[i].fd;
	*fd = fcntl(*from, F_DUPFD_CLOEXEC, 0);
	if (*fd < 0) {
		*fd = -1;
		return -errno;
	}
	return 0;
}

void
sysd_fds_close(struct sysd_fds *f)
{
	size_t i;

	for (i = 0; i < f->n; i++)
		close(f->fd[i].fd);
	f->n = 0;
}

/* 0 when a listen address matched every socket in f; else -1 with the
 * message for the first that none did. */
static int
check_unmatched(const struct sysd_fds *f, char *err, size_t errlen)
{
	const struct sysd_fd *d;
	struct conf_addr a;
	char addr[64];
	size_t i;

	for (i = 0; i < f->n; i++) {
		d = &f->fd[i];
		if (d->matched)
			continue;
		if (d->socktype < 0) {
			snprintf(err, errlen, "socket activation: fd %d is not "
			    "a UDP or TCP socket over IPv4 or IPv6", d->fd);
			return -1;
		}
		memset(&a, 0, sizeof(a));
		memcpy(&a.ss, &d->ss, sizeof(a.ss));
		a.len = d->len;
		conf_addr_str(&a, addr, sizeof(addr));
		snprintf(err, errlen, "socket activation: fd %d (%s %s) "
		    "matches no listen address", d->fd,
		    d->socktype == SOCK_DGRAM ? "udp" : "tcp", addr);
		return -1;
	}
	return 0;
}

int
sysd_fds_check_conf(const struct sysd_fds *f, const struct conf *c,
    char *err, size_t errlen)
{
	static const int types[2] = { SOCK_DGRAM, SOCK_STREAM };
	struct sysd_fds copy;
	size_t i, j, k;

	if (f->n == 0)
		return 0;
	copy = *f;
	for (i = 0; i < c->n_listen; i++)
		for (k = 0; k < 2; k++) {
			j = find(&copy, &c->listen[i], types[k]);
			if (j < copy.n)
				copy.fd[j].matched = 1;
		}
	return check_unmatched(&copy, err, errlen);
}
