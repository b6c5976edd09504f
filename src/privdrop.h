/* privdrop.h: run as an unprivileged user once the sockets are bound.
 *
 * The configuration's "user" (and "group", which defaults to the user's
 * primary group) name the account; with no user nothing changes. The drop
 * happens in two steps so that the likely error, an account that does not
 * exist, is reported before anything is opened: privdrop_init looks the
 * names up at start, privdrop_apply changes the ids after listen_start
 * and before the loop runs. The drop goes through libcap-ng: the uid and
 * gid become the account's (real, effective and saved), supplementary
 * groups are dropped, and NO capability is kept, not even in the bounding
 * set. The result is checked against the kernel; a drop that did not fully
 * happen stops the start, never a half-privileged daemon.
 *
 * Started as a non-root user already, there is nothing to drop: "user"
 * must then name that same user (and "group" its current group), and any
 * capability the process was given (systemd's AmbientCapabilities=) is
 * dropped all the same.
 *
 * NOTE for reload (not implemented here): after the drop, the process can
 * neither bind a port below 1024 nor read files only root may read. A
 * reload whose new configuration needs a new listen address on such a port
 * must log a clear error ("listen ADDR: cannot bind a port below 1024 after
 * dropping privileges to user X; restart dotproxy to use it") and keep
 * the old listeners and configuration. Listeners whose address did not
 * change should be kept as they are (their sockets cannot be bound again);
 * sockets handed over by systemd cannot be got again either. A change of
 * user or group likewise needs a restart.
 */
#ifndef DOTPROXY_PRIVDROP_H
#define DOTPROXY_PRIVDROP_H

#include <stddef.h>
#include <sys/types.h>

#include "conf.h"

struct privdrop {
	int enabled;            /* a user is configured */
	uid_t uid;
	gid_t gid;
	char user[CONF_MAX_NAME];
	char group[CONF_MAX_NAME];
};

/* Look up conf->user and conf->group (getpwnam, getgrnam) into p. With no
 * user, p->enabled is 0 and privdrop_apply will do nothing. Returns 0, or
 * -1 with a message in err: no such user or group, user is root (uid 0),
 * or, when not started as root, a user or group other than the current
 * one. Opens nothing and changes nothing. */
int privdrop_init(struct privdrop *p, const struct conf *conf, char *err,
    size_t errlen);

/* Become p's user and group with no capability, and check that it worked:
 * no uid or gid of the process is 0 any more unless it was p's, no
 * supplementary group, no capability in any set. Logs "dropped privileges
 * to user X (uid N), no capabilities" on success. Returns 0, or -1 with a
 * message in err; on -1 the caller must not go on (the process may be
 * half-way). Does nothing and returns 0 when p->enabled is 0. */
int privdrop_apply(const struct privdrop *p, char *err, size_t errlen);

#endif
