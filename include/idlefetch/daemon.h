/*
 * daemon: runs one session per account and folder on one libuv loop,
 * handles SIGTERM/SIGINT, and turns the sessions' results into an exit code.
 */
#ifndef IDLEFETCH_DAEMON_H
#define IDLEFETCH_DAEMON_H

#include <stdbool.h>

#include "idlefetch/config.h"

/*
 * account: only that account (NULL: all). once: sync once and return.
 * Returns the process exit code: 0 all fine, 1 some account failed.
 */
int daemon_run(const struct config *cfg, const char *account, bool once);

#endif
