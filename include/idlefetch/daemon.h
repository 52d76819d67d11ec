/*
 * daemon: runs the sessions of every account (one connection per account,
 * or up to max_connections without NOTIFY) on one libuv loop,
 * handles SIGTERM/SIGINT (stop) and SIGHUP (reload), and turns the
 * sessions' results into an exit code.
 */
#ifndef IDLEFETCH_DAEMON_H
#define IDLEFETCH_DAEMON_H

#include <stdbool.h>
#include <stddef.h>

#include "idlefetch/config.h"

/*
 * Loads the configuration again for SIGHUP: 0 and *out (the caller owns
 * it), or a negative errno with the reason in err.
 */
typedef int
daemon_load_cb(void *ud, struct config **out, char *err, size_t errlen);

/*
 * Takes ownership of cfg. account: only that account (NULL: all). once:
 * sync once and return. load: how SIGHUP reads the configuration again.
 * Returns the process exit code: 0 all fine, 1 some account failed.
 */
int daemon_run(struct config *cfg, const char *account, bool once,
    daemon_load_cb *load, void *load_ud);

#endif
