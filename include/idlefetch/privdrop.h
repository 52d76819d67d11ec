/*
 * privdrop: `user =` / `group =` in [global]. A daemon started as root
 * creates the directories it will need and that only root may create
 * (state_dir, the Maildirs and their parents), hands them to the user,
 * then becomes that user for good, before any network connection is made
 * or any password_command runs. This replaces an init script's
 * `sudo -u`.
 */
#ifndef IDLEFETCH_PRIVDROP_H
#define IDLEFETCH_PRIVDROP_H

#include <stddef.h>
#include <stdio.h>

#include "idlefetch/config.h"

enum privdrop_result {
	PRIVDROP_DONE, /* now running as cfg->user */
	PRIVDROP_NONE, /* no user configured, not root: nothing to do */
	PRIVDROP_ROOT, /* no user configured and running as root */
	/* privdrop_check only: neither root nor cfg->user; nothing checked */
	PRIVDROP_OTHER,
};

/*
 * Prepares the directories and switches to cfg->user (and cfg->group, or
 * the user's own group, plus its supplementary groups). The directories:
 * state_dir and the Maildirs of the accounts this process fetches
 * (config_wanted with only, --account). Verifies that the switch cannot be
 * undone (setuid(0) must fail). Returns a privdrop_result, or a negative
 * errno with the reason in err: an unknown user, not root and not already
 * that user, a directory the user could not write.
 */
int privdrop_apply(const struct config *cfg, const char *only, char *err,
    size_t errlen);
/*
 * --check-config's way: the same switch, for good as well (the process
 * reads the secrets as that user, then exits), but it creates nothing. A
 * directory that exists must be writable by the user, as after
 * privdrop_apply; one that is missing is reported on report ("would
 * create it") when the user could reach it there, else it is the error.
 * Started as neither root nor cfg->user, it returns PRIVDROP_OTHER and
 * changes nothing: the caller cannot check as that user.
 */
int privdrop_check(const struct config *cfg, const char *only, FILE *report,
    char *err, size_t errlen);

#endif
