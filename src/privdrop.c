/* privdrop.c: become an unprivileged user with no capability (libcap-ng).
 *
 * capng_change_id() does the ordered dance (keep capabilities across the
 * uid change, set the gid, drop supplementary groups, set the uid, clear
 * the bounding set) and, because capng_clear() emptied the set it applies,
 * ends with no capability at all. The kernel is then asked what really
 * happened (getresuid, getresgid, getgroups, capng_get_caps_process): the
 * drop counts only when every id is the account's and every capability set
 * is empty, and setuid(0) must fail. Any error is returned to main, which
 * stops the start: after a failed capng_change_id the process may be
 * half-way, and the only safe thing then is to exit.
 */
/* getresuid(2) and getresgid(2) are GNU extensions. */
#define _GNU_SOURCE

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cap-ng.h>

#include "log.h"
#include "privdrop.h"

/* What capng_change_id's negative return values mean (its man page). */
static const char *
change_id_error(int rc)
{
	switch (rc) {
	case -1: return "libcap-ng is not initialised";
	case -2: return "cannot keep capabilities across the uid change";
	case -3: return "cannot apply the intermediate capabilities";
	case -4: return "cannot change the gid";
	case -5: return "cannot drop the supplementary groups";
	case -6: return "cannot change the uid";
	case -7: return "cannot stop keeping capabilities";
	case -8: return "cannot clear the capability bounding set";
	case -9: return "cannot drop CAP_SETPCAP or the ambient capabilities";
	case -10: return "cannot initialise the supplementary groups";
	default: return "unknown error";
	}
}

/* A failed lookup is "no such ..." unless errno names a real error: glibc
 * leaves errno 0 or sets ENOENT, ESRCH, EBADF or EPERM for a name that is
 * simply not there. */
static int
lookup_failed(int e)
{
	return e != 0 && e != ENOENT && e != ESRCH && e != EBADF && e != EPERM;
}

int
privdrop_init(struct privdrop *p, const struct conf *conf, char *err,
    size_t errlen)
{
	struct passwd *pw;
	struct group *gr;

	memset(p, 0, sizeof(*p));
	if (conf->user[0] == '\0')
		return 0;
	errno = 0;
	pw = getpwnam(conf->user);
	if (pw == NULL) {
		if (lookup_failed(errno))
			snprintf(err, errlen, "user %s: cannot look it up: %s",
			    conf->user, strerror(errno));
		else
			snprintf(err, errlen, "user %s: no such user",
			    conf->user);
		return -1;
	}
	p->uid = pw->pw_uid;
	p->gid = pw->pw_gid;
	snprintf(p->user, sizeof(p->user), "%s", conf->user);
	if (conf->group[0] != '\0') {
		errno = 0;
		gr = getgrnam(conf->group);
		if (gr == NULL) {
			if (lookup_failed(errno))
				snprintf(err, errlen, "group %s: cannot look "
				    "it up: %s", conf->group, strerror(errno));
			else
				snprintf(err, errlen, "group %s: no such "
				    "group", conf->group);
			return -1;
		}
		p->gid = gr->gr_gid;
		snprintf(p->group, sizeof(p->group), "%s", conf->group);
	} else {
		gr = getgrgid(p->gid);
		if (gr != NULL)
			snprintf(p->group, sizeof(p->group), "%s",
			    gr->gr_name);
		else
			snprintf(p->group, sizeof(p->group), "%lu",
			    (unsigned long)p->gid);
	}
	if (p->uid == 0) {
		snprintf(err, errlen, "user %s: it is root (uid 0), so nothing "
		    "would be dropped; name an unprivileged user, or remove "
		    "the user line to run as root", p->user);
		return -1;
	}
	if (p->gid == 0) {
		snprintf(err, errlen, "group %s: it is gid 0, root's group; "
		    "name another group", p->group);
		return -1;
	}
	if (geteuid() != 0 && (getuid() != p->uid || geteuid() != p->uid)) {
		snprintf(err, errlen, "user %s (uid %lu): started as uid %lu, "
		    "not as root, so cannot become another user; start as "
		    "root or as %s", p->user, (unsigned long)p->uid,
		    (unsigned long)geteuid(), p->user);
		return -1;
	}
	if (geteuid() != 0 && (getgid() != p->gid || getegid() != p->gid)) {
		snprintf(err, errlen, "group %s (gid %lu): started as gid %lu, "
		    "not as root, so cannot change the group", p->group,
		    (unsigned long)p->gid, (unsigned long)getegid());
		return -1;
	}
	p->enabled = 1;
	return 0;
}

/* Every capability set of the process, as the kernel has it now, is empty;
 * bounds too when check_bounds. Returns 0, or -1 with the set in err. */
