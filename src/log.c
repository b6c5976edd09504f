/* log.c: leveled logging to stderr or syslog.
 *
 * Lines on stderr carry a timestamp and the level so that a test harness or
 * an operator can read them without a syslog daemon.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <syslog.h>
#include <time.h>

#include "log.h"

static enum log_level cur_level = LOGL_INFO;
static int use_stderr = 1;

static const char *const level_name[] = { "error", "warn", "info", "debug" };
static const int level_prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };

void
log_open(enum log_level level, int to_stderr)
{
	__atomic_store_n(&cur_level, level, __ATOMIC_RELAXED);
	use_stderr = to_stderr;
	if (!to_stderr)
		openlog("dotproxy", LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

void
log_set_level(enum log_level level)
{
	__atomic_store_n(&cur_level, level, __ATOMIC_RELAXED);
}

int
log_enabled(enum log_level level)
{
	/* Read by every worker's thread, set by the main one on reload. */
	return level <= __atomic_load_n(&cur_level, __ATOMIC_RELAXED);
}

static void
vlog(enum log_level level, const char *fmt, va_list ap)
{
	char msg[1024];
	char ts[32];
	struct timespec now;
	struct tm tm;

	if (!log_enabled(level))
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (!use_stderr) {
		syslog(level_prio[level], "%s: %s", level_name[level], msg);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(stderr, "%s.%03ldZ dotproxy %s: %s\n", ts,
	    (long)(now.tv_nsec / 1000000), level_name[level], msg);
}

#define LOG_FN(fn, level)                     \
	void fn(const char *fmt, ...)         \
	{                                     \
		va_list ap;                   \
		va_start(ap, fmt);            \
		vlog(level, fmt, ap);         \
		va_end(ap);                   \
	}

LOG_FN(log_err, LOGL_ERR)
LOG_FN(log_warn, LOGL_WARN)
LOG_FN(log_info, LOGL_INFO)
LOG_FN(log_debug, LOGL_DEBUG)

void
log_addr_str(const struct sockaddr *sa, char *buf, size_t cap)
{
	const struct sockaddr_in *in4 = (const struct sockaddr_in *)sa;
	const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
	char host[INET6_ADDRSTRLEN];

	if (sa != NULL && sa->sa_family == AF_INET &&
	    inet_ntop(AF_INET, &in4->sin_addr, host, sizeof(host)) != NULL)
		snprintf(buf, cap, "%s@%u", host, ntohs(in4->sin_port));
	else if (sa != NULL && sa->sa_family == AF_INET6 &&
	    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host)) != NULL)
		snprintf(buf, cap, "%s@%u", host, ntohs(in6->sin6_port));
	else
		snprintf(buf, cap, "-");
}

void
fatal(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(LOGL_ERR, fmt, ap);
	va_end(ap);
	exit(1);
}
