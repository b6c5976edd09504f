/* log.h: leveled logging to stderr (foreground) or syslog (daemon).
 *
 * The level and destination are set once at startup by main.c; the module
 * owns that state. Every line is one event, prefixed by its level, so that
 * "grep warn" finds the problems.
 */
#ifndef DOTPROXY_LOG_H
#define DOTPROXY_LOG_H

#include <stddef.h>

enum log_level {
	LOGL_ERR = 0,
	LOGL_WARN = 1,
	LOGL_INFO = 2,
	LOGL_DEBUG = 3,
};

/* Choose the level (messages above it are dropped) and the destination:
 * to_stderr != 0 writes to stderr, else syslog(3) with ident "dotproxy". */
void log_open(enum log_level level, int to_stderr);

/* Change the level (a reload); the destination stays. */
void log_set_level(enum log_level level);

/* Non-zero when a message at this level would be written; lets callers skip
 * formatting work (e.g. name decoding) on the hot path. */
int log_enabled(enum log_level level);

void log_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

struct sockaddr;

/* Format an IPv4/IPv6 socket address as "addr@port" (the config's own
 * form) into buf; "-" for NULL or another family. */
void log_addr_str(const struct sockaddr *sa, char *buf, size_t cap);

/* For startup errors and broken invariants only: log and exit(1). */
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