static int
check_no_caps(int check_bounds, char *err, size_t errlen)
{
	unsigned i;

	if (capng_get_caps_process() != 0) {
		snprintf(err, errlen, "cannot read the capabilities back");
		return -1;
	}
	if (capng_have_capabilities(CAPNG_SELECT_CAPS) != CAPNG_NONE ||
	    capng_have_permitted_capabilities() != CAPNG_NONE) {
		snprintf(err, errlen, "capabilities remain (effective or "
		    "permitted)");
		return -1;
	}
	if (capng_have_capabilities(CAPNG_SELECT_AMBIENT) != CAPNG_NONE) {
		snprintf(err, errlen, "ambient capabilities remain");
		return -1;
	}
	if (check_bounds &&
	    capng_have_capabilities(CAPNG_SELECT_BOUNDS) != CAPNG_NONE) {
		snprintf(err, errlen, "the capability bounding set is not "
		    "empty");
		return -1;
	}
	/* capng_have_capabilities does not look at the inheritable set. */
	for (i = 0; i <= CAP_LAST_CAP; i++) {
		if (capng_have_capability(CAPNG_INHERITABLE, i)) {
			snprintf(err, errlen, "inheritable capability %s "
			    "remains", capng_capability_to_name(i));
			return -1;
		}
	}
	return 0;
}

/* The ids are the account's in every slot, no supplementary group is
 * left, and root cannot be got back. */
static int
check_ids(const struct privdrop *p, char *err, size_t errlen)
{
	uid_t ru, eu, su;
	gid_t rg, eg, sg;

	if (getresuid(&ru, &eu, &su) != 0 || getresgid(&rg, &eg, &sg) != 0) {
		snprintf(err, errlen, "cannot read the ids back: %s",
		    strerror(errno));
		return -1;
	}
	if (ru != p->uid || eu != p->uid || su != p->uid) {
		snprintf(err, errlen, "uids are %lu/%lu/%lu, not %lu",
		    (unsigned long)ru, (unsigned long)eu, (unsigned long)su,
		    (unsigned long)p->uid);
		return -1;
	}
	if (rg != p->gid || eg != p->gid || sg != p->gid) {
		snprintf(err, errlen, "gids are %lu/%lu/%lu, not %lu",
		    (unsigned long)rg, (unsigned long)eg, (unsigned long)sg,
		    (unsigned long)p->gid);
		return -1;
	}
	if (getgroups(0, NULL) != 0) {
		snprintf(err, errlen, "supplementary groups remain");
		return -1;
	}
	if (setuid(0) == 0 || seteuid(0) == 0) {
		snprintf(err, errlen, "uid 0 can still be got back");
		return -1;
	}
	return 0;
}

/* Not root to begin with, and already p's user (privdrop_init checked):
 * only capabilities the process was given can be dropped. The bounding set
 * stays, as changing it needs CAP_SETPCAP; with nothing permitted and no
 * exec it grants nothing. */
static int
drop_caps_only(const struct privdrop *p, char *err, size_t errlen)
{
	char why[128];

	capng_clear(CAPNG_SELECT_CAPS);
	if (capng_apply(CAPNG_SELECT_CAPS) != 0) {
		snprintf(err, errlen, "user %s: cannot drop capabilities",
		    p->user);
		return -1;
	}
	if (check_no_caps(0, why, sizeof(why)) != 0) {
		snprintf(err, errlen, "user %s: after dropping capabilities: "
		    "%s", p->user, why);
		return -1;
	}
	log_info("running as user %s (uid %lu) already, not root: no "
	    "privileges to drop, no capabilities", p->user,
	    (unsigned long)p->uid);
	return 0;
}

int
privdrop_apply(const struct privdrop *p, char *err, size_t errlen)
{
	char why[128];
	int rc;

	if (!p->enabled)
		return 0;
	if (geteuid() != 0)
		return drop_caps_only(p, err, errlen);
	/* Keep nothing: capng_change_id applies this empty set. */
	capng_clear(CAPNG_SELECT_BOTH);
	rc = capng_change_id((int)p->uid, (int)p->gid,
	    CAPNG_DROP_SUPP_GRP | CAPNG_CLEAR_BOUNDING);
	if (rc != 0) {
		snprintf(err, errlen, "cannot drop privileges to user %s (uid "
		    "%lu) and group %s (gid %lu): %s (capng_change_id %d)",
		    p->user, (unsigned long)p->uid, p->group,
		    (unsigned long)p->gid, change_id_error(rc), rc);
		return -1;
	}
	if (check_ids(p, why, sizeof(why)) != 0 ||
	    check_no_caps(1, why, sizeof(why)) != 0) {
		snprintf(err, errlen, "dropping privileges to user %s did not "
		    "work: %s", p->user, why);
		return -1;
	}
	log_info("dropped privileges to user %s (uid %lu), no capabilities "
	    "(group %s, gid %lu, no supplementary groups)", p->user,
	    (unsigned long)p->uid, p->group, (unsigned long)p->gid);
	return 0;
}
