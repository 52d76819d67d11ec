/*
 * verify: asks the server what the last delivered UID holds now, and
 * compares it with what was delivered under it (size, Message-ID). A
 * server that renumbered a folder without changing UIDVALIDITY (Courier
 * after a restart, when only EXAMINE had touched it) shows here, and is
 * logged. The mailbox decides what follows.
 */
#ifndef IDLEFETCH_VERIFY_H
#define IDLEFETCH_VERIFY_H

#include <stdbool.h>
#include <stdint.h>

#include "idlefetch/config.h"
#include "idlefetch/conn.h"
#include "idlefetch/state.h"

/*
 * failed: NULL, or why the connection cannot go on (the FETCH failed;
 * borrowed for the call). renumbered: the UID holds another message than
 * the one delivered under it (logged); else it holds that one, or is gone.
 */
typedef void verify_done_cb(void *ud, const char *failed, bool renumbered);

/*
 * Asks c what st's last_uid holds now (st, with what was delivered as it,
 * is borrowed until done runs). acct is borrowed, folder (UTF-8) copied:
 * both name its log line, with uidvalidity, the folder's. done runs once,
 * unless the connection closes first. What the check holds lives only
 * while its command does: a folder between syncs keeps nothing of it.
 */
void verify_start(struct conn *c, const struct account *acct,
    const char *folder, const struct state_rec *st, uint32_t uidvalidity,
    verify_done_cb *done, void *ud);

#endif
