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

#include "idlefetch/config.h"

enum privdrop_result {
	PRIVDROP_DONE, /* now running as cfg->user */
	PRIVDROP_NONE, /* no user configured, not root: nothing to do */
	PRIVDROP_ROOT, /* no user configured and running as root */
};

/*
 * Prepares the directories and switches to cfg->user (and cfg->group, or
 * the user's own group, plus its supplementary groups). Verifies that the
 * switch cannot be undone (setuid(0) must fail). Returns a
 * privdrop_result, or a negative errno with the reason in err: an unknown
 * user, not root and not already that user, a directory the user could
 * not write.
 */
int privdrop_apply(const struct config *cfg, char *err, size_t errlen);

#endif
