/* sysd.h: systemd integration: readiness, reload and stop notification,
 * the watchdog, and sockets handed over by socket activation.
 *
 * Notification (sd_notify(3)) goes to $NOTIFY_SOCKET; without it every
 * notify function here is a no-op, so dotproxy behaves the same outside
 * systemd. READY=1 means what systemd's Type=notify takes it to mean: every
 * listener is bound and the loop is about to run, so a query sent from then
 * on is answered. The watchdog (WatchdogSec=, i.e. $WATCHDOG_USEC and
 * $WATCHDOG_PID) is a timer on the event loop that sends WATCHDOG=1 every
 * half period: a loop that is stuck stops the pings and systemd acts, which
 * is the point of it.
 *
 * Socket activation (sd_listen_fds(3)): the handed-over sockets are read once
 * at start into a struct sysd_fds. A listener uses the one that matches its
 * address and type exactly (family, address, port; UDP or TCP) instead of
 * binding; addresses without one are bound as usual. Each listener gets a
 * descriptor of its own for the socket (a duplicate), so that with several
 * workers every worker's loop serves the same socket; the originals are
 * closed once every listener has started. A handed-over socket that no
 * listen address matches is a configuration error: dotproxy refuses to
 * start rather than leave a socket systemd thinks is served unread.
 *
 * Everything here runs on the main loop's thread, except sysd_fds_dup, which
 * only reads its struct sysd_fds and may run on several threads at once.
 */
#ifndef DOTPROXY_SYSD_H
#define DOTPROXY_SYSD_H

#include <stddef.h>
#include <sys/socket.h>
#include <uv.h>

#include "conf.h"

/* Two sockets (UDP and TCP) for each listen address at most. */
#define SYSD_MAX_FDS (2 * CONF_MAX_LISTEN)

struct sysd_fd {
	int fd;
	int socktype;                 /* SOCK_DGRAM, SOCK_STREAM, or -1 when
	                               * not an IPv4/IPv6 socket */
	struct sockaddr_storage ss;   /* its bound address (getsockname) */
	socklen_t len;
	int matched;                  /* a listen address matches it (set on
	                               * sysd_fds_check_conf's copy) */
};

struct sysd_fds {
	struct sysd_fd fd[SYSD_MAX_FDS];
	size_t n;
};

/* The sockets systemd handed over (sd_listen_fds with LISTEN_PID checked;
 * the LISTEN_* variables are unset so they are not inherited). Call before
 * anything forks. f->n is 0 when there are none. Returns 0, or -1 with
 * "socket activation: reason" in err (LISTEN_FDS unreadable, more than
 * SYSD_MAX_FDS sockets). The fds stay open and belong to f until
 * sysd_fds_close. */
int sysd_fds_init(struct sysd_fds *f, char *err, size_t errlen);

/* Describe fd (its type and bound address, as sysd_fds_init does for each
 * handed-over socket) and add it to f, which owns it from then on. For
 * sockets that reach us another way than LISTEN_FDS, such as a test's.
 * Returns 0, or -ENOSPC when f holds SYSD_MAX_FDS already (fd is then
 * left to the caller). */
int sysd_fds_add(struct sysd_fds *f, int fd);

/* A descriptor of the caller's own for the socket of type socktype
 * (SOCK_DGRAM or SOCK_STREAM) bound to exactly a's family, address and
 * port: a duplicate (F_DUPFD_CLOEXEC) that the caller owns (a libuv
 * handle, which closes it), while the original stays in f until
 * sysd_fds_close. So every listener that asks for the same address, one
 * per worker, serves the same socket. f is only read: threads may call
 * this at once with the same f. Returns 0 with *fd the duplicate and
 * *from the handed-over descriptor's number (for logs); 0 with *fd and
 * *from -1 when no socket matches (f may be NULL); or a negative errno
 * (-EMFILE, ...) when the duplicate cannot be made: then *fd is -1,
 * nothing is open, and *from names the socket that matched. */
int sysd_fds_dup(const struct sysd_fds *f, const struct conf_addr *a,
    int socktype, int *fd, int *from);

/* Close every handed-over socket in f: call once every listener that
 * uses them has started (each holds its duplicate). f holds no socket
 * afterwards (f->n is 0), as without socket activation. */
void sysd_fds_close(struct sysd_fds *f);

/* Checks, before anything is bound, that the listen addresses of c match
 * every socket in f (on a copy of f). Returns 0, or -1 with "socket
 * activation: fd N (udp ADDR@PORT) matches no listen address" (or "fd N
 * is not a UDP or TCP socket over IPv4 or IPv6") in err for the first
 * that no address matches. f itself is not changed. */
int sysd_fds_check_conf(const struct sysd_fds *f, const struct conf *c,
    char *err, size_t errlen);

/* The watchdog: a timer on the loop, not keeping the loop alive (unref'd),
 * that sends WATCHDOG=1 every half of $WATCHDOG_USEC when systemd asked for
 * it for this process. Call after any fork (the PID is checked). */
struct sysd_watchdog {
	uv_timer_t timer;
	int running;
	/* Set before start, or NULL: a ping goes out only while alive(arg)
	 * says 1, so that a stuck worker thread, not only a stuck main loop,
	 * gets the service restarted. */
	int (*alive)(void *arg);
	void *alive_arg;
};

/* Starts pinging when the watchdog is enabled; otherwise does nothing.
 * Returns 0, or a libuv error from the timer. */
int sysd_watchdog_start(struct sysd_watchdog *w, uv_loop_t *loop);

/* Stops and closes the timer if it was started; w may be reused after the
 * loop has run the close callback. Safe to call when it never started. */
void sysd_watchdog_close(struct sysd_watchdog *w);

/* READY=1 with a STATUS= line. At start: once every listener is bound and
 * the loop is about to run. After a reload: once the new configuration is
 * in effect (pairs with sysd_reloading). */
void sysd_ready(void);

/* RELOADING=1 (with MONOTONIC_USEC=, which Type=notify-reload in systemd
 * 253 and later requires) and a STATUS= line: call when a reload begins,
 * then sysd_ready() when it is done, whether it worked or the old
 * configuration was kept. */
void sysd_reloading(void);

/* STOPPING=1 and a STATUS= line: call once, when shutting down starts. */
void sysd_stopping(void);

/* A free-form STATUS= line (printf format), shown by systemctl status. */
void sysd_status(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

#endif
