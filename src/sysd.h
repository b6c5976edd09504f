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
 * at start into a struct sysd_fds. A listener takes the one that matches its
 * address and type exactly (family, address, port; UDP or TCP) instead of
 * binding; addresses without one are bound as usual. A handed-over socket
 * that no listen address takes is a configuration error: dotproxy refuses to
 * start rather than leave a socket systemd thinks is served unread.
 *
 * Everything here runs on the loop's thread.
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
	int taken;                    /* handed to a listener */
};

struct sysd_fds {
	struct sysd_fd fd[SYSD_MAX_FDS];
	size_t n;
};

/* The sockets systemd handed over (sd_listen_fds with LISTEN_PID checked;
 * the LISTEN_* variables are unset so they are not inherited). Call before
 * anything forks. f->n is 0 when there are none. Returns 0, or -1 with
 * "socket activation: reason" in err (LISTEN_FDS unreadable, more than
 * SYSD_MAX_FDS sockets). The fds stay open and belong to f until taken. */
int sysd_fds_init(struct sysd_fds *f, char *err, size_t errlen);

/* The first untaken socket of type socktype (SOCK_DGRAM or SOCK_STREAM)
 * bound to exactly a's family, address and port; it is marked taken and
 * from then on belongs to the caller (a libuv handle, which closes it).
 * Returns the fd, or -1 when none matches. f may be NULL (returns -1). */
int sysd_fds_take(struct sysd_fds *f, const struct conf_addr *a,
    int socktype);

/* 0 when every socket in f was taken; else -1 with "socket activation:
 * fd N (udp ADDR@PORT) matches no listen address" for the first one that
 * was not. Closes nothing. */
int sysd_fds_check_unused(const struct sysd_fds *f, char *err,
    size_t errlen);

/* Checks, before anything is bound, that the listen addresses of c would
 * take every socket in f (takes on a copy, then sysd_fds_check_unused).
 * Returns 0, or -1 with the message of sysd_fds_check_unused. f itself is
 * not changed. */
int sysd_fds_check_conf(const struct sysd_fds *f, const struct conf *c,
    char *err, size_t errlen);

/* The watchdog: a timer on the loop, not keeping the loop alive (unref'd),
 * that sends WATCHDOG=1 every half of $WATCHDOG_USEC when systemd asked for
 * it for this process. Call after any fork (the PID is checked). */
struct sysd_watchdog {
	uv_timer_t timer;
	int running;
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
