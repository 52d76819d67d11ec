/*
 * privdrop: the order is what matters. Directories are created as root
 * (each component that did not exist is handed to the user: util.h's
 * mkdir_p_owned), then the groups, then the user id. Existing
 * directories are never re-owned: if the user cannot write one, that is
 * an error the administrator must see, not something to "fix" with
 * chown -R. The check (--check-config) takes the same steps but makes
 * nothing: it says which directories the daemon would create.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "idlefetch/foldername.h"
#include "idlefetch/privdrop.h"
#include "idlefetch/util.h"

/*
 * What a pass over the directories does with each: make it (as root,
 * before the switch), or check it (as the user, after).
 */
struct dir_pass {
	uid_t uid;
	gid_t gid;
	const char *user;
	FILE *report; /* check only: where "would be created" goes */
	int (*fn)(const struct dir_pass *p, const char *what, const char *dir,
	    char *err, size_t errlen);
};

/*
 * Every directory the daemon writes into: state_dir, and the Maildir
 * folders of the accounts it fetches (config_wanted); an MDA or LMTP
 * target spools under state_dir.
 */
static int
each_dir(const struct config *cfg, const char *only, const struct dir_pass *p,
    char *err, size_t errlen)
{
	int r = p->fn(p, "state_dir", cfg->state_dir, err, errlen);

	for (size_t i = 0; r == 0 && i < cfg->naccounts; i++) {
		const struct account *a = &cfg->accounts[i];
		char what[300];

		if (a->target.kind != TARGET_MAILDIR ||
		    !config_wanted(cfg, a, only))
			continue;
		snprintf(what, sizeof(what), "[account %s] maildir", a->name);
		for (size_t j = 0; r == 0 && j < a->nfolders; j++) {
			char *dir = folder_maildir(a->maildir, a->folders[j]);

			r = p->fn(p, what, dir, err, errlen);
			free(dir);
		}
	}
	return r;
}

static int
make_dir(const struct dir_pass *p, const char *what, const char *dir,
    char *err, size_t errlen)
{
	int r = mkdir_p_owned(dir, p->uid, p->gid);

	if (r < 0)
		snprintf(err, errlen, "%s %s: %s", what, dir, err_str(r));
	return r;
}

/* After the switch: can the user write where it must? */
static int
writable_dir(const struct dir_pass *p, const char *what, const char *dir,
    char *err, size_t errlen)
{
	int r = access(dir, W_OK | X_OK) < 0 ? -errno : 0;

	if (r < 0)
		snprintf(err, errlen, "%s %s is not writable by user %s: %s",
		    what, dir, p->user, err_str(r));
	return r;
}

/* The nearest parent of dir that exists ("/" or "." at the top). */
static char *
existing_parent(const char *dir)
{
	char *up = xstrdup(dir), *slash;

	do {
		slash = strrchr(up, '/');
		if (slash == NULL) {
			free(up);
			return xstrdup(".");
		}
		if (slash == up) {
			up[1] = '\0';
			break;
		}
		*slash = '\0';
	} while (access(up, F_OK) < 0 && errno == ENOENT);
	return up;
}

/*
 * The same check without the directories having been made: one that is
 * missing is reported, and the user must be able to reach where the
 * daemon would make it (its nearest existing parent).
 */
static int
check_dir(const struct dir_pass *p, const char *what, const char *dir,
    char *err, size_t errlen)
{
	char *up;
	int r;

	if (access(dir, F_OK) < 0 && errno == ENOENT) {
		up = existing_parent(dir);
		r = access(up, X_OK) < 0 ? -errno : 0;
		if (r < 0)
			snprintf(err, errlen, "%s %s does not exist, and user "
			    "%s could not reach it where the daemon would "
			    "create it (%s: %s)",
			    what, dir, p->user, up, err_str(r));
		else
			fprintf(p->report, "idlefetch: %s %s does not exist: "
			    "the daemon would create it, owned by user %s\n",
			    what, dir, p->user);
		free(up);
		return r;
	}
	return writable_dir(p, what, dir, err, errlen);
}

/* pw is a copy: getpwnam's buffer may be reused by initgroups. */
static int
switch_ids(const struct passwd *pw, gid_t gid, char *err, size_t errlen)
{
	if (initgroups(pw->pw_name, gid) < 0 || setgid(gid) < 0 ||
	    setuid(pw->pw_uid) < 0) {
		int r = -errno;

		snprintf(err, errlen, "cannot become user %s: %s",
		    pw->pw_name, err_str(r));
		return r;
	}
	/* The point of no return must really be one. */
	if (setuid(0) == 0 || getuid() != pw->pw_uid ||
	    geteuid() != pw->pw_uid || getgid() != gid || getegid() != gid)
		fatal("still able to regain root after dropping to %s",
		    pw->pw_name);
	/* What a password_command such as `pass` expects to find. */
	setenv("HOME", pw->pw_dir, 1);
	setenv("USER", pw->pw_name, 1);
	setenv("LOGNAME", pw->pw_name, 1);
	return 0;
}

/*
 * Both modes: report NULL makes the directories and switches for good
 * (privdrop_apply); else only reports (privdrop_check).
 */
static int
privdrop(const struct config *cfg, const char *only, FILE *report,
    char *err, size_t errlen)
{
	const struct passwd *found;
	struct passwd copy, *pw = &copy;
	struct dir_pass p = { .user = cfg->user, .report = report };
	int r;

	if (cfg->user == NULL)
		return geteuid() == 0 ? PRIVDROP_ROOT : PRIVDROP_NONE;
	found = getpwnam(cfg->user);
	if (found == NULL) {
		snprintf(err, errlen, "user = %s: no such user", cfg->user);
		return -ENOENT;
	}
	copy = *found;
	copy.pw_name = xstrdup(found->pw_name);
	copy.pw_dir = xstrdup(found->pw_dir);
	p.uid = pw->pw_uid;
	p.gid = pw->pw_gid;
	if (cfg->group != NULL) {
		const struct group *gr = getgrnam(cfg->group);

		if (gr == NULL) {
			snprintf(err, errlen, "group = %s: no such group",
			    cfg->group);
			r = -ENOENT;
			goto out;
		}
		p.gid = gr->gr_gid;
	}
	if (geteuid() != 0 && geteuid() == pw->pw_uid) {
		r = PRIVDROP_DONE; /* started as that user */
	} else if (geteuid() != 0 && report != NULL) {
		r = PRIVDROP_OTHER;
	} else if (geteuid() != 0) {
		snprintf(err, errlen, "user = %s: running as uid %ld, which "
		    "cannot become %s (start as root, or as that user)",
		    cfg->user, (long)geteuid(), cfg->user);
		r = -EPERM;
	} else {
		p.fn = make_dir;
		r = report != NULL ? 0 : each_dir(cfg, only, &p, err, errlen);
		if (r == 0)
			r = switch_ids(pw, p.gid, err, errlen);
		p.fn = report != NULL ? check_dir : writable_dir;
		if (r == 0)
			r = each_dir(cfg, only, &p, err, errlen);
		if (r == 0)
			r = PRIVDROP_DONE;
	}
out:
	free(copy.pw_name);
	free(copy.pw_dir);
	return r;
}

int
privdrop_apply(const struct config *cfg, const char *only, char *err,
    size_t errlen)
{
	return privdrop(cfg, only, NULL, err, errlen);
}

int
privdrop_check(const struct config *cfg, const char *only, FILE *report,
    char *err, size_t errlen)
{
	return privdrop(cfg, only, report, err, errlen);
}
