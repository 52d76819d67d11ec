/*
 * privdrop: the order is what matters. Directories are created as root
 * (each component that did not exist is handed to the user: util.h's
 * mkdir_p_owned), then the groups, then the user id. Existing
 * directories are never re-owned: if the user cannot write one, that is
 * an error the administrator must see, not something to "fix" with
 * chown -R.
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

#include "idlefetch/privdrop.h"
#include "idlefetch/util.h"

/* Every directory the daemon writes into. */
static int
prepare_dirs(const struct config *cfg, uid_t uid, gid_t gid, char *err,
    size_t errlen)
{
	int r = mkdir_p_owned(cfg->state_dir, uid, gid);

	if (r < 0) {
		snprintf(err, errlen, "state_dir %s: %s", cfg->state_dir,
		    err_str(r));
		return r;
	}
	for (size_t i = 0; i < cfg->naccounts; i++) {
		const struct account *a = &cfg->accounts[i];

		/* An MDA or LMTP target spools under state_dir. */
		if (a->target.kind != TARGET_MAILDIR)
			continue;
		for (size_t j = 0; j < a->nfolders; j++) {
			char *dir = config_folder_maildir(a, a->folders[j]);

			r = mkdir_p_owned(dir, uid, gid);
			if (r < 0)
				snprintf(err, errlen, "[account %s] maildir "
				    "%s: %s", a->name, dir, err_str(r));
			free(dir);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

/* After the switch: can the user write where it must? */
static int
check_dirs(const struct config *cfg, const char *user, char *err,
    size_t errlen)
{
	if (access(cfg->state_dir, W_OK | X_OK) < 0) {
		int r = -errno;

		snprintf(err, errlen, "state_dir %s is not writable by user "
		    "%s: %s", cfg->state_dir, user, err_str(r));
		return r;
	}
	for (size_t i = 0; i < cfg->naccounts; i++) {
		const struct account *a = &cfg->accounts[i];

		/* An MDA or LMTP target spools under state_dir. */
		if (a->target.kind != TARGET_MAILDIR)
			continue;
		for (size_t j = 0; j < a->nfolders; j++) {
			char *dir = config_folder_maildir(a, a->folders[j]);
			int r = access(dir, W_OK | X_OK) < 0 ? -errno : 0;

			if (r < 0)
				snprintf(err, errlen, "[account %s] maildir "
				    "%s is not writable by user %s: %s",
				    a->name, dir, user, err_str(r));
			free(dir);
			if (r < 0)
				return r;
		}
	}
	return 0;
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

int
privdrop_apply(const struct config *cfg, char *err, size_t errlen)
{
	const struct passwd *found;
	struct passwd copy, *pw = &copy;
	gid_t gid;
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
	gid = pw->pw_gid;
	if (cfg->group != NULL) {
		const struct group *gr = getgrnam(cfg->group);

		if (gr == NULL) {
			snprintf(err, errlen, "group = %s: no such group",
			    cfg->group);
			r = -ENOENT;
			goto out;
		}
		gid = gr->gr_gid;
	}
	if (geteuid() != 0 && geteuid() == pw->pw_uid) {
		r = 0; /* started as that user */
	} else if (geteuid() != 0) {
		snprintf(err, errlen, "user = %s: running as uid %ld, which "
		    "cannot become %s (start as root, or as that user)",
		    cfg->user, (long)geteuid(), cfg->user);
		r = -EPERM;
	} else {
		r = prepare_dirs(cfg, pw->pw_uid, gid, err, errlen);
		if (r == 0)
			r = switch_ids(pw, gid, err, errlen);
		if (r == 0)
			r = check_dirs(cfg, cfg->user, err, errlen);
	}
out:
	free(copy.pw_name);
	free(copy.pw_dir);
	return r < 0 ? r : PRIVDROP_DONE;
}
