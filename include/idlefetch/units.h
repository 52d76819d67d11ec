/*
 * units: the accounts a daemon runs, one unit each: the account's lock
 * (one fetcher per account), its TLS context (shared with the accounts
 * that trust the same CA), its status records and writer, and its
 * sessions: one holding every folder or, when the server has no NOTIFY,
 * up to max_connections. The daemon (the loop, signals, reloads, the
 * service manager) drives them through these functions and hears back
 * through units_ops.
 *
 * Sessions borrow their account from a configuration, so a configuration
 * lives as long as the units made from it (a reference count).
 */
#ifndef IDLEFETCH_UNITS_H
#define IDLEFETCH_UNITS_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

#include "idlefetch/config.h"
#include "idlefetch/session.h"
#include "idlefetch/status.h"

struct units;

struct units_ops {
	/* A status record changed (a session's state, a sync, an error). */
	void (*changed)(void *ud);
	/*
	 * Every session of a unit has ended: units_reap() frees it, outside
	 * the session's callback.
	 */
	void (*finished)(void *ud);
};

/*
 * only: --account (NULL: every account the configuration wants); once:
 * --once. The caller keeps only and ops, and keeps them until
 * units_free().
 */
struct units *units_new(uv_loop_t *loop, const char *only, bool once,
    const struct units_ops *ops, void *ud);
/* The configuration in force, NULL before units_begin(). */
const struct config *units_config(const struct units *us);
/*
 * Takes ownership of cfg, whose secrets are read, and starts each of its
 * accounts; *accounts and *folders: how many started or wait for their
 * lock.
 */
void units_begin(struct units *us, struct config *cfg, size_t *accounts,
    size_t *folders);

/* What a reload did to the accounts. */
struct units_reload {
	unsigned kept, restarted, removed;
	size_t added;
};

/*
 * SIGHUP: takes ownership of cfg, whose secrets are read; stops the units
 * whose settings changed, that are gone, or that gave up, and starts the
 * accounts that have no unit (a stopping one's when it is freed).
 */
void
units_reload(struct units *us, struct config *cfg, struct units_reload *out);
/* A stop: every session finishes gracefully; nothing starts again. */
void units_stop(struct units *us);
/*
 * Frees the units whose sessions all ended and that are stopping, and
 * starts the configured accounts that have none. Returns whether anything
 * still runs or waits for a lock.
 */
bool units_reap(struct units *us);

/*
 * One account's status records; k: its folders by what they are doing
 * (session.h); retiring: it is being replaced or removed.
 */
typedef void units_each_cb(void *ud, const char *account,
    const struct status_rec *recs, size_t n,
    const unsigned k[SESSION_ACTIVITIES], bool retiring);
void units_each(const struct units *us, units_each_cb *cb, void *ud);
/* Accounts that could not start or whose session failed. */
unsigned units_failed(const struct units *us);

/* The loop is ending: closes the lock retry timer. */
void units_close(struct units *us);
/*
 * Frees every unit (their status says they stopped); the loop must run on
 * for their closes, and then units_free().
 */
void units_free_all(struct units *us);
/* Drops the configuration and us. */
void units_free(struct units *us);

#endif
